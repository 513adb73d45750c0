"""``python -m raypipe.automl``: a bad space is refused before Ray starts, with the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raypipe.automl.__main__ import main


def test_cli_refuses_a_bad_space_before_ray(demo_ws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    rc = main([str(demo_ws.root), str(out), "automl.search_space.train.optim.lrr={valid_min: 1, valid_max: 2}"])
    assert rc == 2
    assert "'train.optim.lrr': unknown key" in capsys.readouterr().err
    assert not out.exists()  # nothing written: refused at the boundary
