"""Run one AutoML sweep on a workspace, outside the pipeline (for tuning a space or a benchmark).

    python -m raypipe.automl WORKSPACE OUT_DIR [--phase phase1|phase3] [--config FILE] [--init-ckpt PTH]
                             [key.path=value ...]

Uses the workspace's base training/validation CSVs and ``specs/baseline_spec.yaml`` with the merged
config (package defaults ← --config ← overrides) — the same inputs Phase 1 uses; never the KPI set.
Re-running with the same OUT_DIR resumes an interrupted sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raypipe.automl", description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("out_dir", type=Path, help="the sweep dir (trials.csv, best_rec.json, Tune storage)")
    ap.add_argument("--phase", choices=("phase1", "phase3"), default="phase1")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--init-ckpt", type=Path, default=None, help="warm start (pins the architecture)")
    ap.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = ap.parse_args(argv)

    from raypipe.config import load_config

    cfg = load_config(args.config, args.overrides)
    address = cfg.get("ray_address")
    if not address:  # a private local Ray: one auth mode for its clients (STACK.md); a cluster keeps its own
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from raypipe.automl import (
        SearchSpaceError,
        SweepConfig,
        SweepConfigError,
        SweepError,
        SweepInputs,
        pinned_architecture,
        run_sweep,
        validate_search_space,
    )
    from raypipe.spec import load_spec

    ws = args.workspace.absolute()
    images = ws / "images" if (ws / "images").is_dir() else ws / "kpi" / "images"
    inputs = SweepInputs(base_spec=load_spec(ws / "specs" / "baseline_spec.yaml"),
                         train_csv=ws / "train" / "base" / "training_set.csv", train_images_dir=images,
                         val_csv=ws / "train" / "base" / "validation_set.csv", val_images_dir=images,
                         backend=cfg["backend"], backend_options={"device": cfg["device"]} if cfg["backend"] == "builtin" else {},
                         init_ckpt=args.init_ckpt)
    try:  # refuse a bad config or space before starting Ray
        sweep_cfg = SweepConfig.from_config(cfg, args.phase)
        validate_search_space(sweep_cfg.search_space, inputs.base_spec, pinned_arch=pinned_architecture(inputs),
                              pinned=sweep_cfg.spec_overrides)
    except (SearchSpaceError, SweepConfigError, SweepError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    try:
        result = run_sweep(sweep_cfg, inputs, args.out_dir.absolute(), args.phase)
    except SweepError as exc:
        print(f"sweep failed: {exc}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    print(f"trials: {len(result.ranked)} ranked, {len(result.failed)} failed; best {result.best_trial_id} "
          f"{sweep_cfg.metric} {result.best_score:.4g}; wall {wall:.1f}s")
    print(f"best_rec: {result.best_rec_path}\ntrials:   {result.trials_csv}\ncheckpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
