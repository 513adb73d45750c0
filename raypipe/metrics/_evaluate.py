"""Evaluate an ``inference.csv``: ``metric_result.json``, ``threshold_metrics.csv``, ``summary.txt``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_json, atomic_write_text, read_json
from raypipe.metrics._contract import ContractError, MetricContract, validate_result
from raypipe.metrics._far import MetricUndefinedError, auroc, far_at_recall, threshold_table


def _labels_scores(df: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    for col in ("label", "siamese_score"):
        if col not in df.columns:
            raise ValueError(f"{source}: missing column '{col}' (expected label and siamese_score)")
    scores = pd.to_numeric(df["siamese_score"], errors="coerce")
    bad = scores.isna() | ~np.isfinite(scores.fillna(0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise ValueError(f"{source}: row {row}, column 'siamese_score': expected a finite number, "
                         f"got {df['siamese_score'].iloc[row - 1]!r}")
    y = df["label"].astype(str).str.strip().str.upper() != "PASS"
    return y.to_numpy(), scores.to_numpy(dtype=np.float64)


def far_metric_result(is_defect: np.ndarray, scores: np.ndarray, recall_target_pct: float = 100.0) -> dict[str, Any]:
    """The ``metric_result.json`` object of SPEC §4 for labels and scores."""
    best = far_at_recall(is_defect, scores, recall_target_pct / 100.0)
    diag: dict[str, Any] = {
        "precision": best.precision, "f1": best.f1, "tp": best.tp, "fp": best.fp, "tn": best.tn,
        "fn": best.fn, "n_pass": int((~is_defect).sum()), "n_nopass": int(is_defect.sum()),
        "auroc": auroc(is_defect, scores),
        "far_at_recall_99_pct": far_at_recall(is_defect, scores, 0.99).far * 100,
        "far_at_recall_95_pct": far_at_recall(is_defect, scores, 0.95).far * 100,
    }
    diag = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in diag.items()}
    return {"name": "far_pct", "value": best.far * 100, "unit": "%", "threshold": best.threshold,
            "constraints": {"recall_pct": best.recall * 100}, "diagnostics": diag}


def evaluate_inference_csv(inference_csv: str | Path, output_json: str | Path,
                           recall_target_pct: float = 100.0) -> dict[str, Any]:
    """Builtin FAR@recall evaluator. Writes the JSON plus ``threshold_metrics.csv`` and ``summary.txt``."""
    inference_csv, output_json = Path(inference_csv), Path(output_json)
    if not inference_csv.is_file():
        raise FileNotFoundError(f"{inference_csv}: inference CSV not found")
    df = pd.read_csv(inference_csv, dtype={"label": str}, keep_default_na=False)
    y, s = _labels_scores(df, str(inference_csv))
    if not y.any():
        raise MetricUndefinedError(
            f"{inference_csv}: FAR at {recall_target_pct:g}% recall is undefined: no defect (NO_PASS) rows "
            f"among {len(df)} rows; add defect samples to the evaluated set")
    result = far_metric_result(y, s, recall_target_pct)
    atomic_write_json(output_json, result)
    table = threshold_table(y, s)
    tdf = pd.DataFrame({k: table[k] for k in ("threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "far")})
    tdf["far_pct"] = tdf.pop("far") * 100
    atomic_write_text(output_json.parent / "threshold_metrics.csv", tdf.to_csv(index=False))
    d = result["diagnostics"]
    summary = (
        f"inference_csv: {inference_csv}\n"
        f"rows: {len(df)} (PASS {d['n_pass']}, NO_PASS {d['n_nopass']})\n"
        f"FAR at {recall_target_pct:g}% recall: {result['value']:.4f} %\n"
        f"threshold: {result['threshold']:.6g} (NO_PASS iff siamese_score > threshold)\n"
        f"recall: {result['constraints']['recall_pct']:.2f} %  precision: {d['precision']:.4f}  f1: {d['f1']:.4f}\n"
        f"tp {d['tp']}  fp {d['fp']}  tn {d['tn']}  fn {d['fn']}\n"
        f"AUROC: {d['auroc'] if d['auroc'] is None else round(d['auroc'], 4)}  "
        f"FAR@99%: {d['far_at_recall_99_pct']:.2f} %  FAR@95%: {d['far_at_recall_95_pct']:.2f} %\n"
    )
    atomic_write_text(output_json.parent / "summary.txt", summary)
    return result


def run_evaluator(contract: MetricContract, inference_csv: Path, output_json: Path,
                  iter_label: str = "") -> dict[str, Any]:
    """Run the contract's evaluator and return the validated result (``passed`` recomputed)."""
    ev = contract.evaluator
    kind = ev.get("type")
    if kind == "builtin":
        if ev.get("id", "far_at_recall") != "far_at_recall":
            raise ContractError(f"unknown builtin evaluator id {ev.get('id')!r} (known: far_at_recall)")
        raw = evaluate_inference_csv(inference_csv, output_json, contract.recall_target_pct)
    elif kind == "command":
        argv = [str(ev["path"]), *[str(a) for a in ev.get("args", [])],
                "--inference-csv", str(Path(inference_csv).resolve()),
                "--output-json", str(Path(output_json).resolve())]
        proc = subprocess.run(argv, capture_output=True, text=True)  # an argv list, never a shell
        if proc.returncode != 0:
            raise ContractError(f"evaluator {argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        raw = read_json(output_json)
    elif kind == "artifact":
        path = Path(str(ev["path_template"]).format(iter_label=iter_label))
        if not path.is_file():
            raise ContractError(f"artifact evaluator: {path} not found")
        raw = read_json(path)
        atomic_write_json(output_json, raw)
    else:  # pragma: no cover - rejected by MetricContract
        raise ContractError(f"unknown evaluator type {kind!r}")
    result = validate_result(contract, raw)
    result["evidence_path"] = str(Path(output_json).resolve())
    return result
