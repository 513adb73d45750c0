"""The two handoffs between phases (SPEC §7): files on disk in, files on disk out."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raypipe._io import atomic_write_bytes, atomic_write_text, read_json
from raypipe.backends.base import checkpoint_name, parse_checkpoint_name
from raypipe.spec import deep_merge, dump_spec, flatten, load_spec


class HandoffError(RuntimeError):
    """A handoff's input is missing or unusable; the message says what to fix."""


@dataclass(frozen=True)
class Phase1Handoff:
    baseline_ckpt: Path
    source_ckpt: Path
    trial_id: str
    score: float
    training_spec_path: Path
    merged_workspace_spec: Path
    note: str  # quality-check outcome, shown in the log and the report


def _collapsed(pred_counts: dict[str, int] | None) -> bool:
    if not pred_counts:
        return False
    return sum(1 for v in pred_counts.values() if v > 0) < 2


def merge_phase1_spec(workspace_spec_path: Path, best_specs: dict[str, Any]) -> Path:
    """SPEC §7.1 step 1: winner's specs onto the workspace spec → ``baseline_spec_automl.yaml``.

    The original is kept as ``baseline_spec.orig.yaml`` (never overwritten once it exists, so a
    second run cannot lose the user's own spec) before the merged spec is copied over
    ``baseline_spec.yaml``. Dataset paths, architecture and lights come from the original.
    """
    spec_dir = workspace_spec_path.parent
    orig = spec_dir / "baseline_spec.orig.yaml"
    if not orig.exists():
        atomic_write_bytes(orig, workspace_spec_path.read_bytes())
    base = load_spec(orig)
    keep = {k: copy.deepcopy(base[k]) for k in ("dataset",) if k in base}
    merged = deep_merge(base, best_specs)
    merged = deep_merge(merged, keep)
    merged.setdefault("model", {})["backbone"] = copy.deepcopy(base.get("model", {}).get("backbone", {}))
    for key in ("difference_module", "learnable_difference_modules", "embedding_vectors", "embed_dec"):
        if key in base.get("model", {}).get("classify", {}):
            merged["model"].setdefault("classify", {})[key] = base["model"]["classify"][key]
    # learnable_difference_modules is swept in Phase 1: the winner's value is the architecture of its checkpoint.
    lmod = flatten(best_specs).get("model.classify.learnable_difference_modules")
    if lmod is not None:
        merged["model"].setdefault("classify", {})["learnable_difference_modules"] = lmod
    out = spec_dir / "baseline_spec_automl.yaml"
    atomic_write_text(out, dump_spec(merged))
    atomic_write_text(workspace_spec_path, dump_spec(merged))
    return out


def phase1_to_phase2(run_dir: Path, workspace_spec_path: Path, sweep: Any, run_spec: dict[str, Any]) -> Phase1Handoff:
    """SPEC §7.1: merged spec, quality-checked and verified checkpoint copied into ``RD/baseline/train/``.

    ``sweep`` is the Phase 1 :class:`raypipe.automl.SweepResult`; the caller initialises
    ``deft_state.json`` with the returned facts.
    """
    best_rec = read_json(sweep.best_rec_path)
    merged_ws = merge_phase1_spec(workspace_spec_path, best_rec["best"]["specs"])

    # Step 4 (quality): a winner whose validation predictions collapsed to one class is no baseline.
    note = "winner kept: predictions on the validation set cover both classes"
    chosen = None
    for rank, cand in enumerate(sweep.ranked[:3]):
        trial_id, score, ckpt, pred_counts = cand[0], cand[1], cand[2], cand[3]
        if ckpt is None or _collapsed(pred_counts):
            continue
        chosen = (trial_id, score, Path(ckpt))
        if rank > 0:
            note = (f"winner {sweep.ranked[0][0]} collapsed to one class on the validation set "
                    f"({sweep.ranked[0][3]}); took the #{rank + 1} trial {trial_id} instead")
        break
    if chosen is None:
        # Argmax collapse does not stop the ranking by score from working (FAR uses a threshold, not
        # argmax), so keep the winner rather than halting a run the user already approved — but say so.
        first = next((c for c in sweep.ranked if c[2] is not None), None)
        if first is None:
            raise HandoffError("Phase 1: no trial produced a checkpoint; see phase1_automl/trials.csv for errors")
        chosen = (first[0], first[1], Path(first[2]))
        note = ("WARNING: the top trials all predict a single class at argmax on the validation set; kept the "
                "winner by FAR. Consider more epochs or a wider cls_weight[1]/fpratio_sampling range")
    trial_id, score, src = chosen
    if not src.is_file() or src.stat().st_size == 0:
        raise HandoffError(f"Phase 1 winner checkpoint {src} is missing or empty")
    try:
        epoch, step = parse_checkpoint_name(src)
    except ValueError:
        epoch, step = 1, 1
    train_dir = Path(run_dir) / "baseline" / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    dst = train_dir / checkpoint_name(epoch, step)
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        tmp = dst.with_suffix(".pth.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    spec = deep_merge(run_spec, _trial_specs(sweep, trial_id, best_rec))
    spec_path = train_dir / "experiment.yaml"
    atomic_write_text(spec_path, dump_spec(spec))
    return Phase1Handoff(baseline_ckpt=dst.resolve(), source_ckpt=src.resolve(), trial_id=str(trial_id),
                         score=float(score), training_spec_path=spec_path.resolve(),
                         merged_workspace_spec=merged_ws, note=note)


def _trial_specs(sweep: Any, trial_id: str, best_rec: dict[str, Any]) -> dict[str, Any]:
    if str(trial_id) == str(best_rec["best"]["rec_id"]):
        return best_rec["best"]["specs"]
    specs = getattr(sweep, "trial_specs", {}) or {}
    if str(trial_id) in specs:
        return specs[str(trial_id)]
    raise HandoffError(f"no spec recorded for Phase 1 trial {trial_id}")


def load_training_spec(value: Any) -> dict[str, Any]:
    """``training_spec`` in deft_state is a path (TAO style) or an inline mapping."""
    if isinstance(value, dict):
        return copy.deepcopy(value)
    return load_spec(Path(value))


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
