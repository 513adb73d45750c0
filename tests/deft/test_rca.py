"""RCA on hand-made inference CSVs with hand-computed thresholds and weaknesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raypipe.deft.errors import HardStop
from raypipe.deft.rca import run_rca
from raypipe.deft.stages import REGISTRY
from raypipe.workspace import ImageLayout

LAYOUT = ImageLayout(("LowAngleLight", "SolderLight"), ".png")


def _inference(tmp_path: Path, rows: list[tuple[str, str, float]], *, images: bool = True) -> tuple[Path, Path]:
    """Write an inference CSV (object_name, label, score) and, optionally, tiny images for every row."""
    images_dir = tmp_path / "images"
    recs = []
    for i, (name, label, score) in enumerate(rows):
        recs.append({"input_path": "board/capture", "golden_path": "board/golden", "object_name": name,
                     "label": label, "siamese_score": score, "boardname": "PB1", "comp_type_1": "resistor"})
        if images:
            for d, shade in (("capture", 40 + 10 * i), ("golden", 30)):
                for light in LAYOUT.lights:
                    p = images_dir / "board" / d / f"{name}_{light}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((12, 12, 3), shade, np.uint8)).save(p)
    csv = tmp_path / "inference.csv"
    pd.DataFrame(recs).to_csv(csv, index=False)
    return csv, images_dir


ROWS_100 = [("P1", "PASS", 0.1), ("P2", "PASS", 0.5), ("P3", "PASS", 0.7),
            ("B1", "bridge", 0.6), ("B2", "Bridge ", 0.9), ("M1", "missing", 0.8)]


def test_threshold_weakness_and_selection_at_full_recall(tmp_path):
    # Lowest defect 0.6 → recall-1 thresholds {<0.1, 0.1, 0.5}; 0.5 has the best F1 (3 TP, 1 FP: 0.857).
    csv, images = _inference(tmp_path, ROWS_100)
    out = tmp_path / "rca" / "20260101_000000"
    ev = run_rca(csv, out, layout=LAYOUT, images_dir=images, min_recall=1.0, top_k_per_label=1)

    REGISTRY["rca"].validate({}, "baseline", ev)  # what the state commit accepts
    assert ev["rca_threshold"] == pytest.approx(0.5)
    assert float((out / "threshold.txt").read_text()) == pytest.approx(0.5)
    # FN are 0 for every label at 100 % recall; bridge costs 1 of 3 PASS (0.7 ≥ 0.6), missing none
    assert ev["rca_target_defects"] == ["bridge", "missing"]
    assert Path(ev["rca_gaps_parquet"]).is_absolute()

    gaps = pd.read_parquet(ev["rca_gaps_parquet"])
    assert len(gaps) == 3 * len(LAYOUT.lights)  # one sample per label, one row per light
    per_sample = gaps.drop_duplicates("object_name").set_index("object_name")
    assert sorted(per_sample.index) == ["B1", "M1", "P3"]  # the weakest of each label
    assert per_sample.loc["P3", "weakness"] == pytest.approx(0.2)  # PASS: score − t, a false alarm
    assert per_sample.loc["B1", "weakness"] == pytest.approx(-0.1)  # NO_PASS: t − score
    assert per_sample.loc["M1", "weakness"] == pytest.approx(-0.3)
    assert bool(per_sample.loc["P3", "misclassified"]) and not per_sample.loc["B1", "misclassified"]
    assert set(gaps["label"]) == {"PASS", "bridge", "missing"}  # normalised
    b1 = gaps[gaps["object_name"] == "B1"]
    assert sorted(b1["filepath"]) == sorted(str((images / "board/capture" / f"B1_{lt}.png").resolve())
                                            for lt in LAYOUT.lights)
    assert set(b1["light"]) == set(LAYOUT.lights)
    assert (b1["boardname"] == "PB1").all() and (b1["comp_type_1"] == "resistor").all()  # preserved columns
    for col in ("filepath", "label", "siamese_score", "weakness", "input_path", "golden_path", "object_name"):
        assert col in gaps.columns

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confusion_matrix"]["tp"] == 3 and metrics["confusion_matrix"]["fp"] == 1
    assert metrics["recall"] == 1.0 and metrics["precision"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(2 * 0.75 / 1.75)
    pl = metrics["per_label"]
    assert pl["PASS"]["total"] == 3 and pl["PASS"]["n_misclassified"] == 1
    assert pl["PASS"]["max_weakness"] == pytest.approx(0.2)
    assert pl["PASS"]["median_weakness"] == pytest.approx(0.0)
    assert pl["bridge"]["total"] == 2 and pl["bridge"]["mean_weakness"] == pytest.approx((-0.1 - 0.4) / 2)
    assert pl["bridge"]["fp_rate"] == pytest.approx(1 / 3) and pl["missing"]["fp_rate"] == 0.0
    assert "P3" in (out / "weak_samples_breakdown.txt").read_text()
    thumbs = sorted(p.name for p in (out / "rca_images").iterdir())
    assert len(thumbs) == 3
    with Image.open(out / "rca_images" / thumbs[0]) as im:  # capture beside golden, one row per light
        assert im.size == (12 + 2 + 12, 12 * len(LAYOUT.lights))
    assert not (out / "unreachable_kpi.txt").exists()


def test_lower_min_recall_picks_best_f1_and_ranks_fn_first(tmp_path):
    # min_recall 0.7: t = 0.85 (TP 3, FP 0, FN 1 → F1 0.857) beats t = 0.2 (F1 0.75) and t < 0.05 (F1 0.727).
    rows = [("P1", "PASS", 0.1), ("P2", "PASS", 0.2), ("P3", "PASS", 0.85),
            ("B1", "bridge", 0.05), ("B2", "bridge", 0.9), ("B3", "bridge", 0.95), ("M1", "missing", 0.92)]
    csv, images = _inference(tmp_path, rows, images=False)
    ev = run_rca(csv, tmp_path / "rca", layout=LAYOUT, images_dir=images, min_recall=0.7, top_k_per_label=2,
                 thumbnails_per_label=0)
    assert ev["rca_threshold"] == pytest.approx(0.85)
    assert ev["rca_target_defects"] == ["bridge", "missing"]  # bridge has the FN
    gaps = pd.read_parquet(ev["rca_gaps_parquet"]).drop_duplicates("object_name").set_index("object_name")
    assert list(gaps[gaps["label"] == "bridge"].index) == ["B1", "B2"]  # weakest first
    assert gaps.loc["B1", "weakness"] == pytest.approx(0.8) and bool(gaps.loc["B1", "misclassified"])
    # a PASS exactly at t is predicted PASS (strict '>'): weakness 0, not misclassified
    assert gaps.loc["P3", "weakness"] == pytest.approx(0.0) and not gaps.loc["P3", "misclassified"]
    metrics = json.loads((tmp_path / "rca" / "metrics.json").read_text())
    assert metrics["confusion_matrix"]["fn"] == 1 and metrics["per_label"]["bridge"]["n_misclassified"] == 1


def test_targets_ordered_by_false_alarm_cost_when_no_fn(tmp_path):
    rows = [("P1", "PASS", 0.1), ("P2", "PASS", 0.4), ("P3", "PASS", 0.6),
            ("S1", "shift", 0.5), ("M1", "missing", 0.3), ("T1", "tombstone", 0.9)]
    csv, images = _inference(tmp_path, rows, images=False)
    ev = run_rca(csv, tmp_path / "rca", layout=LAYOUT, images_dir=images, thumbnails_per_label=0)
    # missing (0.3) forces 2/3 PASS, shift (0.5) 1/3, tombstone (0.9) 0
    assert ev["rca_target_defects"] == ["missing", "shift", "tombstone"]
    assert ev["rca_threshold"] == pytest.approx(0.1)


def test_unreachable_kpi_writes_file_and_hard_stops(tmp_path):
    csv, images = _inference(tmp_path, [("P1", "PASS", 0.2), ("P2", "PASS", 0.3)], images=False)
    out = tmp_path / "rca"
    with pytest.raises(HardStop) as err:
        run_rca(csv, out, layout=LAYOUT, images_dir=images)
    assert err.value.stage == "rca" and "unreachable" in err.value.reason.lower()
    assert "no defect" in (out / "unreachable_kpi.txt").read_text()
    assert not (out / "kpi_gaps.parquet").exists()


def test_bad_score_names_row_and_column(tmp_path):
    csv, images = _inference(tmp_path, ROWS_100, images=False)
    df = pd.read_csv(csv, dtype=str)
    df.loc[3, "siamese_score"] = "nan"
    df.to_csv(csv, index=False)
    with pytest.raises(HardStop, match=r"row 4, column 'siamese_score'"):
        run_rca(csv, tmp_path / "rca", layout=LAYOUT, images_dir=images)


def test_rerun_replaces_outputs(tmp_path):
    csv, images = _inference(tmp_path, ROWS_100)
    out = tmp_path / "rca"
    run_rca(csv, out, layout=LAYOUT, images_dir=images, top_k_per_label=2)
    (out / "rca_images" / "stale.png").write_bytes(b"x")
    (out / "unreachable_kpi.txt").write_text("stale")
    ev = run_rca(csv, out, layout=LAYOUT, images_dir=images, top_k_per_label=1)
    assert len(pd.read_parquet(ev["rca_gaps_parquet"])) == 3 * len(LAYOUT.lights)
    assert not (out / "rca_images" / "stale.png").exists() and not (out / "unreachable_kpi.txt").exists()
