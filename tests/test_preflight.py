"""Pre-flight's execution-policy lines, the TAO backbone BLOCKER and the thin-KPI warning, in process (no Ray,
no probe)."""

from __future__ import annotations

from pathlib import Path

import yaml

from raypipe import tao_interop as ti
from raypipe.config import load_config
from raypipe.preflight import KPI_MIN_ROWS_PER_KIND, Preflight, _thin_kpi_kinds, build_preflight, container_images
from raypipe.workspace._layout import SPEC_FILE
from raypipe.workspace._scene import DEFECT_KINDS
from tests.backends.tao_fake_docker import FakeDockerClient


def _preflight(workspace: Path, *overrides: str) -> Preflight:
    cfg = load_config(None, list(overrides))
    client = FakeDockerClient(present=tuple(container_images(cfg))) if cfg.backend == "tao" else None
    return build_preflight(cfg, workspace, ray_info=None, docker_client=client, probe=lambda: 1.0)


def _lines(pf: Preflight, section: int) -> list[str]:
    return pf.sections[section - 1]


def test_an_airgapped_run_says_what_it_will_not_do(tiny_workspace, monkeypatch) -> None:
    monkeypatch.delenv("AIR_GAPPED", raising=False)
    pf = _preflight(tiny_workspace, "tracking.tracking_uri=http://mlflow.example:5000")
    host = _lines(pf, 1)
    assert any(ln.startswith("network_mode: airgap (source: default): raypipe makes no image pull, no registry "
                             "login and no network call") for ln in host), host
    # the one endpoint raypipe talks to must lie inside the air gap: said, not refused
    assert any(ln.startswith("WARN") and "http://mlflow.example:5000" in ln for ln in host), host
    assert not pf.blockers, pf.blockers


def test_a_network_enabled_run_says_where_it_came_from(tiny_workspace, monkeypatch) -> None:
    monkeypatch.delenv("AIR_GAPPED", raising=False)
    pf = _preflight(tiny_workspace, "execution_policy.network_mode=network-enabled")
    assert ("network_mode: network-enabled (source: config:execution_policy.network_mode): image pull not "
            "allowed; registry login not allowed") in _lines(pf, 1)


def test_tao_backend_blocks_a_spec_without_staged_backbone_weights(tiny_workspace, monkeypatch) -> None:
    monkeypatch.delenv("AIR_GAPPED", raising=False)
    tao = ("backend=tao", "phase2.mining_filter.embedder=pixels")
    pf = _preflight(tiny_workspace, *tao)
    (problem,) = [b for b in pf.blockers if b.startswith("backbone:")]
    assert "names no backbone weights" in problem and "random init" in problem
    assert f"BLOCKER  {problem}" in _lines(pf, 4)

    # staged the way TAO stages it: the file in <ws>/augmentation/backbone/, the spec naming its container path
    staged = tiny_workspace / ti.WORKSPACE_BACKBONE_DIR / "changenet_cnn.pth"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"weights")
    spec_file = tiny_workspace / SPEC_FILE
    spec = yaml.safe_load(spec_file.read_text())
    spec["model"]["backbone"]["pretrained_backbone_path"] = "/data/pretrained_models/changenet_cnn.pth"
    spec_file.write_text(yaml.safe_dump(spec))
    pf = _preflight(tiny_workspace, *tao)
    assert not [b for b in pf.blockers if b.startswith("backbone:")], pf.blockers
    assert "OK       backbone: /data/pretrained_models/changenet_cnn.pth is staged" in _lines(pf, 4)


def test_thin_kpi_defect_kinds_are_named_in_a_warning(tiny_workspace, monkeypatch) -> None:
    monkeypatch.delenv("AIR_GAPPED", raising=False)
    pf = _preflight(tiny_workspace)  # the tiny demo's KPI set: 2 rows of each defect kind
    (warning,) = [ln for ln in _lines(pf, 4) if ln.startswith("WARN") and "KPI set: fewer than" in ln]
    for kind in DEFECT_KINDS:
        assert f"{kind} (2 rows)" in warning, warning
    assert "PASS (" not in warning and not pf.blockers, pf.blockers


def test_a_kpi_set_with_enough_rows_of_every_kind_gets_no_warning() -> None:
    pf = Preflight()
    _thin_kpi_kinds(pf, {"PASS": 5, "short": KPI_MIN_ROWS_PER_KIND, "polarity": KPI_MIN_ROWS_PER_KIND + 4})
    assert not pf.warnings and not any(pf.sections)
    _thin_kpi_kinds(pf, {"PASS": 500, "short": KPI_MIN_ROWS_PER_KIND, "polarity": 1})
    assert pf.warnings == [pf.sections[3][0].removeprefix("WARN     ")]
    assert "polarity (1 row)" in pf.warnings[0] and "short" not in pf.warnings[0]
