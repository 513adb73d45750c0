"""``python -m raypipe.export --format onnx``: ONNX Runtime scores the demo's KPI rows as PyTorch does,
and the file carries the delivered threshold and everything needed to feed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from raypipe._delivered import load_delivered
from raypipe.backends.builtin._config import data_from_spec
from raypipe.backends.builtin._data import load_image_set, read_csv_rows
from raypipe.export import export_onnx, main
from tests.export._delivered import Delivered, make_delivered

# float32 ONNX Runtime vs the PyTorch pipeline (float32 network, float64 softmax): measured 4e-8 on
# the demo's KPI rows; 1e-6 leaves room for other CPUs' kernels while catching any real divergence.
SCORE_TOL = 1e-6


@pytest.fixture(scope="module")
def delivered(tiny_workspace_template, tmp_path_factory) -> Delivered:
    return make_delivered(tiny_workspace_template, tmp_path_factory.mktemp("export"))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file outside results/: (size, mtime_ns)."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] != "results":
            st = p.stat()
            out[str(rel)] = (st.st_size, st.st_mtime_ns)
    return out


def _kpi_inputs(d: Delivered) -> tuple[np.ndarray, np.ndarray]:
    """The KPI rows as the ONNX inputs: decoded by the built-in backend's loader, laid out NCHW
    with channel 3·light + rgb, raw 0–255 values."""
    rows = read_csv_rows(d.kpi_csv)
    data = load_image_set(rows, d.images_dir, data_from_spec(d.spec))
    cap, gold = data.batch(torch.arange(len(data)))
    n, lights, c, h, w = cap.shape
    return (cap.reshape(n, lights * c, h, w).numpy().astype(np.float32),
            gold.reshape(n, lights * c, h, w).numpy().astype(np.float32))


@pytest.fixture(scope="module")
def exported(delivered: Delivered) -> tuple[Path, str]:
    before = _snapshot(delivered.workspace)
    p = subprocess.run([sys.executable, "-m", "raypipe.export", "--best-model", str(delivered.best_model_json),
                        "--format", "onnx"], check=False, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert _snapshot(delivered.workspace) == before  # nothing outside the run dir was written
    return delivered.run_dir / "export" / "best_model.onnx", p.stdout


def test_cli_writes_into_the_run_dir_with_deployment_metadata(delivered, exported):
    path, stdout = exported
    assert path.is_file() and str(path) in stdout
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    best = json.loads(delivered.best_model_json.read_text())
    assert float(meta["threshold"]) == best["threshold"]  # exact: repr round-trips a float
    assert meta["decision_rule"].startswith("NO_PASS iff siamese_score > threshold")
    assert json.loads(meta["metric"])["name"] == "far_pct" and json.loads(meta["metric_value"]) == best["far_pct"]
    input_map = delivered.spec["dataset"]["classify"]["input_map"]
    assert json.loads(meta["lights"]) == sorted(input_map, key=input_map.get)
    assert (meta["image_height"], meta["image_width"]) == ("64", "64")
    norm = json.loads(meta["normalisation"])
    aug = delivered.spec["dataset"]["classify"]["augmentation_config"]
    assert norm["rgb_input_mean"] == aug["rgb_input_mean"] and norm["rgb_input_std"] == aug["rgb_input_std"]
    assert "NCHW" in meta["input_layout"]
    # what a TensorRT user needs to build an optimisation profile: names, opset, a dynamic batch axis
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"capture": ["batch", 6, 64, 64], "golden": ["batch", 6, 64, 64]}
    assert [o.name for o in model.graph.output] == ["siamese_score", "logits"]


def test_onnxruntime_scores_match_pytorch_on_the_kpi_rows(delivered, exported):
    path, _ = exported
    cap, gold = _kpi_inputs(delivered)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["siamese_score"], {"capture": cap, "golden": gold})[0]
    want = pd.read_csv(delivered.pytorch_inference_csv)["siamese_score"].to_numpy()
    assert len(got) == len(want) == len(read_csv_rows(delivered.kpi_csv)) == 40
    assert np.abs(got - want).max() <= SCORE_TOL
    one = sess.run(["siamese_score"], {"capture": cap[:1], "golden": gold[:1]})[0]  # another batch size
    assert abs(float(one[0]) - want[0]) <= SCORE_TOL
    # the same PASS / NO_PASS decisions, except rows that sit within the tolerance of the threshold
    t = delivered.threshold
    clear = np.abs(want - t) > SCORE_TOL
    assert clear.sum() >= 30
    assert ((got > t) == (want > t))[clear].all()


def test_opset_18_goes_through_the_newer_exporter(delivered, tmp_path):
    model = load_delivered(delivered.best_model_json)
    path, diff = export_onnx(model, tmp_path / "m18.onnx", opset=18)
    assert diff is not None and diff <= SCORE_TOL
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    cap, gold = _kpi_inputs(delivered)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["siamese_score"], {"capture": cap[:5], "golden": gold[:5]})[0]
    want = pd.read_csv(delivered.pytorch_inference_csv)["siamese_score"].to_numpy()[:5]
    assert np.abs(got - want).max() <= SCORE_TOL


def test_bad_inputs_fail_cleanly_naming_the_file(delivered, tmp_path, capsys):
    bad = tmp_path / "best_model.json"
    bad.write_text("{\"checkpoint\": 3")
    assert main(["--best-model", str(bad), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not valid JSON") and "Traceback" not in err

    # a checkpoint from another backend (no architecture record) is named, with what to do instead
    foreign = tmp_path / "tao_model.pth"
    torch.save({"state_dict": {}}, foreign)
    record = json.loads(delivered.best_model_json.read_text())
    (tmp_path / "run").mkdir()
    bm = tmp_path / "run" / "best_model.json"
    bm.write_text(json.dumps({**record, "checkpoint": str(foreign)}))
    assert main(["--best-model", str(bm), "--format", "onnx", "--output", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {foreign}: no 'architecture' record") and "TAO" in err
    assert not (tmp_path / "x.onnx").exists()
