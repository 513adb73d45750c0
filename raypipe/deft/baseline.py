"""The baseline iteration: reuse a pre-seeded checkpoint (Phase 1's winner) or train one.

A baseline is pre-seeded when ``iterations.baseline.stage_completed == "train"`` and its
``best_ckpt_path`` exists; then ``next_stage`` goes straight to ``evaluate`` and training is skipped.
:func:`seed_baseline` copies a checkpoint held outside the run dir into ``RD/baseline/train/``
(``python -m raypipe.deft --baseline-ckpt``; the Phase 1 → 2 handoff does the same).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from raypipe._io import atomic_write_bytes
from raypipe.backends.base import parse_checkpoint_name
from raypipe.rundir import BASELINE, RunDir


def baseline_is_seeded(state: Mapping[str, Any]) -> bool:
    entry = state.get("iterations", {}).get(BASELINE) or {}
    ckpt = entry.get("best_ckpt_path")
    if not ckpt or entry.get("stage_completed") is None:
        return False
    return Path(ckpt).is_file()


def seed_baseline(run_dir: Path, source_ckpt: Path) -> Path:
    """Copy ``source_ckpt`` to ``RD/baseline/train/<same TAO name>`` (verified non-empty); return it.

    Idempotent: an identical copy already in place is kept.
    """
    source_ckpt = Path(source_ckpt)
    if not source_ckpt.is_file() or source_ckpt.stat().st_size == 0:
        raise FileNotFoundError(f"{source_ckpt}: baseline checkpoint missing or empty")
    parse_checkpoint_name(source_ckpt)  # TAO's model_epoch_<EEE>_step_<SSS>.pth, or a clear error
    dst = RunDir(run_dir).resolve().iteration(BASELINE).train.path / source_ckpt.name
    if dst.is_file() and dst.stat().st_size == source_ckpt.stat().st_size and \
            dst.read_bytes() == source_ckpt.read_bytes():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(source_ckpt, "rb") as fh:  # atomic: a kill mid-copy must not leave a torn checkpoint
        atomic_write_bytes(dst, fh.read())
    shutil.copystat(source_ckpt, dst)
    return dst
