"""``DEFT_Loop_Report.html``: what a run did and what it delivered, in one self-contained page.

Everything comes from disk (the DEFT state, the stage outputs it names, Phase 1/3 files, the
handoff files when present), so the report of a resumed run is the same as that of an
uninterrupted one, and re-rendering at any moment is safe. The page is one file: inline CSS,
inline SVG charts, PNG thumbnails as base64 data URIs, no script and no network. A missing or
unreadable stage output degrades one section to a note, never the whole page.

Reading order is a practitioner's: verdict and delivered model first, then how the metric moved,
which defect kinds decide it, what data each iteration added, the sweeps, and the evidence.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_text, read_json
from raypipe.deft import _svg
from raypipe.deft._report_data import (
    OperatingPoint,
    csv_or_none,
    data_added,
    json_or_none,
    num,
    operating_point,
    pair_images,
    trial_table,
)
from raypipe.deft._report_html import (
    CSS,
    Html,
    badge,
    card,
    delta,
    figure,
    fmt,
    image_figure,
    path_cell,
    pct,
    png_uri,
    table,
)
from raypipe.deft.state import ordered_labels
from raypipe.rundir import RcaDir, RunDir, iteration_number, resume_command

_STEP_NAMES = {"phase1_best": "Phase 1 best", "phase3_best": "Phase 3 best", "final_automl": "Phase 3 best"}


def step_name(label: str) -> str:
    """``final_automl`` / ``phase3_best`` → ``Phase 3 best``; loop labels unchanged."""
    return _STEP_NAMES.get(label, label)


# ---------------------------------------------------------------------------------------------
# what every section shares


@dataclass
class _Run:
    run_dir: Path
    state: Mapping[str, Any]
    best_model: Mapping[str, Any]  # {} until finalize has written best_model.json

    @property
    def contract(self) -> Mapping[str, Any]:
        return self.state.get("metric_contract") or {}

    @property
    def unit(self) -> str:
        return str(self.contract.get("unit", ""))

    @property
    def minimize(self) -> bool | None:
        op = self.contract.get("operator")
        return None if op not in ("<", "<=", ">", ">=") else op in ("<", "<=")

    @property
    def metric_title(self) -> str:
        return str(self.contract.get("display_name") or self.contract.get("name") or "metric")

    def entries(self, include_final: bool = True) -> list[tuple[str, Mapping[str, Any]]]:
        its = self.state.get("iterations", {})
        return [(lb, its[lb]) for lb in ordered_labels(self.state, include_final=include_final)]


def _diagnostics(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    mr = entry.get("metric_result") or {}
    return mr.get("diagnostics") or (json_or_none(mr.get("evidence_path")) or {}).get("diagnostics") or {}


def _verdict(run: _Run) -> tuple[bool | None, str]:
    """(KPI met?, where the verdict comes from). ``best_model.json``'s ``verdict`` when the run wrote
    one (bool, ``kpi_met``/``kpi_not_met``, or a mapping with ``kpi_met``), else the delivered
    entry's ``passed`` on the KPI set."""
    v = run.best_model.get("verdict")
    if isinstance(v, Mapping):
        v = v.get("kpi_met", v.get("met", v.get("passed")))
    if isinstance(v, bool):
        return v, "verdict"
    if isinstance(v, str) and v.strip():
        s = v.strip().lower()
        return not any(w in s for w in ("not", "fail", "miss")), "verdict"
    passed = (run.best_model.get("metric_result") or {}).get("passed")
    return (passed if isinstance(passed, bool) else None), "KPI set"


# ---------------------------------------------------------------------------------------------
# trajectory


