"""Templates built once per session and copied per case; the table of outcomes.

Set ``RAYPIPE_ADVERSARIAL_TABLE=FILE`` to write a markdown table (case, exit code, the line that
names the problem) of every case that ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._harness import Case, argv_for, run, snapshot, verify
from ._mutations import deliver, inference_scores
from ._tools import TOOLS

_TABLE: list[tuple[str, str, int | None, str]] = []


@pytest.fixture(scope="session")
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg_cache")


@pytest.fixture(autouse=True)
def _private_image_cache(_cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workspace check caches in $XDG_CACHE_HOME/raypipe: outside every case directory, and out
    of the user's ~/.cache (subprocess cases inherit the variable)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(_cache_home))


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``workspace``: a scale-0.02 demo (every split has every defect kind) plus a sealed test split
    (half of each KPI label's rows); ``inference``: an inference CSV of the demo's KPI rows;
    ``delivered``: the workspace with a finished run's deliverable (for ``infer``)."""
    from raypipe.workspace import (
        CSV_FILES,
        TEST_CSV,
        generate_demo,
        read_rows,
        write_rows,
    )

    root = tmp_path_factory.mktemp("adversarial")
    ws = generate_demo(root / "workspace", seed=3, scale=0.02)
    kpi = read_rows(ws / CSV_FILES["kpi"])
    to_test = kpi.groupby("label", sort=False).cumcount() % 2 == 1
    write_rows(kpi[~to_test], ws / CSV_FILES["kpi"])
    write_rows(kpi[to_test], ws / TEST_CSV)
    inference = root / "inference"
    inference.mkdir()
    inference_scores(kpi).to_csv(inference / "inference.csv", index=False)
    delivered = root / "delivered"
    shutil.copytree(ws, delivered)
    deliver(delivered)
    return {"workspace": ws, "inference": inference, "delivered": delivered}


@pytest.fixture
def run_case(templates: dict[str, Path], tmp_path: Path) -> Callable[[Case], None]:
    """Copy the tool's template, apply the case's setup, snapshot, run, verify, record."""
    def _run(case: Case) -> None:
        tool = TOOLS[case.tool]
        case_dir = tmp_path / "case"
        shutil.copytree(templates[tool.template], case_dir / "ws", symlinks=True)
        (case_dir / "outside").mkdir()
        (case_dir / "out").mkdir()
        if case.setup is not None:
            case.setup(case_dir)
        before = snapshot(case_dir)
        outcome = run(tool, argv_for(tool, case, case_dir), case_dir, case.subprocess)
        line = verify(tool, case, outcome, before, snapshot(case_dir))
        _TABLE.append((case.id, tool.name + (" (subprocess)" if case.subprocess else ""), outcome.exit_code,
                       line.replace(str(case_dir), "…")))
    return _run


@pytest.fixture(scope="session", autouse=True)
def _write_table() -> Iterator[None]:
    yield
    target = os.environ.get("RAYPIPE_ADVERSARIAL_TABLE")
    if target and _TABLE:
        rows = ["| case | tool | exit | message |", "|---|---|---|---|"]
        rows += [f"| {c} | {t} | {e} | {m.replace('|', '/')} |" for c, t, e, m in _TABLE]
        Path(target).write_text("\n".join(rows) + "\n")
