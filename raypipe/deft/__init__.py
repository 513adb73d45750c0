"""Phase 2: the DEFT data loop.

Public surface: the state (``initialise_state``, ``commit``, ``next_stage``, …), the stages and
their registry (:mod:`raypipe.deft.stages`), finalize, and the loop driver (``run_loop``,
``DeftLoop``; nothing here imports Ray until a loop runs).
"""

from __future__ import annotations

from raypipe.deft.context import LoopContext, StageContext, config_block
from raypipe.deft.driver import DeftLoop, LoopOutcome, refresh_report, run_loop
from raypipe.deft.errors import EvidenceError, HardStop
from raypipe.deft.finalize import FinalArtifacts, finalize
from raypipe.deft.stages import REGISTRY, Stage, StageRegistry
from raypipe.deft.state import (
    EventStatus,
    IterationStatus,
    NextStep,
    RunStatus,
    commit,
    initialise_state,
    load_state,
    next_stage,
    ordered_labels,
    reconcile_log,
    register_final_automl,
    reopen_failed,
)

__all__ = [
    "REGISTRY", "DeftLoop", "EventStatus", "EvidenceError", "FinalArtifacts", "HardStop", "IterationStatus",
    "LoopContext", "LoopOutcome", "NextStep", "RunStatus", "Stage", "StageContext", "StageRegistry", "commit",
    "config_block", "finalize", "initialise_state", "load_state", "next_stage", "ordered_labels", "reconcile_log",
    "refresh_report", "register_final_automl", "reopen_failed", "run_loop",
]
