"""The entry points the adversarial cases run: the CLIs and the Python APIs behind them."""

from __future__ import annotations

import sys

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
}
