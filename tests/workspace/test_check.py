"""``workspace check`` / ``load_workspace``: one test per kind of bad input, plus the leakage helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raypipe.workspace import (
    CSV_FILES,
    ImageLayout,
    PathEscapeError,
    WorkspaceError,
    capture_files,
    check_workspace,
    confine,
    leakage_overlap,
    load_workspace,
    normalised_key_frame,
    read_rows,
    validate_rows,
)

REPO = Path(__file__).resolve().parents[2]
LIGHTS = ("LowAngleLight", "SolderLight")


def _rows(ws: Path, which: str) -> pd.DataFrame:
    return read_rows(ws / CSV_FILES[which])


def _write(ws: Path, which: str, df: pd.DataFrame) -> None:
    df.to_csv(ws / CSV_FILES[which], index=False)


def _spec(ws: Path) -> dict:
    return yaml.safe_load((ws / "specs" / "baseline_spec.yaml").read_text())


def _write_spec(ws: Path, spec: dict) -> None:
    (ws / "specs" / "baseline_spec.yaml").write_text(yaml.safe_dump(spec))


def _errors(ws: Path) -> list[str]:
    report = check_workspace(ws)
    assert report.ok == (not report.problems)
    return [str(p) for p in report.problems]


def _only(problems: list[str], needle: str) -> str:
    hits = [p for p in problems if needle in p]
    assert len(hits) == 1, problems
    return hits[0]


def test_good_workspace_loads(small_workspace: Path) -> None:
    ws = load_workspace(small_workspace)
    assert ws.root == small_workspace.absolute()
    assert ws.test_csv == small_workspace.absolute() / "test" / "testing_set.csv"
    assert ws.csv("sealed_test") == ws.test_csv and ws.csv("kpi") == ws.kpi_csv
    assert ws.images_dir == small_workspace.absolute() / "images"
    assert ws.layout == ImageLayout(LIGHTS, ".png")
    assert ws.pool_csv is not None and ws.pool_csv.name == "mining_pool.csv"
    assert ws.spec["dataset"]["classify"]["num_input"] == 2
    assert len(ws.rows("val")) == len(_rows(small_workspace, "validation")) > 0
    report = check_workspace(small_workspace)
    assert report.ok and report.stats.missing_file_count == 0
    assert report.stats.files_checked == 4 * sum(st.rows for st in report.stats.csvs.values())
    assert report.stats.distinct_image_files == report.stats.files_checked  # every row has its own files
    assert report.stats.unreadable_image_count == 0
    assert "OK: no problems found" in report.summary_text


def test_missing_workspace_dir_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    report = check_workspace(tmp_path / "nope")
    assert report.workspace is None
    assert "workspace directory not found" in str(report.problems[0])
    with pytest.raises(WorkspaceError, match="workspace directory not found"):
        load_workspace(tmp_path / "nope")


def test_malformed_yaml_spec(small_workspace: Path) -> None:
    (small_workspace / "specs" / "baseline_spec.yaml").write_text("train:\n  num_epochs: [4\nmodel: {}\n")
    p = _only(_errors(small_workspace), "baseline_spec.yaml")
    assert p.startswith("specs/baseline_spec.yaml: malformed YAML (line")


def test_missing_spec(small_workspace: Path) -> None:
    (small_workspace / "specs" / "baseline_spec.yaml").unlink()
    assert "spec not found" in _only(_errors(small_workspace), "baseline_spec.yaml")


def test_missing_csvs_are_all_reported(small_workspace: Path) -> None:
    (small_workspace / CSV_FILES["kpi"]).unlink()
    (small_workspace / CSV_FILES["validation"]).unlink()
    problems = _errors(small_workspace)
    assert _only(problems, "kpi/testing_set.csv").endswith("CSV not found; expected the kpi rows at kpi/testing_set.csv")
    assert "CSV not found" in _only(problems, "validation_set.csv")
    with pytest.raises(WorkspaceError) as err:
        load_workspace(small_workspace)
    assert len(err.value.problems) == 2 and "2 problems" in str(err.value)


def test_missing_pool_is_only_a_warning(small_workspace: Path) -> None:
    (small_workspace / CSV_FILES["pool"]).unlink()
    report = check_workspace(small_workspace)
    assert report.ok and report.workspace is not None and report.workspace.pool_csv is None
    assert any("no mining pool" in str(w) for w in report.warnings)


def test_empty_csv_and_header_only_csv(small_workspace: Path) -> None:
    (small_workspace / CSV_FILES["train"]).write_text("")
    (small_workspace / CSV_FILES["kpi"]).write_text("input_path,golden_path,label,object_name\n")
    problems = _errors(small_workspace)
    assert "file is empty" in _only(problems, "training_set.csv")
    assert "no data rows" in _only(problems, "testing_set.csv")


def test_missing_required_column(small_workspace: Path) -> None:
    _write(small_workspace, "train", _rows(small_workspace, "train").drop(columns=["object_name"]))
    p = _only(_errors(small_workspace), "training_set.csv")
    assert p.startswith("train/base/training_set.csv: column 'object_name': required column missing")


def test_column_order_is_a_warning(small_workspace: Path) -> None:
    df = _rows(small_workspace, "train")
    _write(small_workspace, "train", df[["label", "object_name", "input_path", "golden_path", "boardname"]])
    report = check_workspace(small_workspace)
    assert report.ok, report.summary_text
    assert any("in that order" in str(w) for w in report.warnings)


def test_empty_cell_names_row_and_column(small_workspace: Path) -> None:
    df = _rows(small_workspace, "validation")
    df.loc[2, "label"] = "  "
    _write(small_workspace, "validation", df)
    p = _only(_errors(small_workspace), "validation_set.csv")
    assert p.startswith("train/base/validation_set.csv: row 3, column 'label': empty value")


@pytest.mark.parametrize(
    "input_map, needle",
    [
        (None, "input_map': missing; expected a mapping light name"),
        ("LowAngleLight", "expected a non-empty mapping"),
        ({"LowAngleLight": 0, "SolderLight": 0}, "channel indices must be 0..1"),
        ({"LowAngleLight": "a", "SolderLight": 1}, "indices integers"),
    ],
)
def test_invalid_input_map(small_workspace: Path, input_map: object, needle: str) -> None:
    spec = _spec(small_workspace)
    if input_map is None:
        del spec["dataset"]["classify"]["input_map"]
    else:
        spec["dataset"]["classify"]["input_map"] = input_map
    _write_spec(small_workspace, spec)
    report = check_workspace(small_workspace)
    assert report.workspace is None
    assert any(str(p).startswith("specs/baseline_spec.yaml: key 'dataset.classify.input_map': ") and needle in str(p)
               for p in report.problems), report.problems


def test_num_input_mismatch(small_workspace: Path) -> None:
    spec = _spec(small_workspace)
    spec["dataset"]["classify"]["num_input"] = 3
    _write_spec(small_workspace, spec)
    p = _only(_errors(small_workspace), "num_input")
    assert "is 3 but input_map names 2 lights" in p


def test_unknown_light_in_input_map_means_missing_images(small_workspace: Path) -> None:
    spec = _spec(small_workspace)
    spec["dataset"]["classify"]["input_map"] = {"LowAngleLight": 0, "UVLight": 1}
    _write_spec(small_workspace, spec)
    report = check_workspace(small_workspace)
    assert not report.ok
    assert report.stats.missing_file_count == report.stats.files_checked // 2
    listed = [str(p) for p in report.problems if "image file missing for light" in str(p)]
    assert listed and all("light UVLight" in p for p in listed)


def test_zero_kpi_defects(small_workspace: Path) -> None:
    df = _rows(small_workspace, "kpi")
    _write(small_workspace, "kpi", df[df["label"] == "PASS"])
    p = _only(_errors(small_workspace), "testing_set.csv")
    assert "zero defect rows: KPI FAR at 100% recall is undefined" in p


def test_missing_image_for_second_light_only(small_workspace: Path) -> None:
    df = _rows(small_workspace, "train")
    r = df.iloc[6]
    (small_workspace / "images" / r.input_path / f"{r.object_name}_SolderLight.png").unlink()
    problems = _errors(small_workspace)
    assert problems == [
        (f"train/base/training_set.csv: row 7, column 'input_path': image file missing for light SolderLight: "
         f"images/{r.input_path}/{r.object_name}_SolderLight.png")
    ]


def _outside_copy(ws: Path, tmp: Path, row: pd.Series) -> Path:
    """Copy a row's capture files to a directory outside the image root, so only confinement fails."""
    outside = tmp / "outside" / "cap"
    outside.mkdir(parents=True)
    for light in LIGHTS:
        name = f"{row.object_name}_{light}.png"
        shutil.copy(ws / "images" / row.input_path / name, outside / name)
    return outside


