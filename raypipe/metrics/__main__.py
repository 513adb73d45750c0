"""``python -m raypipe.metrics --inference-csv CSV --output-json JSON`` (also TAO's 'command' evaluator form).

Exit 0 with one result line; 1 with one ``error:`` line naming the file, row and column for bad or
undefined input (nothing written); 2 for a usage error. ``threshold_metrics.csv`` and ``summary.txt``
are written beside the JSON; an existing file there is replaced only if this evaluator wrote it.
"""

from __future__ import annotations

import argparse
import math
import sys

from raypipe.workspace._labels import label_map_argument


def _recall_pct(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 100):
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.metrics", description="FAR at 100%-recall evaluator")
    p.add_argument("--inference-csv", required=True, help="CSV with label and siamese_score columns")
    p.add_argument("--output-json", required=True,
                   help="metric_result.json to write; threshold_metrics.csv and summary.txt go beside it")
    p.add_argument("--recall-target-pct", type=_recall_pct, default=100.0, help="recall target in %% (default 100)")
    p.add_argument("--label-map", type=label_map_argument, action="append", default=[], metavar="LABEL=TARGET",
                   help="what a label means, e.g. OK=PASS (case-insensitive; repeatable)")
    a = p.parse_args(argv)

    from raypipe.metrics._evaluate import evaluate_inference_csv

    try:
        r = evaluate_inference_csv(a.inference_csv, a.output_json, a.recall_target_pct,
                                   label_map=dict(a.label_map))
    except (ValueError, OSError) as exc:  # EvaluatorInputError, MetricUndefinedError, LabelMapError; a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"far_pct={r['value']:.4f} threshold={r['threshold']:.6g} recall_pct={r['constraints']['recall_pct']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
