"""The Phase 1 → 2 handoff: files on disk in, files on disk out — and never into the user's workspace.

Phase 1's winner is deep-merged onto the workspace spec (read, never written) into
``RD/specs/baseline_spec_automl.yaml``; its checkpoint, quality-checked, is copied to
``RD/baseline/train/`` where the DEFT state's baseline entry points.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_text, read_json
from raypipe.automl import RankedTrial, SweepResult
from raypipe.backends.base import checkpoint_name, parse_checkpoint_name
from raypipe.rundir import BASELINE, RunDir
from raypipe.spec import deep_merge, dump_spec, flatten, load_spec

# Architecture keys of the workspace spec that Phase 1's winner never changes (its checkpoint has them).
_KEPT_CLASSIFY_KEYS = ("difference_module", "learnable_difference_modules", "embedding_vectors", "embed_dec")


class HandoffError(RuntimeError):
    """A handoff's input is missing or unusable; the message says what to fix."""


@dataclass(frozen=True)
class Phase1Handoff:
    baseline_ckpt: Path
    source_ckpt: Path
    trial_id: str
    score: float
    training_spec_path: Path
    merged_spec: Path  # RD/specs/baseline_spec_automl.yaml
    note: str  # quality-check outcome, shown in the log and the report

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Phase1Handoff:
        # ``merged_workspace_spec``: written by runs that still merged into the workspace's own spec.
        merged = data.get("merged_spec", data.get("merged_workspace_spec"))
        return cls(baseline_ckpt=Path(data["baseline_ckpt"]), source_ckpt=Path(data["source_ckpt"]),
                   trial_id=str(data["trial_id"]), score=float(data["score"]),
                   training_spec_path=Path(data["training_spec_path"]), merged_spec=Path(str(merged)),
                   note=str(data["note"]))


def merge_phase1_spec(workspace_spec_path: Path, best_specs: dict[str, Any], out: Path) -> Path:
    """The winner's specs deep-merged onto the workspace spec, written to ``out`` (the workspace spec is
    only read). Dataset paths, architecture and lights come from the workspace spec."""
    base = load_spec(workspace_spec_path)
    keep = {k: copy.deepcopy(base[k]) for k in ("dataset",) if k in base}
    merged = deep_merge(base, best_specs)
    merged = deep_merge(merged, keep)
    merged.setdefault("model", {})["backbone"] = copy.deepcopy(base.get("model", {}).get("backbone", {}))
    for key in _KEPT_CLASSIFY_KEYS:
        if key in base.get("model", {}).get("classify", {}):
            merged["model"].setdefault("classify", {})[key] = base["model"]["classify"][key]
    # learnable_difference_modules is swept in Phase 1: the winner's value is the architecture of its checkpoint.
    lmod = flatten(best_specs).get("model.classify.learnable_difference_modules")
    if lmod is not None:
        merged["model"].setdefault("classify", {})["learnable_difference_modules"] = lmod
    return atomic_write_text(out, dump_spec(merged))


def _pick(ranked: list[RankedTrial]) -> tuple[RankedTrial, str]:
    """The baseline among the top 3: a winner whose validation predictions collapsed to one class is no baseline."""
    for rank, cand in enumerate(ranked[:3]):
        if cand.checkpoint is None or cand.collapsed:
            continue
        if rank == 0:
            return cand, "winner kept: predictions on the validation set cover both classes"
        return cand, (f"winner {ranked[0].trial_id} collapsed to one class on the validation set "
                      f"({ranked[0].pred_counts}); took the #{rank + 1} trial {cand.trial_id} instead")
    # Argmax collapse does not stop the ranking by score from working (FAR uses a threshold, not
    # argmax), so keep the winner rather than halting a run the user already approved — but say so.
    first = next((c for c in ranked if c.checkpoint is not None), None)
    if first is None:
        raise HandoffError("Phase 1: no trial produced a checkpoint; see phase1_automl/trials.csv for errors")
    return first, ("WARNING: the top trials all predict a single class at argmax on the validation set; kept the "
                   "winner by FAR. Consider more epochs or a wider cls_weight[1]/fpratio_sampling range")


def _copy_checkpoint(src: Path, train_dir: Path) -> Path:
    """``src`` into ``train_dir`` under TAO's name (a partial copy is never left in place)."""
    try:
        epoch, step = parse_checkpoint_name(src)
    except ValueError:
        epoch, step = 1, 1
    train_dir.mkdir(parents=True, exist_ok=True)
    dst = train_dir / checkpoint_name(epoch, step)
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        tmp = dst.with_suffix(".pth.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    return dst


def phase1_to_phase2(rd: RunDir, workspace_spec_path: Path, sweep: SweepResult,
                     run_spec: dict[str, Any]) -> Phase1Handoff:
    """Merged spec into the run dir; the quality-checked, verified checkpoint into ``RD/baseline/train/``.

    The caller initialises ``deft_state.json`` with the returned facts.
    """
    best_rec = read_json(sweep.best_rec_path)
    merged = merge_phase1_spec(workspace_spec_path, best_rec["best"]["specs"], rd.baseline_spec_automl)
    chosen, note = _pick(sweep.ranked)
    src = Path(str(chosen.checkpoint))
    if not src.is_file() or src.stat().st_size == 0:
        raise HandoffError(f"Phase 1 winner checkpoint {src} is missing or empty")
    train = rd.iteration(BASELINE).train
    dst = _copy_checkpoint(src, train.path)
    spec = deep_merge(run_spec, _trial_specs(sweep, chosen.trial_id, best_rec))
    spec_path = atomic_write_text(train.spec, dump_spec(spec))
    return Phase1Handoff(baseline_ckpt=dst.resolve(), source_ckpt=src.resolve(), trial_id=str(chosen.trial_id),
                         score=float(chosen.score), training_spec_path=spec_path.resolve(),
                         merged_spec=merged.resolve(), note=note)


def _trial_specs(sweep: SweepResult, trial_id: str, best_rec: dict[str, Any]) -> dict[str, Any]:
    if str(trial_id) == str(best_rec["best"]["rec_id"]):
        specs: dict[str, Any] = best_rec["best"]["specs"]
        return specs
    if str(trial_id) in sweep.trial_specs:
        return sweep.trial_specs[str(trial_id)]
    raise HandoffError(f"no spec recorded for Phase 1 trial {trial_id}")
