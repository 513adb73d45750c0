"""Mining quality: which embedder and selection recipe find what the model misses?

On demo workspaces (generated from ``--seeds``, or given with ``--workspace``), the labelled mining
pool is the source and the targets are either every KPI defect row plus ``--pass-targets`` KPI PASS
rows drawn at random (``--targets kpi``), or a freshly trained built-in model's weak KPI rows, ranked
as RCA ranks them (``--targets model``: the lowest-scoring defects and the highest-scoring PASS rows).
For every embedder × label mode it runs ``--iterations`` history-aware iterations of
:func:`raypipe.deft._selection.select` and reports, per iteration:

- defect precision: of the rows that defect targets mined, the share carrying the target's label;
- PASS precision: of the rows that PASS targets mined, the share that are PASS;
- rare recall: cumulative pool recall of the kinds rare in train (train rows < half the median
  defect kind's), i.e. mined rows of the kind / pool rows of the kind;
- embedding throughput (rows/s, one process, one thread).

and, in iteration 1, how a ``min_similarity`` cut on centred cosine trades kept neighbours against
their same-label share.

    python benchmarks/mining_quality.py --seeds 0 1                       # today's demo, 2 seeds
    python benchmarks/mining_quality.py --targets model --seeds 0 1       # trained model's weak rows
    python benchmarks/mining_quality.py --embedders difference "imagenet:layer=4,input_size=128"
    python benchmarks/mining_quality.py --smoke-test                      # tiny demo, seconds (CI)

An embedder is ``name`` or ``name:key=value,...`` (options of :func:`raypipe.embedding.make_embedder`);
``model`` is the built-in backend's embedding of a checkpoint trained here (``model:untrained``: no
training). Wall times on a loaded shared machine are pessimistic.
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

from raypipe.deft._selection import (
    LABEL_MODES,
    SelectionConfig,
    headline,
    mining_stats,
    select,
)
from raypipe.embedding import embed_rows, make_embedder
from raypipe.workspace import ImageLayout, generate_demo, normalise_label, read_rows
from raypipe.workspace._rows import PASS

DEFAULT_EMBEDDERS = ["imagenet", "imagenet:pretrained=False", "difference", "pixels",
                     "pixels:standardise=True,with_difference=False", "model"]
THRESHOLDS = (-1.0, 0.0, 0.2, 0.4, 0.6, 0.8)


def parse_embedder(text: str) -> tuple[str, dict[str, Any]]:
    name, _, opts = text.partition(":")
    options = {}
    for kv in filter(None, opts.split(",")):
        key, eq, value = kv.partition("=")
        options[key] = yaml.safe_load(value) if eq else True  # a bare key is a flag
    return name, options


def rare_kinds(train: pd.DataFrame) -> list[str]:
    counts = train["label"].map(normalise_label).value_counts()
    defects = counts.drop(PASS, errors="ignore")
    median = float(np.median(defects.to_numpy())) if len(defects) else 0.0
    return sorted(k for k, n in defects.items() if n < median / 2)


class Workspace:
    """One demo workspace's rows, layout and (lazily) a trained model."""

    def __init__(self, root: Path, seed: int, work: Path, epochs: int) -> None:
        from raypipe.backends.builtin import resolve_backbone
        from raypipe.spec import load_spec

        self.root, self.seed, self.work, self.epochs = Path(root), seed, Path(work), epochs
        self.images = self.root / "images"
        self.spec, _ = resolve_backbone(load_spec(self.root / "specs" / "baseline_spec.yaml"))
        self.layout = ImageLayout.from_spec(self.spec)
        self.pool = read_rows(self.root / "augmentation" / "mining_pool" / "mining_pool.csv")
        self.kpi = read_rows(self.root / "kpi" / "testing_set.csv")
        self.train = read_rows(self.root / "train" / "base" / "training_set.csv")
        self.rare = rare_kinds(self.train)
        self._ckpt: Path | None = None

    def checkpoint(self) -> Path:
        """A built-in model trained ``epochs`` epochs on the base training set (once per workspace)."""
        if self._ckpt is None:
            from raypipe.backends.builtin import BuiltinTrainer
            from raypipe.spec import set_dotted

            set_dotted(self.spec, "train.num_epochs", self.epochs)
            t0 = time.perf_counter()
            res = BuiltinTrainer(device="cpu", num_threads=1).train(
                self.spec, self.root / "train/base/training_set.csv", self.root / "train/base/validation_set.csv",
                self.work / "train", images_dir=self.images, seed=self.seed)
            self._ckpt = res.best_val_ckpt
            print(f"  trained the built-in model {self.epochs} epochs in {time.perf_counter() - t0:.0f}s "
                  f"(best val FAR {res.best_val_far:.1f}%)", flush=True)
        return self._ckpt

    def targets(self, how: str, n_pass: int) -> pd.DataFrame:
        labels = self.kpi["label"].map(normalise_label)
        if how == "kpi":
            rng = np.random.default_rng(self.seed)
            pass_idx = np.flatnonzero(labels == PASS)
            picked = rng.choice(pass_idx, size=min(n_pass, len(pass_idx)), replace=False)
            return pd.concat([self.kpi[labels != PASS], self.kpi.iloc[np.sort(picked)]], ignore_index=True)
        from raypipe.backends.builtin import BuiltinTrainer

        csv = BuiltinTrainer(device="cpu", num_threads=1).infer(self.spec, self.checkpoint(), self.root / "kpi/testing_set.csv",
                                                                 self.work / "kpi_infer", images_dir=self.images)
        scored = read_rows(csv)
        scored["label"] = scored["label"].map(normalise_label)
        score = scored["siamese_score"].astype(float)
        # RCA's weakness order: PASS rows scoring highest, defects scoring lowest
        scored["weakness"] = np.where(scored["label"] == PASS, score, -score)
        ranked = scored.sort_values("weakness", ascending=False, kind="mergesort")
        per_label = ranked.groupby("label", sort=False).cumcount()
        keep = ((ranked["label"] != PASS) & (per_label < 50)) | ((ranked["label"] == PASS) & (per_label < n_pass))
        return ranked[keep].drop(columns=["weakness"]).reset_index(drop=True)

    def embedder(self, text: str):
        name, options = parse_embedder(text)
        if name == "model":
            ckpt = None if options.pop("untrained", False) else self.checkpoint()
            options = {"backend": "builtin", "spec": self.spec, "ckpt": ckpt,
                       "backend_options": {"device": "cpu", "num_threads": 1}, **options}
        return make_embedder(name, self.layout, **options)


