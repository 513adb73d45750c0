"""``RD/trajectory.json``, its console table and the run's verdict line.

One row per step: Phase 1 best → baseline → iter1..N → Phase 3 best, each with its KPI numbers
and, once the sealed test split was scored (:mod:`raypipe.scoring`), its test numbers. The
verdict (``kpi_met`` / ``kpi_not_met``) is a plain string so scripts and the report read it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from raypipe._io import atomic_write_json, read_json
from raypipe.rundir import FINAL_AUTOML, RunDir, ordered_labels

KPI_MET, KPI_NOT_MET = "kpi_met", "kpi_not_met"


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
    sealed = _merge_sealed_test(rd, rows)
    return {"rows": rows, "delivered": delivered, "sealed_test": sealed}


def _merge_sealed_test(rd: RunDir, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Copy each step's sealed test numbers into its row; the split's facts (None: not scored)."""
    from raypipe.scoring import ROW_KEYS, THRESHOLD_KEYS, read_sealed_results

    results = read_sealed_results(rd)
    scored = [r for r in rows if r["step"] in results]
    for r in scored:
        r.update({k: results[r["step"]].get(k) for k in (*ROW_KEYS, *THRESHOLD_KEYS)})
    if not scored:
        return None
    first = results[scored[0]["step"]]
    return {"status": "scored", "test_csv": first.get("test_csv"), "rows": first.get("rows"),
            "defect_rows": first.get("defect_rows")}


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


def write_trajectory(run_dir: Path, *, sealed_test: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build and write ``trajectory.json``. ``sealed_test`` states why there are no test numbers
    (``{"status": "absent" | "failed", "note": ...}``) when the files cannot say it."""
    traj = build_trajectory(run_dir)
    if traj["sealed_test"] is None and sealed_test is not None:
        traj["sealed_test"] = dict(sealed_test)
    atomic_write_json(RunDir(run_dir).trajectory, traj)
    return traj


def _cell(value: Any, spec: str, width: int, suffix: str = "") -> str:
    return f"{'' if value is None else format(value, spec) + suffix:>{width}}"


def format_table(traj: Mapping[str, Any]) -> str:
    """The trajectory as a console table; the sealed test columns appear once they were scored."""
    test = any(r.get("test_far_pct") is not None or r.get("test_auroc") is not None for r in traj["rows"])
    head = f"{'step':<13} {'split':<10} {'FAR@100%R':>10} {'threshold':>10} {'AUROC':>7} {'train rows':>10}"
    if test:
        head += f" {'test FAR':>9} {'test AUROC':>10}"
    lines = [head + "  delivered", "-" * (len(head) + 11)]
    for r in traj["rows"]:
        line = (f"{r['step']:<13} {r['split']:<10} {_cell(r['far_pct'], '.2f', 10, '%')} "
                f"{_cell(r.get('threshold'), '.4g', 10)} {_cell(r.get('auroc'), '.3f', 7)} "
                f"{_cell(r.get('training_rows'), 'd', 10)}")
        if test:
            line += f" {_cell(r.get('test_far_pct'), '.2f', 9, '%')} {_cell(r.get('test_auroc'), '.3f', 10)}"
        lines.append(f"{line}  {'<== delivered' if r.get('delivered') else ''}".rstrip())
    return "\n".join(lines)


def verdict_of(metric_result: Mapping[str, Any]) -> str:
    """``kpi_met`` when the metric result passed the contract on the KPI set, else ``kpi_not_met``."""
    passed = metric_result.get("passed")
    if type(passed) is not bool:
        raise ValueError("metric_result.passed (true/false) is missing; cannot state a verdict")
    return KPI_MET if passed else KPI_NOT_MET


def verdict_line(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> str:
    """The closing summary's first line: the verdict, the sealed test split's FAR, then the KPI numbers.

    ``complete, KPI not met: sealed test FAR@100%R 12.50% (AUROC 0.961) · KPI far_pct 11.20% (target
    far_pct < 10%) · delivered iter2``. A run that missed its KPI never reads as a bare "complete".
    """
    verdict = best_model.get("verdict") or verdict_of(best_model["metric_result"])
    result = best_model["metric_result"]
    head = "complete, KPI met" if verdict == KPI_MET else "complete, KPI not met"
    parts = [_test_text(best_model, trajectory)]
    target = ""
    contract = best_model.get("metric_contract")
    if isinstance(contract, Mapping) and {"operator", "target"} <= set(contract):
        target = f" (target {result['name']} {contract['operator']} {contract['target']:g}{result.get('unit') or ''})"
    parts.append(f"KPI {result['name']} {result['value']:.2f}{result.get('unit') or ''}{target}")
    parts.append(f"delivered {best_model.get('iteration')}")
    return f"{head}: " + " · ".join(parts)


def _test_text(best_model: Mapping[str, Any], trajectory: Mapping[str, Any]) -> str:
    rows = [r for r in trajectory.get("rows", []) if r.get("delivered")]
    far = best_model.get("test_far_pct", rows[0].get("test_far_pct") if rows else None)
    au = best_model.get("test_auroc", rows[0].get("test_auroc") if rows else None)
    if far is not None:
        return f"sealed test FAR@100%R {far:.2f}%" + (f" (AUROC {au:.3f})" if au is not None else "")
    sealed = trajectory.get("sealed_test") or {}
    if sealed.get("status") == "absent":
        return "no sealed test split: judged only on the KPI set that chose it"
    return f"sealed test split not scored{': ' + sealed['note'] if sealed.get('note') else ''}"
