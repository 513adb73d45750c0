"""A label map is applied to copies of the CSVs in the run dir; the workspace is never rewritten."""

from __future__ import annotations

import shutil
from pathlib import Path

from raypipe.labelled import mapped_workspace
from raypipe.workspace import CSV_FILES, load_workspace, read_rows, write_rows
from tests.adversarial._harness import snapshot


def test_mapped_copies_in_the_run_dir(tiny_workspace: Path, tmp_path: Path) -> None:
    train = tiny_workspace / CSV_FILES["train"]
    df = read_rows(train)
    df.loc[0, "label"], df.loc[1, "label"] = "OK", "n/a"
    write_rows(df, train)
    ws = load_workspace(tiny_workspace, label_map={"OK": "PASS", "n/a": "bridge"})
    before = snapshot(tiny_workspace)
    out = tmp_path / "rd" / "labels"

    mapped = mapped_workspace(ws, out)

    assert snapshot(tiny_workspace) == before
    assert mapped.train_csv == out / CSV_FILES["train"] and mapped.kpi_csv == out / CSV_FILES["kpi"]
    assert mapped.images_dir == ws.images_dir and mapped.label_map == {}
    rows = read_rows(mapped.train_csv)
    assert list(rows["label"][:2]) == ["PASS", "bridge"]
    assert len(rows) == len(df) and list(rows["input_path"]) == list(df["input_path"])
    # pointing at copies written earlier writes nothing
    shutil.rmtree(out)
    again = mapped_workspace(ws, out, write=False)
    assert again.train_csv == mapped.train_csv and not out.exists()


def test_no_label_map_means_the_workspace_itself(tiny_workspace: Path, tmp_path: Path) -> None:
    ws = load_workspace(tiny_workspace)
    assert mapped_workspace(ws, tmp_path / "labels") is ws
    assert not (tmp_path / "labels").exists()
