"""The numbers each DEFT iteration logs to its nested MLflow run (``phase2/<label>``).

KPI FAR / threshold / recall, the data added by source, the mining counts and the stage seconds —
all read from the state and the files it names, so a resumed loop logs the same numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from raypipe.rundir import RunDir
from raypipe.workspace._rows import PASS

log = logging.getLogger(__name__)


def iteration_metrics(state: Mapping[str, Any], label: str) -> dict[str, float]:
    """The numbers an iteration logs: KPI FAR/threshold/recall, data added by source, stage seconds."""
    import pandas as pd

    e = state["iterations"].get(label, {})
    out: dict[str, float] = {}
    mr = e.get("metric_result") or {}
    if mr:
        out["kpi_" + mr["name"]] = float(mr["value"])
        for k, v in (mr.get("constraints") or {}).items():
            out[f"kpi_{k}"] = float(v)
    if e.get("threshold") is not None:
        out["threshold"] = float(e["threshold"])
    if e.get("far_pct") is not None:
        out["kpi_far_pct"] = float(e["far_pct"])
    if e.get("provenance_csv") and Path(e["provenance_csv"]).is_file():
        prov = pd.read_csv(e["provenance_csv"], dtype=str, keep_default_na=False)
        for src, n in prov["source"].value_counts().items():
            out[f"rows_{src}"] = float(n)
        out["rows_total"] = float(len(prov))
    if e.get("mining_summary") and Path(e["mining_summary"]).is_file():
        knn = pd.read_csv(e["mining_summary"])
        if len(knn):
            out["mining_candidates"] = float(knn.iloc[0].get("candidate_count", 0))
            out["mining_kept"] = float(knn.iloc[0].get("kept_count", 0))
    if "mining_mined_count" in e:
        out["mining_mined"] = float(e["mining_mined_count"])
    if e.get("mining_stats_csv") and Path(e["mining_stats_csv"]).is_file():
        out.update(mining_label_metrics(pd.read_csv(e["mining_stats_csv"], keep_default_na=False, na_values=[""])))
    if "anomalygen_amp_allocated" in e:
        out["sdg_count"] = float(e["anomalygen_amp_allocated"])
    for ev in state.get("events", []):
        if ev["iter"] == label:
            out[f"stage_sec_{ev['stage']}"] = out.get(f"stage_sec_{ev['stage']}", 0.0) + float(ev["duration_sec"])
    return out


def mining_label_metrics(table: Any) -> dict[str, float]:
    """Per label of ``mining_stats.csv``: targets, mined, same-label precision, pool recall (this
    iteration and cumulative) and the embedder's label-blind precision; empty cells are not logged."""
    import pandas as pd

    out: dict[str, float] = {}
    for row in table.to_dict("records"):
        for col in ("targets", "mined", "precision", "recall", "cumulative_recall", "label_blind_precision"):
            if col in row and pd.notna(row[col]):
                out[f"mining_{row['label']}_{col}"] = float(row[col])
    defect = table[table["label"] != PASS]
    if len(defect) and defect["mined"].sum() > 0:  # the headline: micro-averaged over defect targets
        out["mining_defect_precision"] = float(defect["same_label"].sum() / defect["mined"].sum())
    return out


def track_iteration(tracking: Any, rd: RunDir, label: str) -> None:
    """Log ``label``'s numbers to its nested MLflow run (an idempotent key; nothing without tracking).

    A boundary: tracking is observability, so any failure there is logged and never stops the loop.
    """
    if tracking is None:
        return
    try:
        from raypipe import tracking as tr
        from raypipe.deft.state import load_state

        state = load_state(rd.deft_state, reconcile=False)
        with tr.child_run(tracking, label, key=f"phase2/{label}",
                          tags={"raypipe.phase": "phase2", "raypipe.iteration": label}) as run:
            run.log_metrics(iteration_metrics(state, label))
    except Exception:  # see the docstring
        log.exception("tracking for %s failed", label)


__all__ = ["iteration_metrics", "mining_label_metrics", "track_iteration"]
