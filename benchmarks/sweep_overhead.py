"""Per-sweep overhead of ``raypipe.automl.run_sweep``: what Tune + Optuna + our bookkeeping cost.

One sweep of N trials on the demo workspace with the real builtin backend, in one run:
- ``wall``: the whole ``run_sweep`` call (validation, Tune experiment, read-back, best_rec, trials.csv;
  Ray itself is started before the clock, it is shared by the whole pipeline);
- ``compute``: the sum over trials of the time spent inside ``backend.train`` (reported by each trial);
- overhead fraction = ``(wall − compute / concurrency) / wall``: the share of the sweep's wall time
  that is not training, if the trials were perfectly packed on ``concurrency`` slots.

    python benchmarks/sweep_overhead.py [--smoke-test] [--trials N] [--concurrency K] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke-test", action="store_true", help="2 trials, tiny images: checks the script runs")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--scale", type=float, default=0.05, help="demo workspace scale")
    ap.add_argument("--image-size", type=int, default=64, help="demo images are 64 px; smaller is faster")
    ap.add_argument("--no-reuse-actors", action="store_true", help="fresh worker process per trial")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke_test:
        args.trials, args.image_size = 2, 32

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # one auth mode for every client: Ray refuses a client whose mode differs
    import ray

    from raypipe.automl import SweepConfig, SweepInputs, run_sweep
    from raypipe.spec import load_spec, set_dotted
    from raypipe.workspace import generate_demo

    with tempfile.TemporaryDirectory(prefix="sweep_overhead_") as tmp:
        ws = generate_demo(Path(tmp) / "ws", seed=0, scale=args.scale)
        spec = load_spec(ws / "specs" / "baseline_spec.yaml")
        for key in ("dataset.classify.image_width", "dataset.classify.image_height"):
            set_dotted(spec, key, args.image_size)
        cfg = SweepConfig(
            num_trials=args.trials, max_concurrent_trials=args.concurrency, noise_margin=None,
            resources_per_trial={"cpu": 1, "gpu": 0}, reuse_actors=not args.no_reuse_actors,
            search_space={"train.optim.lr": {"valid_min": 1e-4, "valid_max": 3e-3, "log": True},
                          "train.classify.cls_weight[1]": {"valid_min": 2.0, "valid_max": 20.0, "log": True}},
            spec_overrides={"train.num_epochs": args.epochs, "dataset.classify.batch_size": 16})
        inputs = SweepInputs(base_spec=spec, train_csv=ws / "train/base/training_set.csv", train_images_dir=ws / "images",
                             val_csv=ws / "train/base/validation_set.csv", val_images_dir=ws / "images",
                             backend_options={"device": "cpu"})
        ray.init(address="local", num_cpus=max(args.concurrency, 1), include_dashboard=False, log_to_driver=False)
        try:
            t0 = time.perf_counter()
            result = run_sweep(cfg, inputs, Path(tmp) / "phase1_automl", "phase1")
            wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
        trials = pd.read_csv(result.trials_csv)
        compute = float(trials["compute_s"].sum())

    overhead = (wall - compute / args.concurrency) / wall
    report = {"trials": args.trials, "concurrency": args.concurrency, "epochs": args.epochs,
              "reuse_actors": not args.no_reuse_actors, "wall_s": round(wall, 2), "compute_s": round(compute, 2),
              "per_trial_overhead_s": round((wall - compute / args.concurrency) * args.concurrency / args.trials, 2),
              "overhead_fraction": round(overhead, 3), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(f"sweep of {args.trials} trials, {args.concurrency} concurrent: wall {wall:.1f}s, "
          f"compute {compute:.1f}s (sum over trials)")
    print(f"overhead fraction (wall - compute/concurrency)/wall = {overhead:.3f}")
    print(json.dumps(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
