"""Label vocabulary: PASS synonyms, missing-value markers and the label map."""

from __future__ import annotations

import pandas as pd
import pytest

from raypipe.workspace import (
    LabelMapError,
    apply_label_map,
    label_issue,
    normalise_label_map,
)
from raypipe.workspace._labels import check_labels
from raypipe.workspace._problems import Collector


@pytest.mark.parametrize("label, issue", [
    ("PASS", None), (" pass ", None), ("missing", None), ("Foreign_Material", None), ("NG", None),
    ("PASSED", "pass_synonym"), ("ok", "pass_synonym"), (" Good", "pass_synonym"), ("no defect", "pass_synonym"),
    ("No-Defect", "pass_synonym"),
    ("nan", "missing"), ("NaN", "missing"), ("null", "missing"), ("None", "missing"), ("n/a", "missing"),
    ("#N/A", "missing"), ("<NA>", "missing"),
])
def test_label_issue(label: str, issue: str | None) -> None:
    assert label_issue(label) == issue


def test_label_map_is_case_insensitive_and_normalised() -> None:
    m = normalise_label_map({"OK": "pass", "n/a": " Missing "})
    assert m == {"ok": "PASS", "n/a": "missing"}
    labels = pd.Series(["ok", "Ok ", "N/A", "bridge", "PASS"])
    assert apply_label_map(labels, m).tolist() == ["PASS", "PASS", "missing", "bridge", "PASS"]
    assert apply_label_map(labels, {}) is labels


@pytest.mark.parametrize("bad, message", [
    ({"OK": "good"}, "label_map: 'OK' maps to 'good', which is itself ambiguous"),
    ({"OK": ""}, "label_map: 'OK' maps to ''; expected PASS or a defect name"),
    ({" ": "PASS"}, "label_map: key ' ' must be a non-empty label"),
    ({"ok": "PASS", "OK": "missing"}, "label_map: 'OK' is mapped twice (to 'PASS' and 'missing')"),
    (["OK", "PASS"], "label_map: must map a label to PASS or a defect name"),
])
def test_bad_label_maps(bad: object, message: str) -> None:
    with pytest.raises(LabelMapError) as err:
        normalise_label_map(bad)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_check_labels_names_every_row_capped() -> None:
    out = Collector(limit=2)
    check_labels(pd.Series(["PASS", "OK", "nan", "OK", "OK", "bridge"]), "t.csv", out)
    lines = [str(p) for p in out.finish()]
    ok = ("reads as PASS but would train as a defect class 'ok'; write PASS, or map it with label_map "
          "{'OK': 'PASS'}")
    assert lines[:3] == [
        f"t.csv: row 2, column 'label': label 'OK' {ok}",
        ("t.csv: row 3, column 'label': label 'nan' is a missing value and would train as a defect class 'nan'; "
         "write PASS or the defect name, remove the row, or map it with label_map"),
        f"t.csv: row 4, column 'label': label 'OK' {ok}",
    ]
    assert lines[3] == "t.csv: column 'label': ... and 1 more rows with the same problem (PASS synonym)"
