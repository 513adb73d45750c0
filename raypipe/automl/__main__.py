"""Run one AutoML sweep on a workspace, outside the pipeline (for tuning a space or a benchmark).

    python -m raypipe.automl WORKSPACE OUT_DIR [--phase phase1|phase3] [--config FILE] [--init-ckpt PTH]
                             [key.path=value ...]

Uses the workspace's base training/validation CSVs and ``specs/baseline_spec.yaml`` with the run
config (package defaults ← --config ← overrides) — the same inputs Phase 1 uses; never the KPI set.
Re-running with the same OUT_DIR resumes an interrupted sweep.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raypipe.automl", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("out_dir", type=Path, help="the sweep dir (trials.csv, best_rec.json, Tune storage)")
    ap.add_argument("--phase", choices=("phase1", "phase3"), default="phase1")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--init-ckpt", type=Path, default=None, help="warm start (pins the architecture)")
    ap.add_argument("overrides", nargs="*", help="config overrides, key.path=value")
    args = ap.parse_args(argv)

    from raypipe._ray import ray_session
    from raypipe.automl import (
        SearchSpaceError,
        SweepConfig,
        SweepError,
        SweepInputs,
        pinned_architecture,
        run_sweep,
        validate_search_space,
    )
    from raypipe.backends import backend_options
    from raypipe.config import ConfigError, load_config
    from raypipe.spec import load_spec
    from raypipe.workspace._layout import CSV_FILES, IMAGE_ROOTS, SPEC_FILE

    ws = args.workspace.absolute()
    images = next((ws / r for r in IMAGE_ROOTS if (ws / r).is_dir()), ws / IMAGE_ROOTS[0])
    try:  # refuse a bad config or space before starting Ray
        cfg = load_config(args.config, args.overrides)
        inputs = SweepInputs(base_spec=load_spec(ws / SPEC_FILE), train_csv=ws / CSV_FILES["train"],
                             train_images_dir=images, val_csv=ws / CSV_FILES["validation"], val_images_dir=images,
                             backend=cfg.backend, backend_options=backend_options(cfg, workspace_root=ws),
                             init_ckpt=args.init_ckpt)
        sweep_cfg = SweepConfig.from_config(cfg, args.phase)
        validate_search_space(sweep_cfg.search_space, inputs.base_spec, pinned_arch=pinned_architecture(inputs),
                              pinned=sweep_cfg.spec_overrides)
    except (ConfigError, SearchSpaceError, SweepError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with ray_session(cfg.ray_address, log_to_driver=False):
        try:
            result = run_sweep(sweep_cfg, inputs, args.out_dir.absolute(), args.phase)
        except SweepError as exc:
            print(f"sweep failed: {exc}", file=sys.stderr)
            return 1
    wall = time.perf_counter() - t0
    print(f"trials: {len(result.ranked)} ranked, {len(result.failed)} failed; best {result.best_trial_id} "
          f"{sweep_cfg.metric} {result.best_score:.4g}; wall {wall:.1f}s")
    print(f"best_rec: {result.best_rec_path}\ntrials:   {result.trials_csv}\ncheckpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
