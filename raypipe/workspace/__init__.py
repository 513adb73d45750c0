"""The TAO AOI workspace: row contract, loading/validation (images, labels, leakage), and the embedded demo.

    >>> from raypipe.workspace import check_workspace, load_workspace, generate_demo
    >>> ws = load_workspace(generate_demo("/tmp/demo_ws", seed=0, scale=0.05))   # doctest: +SKIP
    >>> ws.rows("kpi").label.value_counts()                                       # doctest: +SKIP
"""

from __future__ import annotations

from raypipe.workspace._check import (
    CheckReport,
    CsvStats,
    DatasetStats,
    Workspace,
    check_workspace,
    load_workspace,
)
from raypipe.workspace._demo import (
    DEFAULT_LIGHTS,
    RARE_KINDS,
    DemoSettings,
    generate_demo,
    plan_counts,
)
from raypipe.workspace._images import (
    DEFAULT_MAX_PIXELS,
    ImageCheckOptions,
    ImageFacts,
    ImageScan,
    inspect_image,
    scan_images,
    user_cache_dir,
)
from raypipe.workspace._labels import (
    MISSING_LABELS,
    PASS_SYNONYMS,
    LabelMapError,
    apply_label_map,
    label_issue,
    normalise_label_map,
)
from raypipe.workspace._layout import (
    ALL_CSV_FILES,
    CSV_FILES,
    IMAGE_ROOTS,
    SPEC_FILE,
    TEST_CSV,
)
from raypipe.workspace._paths import DirIndex, PathEscapeError, confine
from raypipe.workspace._problems import Problem, WorkspaceError
from raypipe.workspace._rows import (
    LEAKAGE_KEY,
    REQUIRED_COLUMNS,
    ImageLayout,
    is_defect,
    iter_records,
    normalise_label,
    read_rows,
    write_rows,
)
from raypipe.workspace._scene import DEFECT_KINDS
from raypipe.workspace._validate import (
    RowReport,
    capture_files,
    capture_overlap,
    inspect_rows,
    leakage_overlap,
    normalised_key_frame,
    validate_rows,
)

__all__ = [
    "ALL_CSV_FILES",
    "CSV_FILES",
    "DEFAULT_LIGHTS",
    "DEFAULT_MAX_PIXELS",
    "DEFECT_KINDS",
    "IMAGE_ROOTS",
    "LEAKAGE_KEY",
    "MISSING_LABELS",
    "PASS_SYNONYMS",
    "RARE_KINDS",
    "REQUIRED_COLUMNS",
    "SPEC_FILE",
    "TEST_CSV",
    "CheckReport",
    "CsvStats",
    "DatasetStats",
    "DemoSettings",
    "DirIndex",
    "ImageCheckOptions",
    "ImageFacts",
    "ImageLayout",
    "ImageScan",
    "LabelMapError",
    "PathEscapeError",
    "Problem",
    "RowReport",
    "Workspace",
    "WorkspaceError",
    "apply_label_map",
    "capture_files",
    "capture_overlap",
    "check_workspace",
    "confine",
    "generate_demo",
    "inspect_image",
    "inspect_rows",
    "is_defect",
    "iter_records",
    "label_issue",
    "leakage_overlap",
    "load_workspace",
    "normalise_label",
    "normalise_label_map",
    "normalised_key_frame",
    "plan_counts",
    "read_rows",
    "scan_images",
    "user_cache_dir",
    "validate_rows",
    "write_rows",
]
