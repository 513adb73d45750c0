"""What the splits of a workspace may share: nothing that lets training see what scores it.

- train ↔ validation, pool ↔ validation: no sample equal on the leakage key
  (``input_path, golden_path, label, object_name, boardname``) and no capture image with the same
  bytes (a copied file under another name is the same sample);
- KPI and sealed test captures: no train, validation or pool capture is one of them, by path or by
  bytes, and no sealed test capture is a KPI capture (the loop steers by the KPI set).

Pool rows are held to the same rules as training rows: mining may add any of them to training, and
a mined row that breaks a rule stops the loop at that iteration.
Goldens are references, shared legitimately between splits; only captures are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raypipe.workspace._images import ImageScan
from raypipe.workspace._paths import display
from raypipe.workspace._problems import Collector, Problem
from raypipe.workspace._validate import leakage_overlap

_KEY = "leakage key input_path, golden_path, label, object_name, boardname"
_SPLIT_NAMES = {"train": "training", "validation": "validation", "kpi": "KPI", "test": "sealed test",
                "pool": "mining pool"}


@dataclass(frozen=True)
class _Firewall:
    """Captures of ``split`` must not be captures of ``guarded``; ``why`` tells the user what to do."""

    split: str
    guarded: str
    why: str


_FIREWALLS = (
    _Firewall("train", "kpi", "the KPI set must stay unseen by training; remove the row or the copied image"),
    _Firewall("validation", "kpi", "the KPI set is never used by AutoML, and validation scores it; remove the row "
                                   "or the copied image"),
    _Firewall("pool", "kpi", "mining could add it to training, and the loop would stop at that iteration's merge; "
                             "remove the row from the pool"),
    _Firewall("train", "test", "the sealed test split must share no image with any other split; remove the row "
                               "or the copied image"),
    _Firewall("validation", "test", "the sealed test split must share no image with any other split; remove the "
                                    "row or the copied image"),
    _Firewall("pool", "test", "the sealed test split must share no image with any other split (mining could add "
                              "it to training); remove the row from the pool"),
    _Firewall("test", "kpi", "the sealed test split must share no image with the KPI set, which the loop steers "
                             "by; remove the row from one of the two"),
)


def _captures(files: pd.DataFrame, scan: ImageScan) -> pd.DataFrame:
    """Capture files of one split with their content hash (unreadable files have none)."""
    cap = files.loc[files["column"] == "input_path", ["row", "light", "path"]].copy()
    cap["sha"] = cap["path"].map(lambda p: scan.facts[p].sha256 if p in scan.facts else None)
    return cap.dropna(subset=["sha"])


def _shared(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """For each row of ``a`` with a capture whose bytes equal a capture of ``b``: its first match
    (row_a, row_b, path_a, path_b). Equal paths are equal bytes, so this covers both."""
    m = a.merge(b, on="sha", suffixes=("_a", "_b"))
    return m.sort_values(["row_a", "row_b"], kind="stable").drop_duplicates("row_a")


def _same(path_a: str, path_b: str, name_b: str, row_b: int, label: str, root: Path) -> str:
    if path_a == path_b:
        return f"capture file is a {label} capture file ({name_b} row {row_b})"
    return (f"capture image {display(path_a, root)} has the same bytes as {label} capture "
            f"{display(path_b, root)} ({name_b} row {row_b})")


def check_overlap(usable: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame], names: dict[str, str],
                  images_dir: Path, root: Path, scan: ImageScan, out: Collector) -> dict[str, int]:
    """Add an error per offending row; return the counts the summary shows (rows, not pairs)."""
    stats: dict[str, int] = {}
    caps = {w: _captures(files[w], scan) for w in files}
    for which in ("train", "pool"):
        if which not in usable or "validation" not in usable:
            continue
        pairs = leakage_overlap(usable[which], images_dir, usable["validation"], images_dir, root)
        stats[f"{which}_val_overlap"] = len({a for a, _ in pairs})
        for a, b in pairs:
            out.add(Problem(names[which], a, None, f"{which}/validation leakage: same sample as "
                                                   f"{names['validation']} row {b} ({_KEY})"
                                                   + _pool_hint(which)), "leakage")
        if which in caps and "validation" in caps:
            keyed = {a for a, _ in pairs}
            shared = _shared(caps[which], caps["validation"])
            shared = shared[~shared["row_a"].isin(keyed)]
            stats[f"{which}_val_content_overlap"] = len(shared)
            for r in shared.itertuples(index=False):
                out.add(Problem(names[which], int(r.row_a), "input_path",
                                f"{which}/validation leakage: capture image {display(r.path_a, root)} has the same "
                                f"bytes as {display(r.path_b, root)} ({names['validation']} row {int(r.row_b)})"
                                + _pool_hint(which)), "content leakage")
    for fw in _FIREWALLS:
        if fw.split not in caps or fw.guarded not in caps:
            continue
        shared = _shared(caps[fw.split], caps[fw.guarded])
        stats[f"{_short(fw.split)}_{fw.guarded}_capture_overlap"] = len(shared)
        label = _SPLIT_NAMES[fw.guarded]
        for r in shared.itertuples(index=False):
            out.add(Problem(names[fw.split], int(r.row_a), "input_path",
                            f"{_same(r.path_a, r.path_b, names[fw.guarded], int(r.row_b), label, root)}: {fw.why}"),
                    f"{fw.guarded} capture")
    return stats


def _short(which: str) -> str:
    return "val" if which == "validation" else which


def _pool_hint(which: str) -> str:
    return ("; mining could select it and the loop would stop; remove the row from the pool" if which == "pool"
            else "; remove one of the two rows")
