"""The sweep's files: ``best_rec.json`` in TAO AutoML's format and ``trials.csv``, written atomically."""

from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.automl._ranking import TrialRecord
from raypipe.spec import get_dotted, has_dotted, nest_dotted

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
# TAO AutoML's budget keys: they move from `specs` to `observed_budget`.
BUDGET_KEYS = ("num_epochs", "train.num_epochs", "train.max_epochs", "epochs")
TRIALS_COLUMNS = ("trial_id", "status", "params", "metric", "checkpoint", "error", "metric_name", "val_far",
                  "val_loss", "pred_counts", "checkpoint_epoch", "checkpoint_step", "epochs_run", "compute_s",
                  "note", "job_id")


class BestRecError(ValueError):
    """A best_rec document does not follow TAO AutoML's ``best_rec.json`` schema."""


@lru_cache(maxsize=1)
def best_rec_schema() -> dict[str, Any]:
    """The JSON Schema of best_rec.json shipped in ``raypipe/schemas/``."""
    text = resources.files("raypipe").joinpath("schemas/best_rec.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_best_rec(doc: Mapping[str, Any]) -> None:
    """Raise :class:`BestRecError` with every violation listed (path: message)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(best_rec_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
        raise BestRecError("best_rec.json violates its schema (raypipe/schemas/best_rec.schema.json):\n  "
                           + "\n  ".join(lines))


def rec_specs(trial_spec: Mapping[str, Any], params: Mapping[str, Any],
              spec_overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's recommendation as a nested spec: its swept HPs and the pinned overrides, minus budget keys.

    A list-index key (``cls_weight[1]``) carries the whole list as the trial trained with it, so a
    deep merge onto the baseline spec (the Phase 1 → 2 handoff) reproduces the trial's spec exactly.
    """
    flat: dict[str, Any] = {}
    for key in list(spec_overrides) + list(params):
        if key in BUDGET_KEYS:
            continue
        whole = key.split("[", 1)[0]  # `a.b[1]` → `a.b`: take the list from the trial's spec
        flat[whole] = copy.deepcopy(get_dotted(dict(trial_spec), whole)) if has_dotted(dict(trial_spec), whole) \
            else copy.deepcopy(params.get(key, spec_overrides.get(key)))
    return nest_dotted(flat)


def observed_budget(epochs_run: int) -> dict[str, Any]:
    return {"num_epochs": int(epochs_run)}


def build_best_rec(*, experiment_id: str, metric_name: str, best: TrialRecord, best_specs: dict[str, Any],
                   records: list[TrialRecord], scores: Mapping[str, float | None]) -> dict[str, Any]:
    """The best_rec.json document (validated). ``scores``: trial_id → the score each rec is reported with."""
    if best.checkpoint is None or best.checkpoint_epoch is None or best.checkpoint_step is None:
        raise BestRecError(f"trial {best.trial_id}: no checkpoint to recommend")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "experiment_id": experiment_id,
        "metric_name": metric_name,
        "direction": "minimize",  # both objectives (FAR %, val_loss) are minimised
        "best": {
            "rec_id": best.trial_id,
            "score": float(scores[best.trial_id]),  # type: ignore[arg-type]
            "specs": best_specs,
            "observed_budget": observed_budget(best.epochs_run),
            "checkpoint_uri": str(best.checkpoint),
            "checkpoint_epoch": int(best.checkpoint_epoch),
            "checkpoint_step": int(best.checkpoint_step),
        },
        "all_recs": [
            {"rec_id": r.trial_id, "score": _num_or_none(scores.get(r.trial_id)), "job_id": r.job_id or r.trial_id}
            for r in records
        ],
    }
    validate_best_rec(doc)
    return doc


def _num_or_none(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def write_best_rec(path: Path, doc: Mapping[str, Any]) -> Path:
    validate_best_rec(doc)
    return atomic_write_json(path, doc)


def trials_frame(records: list[TrialRecord], metric: str) -> pd.DataFrame:
    """One row per trial (plus baseline / re-run rows): id, status, params, metric, checkpoint, error, …

    Then one column per hyper-parameter, named by its TAO dotted key (``train.optim.lr``), so a
    spreadsheet can sort and plot them; ``params`` keeps all of them as one JSON object for code.
    """
    import pandas as pd

    hp_keys = sorted({k for r in records for k in r.params})
    rows = []
    for r in records:
        rows.append({
            "trial_id": r.trial_id, "status": r.status,
            "params": json.dumps(r.params, sort_keys=True, default=str),
            "metric": _num_or_none(r.score(metric)), "checkpoint": r.checkpoint or "",
            "error": r.error, "metric_name": metric, "val_far": _num_or_none(r.val_far),
            "val_loss": _num_or_none(r.val_loss), "pred_counts": json.dumps(r.pred_counts, sort_keys=True),
            "checkpoint_epoch": r.checkpoint_epoch, "checkpoint_step": r.checkpoint_step,
            "epochs_run": r.epochs_run, "compute_s": _num_or_none(r.compute_s), "note": r.note,
            "job_id": r.job_id,
            **{k: r.params.get(k) for k in hp_keys},
        })
    return pd.DataFrame(rows, columns=[*TRIALS_COLUMNS, *hp_keys])


def write_trials_csv(path: Path, records: list[TrialRecord], metric: str) -> Path:
    return atomic_write_text(path, trials_frame(records, metric).to_csv(index=False))
