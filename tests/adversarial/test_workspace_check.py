"""``python -m raypipe.workspace check`` and ``load_workspace`` on bad workspaces."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raypipe.workspace import TEST_CSV

from ._harness import Case
from ._mutations import (
    append_row,
    both,
    capture_from,
    cell,
    drop_column,
    image,
    keep,
    remove_image,
    symlink_outside,
    text,
)

TRAIN, VAL, KPI = "train/base/training_set.csv", "train/base/validation_set.csv", "kpi/testing_set.csv"
POOL, TEST = "augmentation/mining_pool/mining_pool.csv", TEST_CSV
IN, GOLD, LABEL = "column 'input_path'", "column 'golden_path'", "column 'label'"
OK = "OK: no problems found"

CASES = [
    # controls: a clean workspace, and a PASS synonym the user mapped
    Case("clean", "check", None, 0, (OK,), subprocess=True),
    Case("label_ok_mapped", "check", cell("train", 3, "label", "OK"), 0, (OK,), args=("--label-map", "OK=PASS")),
    # images that exist but cannot be used
    Case("truncated_capture", "check", image("train", 3, "truncate"), 1, (TRAIN, "row 3", IN, "is truncated"),
         subprocess=True),
    Case("zero_byte_golden", "check", image("validation", 2, "empty", "golden_path"), 1,
         (VAL, "row 2", GOLD, "is empty (0 bytes)")),
    Case("text_file_as_image", "check", image("pool", 4, "text", light=1), 1,
         (POOL, "row 4", IN, "(light SolderLight) is not an image file")),
    Case("decompression_bomb", "check", image("kpi", 1, "bomb"), 1, (KPI, "row 1", IN, "decompression bomb")),
    Case("oversized_image", "check", image("test", 2, "oversized"), 1,
         (TEST, "row 2", IN, "over the 67,108,864-pixel cap")),
    # files that live elsewhere
    Case("capture_symlinked_outside", "check", symlink_outside("train", 5), 1,
         (TRAIN, "row 5", IN, "is a symlink to", "outside")),
    Case("golden_symlinked_outside", "check", symlink_outside("kpi", 2, "golden_path", light=1), 1,
         (KPI, "row 2", GOLD, "(light SolderLight) is a symlink")),
    Case("test_path_escapes", "check", cell("test", 1, "input_path", "../../outside"), 1,
         (TEST, "row 1", IN, "path escapes the image root")),
    # the KPI and sealed test firewalls, by path and by content
    Case("kpi_bytes_in_training_folder", "check", capture_from("kpi", 2, "train", 4), 1,
         (TRAIN, "row 4", IN, "same bytes as KPI capture", f"{KPI} row 2")),
    Case("kpi_symlinked_into_training", "check", capture_from("kpi", 3, "train", 6, via="symlink"), 1,
         (TRAIN, "row 6", IN, f"is a KPI capture file ({KPI} row 3)"), subprocess=True),
    Case("kpi_bytes_in_validation", "check", capture_from("kpi", 1, "validation", 2), 1,
         (VAL, "row 2", "same bytes as KPI capture", "never used by AutoML")),
    Case("kpi_bytes_in_pool", "check", capture_from("kpi", 4, "pool", 3), 1,
         (POOL, "row 3", "same bytes as KPI capture", "mining could add it to training")),
    Case("test_bytes_in_training", "check", capture_from("test", 1, "train", 2), 1,
         (TRAIN, "row 2", "same bytes as sealed test capture", f"{TEST} row 1")),
    Case("test_shares_kpi_capture", "check", capture_from("kpi", 5, "test", 3), 1,
         (TEST, "row 3", "must share no image with the KPI set")),
    # train/validation leakage
    Case("train_val_same_bytes", "check", capture_from("validation", 3, "train", 7), 1,
         (TRAIN, "row 7", "train/validation leakage: capture image", f"{VAL} row 3")),
    Case("train_row_in_validation", "check", append_row("train", 2, "validation"), 1,
         (TRAIN, "row 2", "train/validation leakage: same sample as", VAL)),
    Case("validation_row_in_pool", "check", append_row("validation", 1, "pool"), 1,
         (POOL, "pool/validation leakage", f"{VAL} row 1", "remove the row from the pool")),
    # labels that would train as the wrong class
    Case("label_OK", "check", cell("train", 3, "label", "OK"), 1, (TRAIN, "row 3", LABEL, "reads as PASS")),
    Case("label_PASSED", "check", cell("kpi", 2, "label", "PASSED"), 1, (KPI, "row 2", LABEL, "'PASSED' reads as PASS")),
    Case("label_good", "check", cell("validation", 4, "label", "good"), 1, (VAL, "row 4", LABEL, "reads as PASS")),
    Case("label_nan", "check", cell("train", 5, "label", "nan"), 1, (TRAIN, "row 5", LABEL, "is a missing value")),
    Case("label_null", "check", cell("pool", 6, "label", "null"), 1, (POOL, "row 6", LABEL, "is a missing value")),
    Case("label_None", "check", cell("test", 1, "label", "None"), 1, (TEST, "row 1", LABEL, "is a missing value")),
    Case("label_n/a", "check", cell("kpi", 3, "label", "n/a"), 1, (KPI, "row 3", LABEL, "is a missing value")),
    Case("bad_label_map", "check", None, 1, ("label_map", "'OK' maps to 'good'"), args=("--label-map", "OK=good")),
    # the sealed test split is validated like the KPI set
    Case("test_missing_column", "check", drop_column("test", "object_name"), 1,
         (TEST, "column 'object_name'", "required column missing")),
    Case("test_without_defects", "check", keep("test", pass_rows=True), 1,
         (TEST, "zero defect rows: sealed test FAR at 100% recall is undefined")),
    Case("test_missing_image", "check", remove_image("test", 2, "golden_path", light=1), 1,
         (TEST, "row 2", GOLD, "image file missing for light SolderLight")),
    Case("test_csv_empty", "check", text(TEST, ""), 1, (TEST, "file is empty")),
    Case("train_without_label_column", "check", drop_column("train", "label"), 1,
         (TRAIN, LABEL, "required column missing")),
    Case("several_problems_all_listed", "check",
         both(image("train", 2, "empty"), cell("kpi", 1, "label", "OK"), symlink_outside("pool", 1)), 1,
         ("3 problems:",)),
    Case("max_pixels_not_a_number", "check", None, 2, ("--max-pixels", "expected a positive integer"),
         args=("--max-pixels", "lots"), subprocess=True),
    # the Python API behind the CLI raises WorkspaceError listing the problems
    Case("api_bomb", "load_workspace", image("train", 1, "bomb"), 1, (TRAIN, "row 1", "decompression bomb")),
    Case("api_symlink_outside", "load_workspace", symlink_outside("validation", 1), 1,
         (VAL, "row 1", "is a symlink to")),
    Case("api_label_mapped", "load_workspace", cell("train", 1, "label", "passed"), 0, ("loaded",),
         args=("PASSED=PASS",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, run_case: Callable[[Case], None]) -> None:
    run_case(case)
