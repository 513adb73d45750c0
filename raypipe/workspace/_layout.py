"""Where things live in a workspace: one definition for the loader, the check and the demo.

A workspace is read-only to raypipe except ``results/`` (run dirs and the run lock live there).
"""

from __future__ import annotations

SPEC_FILE = "specs/baseline_spec.yaml"
IMAGE_ROOTS = ("images", "kpi/images")  # kpi/images: the legacy TAO layout
# The CSVs every workspace has (the pool may be absent: the loop then only synthesises).
CSV_FILES = {
    "train": "train/base/training_set.csv",
    "validation": "train/base/validation_set.csv",
    "kpi": "kpi/testing_set.csv",
    "pool": "augmentation/mining_pool/mining_pool.csv",
}
# The optional sealed test split: same schema and image root as the KPI CSV, read by nothing in a
# run except the final scoring, and firewalled like the KPI set (no capture shared with any split).
TEST_CSV = "test/testing_set.csv"
# Every CSV the workspace check reads, in report order.
ALL_CSV_FILES = {**CSV_FILES, "test": TEST_CSV}
OPTIONAL_SPLITS = frozenset({"pool", "test"})
RESULTS_DIR = "results"
