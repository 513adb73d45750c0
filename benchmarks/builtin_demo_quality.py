"""Can the built-in model learn the demo, and does it need the right pool rows to? Three arms, several seeds.

For every seed, trains the built-in backend with the workspace's own spec on
- ``train``:  the training set alone (what Phase 1 sees);
- ``oracle``: the training set plus every mining-pool row of the kinds missing from train (what a
  perfect miner would add);
- ``random``: the training set plus the same number of pool rows drawn at random (the control a
  miner has to beat: a PASS-heavy pool gives it a few rare rows by luck);
- ``sdg`` (opt-in via ``--arms``): the training set plus as many synthetic rows of the rare kinds,
  drawn by the built-in SDG recipes onto training goldens (what the loop's synthesis can add);
and, with ``--finetune``, ``oracle_ft`` / ``random_ft``: the same additions, warm-started from that
seed's ``train`` checkpoint at ``--ft-lr-scale`` (default 0.25) of the spec's lr, as a DEFT iteration
trains (``--ft-set`` overrides more keys for those arms).

Each arm's best-validation checkpoint is scored on the validation split and on the sealed test split
(``test/testing_set.csv``; the KPI set when a workspace has none): FAR at 100 % recall, AUROC, and
per defect kind the FAR at that kind's own 100 % recall (which kinds pin the headline number).
Prints mean ± sd over seeds.

    python benchmarks/builtin_demo_quality.py [--workspace DIR | --scale F] [--seeds 0 1 2] [--finetune]
        [--set key=value ...] [--ft-set key=value ...] [--smoke-test] [--json FILE]

Without ``--workspace`` a demo workspace is generated in a temp dir (``--scale``, default 1.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raypipe.backends.builtin import BuiltinTrainer, resolve_backbone
from raypipe.metrics import auroc, far_at_recall
from raypipe.spec import load_spec, set_dotted
from raypipe.workspace import CSV_FILES, RARE_KINDS, generate_demo, is_defect, read_rows, write_rows

TEST_CSV = "test/testing_set.csv"
SCRATCH_ARMS = ("train", "oracle", "random", "sdg")
FINETUNE_ARMS = ("oracle_ft", "random_ft")


def score(inference_csv: Path) -> dict[str, Any]:
    """FAR@100 %R (%), AUROC and per-kind FAR (each kind's own weakest row sets the threshold)."""
    df = pd.read_csv(inference_csv, dtype={"label": str})
    y = df["label"].map(is_defect).to_numpy()
    s = df["siamese_score"].to_numpy(dtype=float)
    passes = s[~y]
    per_kind = {str(k): float((passes >= s[(df["label"] == k).to_numpy()].min()).mean() * 100)
                for k in sorted(df.loc[y, "label"].unique())}
    return {"far_pct": far_at_recall(y, s).far * 100, "auroc": auroc(y, s), "per_kind_far_pct": per_kind}


def rare_kinds(ws: Path) -> tuple[str, ...]:
    manifest = ws / "demo_manifest.json"
    if manifest.is_file():
        return tuple(json.loads(manifest.read_text(encoding="utf-8"))["rare_kinds"])
    return RARE_KINDS


def synthetic_rows(ws: Path, out: Path, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of the rare kinds drawn by the built-in SDG recipes onto training goldens, made to
    look like captures (what the DEFT loop's synthesis adds), images under ``out``, absolute paths."""
    from PIL import Image

    from raypipe.deft._recipes import apply_recipe, capture_like, recipe_for, sample_geometry

    rng = np.random.default_rng(20_000 + seed)
    train = read_rows(ws / CSV_FILES["train"])
    lights = list(load_spec(ws / "specs" / "baseline_spec.yaml")["dataset"]["classify"]["input_map"])
    kinds, records = rare_kinds(ws), []
    for i in range(n):
        src = train.iloc[int(rng.integers(len(train)))]
        label = kinds[i % len(kinds)]
        goldens = [np.asarray(Image.open(ws / "images" / src.golden_path / f"{src.object_name}_{lt}.png"),
                              dtype=np.float64) / 255.0 for lt in lights]
        geom = sample_geometry(recipe_for(label, {}), goldens, rng)
        ng = capture_like([apply_recipe(g, geom, k) for k, g in enumerate(goldens)], rng)
        name = f"SDG{i}"
        for kind, imgs in (("capture", ng), ("golden", goldens)):
            d = out / "sdg_images" / kind
            d.mkdir(parents=True, exist_ok=True)
            for lt, img in zip(lights, imgs, strict=True):
                Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(d / f"{name}_{lt}.png")
        records.append({"input_path": str(out / "sdg_images" / "capture"), "golden_path": str(out / "sdg_images" / "golden"),
                        "label": label, "object_name": name})
    return pd.DataFrame.from_records(records)


def extra_rows(ws: Path, arm: str, seed: int, out: Path | None = None) -> pd.DataFrame:
    """The rows an arm adds to the training set (empty for ``train``)."""
    pool = read_rows(ws / CSV_FILES["pool"])
    rare = pool[pool["label"].isin(rare_kinds(ws))]
    if arm == "train":
        return pool.iloc[:0]
    if arm == "sdg":
        return synthetic_rows(ws, out or Path("."), len(rare), seed)
    if arm.startswith("oracle"):
        return rare
    if arm.startswith("random"):
        pick = np.random.default_rng(10_000 + seed).choice(len(pool), size=len(rare), replace=False)
        return pool.iloc[np.sort(pick)]
    raise ValueError(f"unknown arm {arm!r}")


def apply_overrides(spec: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for kv in overrides:
        key, value = kv.split("=", 1)
        set_dotted(spec, key, yaml.safe_load(value))
    return spec


def run_arm(ws: Path, out: Path, arm: str, seed: int, spec: dict[str, Any], trainer: BuiltinTrainer,
            init_ckpt: Path | None) -> dict[str, Any]:
    images = ws / "images"
    added = extra_rows(ws, arm, seed, out)
    train_csv = out / "train.csv"
    out.mkdir(parents=True, exist_ok=True)
    write_rows(pd.concat([read_rows(ws / CSV_FILES["train"]), added], ignore_index=True).fillna(""), train_csv)
    val_csv = ws / CSV_FILES["validation"]
    test_csv = ws / TEST_CSV if (ws / TEST_CSV).is_file() else ws / CSV_FILES["kpi"]
    t0 = time.perf_counter()
    res = trainer.train(spec, train_csv, val_csv, out / "train", init_ckpt, images_dir=images, seed=seed)
    wall = time.perf_counter() - t0
    rare = set(rare_kinds(ws))
    return {
        "arm": arm, "seed": seed, "added_rows": len(added), "added_rare_rows": int(added["label"].isin(rare).sum()),
        "best_ckpt": str(res.best_val_ckpt), "best_epoch": res.best_epoch, "train_wall_s": wall,
        "train_cpu_s": res.extra["cpu_s"], "per_epoch_val_far": [round(e.val_far, 2) for e in res.epochs],
        "validation": score(trainer.infer(spec, res.best_val_ckpt, val_csv, out / "val", images_dir=images)),
        "test": score(trainer.infer(spec, res.best_val_ckpt, test_csv, out / "test", images_dir=images)),
        "test_split": str(test_csv.relative_to(ws)),
    }


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summarise(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for arm in dict.fromkeys(r["arm"] for r in results):
        rs = [r for r in results if r["arm"] == arm]
        parts = [f"{arm:<10} n={len(rs)} +{rs[0]['added_rows']} rows ({_mean_sd([r['added_rare_rows'] for r in rs])} rare)"]
        for split in ("validation", "test"):
            parts.append(f"{split} FAR {_mean_sd([r[split]['far_pct'] for r in rs])} % "
                         f"AUROC {_mean_sd([r[split]['auroc'] for r in rs])}")
        parts.append(f"train {_mean_sd([r['train_wall_s'] for r in rs])} s")
        lines.append(" | ".join(parts))
        kinds = sorted(rs[0]["test"]["per_kind_far_pct"])
        lines.append(" " * 11 + "test FAR per kind: " + ", ".join(
            f"{k} {_mean_sd([r['test']['per_kind_far_pct'][k] for r in rs])}" for k in kinds))
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--scale", type=float, default=1.0, help="scale of the generated demo (no --workspace)")
    ap.add_argument("--demo-seed", type=int, default=0)
    ap.add_argument("--smoke-test", action="store_true", help="scale-0.1 demo, 1 epoch, 1 seed (seconds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["train", "oracle", "random"], choices=SCRATCH_ARMS + FINETUNE_ARMS)
    ap.add_argument("--finetune", action="store_true", help="add the warm-started arms oracle_ft and random_ft")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted spec override for every arm (repeatable), e.g. --set train.optim.lr=0.001")
    ap.add_argument("--ft-set", dest="ft_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted spec override for the warm-started arms, applied after --set")
    ap.add_argument("--ft-lr-scale", type=float, default=0.25,
                    help="warm-started arms train at this fraction of the spec's lr (phase2.finetune_lr_scale)")
    ap.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    ap.add_argument("--keep", type=Path, default=None,
                    help="write checkpoints and inference CSVs here (default: a temp dir, removed after)")
    args = ap.parse_args(argv)
    arms = list(args.arms) + (list(FINETUNE_ARMS) if args.finetune else [])
    if any(a in FINETUNE_ARMS for a in arms) and "train" not in arms:
        arms.insert(0, "train")  # the warm start comes from it
    seeds = args.seeds[:1] if args.smoke_test else args.seeds
    overrides = (["train.num_epochs=1"] if args.smoke_test else []) + args.overrides
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="builtin_quality_") as scratch:
        tmp = str(args.keep) if args.keep else scratch
        ws = args.workspace
        if ws is None:
            t0 = time.perf_counter()
            ws = generate_demo(Path(tmp) / "ws", seed=args.demo_seed, scale=0.1 if args.smoke_test else args.scale)
            print(f"generated demo workspace in {time.perf_counter() - t0:.1f}s")
        ws = Path(ws)
        spec, note = resolve_backbone(load_spec(ws / "specs" / "baseline_spec.yaml"))
        if note:
            print(note)
        spec = apply_overrides(spec, overrides)
        ft_spec = json.loads(json.dumps(spec))
        set_dotted(ft_spec, "train.optim.lr", float(spec["train"]["optim"]["lr"]) * args.ft_lr_scale)
        ft_spec = apply_overrides(ft_spec, args.ft_overrides)
        trainer = BuiltinTrainer(device=args.device, num_threads=args.threads)
        for seed in seeds:
            base_ckpt: Path | None = None
            for arm in arms:
                warm = arm in FINETUNE_ARMS
                r = run_arm(ws, Path(tmp) / f"seed{seed}" / arm, arm, seed, ft_spec if warm else spec, trainer,
                            base_ckpt if warm else None)
                if arm == "train":
                    base_ckpt = Path(r["best_ckpt"])
                results.append(r)
                print(f"seed {seed} {arm:<10} +{r['added_rows']} rows ({r['added_rare_rows']} rare): "
                      f"val FAR {r['validation']['far_pct']:.1f}% AUROC {r['validation']['auroc']:.3f} | "
                      f"{r['test_split']} FAR {r['test']['far_pct']:.1f}% AUROC {r['test']['auroc']:.3f} | "
                      f"best epoch {r['best_epoch']}, per-epoch val FAR {r['per_epoch_val_far']}, "
                      f"{r['train_wall_s']:.1f}s wall, {r['train_cpu_s']:.1f}s CPU", flush=True)
    print(f"\nmean ± sd over seeds {seeds} (overrides {overrides}; fine-tune lr x{args.ft_lr_scale} "
          f"{args.ft_overrides}):")
    for line in summarise(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
