"""``python -m raypipe.infer`` on bad deliverables, bad CSVs and outputs that would clobber inputs.

The ``delivered`` template is the demo workspace with a finished run's deliverable under
``ws/results/run_delivered`` (an untrained checkpoint, ``best_model.json``, the inference spec).
Outputs go to ``out/``; every failure must leave it empty and every input untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ._harness import Case
from ._mutations import CHECKPOINT, MODEL_DIR, cell, checkpoint_of, image, keep, remove, symlink_outside, text, truncate

BM = f"{MODEL_DIR}/best_model.json"
KPI = "kpi/testing_set.csv"


def _kpi_csv_as_output(case: Path) -> None:
    shutil.copyfile(case / "ws" / KPI, case / "out" / "inference.csv")


def _csv_in(case: Path) -> tuple[str, ...]:
    return ("--best-model", f"{case}/ws/{BM}", "--csv", f"{case}/out/inference.csv", "--images-dir",
            f"{case}/ws/images", "--output-dir", f"{case}/out")


CASES = [
    Case("clean", "infer", None, 0, ("inference:",)),
    Case("kpi_without_pass_rows", "infer", keep(KPI, pass_rows=False), 0, ("inference:",)),
    # best_model.json and the files it names
    Case("best_model_truncated", "infer", truncate(BM, 0.5), 1, ("best_model.json", "not valid JSON")),
    Case("best_model_not_json", "infer", text(BM, "checkpoint = model.pth\n"), 1, ("best_model.json", "not valid JSON")),
    Case("best_model_without_threshold", "infer", text(BM, '{"checkpoint": "x.pth"}'), 1,
         ("best_model.json", "missing key 'threshold'")),
    Case("best_model_threshold_nan", "infer", text(BM, '{"checkpoint": "x.pth", "threshold": NaN}'), 1,
         ("best_model.json", "'threshold' must be a finite number")),
    Case("checkpoint_missing", "infer", remove(CHECKPOINT), 1, ("model_epoch_000_step_00000.pth", "not found")),
    Case("checkpoint_truncated", "infer", truncate(CHECKPOINT, 0.5), 1,
         ("model_epoch_000_step_00000.pth", "not a PyTorch checkpoint")),
    Case("checkpoint_empty", "infer", text(CHECKPOINT, b""), 1, ("model_epoch_000_step_00000.pth", "is empty")),
    Case("checkpoint_of_another_network", "infer", checkpoint_of("model.classify.embed_dec", 12), 1,
         ("model_epoch_000_step_00000.pth",)),
    Case("inference_spec_missing", "infer", remove(f"{MODEL_DIR}/best_model_inference_spec.yaml"), 1,
         ("best_model.json", "no best_model_inference_spec.yaml beside it")),
    # the CSV to score
    Case("label_OK", "infer", cell(KPI, 2, "label", "OK"), 1, (KPI, "row 2", "'label'", "reads as PASS")),
    Case("label_nan", "infer", cell(KPI, 5, "label", "nan"), 1, (KPI, "row 5", "missing value")),
    Case("truncated_image", "infer", image("kpi", 1, "truncate"), 1, (KPI, "row 1")),
    Case("image_symlinked_outside", "infer", symlink_outside("kpi", 3), 1, (KPI, "row 3", "symlink")),
    # outputs that would replace an input
    Case("csv_is_the_output", "infer", _kpi_csv_as_output, 1, ("inference.csv", "would overwrite this input"),
         argv=_csv_in(Path("{dir}"))),
    Case("images_dir_missing", "infer", None, 1, ("nowhere", "is not a directory"),
         args=("--images-dir", "{dir}/nowhere")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, run_case: Callable[[Case], None]) -> None:
    run_case(case)
