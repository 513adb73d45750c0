"""Does the DEFT loop beat doing the obvious thing? The loop vs two controls from the same checkpoint.

For every run seed, on one demo workspace:
1. the pipeline runs (``python -m raypipe.run``, the given profile) with Phase 3 off: Phase 1's
   winner becomes the loop's baseline, then the loop's iterations (RCA -> routing -> SDG -> mining
   -> merge -> warm-started retrain);
2. from that same baseline checkpoint, each control repeats the loop's iterations with the loop's
   own training spec (its warm-start lr, its epochs), chained like the loop:
   - ``extra_epochs``: the base training set only (the same extra epochs, no new data);
   - ``random_rows``: the base training set plus as many random pool rows as the loop added
     (mined + synthetic), cumulatively per iteration;
3. every checkpoint is scored on the sealed test split (``test/testing_set.csv``), which no stage
   reads: FAR at 100 % recall and AUROC. The loop also reports its mining record per iteration
   (``mining_stats.csv``): defect-target precision with labels, the embedder's own label-blind
   precision, and the pool recall of the kinds missing from train.

Prints per seed and mean ± sd; a gain inside the seed-to-seed spread is not a gain.

``--replay RUN_DIR`` skips step 1 (a pipeline run costs minutes per seed): every seed retrains all
three arms from that run's baseline checkpoint, the loop's arm on the run's own merged training
sets, so the spread is that of training with the loop's data held fixed. ``--ablate-sdg`` (with
``--replay``) adds a fourth arm, ``deft_no_sdg``: the loop's merged sets without their synthetic
rows (provenance ``sdg``), to measure what the synthetic rows add.

    python benchmarks/deft_gain.py [--workspace DIR] [--seeds 0 1 2] [--config experiments/aoi_default.yaml]
        [--phase1-trials N] [--replay RUN_DIR [--ablate-sdg]] [--pool-pass N] [--smoke-test] [--json FILE]

Without ``--workspace`` a demo workspace is generated in a temp dir (``--demo-seed``, ``--scale``).
The demo's pool is small for a production line (each rare kind is about 1 % of it), so random pool
rows bring a few rare rows by luck, and a warm-started fine-tune learns from that few;
``--pool-pass 12000`` makes the pool PASS-heavier, the rare kinds' rows unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from builtin_demo_quality import rare_kinds, score  # the quality benchmark's scoring (same directory)

from raypipe.backends.builtin import BuiltinTrainer
from raypipe.rundir import BASELINE, RunDir
from raypipe.spec import load_training_spec, set_dotted
from raypipe.workspace import (
    CSV_FILES,
    DEFECT_KINDS,
    RARE_KINDS,
    DemoSettings,
    generate_demo,
    plan_counts,
    read_rows,
    write_rows,
)

REPO = Path(__file__).resolve().parents[1]
TEST_CSV = "test/testing_set.csv"
ARMS = ("deft", "extra_epochs", "random_rows")


def arms_of(r: dict[str, Any]) -> list[str]:
    return [a for a in (*ARMS, "deft_no_sdg") if f"{a}_test" in r]


def run_pipeline(ws: Path, config: Path, seed: int, extra: list[str], log_path: Path) -> tuple[RunDir, float]:
    """One pipeline run with Phase 3 off; returns its run dir and wall seconds."""
    before = set((ws / "results").glob("run_*")) if (ws / "results").is_dir() else set()
    cmd = [sys.executable, "-m", "raypipe.run", "--config", str(config), "--workspace", str(ws), "--yes",
           f"seed={seed}", "phase3.enabled=false", *extra]
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    wall = time.perf_counter() - t0
    new = sorted(set((ws / "results").glob("run_*")) - before)
    if rc != 0 or not new:
        raise SystemExit(f"pipeline run failed (rc {rc}); see {log_path}")
    return RunDir(new[-1]), wall


def loop_record(rd: RunDir) -> list[dict[str, Any]]:
    """The baseline and each loop iteration, in order: checkpoint, spec, merged CSV, mining stats."""
    state = json.loads(rd.deft_state.read_text(encoding="utf-8"))["iterations"]
    labels = [BASELINE] + sorted((k for k in state if k.startswith("iter")), key=lambda k: int(k[4:]))
    out = []
    for label in labels:
        e = state[label]
        if "best_ckpt_path" not in e:
            continue  # an iteration that did not finish training
        stats_csv = e.get("mining_stats_csv")
        out.append({"label": label, "ckpt": e["best_ckpt_path"], "spec": e["training_spec"],
                    "combined_csv": e.get("combined_training_csv"), "provenance_csv": e.get("provenance_csv"),
                    "mining_stats": pd.read_csv(stats_csv).to_dict("records") if stats_csv else None})
    return out


def mining_summary(steps: list[dict[str, Any]], rare: tuple[str, ...]) -> dict[str, Any]:
    """Defect-target precision (label-aware and label-blind) per iteration; rare-kind cumulative pool recall."""
    per_iter = []
    for s in steps:
        if not s["mining_stats"]:
            continue
        t = pd.DataFrame(s["mining_stats"])
        d = t[t["label"] != "PASS"]
        mined = int(d["mined"].sum())
        blind = d.dropna(subset=["label_blind_precision"])
        per_iter.append({
            "iteration": s["label"], "defect_mined": mined,
            "defect_precision": (int(d["same_label"].sum()) / mined) if mined else None,
            "blind_precision_mean": float(blind["label_blind_precision"].mean()) if len(blind) else None,
            "pass_mined": int(t.loc[t["label"] == "PASS", "mined"].sum()),
            "rare_cumulative_recall": {k: float(t.loc[t["label"] == k, "cumulative_recall"].iloc[0])
                                       for k in rare if (t["label"] == k).any()},
        })
    return {"per_iteration": per_iter}


def added_rows(ws: Path, combined_csv: str | None) -> int:
    if not combined_csv:
        return 0
    return len(read_rows(Path(combined_csv))) - len(read_rows(ws / CSV_FILES["train"]))


def run_controls(ws: Path, out: Path, steps: list[dict[str, Any]], seed: int, trainer: BuiltinTrainer,
                 arms: tuple[str, ...] = ("extra_epochs", "random_rows")) -> dict[str, list[str]]:
    """Each arm chained through the loop's iterations from the loop's own baseline checkpoint
    (``deft``: retrain on the loop's merged sets with this seed, for ``--replay``)."""
    val_csv = ws / CSV_FILES["validation"]
    train = read_rows(ws / CSV_FILES["train"])
    pool = read_rows(ws / CSV_FILES["pool"])
    order = np.random.default_rng(10_000 + seed).permutation(len(pool))  # cumulative random draws
    ckpts: dict[str, list[str]] = {arm: [] for arm in arms}
    for arm in ckpts:
        init = Path(steps[0]["ckpt"])
        for i, step in enumerate(steps[1:], start=1):
            d = out / arm / step["label"]
            d.mkdir(parents=True, exist_ok=True)
            if arm == "deft":  # the loop's own merged set (rows relative to the workspace root)
                csv, images = Path(step["combined_csv"]), ws
            elif arm == "deft_no_sdg":  # the same set without the synthetic rows of any iteration
                merged = read_rows(Path(step["combined_csv"]))
                origin = pd.read_csv(step["provenance_csv"], usecols=["origin"], dtype=str)["origin"]
                csv, images = write_rows(merged[(origin != "sdg").to_numpy()], d / "train.csv"), ws
            else:
                n = added_rows(ws, step["combined_csv"]) if arm == "random_rows" else 0
                rows = pd.concat([train, pool.iloc[np.sort(order[:n])]], ignore_index=True).fillna("")
                csv, images = write_rows(rows, d / "train.csv"), ws / "images"
            spec = load_training_spec(step["spec"])
            set_dotted(spec, "train.pretrained_model_path", str(init))
            res = trainer.train(spec, csv, val_csv, d / "train", init, images_dir=images,
                                val_images_dir=ws / "images", seed=seed * 100 + i)
            init = Path(res.best_val_ckpt)
            ckpts[arm].append(str(init))
    return ckpts


def test_scores(ws: Path, out: Path, spec_src: Any, ckpts: list[str], trainer: BuiltinTrainer) -> list[dict[str, Any]]:
    spec = load_training_spec(spec_src)
    test_csv = ws / TEST_CSV
    return [score(trainer.infer(spec, Path(c), test_csv, out / f"test_{i}", images_dir=ws / "images"))
            for i, c in enumerate(ckpts)]


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--demo-seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (config 'seed')")
    ap.add_argument("--config", type=Path, default=REPO / "experiments" / "aoi_default.yaml")
    ap.add_argument("--phase1-trials", type=int, default=None, help="phase1.automl_max_recommendations override")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra run config override (repeatable)")
    ap.add_argument("--smoke-test", action="store_true", help="scale-0.1 demo, smoke profile, 1 seed")
    ap.add_argument("--replay", type=Path, default=None, metavar="RUN_DIR",
                    help="no pipeline run: every seed retrains all three arms from this run's baseline checkpoint, "
                         "the loop arm on the run's own merged sets (seed-to-seed spread of training, loop data fixed)")
    ap.add_argument("--ablate-sdg", action="store_true",
                    help="with --replay: a fourth arm trains on the loop's merged sets without their synthetic rows")
    ap.add_argument("--pool-pass", type=int, default=None, metavar="N",
                    help="generated demo only: N PASS rows in the mining pool (the demo has 3000 at scale 1); "
                         "the rare kinds keep theirs, so random pool rows carry fewer of them, as in a production pool")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the workspace and outputs here")
    args = ap.parse_args(argv)
    if args.ablate_sdg and not args.replay:
        ap.error("--ablate-sdg needs --replay RUN_DIR")
    arms = (*ARMS, "deft_no_sdg") if args.ablate_sdg else ARMS
    torch_threads()
    seeds = args.seeds[:1] if args.smoke_test else args.seeds
    config = REPO / "experiments" / "smoke.yaml" if args.smoke_test else args.config
    extra = list(args.overrides)
    if args.phase1_trials is not None:
        extra.append(f"phase1.automl_max_recommendations={args.phase1_trials}")
    trainer = BuiltinTrainer(device="cpu", num_threads=1)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deft_gain_") as scratch:
        tmp = Path(args.keep) if args.keep else Path(scratch)
        ws = args.workspace or generate_demo(tmp / "ws", settings=demo_settings(
            args.demo_seed, 0.1 if args.smoke_test else args.scale, args.pool_pass))
        ws = Path(ws).resolve()
        rare = rare_kinds(ws)
        for seed in seeds:
            out = tmp / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            load0 = os.getloadavg()
            if args.replay:
                rd, wall = RunDir(args.replay), 0.0
            else:
                rd, wall = run_pipeline(ws, config, seed, extra, out / "pipeline.log")
            steps = loop_record(rd)
            t0 = time.perf_counter()
            if len(steps) < 2:
                print(f"seed {seed}: the loop ran no iteration (baseline met the KPI?); run {rd.root}")
                continue
            ctrl = run_controls(ws, out, steps, seed, trainer, arms if args.replay else ARMS[1:])
            spec0 = steps[0]["spec"]
            loop_ckpts = ctrl["deft"] if args.replay else [s["ckpt"] for s in steps[1:]]
            deft = test_scores(ws, out / "deft", spec0, [steps[0]["ckpt"], *loop_ckpts], trainer)
            r = {"seed": seed, "run_dir": str(rd.root), "replay": bool(args.replay), "pipeline_wall_s": wall, "load_avg_start": load0,
                 "load_avg_end": os.getloadavg(), "iterations": [s["label"] for s in steps[1:]],
                 "added_rows": [added_rows(ws, s["combined_csv"]) for s in steps[1:]],
                 "baseline_test": deft[0], "deft_test": deft[1:],
                 "extra_epochs_test": test_scores(ws, out / "ee", spec0, ctrl["extra_epochs"], trainer),
                 "random_rows_test": test_scores(ws, out / "rr", spec0, ctrl["random_rows"], trainer),
                 "mining": mining_summary(steps, rare), "controls_wall_s": time.perf_counter() - t0}
            if "deft_no_sdg" in ctrl:
                r["deft_no_sdg_test"] = test_scores(ws, out / "ns", spec0, ctrl["deft_no_sdg"], trainer)
            results.append(r)
            print_seed(r)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    print_summary(results)
    return results


def demo_settings(seed: int, scale: float, pool_pass: int | None) -> DemoSettings:
    """The demo at ``scale``; with ``pool_pass``, its pool holds that many PASS rows (every other count kept)."""
    if pool_pass is None:
        return DemoSettings(seed=seed, scale=scale)
    common = next(k for k in DEFECT_KINDS if k not in RARE_KINDS)
    counts = {split: (c["PASS"], c[common], c[RARE_KINDS[0]]) for split, c in plan_counts(scale).items()}
    counts["pool"] = (pool_pass, *counts["pool"][1:])
    return DemoSettings(seed=seed, counts=counts)


def torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def print_seed(r: dict[str, Any]) -> None:
    last = {a: r[f"{a}_test"][-1] for a in arms_of(r)}
    print(f"seed {r['seed']}: pipeline {r['pipeline_wall_s']:.0f}s (load {r['load_avg_start'][0]:.1f}->"
          f"{r['load_avg_end'][0]:.1f}), controls {r['controls_wall_s']:.0f}s; +rows {r['added_rows']}; "
          f"test FAR baseline {r['baseline_test']['far_pct']:.2f} % (AUROC {r['baseline_test']['auroc']:.3f}); after "
          f"{r['iterations'][-1]}: " + ", ".join(f"{a} {last[a]['far_pct']:.2f} % ({last[a]['auroc']:.3f})" for a in last))
    for a in last:
        print(f"    {a:<13} test FAR per iteration " + ", ".join(f"{s['far_pct']:.2f}" for s in r[f"{a}_test"]))
    for m in r["mining"]["per_iteration"]:
        print(f"    mining {m['iteration']}: defect mined {m['defect_mined']} precision {m['defect_precision']} "
              f"(label-blind {m['blind_precision_mean']}), PASS mined {m['pass_mined']}, rare cumulative recall "
              f"{m['rare_cumulative_recall']}")


def print_summary(results: list[dict[str, Any]]) -> None:
    if not results:
        print("no seed ran a loop iteration")
        return
    print(f"\n{len(results)} seed(s); test split FAR@100%R (%) and AUROC after the last iteration, mean ± sd:")
    print(f"  baseline      FAR {_ms([r['baseline_test']['far_pct'] for r in results])}  "
          f"AUROC {_ms([r['baseline_test']['auroc'] for r in results])}")
    for a in arms_of(results[0]):
        print(f"  {a:<13} FAR {_ms([r[f'{a}_test'][-1]['far_pct'] for r in results])}  "
              f"AUROC {_ms([r[f'{a}_test'][-1]['auroc'] for r in results])}")
    wins = sum(r["deft_test"][-1]["far_pct"] < min(r["extra_epochs_test"][-1]["far_pct"],
                                                  r["random_rows_test"][-1]["far_pct"]) for r in results)
    print(f"  DEFT beats both controls on test FAR in {wins} of {len(results)} seed(s)")


if __name__ == "__main__":
    main()