def test_dotdot_escape_is_rejected(small_workspace: Path, tmp_path: Path) -> None:
    df = _rows(small_workspace, "train")
    _outside_copy(small_workspace, tmp_path, df.iloc[1])
    df.loc[1, "input_path"] = "../../outside/cap"  # images/../../outside = tmp_path/outside
    _write(small_workspace, "train", df)
    p = _only(_errors(small_workspace), "training_set.csv")
    assert p.startswith("train/base/training_set.csv: row 2, column 'input_path': path escapes the image root: "
                        "'../../outside/cap' resolves to")


def test_absolute_path_outside_root_rejected_inside_accepted(small_workspace: Path, tmp_path: Path) -> None:
    df = _rows(small_workspace, "train")
    outside = _outside_copy(small_workspace, tmp_path, df.iloc[4])
    df.loc[4, "input_path"] = str(outside)
    df.loc[5, "golden_path"] = str(small_workspace / "images" / df.loc[5, "golden_path"])  # absolute, inside
    _write(small_workspace, "train", df)
    p = _only(_errors(small_workspace), "training_set.csv")
    assert p.startswith("train/base/training_set.csv: row 5, column 'input_path': absolute path outside the image root")


def test_symlink_out_of_root_rejected(small_workspace: Path, tmp_path: Path) -> None:
    df = _rows(small_workspace, "train")
    outside = _outside_copy(small_workspace, tmp_path, df.iloc[0])
    os.symlink(outside, small_workspace / "images" / "sneaky")
    df.loc[0, "input_path"] = "sneaky"
    _write(small_workspace, "train", df)
    assert "path escapes the image root" in _only(_errors(small_workspace), "training_set.csv")


