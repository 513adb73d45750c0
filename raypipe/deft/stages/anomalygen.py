"""``anomalygen``: synthetic defect samples for the labels routed to SDG.

The stage keeps TAO's name; what runs in it is a pluggable SDG backend chosen by
``phase2.sdg.kind``. This version ships one: ``builtin``, procedural defects drawn onto golden
images of *training* rows (:mod:`raypipe.deft.sdg`). NVIDIA's AnomalyGen container would be a
second :class:`SdgBackend`; the config refuses ``kind: anomalygen`` until it exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, TypedDict

from raypipe.deft.stages._checks import csv_rows, fail, finite, json_file
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import iteration_number

if TYPE_CHECKING:
    from raypipe.config import SdgConfig
    from raypipe.deft.context import StageContext


class _AnomalygenRequired(TypedDict):
    anomalygen_sdg_csv: FilePath  # SDG_result.csv: one row per synthetic image
    anomalygen_allocation_json: FilePath  # {"<TEXTURE>+<LABEL>": count}
    anomalygen_amp_allocated: int  # the allocation's sum


class AnomalygenEvidence(_AnomalygenRequired, total=False):
    anomalygen_sdg_rows_csv: FilePath  # the synthetic samples as ChangeNet rows (mining_filter/sdg_rows_raw.csv)


class AnomalygenSkipped(TypedDict):
    anomalygen_skipped: Literal[True]  # no gap was routed to SDG


class SdgBackend(ABC):
    """One way to synthesise defect samples (the ``anomalygen`` stage's pluggable part)."""

    kind: ClassVar[str]

    def __init__(self, settings: SdgConfig) -> None:
        self.settings = settings

    @abstractmethod
    def supported_labels(self) -> set[str]:
        """Upper-cased labels this backend can synthesise (routing sends only these to SDG)."""

    @abstractmethod
    def generate(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        """Synthesise iteration ``label``'s samples; return the stage's evidence (or the skipped form)."""


class BuiltinSdg(SdgBackend):
    """Procedural defects (bridge, missing, shift, …) drawn onto training goldens, in a CPU task."""

    kind = "builtin"

    def supported_labels(self) -> set[str]:
        from raypipe.deft.sdg import supported_sdg_labels

        return supported_sdg_labels(self.settings.recipes, self.settings.supported_labels)

    def generate(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.sdg import run_sdg

        entry = state["iterations"][label]
        inputs = ctx.inputs
        return ctx.run_task(f"{label}/anomalygen", ResourceClass.CPU_STAGE, run_sdg,
                            Path(entry["routing_anomalygen_parquet"]), inputs.train_csv, inputs.images_dir,
                            ctx.rd.iteration(label).path, workspace_root=inputs.root, layout=inputs.layout,
                            num_sdg=self.settings.num_SDG, recipes=dict(self.settings.recipes),
                            iteration=iteration_number(label), seed=ctx.cfg.seed,
                            kpi_capture_files=ctx.kpi_capture_files())


# kind → backend. ``phase2.sdg.kind`` is validated against these names when the config loads.
SDG_KINDS: dict[str, type[SdgBackend]] = {BuiltinSdg.kind: BuiltinSdg}


def sdg_backend(settings: SdgConfig) -> SdgBackend:
    return SDG_KINDS[settings.kind](settings)


class AnomalygenStage(Stage):
    name = "anomalygen"
    resources = ResourceClass.CPU_STAGE
    evidence = AnomalygenEvidence
    skipped_evidence = AnomalygenSkipped

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        return sdg_backend(ctx.cfg.phase2.sdg).generate(ctx, state, label)

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        alloc_path = Path(evidence["anomalygen_allocation_json"])
        alloc = json_file(label, self.name, alloc_path)
        if not isinstance(alloc, Mapping) or not all(finite(v) for v in alloc.values()):
            fail(label, self.name, f"{alloc_path} must map '<TEXTURE>+<LABEL>' to counts")
        total = sum(int(v) for v in alloc.values())
        if total <= 0:
            fail(label, self.name, f"{alloc_path}: allocation sums to {total}; expected > 0")
        amp = evidence["anomalygen_amp_allocated"]
        if finite(amp) and int(amp) != total:
            fail(label, self.name, f"anomalygen_amp_allocated={amp} but {alloc_path} sums to {total}")
        if csv_rows(Path(evidence["anomalygen_sdg_csv"])) <= 0:
            fail(label, self.name, f"{evidence['anomalygen_sdg_csv']} has no rows")

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        if evidence.get("anomalygen_skipped"):
            return "SDG skipped: no gap routed to SDG"
        return f"SDG synthesised {evidence['anomalygen_amp_allocated']} defect samples"
