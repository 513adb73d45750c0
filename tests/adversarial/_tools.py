"""The entry points the adversarial cases run: the CLIs and the Python APIs behind them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ._harness import Outcome, Tool


def _all_lines(o: Outcome) -> list[str]:
    return o.stdout.splitlines() + o.stderr.splitlines()


def _first_line(o: Outcome) -> list[str]:
    """Success: the result line; a usage error: argparse's closing ``error:`` line; any other failure:
    the first line of stderr, which must say everything."""
    if o.exit_code == 0:
        return o.stdout.splitlines()[:1]
    lines = o.stderr.splitlines()
    return lines[-1:] if o.exit_code == 2 else lines[:1]


def _check_main(argv: list[str]) -> int:
    from raypipe.workspace.__main__ import main

    return main(argv)


def _metrics_main(argv: list[str]) -> int:
    from raypipe.metrics.__main__ import main

    return main(argv)


def _load_workspace(argv: list[str]) -> int:
    """``load_workspace(DIR, label_map={...})``: argv is DIR then LABEL=TARGET entries."""
    from raypipe.workspace import WorkspaceError, load_workspace

    label_map = dict(entry.split("=", 1) for entry in argv[1:])
    try:
        ws = load_workspace(argv[0], label_map=label_map)
    except WorkspaceError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"loaded {ws.root}")
    return 0


def _evaluate(argv: list[str]) -> int:
    """``evaluate_inference_csv(CSV, JSON)``: only its documented errors are expected."""
    from raypipe.metrics import (
        EvaluatorInputError,
        MetricUndefinedError,
        evaluate_inference_csv,
    )

    try:
        r = evaluate_inference_csv(argv[0], argv[1])
    except (EvaluatorInputError, MetricUndefinedError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"far_pct={r['value']:.4f}")
    return 0


def _run_main(argv: list[str]) -> int:
    """``python -m raypipe.run`` in this process (the module's Ray session is reused, not restarted)."""
    from raypipe.run import main

    return main(argv)


def _infer_main(argv: list[str]) -> int:
    from raypipe.infer import main

    return main(argv)


def run_argv(*mode: str) -> Callable[[Path], list[str]]:
    def argv(d: Path) -> list[str]:
        from tests.conftest import REPO

        return ["--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace", str(d / "ws"), *mode,
                "tracking.enabled=false"]
    return argv


def _resume_argv(d: Path) -> list[str]:
    from ._mutations import RUN_DIR

    return ["--resume", str(d / "ws" / RUN_DIR)]


def _infer_argv(d: Path) -> list[str]:
    from ._mutations import MODEL_DIR

    return ["--best-model", str(d / "ws" / MODEL_DIR / "best_model.json"), "--csv", str(d / "ws" / "kpi" /
            "testing_set.csv"), "--images-dir", str(d / "ws" / "images"), "--output-dir", str(d / "out")]


TOOLS = {
    "check": Tool("check", "raypipe.workspace", "workspace", lambda d: ["check", str(d / "ws")], _all_lines,
                  _check_main),
    "load_workspace": Tool("load_workspace", "", "workspace", lambda d: [str(d / "ws")], _all_lines,
                           _load_workspace),
    "metrics": Tool("metrics", "raypipe.metrics", "inference",
                    lambda d: ["--inference-csv", str(d / "ws" / "inference.csv"),
                               "--output-json", str(d / "out" / "metric_result.json")],
                    _first_line, _metrics_main, writes=("out/",)),
    "evaluate": Tool("evaluate", "", "inference",
                     lambda d: [str(d / "ws" / "inference.csv"), str(d / "out" / "metric_result.json")],
                     _first_line, _evaluate, writes=("out/",)),
    # The run's gate: in-process, on the session's Ray; nothing may change, success included.
    "dry_run": Tool("dry_run", "raypipe.run", "workspace", run_argv("--dry-run"), _all_lines, _run_main),
    "run_yes": Tool("run_yes", "raypipe.run", "workspace", run_argv("--yes"), _all_lines, _run_main),
    "resume": Tool("resume", "raypipe.run", "workspace", _resume_argv, _all_lines, _run_main),
    "infer": Tool("infer", "raypipe.infer", "delivered", _infer_argv, _first_line, _infer_main, writes=("out/",)),
}
