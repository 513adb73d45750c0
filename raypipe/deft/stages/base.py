"""What a DEFT stage is: one object with a job, a typed evidence, an evidence check and a summary.

The driver looks a stage up in the :class:`StageRegistry` by the name ``next_stage`` returns,
runs it, and hands its evidence to ``commit`` — which validates it with the same stage's
:meth:`Stage.validate` before writing anything. Stage names are TAO's stage vocabulary (the
``stage`` of every event in ``deft_state.json``), so they never change.

A stage's evidence is a ``TypedDict``: its required and optional keys ARE the schema the commit
enforces (unknown keys are refused, so a typo never silently drops evidence), and fields typed
:data:`FilePath` must name existing absolute files. Adding a stage means one module here with a
subclass of :class:`Stage` and one entry in the registry (``raypipe/deft/stages/__init__.py``).
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, NewType

from raypipe.deft.stages._checks import existing_file, fail
from raypipe.rundir import BASELINE

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext

# An evidence field that names a file: it must be an absolute path to an existing file.
FilePath = NewType("FilePath", str)


class ResourceClass(Enum):
    """Where a stage's heavy work runs (the resources come from ``phase2.resources``)."""

    TRAIN = "train"  # phase2.resources.train: training, KPI inference, embeddings (the GPU when there is one)
    CPU_STAGE = "cpu_stage"  # phase2.resources.cpu_stage: rca, routing, sdg, merge
    DRIVER = "driver"  # light work in the loop's driver itself (it may start TRAIN tasks of its own)


class Stage(ABC):
    """One DEFT stage. Subclasses set the class attributes and implement :meth:`run` and :meth:`summary`."""

    name: ClassVar[str]  # TAO's stage vocabulary: the event's ``stage`` in deft_state.json
    resources: ClassVar[ResourceClass]
    evidence: ClassVar[type]  # a TypedDict: what :meth:`run` returns and :meth:`validate` accepts
    skipped_evidence: ClassVar[type | None] = None  # a TypedDict whose only required key is ``<x>_skipped``

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        """Do the stage's work for iteration ``label`` and return its evidence (nothing is committed here).

        A stage re-run after a kill starts from scratch: it replaces its outputs, never appends.
        """

    @abstractmethod
    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        """The event's one-line summary of a (validated) evidence."""

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        """Stage-specific checks of a non-skipped evidence (after the key and file checks).

        ``evidence`` is the copy that will be stored: a check may normalise it in place. The
        default has nothing to add to the key and file checks.
        """
        return None

    # -- provided -----------------------------------------------------------------------------
    @property
    def skip_key(self) -> str | None:
        """``anomalygen_skipped`` / ``data_mining_skipped`` for stages that may be skipped."""
        if self.skipped_evidence is None:
            return None
        return next(k for k in _required(self.skipped_evidence) if k.endswith("_skipped"))

    def allowed_keys(self, *, skipped: bool = False) -> tuple[frozenset[str], frozenset[str]]:
        """(required, optional) evidence keys."""
        td = self.skipped_evidence if skipped else self.evidence
        assert td is not None
        return frozenset(_required(td)), frozenset(_optional(td))

    def file_keys(self, *, skipped: bool = False) -> frozenset[str]:
        td = self.skipped_evidence if skipped else self.evidence
        assert td is not None
        return frozenset(k for k, hint in typing.get_type_hints(td).items() if _is_file(hint))

    def validate(self, state: Mapping[str, Any], label: str, evidence: Any) -> dict[str, Any]:
        """Check ``evidence`` against the files on disk; return the copy to store (paths as strings).

        Raises :class:`~raypipe.deft.errors.EvidenceError` on the first problem.
        """
        if not isinstance(evidence, Mapping):
            fail(label, self.name, "evidence must be a mapping")
        skipped = self._check_keys(label, evidence)
        out: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in evidence.items()}
        for key in sorted(self.file_keys(skipped=skipped)):
            if key in evidence:
                existing_file(label, self.name, key, evidence[key])
        if not skipped:
            self.check(state, label, out)
        return out

    def _check_keys(self, label: str, evidence: Mapping[str, Any]) -> bool:
        """Check the key set; returns True for a skipped evidence."""
        skip = self.skip_key
        if skip and evidence.get(skip) is True:
            required, optional = self.allowed_keys(skipped=True)
            extra = set(evidence) - required - optional
            if extra:
                fail(label, self.name, f"a skipped stage carries only '{skip}', got also {sorted(extra)}")
            return True
        if skip and skip in evidence:
            fail(label, self.name, f"'{skip}' must be true when present, got {evidence[skip]!r}")
        required, optional = self.allowed_keys()
        missing = sorted(required - set(evidence))
        if missing:
            fail(label, self.name, f"missing evidence field(s) {missing}")
        unknown = set(evidence) - required - optional
        if unknown:
            fail(label, self.name,
                 f"unknown evidence field(s) {sorted(unknown)} (allowed: {sorted(required | optional)})")
        return False

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


def _required(td: type) -> frozenset[str]:
    return frozenset(getattr(td, "__required_keys__", frozenset()))


def _optional(td: type) -> frozenset[str]:
    return frozenset(getattr(td, "__optional_keys__", frozenset()))


def _is_file(hint: Any) -> bool:
    if hint is FilePath:
        return True
    return any(_is_file(a) for a in typing.get_args(hint))


@dataclass(frozen=True)
class StageRegistry:
    """The ordered stages of the loop: the only list of stages.

    ``iteration`` is one loop iteration in order. The baseline enters it at ``baseline_entry``;
    every ``iter<N>`` at its first stage. After ``decides`` (evaluate) the loop either stops
    (``stop``) or goes on; the last stage (rca), committed under iteration N, feeds iteration N+1.
    """

    iteration: tuple[Stage, ...]
    stop: Stage
    baseline_entry: str = "train"
    decides: str = "evaluate"
    _by_name: dict[str, Stage] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages = (*self.iteration, self.stop)
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for required in (self.baseline_entry, self.decides):
            if required not in names[:-1]:
                raise ValueError(f"'{required}' is not a stage of the iteration {names[:-1]}")
        object.__setattr__(self, "_by_name", {s.name: s for s in stages})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __getitem__(self, name: str) -> Stage:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown stage '{name}' (known: {', '.join(self.names)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._by_name.values())

    def entry(self, label: str) -> str:
        """The first stage of iteration ``label``."""
        return self.baseline_entry if label == BASELINE else self.iteration[0].name

    def after(self, name: str) -> str | None:
        """The stage after ``name`` within one iteration (None after the last one)."""
        names = [s.name for s in self.iteration]
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None

    @property
    def feeds_next(self) -> str:
        """The stage whose commit under iteration N starts iteration N+1."""
        return self.iteration[-1].name

    def with_stages(self, *stages: Stage) -> StageRegistry:
        """The same order with ``stages`` standing in for the stages of the same names (tests, plugins)."""
        by_name = {s.name: s for s in stages}
        unknown = set(by_name) - set(self.names)
        if unknown:
            raise ValueError(f"no stage named {sorted(unknown)} in this registry")
        return StageRegistry(tuple(by_name.get(s.name, s) for s in self.iteration),
                             by_name.get(self.stop.name, self.stop), self.baseline_entry, self.decides)


__all__ = ["FilePath", "ResourceClass", "Stage", "StageRegistry"]