def run_recipe(ws: Workspace, targets: pd.DataFrame, t_emb: np.ndarray, p_emb: np.ndarray, mode: str, k: int,
               iterations: int) -> list[dict[str, Any]]:
    before = np.zeros(len(ws.pool), dtype=bool)
    out = []
    for it in range(1, iterations + 1):
        cfg = SelectionConfig(top_k_per_target=k, min_similarity=-1.0, label_mode=mode)  # type: ignore[arg-type]
        pairs, sel = select(targets["label"], t_emb, ws.pool["label"], p_emb, cfg, before)
        stats = mining_stats(it, targets["label"], sel, ws.pool["label"], before)
        head = headline(stats)
        by_label = {s.label: s for s in stats}
        rare = {kind: by_label[kind].cumulative_recall if kind in by_label else
                float((before & (ws.pool["label"].map(normalise_label) == kind).to_numpy()).sum()
                      / max(1, (ws.pool["label"].map(normalise_label) == kind).sum()))
                for kind in ws.rare}
        row: dict[str, Any] = {"iteration": it, **head, "rare_recall": rare,
               "rare_recall_mean": float(np.mean(list(rare.values()))) if rare else None,
               "mined_defect": int(sum(s.mined for s in stats if s.label != PASS)),
               "mined_pass": int(sum(s.mined for s in stats if s.label == PASS)),
               "per_label": {s.label: {"targets": s.targets, "mined": s.mined, "precision": s.precision,
                                       "recall": s.cumulative_recall} for s in stats}}
        if it == 1:
            row["threshold_curve"] = threshold_curve(pairs, targets["label"], ws.pool["label"])
        out.append(row)
        before[sel["pool_index"].to_numpy()] = True
    return out