def _trajectory(run: _Run) -> list[dict[str, Any]]:
    """Phase 1 best (validation) → baseline … iterN → Phase 3 (KPI), from the files of record.

    Loop and Phase 3 rows come from the state (current also mid-run); Phase 1 from its
    ``best_rec.json`` (else ``trajectory.json``'s validation row). Sealed-test numbers
    (``test_far_pct``, ``test_auroc``) are taken from ``trajectory.json`` rows when a run wrote them.
    """
    traj = json_or_none(RunDir(run.run_dir).trajectory)
    saved = {str(r.get("step")): r for r in (traj.get("rows") or []) if isinstance(r, Mapping)} \
        if isinstance(traj, Mapping) and isinstance(traj.get("rows"), list) else {}
    rows: list[dict[str, Any]] = []
    rec = json_or_none(RunDir(run.run_dir).sweep("phase1").best_rec)
    p1 = rec["best"].get("score") if isinstance(rec, Mapping) and isinstance(rec.get("best"), Mapping) else None
    if p1 is None:
        p1 = next((r.get("far_pct") for r in saved.values() if str(r.get("split", "")).lower() == "validation"), None)
    if num(p1) is not None:
        rows.append({"step": "phase1_best", "set": "validation", "value": num(p1)})
    delivered = run.best_model.get("iteration")
    for label, e in run.entries():
        mr = e.get("metric_result")
        if not mr:
            continue
        diag = _diagnostics(e)
        rows.append({"step": "phase3_best" if label == "final_automl" else label, "label": label, "set": "KPI",
                     "value": num(mr.get("value")), "delivered": delivered == label,
                     "threshold": num(e.get("threshold")), "auroc": num(diag.get("auroc")),
                     "far99": num(diag.get("far_at_recall_99_pct")), "far95": num(diag.get("far_at_recall_95_pct"))})
    for r in rows:
        s = saved.get(r["step"], {})
        r["test_far"], r["test_auroc"] = num(s.get("test_far_pct")), num(s.get("test_auroc"))
    return rows


# ---------------------------------------------------------------------------------------------
# sections


def _header(run: _Run) -> str:
    status = str(run.state.get("status", "?"))
    status_kind = {"failed": "bad", "in_progress": "run"}.get(status, "neutral")
    parts = [badge(f"run {status}", status_kind)]
    if run.best_model:
        met, source = _verdict(run)
        if met is not None:
            text = "KPI met" if met else "KPI not met"
            parts.append(badge(text + ("" if source == "verdict" else " (KPI set)"), "ok" if met else "bad"))
    title = f"DEFT Loop Report — {run.run_dir.name}"
    return (f"<h1>{escape(title)}</h1><p>{' '.join(parts)}</p>"
            f"<p class='muted'>KPI: {escape(str(run.state.get('kpi_target', '')))} · run dir "
            f"{escape(str(run.run_dir))}</p>")


def _elapsed(run: _Run) -> str | None:
    ps = json_or_none(RunDir(run.run_dir).pipeline_state) or {}
    start = ps.get("started_at") or run.state.get("started_at")
    end = ps.get("completed_at") or run.state.get("completed_at")
    seconds = _seconds(start, end)
    return None if seconds is None else _hms(seconds)


def _seconds(start: Any, end: Any) -> float | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d} min"


