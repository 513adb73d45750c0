"""Label vocabulary: which label cells would silently train as the wrong class.

Only a label equal to ``PASS`` (after ``strip().upper()``) is the good class; every other string is
a defect class. So ``OK``, ``passed`` or ``good`` would each become a defect class of their own, and
``nan``/``null`` (what spreadsheets and pandas write for a missing value) would too. Both are
errors naming the rows, unless a ``label_map`` says what they mean (``{"OK": "PASS"}``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from raypipe.workspace._problems import Collector, Problem
from raypipe.workspace._rows import PASS, normalise_label

# compared after vocabulary_key(): case-folded, runs of spaces/hyphens as one underscore
PASS_SYNONYMS = frozenset({
    "passed", "pass_ok", "ok", "okay", "good", "normal", "accept", "accepted", "no_defect", "nodefect",
    "non_defect", "not_defective", "defect_free",
})
MISSING_LABELS = frozenset({"nan", "none", "null", "na", "n/a", "#n/a", "<na>", "nil", "undefined", "missing_value"})


class LabelMapError(ValueError):
    """A label_map entry is unusable (empty key or value, a value that is itself ambiguous);
    ``detail`` is the message without the leading ``label_map:``."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"label_map: {detail}")


def vocabulary_key(label: object) -> str:
    """The form labels are compared in: ``" No-Defect "`` → ``no_defect``."""
    return re.sub(r"[\s\-]+", "_", str(label).strip().lower())


def label_issue(label: object) -> str | None:
    """``"pass_synonym"``, ``"missing"`` or None for a label that trains as what it says."""
    key = vocabulary_key(label)
    if key in PASS_SYNONYMS:
        return "pass_synonym"
    if key in MISSING_LABELS:
        return "missing"
    return None


def normalise_label_map(label_map: Mapping[str, str] | None) -> dict[str, str]:
    """``{vocabulary_key(raw): normalised target}``; raises :class:`LabelMapError` naming the entry.

    A target must be ``PASS`` or a defect name, and not itself a PASS synonym or missing marker
    (mapping ``OK`` to ``good`` would only move the problem).

    >>> normalise_label_map({"OK": "pass", "n/a": "Missing"})
    {'ok': 'PASS', 'n/a': 'missing'}
    """
    if not label_map:
        return {}
    if not isinstance(label_map, Mapping):
        raise LabelMapError(f"must map a label to PASS or a defect name, e.g. {{'OK': 'PASS'}}; "
                            f"got {label_map!r}")
    out: dict[str, str] = {}
    for raw, target in label_map.items():
        if not isinstance(raw, str) or not raw.strip():
            raise LabelMapError(f"key {raw!r} must be a non-empty label, e.g. 'OK'")
        if not isinstance(target, str) or not target.strip():
            raise LabelMapError(f"'{raw}' maps to {target!r}; expected PASS or a defect name")
        if label_issue(target) is not None:
            raise LabelMapError(f"'{raw}' maps to '{target}', which is itself ambiguous; "
                                f"map it to {PASS} or a defect name")
        key, value = vocabulary_key(raw), normalise_label(target)
        if out.get(key, value) != value:
            raise LabelMapError(f"'{raw}' is mapped twice (to '{out[key]}' and '{value}'); "
                                f"labels are compared case-insensitively")
        out[key] = value
    return out


def apply_label_map(labels: pd.Series, label_map: Mapping[str, str]) -> pd.Series:
    """``labels`` with every mapped label replaced (``label_map`` as :func:`normalise_label_map`
    returns it); unmapped labels are kept as written."""
    if not label_map:
        return labels
    keys = labels.astype(str).map(vocabulary_key)
    mapped = keys.map(label_map)
    return mapped.where(mapped.notna(), labels)


_HINTS = {
    "pass_synonym": ("PASS synonym", "reads as PASS but would train as a defect class '{norm}'; write PASS, or map it "
                                     "with label_map {{'{raw}': 'PASS'}}"),
    "missing": ("missing label", "is a missing value and would train as a defect class '{norm}'; write PASS or the "
                                 "defect name, remove the row, or map it with label_map"),
}


def check_labels(labels: pd.Series, file: str, out: Collector) -> None:
    """Add an error for every row whose label is a PASS synonym or a missing value (labels already
    mapped). Empty cells are the row check's to report."""
    text = labels.astype(str)
    issues = text.map(label_issue)
    for issue, (check, hint) in _HINTS.items():
        for r in np.flatnonzero((issues == issue).to_numpy()):
            raw = text.iloc[r]
            out.add(Problem(file, int(r) + 1, "label",
                            f"label '{raw}' " + hint.format(norm=normalise_label(raw), raw=raw.strip())), check)


def label_map_argument(text: str) -> tuple[str, str]:
    """``LABEL=TARGET`` from a command line (``--label-map OK=PASS``)."""
    raw, sep, target = text.partition("=")
    if not sep or not raw.strip() or not target.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=TARGET (e.g. OK=PASS), got {text!r}")
    return raw, target
