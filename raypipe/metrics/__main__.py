"""``python -m raypipe.metrics --inference-csv CSV --output-json JSON`` (also TAO's 'command' evaluator form)."""

from __future__ import annotations

import argparse
import sys

from raypipe.metrics._evaluate import evaluate_inference_csv
from raypipe.metrics._far import MetricUndefinedError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.metrics", description="FAR at 100%-recall evaluator")
    p.add_argument("--inference-csv", required=True)
    p.add_argument("--output-json", required=True)
    p.add_argument("--recall-target-pct", type=float, default=100.0)
    a = p.parse_args(argv)
    try:
        r = evaluate_inference_csv(a.inference_csv, a.output_json, a.recall_target_pct)
    except (MetricUndefinedError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"far_pct={r['value']:.4f} threshold={r['threshold']:.6g} recall_pct={r['constraints']['recall_pct']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
