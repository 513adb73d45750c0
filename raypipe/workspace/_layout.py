"""Where things live in a workspace (SPEC §2): one definition for the loader and the demo."""

from __future__ import annotations

SPEC_FILE = "specs/baseline_spec.yaml"
IMAGE_ROOTS = ("images", "kpi/images")  # kpi/images: the legacy TAO layout
CSV_FILES = {
    "train": "train/base/training_set.csv",
    "validation": "train/base/validation_set.csv",
    "kpi": "kpi/testing_set.csv",
    "pool": "augmentation/mining_pool/mining_pool.csv",
}