def _section_outcome(run: _Run) -> str:
    parts = ["<h2>Outcome</h2>"]
    bm = run.best_model
    if bm:
        mr = bm.get("metric_result") or {}
        value, target = num(mr.get("value")), num(run.contract.get("target"))
        label = str(bm.get("iteration", ""))
        entry = run.state.get("iterations", {}).get(label, {})
        diag = _diagnostics(entry)
        met, _ = _verdict(run)
        cards = [
            card("verdict", badge("KPI met" if met else "KPI not met", "ok" if met else "bad") if met is not None
                 else "–", f"{run.metric_title} {run.contract.get('operator', '')} {fmt(target)} {run.unit}"),
            card("delivered model", step_name(label), path_cell(bm.get("checkpoint"), run.run_dir)),
            card(f"KPI {run.metric_title}", f"{fmt(value)} {run.unit}".strip(),
                 Html("gap to target " + delta(None if value is None or target is None else value - target,
                                               minimize=run.minimize, unit=run.unit, versus="the target"))),
            card("threshold", fmt(num(bm.get("threshold")), 6), "NO_PASS iff siamese_score > threshold"),
            card("AUROC (KPI)", fmt(num(diag.get("auroc")), 4),
                 f"FAR@99% {pct(diag.get('far_at_recall_99_pct'))} · FAR@95% {pct(diag.get('far_at_recall_95_pct'))}"),
        ]
        if num(bm.get("test_far_pct")) is not None:
            cards.append(card("sealed test FAR", pct(bm.get("test_far_pct")),
                              f"AUROC {fmt(num(bm.get('test_auroc')), 4)} · data no stage ever read"))
        elapsed = _elapsed(run)
        if elapsed:
            cards.append(card("wall time", elapsed, "Phase 1 start → last phase end"))
        parts.append("<div class='cards'>" + "".join(cards) + "</div>")
        parts.append(table(["file", "path"], [
            ["best_model.json", path_cell(RunDir(run.run_dir).best_model)],
            ["inference spec", path_cell(RunDir(run.run_dir).inference_spec)],
            ["checkpoint", path_cell(bm.get("checkpoint"))],
            ["score new data", Html(f"<code>python -m raypipe.infer --best-model "
                                    f"{escape(str(run.run_dir / 'best_model.json'))} --csv CSV --images-dir DIR "
                                    f"--output-dir OUT</code>")],
        ], left=2, classes=[None, "path"]))
    else:
        parts.append("<p class='muted'>not finalized yet: best_model.json is written when the loop stops</p>")
    if run.state.get("status") == "failed":
        for label, e in run.entries():
            for err in e.get("errors", []):
                parts.append(f"<p>{badge('hard stop', 'bad')} {escape(label)}/{escape(str(err.get('stage')))}: "
                             f"{escape(str(err.get('reason')))}<br/>fix: {escape(str(err.get('fix') or '–'))}</p>")
        parts.append(f"<pre>{escape(resume_command(run.run_dir))}</pre>")
    return "".join(parts)


def _section_trajectory(run: _Run) -> str:
    rows = _trajectory(run)
    if not rows:
        return "<h2>Metric trajectory</h2><p class='muted'>no evaluated step yet</p>"
    percent = run.unit == "%"
    labels = [step_name(r["step"]) for r in rows]
    kpi = [r["value"] if r["set"] == "KPI" else None for r in rows]
    series = [_svg.Series(f"KPI {run.metric_title}", kpi, _svg.BLUE, "line", "circle", value_labels=True)]
    if percent and any(r.get("far95") is not None for r in rows):
        # Progress the 100 %-recall headline can hide; drawn as a halo so it stays visible where equal.
        series.insert(0, _svg.Series("KPI FAR@95% recall", [r.get("far95") for r in rows], _svg.ORANGE, "band",
                                     "square"))
    if any(r["set"] == "validation" for r in rows):
        series.append(_svg.Series("validation FAR (Phase 1 objective)",
                                  [r["value"] if r["set"] == "validation" else None for r in rows],
                                  _svg.PURPLE, "points", "diamond", value_labels=True))
    if any(r.get("test_far") is not None for r in rows):
        series.append(_svg.Series("sealed test FAR@100% recall", [r.get("test_far") for r in rows], _svg.GREEN,
                                  "dotted", "triangle"))
    target = num(run.contract.get("target"))
    chart = _svg.line_chart(labels, series, target=target, unit=run.unit,
                            target_text=f"target {run.contract.get('operator', '')} {fmt(target)} {run.unit}".strip(),
                            y_label=f"{run.contract.get('name', '')} ({run.unit})" if run.unit else "",
                            title="metric trajectory")
    base = next((r["value"] for r in rows if r.get("label") == "baseline"), None)
    has_test = any(r.get("test_far") is not None or r.get("test_auroc") is not None for r in rows)
    headers = ["step", "set", run.metric_title, "Δ vs baseline", "threshold", "AUROC", "FAR@99%", "FAR@95%"]
    if has_test:
        headers += ["test FAR@100%R", "test AUROC"]
    headers.append("delivered")
    body = []
    for r in rows:
        d = None if r["set"] != "KPI" or base is None or r["value"] is None else r["value"] - base
        line = [step_name(r["step"]), r["set"], r["value"], delta(d, minimize=run.minimize, unit=run.unit),
                r.get("threshold"), r.get("auroc"), r.get("far99"), r.get("far95")]
        if has_test:
            line += [r.get("test_far"), r.get("test_auroc")]
        line.append("★ delivered" if r.get("delivered") else "")
        body.append(line)
    note = ("<p class='muted'>Phase 1's point is its validation FAR (the sweep never sees the KPI set); every other "
            "point is on the KPI set. FAR at 100 % recall is pinned by the single hardest defect: FAR@95 % and AUROC "
            "show progress the headline hides.</p>")
    return ("<h2>Metric trajectory</h2>" + chart + note
            + table(headers, body, left=2, table_id="trajectory", highlight=[bool(r.get("delivered")) for r in rows]))


