"""``RD/pipeline_state.json``: which phases are done, so ``--resume`` skips them.

Phase-level only; each phase keeps its own finer state (Tune's experiment dir, deft_state.json).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_json, read_json
from raypipe.rundir import RunDir

PHASES = ("phase1", "phase2", "phase3")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_state() -> dict[str, Any]:
    return {"version": 1, "status": "in_progress", "started_at": now_iso(),
            "phases": {p: {"status": "pending", "started_at": None, "completed_at": None} for p in PHASES}}


def load(run_dir: str | Path | RunDir) -> dict[str, Any]:
    state: dict[str, Any] = read_json(RunDir(run_dir).pipeline_state)
    return state


def save(run_dir: str | Path | RunDir, state: dict[str, Any]) -> None:
    atomic_write_json(RunDir(run_dir).pipeline_state, state)


def mark(run_dir: str | Path | RunDir, phase: str, status: str, **extra: Any) -> dict[str, Any]:
    """Set a phase's status (``in_progress | complete | skipped | failed``) and persist at once."""
    state = load(run_dir)
    entry = state["phases"][phase]
    if status == "in_progress" and not entry.get("started_at"):
        entry["started_at"] = now_iso()
    if status in ("complete", "skipped", "failed"):
        entry["completed_at"] = now_iso()
    entry["status"] = status
    entry.update(extra)
    save(run_dir, state)
    return state


def set_run_status(run_dir: str | Path | RunDir, status: str, **extra: Any) -> None:
    """Set the run's status (``in_progress | interrupted | failed | complete``) and persist at once.

    A complete run stays complete: whatever happens after it finished (a resume that fails to
    start, a Ctrl-C while the summary prints) describes that later attempt, not the run.
    """
    state = load(run_dir)
    if state.get("status") == "complete" and status != "complete":
        return
    state["status"] = status
    if status in ("complete", "failed"):
        state["completed_at"] = now_iso()
    state.update(extra)
    save(run_dir, state)
