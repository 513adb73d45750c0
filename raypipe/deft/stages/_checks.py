"""Evidence checks shared by the stages: files exist, counts are numbers, row counts are readable.

A stage's evidence is a claim about files on disk; the commit trusts none of it. Each helper
raises :class:`~raypipe.deft.errors.EvidenceError` naming the iteration, the stage and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NoReturn

from raypipe.deft.errors import EvidenceError


def fail(label: str, stage: str, problem: str) -> NoReturn:
    raise EvidenceError(stage, label, problem)


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def existing_file(label: str, stage: str, key: str, value: Any) -> Path:
    """``value`` as an absolute path to an existing file, or an EvidenceError naming ``key``."""
    if not isinstance(value, (str, Path)) or not str(value):
        fail(label, stage, f"'{key}' must be a path, got {value!r}")
    p = Path(value)
    if not p.is_absolute():
        fail(label, stage, f"'{key}' must be an absolute path, got {value}")
    if not p.is_file():
        fail(label, stage, f"'{key}' names {p}, which does not exist")
    return p


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def csv_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(path, dtype=str, keep_default_na=False))


def readable_parquet(label: str, stage: str, key: str, path: Path) -> int:
    """Row count of a parquet file the evidence names; an unreadable file is bad evidence."""
    import pyarrow as pa

    try:
        return parquet_rows(path)
    except (OSError, pa.ArrowException) as exc:
        fail(label, stage, f"'{key}' {path} is not a readable parquet file: {exc}")


def training_spec(label: str, stage: str, value: Any) -> None:
    """``training_spec`` is an existing spec file or a non-empty inline mapping."""
    if isinstance(value, Mapping):
        if not value:
            fail(label, stage, "'training_spec' is an empty mapping")
        return
    existing_file(label, stage, "training_spec", value)


def under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def json_file(label: str, stage: str, path: Path) -> Any:
    from raypipe._io import read_json

    try:
        return read_json(path)
    except ValueError as exc:
        fail(label, stage, f"{path} is not JSON: {exc}")
