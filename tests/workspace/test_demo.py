"""The embedded demo workspace: TAO layout, defect mix, determinism, realism of captures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from raypipe.preflight import KPI_MIN_ROWS_PER_KIND
from raypipe.workspace import (
    CSV_FILES,
    DEFECT_KINDS,
    RARE_KINDS,
    DemoSettings,
    check_workspace,
    generate_demo,
    is_defect,
    plan_counts,
    read_rows,
)
from raypipe.workspace._demo_images import png_bytes
from raypipe.workspace._layout import ALL_CSV_FILES, TEST_CSV
from raypipe.workspace._render import rasterise, shade
from raypipe.workspace._scene import DEFECT_TYPES, build_scene, random_component, random_defect


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_has_tao_layout_and_passes_check(tiny_workspace_template: Path) -> None:
    ws = tiny_workspace_template
    report = check_workspace(ws)
    assert report.ok, report.summary_text
    spec = yaml.safe_load((ws / "specs" / "baseline_spec.yaml").read_text())
    ds = spec["dataset"]["classify"]
    assert ds["input_map"] == {"LowAngleLight": 0, "SolderLight": 1}
    assert ds["num_input"] == 2 and ds["image_width"] == 64 and ds["image_height"] == 64
    assert spec["model"]["backbone"]["type"] == "changenet_cnn"
    assert spec["train"]["classify"] == {"loss": "ce", "cls_weight": [1.0, 10.0]}
    assert ds["train_dataset"]["csv_path"].startswith("/data/datasets/")  # container-side, as TAO specs are
    assert "automl_policy" not in spec and "workflow" not in spec
    df = read_rows(ws / CSV_FILES["kpi"])
    assert list(df.columns[:4]) == ["input_path", "golden_path", "label", "object_name"]
    assert {"boardname", "project", "comp_type_1"} <= set(df.columns)
    row = df.iloc[0]
    for light in ("LowAngleLight", "SolderLight"):
        for d in (row.input_path, row.golden_path):
            img = Image.open(ws / "images" / d / f"{row.object_name}_{light}.png")
            assert img.mode == "RGB" and img.size == (64, 64)


def test_demo_every_row_has_its_own_files(tiny_workspace_template: Path) -> None:
    ws = tiny_workspace_template
    seen: dict[str, str] = {}
    for which, rel in ALL_CSV_FILES.items():
        df = read_rows(ws / rel)
        for r in df.itertuples():
            for d in (r.input_path, r.golden_path):
                key = f"{d}/{r.object_name}"
                assert key not in seen, f"{key} used by {seen.get(key)} and {which}"
                seen[key] = which


def test_sealed_test_split_has_its_own_boards_and_the_kpi_schema(tiny_workspace_template: Path) -> None:
    ws = tiny_workspace_template
    frames = {which: read_rows(ws / rel) for which, rel in ALL_CSV_FILES.items()}
    test, kpi = frames.pop("test"), frames["kpi"]
    assert TEST_CSV == "test/testing_set.csv"
    assert list(test.columns) == list(kpi.columns)
    others = set().union(*(set(df["boardname"]) for df in frames.values()))
    assert not set(test["boardname"]) & others
    # the same distribution as the KPI set: every defect kind, the same plan per label
    assert set(test["label"]) == set(kpi["label"]) == {"PASS", *DEFECT_KINDS}


def test_demo_defect_mix_at_full_scale() -> None:
    plan = plan_counts(1.0)
    common = [k for k in DEFECT_KINDS if k not in RARE_KINDS]
    assert len(RARE_KINDS) == 2 and len(common) >= 5
    assert plan["test"] == plan["kpi"]
    for split in ("validation", "kpi", "test"):
        assert all(plan[split][k] >= 4 for k in DEFECT_KINDS), (split, plan[split])
    for split in ("kpi", "test"):  # enough rows of every kind that FAR at 100 % recall is not luck
        assert all(plan[split][k] >= KPI_MIN_ROWS_PER_KIND for k in DEFECT_KINDS), (split, plan[split])
    assert all(plan["train"][k] >= 20 for k in common)
    pool = plan["pool"]
    for kind in RARE_KINDS:
        assert plan["train"][kind] == 0  # missing from train: Phase 1 cannot learn it
        assert pool[kind] >= 30  # plentiful where mining looks ...
        assert pool[kind] / sum(pool.values()) <= 0.025  # ... but a few % of a PASS-heavy pool
    assert pool["PASS"] / sum(pool.values()) >= 0.9


@pytest.mark.parametrize("scale", [0.01, 0.05, 0.2])
def test_tiny_scales_keep_every_kind_where_needed(scale: float) -> None:
    plan = plan_counts(scale)
    for split in ("validation", "kpi", "test"):
        assert all(plan[split][k] >= 1 for k in DEFECT_KINDS), (split, plan[split])
        assert plan[split]["PASS"] > 0
    assert all(plan["train"][k] >= 1 for k in DEFECT_KINDS if k not in RARE_KINDS)
    assert plan["train"]["PASS"] > 0
    for kind in RARE_KINDS:
        assert plan["train"][kind] == 0 and plan["pool"][kind] >= 1


def test_demo_generated_rows_match_plan(tiny_workspace_template: Path) -> None:
    plan = plan_counts(0.1)  # the conftest template's scale
    for split, rel in ALL_CSV_FILES.items():
        labels = read_rows(tiny_workspace_template / rel)["label"].value_counts().to_dict()
        assert labels == {k: n for k, n in plan[split].items() if n}


def test_demo_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", seed=7, scale=0.01)
    b = generate_demo(tmp_path / "b", seed=7, scale=0.01)
    c = generate_demo(tmp_path / "c", seed=8, scale=0.01)
    assert _digest(a) == _digest(b)
    assert (a / CSV_FILES["train"]).read_bytes() != (c / CSV_FILES["train"]).read_bytes()


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    serial = generate_demo(tmp_path / "s", settings=DemoSettings(seed=3, scale=0.01, workers=1))
    parallel = generate_demo(tmp_path / "p", settings=DemoSettings(seed=3, scale=0.01, workers=2))
    assert _digest(serial) == _digest(parallel)
    assert not list(parallel.glob(".demo-jobs-*"))  # worker job files cleaned up


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_demo(tmp_path / "ws", scale=0.01)
    assert (tmp_path / "ws" / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]  # no temp dir left behind


def test_three_lights_internal_parameter(tmp_path: Path) -> None:
    from raypipe.workspace._demo import demo_lights

    ws = generate_demo(tmp_path / "ws", settings=DemoSettings(seed=1, scale=0.01, lights=demo_lights(3)))
    report = check_workspace(ws)
    assert report.ok, report.summary_text
    assert report.stats.lights == ("LowAngleLight", "SolderLight", "WhiteLight")


def test_pass_captures_differ_from_golden_so_pixel_diff_is_no_detector(tiny_workspace_template: Path) -> None:
    ws = tiny_workspace_template
    df = read_rows(ws / CSV_FILES["kpi"])
    diffs: dict[bool, list[float]] = {True: [], False: []}
    for r in df.itertuples():
        a = np.asarray(Image.open(ws / "images" / r.input_path / f"{r.object_name}_SolderLight.png"), float)
        b = np.asarray(Image.open(ws / "images" / r.golden_path / f"{r.object_name}_SolderLight.png"), float)
        diffs[is_defect(r.label)].append(float(np.abs(a - b).mean()))
    assert min(diffs[False]) > 1.0  # misalignment, lighting and noise on every PASS sample
    assert max(diffs[False]) > min(diffs[True])  # the two distributions overlap


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_shows_in_every_light(kind: str) -> None:
    styles = ("low_angle", "solder")
    for ctype in DEFECT_TYPES[kind]:
        rng = np.random.default_rng(11)
        comp = random_component(ctype, rng, need_neighbour=kind == "bridge")
        defect = random_defect(kind, comp, rng)
        clean = shade(rasterise(build_scene(comp), comp.background, styles, 64, 64), styles, 64, 64)
        bad = shade(rasterise(build_scene(comp, defect), comp.background, styles, 64, 64), styles, 64, 64)
        per_light = np.abs(bad - clean).reshape(2, -1)
        changed = (per_light > 0.05).sum(axis=1)
        assert (changed >= 2).all(), (kind, ctype, changed)
        # and each light renders the change its own way
        assert not np.allclose(bad[0] - clean[0], bad[1] - clean[1], atol=0.02)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_every_draw_of_a_defect_is_visible_at_64_px(kind: str) -> None:
    """No draw may be near-invisible: one unteachable row pins FAR at 100 % recall whatever the data.

    Over 25 draws per component type, every defect changes at least 15 pixels by more than 0.1 (on
    a 0–1 scale) in some light; the sensor noise is 0.015–0.035 and misalignment moves edges only.
    """
    styles = ("low_angle", "solder")
    for ctype in DEFECT_TYPES[kind]:
        for seed in range(25):
            rng = np.random.default_rng(seed)
            comp = random_component(ctype, rng, need_neighbour=kind == "bridge")
            defect = random_defect(kind, comp, rng)
            clean = shade(rasterise(build_scene(comp), comp.background, styles, 64, 64), styles, 64, 64)
            bad = shade(rasterise(build_scene(comp, defect), comp.background, styles, 64, 64), styles, 64, 64)
            changed = int((np.abs(bad - clean).max(axis=(0, 3)) > 0.1).sum())
            assert changed >= 15, (kind, ctype, seed, changed)


def test_png_writer_round_trips() -> None:
    import io

    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    img = Image.open(io.BytesIO(png_bytes(rgb)))
    assert img.mode == "RGB" and img.size == (7, 5)
    assert (np.asarray(img) == rgb).all()
