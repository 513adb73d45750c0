"""Small file helpers shared by the DEFT stage modules (rca, routing, sdg, mining, merge).

A stage re-run after a kill starts from scratch (the loop resumes at a stage, never inside one): it
REPLACES its outputs, never appends, so every stage clears its own directory (or its own named
files) first and writes atomically.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd

from raypipe._io import atomic_write_bytes


def fresh_dir(path: Path) -> Path:
    """Empty ``path`` (a directory the calling stage owns) and return it, created."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_files(directory: Path, names: list[str]) -> None:
    """Remove this stage's own files from a directory shared with another stage."""
    for name in names:
        (Path(directory) / name).unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as parquet atomically (temp + fsync + rename); index dropped."""
    buf = io.BytesIO()
    df.reset_index(drop=True).to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def sample_key(df: pd.DataFrame) -> pd.Series:
    """One string per sample (a capture/golden pair), independent of the light."""
    return df["input_path"].astype(str) + "\x1f" + df["golden_path"].astype(str) + "\x1f" + df["object_name"].astype(str)


def rebase_rows(rows: pd.DataFrame, images_dir: Path, root: Path, csv: Path, stage: str) -> pd.DataFrame:
    """Rewrite ``input_path``/``golden_path`` from ``images_dir``-relative to ``root``-relative.

    Workspace CSVs are relative to the image root; every CSV raypipe generates is relative to the
    workspace root (one coordinate system for base, mined and synthetic rows). A directory that
    resolves outside ``root`` cannot be expressed that way and stops the stage, naming the row.
    """
    import os

    from raypipe.deft.errors import HardStop

    root = Path(os.path.realpath(root))
    out = rows.copy()
    for col in ("input_path", "golden_path"):
        mapping = {}
        for d in out[col].unique():
            real = Path(os.path.realpath(d if os.path.isabs(d) else Path(images_dir) / d))
            try:
                mapping[d] = real.relative_to(root).as_posix()
            except ValueError:
                row = int(out.index[int((out[col] == d).to_numpy().argmax())]) + 1  # index = 0-based CSV row
                raise HardStop(stage, f"{csv}: row {row}, column '{col}': '{d}' resolves to {real}, outside the "
                                      f"workspace {root}", "keep every image inside the workspace") from None
        out[col] = out[col].map(mapping)
    return out
