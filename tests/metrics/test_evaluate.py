"""The evaluator's input rules: undefined metrics refused, bad cells named, inputs never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from raypipe.metrics import (
    EvaluatorInputError,
    MetricUndefinedError,
    evaluate_inference_csv,
)


def _csv(path: Path, labels: list[str], scores: list[object]) -> Path:
    pd.DataFrame({"object_name": [f"C{i}" for i in range(len(labels))], "label": labels,
                  "siamese_score": scores}).to_csv(path, index=False)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _csv(tmp_path / "inference.csv", ["PASS", "PASS", "bridge", "PASS", "missing"], [0.1, 0.3, 0.7, 0.8, 0.9])


def test_no_pass_rows_is_undefined_and_writes_nothing(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "inference.csv", ["bridge", "missing"], [0.4, 0.9])
    with pytest.raises(MetricUndefinedError, match=r"inference.csv: FAR at 100% recall is undefined: no PASS rows "
                                                   r"among 2 rows"):
        evaluate_inference_csv(csv, tmp_path / "out" / "m.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels, scores, message", [
    (["PASS", ""], [0.1, 0.2], "row 2, column 'label': '' is empty"),
    (["PASS", "nan", "bridge"], [0.1, 0.2, 0.3], "row 2, column 'label': 'nan' is a missing value"),
    (["OK", "bridge"], [0.1, 0.2], "row 1, column 'label': 'OK' reads as PASS but is not PASS"),
    (["PASS", "bridge"], [0.1, "inf"], "row 2, column 'siamese_score': expected a finite number, got 'inf'"),
    (["PASS", "bridge"], ["", 0.2], "row 1, column 'siamese_score': expected a finite number, got ''"),
])
def test_bad_cells_are_named(tmp_path: Path, labels: list[str], scores: list[object], message: str) -> None:
    csv = _csv(tmp_path / "inference.csv", labels, scores)
    with pytest.raises(EvaluatorInputError) as err:
        evaluate_inference_csv(csv, tmp_path / "m.json")
    assert str(err.value).startswith(f"{csv}: {message}")


def test_label_map_applies(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "inference.csv", ["OK", "bridge", "ok "], [0.1, 0.5, 0.6])
    r = evaluate_inference_csv(csv, tmp_path / "m.json", label_map={"OK": "PASS"})
    assert r["diagnostics"]["n_pass"] == 2 and r["value"] == pytest.approx(50.0)


@pytest.mark.parametrize("text, message", [
    ("", "file is empty; expected a header with label and siamese_score"),
    ("object_name,label\nC1,PASS\n", ("column 'siamese_score' missing; expected the columns label and "
                                      "siamese_score (found: object_name, label)")),
    ('label,siamese_score\n"PASS,0.1\n', "not a readable CSV"),
])
def test_unreadable_csvs(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "inference.csv"
    csv.write_text(text)
    with pytest.raises(EvaluatorInputError, match="^" + str(csv) + ": " + message.replace("(", r"\(").replace(")", r"\)")):
        evaluate_inference_csv(csv, tmp_path / "m.json")


@pytest.mark.parametrize("pct", [0.0, -5.0, 100.5, float("nan")])
def test_recall_target_range(good: Path, pct: float) -> None:
    with pytest.raises(EvaluatorInputError, match=r"recall target must be in \(0, 100\] %"):
        evaluate_inference_csv(good, good.parent / "m.json", pct)


def test_outputs_never_replace_the_input(good: Path) -> None:
    before = good.read_bytes()
    link = good.parent / "sub" / "m.json"
    link.parent.mkdir()
    link.symlink_to(good)
    for out in (good, link):
        with pytest.raises(EvaluatorInputError, match="is the input CSV"):
            evaluate_inference_csv(good, out)
    renamed = good.rename(good.parent / "summary.txt")  # the input named like a side file
    with pytest.raises(EvaluatorInputError, match="summary.txt: is the input CSV"):
        evaluate_inference_csv(renamed, renamed.parent / "m.json")
    assert renamed.read_bytes() == before


def test_foreign_files_beside_the_output_are_kept_own_outputs_are_replaced(good: Path) -> None:
    out = good.parent / "metric_result.json"
    evaluate_inference_csv(good, out)  # a first evaluation writes all three
    assert json.loads(out.read_text())["name"] == "far_pct"
    evaluate_inference_csv(good, out, 95.0)  # a re-run replaces its own outputs
    assert "FAR at 95% recall" in (good.parent / "summary.txt").read_text()
    (good.parent / "summary.txt").write_text("my notes\n")
    with pytest.raises(EvaluatorInputError, match="summary.txt: exists and is not an earlier output of this "
                                                  "evaluator; refusing to overwrite it"):
        evaluate_inference_csv(good, out)
    assert (good.parent / "summary.txt").read_text() == "my notes\n"
    with pytest.raises(EvaluatorInputError, match="must not be named threshold_metrics.csv or summary.txt"):
        evaluate_inference_csv(good, good.parent / "elsewhere" / "summary.txt")
