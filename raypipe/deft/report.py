"""``DEFT_Loop_Report.html``, re-rendered by the loop's driver after every commit.

Everything comes from disk (the state, the stage outputs it names, Phase 1/3 files when present),
so the report of a resumed run is the same as that of an uninterrupted one. The page is one file:
inline CSS, inline SVG charts, PNG thumbnails as base64 data URIs, no script and no network.
A missing or unreadable stage output degrades one section to a note, never the whole page.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from raypipe._io import atomic_write_text, read_json
from raypipe.deft import _svg
from raypipe.deft.state import ordered_labels
from raypipe.rundir import RcaDir, RunDir, iteration_number, resume_command

THUMB_PX = 160

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1a202c}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #e2e8f0;padding-bottom:4px;margin-top:28px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #e2e8f0;padding:3px 8px;text-align:right}
th{background:#f7fafc}td.l,th.l{text-align:left}.muted{color:#718096;font-size:13px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-size:12px}
.ok{background:#2f855a}.bad{background:#c53030}.run{background:#2b6cb0}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumbs figure{margin:0;font-size:11px;text-align:center}
.thumbs img{border:1px solid #cbd5e0;image-rendering:pixelated}
pre{background:#f7fafc;padding:8px;font-size:12px;overflow:auto}
"""


# ---------------------------------------------------------------------------------------------
# small readers (each tolerates a missing/unreadable file)


def _json(path: Any) -> Any:
    try:
        return read_json(path) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def _csv(path: Any):
    import pandas as pd

    try:
        if path and Path(path).is_file():
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception:  # a boundary: a broken CSV only blanks its section
        return None
    return None


def _parquet(path: Any):
    import pandas as pd

    try:
        if path and Path(path).is_file():
            return pd.read_parquet(path)
    except Exception:  # a boundary: a broken parquet only blanks its section
        return None
    return None


def _thumb(path: Path, px: int = THUMB_PX) -> str | None:
    """A PNG data URI of the image scaled to fit ``px`` (None if it cannot be read)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except Exception:  # a boundary: an unreadable image only loses its thumbnail
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(path: Path, caption: str) -> str:
    uri = _thumb(path)
    if uri is None:
        return f"<figure><div class='muted'>missing: {escape(path.name)}</div><figcaption>{escape(caption)}</figcaption></figure>"
    return f"<figure><img src='{uri}' alt='{escape(caption)}'/><figcaption>{escape(caption)}</figcaption></figure>"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return escape(str(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    h = "".join(f"<th class='{'l' if i < left else ''}'>{escape(x)}</th>" for i, x in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='{'l' if i < left else ''}'>{_fmt(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


# ---------------------------------------------------------------------------------------------
# data


def _rows_of(entry: Mapping[str, Any], cfg: Mapping[str, Any], label: str) -> tuple[int | None, int | None]:
    """(training rows, synthetic rows) of an iteration."""
    prov = _csv(entry.get("provenance_csv"))
    if prov is not None and "source" in prov.columns:
        return len(prov), int((prov["source"] == "sdg").sum())
    combined = _csv(entry.get("combined_training_csv"))
    if combined is not None:
        return len(combined), None
    if label == "baseline":
        base = _csv(cfg.get("training_csv"))
        return (len(base) if base is not None else None), 0
    return None, None


def _trajectory(run_dir: Path, state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Phase 1 best (validation) → baseline … iterN → Phase 3 (KPI), built from the files of record.

    The loop and Phase 3 rows come from the state (always current, also mid-run); Phase 1 from its
    ``best_rec.json``, or from ``trajectory.json``'s Phase 1 row when only that survives.
    """
    rows: list[dict[str, Any]] = []
    rec = _json(RunDir(run_dir).sweep("phase1").best_rec)
    if isinstance(rec, Mapping) and isinstance(rec.get("best"), Mapping):
        score = rec["best"].get("score")
        rows.append({"label": "phase1_best", "value": score if isinstance(score, (int, float)) else None,
                     "set": "validation", "delivered": False, "auroc": None, "far95": None})
    else:
        traj = _json(RunDir(run_dir).trajectory)
        items = traj.get("rows") if isinstance(traj, Mapping) else None
        for it in items if isinstance(items, list) else []:
            if isinstance(it, Mapping) and str(it.get("split", "")).lower() == "validation":
                v = it.get("far_pct")
                rows.append({"label": str(it.get("step", "phase1_best")), "value": v if isinstance(v, (int, float))
                             else None, "set": "validation", "delivered": False, "auroc": None, "far95": None})
    final = _json(RunDir(run_dir).best_model) or {}
    for label in ordered_labels(state):
        e = state["iterations"][label]
        mr = e.get("metric_result")
        if not mr:
            continue
        diag = (_json(mr.get("evidence_path")) or {}).get("diagnostics") or {}
        rows.append({"label": "phase3_best" if label == "final_automl" else label, "value": mr.get("value"),
                     "set": "KPI", "delivered": final.get("iteration") == label, "auroc": diag.get("auroc"),
                     "far95": diag.get("far_at_recall_95_pct")})
    return rows


