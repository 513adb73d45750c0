"""FAR at 100 % recall, the metric contract, ``pick_best`` and the evaluator behind ``python -m raypipe.metrics``."""

from raypipe.metrics._contract import (
    BestPick,
    Constraint,
    ContractError,
    MetricContract,
    constraints_hold,
    pick_best,
    validate_result,
)
from raypipe.metrics._evaluate import (
    EvaluatorInputError,
    evaluate_inference_csv,
    far_metric_result,
    run_evaluator,
)
from raypipe.metrics._far import (
    MetricUndefinedError,
    ThresholdResult,
    auroc,
    best_f1_threshold,
    far_at_recall,
    threshold_table,
)

__all__ = [
    "BestPick", "Constraint", "ContractError", "EvaluatorInputError", "MetricContract", "MetricUndefinedError",
    "ThresholdResult", "auroc", "best_f1_threshold", "constraints_hold", "evaluate_inference_csv",
    "far_at_recall", "far_metric_result", "pick_best", "run_evaluator", "threshold_table",
    "validate_result",
]
