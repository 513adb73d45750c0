"""The TAO AOI workspace (SPEC §2): row contract, loading/validation, leakage, and the embedded demo.

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
from raypipe.workspace._demo import DEFAULT_LIGHTS, RARE_KINDS, DemoSettings, generate_demo, plan_counts
from raypipe.workspace._layout import CSV_FILES, IMAGE_ROOTS, SPEC_FILE
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
    "CSV_FILES",
    "DEFAULT_LIGHTS",
    "DEFECT_KINDS",
    "IMAGE_ROOTS",
    "LEAKAGE_KEY",
    "RARE_KINDS",
    "REQUIRED_COLUMNS",
    "SPEC_FILE",
    "CheckReport",
    "CsvStats",
    "DatasetStats",
    "DemoSettings",
    "DirIndex",
    "ImageLayout",
    "PathEscapeError",
    "Problem",
    "RowReport",
    "Workspace",
    "WorkspaceError",
    "capture_files",
    "capture_overlap",
    "check_workspace",
    "confine",
    "generate_demo",
    "inspect_rows",
    "is_defect",
    "iter_records",
    "leakage_overlap",
    "load_workspace",
    "normalise_label",
    "normalised_key_frame",
    "plan_counts",
    "read_rows",
    "validate_rows",
    "write_rows",
]
