"""Phase 2: the DEFT data loop (SPEC §6).

Public surface: the state (``initialise_state``, ``commit``, ``next_stage``, …), finalize, the
report, and the Ray-based loop driver (``run_loop``; imported lazily so that reading a state does
not import Ray).
"""

from __future__ import annotations

from typing import Any

from raypipe.deft.errors import EvidenceError, HardStop
from raypipe.deft.finalize import FinalArtifacts, finalize
from raypipe.deft.report import render_report
from raypipe.deft.state import (
    NextStep,
    commit,
    initialise_state,
    load_state,
    next_stage,
    ordered_labels,
    reconcile_log,
    register_final_automl,
    reopen_failed,
)

_LAZY = {"run_loop": "raypipe.deft.driver", "LoopConfig": "raypipe.deft.driver",
         "LoopContext": "raypipe.deft.driver", "LoopOutcome": "raypipe.deft.driver",
         "DeftDriver": "raypipe.deft.driver", "resume_command": "raypipe.deft.driver"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raypipe.deft' has no attribute {name!r}")


__all__ = [
    "DeftDriver", "EvidenceError", "FinalArtifacts", "HardStop", "LoopConfig", "LoopContext", "LoopOutcome",
    "NextStep", "commit", "finalize", "initialise_state", "load_state", "next_stage", "ordered_labels",
    "reconcile_log", "register_final_automl", "render_report", "reopen_failed", "resume_command", "run_loop",
]
