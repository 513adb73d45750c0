"""What the report shows, computed from the run dir's files (no HTML here).

Every reader tolerates a missing or unreadable file (it returns None): the report of a run in
progress, or of one with a damaged stage output, still renders; the section says what is missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe._io import read_json
from raypipe.metrics import far_at_recall
from raypipe.workspace._rows import PASS, ImageLayout, normalise_label

# ---------------------------------------------------------------------------------------------
# tolerant readers


def json_or_none(path: Any) -> Any:
    try:
        return read_json(path) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def csv_or_none(path: Any) -> pd.DataFrame | None:
    """A CSV with every cell as a string (None when missing or unparsable)."""
    try:
        if path and Path(path).is_file():
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    return None


def num(v: Any) -> float | None:
    """A finite float from a JSON/CSV value (None for missing, empty, non-numeric, NaN, inf, bool)."""
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------------------------
# per-defect-kind results at the operating point


@dataclass(frozen=True)
class KindResult:
    kind: str
    count: int
    caught: int  # rows with score > threshold (predicted NO_PASS)
    lowest: float | None  # the kind's lowest score: how close its hardest sample is to the threshold

    @property
    def missed(self) -> int:
        return self.count - self.caught

    @property
    def recall_pct(self) -> float:
        return 100.0 * self.caught / self.count if self.count else math.nan


@dataclass(frozen=True)
class OperatingPoint:
    """Results of one evaluated model on the KPI set at its threshold (NO_PASS iff score > t)."""

    threshold: float
    kinds: list[KindResult]  # defect kinds, hardest (lowest score) first
    n_pass: int
    false_alarms: int  # PASS rows with score > threshold
    highest_pass: float | None
    hardest: dict[str, Any] | None  # the defect row with the lowest score (its CSV cells + score)
    pass_at_or_above_hardest: int  # PASS rows scoring >= the hardest defect: they are the false alarms it forces
    far_without_hardest_pct: float | None  # FAR at 100 % recall if that one row were caught
    next_hardest: dict[str, Any] | None = None

    @property
    def far_pct(self) -> float:
        return 100.0 * self.false_alarms / self.n_pass if self.n_pass else math.nan


def operating_point(inference_csv: Any, threshold: Any) -> OperatingPoint | None:
    """Per-kind counts, recall, lowest score and misses of an ``inference.csv`` at ``threshold``."""
    df = csv_or_none(inference_csv)
    t = num(threshold)
    if df is None or t is None or not {"label", "siamese_score"} <= set(df.columns) or df.empty:
        return None
    scores = pd.to_numeric(df["siamese_score"], errors="coerce")
    if scores.isna().any():
        return None
    labels = df["label"].map(normalise_label)
    defect = labels != PASS
    kinds = []
    for kind in sorted(set(labels[defect])):
        s = scores[labels == kind]
        kinds.append(KindResult(kind, len(s), int((s > t).sum()), float(s.min())))
    kinds.sort(key=lambda k: (k.lowest if k.lowest is not None else math.inf, k.kind))
    pass_s = scores[~defect]
    hardest = next_hardest = None
    at_or_above = 0
    far_without = None
    if defect.any():
        order = scores[defect].sort_values(kind="stable")
        hardest = _row(df, order.index[0], float(order.iloc[0]))
        at_or_above = int((pass_s >= order.iloc[0]).sum())
        if len(order) > 1 and len(pass_s):
            next_hardest = _row(df, order.index[1], float(order.iloc[1]))
            keep = scores.index != order.index[0]
            res = far_at_recall(defect[keep].to_numpy(), scores[keep].to_numpy(dtype=np.float64), 1.0)
            far_without = res.far * 100.0
    return OperatingPoint(threshold=t, kinds=kinds, n_pass=len(pass_s), false_alarms=int((pass_s > t).sum()),
                          highest_pass=float(pass_s.max()) if len(pass_s) else None, hardest=hardest,
                          pass_at_or_above_hardest=at_or_above, far_without_hardest_pct=far_without,
                          next_hardest=next_hardest)


def _row(df: pd.DataFrame, index: Any, score: float) -> dict[str, Any]:
    row = {str(k): v for k, v in df.loc[index].items()}
    row["label"] = normalise_label(row.get("label", ""))
    row["siamese_score"] = score
    row["row_number"] = int(df.index.get_loc(index)) + 1  # 1-based, as error messages count rows
    return row


def pair_images(row: Mapping[str, Any], images_dir: Path, layout: ImageLayout, px: int = 128) -> list[tuple[str, Any]]:
    """``(caption, PIL image)`` per light: capture, golden and their amplified absolute difference.

    Small images are scaled up by an integer factor (nearest neighbour) so a few-pixel defect stays visible.
    """
    from PIL import Image, ImageChops, ImageOps

    out: list[tuple[str, Any]] = []
    for light in layout.lights:
        cap_p = layout.image_path(images_dir, str(row["input_path"]), str(row["object_name"]), light)
        gold_p = layout.image_path(images_dir, str(row["golden_path"]), str(row["object_name"]), light)
        try:
            with Image.open(cap_p) as c, Image.open(gold_p) as g:
                cap, gold = c.convert("RGB"), g.convert("RGB")
        except Exception:  # a boundary: PIL raises many types; a missing thumbnail is a note in the page
            out.append((f"{light}: image not readable ({cap_p.name})", None))
            continue
        if gold.size != cap.size:
            gold = gold.resize(cap.size)
        diff = ImageOps.autocontrast(ImageChops.difference(cap, gold).convert("L")).convert("RGB")
        factor = max(1, px // max(cap.size))
        for caption, im in ((f"{light} capture", cap), (f"{light} golden", gold), (f"{light} |difference|", diff)):
            if factor > 1:
                im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
            elif max(im.size) > px:
                im.thumbnail((px, px))
            out.append((caption, im))
    return out


# ---------------------------------------------------------------------------------------------
# Phase 1 / Phase 3 trials


@dataclass
class TrialTable:
    headers: list[str]
    rows: list[list[Any]]
    highlight: list[bool]
    best_id: str | None
    n_trials: int
    metric_name: str = "far_pct"
    hp_keys: list[str] = field(default_factory=list)


def _params(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyper-parameters: the ``params`` JSON column, or one column per parameter."""
    out: dict[str, Any] = {}
    raw = rec.get("params")
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, Mapping):
                out.update(parsed)
        except ValueError:
            pass
    for key, value in rec.items():
        for prefix in ("param.", "params.", "hp.", "config/"):
            if str(key).startswith(prefix) and value != "":
                out[str(key)[len(prefix):]] = value
    return out


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """``train.optim.lr`` → ``lr``, unless two keys would share a short name."""
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    clash = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clash else s) for k, s in short.items()}