def _growth(run_dir: Path, state: Mapping[str, Any]) -> list[list[Any]]:
    cfg = state.get("config", {})
    out: list[list[Any]] = []
    prev_total: int | None = _rows_of(state["iterations"].get("baseline", {}), cfg, "baseline")[0] \
        if "baseline" in state["iterations"] else None
    for label in ordered_labels(state, include_final=False):
        if label == "baseline":
            continue
        e = state["iterations"][label]
        knn = _csv(Path(e["mining_summary"])) if e.get("mining_summary") else None
        raw = kept = None
        if knn is not None and len(knn):
            raw = int(knn.iloc[0].get("candidate_count", 0) or 0)
            kept = int(knn.iloc[0].get("kept_count", 0) or 0)
        mined = e.get("mining_mined_count", 0 if e.get("data_mining_skipped") else None)
        total, sdg = _rows_of(e, cfg, label)
        delta = (total - prev_total) if (total is not None and prev_total is not None) else None
        out.append([label, raw, kept, mined, sdg, total, delta])
        prev_total = total if total is not None else prev_total
    return out


# ---------------------------------------------------------------------------------------------
# sections


def _section_config(state: Mapping[str, Any]) -> str:
    cfg = state.get("config", {})
    status = state.get("status", "?")
    cls = {"complete": "ok", "failed": "bad"}.get(status, "run")
    rows = [["status", f"{status}"], ["KPI target", state.get("kpi_target")],
            ["max_iterations", state.get("max_iterations")], ["current_iteration", state.get("current_iteration")],
            ["started_at", state.get("started_at")], ["completed_at", state.get("completed_at")],
            ["results_dir", state.get("results_dir")]]
    for key in ("backend", "specs_file", "training_csv", "validation_csv", "kpi_test_csv", "images_dir",
                "mining_pool_csv", "num_epochs", "batch_size", "num_gpus", "gpu_model"):
        if key in cfg:
            rows.append([key, cfg[key]])
    for block in ("sdg", "mining_filter"):
        if block in cfg:
            rows.append([block, json.dumps(cfg[block], sort_keys=True)])
    return (f"<h2>Run configuration &amp; outcome <span class='badge {cls}'>{escape(status)}</span></h2>"
            + _table(["field", "value"], rows, left=2))


