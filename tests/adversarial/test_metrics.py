"""``python -m raypipe.metrics`` and ``evaluate_inference_csv`` on bad inference CSVs and output paths.

The case's ``ws/inference.csv`` holds the demo's KPI rows with scores; outputs go to ``out/``.
Every failure must leave ``out/`` empty and the input untouched (the harness checks every file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ._harness import Case
from ._mutations import INFERENCE, cell, drop_column, keep, text

CSV, SCORE, LABEL = "inference.csv", "column 'siamese_score'", "column 'label'"


def _link_output_to_input(case: Path) -> None:
    (case / "out" / "metric_result.json").symlink_to(case / "ws" / INFERENCE)


def _output_dir_is_a_directory(case: Path) -> None:
    (case / "out" / "metric_result.json").mkdir()


def _input_beside_output_as_side_file(case: Path) -> None:
    (case / "ws" / INFERENCE).rename(case / "out" / "threshold_metrics.csv")


def _foreign_summary(case: Path) -> None:
    (case / "out" / "summary.txt").write_text("notes the user keeps beside their results\n")


def _inputs(csv: str = "{dir}/ws/inference.csv", out: str = "{dir}/out/metric_result.json") -> tuple[str, ...]:
    return ("--inference-csv", csv, "--output-json", out)


CASES = [
    Case("clean", "metrics", None, 0, ("far_pct=",), subprocess=True),
    Case("label_ok_mapped", "metrics", cell(INFERENCE, 2, "label", "OK"), 0, ("far_pct=",),
         args=("--label-map", "OK=PASS")),
    # undefined metrics
    Case("no_pass_rows", "metrics", keep(INFERENCE, pass_rows=False), 1, (CSV, "undefined: no PASS rows"),
         subprocess=True),
    Case("no_defect_rows", "metrics", keep(INFERENCE, pass_rows=True), 1, (CSV, "undefined: no defect (NO_PASS) rows")),
    Case("header_only", "metrics", text(INFERENCE, "label,siamese_score\n"), 1, (CSV, "undefined: no data rows (header only)")),
    # bad CSVs: the file, row and column named
    Case("no_score_column", "metrics", drop_column(INFERENCE, "siamese_score"), 1,
         (CSV, "column 'siamese_score' missing")),
    Case("no_label_column", "metrics", drop_column(INFERENCE, "label"), 1, (CSV, "column 'label' missing")),
    Case("score_not_a_number", "metrics", cell(INFERENCE, 4, "siamese_score", "high"), 1,
         (CSV, "row 4", SCORE, "'high'")),
    Case("score_nan", "metrics", cell(INFERENCE, 2, "siamese_score", "NaN"), 1, (CSV, "row 2", SCORE)),
    Case("score_inf", "metrics", cell(INFERENCE, 5, "siamese_score", "inf"), 1, (CSV, "row 5", SCORE, "finite")),
    Case("score_empty", "metrics", cell(INFERENCE, 3, "siamese_score", ""), 1, (CSV, "row 3", SCORE)),
    Case("label_empty", "metrics", cell(INFERENCE, 6, "label", " "), 1, (CSV, "row 6", LABEL, "is empty")),
    Case("label_nan", "metrics", cell(INFERENCE, 1, "label", "nan"), 1, (CSV, "row 1", LABEL, "missing value")),
    Case("label_OK", "metrics", cell(INFERENCE, 2, "label", "OK"), 1, (CSV, "row 2", LABEL, "reads as PASS")),
    Case("zero_byte_csv", "metrics", text(INFERENCE, ""), 1, (CSV, "file is empty"), subprocess=True),
    Case("binary_csv", "metrics", text(INFERENCE, bytes(range(256)) * 8), 1, (CSV, "not a readable CSV")),
    Case("unbalanced_quote", "metrics", text(INFERENCE, 'label,siamese_score\n"PASS,0.1\nbridge,0.9\n'), 1,
         (CSV, "not a readable CSV")),
    # outputs that would destroy an input or a file the evaluator did not write
    Case("output_is_the_input", "metrics", None, 1, (CSV, "is the input CSV"),
         argv=_inputs(out="{dir}/ws/inference.csv"), subprocess=True),
    Case("output_symlinked_to_input", "metrics", _link_output_to_input, 1, ("metric_result.json", "is the input CSV")),
    Case("input_named_like_a_side_file", "metrics", _input_beside_output_as_side_file, 1,
         ("threshold_metrics.csv", "is the input CSV"), argv=_inputs(csv="{dir}/out/threshold_metrics.csv")),
    Case("foreign_summary_beside_output", "metrics", _foreign_summary, 1,
         ("summary.txt", "not an earlier output of this evaluator")),
    Case("output_named_summary", "metrics", None, 1, ("must not be named threshold_metrics.csv or summary.txt",),
         argv=_inputs(out="{dir}/out/summary.txt")),
    Case("output_is_a_directory", "metrics", _output_dir_is_a_directory, 1, ("metric_result.json", "is a directory")),
    # paths and options
    Case("input_not_found", "metrics", None, 1, ("nope.csv", "inference CSV not found"),
         argv=_inputs(csv="{dir}/ws/nope.csv")),
    Case("input_is_a_directory", "metrics", None, 1, ("ws", "is not a file"), argv=_inputs(csv="{dir}/ws")),
    Case("recall_target_150", "metrics", None, 2, ("--recall-target-pct", "(0, 100]"),
         args=("--recall-target-pct", "150"), subprocess=True),
    Case("label_map_garbage", "metrics", None, 2, ("--label-map", "LABEL=TARGET"), args=("--label-map", "OK")),
    # the Python API behind the CLI raises only its documented errors
    Case("api_no_pass_rows", "evaluate", keep(INFERENCE, pass_rows=False), 1, (CSV, "no PASS rows")),
    Case("api_score_not_a_number", "evaluate", cell(INFERENCE, 7, "siamese_score", "?"), 1, (CSV, "row 7", SCORE)),
    Case("api_output_is_the_input", "evaluate", _link_output_to_input, 1, ("is the input CSV",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, run_case: Callable[[Case], None]) -> None:
    run_case(case)