def _focus_entry(run: _Run) -> tuple[str, Mapping[str, Any]] | None:
    """The delivered entry, or (before finalize) the latest evaluated one."""
    its = run.state.get("iterations", {})
    label = run.best_model.get("iteration")
    if label in its:
        return str(label), its[label]
    done = [(lb, e) for lb, e in run.entries() if e.get("inference_csv") and e.get("threshold") is not None]
    return done[-1] if done else None


def _section_kinds(run: _Run) -> str:
    head = "<h2>Results per defect kind at the operating point</h2>"
    focus = _focus_entry(run)
    op = operating_point(focus[1].get("inference_csv"), focus[1].get("threshold")) if focus else None
    if focus is None or op is None:
        df = csv_or_none(run.state.get("config", {}).get("kpi_test_csv"))
        if df is None or "label" not in df.columns:
            return head + "<p class='muted'>KPI CSV not readable; no evaluated model yet</p>"
        from raypipe.workspace._rows import normalise_label

        counts = df["label"].map(normalise_label).value_counts()
        return (head + f"<p class='muted'>no evaluated model yet. KPI dataset label counts ({len(df)} rows):</p>"
                + table(["kind", "rows"], [[k, int(v)] for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]))
    label, entry = focus
    which = "delivered model" if run.best_model.get("iteration") == label else "latest evaluated model (not final)"
    rows = [[k.kind, k.count, k.caught, k.missed, k.recall_pct, k.lowest,
             None if k.lowest is None else k.lowest - op.threshold] for k in op.kinds]
    intro = (f"<p>{escape(step_name(label))} ({which}) on the KPI set at threshold <b>{op.threshold:.6g}</b> "
             f"(a row is NO_PASS iff its score is above it). Hardest kind first.</p>")
    parts = [head, intro,
             table(["kind", "rows", "caught", "missed", "recall %", "lowest score", "margin over threshold"], rows,
                   table_id="per-kind", highlight=[k.missed > 0 for k in op.kinds]),
             table(["PASS rows", "false alarms", "FAR %", "highest PASS score"],
                   [[op.n_pass, op.false_alarms, op.far_pct, op.highest_pass]], left=0, table_id="per-kind-pass")]
    parts.append(_hardest(run, label, entry, op))
    return "".join(parts)


def _hardest(run: _Run, label: str, entry: Mapping[str, Any], op: OperatingPoint) -> str:
    h = op.hardest
    if h is None:
        return ""
    what_if = ""
    if op.far_without_hardest_pct is not None and op.next_hardest is not None:
        what_if = (f" Were this one row caught, the next-hardest defect ({escape(str(op.next_hardest['label']))}, "
                   f"score {op.next_hardest['siamese_score']:.6g}) would set FAR at 100 % recall to "
                   f"<b>{op.far_without_hardest_pct:.2f} %</b>.")
    text = (f"<div class='callout' id='hardest'><b>Hardest defect:</b> {escape(str(h['label']))} "
            f"<code>{escape(str(h.get('object_name', '')))}</code> (KPI row {h['row_number']}, "
            f"<code>{escape(str(h.get('input_path', '')))}</code>) scores <b>{h['siamese_score']:.6g}</b>, the lowest "
            f"of all defects. {op.pass_at_or_above_hardest} of {op.n_pass} PASS rows score at or above it, so "
            f"catching it costs FAR {pct(100.0 * op.pass_at_or_above_hardest / op.n_pass if op.n_pass else None)}: "
            f"this one sample decides FAR at 100 % recall.{what_if}</div>")
    images = _hardest_images(run, entry, h)
    return text + images