def test_train_validation_leakage(small_workspace: Path) -> None:
    train, val = _rows(small_workspace, "train"), _rows(small_workspace, "validation")
    leaked = train.iloc[[3]].copy()
    leaked["label"] = " " + leaked["label"].str.upper() + " "  # normalisation must not hide it
    _write(small_workspace, "validation", pd.concat([val, leaked], ignore_index=True))
    report = check_workspace(small_workspace)
    assert report.stats.train_val_overlap == 1
    p = _only([str(x) for x in report.problems], "leakage")
    assert p.startswith(f"train/base/training_set.csv: row 4: train/validation leakage: same sample as "
                        f"train/base/validation_set.csv row {len(val) + 1}")


def test_leakage_key_normalises_images_prefix(small_workspace: Path) -> None:
    ws = small_workspace.absolute()
    train = _rows(ws, "train")
    combined = train.iloc[[2, 5]].copy()  # as a DEFT merge writes them: relative to the workspace root
    combined["input_path"] = "images/" + combined["input_path"]
    combined["golden_path"] = "./images/" + combined["golden_path"]
    combined["label"] = combined["label"].str.title()
    assert leakage_overlap(combined, ws, train, ws / "images", ws) == [(1, 3), (2, 6)]
    keys_a = normalised_key_frame(combined, ws, ws)
    keys_b = normalised_key_frame(train.iloc[[2, 5]], ws / "images", ws)
    assert keys_a.reset_index(drop=True).equals(keys_b.reset_index(drop=True))
    assert keys_b["input_path"].iloc[0].startswith("images/")
    # a boardname present in only one CSV is not part of the key
    assert leakage_overlap(combined.drop(columns=["boardname"]), ws, train, ws / "images", ws) == [(1, 3), (2, 6)]
    other = combined.copy()
    other["boardname"] = "PB99999"
    assert leakage_overlap(other, ws, train, ws / "images", ws) == []


def test_training_row_with_kpi_capture_file(small_workspace: Path) -> None:
    train, kpi = _rows(small_workspace, "train"), _rows(small_workspace, "kpi")
    train.loc[0, ["input_path", "object_name"]] = kpi.loc[2, ["input_path", "object_name"]].to_numpy()
    train.loc[0, "golden_path"] = kpi.loc[2, "golden_path"]
    _write(small_workspace, "train", train)
    report = check_workspace(small_workspace)
    assert report.stats.train_kpi_capture_overlap == 1
    p = _only([str(x) for x in report.problems], "KPI capture")
    assert p.startswith("train/base/training_set.csv: row 1, column 'input_path': capture file is a KPI capture "
                        "file (kpi/testing_set.csv row 3)")


def test_validation_row_with_kpi_capture_file(small_workspace: Path) -> None:
    val, kpi = _rows(small_workspace, "validation"), _rows(small_workspace, "kpi")
    _write(small_workspace, "validation", pd.concat([val, kpi.iloc[[0]]], ignore_index=True))
    assert "KPI capture" in _only(_errors(small_workspace), "validation_set.csv")


def test_labels_normalised_and_extra_columns_kept(small_workspace: Path) -> None:
    df = _rows(small_workspace, "train")
    defect = df.index[df["label"] != "PASS"][0]
    first_pass = df.index[df["label"] == "PASS"][0]
    df.loc[defect, "label"] = "Missing "
    df.loc[first_pass, "label"] = " pass"
    df["line_id"] = "L7"
    _write(small_workspace, "train", df)
    ws = load_workspace(small_workspace)
    rows = ws.rows("train")
    assert rows.loc[defect, "label"] == "missing" and rows.loc[first_pass, "label"] == "PASS"
    assert {"boardname", "project", "comp_type_1", "line_id"} <= set(rows.columns)
    assert (rows["line_id"] == "L7").all()