def _hp_value(v: Any) -> Any:
    f = num(v)
    if f is None or isinstance(v, bool):
        return v
    if float(f).is_integer() and abs(f) < 1e6:
        return int(f)
    return float(f"{f:.4g}")


def trial_table(sweep_dir: Path) -> TrialTable | None:
    """``trials.csv`` of a sweep as one row per trial, ranked best first (the baseline row on top)."""
    df = csv_or_none(sweep_dir / "trials.csv")
    if df is None or "trial_id" not in df.columns:
        return None
    best = json_or_none(sweep_dir / "best_rec.json")
    best_id = str(best["best"].get("rec_id")) if isinstance(best, Mapping) and isinstance(best.get("best"), Mapping) \
        else None
    recs = df.to_dict(orient="records")
    params = [_params(r) for r in recs]
    keys = sorted({k for p in params for k in p})
    names = _short_names(keys)
    metric_name = next((r.get("metric_name") for r in recs if r.get("metric_name")), "far_pct")

    def score(r: Mapping[str, Any]) -> float:
        v = num(r.get("metric")) if r.get("metric", "") != "" else num(r.get("val_far"))
        return v if v is not None else math.inf

    order = sorted(range(len(recs)), key=lambda i: (recs[i].get("status") != "baseline", score(recs[i]), i))
    # The ranking score is val FAR itself when the objective is far_pct: one column, not two equal ones.
    far_objective = metric_name == "far_pct"
    headers = ["trial", "status", *[names[k] for k in keys],
               "best val FAR %" if far_objective else f"best val {metric_name}",
               *([] if far_objective else ["val FAR %"]), "best epoch", "epochs run", "val loss",
               "pred PASS / NO_PASS", "compute s", "note"]
    rows, highlight = [], []
    for i in order:
        r, p = recs[i], params[i]
        tid = str(r.get("trial_id", ""))
        is_best = best_id is not None and tid in (best_id, best_id.replace("trial_", ""))
        epoch = num(r.get("checkpoint_epoch"))
        counts: Any = r.get("pred_counts", "")
        try:
            c = json.loads(counts) if counts else {}
            counts = f"{c.get('PASS', 0)} / {c.get('NO_PASS', 0)}" if c else "–"
        except (ValueError, AttributeError):
            pass
        note = " ".join(x for x in (str(r.get("note", "")), str(r.get("error", ""))) if x)
        rows.append([("★ " if is_best else "") + tid, r.get("status", ""), *[_hp_value(p.get(k)) for k in keys],
                     num(r.get("metric")), *([] if far_objective else [num(r.get("val_far"))]),
                     # checkpoint files carry a zero-based epoch index; people count epochs from 1
                     None if epoch is None else int(epoch) + 1, _hp_value(r.get("epochs_run")),
                     num(r.get("val_loss")), counts, _hp_value(num(r.get("compute_s"))), note])
        highlight.append(is_best)
    n = sum(1 for r in recs if r.get("status") != "baseline")
    return TrialTable(headers, rows, highlight, best_id, n, str(metric_name), keys)