def _hardest_images(run: _Run, entry: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    from raypipe.spec import load_spec
    from raypipe.workspace._rows import ImageLayout

    images_dir = run.state.get("config", {}).get("images_dir") or run.best_model.get("images_dir")
    spec_path = entry.get("training_spec")
    try:
        layout = ImageLayout.from_spec(load_spec(str(spec_path)))
    except Exception as exc:  # a boundary: a spec we cannot read only costs the thumbnails
        return f"<p class='muted'>no thumbnails: training spec {escape(str(spec_path))} not readable ({escape(str(exc))})</p>"
    if not images_dir:
        return "<p class='muted'>no thumbnails: the state records no images_dir</p>"
    figs = [figure(png_uri(im) if im is not None else None, caption) for caption, im in
            pair_images(row, Path(images_dir), layout)]
    return "<div class='thumbs'>" + "".join(figs) + "</div>"


def _rows_of(entry: Mapping[str, Any], cfg: Mapping[str, Any], label: str,
             run_dir: Path | None = None) -> tuple[int | None, int | None]:
    """(training rows, synthetic rows) of an iteration; Phase 3 trained on the loop's last combined set."""
    prov_path = entry.get("provenance_csv")
    if label == "final_automl" and run_dir is not None and not prov_path:
        phase3 = ((json_or_none(RunDir(run_dir).pipeline_state) or {}).get("phases") or {}).get("phase3") or {}
        csv = phase3.get("training_csv")
        if csv:
            prov_path = str(Path(csv).with_name(Path(csv).stem + "_provenance.csv"))
    prov = csv_or_none(prov_path)
    if prov is not None and "source" in prov.columns:
        return len(prov), int((prov["source"] == "sdg").sum())
    combined = csv_or_none(entry.get("combined_training_csv"))
    if combined is not None:
        return len(combined), None
    if label == "baseline":
        base = csv_or_none(cfg.get("training_csv"))
        return (len(base) if base is not None else None), 0
    return None, None


def _section_iterations(run: _Run) -> str:
    cfg = run.state.get("config", {})
    base = num((run.state.get("iterations", {}).get("baseline", {}).get("metric_result") or {}).get("value"))
    rows, hi = [], []
    for label, e in run.entries():
        mr = e.get("metric_result") or {}
        v = num(mr.get("value"))
        diag = _diagnostics(e)
        total, sdg = _rows_of(e, cfg, label, run.run_dir)
        ratio = 100.0 * sdg / total if (total and sdg is not None) else None
        rows.append([step_name(label) if label == "final_automl" else label, e.get("status"), e.get("stage_completed"),
                     v, delta(None if v is None or base is None else v - base, minimize=run.minimize, unit=run.unit),
                     num(e.get("threshold")), num((mr.get("constraints") or {}).get("recall_pct")),
                     num(diag.get("auroc")), num(diag.get("far_at_recall_99_pct")),
                     num(diag.get("far_at_recall_95_pct")), total, sdg, ratio])
        hi.append(run.best_model.get("iteration") == label)
    return "<h2>Per-iteration results</h2>" + table(
        ["iteration", "status", "stage", run.metric_title, "Δ vs baseline", "threshold", "recall %", "AUROC",
         "FAR@99%", "FAR@95%", "training rows", "synthetic rows", "synthetic %"], rows, left=3,
        table_id="iterations", highlight=hi)


def _section_data(run: _Run) -> str:
    parts = ["<h2>Training data per iteration</h2>"]
    its = [(lb, iteration_number(lb), e.get("provenance_csv")) for lb, e in run.entries(include_final=False)
           if lb != "baseline"]
    added = data_added(its, run.state.get("config", {}).get("training_csv"))
    if added is not None:
        headers, rows = added
        parts.append("<h3>Rows per kind: base set and what each iteration added, by source</h3>")
        parts.append(table(headers, rows, table_id="data-added", highlight=[r[0] == "all kinds" for r in rows]))
    growth = _growth(run)
    if growth:
        parts.append("<h3>Mining funnel and set size</h3>")
        parts.append(table(["iteration", "mined raw (candidates)", "kept (≥ min_similarity)", "mined novel", "SDG",
                            "total rows", "Δ rows"], growth, table_id="growth"))
    mining = mining_rows(run)
    if mining:
        parts.append("<h3>Mining per kind</h3><p class='muted'>precision: share of the rows a kind's targets mined "
                     "that carry that kind; label-blind: the same with the whole pool searched (the embedder's own "
                     "precision); pool recall: mined rows of the kind ÷ its pool rows, cumulative.</p>")
        parts.append(table(["iteration", "kind", "targets", "mined", "precision", "label-blind precision",
                            "pool rows", "pool recall", "cumulative pool recall"], mining, left=2, table_id="mining"))
    if added is None and not growth:
        parts.append("<p class='muted'>no iteration has merged data yet</p>")
    return "".join(parts)


def mining_rows(run: _Run) -> list[list[Any]]:
    """One row per iteration and kind from each iteration's ``mining_stats.csv``."""
    def pct(x: Any) -> str:
        return "–" if num(x) is None else f"{100 * float(x):.0f} %"

    out: list[list[Any]] = []
    for label, e in run.entries(include_final=False):
        t = csv_or_none(e.get("mining_stats_csv"))
        if t is None:
            continue
        for r in t.to_dict("records"):
            out.append([label, r["label"], r["targets"], r["mined"], pct(r.get("precision")),
                        pct(r.get("label_blind_precision")), r["pool_rows"], pct(r.get("recall")),
                        pct(r.get("cumulative_recall"))])
    return out


def _growth(run: _Run) -> list[list[Any]]:
    cfg = run.state.get("config", {})
    its = run.state.get("iterations", {})
    prev_total = _rows_of(its["baseline"], cfg, "baseline")[0] if "baseline" in its else None
    out: list[list[Any]] = []
    for label, e in run.entries(include_final=False):
        if label == "baseline":
            continue
        knn = csv_or_none(e.get("mining_summary"))
        raw = kept = None
        if knn is not None and len(knn):
            raw = int(num(knn.iloc[0].get("candidate_count")) or 0)
            kept = int(num(knn.iloc[0].get("kept_count")) or 0)
        mined = e.get("mining_mined_count", 0 if e.get("data_mining_skipped") else None)
        total, sdg = _rows_of(e, cfg, label)
        grew = (total - prev_total) if (total is not None and prev_total is not None) else None
        out.append([label, raw, kept, mined, sdg, total, f"+{grew}" if grew and grew > 0 else grew])
        prev_total = total if total is not None else prev_total
    return out


def _section_trials(run: _Run) -> str:
    parts = ["<h2>AutoML sweeps</h2>"]
    for title, phase in (("Phase 1 (baseline search)", "phase1"), ("Phase 3 (warm-started refinement)", "phase3")):
        sweep_dir = RunDir(run.run_dir).sweep(phase).path
        sub = sweep_dir.name
        tt = trial_table(sweep_dir)
        parts.append(f"<h3>{escape(title)}</h3>")
        if tt is None:
            parts.append(f"<p class='muted'>{escape(sub)}/trials.csv not written yet</p>")
            continue
        parts.append(f"<p class='muted'>{tt.n_trials} trial(s), ranked by validation {escape(tt.metric_name)} at each "
                     f"trial's best checkpoint; ★ = the recommendation in best_rec.json. The KPI set is never read "
                     f"by a sweep.</p>")
        parts.append(table(tt.headers, tt.rows, left=2, table_id=f"trials-{sub}", highlight=tt.highlight,
                           classes=[None] * (len(tt.headers) - 1) + ["txt"]))
    return "".join(parts)


def _section_rca(run: _Run) -> str:
    import pandas as pd

    parts = ["<h2>Root-cause analysis</h2>"]
    any_rca = False
    for label, e in run.entries(include_final=False):
        inf = csv_or_none(e.get("inference_csv"))
        if inf is not None and {"label", "siamese_score"} <= set(inf.columns):
            s = pd.to_numeric(inf["siamese_score"], errors="coerce")
            defect = inf["label"].astype(str).str.strip().str.upper() != "PASS"
            parts.append(f"<h3>{escape(label)}: KPI score distribution</h3>")
            parts.append(_svg.histogram({"PASS": s[~defect].dropna().tolist(), "defect": s[defect].dropna().tolist()},
                                        marker=num(e.get("threshold")), title=f"{label} scores"))
        if not e.get("rca_gaps_parquet"):
            continue
        any_rca = True
        rca_dir = Path(e["rca_gaps_parquet"]).parent
        parts.append(f"<h3>{escape(label)}: RCA (threshold {fmt(num(e.get('rca_threshold')), 6)}; targets "
                     f"{escape(', '.join(e.get('rca_target_defects', [])))})</h3>")
        per_label = (json_or_none(RcaDir(rca_dir).metrics_json) or {}).get("per_label") or {}
        if per_label:
            rows = [[lb, d.get("total"), d.get("n_misclassified"), num(d.get("mean_weakness")),
                     num(d.get("median_weakness")), num(d.get("max_weakness"))] for lb, d in sorted(per_label.items())]
            parts.append(table(["label", "rows", "misclassified", "mean weakness", "median", "max"], rows))
            parts.append(_svg.hbar_chart([(lb, num(d.get("mean_weakness")) or 0.0) for lb, d in sorted(per_label.items())],
                                         title="mean weakness per label"))
        images = RcaDir(rca_dir).images
        thumbs = sorted(images.glob("*.png"))[:8] if images.is_dir() else []
        if thumbs:
            parts.append("<div class='thumbs'>" + "".join(image_figure(p, p.stem) for p in thumbs) + "</div>")
    if not any_rca:
        parts.append("<p class='muted'>no RCA committed yet</p>")
    return "".join(parts)


def _section_sample(run: _Run) -> str:
    for label, e in reversed(run.entries(include_final=False)):
        sdg_csv = e.get("anomalygen_sdg_csv")
        df = csv_or_none(sdg_csv)
        if df is None or not len(df):
            continue
        sdg_dir = Path(sdg_csv).parent
        for _, row in df.iterrows():
            name = Path(str(row.get("file", ""))).name
            ng, ok = sdg_dir / "reconstructed_image" / name, sdg_dir / "original_image" / name
            if name and ng.is_file() and ok.is_file():
                return ("<h2>Generated sample pair</h2><div class='thumbs'>"
                        + image_figure(ok, f"OK (golden) {name}") + image_figure(ng, f"NG (synthetic {row.get('label', '')})")
                        + f"</div><p class='muted'>{escape(label)} · {escape(str(sdg_csv))}</p>")
    return "<h2>Generated sample pair</h2><p class='muted'>no SDG output yet</p>"


def _section_timings(run: _Run) -> str:
    parts = ["<h2>Stage timings</h2>"]
    ps = json_or_none(RunDir(run.run_dir).pipeline_state) or {}
    phases = ps.get("phases") if isinstance(ps.get("phases"), Mapping) else {}
    if phases:
        rows = []
        for name, p in phases.items():
            secs = _seconds(p.get("started_at"), p.get("completed_at")) if isinstance(p, Mapping) else None
            rows.append([name, p.get("status") if isinstance(p, Mapping) else p, None if secs is None else _hms(secs)])
        parts.append(table(["phase", "status", "wall time"], rows, left=2, table_id="phases"))
    events = run.state.get("events", [])
    per: dict[tuple[str, str], int] = defaultdict(int)
    for ev in events:
        per[(str(ev.get("iter")), str(ev.get("stage")))] += int(ev.get("duration_sec", 0) or 0)
    if not per:
        parts.append("<p class='muted'>no events yet</p>")
        return "".join(parts)
    items = sorted(per.items(), key=lambda kv: (iteration_number(kv[0][0]), kv[0][1]))
    parts.append(_svg.hbar_chart([(f"{step_name(it)} / {st}", float(v)) for (it, st), v in items], unit=" s",
                                 title="stage timings"))
    parts.append(f"<details><summary>Events ({len(events)})</summary>")
    parts.append(table(["seq", "ts", "iteration", "stage", "status", "s", "summary"],
                       [[e.get("seq"), e.get("ts"), e.get("iter"), e.get("stage"), e.get("status"), e.get("duration_sec"),
                         e.get("summary")] for e in events], left=0,
                       classes=[None, None, None, None, None, None, "txt"]))
    parts.append("</details>")
    return "".join(parts)


def _section_config(run: _Run) -> str:
    state, cfg = run.state, run.state.get("config", {})
    rows: list[list[Any]] = [["KPI target", state.get("kpi_target")], ["max_iterations", state.get("max_iterations")],
                             ["current_iteration", state.get("current_iteration")],
                             ["started_at", state.get("started_at")], ["completed_at", state.get("completed_at")],
                             ["results_dir", path_cell(state.get("results_dir"))]]
    for key in ("backend", "specs_file", "training_csv", "validation_csv", "kpi_test_csv", "images_dir",
                "mining_pool_csv", "num_epochs", "batch_size", "num_gpus", "gpu_model"):
        if key in cfg:
            value = cfg[key]
            rows.append([key, path_cell(value) if isinstance(value, str) and "/" in value else value])
    for block in ("sdg", "mining_filter"):
        if block in cfg:
            rows.append([block, json.dumps(cfg[block], sort_keys=True)])
    return "<h2>Run configuration</h2>" + table(["field", "value"], rows, left=2, classes=[None, "path"])


def _lineage_value(v: Any, run_dir: Path) -> Any:
    if isinstance(v, Mapping):
        if {"name", "value"} <= set(v):
            val = num(v.get("value"))
            return f"{v['name']} {fmt(val)}" + (f" ({v['split']})" if v.get("split") else "")
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str) and v.startswith("/"):
        return path_cell(v, run_dir)
    return v


