"""The workspace a run trains on when the config maps labels: mapped copies in the run dir.

Every stage reads CSVs by path and takes a label as written (``PASS`` is the good class, anything
else a defect class), so a ``label_map`` of ``{OK: PASS}`` must be applied to the files the stages
read. The workspace is the user's and is never rewritten: the mapped CSVs are written into
``RD/labels/`` with the workspace's relative layout, and the run's :class:`Workspace` points at them
(the images stay where they are: rows resolve against the image root, not the CSV's folder).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from raypipe.workspace import Workspace, apply_label_map, read_rows, write_rows

_SPLITS = ("train", "validation", "kpi", "pool", "test")


def mapped_workspace(ws: Workspace, out_dir: Path, *, write: bool = True) -> Workspace:
    """``ws`` itself when it maps no label; otherwise a copy whose CSVs are the mapped ones under
    ``out_dir``. ``write``: write them (atomically; rewriting is idempotent, so a resumed run may do
    it again); False: only point at copies written earlier."""
    if not ws.label_map:
        return ws
    paths: dict[str, Path | None] = {}
    for which in _SPLITS:
        src = ws.csv(which)
        if src is None:
            paths[which] = None
            continue
        dst = Path(out_dir) / Path(src).resolve().relative_to(Path(ws.root).resolve())
        if write:
            df = read_rows(src)
            df["label"] = apply_label_map(df["label"], ws.label_map)
            write_rows(df, dst)
        paths[which] = dst
    train, val, kpi = paths["train"], paths["validation"], paths["kpi"]
    assert train is not None and val is not None and kpi is not None  # a loaded workspace has all three
    # The copies are mapped already: an empty map keeps a swap ({a: b, b: a}) from being applied twice.
    return replace(ws, train_csv=train, val_csv=val, kpi_csv=kpi, pool_csv=paths["pool"], test_csv=paths["test"],
                   label_map={})


__all__ = ["mapped_workspace"]
