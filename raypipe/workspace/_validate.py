"""Row-level validation, leakage keys and capture-file overlap, vectorised over rows.

Pools can hold 100k+ rows: paths are resolved once per *distinct* directory, every directory is
listed once (:class:`DirIndex`), and rows are matched against those listings — no per-row stat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.workspace._paths import DirIndex, display, is_within, real
from raypipe.workspace._problems import Collector, Problem
from raypipe.workspace._rows import (
    LEAKAGE_KEY,
    REQUIRED_COLUMNS,
    ImageLayout,
    normalise_label,
)

PATH_COLUMNS = ("input_path", "golden_path")
_NO_FILES = pd.DataFrame({"row": pd.Series(dtype=np.int64), "column": pd.Series(dtype=object),
                          "light": pd.Series(dtype=object), "path": pd.Series(dtype=object)})
_EXPECTED = {
    "input_path": "the capture image DIRECTORY, relative to the image root (e.g. b1/cap)",
    "golden_path": "the golden image DIRECTORY, relative to the image root (e.g. b1/golden)",
    "label": "PASS or a defect name (e.g. missing)",
    "object_name": "the component id / file stem (e.g. C1018@1)",
}


@dataclass(frozen=True)
class RowReport:
    """Errors found in one CSV's rows plus the counts a merge or pre-flight records."""

    problems: list[Problem] = field(default_factory=list)
    rows: int = 0
    files_checked: int = 0
    missing_file_count: int = 0
    escaped_path_count: int = 0
    empty_cell_count: int = 0
    # one line per image file found and confined: 1-based row, column (input_path/golden_path),
    # light and the real path (file symlinks resolved): what the image and content checks open
    files: pd.DataFrame = field(default_factory=lambda: _NO_FILES)


