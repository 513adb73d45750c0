"""``deft_state.json`` version 4: the single source of truth of Phase 2 (SPEC §6.1, §6.2).

Only :func:`commit` changes the state. It validates a stage's evidence against the files on disk,
writes the new state atomically, then mirrors the event into ``loop_log.jsonl`` and re-renders the
report. The order matters for SIGKILL: the state is written first, so a kill before the log line
lands leaves the log one line short, and :func:`load_state` rewrites the log from the state's
events. Nothing is ever recorded only in the log.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from raypipe._io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from raypipe.deft._evidence import STAGES, validate_evidence
from raypipe.deft.errors import EvidenceError
from raypipe.metrics import MetricContract

log = logging.getLogger(__name__)

STATE_VERSION = 4
STATE_FILE = "deft_state.json"
LOOP_LOG = "loop_log.jsonl"
LABEL_RE = re.compile(r"^(baseline|final_automl|iter([1-9][0-9]*))$")

# What the driver does next. Stage names are SPEC §6.1's plus the three control outcomes.
NEXT_STAGES = ("train", "evaluate", "rca", "routing", "anomalygen", "data_mining", "data_merge",
               "finalize", "done", "halt")
_AFTER = {"routing": "anomalygen", "anomalygen": "data_mining", "data_mining": "data_merge",
          "data_merge": "train", "train": "evaluate"}


def utc_now() -> str:
    """ISO-8601 UTC with a ``Z`` suffix, second resolution (what TAO's status files use)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def iteration_number(label: str) -> int:
    """``baseline`` → 0, ``iter<N>`` → N; ``final_automl`` sorts after every loop iteration."""
    m = LABEL_RE.match(label)
    if not m:
        raise ValueError(f"bad iteration label '{label}' (expected baseline, iter<N> or final_automl)")
    if label == "baseline":
        return 0
    if label == "final_automl":
        return 10**9
    return int(m.group(2))


def ordered_labels(state: Mapping[str, Any], *, include_final: bool = True) -> list[str]:
    """Iteration labels in canonical order: baseline, iter1, …, final_automl (the pick_best order)."""
    labels = [lb for lb in state.get("iterations", {}) if include_final or lb != "final_automl"]
    return sorted(labels, key=iteration_number)


def state_path_of(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATE_FILE


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
    path = Path(run_dir) / LOOP_LOG
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
    import json

    return json.dumps(event) + "\n"


# ---------------------------------------------------------------------------------------------
# next stage (SPEC §6.2)


@dataclass(frozen=True)
class NextStep:
    """What the loop does next: ``stage`` for iteration ``label`` (None for done)."""

    label: str | None
    stage: str


def next_stage(state: Mapping[str, Any]) -> NextStep:
    """The next step, computed from the state alone (the driver never keeps its own cursor)."""
    loop_labels = ordered_labels(state, include_final=False)
    if state.get("status") == "complete":
        return NextStep(None, "done")
    if state.get("status") == "failed":
        failed = [lb for lb in ordered_labels(state) if state["iterations"][lb].get("status") == "failed"]
        return NextStep(failed[-1] if failed else (loop_labels[-1] if loop_labels else None), "halt")
    if not loop_labels:
        return NextStep("baseline", "train")
    label = loop_labels[-1]
    entry = state["iterations"][label]
    n = iteration_number(label)
    done = entry.get("stage_completed")
    if done is None:
        # baseline starts with train; iter<N> starts with routing (its RCA lives under iter<N-1>).
        return NextStep(label, "train" if label == "baseline" else "routing")
    if done == "evaluate":
        passed = bool((entry.get("metric_result") or {}).get("passed"))
        if passed or n >= int(state.get("max_iterations", 3)):
            return NextStep(label, "finalize")
        return NextStep(label, "rca")
    if done == "rca":
        return NextStep(f"iter{n + 1}", "routing")
    if done in _AFTER:
        return NextStep(label, _AFTER[done])
    raise ValueError(f"{label}: unknown stage_completed '{done}'")


# ---------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def _locked(state_path: Path) -> Iterator[None]:
    """Serialise writers across processes (the driver actor, the lead's Phase 3 registration)."""
    lock = state_path.with_name(state_path.name + ".lock")
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
           duration_s: float, summary: str, status: str) -> dict[str, Any]:
    """Return a new state with the commit applied (pure apart from the evidence file checks)."""
    if not LABEL_RE.match(label):
        raise EvidenceError(stage, label, "bad iteration label (expected baseline, iter<N> or final_automl)")
    if stage not in STAGES:
        raise EvidenceError(stage, label, f"unknown stage (known: {', '.join(STAGES)})")
    if status not in ("ok", "error"):
        raise EvidenceError(stage, label, f"status must be 'ok' or 'error', got {status!r}")
    seconds = _duration_sec(duration_s, label, stage)
    summary_line = " ".join(str(summary).split()) or f"{stage} {status}"
    new = copy.deepcopy(state)
    iters = new.setdefault("iterations", {})
    entry = iters.setdefault(label, {})
    now = utc_now()
    if status == "ok":
        stored = validate_evidence(state, label, stage, evidence)
        if stage == "loop_stop":
            new["status"] = "complete"
            new["completed_at"] = now
            new["final_artifacts"] = stored["final_artifacts"]
            if not entry:
                iters.pop(label)
        else:
            entry.update(stored)
            entry["stage_completed"] = stage
            if stage == "evaluate":
                entry["status"] = "complete"
            elif entry.get("status") != "complete":
                # An RCA committed after evaluate must not demote a complete iteration: pick_best
                # only considers complete entries.
                entry["status"] = "in_progress"
    else:
        entry["status"] = "failed"
        entry.setdefault("errors", []).append(
            {"stage": stage, "ts": now, "reason": str(evidence.get("reason", summary_line)),
             "fix": str(evidence.get("fix", ""))})
        new["status"] = "failed"
    if label.startswith("iter"):
        new["current_iteration"] = max(iteration_number(label), int(new.get("current_iteration", 0)))
    seq = max((int(e["seq"]) for e in new.get("events", [])), default=0) + 1
    new.setdefault("events", []).append({
        "seq": seq, "ts": now, "iter": label, "stage": stage, "status": status, "summary": summary_line,
        "duration_sec": seconds, "context_tokens": 0,
    })
    return new


def commit(state_path: str | Path, label: str, stage: str, evidence: Mapping[str, Any], *,
           duration_s: float, summary: str, status: str = "ok", render: bool = True) -> dict[str, Any]:
    """THE writer of ``deft_state.json``: validate, write atomically, mirror to the log, re-render.

    ``status="error"`` records a hard stop: ``evidence`` then carries ``reason`` and ``fix`` and is
    not file-checked; the iteration and the run become ``failed``. A failed validation raises
    :class:`EvidenceError` and leaves the state file byte-identical. Returns the new state.
    """
    state_path = Path(state_path)
    with _locked(state_path):
        state = load_state(state_path)
        new = _apply(state, label, stage, evidence, duration_s=duration_s, summary=summary, status=status)
        atomic_write_json(state_path, new)
        # The log line goes after the state write: see the module docstring.
        from raypipe._io import append_jsonl

        append_jsonl(state_path.parent / LOOP_LOG, new["events"][-1])
    if render:
        _render(state_path.parent)
    return new


def _render(run_dir: Path) -> None:
    from raypipe.deft.report import render_report

    try:
        render_report(run_dir)
    except Exception:  # noqa: BLE001 - the commit is durable; a broken chart must not undo it
        log.exception("DEFT_Loop_Report.html could not be rendered for %s", run_dir)


def reopen_failed(state_path: str | Path) -> bool:
    """Let ``--resume`` retry a hard-stopped loop: status back to in_progress; True if it was failed.

    The error stays recorded under ``iterations.<label>.errors`` and in the events; the interrupted
    stage then runs again from its start (SPEC §6.2).
    """
    state_path = Path(state_path)
    with _locked(state_path):
        state = load_state(state_path)
        if state.get("status") != "failed":
            return False
        for entry in state.get("iterations", {}).values():
            if entry.get("status") == "failed":
                complete = entry.get("stage_completed") in ("evaluate", "rca") and "metric_result" in entry
                entry["status"] = "complete" if complete else "in_progress"
        state["status"] = "in_progress"
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

    ``baseline`` pre-seeds the Phase 1 winner (SPEC §7.1 step 3): ``{best_ckpt_path, train_metric,
    training_spec[, source]}``; it is validated like any train evidence (checkpoint non-empty and
    under ``RD/baseline/train/``) and recorded with a ``train`` event saying training was skipped.
    The initial state and that event are written in ONE atomic write, so a kill can never leave a
    state without its baseline.
    """
    t0 = time.monotonic()
    run_dir = Path(run_dir).resolve()
    path = state_path_of(run_dir)
    with _locked(path):
        if path.exists():
            load_state(path)  # reconciles the log; refuses a foreign version loudly
            return path
        contract = _contract_dict(metric_contract)
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "started_at": utc_now(),
            "status": "in_progress",
            "kpi_target": kpi_target or MetricContract.from_dict(contract).kpi_text,
            "metric_contract": contract,
            "results_dir": str(run_dir),
            "max_iterations": int(max_iterations),
            "current_iteration": 0,
            "execution_policy": dict(execution_policy),
            "config": copy.deepcopy(dict(config_block)),
            "iterations": {},
            "events": [],
        }
        if baseline is not None:
            ev = _strip_stage_fields(baseline, "train")
            ev.setdefault("source", "automl_phase1")
            ckpt = Path(str(ev["best_ckpt_path"]))
            state = _apply(state, "baseline", "train", ev, duration_s=max(time.monotonic() - t0, 1e-3),
                           summary=f"baseline train skipped: reused the "
                                   f"{'Phase 1' if ev['source'] == 'automl_phase1' else 'pre-seeded'} checkpoint "
                                   f"{ckpt.name} ({ev['source']})", status="ok")
        atomic_write_json(path, state)
        reconcile_log(run_dir, state)
    _render(run_dir)
    return path


def register_final_automl(state_path: str | Path, entry: Mapping[str, Any], *, duration_s: float = 1.0,
                          summary: str | None = None) -> dict[str, Any]:
    """Record Phase 3's KPI-evaluated winner as ``iterations.final_automl`` (SPEC §7.2).

    ``entry``: ``{best_ckpt_path, training_spec, metric_result, threshold, far_pct[, inference_csv]}``
    with the metric result from the same evaluator as the loop. Call :func:`raypipe.deft.finalize`
    afterwards so ``best_model.json`` points at the overall best.
    """
    state = load_state(state_path)
    if state.get("status") == "failed":
        raise ValueError(f"{state_path}: Phase 2 hard-stopped; Phase 3 must be skipped (SPEC §7.2)")
    ev = _strip_stage_fields(entry, "evaluate")
    ev.setdefault("source", "automl_phase3")
    value = (ev.get("metric_result") or {}).get("value")
    return commit(state_path, "final_automl", "evaluate", ev, duration_s=duration_s,
                  summary=summary or f"Phase 3 AutoML winner evaluated on the KPI set: {value}")