def _section_lineage(run: _Run) -> str:
    lineage = json_or_none(RunDir(run.run_dir).lineage)
    if lineage is None:
        return ""
    items = lineage if isinstance(lineage, list) else \
        lineage.get("records", lineage.get("checkpoints")) if isinstance(lineage, dict) else None
    if isinstance(items, list) and items and all(isinstance(i, Mapping) for i in items):
        keys = list(dict.fromkeys(k for i in items for k in i))[:9]
        classes = ["path" if any(str(i.get(k, "")).startswith("/") for i in items) else None for k in keys]
        return ("<h2>Lineage</h2><p class='muted'>paths relative to the run dir (full path on hover)</p>"
                + table(keys, [[_lineage_value(i.get(k), run.run_dir) for k in keys] for i in items], left=len(keys),
                        classes=classes, table_id="lineage"))
    return "<h2>Lineage</h2><pre>" + escape(json.dumps(lineage, indent=2)[:20000]) + "</pre>"


def _guard(fn: Callable[[_Run], str], run: _Run) -> str:
    try:
        return fn(run)
    except Exception as exc:  # a boundary: one broken section must not blank the report
        return f"<p class='muted'>section unavailable: {escape(type(exc).__name__)}: {escape(str(exc))}</p>"


_SECTIONS: tuple[Callable[[_Run], str], ...] = (
    _header, _section_outcome, _section_trajectory, _section_kinds, _section_iterations, _section_data,
    _section_trials, _section_rca, _section_sample, _section_timings, _section_config, _section_lineage)


def render_html(run_dir: Path, state: Mapping[str, Any]) -> str:
    bm = json_or_none(RunDir(run_dir).best_model)
    run = _Run(Path(run_dir), state, bm if isinstance(bm, Mapping) else {})
    title = f"DEFT Loop Report — {run.run_dir.name}"
    body = "".join(_guard(section, run) for section in _SECTIONS)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'/>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'/><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def render_report(run_dir: str | Path) -> Path:
    """Render ``RD/DEFT_Loop_Report.html`` atomically from the files on disk; returns its path."""
    run_dir = Path(run_dir)
    state = read_json(RunDir(run_dir).deft_state)
    return atomic_write_text(RunDir(run_dir).report, render_html(run_dir, state))


__all__ = ["render_html", "render_report", "step_name"]