def _dirs(values: pd.Series, images_dir: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(codes, lexical dir per distinct value, resolved dir per distinct value)."""
    codes, uniques = pd.factorize(values, sort=False)
    lexical = [os.path.normpath(u if os.path.isabs(u) else os.path.join(images_dir, u)) for u in uniques]
    return codes, lexical, [real(p) for p in lexical]


def inspect_rows(
    df: pd.DataFrame,
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    layout: ImageLayout,
    workspace_root: str | os.PathLike[str],
    *,
    confine_to: str | os.PathLike[str] | None = None,
    limit: int = 20,
    index: DirIndex | None = None,
) -> RowReport:
    """Check required columns, empty cells, path confinement and the image file of every light.

    Image files that are symlinks are resolved and must land inside the root too: a link to a file
    elsewhere on disk would otherwise be read by training and inference alike.

    ``confine_to`` (default ``images_dir``) is the root every path must resolve inside; pass the
    workspace root for CSVs that also hold generated rows (they live under the run dir). At most ``limit`` rows are
    named per check and column; the counts are exact.
    """
    file = display(csv_path, workspace_root)
    images_dir = Path(images_dir)
    out = Collector(limit)
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for c in missing_cols:
        out.add(Problem(file, None, c, f"required column missing; expected the columns "
                                       f"{','.join(REQUIRED_COLUMNS)} first, found {','.join(map(str, df.columns))}"))
    if missing_cols:
        return RowReport(out.finish(), rows=len(df))
    index = index or DirIndex()
    n = len(df)
    rownum = np.arange(1, n + 1)
    empty = {c: (df[c].astype(str).str.strip() == "").to_numpy() for c in REQUIRED_COLUMNS}
    empty_cells = 0
    for c in REQUIRED_COLUMNS:
        empty_cells += int(empty[c].sum())
        for r in rownum[empty[c]]:
            out.add(Problem(file, int(r), c, f"empty value; expected {_EXPECTED[c]}"), "empty value")
    obj = df["object_name"].astype(str)
    bad_obj = (obj.str.contains(r"[/\\]", regex=True) | obj.isin([".", ".."])).to_numpy() & ~empty["object_name"]
    for r in rownum[bad_obj]:
        out.add(Problem(file, int(r), "object_name",
                        f"'{obj.iloc[r - 1]}' is a path; expected {_EXPECTED['object_name']}"), "object_name")
    root = Path(confine_to) if confine_to is not None else images_dir
    root_real = real(root)
    escaped = files_checked = missing = 0
    found_files: list[pd.DataFrame] = []
    for c in PATH_COLUMNS:
        values = df[c].astype(str)
        codes, lexical, resolved = _dirs(values, images_dir)
        inside = np.array([is_within(r, root_real) for r in resolved], dtype=bool)
        row_escaped = ~inside[codes] & ~empty[c]
        escaped += int(row_escaped.sum())
        for r in rownum[row_escaped]:
            raw = values.iloc[r - 1]
            what = "absolute path outside the image root" if os.path.isabs(raw) else "path escapes the image root"
            out.add(Problem(file, int(r), c, f"{what}: '{raw}' resolves to {resolved[codes[r - 1]]}, "
                                             f"outside {root_real}"), "path outside root")
        listings = [index.files(d) if ok else None for d, ok in zip(resolved, inside)]
        has_links = np.array([ok and bool(index.links(d)) for d, ok in zip(resolved, inside)], dtype=bool)
        checkable = ~empty[c] & ~empty["object_name"] & ~bad_obj & inside[codes]
        rows_to_check = np.flatnonzero(checkable)
        for light in layout.lights:
            suffix = f"_{light}{layout.image_ext}"
            names = (obj + suffix).to_numpy()
            present = np.fromiter(
                ((ls := listings[codes[i]]) is not None and names[i] in ls for i in rows_to_check),
                dtype=bool, count=len(rows_to_check))
            files_checked += len(rows_to_check)
            missing_rows = rows_to_check[~present]
            missing += len(missing_rows)
            for i in missing_rows:
                k = codes[i]
                where = display(os.path.join(lexical[k], names[i]), workspace_root)
                if listings[k] is None:
                    why = " (directory does not exist)"
                elif names[i] in index.links(resolved[k]):
                    why = " (a symlink to a file that does not exist)"
                else:
                    why = ""
                out.add(Problem(file, int(i + 1), c, f"image file missing for light {light}: {where}{why}"),
                        "image file missing")
            found = rows_to_check[present]
            paths = np.asarray(resolved, dtype=object)[codes[found]] + os.sep + names[found]
            keep = np.ones(len(found), dtype=bool)
            for j in np.flatnonzero(has_links[codes[found]]):
                i = found[j]
                if names[i] not in index.links(resolved[codes[i]]):
                    continue
                target = real(paths[j])
                paths[j] = target
                if not is_within(target, root_real):
                    keep[j] = False
                    escaped += 1
                    where = display(os.path.join(lexical[codes[i]], names[i]), workspace_root)
                    out.add(Problem(file, int(i + 1), c, f"image file {where} (light {light}) is a symlink to "
                                                         f"{target}, outside {root_real}; copy the file into the "
                                                         f"image root instead of linking to it"),
                            "symlink outside root")
            found_files.append(pd.DataFrame({"row": found[keep] + 1, "column": c, "light": light,
                                             "path": paths[keep]}))
    files = pd.concat(found_files, ignore_index=True) if found_files else _NO_FILES
    return RowReport(out.finish(), rows=n, files_checked=files_checked, missing_file_count=missing,
                     escaped_path_count=escaped, empty_cell_count=empty_cells, files=files)


def validate_rows(
    df: pd.DataFrame,
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    layout: ImageLayout,
    workspace_root: str | os.PathLike[str],
    *,
    confine_to: str | os.PathLike[str] | None = None,
) -> list[Problem]:
    """Every error in the rows of one CSV (see :func:`inspect_rows` for the counts as well)."""
    return inspect_rows(df, csv_path, images_dir, layout, workspace_root, confine_to=confine_to).problems


def normalised_key_frame(df: pd.DataFrame, images_dir: str | os.PathLike[str],
                         workspace_root: str | os.PathLike[str]) -> pd.DataFrame:
    """The LEAKAGE_KEY columns of ``df`` in one coordinate system.

    Paths become resolved paths relative to the workspace root (absolute if outside it), labels are
    normalised, names stripped — so ``b1/cap`` under ``images/`` and ``images/b1/cap`` under the
    workspace root are the same key.
    """
    ws_real = real(workspace_root)
    out = pd.DataFrame(index=df.index)
    for c in LEAKAGE_KEY:
        if c not in df.columns:
            continue
        values = df[c].astype(str)
        if c in PATH_COLUMNS:
            codes, _, resolved = _dirs(values, Path(images_dir))
            keyed = [os.path.relpath(r, ws_real) if is_within(r, ws_real) else r for r in resolved]
            out[c] = np.asarray(keyed, dtype=object)[codes] if len(values) else values
        elif c == "label":
            out[c] = values.map(normalise_label)
        else:
            out[c] = values.str.strip()
    return out


def leakage_overlap(a_df: pd.DataFrame, a_images_dir: str | os.PathLike[str], b_df: pd.DataFrame,
                    b_images_dir: str | os.PathLike[str],
                    workspace_root: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """1-based (a_row, b_row) pairs equal on the leakage-key columns present in both CSVs."""
    ka = normalised_key_frame(a_df, a_images_dir, workspace_root)
    kb = normalised_key_frame(b_df, b_images_dir, workspace_root)
    common = [c for c in LEAKAGE_KEY if c in ka.columns and c in kb.columns]
    if not common or ka.empty or kb.empty:
        return []
    ka = ka[common].reset_index(drop=True).assign(_row_a=np.arange(1, len(ka) + 1))
    kb = kb[common].reset_index(drop=True).assign(_row_b=np.arange(1, len(kb) + 1))
    merged = ka.merge(kb, on=common, how="inner")
    return sorted(zip(merged["_row_a"].astype(int).tolist(), merged["_row_b"].astype(int).tolist()))


def _capture_frame(df: pd.DataFrame, images_dir: str | os.PathLike[str], layout: ImageLayout) -> pd.DataFrame:
    """One column per light: the resolved capture file of each row ('' when a cell is empty)."""
    if df.empty or "input_path" not in df.columns or "object_name" not in df.columns:
        return pd.DataFrame({lt: pd.Series(dtype=object) for lt in layout.lights})
    paths, obj = df["input_path"].astype(str), df["object_name"].astype(str)
    codes, _, resolved = _dirs(paths, Path(images_dir))
    dirs = pd.Series(np.asarray(resolved, dtype=object)[codes], index=df.index)
    usable = (paths.str.strip() != "") & (obj.str.strip() != "")
    out = {}
    for lt in layout.lights:
        files = dirs + os.sep + obj + f"_{lt}{layout.image_ext}"
        out[lt] = files.where(usable, "")
    return pd.DataFrame(out, index=df.index)


def capture_files(df: pd.DataFrame, images_dir: str | os.PathLike[str], layout: ImageLayout) -> set[Path]:
    """Resolved capture image files of every row and light."""
    frame = _capture_frame(df, images_dir, layout)
    return {Path(p) for col in frame.columns for p in frame[col] if p}


def capture_overlap(a_df: pd.DataFrame, a_images_dir: str | os.PathLike[str], b_df: pd.DataFrame,
                    b_images_dir: str | os.PathLike[str], layout: ImageLayout) -> list[tuple[int, int]]:
    """1-based (a_row, b_row) pairs where a capture file of the a row is a capture file of the b row."""
    fa, fb = _capture_frame(a_df, a_images_dir, layout), _capture_frame(b_df, b_images_dir, layout)
    first_b: dict[str, int] = {}
    for lt in fb.columns:
        for i, p in enumerate(fb[lt].tolist(), start=1):
            if p:
                first_b.setdefault(p, i)
    pairs: set[tuple[int, int]] = set()
    for lt in fa.columns:
        for i, p in enumerate(fa[lt].tolist(), start=1):
            j = first_b.get(p) if p else None
            if j is not None:
                pairs.add((i, j))
    return sorted(pairs)
