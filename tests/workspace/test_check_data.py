"""``check_workspace`` opens the data: image decoding, file symlinks, content leakage, the sealed test
split, label vocabulary, and the promise that the check never writes into the workspace."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from raypipe.workspace import (
    ALL_CSV_FILES,
    TEST_CSV,
    ImageCheckOptions,
    check_workspace,
    read_rows,
    user_cache_dir,
)

LIGHTS = ("LowAngleLight", "SolderLight")


def _rows(ws: Path, which: str) -> pd.DataFrame:
    return read_rows(ws / ALL_CSV_FILES[which])


def _capture(ws: Path, which: str, row: int, light: str = LIGHTS[0]) -> Path:
    """The capture file of a 1-based row."""
    r = _rows(ws, which).iloc[row - 1]
    return ws / "images" / r.input_path / f"{r.object_name}_{light}.png"


def _errors(ws: Path, **kw: object) -> list[str]:
    return [str(p) for p in check_workspace(ws, **kw).problems]  # type: ignore[arg-type]


def _only(problems: list[str], needle: str) -> str:
    hits = [p for p in problems if needle in p]
    assert len(hits) == 1, problems
    return hits[0]


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: file bytes hash, symlink target or 'dir' (links are not followed)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_sealed_test_split_is_optional(small_workspace: Path) -> None:
    (small_workspace / TEST_CSV).unlink()
    report = check_workspace(small_workspace)
    assert report.ok and report.workspace is not None and report.workspace.test_csv is None
    assert any("no sealed test split" in str(w) for w in report.warnings)
    with pytest.raises(FileNotFoundError, match="no test CSV"):
        report.workspace.rows("test")


def test_sealed_test_split_is_validated_like_kpi(small_workspace: Path) -> None:
    test = _rows(small_workspace, "test")
    defects = test[test["label"] != "PASS"].reset_index(drop=True)  # no PASS rows left
    defects.loc[0, "object_name"] = "nosuchpart"
    defects.to_csv(small_workspace / TEST_CSV, index=False)
    problems = _errors(small_workspace)
    assert all(p.startswith("test/testing_set.csv") for p in problems), problems
    assert any("zero PASS rows: sealed test FAR at 100% recall is undefined" in p for p in problems)
    assert any("column 'input_path': image file missing for light LowAngleLight" in p for p in problems)


def test_unreadable_images_name_csv_row_column_and_file(small_workspace: Path) -> None:
    truncated = _capture(small_workspace, "train", 2)
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty = _capture(small_workspace, "kpi", 3, LIGHTS[1])
    empty.write_bytes(b"")
    r = _rows(small_workspace, "validation").iloc[0]
    golden = small_workspace / "images" / r.golden_path / f"{r.object_name}_{LIGHTS[0]}.png"
    golden.write_text("not an image")
    problems = _errors(small_workspace)
    truncated_rel, empty_rel = truncated.relative_to(small_workspace), empty.relative_to(small_workspace)
    assert _only(problems, str(truncated_rel)).startswith(
        f"train/base/training_set.csv: row 2, column 'input_path': image file {truncated_rel} (light LowAngleLight) "
        f"is truncated (")
    assert _only(problems, str(empty_rel)).startswith(
        f"kpi/testing_set.csv: row 3, column 'input_path': image file {empty_rel} (light SolderLight) is empty "
        f"(0 bytes); replace the file or remove the row")
    assert "validation_set.csv: row 1, column 'golden_path'" in _only(problems, "not an image file Pillow")
    assert len(problems) == 3


def test_pixel_cap_rejects_oversized_images(small_workspace: Path) -> None:
    report = check_workspace(small_workspace, images=ImageCheckOptions(max_pixels=32 * 32, cache_dir=None))
    assert report.stats.unreadable_image_count == report.stats.distinct_image_files  # every 64x64 file
    assert "has 64x64 = 4,096 pixels, over the 1,024-pixel cap" in str(report.problems[0])


def test_file_symlink_outside_the_workspace_is_rejected(small_workspace: Path, tmp_path: Path) -> None:
    cap = _capture(small_workspace, "train", 4)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(cap, outside)
    cap.unlink()
    cap.symlink_to(outside)
    problems = _errors(small_workspace)
    p = _only(problems, "symlink")
    assert p.startswith(f"train/base/training_set.csv: row 4, column 'input_path': image file "
                        f"{cap.relative_to(small_workspace)} (light LowAngleLight) is a symlink to {outside}, outside ")
    assert len(problems) == 1  # not also decoded, hashed or called missing


def test_file_symlink_inside_the_image_root_is_fine(small_workspace: Path) -> None:
    cap = _capture(small_workspace, "train", 4)
    spare = cap.with_name("spare_copy.png")
    cap.rename(spare)
    cap.symlink_to(spare.name)
    assert check_workspace(small_workspace).ok


def test_dangling_symlink_is_a_missing_file(small_workspace: Path) -> None:
    cap = _capture(small_workspace, "pool", 1)
    cap.unlink()
    cap.symlink_to("gone.png")
    assert "(a symlink to a file that does not exist)" in _only(_errors(small_workspace), "pool")


@pytest.mark.parametrize("via", ["copy", "symlink", "hardlink"])
def test_kpi_capture_put_into_a_training_folder(small_workspace: Path, via: str) -> None:
    kpi_file, train_file = _capture(small_workspace, "kpi", 2), _capture(small_workspace, "train", 5)
    train_file.unlink()
    {"copy": lambda: shutil.copy(kpi_file, train_file), "symlink": lambda: train_file.symlink_to(kpi_file),
     "hardlink": lambda: os.link(kpi_file, train_file)}[via]()
    report = check_workspace(small_workspace)
    p = _only([str(x) for x in report.problems], "KPI capture")
    verb = "is a KPI capture file" if via == "symlink" else "has the same bytes as KPI capture"
    assert p.startswith("train/base/training_set.csv: row 5, column 'input_path': ")
    assert verb in p and "(kpi/testing_set.csv row 2)" in p and "the KPI set must stay unseen by training" in p
    assert report.stats.train_kpi_capture_overlap == 1


def test_train_validation_leakage_by_content(small_workspace: Path) -> None:
    shutil.copy(_capture(small_workspace, "validation", 3, LIGHTS[1]), _capture(small_workspace, "train", 6, LIGHTS[1]))
    report = check_workspace(small_workspace)
    assert report.stats.train_val_overlap == 0 and report.stats.train_val_content_overlap == 1
    p = _only([str(x) for x in report.problems], "leakage")
    assert p.startswith("train/base/training_set.csv: row 6, column 'input_path': train/validation leakage: "
                        "capture image ")
    assert "(train/base/validation_set.csv row 3)" in p


def test_pool_rows_may_not_hold_validation_or_kpi_samples(small_workspace: Path) -> None:
    pool = _rows(small_workspace, "pool")
    extra = pd.concat([_rows(small_workspace, "validation").iloc[[1]], _rows(small_workspace, "kpi").iloc[[0]]])
    pd.concat([pool, extra], ignore_index=True).to_csv(small_workspace / ALL_CSV_FILES["pool"], index=False)
    report = check_workspace(small_workspace)
    problems = [str(p) for p in report.problems]
    n = len(pool)
    assert _only(problems, "pool/validation").startswith(
        f"augmentation/mining_pool/mining_pool.csv: row {n + 1}: pool/validation leakage: same sample as "
        f"train/base/validation_set.csv row 2")
    assert _only(problems, "KPI capture").startswith(
        f"augmentation/mining_pool/mining_pool.csv: row {n + 2}, column 'input_path': capture file is a KPI capture "
        f"file (kpi/testing_set.csv row 1): mining could add it to training")
    assert (report.stats.pool_val_overlap, report.stats.pool_kpi_capture_overlap) == (1, 1)


def test_sealed_test_captures_are_firewalled(small_workspace: Path) -> None:
    shutil.copy(_capture(small_workspace, "test", 1), _capture(small_workspace, "validation", 2))
    shutil.copy(_capture(small_workspace, "kpi", 4, LIGHTS[1]), _capture(small_workspace, "test", 3, LIGHTS[1]))
    report = check_workspace(small_workspace)
    problems = [str(p) for p in report.problems]
    assert "sealed test capture" in _only(problems, "validation_set.csv: row 2, column 'input_path'")
    assert "(kpi/testing_set.csv row 4): the sealed test split must share no image with the KPI set" in _only(
        problems, "test/testing_set.csv: row 3")
    assert (report.stats.val_test_capture_overlap, report.stats.test_kpi_capture_overlap) == (1, 1)
    assert len(problems) == 2


@pytest.mark.parametrize("label", ["OK", "passed", " Good ", "No-Defect"])
def test_pass_synonyms_are_errors_unless_mapped(small_workspace: Path, label: str) -> None:
    df = _rows(small_workspace, "validation")
    df.loc[2, "label"] = label
    df.to_csv(small_workspace / ALL_CSV_FILES["validation"], index=False)
    p = _only(_errors(small_workspace), "validation_set.csv")
    assert p.startswith(f"train/base/validation_set.csv: row 3, column 'label': label '{label}' reads as PASS")
    mapped = check_workspace(small_workspace, label_map={label.strip().upper(): "PASS"})
    assert mapped.ok, mapped.summary_text
    assert mapped.stats.csvs["validation"].passes == (df["label"] == "PASS").sum() + 1


def test_invalid_label_map_is_a_problem(small_workspace: Path) -> None:
    assert _errors(small_workspace, label_map={"OK": "good"}) == [
        "label_map: 'OK' maps to 'good', which is itself ambiguous; map it to PASS or a defect name"]


def test_check_is_read_only_and_caches_outside_the_workspace(small_workspace: Path, tmp_path: Path) -> None:
    _capture(small_workspace, "train", 1).write_bytes(b"")  # a failing check must not write either
    (small_workspace / "results").mkdir()
    before = _tree(small_workspace)
    cache = user_cache_dir()
    first = check_workspace(small_workspace)
    assert not first.ok and first.stats.images_decoded > 0
    assert _tree(small_workspace) == before
    assert cache.is_dir() and not str(cache).startswith(str(small_workspace))
    second = check_workspace(small_workspace)
    assert (second.stats.images_decoded, second.stats.images_from_cache) == (0, first.stats.distinct_image_files)
    assert [str(p) for p in second.problems] == [str(p) for p in first.problems]
    assert _tree(small_workspace) == before


def test_cache_notices_a_changed_file(small_workspace: Path) -> None:
    assert check_workspace(small_workspace).ok
    cap = _capture(small_workspace, "pool", 2)
    st = cap.stat()
    data = cap.read_bytes()
    cap.write_bytes(data[: len(data) // 2])  # the mtime is restored below: size and ctime still differ
    os.utime(cap, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = check_workspace(small_workspace)
    assert report.stats.images_decoded == 1
    assert "is truncated" in _only([str(p) for p in report.problems], "mining_pool.csv: row 2")