def test_missing_value_label_is_an_error_unless_mapped(small_workspace: Path) -> None:
    df = _rows(small_workspace, "train")
    df.loc[4, "label"] = "NaN"
    _write(small_workspace, "train", df)
    p = _only(_errors(small_workspace), "training_set.csv")
    assert p.startswith("train/base/training_set.csv: row 5, column 'label': label 'NaN' is a missing value and "
                        "would train as a defect class 'nan'")
    report = check_workspace(small_workspace, label_map={"nan": "missing"})
    assert report.ok, report.summary_text
    assert report.stats.csvs["train"].labels["missing"] == _rows(small_workspace, "train")["label"].eq("missing").sum() + 1
    assert report.workspace is not None and report.workspace.rows("train").loc[4, "label"] == "missing"


def test_legacy_kpi_images_root(small_workspace: Path) -> None:
    shutil.move(small_workspace / "images", small_workspace / "kpi" / "images")
    report = check_workspace(small_workspace)
    assert report.ok, report.summary_text
    assert report.workspace is not None and report.workspace.images_dir == small_workspace.absolute() / "kpi" / "images"
    assert "legacy" in report.summary_text


def test_missing_image_root(small_workspace: Path) -> None:
    shutil.rmtree(small_workspace / "images")
    assert "image root not found" in _only(_errors(small_workspace), "images/")


def test_all_problems_reported_together_and_capped(small_workspace: Path) -> None:
    shutil.rmtree(small_workspace / "images" / _rows(small_workspace, "pool").loc[0, "input_path"].split("/")[0])
    df = _rows(small_workspace, "kpi")
    df.loc[1, "object_name"] = ""
    _write(small_workspace, "kpi", df)
    report = check_workspace(small_workspace)
    text = [str(p) for p in report.problems]
    assert any("kpi/testing_set.csv: row 2, column 'object_name': empty value" in t for t in text)
    missing = [t for t in text if "image file missing for light" in t]
    assert missing and all("(directory does not exist)" in t for t in missing)
    assert report.stats.missing_file_count > len(missing)  # exact count, listing capped
    assert any("more rows with the same problem" in t for t in text)


def test_validate_rows_direct(small_workspace: Path) -> None:
    ws = small_workspace.absolute()
    df = _rows(ws, "kpi")
    layout = ImageLayout(LIGHTS)
    assert validate_rows(df, ws / CSV_FILES["kpi"], ws / "images", layout, ws) == []
    # generated rows in workspace-root coordinates validate when confined to the workspace
    df2 = df.assign(input_path="images/" + df["input_path"], golden_path="images/" + df["golden_path"])
    assert validate_rows(df2, ws / "x.csv", ws, layout, ws) == []
    escaped = validate_rows(df2, ws / "x.csv", ws, layout, ws, confine_to=ws / "images" / "nowhere")
    assert escaped and all(p.column in ("input_path", "golden_path") for p in escaped)


def test_capture_files_are_resolved(small_workspace: Path) -> None:
    ws = small_workspace.absolute()
    df = _rows(ws, "kpi").iloc[:3]
    files = capture_files(df, ws / "images", ImageLayout(LIGHTS))
    assert len(files) == 6 and all(f.is_absolute() and f.is_file() for f in files)
    same = capture_files(df.assign(input_path="./x/../" + df["input_path"]), ws / "images", ImageLayout(LIGHTS))
    assert same == files


def test_confine(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "b1").mkdir(parents=True)
    assert confine("b1/cap", root) == (root / "b1" / "cap").resolve()
    assert confine("b1/../b1", root) == (root / "b1").resolve()
    assert confine(root / "b1", root) == (root / "b1").resolve()
    with pytest.raises(PathEscapeError, match="outside"):
        confine("../secret", root)
    with pytest.raises(PathEscapeError, match="outside"):
        confine("/etc", root)
    with pytest.raises(PathEscapeError):
        confine(str(tmp_path / "images_evil"), root)  # a sibling sharing the prefix is still outside


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raypipe.workspace", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=False)


def test_check_cli_exit_codes(small_workspace: Path) -> None:
    good = _cli("check", str(small_workspace))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK: no problems found" in good.stdout and "kpi" in good.stdout
    (small_workspace / CSV_FILES["kpi"]).unlink()
    bad = _cli("check", str(small_workspace))
    assert bad.returncode == 1
    assert "kpi/testing_set.csv: CSV not found" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_demo_cli(tmp_path: Path, small_workspace: Path) -> None:
    made = _cli("demo", str(tmp_path / "new"), "--seed", "2", "--scale", "0.01")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "OK: no problems found" in made.stdout
    again = _cli("demo", str(small_workspace), "--scale", "0.01")
    assert again.returncode == 2 and "not empty" in again.stderr
