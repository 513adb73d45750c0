"""RCA: which KPI samples does the current model get wrong, or nearly wrong?

The threshold is the best-F1 threshold among those reaching ``min_recall`` (default 1.0, the KPI's
100 % recall). Against it every sample gets a *signed weakness* — PASS: ``score − t``, NO_PASS:
``t − score`` — positive when the sample is on the wrong side. At 100 % recall no defect is on the
wrong side (t lies below the lowest defect score), so the weakest defects are the ones closest to
the threshold: exactly the ones that pin it and therefore the FAR. That is why RCA keeps the
``top_k_per_label`` weakest samples of EVERY label, not only misclassified ones.

``rca_target_defects`` orders the defect labels by FN count (desc), then by their *FP rate*:
the fraction of PASS samples that must be flagged to catch every defect of that label
(PASS rows scoring ≥ the label's lowest defect score). At 100 % recall FN is 0 everywhere, so the
order is "which defect type costs the most false alarms" — the one to fix first.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft._stage_io import fresh_dir, write_parquet
from raypipe.deft.errors import HardStop
from raypipe.metrics import best_f1_threshold
from raypipe.rundir import RcaDir
from raypipe.workspace._rows import ImageLayout, normalise_label, read_rows

log = logging.getLogger(__name__)

STAGE = "rca"
INFERENCE_COLUMNS = ("input_path", "golden_path", "object_name", "label", "siamese_score")
# leading columns of kpi_gaps.parquet; every other inference column follows, preserved as text
GAP_COLUMNS = ("filepath", "label", "siamese_score", "weakness", "input_path", "golden_path",
               "object_name", "light", "golden_filepath", "misclassified", "rank_in_label")
THUMB_PX = 96


def run_rca(inference_csv: Path, out_dir: Path, *, layout: ImageLayout, images_dir: Path,
            min_recall: float = 1.0, top_k_per_label: int = 50, thumbnails_per_label: int = 4) -> dict[str, Any]:
    """Find the weakest KPI samples of ``inference_csv`` and write the RCA artifacts into ``out_dir``.

    ``images_dir`` is the root the CSV's relative paths resolve against. In ``kpi_gaps.parquet``
    ``input_path``/``golden_path`` are written as ABSOLUTE directories so later stages (mining
    embeds these targets) need no image root; ``filepath``/``golden_filepath`` are the per-light files.
    Returns the evidence ``{rca_gaps_parquet, rca_threshold, rca_target_defects, rca_dir}``.
    """
    inference_csv, out_dir, images_dir = Path(inference_csv), Path(out_dir), Path(images_dir)
    out = RcaDir(out_dir)
    if not 0.0 < min_recall <= 1.0:
        raise ValueError(f"rca.min_recall must be in (0, 1], got {min_recall}")
    if top_k_per_label < 1:
        raise ValueError(f"rca.top_k_per_label must be >= 1, got {top_k_per_label}")
    fresh_dir(out_dir)
    df, scores = _read_inference(inference_csv)
    labels = df["label"].map(normalise_label)
    y = (labels != "PASS").to_numpy()

    if not y.any():
        _unreachable(out, inference_csv, min_recall,
                     f"the KPI set has no defect (NO_PASS) rows among {len(df)} rows, so recall is undefined",
                     "add defect samples to the KPI testing_set.csv")
    best = best_f1_threshold(y, scores, min_recall)
    if best is None:  # cannot happen for min_recall <= 1 (a threshold below every score has recall 1); kept for safety
        _unreachable(out, inference_csv, min_recall, f"no threshold reaches recall {min_recall:g}",
                     "lower phase2.rca.min_recall or fix the KPI labels")
    t = best.threshold

    weakness = np.where(y, t - scores, scores - t)
    # misclassified from the prediction rule (NO_PASS iff score > t), not from the weakness sign:
    # a defect scoring exactly t is missed although its weakness is 0
    misclassified = (scores > t) != y
    table = df.copy()
    table["label"] = labels
    table["siamese_score"] = scores
    table["weakness"] = weakness
    table["misclassified"] = misclassified

    per_label = _per_label_stats(table, scores[~y])
    targets = sorted((lab for lab in per_label if lab != "PASS"),
                     key=lambda lab: (-per_label[lab]["n_misclassified"], -per_label[lab]["fp_rate"], lab))

    # stable sort: ties keep the inference CSV order, so the selection is deterministic
    ranked = table.sort_values("weakness", ascending=False, kind="mergesort")
    ranked["rank_in_label"] = ranked.groupby("label", sort=False).cumcount() + 1
    weakest = ranked[ranked["rank_in_label"] <= top_k_per_label]
    gaps = _per_light_rows(weakest, layout, images_dir)

    gaps_path = write_parquet(gaps, out.gaps_parquet)
    atomic_write_text(out.threshold_txt, f"{t!r}\n")
    tp, fp, tn, fn = best.tp, best.fp, best.tn, best.fn
    atomic_write_json(out.metrics_json, {
        "inference_csv": str(inference_csv.resolve()),
        "threshold": t, "min_recall": min_recall,
        "precision": best.precision, "recall": best.recall, "f1": best.f1, "far": best.far,
        "confusion_matrix": {"labels": ["PASS", "NO_PASS"], "matrix": [[tn, fp], [fn, tp]],
                             "tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "n_rows": int(len(table)), "n_pass": int((~y).sum()), "n_nopass": int(y.sum()),
        "top_k_per_label": top_k_per_label, "rca_target_defects": targets,
        "per_label": per_label,
    })
    atomic_write_text(out.breakdown_txt,
                      _breakdown(inference_csv, t, best.recall, per_label, targets, weakest))
    _thumbnails(weakest, layout, images_dir, out.images, thumbnails_per_label)
    log.info("rca: threshold %.6g, %d weak samples (%d rows) over %d labels; targets %s",
             t, len(weakest), len(gaps), weakest["label"].nunique(), targets)
    return {"rca_gaps_parquet": str(gaps_path.resolve()), "rca_threshold": t, "rca_target_defects": targets,
            "rca_dir": str(out_dir.resolve())}


def _read_inference(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    if not path.is_file():
        raise HardStop(STAGE, f"{path}: inference CSV not found", "re-run the evaluate stage")
    df = read_rows(path)
    missing = [c for c in INFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise HardStop(STAGE, f"{path}: missing column(s) {missing}; expected {list(INFERENCE_COLUMNS)}",
                       "re-run inference: the backend must write siamese_score for every row")
    if df.empty:
        raise HardStop(STAGE, f"{path}: no rows", "re-run inference on the KPI set")
    scores = pd.to_numeric(df["siamese_score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise HardStop(STAGE, f"{path}: row {row + 1}, column 'siamese_score': expected a finite number, "
                              f"got {df['siamese_score'].iloc[row]!r}", "re-run inference")
    return df, scores


def _unreachable(out: RcaDir, csv: Path, min_recall: float, why: str, fix: str) -> NoReturn:
    atomic_write_text(out.unreachable_txt,
                      f"inference_csv: {csv}\nmin_recall: {min_recall:g}\nunreachable: {why}\nfix: {fix}\n")
    raise HardStop(STAGE, f"KPI unreachable: {why} ({csv})", fix)


def _per_label_stats(table: pd.DataFrame, pass_scores: np.ndarray) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    n_pass = max(pass_scores.size, 1)
    for lab, g in table.groupby("label", sort=True):
        w = g["weakness"].to_numpy()
        if lab == "PASS":
            fp_rate = float(g["misclassified"].mean())
        else:  # PASS rows that must be flagged to catch every defect of this label
            fp_rate = float((pass_scores >= g["siamese_score"].min()).sum() / n_pass) if pass_scores.size else 0.0
        out[str(lab)] = {
            "total": int(len(g)), "mean_weakness": float(w.mean()), "median_weakness": float(np.median(w)),
            "max_weakness": float(w.max()), "n_misclassified": int(g["misclassified"].sum()),
            "fp_rate": fp_rate,
        }
    return out


def _per_light_rows(weakest: pd.DataFrame, layout: ImageLayout, images_dir: Path) -> pd.DataFrame:
    preserved = [c for c in weakest.columns if c not in GAP_COLUMNS]
    rows: list[dict[str, Any]] = []
    for rec in weakest.to_dict(orient="records"):
        cap_dir = _abs_dir(images_dir, rec["input_path"])
        gold_dir = _abs_dir(images_dir, rec["golden_path"])
        for light in layout.lights:
            row = {
                "filepath": str(layout.image_path(images_dir, cap_dir, rec["object_name"], light)),
                "label": rec["label"], "siamese_score": float(rec["siamese_score"]),
                "weakness": float(rec["weakness"]), "input_path": cap_dir, "golden_path": gold_dir,
                "object_name": rec["object_name"], "light": light,
                "golden_filepath": str(layout.image_path(images_dir, gold_dir, rec["object_name"], light)),
                "misclassified": bool(rec["misclassified"]), "rank_in_label": int(rec["rank_in_label"]),
            }
            row.update({c: rec[c] for c in preserved})
            rows.append(row)
    cols = list(GAP_COLUMNS) + preserved
    return pd.DataFrame(rows, columns=cols)


def _abs_dir(images_dir: Path, directory: str) -> str:
    p = Path(directory)
    return str((p if p.is_absolute() else Path(images_dir) / p).resolve())


def _breakdown(csv: Path, t: float, recall: float, per_label: dict[str, dict[str, Any]],
               targets: list[str], weakest: pd.DataFrame) -> str:
    lines = [f"inference_csv: {csv}", f"threshold: {t!r} (NO_PASS iff siamese_score > threshold)",
             f"recall at threshold: {recall:.4f}", f"rca_target_defects: {', '.join(targets) or '-'}", "",
             f"{'label':<24}{'total':>7}{'misclass':>10}{'kept':>6}{'mean_w':>10}{'max_w':>10}{'fp_rate':>9}"]
    kept = weakest["label"].value_counts()
    for lab, st in per_label.items():
        lines.append(f"{lab:<24}{st['total']:>7}{st['n_misclassified']:>10}{int(kept.get(lab, 0)):>6}"
                     f"{st['mean_weakness']:>10.4f}{st['max_weakness']:>10.4f}{st['fp_rate']:>9.3f}")
    lines += ["", "weakest samples (weakness > 0 = misclassified):"]
    for rec in weakest.to_dict(orient="records"):
        lines.append(f"  {rec['label']:<20} #{int(rec['rank_in_label']):<4} weakness {rec['weakness']:+.4f}  "
                     f"score {rec['siamese_score']:.4f}  {rec['input_path']}/{rec['object_name']}")
    return "\n".join(lines) + "\n"


def _thumbnails(weakest: pd.DataFrame, layout: ImageLayout, images_dir: Path, out: Path, per_label: int) -> None:
    """Capture beside golden, one row per light, for the weakest few samples of each label."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for rec in weakest[weakest["rank_in_label"] <= per_label].to_dict(orient="records"):
        tiles: list[tuple[Image.Image, Image.Image]] = []
        try:
            for light in layout.lights:
                pair = []
                for directory in (rec["input_path"], rec["golden_path"]):
                    with Image.open(layout.image_path(images_dir, directory, rec["object_name"], light)) as im:
                        im = im.convert("RGB")
                        im.thumbnail((THUMB_PX, THUMB_PX))
                        pair.append(im.copy())
                tiles.append((pair[0], pair[1]))
        except OSError as exc:  # a thumbnail is a convenience: never fail RCA over it
            log.warning("rca: no thumbnail for %s: %s", rec["object_name"], exc)
            continue
        w = max(a.width + b.width for a, b in tiles) + 2
        h = sum(max(a.height, b.height) for a, b in tiles)
        sheet = Image.new("RGB", (w, h), (255, 255, 255))
        y = 0
        for cap, gold in tiles:
            sheet.paste(cap, (0, y))
            sheet.paste(gold, (cap.width + 2, y))
            y += max(cap.height, gold.height)
        name = _safe(f"{rec['label']}_{int(rec['rank_in_label']):03d}_{rec['object_name']}") + ".png"
        sheet.save(out / name)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@+_.-]+", "_", text)


__all__ = ["run_rca"]
