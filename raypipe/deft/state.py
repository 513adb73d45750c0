"""``deft_state.json`` version 4: the single source of truth of Phase 2.

Only :func:`commit` changes the state. It validates a stage's evidence against the files on disk
(with the stage's own check, :meth:`raypipe.deft.stages.Stage.validate`), writes the new state
atomically, then mirrors the event into ``loop_log.jsonl``. The order matters for SIGKILL: the
state is written first, so a kill before the log line lands leaves the log one line short, and
:func:`load_state` rewrites the log from the state's events. Nothing is ever recorded only in the
log. The state's writer does no presentation: the driver renders the report after a commit.

The stage order and the transitions of :func:`next_stage` come from the stage registry
(:data:`raypipe.deft.stages.REGISTRY`); the JSON keeps TAO's exact strings (TAO's own scripts read it).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Mapping

from raypipe import tao_interop as ti
from raypipe._io import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl
from raypipe.deft.errors import EvidenceError
from raypipe.deft.stages import REGISTRY, StageRegistry
from raypipe.metrics import MetricContract
from raypipe.rundir import BASELINE, FINAL_AUTOML, RunDir, is_loop_label, iteration_label, iteration_number
from raypipe.rundir import ordered_labels as _ordered

log = logging.getLogger(__name__)

STATE_VERSION = 4


class RunStatus(str, Enum):
    """``deft_state.json`` → ``status``."""

    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"  # loop_stop committed: the deliverable exists
    FAILED = "failed"  # a hard stop was committed; ``reopen_failed`` (``--resume``) goes back to in_progress

    def is_finished(self) -> bool:
        return self is not RunStatus.IN_PROGRESS


class IterationStatus(str, Enum):
    """``iterations.<label>.status``: in_progress after any commit, complete after evaluate, failed on an error."""

    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"  # evaluated: a candidate for pick_best (a later RCA commit keeps it complete)
    FAILED = "failed"

    def after_ok(self, stage: str, decides: str) -> IterationStatus:
        """The status after an ok commit of ``stage`` (``decides``: the stage that completes an iteration)."""
        if stage == decides or self is IterationStatus.COMPLETE:
            return IterationStatus.COMPLETE
        return IterationStatus.IN_PROGRESS


class EventStatus(str, Enum):
    OK = "ok"
    ERROR = "error"  # a hard stop: the evidence carries ``reason`` and ``fix``


def utc_now() -> str:
    """ISO-8601 UTC with a ``Z`` suffix, second resolution (what TAO's status files use)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def ordered_labels(state: Mapping[str, Any], *, include_final: bool = True) -> list[str]:
    """The state's iteration labels in canonical order: baseline, iter1, …, final_automl."""
    return _ordered(state.get("iterations", {}), include_final=include_final)


def state_path_of(run_dir: str | Path) -> Path:
    return RunDir(run_dir).deft_state


# ---------------------------------------------------------------------------------------------
# reading


def load_state(state_path: str | Path, *, reconcile: bool = True) -> dict[str, Any]:
    """Read the state; with ``reconcile`` make ``loop_log.jsonl`` mirror its events exactly."""
    state_path = Path(state_path)
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: no DEFT state (initialise_state was not run)")
    state = read_json(state_path)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{state_path}: version {state.get('version')!r}; this raypipe reads version {STATE_VERSION}")
    if reconcile:
        reconcile_log(state_path.parent, state)
    return state


def reconcile_log(run_dir: str | Path, state: Mapping[str, Any]) -> bool:
    """Rewrite ``loop_log.jsonl`` from the state's events when they differ; True if rewritten.

    The log is a mirror: a kill between the state write and the log append leaves a missing line,
    a torn line, or (if an older writer appended first) an extra one. The state wins.
    """
    path = RunDir(run_dir).loop_log
    events = list(state.get("events", []))
    if read_jsonl(path) == events and _log_is_clean(path):
        return False
    atomic_write_text(path, "".join(_jsonl_line(e) for e in events))
    return True


def _log_is_clean(path: Path) -> bool:
    if not path.exists():
        return True
    text = path.read_text(encoding="utf-8")
    return text == "" or text.endswith("\n")


def _jsonl_line(event: Mapping[str, Any]) -> str:
    return json.dumps(event) + "\n"


# ---------------------------------------------------------------------------------------------
# next stage


DONE, HALT = "done", "halt"  # the two outcomes of next_stage that are not a stage to run


@dataclass(frozen=True)
class NextStep:
    """What the loop does next: ``stage`` (a registry name, or ``done`` / ``halt``) for iteration ``label``."""

    label: str | None
    stage: str


def next_stage(state: Mapping[str, Any], registry: StageRegistry = REGISTRY) -> NextStep:
    """The next step, computed from the state alone (the driver never keeps its own cursor).

    Complete → done; failed → halt. An iteration without a committed stage starts at its entry
    (baseline: train; iter<N>: routing). After the deciding stage (evaluate): passed, or N at
    ``max_iterations`` → loop_stop; else rca. The last stage (rca) of iteration N starts N+1;
    every other stage is followed by the next one of the iteration.
    """
    loop_labels = ordered_labels(state, include_final=False)
    status = RunStatus(state.get("status", RunStatus.IN_PROGRESS.value))
    if status is RunStatus.COMPLETE:
        return NextStep(None, DONE)
    if status is RunStatus.FAILED:
        failed = [lb for lb in ordered_labels(state)
                  if state["iterations"][lb].get("status") == IterationStatus.FAILED.value]
        return NextStep(failed[-1] if failed else (loop_labels[-1] if loop_labels else None), HALT)
    if not loop_labels:
        return NextStep(BASELINE, registry.entry(BASELINE))
    label = loop_labels[-1]
    entry = state["iterations"][label]
    n = iteration_number(label)
    done = entry.get("stage_completed")
    if done is None:
        return NextStep(label, registry.entry(label))
    if done not in registry or done == registry.stop.name:
        raise ValueError(f"{label}: unknown stage_completed '{done}'")
    if done == registry.decides:
        passed = bool((entry.get("metric_result") or {}).get("passed"))
        if passed or n >= int(state.get("max_iterations", 3)):
            return NextStep(label, registry.stop.name)
    following = registry.after(done)
    if following is None:  # the last stage of iteration N (rca) feeds iteration N+1
        return NextStep(iteration_label(n + 1), registry.entry(iteration_label(n + 1)))
    return NextStep(label, following)


# ---------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def _locked(state_path: Path) -> Iterator[None]:
    """Serialise writers across processes (the driver actor, the pipeline's Phase 3 registration)."""
    lock = RunDir(state_path.parent).deft_state_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _duration_sec(duration_s: float, label: str, stage: str) -> int:
    if not isinstance(duration_s, (int, float)) or isinstance(duration_s, bool) or not math.isfinite(duration_s) \
            or duration_s <= 0:
        raise EvidenceError(stage, label, f"duration must be a positive number of seconds, got {duration_s!r}")
    return max(1, math.ceil(duration_s))


def _apply(state: dict[str, Any], label: str, stage: str, evidence: Mapping[str, Any], *,
           duration_s: float, summary: str, status: str, registry: StageRegistry) -> dict[str, Any]:
    """Return a new state with the commit applied (pure apart from the evidence file checks)."""
    if not is_loop_label(label):
        # TAO's commit script files events under baseline and iter<N> only; Phase 3's final_automl
        # entry is registered without one (register_final_automl).
        raise EvidenceError(stage, label, "bad iteration label for an event (expected baseline or iter<N>)")
    if stage not in registry:
        raise EvidenceError(stage, label, f"unknown stage (known: {', '.join(registry.names)})")
    try:
        event_status = EventStatus(status)
    except ValueError:
        raise EvidenceError(stage, label, f"status must be 'ok' or 'error', got {status!r}") from None
    seconds = _duration_sec(duration_s, label, stage)
    summary_line = " ".join(str(summary).split()) or f"{stage} {status}"
    new = copy.deepcopy(state)
    iters = new.setdefault("iterations", {})
    entry = iters.setdefault(label, {})
    now = utc_now()
    if event_status is EventStatus.OK:
        stored = registry[stage].validate(state, label, evidence)
        if stage == registry.stop.name:
            new["status"] = RunStatus.COMPLETE.value
            new["completed_at"] = now
            new["final_artifacts"] = stored["final_artifacts"]
            if not entry:
                iters.pop(label)
        else:
            entry.update(stored)
            entry["stage_completed"] = stage
            # An RCA committed after evaluate must not demote a complete iteration: pick_best
            # only considers complete entries.
            current = IterationStatus(entry.get("status", IterationStatus.IN_PROGRESS.value))
            entry["status"] = current.after_ok(stage, registry.decides).value
    else:
        entry["status"] = IterationStatus.FAILED.value
        entry.setdefault("errors", []).append(
            {"stage": stage, "ts": now, "reason": str(evidence.get("reason", summary_line)),
             "fix": str(evidence.get("fix", ""))})
        new["status"] = RunStatus.FAILED.value
    if label.startswith("iter"):
        new["current_iteration"] = max(iteration_number(label), int(new.get("current_iteration", 0)))
    seq = max((int(e["seq"]) for e in new.get("events", [])), default=0) + 1
    new.setdefault("events", []).append({
        "seq": seq, "ts": now, "iter": label, "stage": stage, "status": event_status.value, "summary": summary_line,
        "duration_sec": seconds, "context_tokens": 0,
    })
    return new


def commit(state_path: str | Path, label: str, stage: str, evidence: Mapping[str, Any], *,
           duration_s: float, summary: str, status: str = "ok",
           registry: StageRegistry = REGISTRY) -> dict[str, Any]:
    """THE writer of ``deft_state.json``: validate, write atomically, mirror to the log.

    ``status="error"`` records a hard stop: ``evidence`` then carries ``reason`` and ``fix`` and is
    not file-checked; the iteration and the run become ``failed``. A failed validation raises
    :class:`EvidenceError` and leaves the state file byte-identical. Returns the new state.
    Rendering the report is the caller's business (presentation is not persistence).
    """
    state_path = Path(state_path)
    with _locked(state_path):
        state = load_state(state_path)
        new = _apply(state, label, stage, evidence, duration_s=duration_s, summary=summary, status=status,
                     registry=registry)
        atomic_write_json(state_path, new)
        # The log line goes after the state write: see the module docstring.
        append_jsonl(RunDir(state_path.parent).loop_log, new["events"][-1])
    return new


def reopen_failed(state_path: str | Path) -> bool:
    """Let ``--resume`` retry a hard-stopped loop: status back to in_progress; True if it was failed.

    The error stays recorded under ``iterations.<label>.errors`` and in the events; the interrupted
    stage then runs again from its start.
    """
    state_path = Path(state_path)
    with _locked(state_path):
        state = load_state(state_path)
        if state.get("status") != RunStatus.FAILED.value:
            return False
        for entry in state.get("iterations", {}).values():
            if entry.get("status") == IterationStatus.FAILED.value:
                # evaluated (and maybe analysed): still a candidate for pick_best
                complete = entry.get("stage_completed") in (REGISTRY.decides, REGISTRY.feeds_next) \
                    and "metric_result" in entry
                entry["status"] = (IterationStatus.COMPLETE if complete else IterationStatus.IN_PROGRESS).value
        state["status"] = RunStatus.IN_PROGRESS.value
        atomic_write_json(state_path, state)
    return True


def _contract_dict(metric_contract: MetricContract | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(metric_contract, MetricContract):
        return metric_contract.to_dict()
    return MetricContract.from_dict(metric_contract).to_dict()


def _strip_stage_fields(entry: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Callers may pass the stored form (``stage_completed``/``status``); the commit sets those itself."""
    ev = dict(entry)
    if ev.pop("stage_completed", stage) != stage:
        raise ValueError(f"entry has stage_completed={entry['stage_completed']!r}; expected {stage!r}")
    ev.pop("status", None)
    return ev


def initialise_state(run_dir: str | Path, *, config_block: Mapping[str, Any],
                     metric_contract: MetricContract | Mapping[str, Any], max_iterations: int,
                     execution_policy: Mapping[str, Any], kpi_target: str | None = None,
                     baseline: Mapping[str, Any] | None = None) -> Path:
    """Create ``RD/deft_state.json`` (idempotent: an existing state is returned untouched).

    ``execution_policy`` is TAO's record of the run's network mode
    (:func:`raypipe.tao_interop.execution_policy`), refused unless complete and in TAO's words.
    ``kpi_target`` defaults to the contract in the text TAO's parser reads back.
    ``baseline`` pre-seeds Phase 1's winner: ``{best_ckpt_path, train_metric, training_spec[, source]}``;
    it is validated like any train evidence (checkpoint non-empty and under ``RD/baseline/train/``)
    and recorded with a ``train`` event saying training was skipped. The initial state and that
    event are written in ONE atomic write, so a kill can never leave a state without its baseline.
    """
    t0 = time.monotonic()
    rd = RunDir(run_dir).resolve()
    path = rd.deft_state
    with _locked(path):
        if path.exists():
            load_state(path)  # reconciles the log; refuses a foreign version loudly
            return path
        contract = _contract_dict(metric_contract)
        policy = ti.validate_policy(execution_policy)
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "started_at": utc_now(),
            "status": RunStatus.IN_PROGRESS.value,
            "kpi_target": kpi_target or ti.kpi_target_text(contract),
            "metric_contract": contract,
            "results_dir": str(rd.root),
            "max_iterations": int(max_iterations),
            "current_iteration": 0,
            "execution_policy": policy,
            "config": copy.deepcopy(dict(config_block)),
            "iterations": {},
            "events": [],
        }
        if baseline is not None:
            ev = _strip_stage_fields(baseline, "train")
            ev.setdefault("source", "automl_phase1")
            ckpt = Path(str(ev["best_ckpt_path"]))
            state = _apply(state, BASELINE, "train", ev, duration_s=max(time.monotonic() - t0, 1e-3),
                           summary=f"baseline train skipped: reused the "
                                   f"{'Phase 1' if ev['source'] == 'automl_phase1' else 'pre-seeded'} checkpoint "
                                   f"{ckpt.name} ({ev['source']})", status="ok", registry=REGISTRY)
        atomic_write_json(path, state)
        reconcile_log(rd.root, state)
    return path


def register_final_automl(state_path: str | Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Record Phase 3's KPI-evaluated winner as ``iterations.final_automl``; returns the new state.

    ``entry`` is :func:`raypipe.tao_interop.final_automl_entry`: the evaluate fields (checkpoint,
    training spec, metric result from the loop's own evaluator, threshold) plus
    ``combined_training_csv``, the CSV Phase 3 trained on. It is checked like evaluate evidence,
    then written atomically under the state lock with NO event and no ``loop_log.jsonl`` line: the
    loop ended with its one ``loop_stop``, and TAO's commit script accepts no ``final_automl`` event.
    Re-write the handoff afterwards (:func:`raypipe.deft.finalize.refresh_handoff`).
    """
    state_path = Path(state_path)
    stage = REGISTRY[REGISTRY.decides]
    ev = _strip_stage_fields(entry, stage.name)
    ev.setdefault("source", "automl_phase3")
    with _locked(state_path):
        state = load_state(state_path)
        if state.get("status") == RunStatus.FAILED.value:
            raise ValueError(f"{state_path}: Phase 2 hard-stopped; Phase 3 must be skipped")
        stored = stage.validate(state, FINAL_AUTOML, ev)
        new = copy.deepcopy(state)
        new.setdefault("iterations", {})[FINAL_AUTOML] = {
            **stored, "stage_completed": stage.name, "status": IterationStatus.COMPLETE.value}
        atomic_write_json(state_path, new)
    return new