def _section_kpi(state: Mapping[str, Any]) -> str:
    df = _csv(state.get("config", {}).get("kpi_test_csv"))
    if df is None or "label" not in df.columns:
        return "<h2>KPI dataset</h2><p class='muted'>KPI CSV not readable</p>"
    counts = Counter(df["label"].astype(str).str.strip().map(lambda s: "PASS" if s.upper() == "PASS" else s.lower()))
    rows = [[k, v] for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"<h2>KPI dataset label counts ({len(df)} rows)</h2>" + _table(["label", "rows"], rows)


def _section_trajectory(run_dir: Path, state: Mapping[str, Any]) -> str:
    rows = _trajectory(run_dir, state)
    contract = state.get("metric_contract", {})
    labels = [r["label"] for r in rows]
    kpi = [r["value"] if r["set"].lower() != "validation" else None for r in rows]
    val = [r["value"] if r["set"].lower() == "validation" else None for r in rows]
    series = {f"KPI {contract.get('name', '')}": kpi}
    if any(v is not None for v in val):
        series["validation (Phase 1)"] = val
    if any(r["far95"] is not None for r in rows):  # progress the 100%-recall headline can hide
        series["KPI FAR@95% recall"] = [r["far95"] for r in rows]
    chart = _svg.line_chart(labels, series, target=contract.get("target"),
                            y_label=f"{contract.get('name', '')} ({contract.get('unit', '')})",
                            title="metric trajectory")
    table = _table(["step", "set", contract.get("name", "value"), "AUROC", "FAR@95%", "delivered"],
                   [[r["label"], r["set"], r["value"], r["auroc"], r["far95"], "yes" if r["delivered"] else ""]
                    for r in rows], left=2)
    return "<h2>Metric trajectory</h2>" + chart + table


def _section_iterations(state: Mapping[str, Any]) -> str:
    cfg = state.get("config", {})
    base = state["iterations"].get("baseline", {}).get("metric_result", {}).get("value")
    rows = []
    for label in ordered_labels(state):
        e = state["iterations"][label]
        mr = e.get("metric_result") or {}
        v = mr.get("value")
        diag = (_json(mr.get("evidence_path")) or {}).get("diagnostics", {})
        total, sdg = _rows_of(e, cfg, label)
        ratio = (sdg / total) if (total and sdg is not None) else None
        rows.append([label, e.get("status"), e.get("stage_completed"), v,
                     (v - base) if (v is not None and base is not None) else None,
                     e.get("threshold"), (mr.get("constraints") or {}).get("recall_pct"), diag.get("auroc"),
                     diag.get("far_at_recall_99_pct"), total, sdg, ratio])
    return ("<h2>Per-iteration results</h2>" + _table(
        ["iteration", "status", "stage", "metric", "Δ vs baseline", "threshold", "recall %", "AUROC",
         "FAR@99%", "training rows", "synthetic rows", "synthetic ratio"], rows, left=3))


def _section_growth(run_dir: Path, state: Mapping[str, Any]) -> str:
    rows = _growth(run_dir, state)
    if not rows:
        return "<h2>Training-set growth</h2><p class='muted'>no iteration has merged data yet</p>"
    return "<h2>Training-set growth</h2>" + _table(
        ["iteration", "mined raw (candidates)", "kept (≥ min_similarity)", "mined novel", "SDG", "total", "Δ"], rows)


def _section_rca(state: Mapping[str, Any]) -> str:
    parts = ["<h2>Root-cause analysis</h2>"]
    any_rca = False
    for label in ordered_labels(state, include_final=False):
        e = state["iterations"][label]
        inf = _csv(e.get("inference_csv"))
        if inf is not None and {"label", "siamese_score"} <= set(inf.columns):
            import pandas as pd

            s = pd.to_numeric(inf["siamese_score"], errors="coerce")
            defect = inf["label"].astype(str).str.strip().str.upper() != "PASS"
            parts.append(f"<h3>{escape(label)}: KPI score distribution</h3>")
            parts.append(_svg.histogram({"PASS": s[~defect].dropna().tolist(), "defect": s[defect].dropna().tolist()},
                                        marker=e.get("threshold"), title=f"{label} scores"))
        if not e.get("rca_gaps_parquet"):
            continue
        any_rca = True
        rca_dir = Path(e["rca_gaps_parquet"]).parent
        parts.append(f"<h3>{escape(label)}: RCA (threshold {_fmt(e.get('rca_threshold'))}, targets "
                     f"{escape(', '.join(e.get('rca_target_defects', [])))})</h3>")
        metrics = _json(RcaDir(rca_dir).metrics_json) or {}
        per_label = metrics.get("per_label") or {}
        if per_label:
            rows = [[lb, d.get("total"), d.get("n_misclassified"), d.get("mean_weakness"),
                     d.get("median_weakness"), d.get("max_weakness")] for lb, d in sorted(per_label.items())]
            parts.append(_table(["label", "rows", "misclassified", "mean weakness", "median", "max"], rows))
            parts.append(_svg.hbar_chart([(lb, float(d.get("mean_weakness") or 0.0)) for lb, d in sorted(per_label.items())],
                                         title="mean weakness per label"))
        images = RcaDir(rca_dir).images
        thumbs = sorted(images.glob("*.png"))[:8] if images.is_dir() else []
        if thumbs:
            parts.append("<div class='thumbs'>" + "".join(_img(p, p.stem) for p in thumbs) + "</div>")
    if not any_rca:
        parts.append("<p class='muted'>no RCA committed yet</p>")
    return "".join(parts)


def _section_sample(state: Mapping[str, Any]) -> str:
    for label in reversed(ordered_labels(state, include_final=False)):
        e = state["iterations"][label]
        sdg_csv = e.get("anomalygen_sdg_csv")
        df = _csv(sdg_csv)
        if df is None or not len(df):
            continue
        sdg_dir = Path(sdg_csv).parent
        for _, row in df.iterrows():
            name = Path(str(row.get("file", ""))).name
            ng, ok = sdg_dir / "reconstructed_image" / name, sdg_dir / "original_image" / name
            if name and ng.is_file() and ok.is_file():
                return ("<h2>Generated sample pair</h2><div class='thumbs'>"
                        + _img(ok, f"OK (golden) {name}") + _img(ng, f"NG (synthetic {row.get('label', '')})")
                        + f"</div><p class='muted'>{escape(label)} · {escape(str(sdg_csv))}</p>")
    return "<h2>Generated sample pair</h2><p class='muted'>no SDG output yet</p>"


def _section_timings(state: Mapping[str, Any]) -> str:
    per: dict[tuple[str, str], int] = defaultdict(int)
    for ev in state.get("events", []):
        per[(ev["iter"], ev["stage"])] += int(ev.get("duration_sec", 0))
    if not per:
        return "<h2>Stage timings</h2><p class='muted'>no events yet</p>"
    items = sorted(per.items(), key=lambda kv: (iteration_number(kv[0][0]), kv[0][1]))
    chart = _svg.hbar_chart([(f"{it}/{st}", float(v)) for (it, st), v in items], unit=" s", title="stage timings")
    events = _table(["seq", "ts", "iteration", "stage", "status", "s", "summary"],
                    [[e["seq"], e["ts"], e["iter"], e["stage"], e["status"], e["duration_sec"], e["summary"]]
                     for e in state.get("events", [])], left=0)
    return "<h2>Stage timings</h2>" + chart + "<h3>Events</h3>" + events


def _section_final(run_dir: Path, state: Mapping[str, Any]) -> str:
    parts = ["<h2>Final status</h2>"]
    contract = state.get("metric_contract", {})
    bm = _json(RunDir(run_dir).best_model)
    if bm:
        v = (bm.get("metric_result") or {}).get("value")
        target = contract.get("target")
        gap = (v - target) if (v is not None and target is not None) else None
        parts.append(_table(["field", "value"], [
            ["best iteration", bm.get("iteration")], [f"best {contract.get('name', '')}", v],
            ["passed", (bm.get("metric_result") or {}).get("passed")], ["threshold", bm.get("threshold")],
            ["gap to target", gap], ["best checkpoint", bm.get("checkpoint")],
            ["inference spec", str(RunDir(run_dir).inference_spec)]], left=2))
    else:
        parts.append("<p class='muted'>not finalized yet</p>")
    if state.get("status") == "failed":
        for label in ordered_labels(state):
            for err in state["iterations"][label].get("errors", []):
                parts.append(f"<p><span class='badge bad'>hard stop</span> {escape(label)}/{escape(err['stage'])}: "
                             f"{escape(err['reason'])}<br/>fix: {escape(err.get('fix') or '–')}</p>")
        parts.append(f"<pre>{escape(resume_command(run_dir))}</pre>")
    return "".join(parts)


def _section_lineage(run_dir: Path) -> str:
    lineage = _json(RunDir(run_dir).lineage)
    if lineage is None:
        return ""
    items = lineage if isinstance(lineage, list) else lineage.get("records", lineage.get("checkpoints")) \
        if isinstance(lineage, dict) else None
    if isinstance(items, list) and items and all(isinstance(i, Mapping) for i in items):
        keys = list(dict.fromkeys(k for i in items for k in i))[:8]
        return "<h2>Lineage</h2>" + _table(keys, [[i.get(k) for k in keys] for i in items], left=len(keys))
    return "<h2>Lineage</h2><pre>" + escape(json.dumps(lineage, indent=2)[:20000]) + "</pre>"


def _guard(fn, *args: Any) -> str:
    try:
        return fn(*args)
    except Exception as exc:  # a boundary: one broken section must not blank the report
        return f"<p class='muted'>section unavailable: {escape(type(exc).__name__)}: {escape(str(exc))}</p>"


def render_html(run_dir: Path, state: Mapping[str, Any]) -> str:
    title = f"DEFT Loop Report — {run_dir.name}"
    body = [
        f"<h1>{escape(title)}</h1><p class='muted'>KPI: {escape(str(state.get('kpi_target', '')))}</p>",
        _guard(_section_config, state), _guard(_section_kpi, state), _guard(_section_trajectory, run_dir, state),
        _guard(_section_iterations, state), _guard(_section_growth, run_dir, state), _guard(_section_rca, state),
        _guard(_section_sample, state), _guard(_section_timings, state), _guard(_section_final, run_dir, state),
        _guard(_section_lineage, run_dir),
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'/><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def render_report(run_dir: str | Path) -> Path:
    """Render ``RD/DEFT_Loop_Report.html`` atomically from the files on disk; returns its path."""
    run_dir = Path(run_dir)
    state = read_json(RunDir(run_dir).deft_state)
    return atomic_write_text(RunDir(run_dir).report, render_html(run_dir, state))
