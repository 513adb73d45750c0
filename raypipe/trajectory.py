"""``RD/trajectory.json`` and its console table: Phase 1 best → baseline → iter1..N → Phase 3 best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_json, read_json
from raypipe.rundir import FINAL_AUTOML, RunDir, ordered_labels


def build_trajectory(run_dir: Path) -> dict[str, Any]:
    """One row per step, from the files on disk: Phase 1 best → baseline → iter1..N → Phase 3 best."""
    rd = RunDir(run_dir)
    rows: list[dict[str, Any]] = []
    p1 = rd.sweep("phase1").best_rec
    if p1.is_file():
        rec = read_json(p1)
        rows.append({"step": "phase1_best", "split": "validation", "far_pct": rec["best"]["score"],
                     "threshold": None, "training_rows": None, "checkpoint": rec["best"]["checkpoint_uri"]})
    delivered = None
    if rd.deft_state.is_file():
        its = read_json(rd.deft_state).get("iterations", {})
        for label in ordered_labels(its):
            e = its[label]
            if e.get("status") != "complete" or not e.get("metric_result"):
                continue
            diag = e["metric_result"].get("diagnostics") or _diagnostics(e["metric_result"].get("evidence_path"))
            rows.append({"step": "phase3_best" if label == FINAL_AUTOML else label, "split": "kpi",
                         "far_pct": e["metric_result"]["value"], "threshold": e.get("threshold"),
                         "training_rows": _rows(e.get("training_rows_csv") or e.get("combined_training_csv")),
                         "auroc": diag.get("auroc"), "far_at_recall_95_pct": diag.get("far_at_recall_95_pct"),
                         "checkpoint": e.get("best_ckpt_path"), "label": label})
        if rd.best_model.is_file():
            delivered = read_json(rd.best_model).get("iteration")
    for r in rows:
        r["delivered"] = delivered is not None and r.get("label") == delivered
    return {"rows": rows, "delivered": delivered}


def _diagnostics(evidence_path: str | None) -> dict[str, Any]:
    """deft_state keeps six metric keys (name, value, unit, passed, constraints, evidence_path); the
    diagnostics live in the metric_result.json the entry names."""
    if not evidence_path or not Path(evidence_path).is_file():
        return {}
    return read_json(evidence_path).get("diagnostics") or {}


def _rows(csv: str | None) -> int | None:
    if not csv or not Path(csv).is_file():
        return None
    with open(csv, encoding="utf-8") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def write_trajectory(run_dir: Path) -> dict[str, Any]:
    traj = build_trajectory(run_dir)
    atomic_write_json(RunDir(run_dir).trajectory, traj)
    return traj


def format_table(traj: dict[str, Any]) -> str:
    head = f"{'step':<13} {'split':<10} {'FAR@100%R':>10} {'threshold':>10} {'AUROC':>7} {'train rows':>10}  delivered"
    lines = [head, "-" * len(head)]
    for r in traj["rows"]:
        thr = "" if r.get("threshold") is None else f"{r['threshold']:.4g}"
        au = "" if r.get("auroc") is None else f"{r['auroc']:.3f}"
        n = "" if r.get("training_rows") is None else str(r["training_rows"])
        lines.append(f"{r['step']:<13} {r['split']:<10} {r['far_pct']:>9.2f}% {thr:>10} {au:>7} {n:>10}  "
                     f"{'<== delivered' if r.get('delivered') else ''}")
    return "\n".join(lines)
