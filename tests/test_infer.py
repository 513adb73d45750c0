"""``python -m raypipe.infer``: predicted labels at the delivered threshold, inputs never overwritten,
every bad input a clean one-line error naming the file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe._delivered import load_delivered, relocate
from raypipe.infer import main
from tests.export._delivered import Delivered, make_delivered


@pytest.fixture(scope="module")
def delivered(tiny_workspace_template, tmp_path_factory) -> Delivered:
    return make_delivered(tiny_workspace_template, tmp_path_factory.mktemp("infer"))


def _args(d: Delivered, out: Path, *, best_model: Path | None = None, csv: Path | None = None) -> list[str]:
    return ["--best-model", str(best_model or d.best_model_json), "--csv", str(csv or d.kpi_csv),
            "--images-dir", str(d.images_dir), "--output-dir", str(out)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_predicted_label_at_the_delivered_threshold(delivered, tmp_path, capsys):
    out = tmp_path / "scored"
    assert main(_args(delivered, out)) == 0
    df = pd.read_csv(out / "inference.csv", dtype={"label": str})
    cols = list(df.columns)
    assert cols[cols.index("siamese_score") + 1] == "predicted_label"
    expected = np.where(df["siamese_score"].to_numpy() > delivered.threshold, "NO_PASS", "PASS")  # strict ">"
    assert (df["predicted_label"].to_numpy() == expected).all()
    assert set(expected) == {"PASS", "NO_PASS"}  # the demo model separates some rows: both labels occur
    # the delivered model reproduces its own KPI numbers on the KPI rows
    ref = pd.read_csv(delivered.pytorch_inference_csv)
    assert df["siamese_score"].tolist() == ref["siamese_score"].tolist()
    result = json.loads((out / "metric_result.json").read_text())
    assert result["value"] == pytest.approx(delivered.far_pct) and result["threshold"] == delivered.threshold
    # the PASS rows predicted NO_PASS are exactly the false alarms FAR counts
    n_pass = (df["label"] == "PASS").sum()
    fa = ((df["label"] == "PASS") & (df["predicted_label"] == "NO_PASS")).sum()
    assert 100 * fa / n_pass == pytest.approx(delivered.far_pct)
    assert f"predicted_label at threshold {delivered.threshold:.6g}" in capsys.readouterr().out


def test_threshold_option_overrides_the_delivered_one(delivered, tmp_path):
    out = tmp_path / "scored"
    assert main([*_args(delivered, out), "--threshold", "2"]) == 0  # above every probability
    assert set(pd.read_csv(out / "inference.csv")["predicted_label"]) == {"PASS"}


def test_an_input_inside_the_output_dir_is_never_overwritten(delivered, tmp_path, capsys):
    out = tmp_path / "scored"
    out.mkdir()
    csv = out / "inference.csv"
    shutil.copy(delivered.kpi_csv, csv)
    before = _digest(csv)
    assert main(_args(delivered, out, csv=csv)) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (f"error: {csv}: --output-dir {out} would overwrite this input with inference.csv; "
                                   "choose another --output-dir")
    assert _digest(csv) == before and sorted(p.name for p in out.iterdir()) == ["inference.csv"]


def _bad_best_model(d: Delivered, tmp: Path, case: str) -> tuple[Path, Path]:
    """(best_model.json to pass, the file the error must name)."""
    record = json.loads(d.best_model_json.read_text())
    bm = tmp / "run_bad" / "best_model.json"
    bm.parent.mkdir()
    if case == "not json":
        bm.write_text('{"checkpoint": "x", ')
        return bm, bm
    if case == "missing file":
        return tmp / "nowhere" / "best_model.json", tmp / "nowhere" / "best_model.json"
    if case == "no checkpoint key":
        record.pop("checkpoint")
    elif case == "threshold not a number":
        record["threshold"] = "high"
    elif case == "checkpoint missing":
        record["checkpoint"] = str(tmp / "gone.pth")
        bm.write_text(json.dumps(record))
        return bm, tmp / "gone.pth"
    elif case in ("checkpoint truncated", "checkpoint empty"):
        ck = tmp / "model_epoch_001_step_00010.pth"
        data = d.checkpoint.read_bytes()
        ck.write_bytes(data[: len(data) // 2] if case == "checkpoint truncated" else b"")
        record["checkpoint"] = str(ck)
        bm.write_text(json.dumps(record))
        return bm, ck
    elif case == "spec missing":
        record["training_spec"] = str(tmp / "no_spec.yaml")
        bm.write_text(json.dumps(record))
        return bm, tmp / "no_spec.yaml"
    bm.write_text(json.dumps(record))
    return bm, bm


@pytest.mark.parametrize("case", ["not json", "missing file", "no checkpoint key", "threshold not a number",
                                  "checkpoint missing", "checkpoint truncated", "checkpoint empty", "spec missing"])
def test_bad_best_model_or_checkpoint_is_a_one_line_error(delivered, tmp_path, capsys, case):
    bm, named = _bad_best_model(delivered, tmp_path, case)
    out = tmp_path / "scored"
    assert main(_args(delivered, out, best_model=bm)) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"error: {named}") and "Traceback" not in err, err
    assert not (out / "inference.csv").exists()


def test_missing_image_names_csv_row_and_file(delivered, tmp_path, capsys):
    rows = pd.read_csv(delivered.kpi_csv, dtype=str, keep_default_na=False)
    rows.loc[2, "object_name"] = "NOPE@9"
    csv = tmp_path / "kpi_missing_image.csv"
    rows.to_csv(csv, index=False)
    assert main(_args(delivered, tmp_path / "scored", csv=csv)) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"error: {csv}: row 3, column 'input_path'") and "NOPE@9" in first
    assert not (tmp_path / "scored" / "inference.csv").exists()


def test_a_copied_run_dir_still_finds_its_checkpoint(delivered, tmp_path):
    moved = tmp_path / "elsewhere" / delivered.run_dir.name
    shutil.copytree(delivered.run_dir, moved)
    record = json.loads((moved / "best_model.json").read_text())
    gone = Path("/no/such/machine") / delivered.run_dir.name / delivered.checkpoint.relative_to(delivered.run_dir)
    (moved / "best_model.json").write_text(json.dumps({**record, "checkpoint": str(gone)}))
    model = load_delivered(moved / "best_model.json")
    assert model.checkpoint == moved / delivered.checkpoint.relative_to(delivered.run_dir)
    assert model.spec_path == moved / "best_model_inference_spec.yaml"
    assert relocate("train/x.pth", moved) == moved / "train" / "x.pth"  # relative: under the run dir