def threshold_curve(pairs: pd.DataFrame, target_labels: pd.Series, pool_labels: pd.Series) -> list[dict[str, Any]]:
    t = target_labels.map(normalise_label).to_numpy()[pairs["target_index"].to_numpy()]
    p = pool_labels.map(normalise_label).to_numpy()[pairs["pool_index"].to_numpy()]
    same, sim, defect = t == p, pairs["similarity"].to_numpy(), t != PASS
    curve = []
    for th in THRESHOLDS:
        k = sim >= th
        curve.append({"min_similarity": th, "kept_share": float(k.mean()) if len(k) else 0.0,
                      "defect_precision": float(same[k & defect].mean()) if (k & defect).any() else None,
                      "pass_precision": float(same[k & ~defect].mean()) if (k & ~defect).any() else None})
    return curve


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def summarise(results: list[dict[str, Any]], iterations: int) -> None:
    """Mean over workspaces, then the per-seed values, one line per embedder × mode."""
    keys = sorted({(r["embedder"], r["mode"]) for r in results}, key=lambda km: (km[0], LABEL_MODES.index(km[1])))
    head = "".join(f"  it{i} def.prec  it{i} PASS.prec  it{i} rare.rec" for i in range(1, iterations + 1))
    print(f"\n{'embedder':<52}{'mode':<7}{'rows/s':>7}{head}")
    for emb, mode in keys:
        rs = [r for r in results if r["embedder"] == emb and r["mode"] == mode]
        line = f"{emb:<52}{mode:<7}{statistics.fmean(r['rows_per_s'] for r in rs):7.1f}"
        for i in range(iterations):
            line += (f"  {_fmt(_mean([r['iterations'][i]['defect_precision'] for r in rs])):>11}"
                     f"  {_fmt(_mean([r['iterations'][i]['pass_precision'] for r in rs])):>12}"
                     f"  {_fmt(_mean([r['iterations'][i]['rare_recall_mean'] for r in rs])):>11}")
        seeds = " ".join(f"s{r['seed']}:{_fmt(r['iterations'][0]['defect_precision']).strip()}/"
                         f"{_fmt(r['iterations'][-1]['rare_recall_mean']).strip()}" for r in rs)
        print(f"{line}   [{seeds}]")
    print("(per seed: iteration-1 defect precision / last-iteration rare recall)")
    print("\nmin_similarity cut on centred cosine (iteration 1, mean over workspaces): share of the top-k "
          "neighbours kept, and their defect precision")
    for emb, mode in keys:
        cs: list[list[dict[str, Any]]] = [r["iterations"][0]["threshold_curve"] for r in results
                                          if r["embedder"] == emb and r["mode"] == mode]
        cells = []
        for j, th in enumerate(THRESHOLDS):
            kept = statistics.fmean(c[j]["kept_share"] for c in cs)
            cells.append(f"{th:+.1f}: {kept:4.0%} {_fmt(_mean([c[j]['defect_precision'] for c in cs])).strip()}")
        print(f"  {emb:<50} {mode:<6}" + " | ".join(cells))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="tiny demo (scale 0.1), cheap embedders, no training")
    ap.add_argument("--workspace", type=Path, action="append", default=[], help="an existing workspace (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="demo seeds to generate")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--embedders", nargs="+", default=None)
    ap.add_argument("--modes", nargs="+", default=list(LABEL_MODES), choices=LABEL_MODES)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--targets", choices=("kpi", "model"), default="kpi")
    ap.add_argument("--pass-targets", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4, help="training epochs for the model embedder/targets")
    ap.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = ap.parse_args(argv)
    if args.smoke_test:
        args.scale, args.seeds = 0.1, args.seeds[:1]
        args.embedders = args.embedders or ["difference", "pixels", "imagenet", "model:untrained"]
    embedders = args.embedders or DEFAULT_EMBEDDERS

    import torch

    torch.set_num_threads(1)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mining_quality_") as tmp:
        roots = [(Path(w), i) for i, w in enumerate(args.workspace)]
        for seed in ([] if args.workspace else args.seeds):
            t0 = time.perf_counter()
            roots.append((generate_demo(Path(tmp) / f"ws{seed}", seed=seed, scale=args.scale), seed))
            print(f"generated demo seed {seed} (scale {args.scale}) in {time.perf_counter() - t0:.0f}s", flush=True)
        for root, seed in roots:
            ws = Workspace(root, seed, Path(tmp) / f"work{seed}", args.epochs)
            targets = ws.targets(args.targets, args.pass_targets)
            n_def = int((targets["label"].map(normalise_label) != PASS).sum())
            print(f"workspace {root} (seed {seed}): pool {len(ws.pool)} rows, {n_def} defect + "
                  f"{len(targets) - n_def} PASS targets ({args.targets}), rare kinds {ws.rare}", flush=True)
            for text in embedders:
                emb = ws.embedder(text)
                t0 = time.perf_counter()
                p_emb, _ = embed_rows(emb, ws.pool, ws.images)
                t_emb, _ = embed_rows(emb, targets, ws.images)
                rate = (len(ws.pool) + len(targets)) / (time.perf_counter() - t0)
                for mode in args.modes:
                    its = run_recipe(ws, targets, t_emb, p_emb, mode, args.top_k, args.iterations)
                    results.append({"workspace": str(root), "seed": seed, "embedder": text, "mode": mode,
                                    "targets": args.targets, "top_k": args.top_k, "rows_per_s": rate,
                                    "iterations": its})
                first = [r for r in results if r["embedder"] == text and r["seed"] == seed]
                print(f"  {text:<50} {rate:6.1f} rows/s  " + "  ".join(
                    f"{r['mode']}: {_fmt(r['iterations'][0]['defect_precision'])}" for r in first), flush=True)
    summarise(results, args.iterations)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
