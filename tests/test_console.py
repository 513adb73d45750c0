"""What a user reads on the console: one line format, the pre-flight for a terminal, the live DEFT
lines followed from the run dir, and the closing summary (verdict first)."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from raypipe import console as console_module
from raypipe._io import atomic_write_json
from raypipe.console import (
    Console,
    fmt_counts,
    fmt_duration,
    fmt_eta,
    follow_deft,
    install_logging,
    phase_title,
    verdict_text,
)
from raypipe.metrics import MetricContract
from raypipe.preflight import SECTION_TITLES, Preflight
from raypipe.rundir import RunDir

LINE = re.compile(r"^\d\d:\d\d:\d\d  (raypipe|Phase \d) {3}\S")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain() -> tuple[Console, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Console(out=out, err=err), out, err


def test_phase_names_are_the_users() -> None:
    assert phase_title("phase1") == "Phase 1" and phase_title("final_automl") == "Phase 3"
    assert phase_title("phase3") == "Phase 3" and phase_title("phase1_noise_guard") == "Phase 1 (noise-guard re-run)"
    assert phase_title("something_else") == "something_else"


@pytest.mark.parametrize(("seconds", "text"), [(None, "?"), (4.4, "4 s"), (250, "4:10"), (3723, "1:02:03")])
def test_fmt_duration(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(None, "unknown"), (3, "~10 s"), (44, "~40 s"), (360, "~6 min"),
                                               (3900, "~65 min"), (7500, "~2 h 05 min")])
def test_fmt_eta(seconds: float | None, text: str) -> None:
    assert fmt_eta(seconds) == text


def test_counts_are_not_python_dicts() -> None:
    assert fmt_counts({"PASS": 175, "NO_PASS": 25}) == "PASS 175, NO_PASS 25" and fmt_counts({}) == "none"


def test_one_line_format_errors_to_stderr() -> None:
    console, out, err = _plain()
    console.line("hello")
    with console.in_phase("final_automl"):
        console.line("inside")
    console.line("broken", level="error")
    lines = out.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0].endswith("raypipe   hello") and lines[1].endswith("Phase 3   inside")
    assert err.getvalue().rstrip().endswith("raypipe   error: broken") and "broken" not in out.getvalue()


def test_logging_goes_through_the_console_and_library_chatter_is_off(request: pytest.FixtureRequest) -> None:
    root = logging.getLogger()
    names = ("raypipe", *console_module._CHATTY)
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})

    def restore() -> None:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)

    request.addfinalizer(restore)
    console, out, err = _plain()
    install_logging(console)
    logging.getLogger("raypipe.deft").info("stage done")
    logging.getLogger("ray.tune").info("Tune's own chatter")
    logging.getLogger("mlflow.store").warning("creating tables")
    logging.getLogger("raypipe.x").warning("disk almost full")
    text = out.getvalue()
    assert "stage done" in text and "warning: disk almost full" in text
    assert "chatter" not in text and "creating tables" not in text
    assert all(LINE.match(line) for line in text.splitlines())
    logging.getLogger("urllib3").info("connection pool chatter")
    assert "connection pool" not in out.getvalue()
    install_logging(console, verbose=True)  # --verbose: everything (Ray's own loggers print through Ray's handlers)
    logging.getLogger("urllib3").info("connection pool chatter")
    assert "connection pool chatter" in out.getvalue()


def _preflight() -> Preflight:
    pf = Preflight()
    pf.add(1, "OK       workspace /ws readable")
    pf.warn(2, "NGC_API_KEY: UNSET")
    pf.blocker(4, "leakage: 3 rows in both train and validation")
    return pf


def test_preflight_is_rendered_for_a_terminal_not_as_markdown() -> None:
    console, out, _ = _plain()
    console.preflight(_preflight())
    text = out.getvalue()
    positions = [text.index(f"\n{title}\n") for title in SECTION_TITLES]
    assert positions == sorted(positions)
    assert "#" not in text and "\x1b[" not in text
    assert "  ok      workspace /ws readable" in text and "  warn    NGC_API_KEY: UNSET" in text
    assert "  BLOCKER leakage: 3 rows" in text and "(nothing to report)" in text
    tty = _Tty()
    Console(out=tty).preflight(_preflight())
    assert "\x1b[" in tty.getvalue() and "leakage: 3 rows" in tty.getvalue()  # coloured on a terminal


def _finished_run(tmp_path: Path, **best: object) -> RunDir:
    rd = RunDir(tmp_path / "results" / "run_20260101_000000")
    rd.root.mkdir(parents=True)
    contract = MetricContract().to_dict()
    atomic_write_json(rd.best_model, {
        "checkpoint": str(rd.root / "iter2" / "train" / "model_epoch_004_step_00100.pth"), "threshold": 0.4213,
        "metric_contract": contract, "metric_result": {"name": "far_pct", "value": 7.5, "passed": True},
        "iteration": "iter2", "far_pct": 7.5, **best})
    rows = [{"step": "phase1_best", "split": "validation", "far_pct": 30.0, "threshold": None, "training_rows": None},
            {"step": "baseline", "split": "kpi", "far_pct": 20.0, "threshold": 0.5, "auroc": 0.91,
             "training_rows": 600, "label": "baseline", "delivered": False},
            {"step": "iter2", "split": "kpi", "far_pct": 7.5, "threshold": 0.4213, "auroc": 0.97, "training_rows": 800,
             "label": "iter2", "delivered": True, "test_far_pct": best.get("test_far_pct"),
             "test_auroc": best.get("test_auroc")}]
    atomic_write_json(rd.trajectory, {"rows": rows, "delivered": "iter2"})
    rd.report.parent.mkdir(parents=True, exist_ok=True)
    rd.report.write_text("<html></html>")
    return rd


def test_closing_summary_verdict_first_then_where_to_look(tmp_path: Path) -> None:
    rd = _finished_run(tmp_path, verdict="kpi_met", test_far_pct=9.1, test_auroc=0.955)
    console, out, _ = _plain()
    tracking = SimpleNamespace(active=True, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_id="3",
                               parent_run_id="abc")
    console.closing_summary(rd.root, "complete", 754.0, tracking)
    text = out.getvalue()
    assert "Run complete — KPI met" in text
    verdict = text.index("KPI met: FAR at 100% recall 7.50% on the KPI set")
    assert verdict < text.index("step ") < text.index("delivered  ") < text.index("total time")
    assert "sealed test split 9.10%" in text[verdict:text.index("step ")]  # the test FAR is in the verdict
    assert "test FAR" in text and "9.10%" in text  # and a trajectory column
    assert "Phase 2 iteration 2" in text and "threshold 0.4213" in text and "12:34" in text
    assert str(rd.report) in text and "mlflow ui --backend-store-uri" in text and "#/experiments/3/runs/abc" in text
    assert f"python -m raypipe.infer --best-model {rd.best_model}" in text
    assert f"python -m raypipe.export --best-model {rd.best_model} --format onnx" in text
    assert "{" not in text and "\x1b[" not in text


def test_closing_summary_degrades_without_verdict_or_test_split(tmp_path: Path) -> None:
    rd = _finished_run(tmp_path)
    console, out, _ = _plain()
    console.closing_summary(rd.root, "complete", 60.0, None)
    text = out.getvalue()
    assert "KPI met" in text and "test FAR" not in text and "tracking off" in text
    failed = RunDir(tmp_path / "nothing")
    failed.root.mkdir()
    console, out, _ = _plain()
    console.closing_summary(failed.root, "failed", 5.0, None)  # no best_model.json, no trajectory
    assert "Run failed" in out.getvalue() and "total time" in out.getvalue()


def test_verdict_text_reports_a_miss_and_the_target() -> None:
    bm = {"metric_contract": MetricContract().to_dict(), "far_pct": 14.2, "metric_result": {"passed": False}}
    text = verdict_text(bm, {"rows": []})
    assert "not met" in text.lower() and "14.2" in text


def _state(events: list[dict[str, object]]) -> dict[str, object]:
    return {"version": 4, "status": "in_progress", "metric_contract": MetricContract().to_dict(), "max_iterations": 2,
            "iterations": {"baseline": {"stage_completed": "train", "status": "in_progress"}}, "events": events}


def _event(seq: int, label: str, stage: str, summary: str, seconds: int = 3) -> dict[str, object]:
    return {"seq": seq, "ts": "2026-01-01T00:00:00+00:00", "iter": label, "stage": stage, "status": "ok",
            "summary": summary, "duration_sec": seconds}


def test_follow_deft_prints_each_stage_committed_while_it_runs(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.root.mkdir()
    atomic_write_json(rd.deft_state, _state([_event(1, "baseline", "train", "baseline train skipped")]))
    console, out, _ = _plain()
    # a long poll: the lines below come from the commits, not from a timer
    with follow_deft(rd.root, console, poll_s=3600):
        atomic_write_json(rd.deft_state, _state([
            _event(1, "baseline", "train", "baseline train skipped"),
            _event(2, "baseline", "evaluate", "KPI FAR 20.00% (target < 10%)", 12),
            _event(3, "baseline", "rca", "3 error clusters; hardest: missing")]))
    text = out.getvalue()
    assert "baseline train skipped" not in text  # committed before the loop started here
    assert "evaluate" in text and "KPI FAR 20.00%" in text and "12 s" in text and "hardest: missing" in text
    assert text.index("evaluate") < text.index(" rca ")
    assert all(line.split()[1:3] == ["Phase", "2"] for line in text.splitlines())
