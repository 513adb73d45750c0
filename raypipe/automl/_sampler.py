"""A sampler that says what it learned: every finished trial Optuna tells it, one JSON line each.

``OptunaSearch`` keeps its study private; Optuna's public sampler hooks (``before_trial``,
``after_trial``) are the place to observe it. The log answers "did TPE get every result, with the
right value?" from disk (a test does, and so can a user wondering why a sweep looked random), and
"how many results had it been told when it was asked for this trial?" (``ASKED`` lines: with
batched suggestions that count is the same on every run, which is what makes a seeded sweep
repeat itself). A trial re-run after a restore appears again with the same ``number``: the last
line of a number is what counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from raypipe._io import append_jsonl, read_jsonl


class RecordingSampler(BaseSampler):
    """Delegates every decision to ``inner`` and appends each finished trial to ``log``."""

    def __init__(self, inner: BaseSampler, log: str | Path) -> None:
        self.inner = inner
        self.log = str(log)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)
        told = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
        append_jsonl(self.log, {"number": trial.number, "state": "ASKED", "told_before": told})

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)
        append_jsonl(self.log, {"number": trial.number, "state": state.name,
                                "values": list(values) if values is not None else None, "params": trial.params})

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def sampler_log(path: str | Path) -> dict[int, dict[str, Any]]:
    """The sampler's log as trial number → its last record (``ASKED`` while the trial had no result)."""
    return {int(r["number"]): r for r in read_jsonl(path)}


def sampler_asks(path: str | Path) -> dict[int, int]:
    """Trial number → how many finished trials the study had been told when it was asked for it."""
    return {int(r["number"]): int(r["told_before"]) for r in read_jsonl(path) if r.get("state") == "ASKED"}


__all__ = ["RecordingSampler", "sampler_asks", "sampler_log"]
