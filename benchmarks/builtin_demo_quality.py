"""Validation FAR@100%-recall of the built-in backend on the demo workspace: untrained vs trained.

Trains with the workspace's own ``specs/baseline_spec.yaml`` (backbone substituted by resolve_backbone
when needed) on ``train/base/training_set.csv``, scores ``train/base/validation_set.csv`` with the
untrained network (same seed) and with the best-val and latest checkpoints, and prints FAR@100 %
recall beside AUROC (FAR@100 % is decided by the single hardest defect; AUROC shows the rest).

    python benchmarks/builtin_demo_quality.py [--workspace DIR] [--smoke-test] [--seeds 0 1] [--set key=value ...]

Without ``--workspace`` a demo workspace is generated in a temp dir (scale 1.0; 0.05 with --smoke-test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from raypipe.backends.builtin import BuiltinTrainer, resolve_backbone, save_untrained_checkpoint
from raypipe.metrics import auroc, far_at_recall
from raypipe.spec import load_spec, set_dotted
from raypipe.workspace import generate_demo, is_defect


def _score(csv: Path) -> dict[str, float]:
    df = pd.read_csv(csv, dtype={"label": str})
    y = df["label"].map(is_defect).to_numpy()
    return {"far_pct": far_at_recall(y, df["siamese_score"]).far * 100, "auroc": auroc(y, df["siamese_score"])}


def run(ws: Path, out: Path, seed: int, overrides: list[str], threads: int, device: str) -> dict:
    spec, note = resolve_backbone(load_spec(ws / "specs" / "baseline_spec.yaml"))
    for kv in overrides:
        key, value = kv.split("=", 1)
        set_dotted(spec, key, yaml.safe_load(value))
    trainer = BuiltinTrainer(device=device, num_threads=threads)
    images, val = ws / "images", ws / "train" / "base" / "validation_set.csv"
    untrained = save_untrained_checkpoint(spec, out / "untrained.pth", seed=seed)
    before = _score(trainer.infer(spec, untrained, val, out / "untrained", images_dir=images))
    t0 = time.perf_counter()
    res = trainer.train(spec, ws / "train" / "base" / "training_set.csv", val, out / "train", images_dir=images, seed=seed)
    wall = time.perf_counter() - t0
    best = _score(trainer.infer(spec, res.best_val_ckpt, val, out / "best_val", images_dir=images))
    latest = _score(trainer.infer(spec, res.latest_ckpt, val, out / "latest", images_dir=images))
    return {"seed": seed, "backbone_note": note, "untrained": before, "best_val": best, "latest": latest,
            "best_epoch": res.best_epoch, "train_wall_s": wall, "train_cpu_s": res.extra["cpu_s"], "epochs": len(res.epochs),
            "per_epoch_val_far": [round(e.val_far, 2) for e in res.epochs]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--smoke-test", action="store_true", help="scale-0.05 demo, 1 epoch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted spec override (repeatable), e.g. --set train.optim.lr=0.001")
    args = ap.parse_args(argv)
    overrides = (["train.num_epochs=1"] if args.smoke_test else []) + args.overrides
    results = []
    with tempfile.TemporaryDirectory(prefix="builtin_quality_") as tmp:
        ws = args.workspace
        if ws is None:
            t0 = time.perf_counter()
            ws = generate_demo(Path(tmp) / "ws", seed=0, scale=0.05 if args.smoke_test else 1.0)
            print(f"generated demo workspace in {time.perf_counter() - t0:.1f}s")
        for seed in args.seeds:
            r = run(Path(ws), Path(tmp) / f"seed{seed}", seed, overrides, args.threads, args.device)
            results.append(r)
            print(f"seed {seed}: val FAR@100%recall untrained {r['untrained']['far_pct']:.1f}% "
                  f"(AUROC {r['untrained']['auroc']:.3f}) -> best_val {r['best_val']['far_pct']:.1f}% "
                  f"(AUROC {r['best_val']['auroc']:.3f}, epoch {r['best_epoch']}), latest {r['latest']['far_pct']:.1f}% "
                  f"(AUROC {r['latest']['auroc']:.3f}); train {r['epochs']} epochs in {r['train_wall_s']:.1f}s wall, "
                  f"{r['train_cpu_s']:.1f}s CPU, {args.threads} thread(s); per-epoch val FAR {r['per_epoch_val_far']}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