# ---------------------------------------------------------------------------------------------
# training data per kind and source


def data_added(iterations: Sequence[tuple[str, int, Any]], base_csv: Any) -> tuple[list[str], list[list[Any]]] | None:
    """Rows of each kind the base set holds and each iteration added, by source (mined / SDG).

    ``iterations``: ``(label, number, provenance_csv)`` in loop order. The base counts come from the
    first provenance file (its ``base_train`` rows), else from the base training CSV.
    """
    base: pd.Series | None = None
    added: list[tuple[str, pd.DataFrame]] = []
    for label, number, prov_path in iterations:
        prov = csv_or_none(prov_path)
        if prov is None or not {"label", "source"} <= set(prov.columns):
            continue
        prov = prov.assign(label=prov["label"].map(normalise_label))
        origin = prov["origin"] if "origin" in prov.columns else prov["source"]
        if base is None:
            base = prov.loc[origin == "base_train", "label"].value_counts()
        if "origin_iteration" in prov.columns:
            new = prov[pd.to_numeric(prov["origin_iteration"], errors="coerce") == number]
        else:
            new = prov[prov["source"].isin(["sdg", "mined"])]
        added.append((label, new))
    if base is None:
        df = csv_or_none(base_csv)
        if df is None or "label" not in df.columns:
            return None
        base = df["label"].map(normalise_label).value_counts()
    kinds = sorted(set(base.index) | {k for _, new in added for k in new["label"]}, key=lambda k: (k != PASS, k))
    headers = ["kind", "base"]
    columns: list[pd.Series] = [base]
    for label, new in added:
        src = new["origin"] if "origin" in new.columns else new["source"]
        for source, title in (("mined", "mined"), ("sdg", "SDG")):
            headers.append(f"{label} {title}")
            columns.append(new.loc[src == source, "label"].value_counts())
    headers.append("total")
    rows = []
    for kind in kinds:
        vals = [int(c.get(kind, 0)) for c in columns]
        rows.append([kind, *vals, sum(vals)])
    totals = [sum(r[i] for r in rows) for i in range(1, len(headers))]
    rows.append(["all kinds", *totals])
    return headers, rows
