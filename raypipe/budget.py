"""The run's time model, and sizing a run to a time budget (``--time-budget 45m``).

One model of where a run's time goes serves three readers: pre-flight's compute estimate, the
planner that fits trials, epochs and DEFT iterations into a budget, and the ETA of the console and
``python -m raypipe.status`` before a piece of work was measured in the run itself.

Everything is scaled from one measured number, ``epoch_s``: one training epoch (training set plus
validation pass) with a trial's resources, from the 1-epoch probe. Training cost grows with the rows
trained on; inference (KPI evaluation, mining embeddings) costs about a third of a training row per
row (a forward pass, no backward). The fixed costs (a trial's start-up, a sweep's set-up and
read-back, a DEFT stage's bookkeeping) were measured on the demo workspace on 2 CPU cores.

    model = CostModel(epoch_s=5.5, workload=Workload.of(cfg, ws))
    plan = plan_for_budget(45 * 60, model, Knobs.of(cfg))
    plan.knobs.phase1_trials, plan.estimate.total_s
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raypipe.config import RunConfig

# Fixed costs, seconds (measured on the demo workspace, 2 cores; see the module docstring).
RUN_OVERHEAD_S = 15.0  # Ray start, MLflow store, handoff files, trajectory, model registration
SWEEP_OVERHEAD_S = 8.0  # Tune set-up, searcher, reading the trials back, best_rec.json
TRIAL_OVERHEAD_S = 3.0  # a trial's actor and model build before its first epoch
STAGE_OVERHEAD_S = 1.0  # one DEFT stage's task start and commit
SDG_ROW_S = 0.01  # one synthetic defect image drawn by the built-in SDG
INFER_ROW_FRACTION = 1 / 3  # an inference row costs this much of a training row
# Embedding a pool row (ImageNet features of capture and golden, 2 Ray workers) costs about one training
# row: 33 s for 3,242 rows at 8.9 s per probe epoch. Only iteration 1 embeds the whole pool; the
# embedding cache (by image content) leaves later iterations only their new synthetic rows.
EMBED_ROW_FRACTION = 1.0
# A DEFT retrain runs alone. The probe's one epoch carries one-off start-up costs, so a lone training
# takes about 0.7 of the probe-scaled time (measured 43 s vs 59 s and 51 s vs 74 s on the demo, 2 cores).
# A sweep keeps the probe scale: its concurrent trials slow each other by about as much (Phase 1's
# 3 waves of 2: 124 s modelled, 130 s measured).
LONE_TRAIN_FRACTION = 0.75
MINED_POOL_PART = 10  # mining adds about a tenth of the pool per iteration (demo: 321-330 of 3,122 in iteration 1)
MIN_PHASE1_TRIALS = 2  # TPE learns nothing from one trial
MAX_TRIALS = 100
MAX_ITERATIONS = 10
# How a budget is shared when the planner has a choice (Phase 2's share is a ceiling: the loop
# also stops when the KPI is met).
SHARES = {"phase1": 0.35, "phase2": 0.40, "phase3": 0.25}

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


class BudgetError(ValueError):
    """A time budget that cannot be read; the message shows the accepted forms."""


def parse_duration(text: str | float | int) -> float:
    """``45m``, ``1h30m``, ``90s``, ``2h``, ``1.5h`` or a number of seconds → seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        m = _DURATION.match(raw)
        if raw.replace(".", "", 1).isdigit():
            seconds = float(raw)
        elif m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
        else:
            raise BudgetError(f"time budget {text!r}: expected a duration like 45m, 1h30m, 90s or seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise BudgetError(f"time budget {text!r}: must be a positive duration")
    return seconds


@dataclass(frozen=True)
class Workload:
    """What the run processes: row counts of the workspace and the loop's per-iteration additions."""

    train_rows: int
    val_rows: int
    kpi_rows: int
    pool_rows: int
    num_sdg: int  # synthetic images per DEFT iteration
    concurrency: int  # trials at once
    warm_phase1: bool  # Phase 1 starts from a checkpoint (a baseline eval before its trials)
    # automl.noise_margin is set: a sweep may re-train its winner once, alone, after its trials. Counted
    # for Phase 1, where it fired in 5 of 9 demo runs (cold trials differ a lot), not for Phase 3 (1 of 9:
    # its warm-started trials mostly tie); measured on the demo, the re-run took a trial's time.
    noise_guard: bool = False

    @staticmethod
    def of(cfg: RunConfig, rows: dict[str, int]) -> Workload:
        """From the config and the workspace's row counts (``train``, ``validation``, ``kpi``, ``pool``)."""
        p2 = cfg.phase2
        pool = rows.get("pool", 0)
        return Workload(train_rows=max(1, rows.get("train", 1)), val_rows=rows.get("validation", 0),
                        kpi_rows=rows.get("kpi", 0), pool_rows=pool, num_sdg=p2.sdg.num_SDG,
                        concurrency=cfg.automl.max_concurrent_trials,
                        warm_phase1=bool(cfg.phase1.pretrained_model_path),
                        noise_guard=cfg.automl.noise_margin is not None)


@dataclass(frozen=True)
class Knobs:
    """What a plan decides: trials per sweep, epochs per training, DEFT iterations."""

    phase1_trials: int
    phase3_trials: int
    epochs: int  # spec_overrides train.num_epochs: every trial and the loop's retrains
    loop_epochs: int  # phase2.train_overrides train.num_epochs when set, else ``epochs``
    max_iterations: int
    phase1: bool = True
    phase3: bool = True

    @staticmethod
    def of(cfg: RunConfig) -> Knobs:
        epochs = int(cfg.spec_overrides.get("train.num_epochs", 1))
        loop = cfg.phase2.train_overrides.get("train.num_epochs")
        return Knobs(phase1_trials=cfg.phase1.automl_max_recommendations,
                     phase3_trials=cfg.phase3.automl_max_recommendations, epochs=epochs,
                     loop_epochs=int(loop) if loop is not None else epochs,
                     max_iterations=cfg.phase2.max_iterations, phase1=cfg.phase1.enabled, phase3=cfg.phase3.enabled)

    def apply(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with these knobs (a validated copy; RD/config.yaml then records the planned values)."""
        p2 = cfg.phase2
        loop = dict(p2.train_overrides)
        if "train.num_epochs" in loop:
            loop["train.num_epochs"] = self.loop_epochs
        return cfg.replace(
            spec_overrides={**cfg.spec_overrides, "train.num_epochs": self.epochs},
            phase1=cfg.phase1.replace(automl_max_recommendations=self.phase1_trials),
            phase2=p2.replace(max_iterations=self.max_iterations, train_overrides=loop),
            phase3=cfg.phase3.replace(automl_max_recommendations=self.phase3_trials))


@dataclass(frozen=True)
class Estimate:
    """Seconds per phase (``overhead``: start-up and the final bookkeeping)."""

    phase1_s: float
    phase2_s: float
    phase3_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return self.phase1_s + self.phase2_s + self.phase3_s + self.overhead_s


@dataclass(frozen=True)
class CostModel:
    """Seconds of each piece of work, scaled from one measured epoch (see the module docstring)."""

    epoch_s: float  # one epoch on the base training set (+ validation), with a trial's resources
    workload: Workload

    @staticmethod
    def from_json(plan: dict[str, Any]) -> CostModel:
        """From ``RD/time_plan.json`` (:meth:`Timing.to_json`)."""
        return CostModel(float(plan["epoch_s"]), Workload(**plan["workload"]))

    @property
    def _row_units(self) -> float:
        w = self.workload
        return w.train_rows + INFER_ROW_FRACTION * w.val_rows

    def infer_s(self, rows: int) -> float:
        """Scoring ``rows`` image pairs (KPI inference, embeddings)."""
        return self.epoch_s * INFER_ROW_FRACTION * rows / self._row_units

    def epoch_on(self, train_rows: int) -> float:
        """One epoch on ``train_rows`` rows (+ the validation pass)."""
        w = self.workload
        return self.epoch_s * (train_rows + INFER_ROW_FRACTION * w.val_rows) / self._row_units

    def trial_s(self, epochs: int, train_rows: int | None = None) -> float:
        return TRIAL_OVERHEAD_S + epochs * self.epoch_on(train_rows or self.workload.train_rows)

    def sweep_s(self, trials: int, epochs: int, train_rows: int | None = None, *, warm: bool = False,
                guard: bool = False) -> float:
        """A sweep: ``trials`` in waves of ``concurrency``, plus its set-up, (warm) the start point's
        eval and (``guard`` and the noise guard is on) the winner's re-run."""
        waves = math.ceil(trials / max(1, self.workload.concurrency))
        waves += 1 if guard and self.workload.noise_guard else 0
        baseline = self.infer_s(self.workload.val_rows) + STAGE_OVERHEAD_S if warm else 0.0
        return SWEEP_OVERHEAD_S + baseline + waves * self.trial_s(epochs, train_rows)

    def rows_after(self, iterations: int) -> int:
        """The training set after ``iterations`` DEFT merges: every SDG image, and mined pool rows
        (mining never takes a row twice; a tenth of the pool per iteration, as on the demo)."""
        w = self.workload
        return w.train_rows + iterations * w.num_sdg + min(w.pool_rows, iterations * w.pool_rows // MINED_POOL_PART)

    def stage_s(self, stage: str, *, iteration: int = 1, epochs: int = 1) -> float:
        """One DEFT stage of iteration ``iteration`` (TAO's stage names)."""
        w = self.workload
        if stage == "train":
            return TRIAL_OVERHEAD_S + LONE_TRAIN_FRACTION * epochs * self.epoch_on(self.rows_after(iteration))
        if stage == "evaluate":  # the best and the latest checkpoint on the KPI set
            return STAGE_OVERHEAD_S + 2 * self.infer_s(w.kpi_rows)
        if stage == "data_mining":  # the pool once (then cached), and each iteration's synthetic rows
            pool = w.pool_rows if iteration <= 1 else 0
            return STAGE_OVERHEAD_S + self.infer_s(w.num_sdg) + self.infer_s(pool) * EMBED_ROW_FRACTION / INFER_ROW_FRACTION
        if stage == "anomalygen":
            return STAGE_OVERHEAD_S + SDG_ROW_S * w.num_sdg
        return STAGE_OVERHEAD_S  # routing, data_merge, rca, loop_stop

    def iteration_s(self, iteration: int, epochs: int) -> float:
        from raypipe.deft.stages import REGISTRY

        return sum(self.stage_s(s, iteration=iteration, epochs=epochs) for s in REGISTRY.names
                   if s != REGISTRY.stop.name)

    def estimate(self, k: Knobs) -> Estimate:
        w = self.workload
        p1 = self.sweep_s(k.phase1_trials, k.epochs, warm=w.warm_phase1, guard=True) if k.phase1 else 0.0
        # Phase 2: the baseline (trained here when Phase 1 is off), its KPI evaluation and RCA, the iterations.
        base = (0.0 if k.phase1 else self.stage_s("train", iteration=0, epochs=k.epochs)) \
            + self.stage_s("evaluate") + self.stage_s("rca")
        p2 = base + sum(self.iteration_s(i, k.loop_epochs) for i in range(1, k.max_iterations + 1)) \
            + self.stage_s("loop_stop")
        p3 = 0.0
        if k.phase3:
            p3 = self.sweep_s(k.phase3_trials, k.epochs, self.rows_after(k.max_iterations), warm=True) \
                + self.stage_s("evaluate") + self.stage_s("loop_stop")
        return Estimate(p1, p2, p3, RUN_OVERHEAD_S)


@dataclass(frozen=True)
class Plan:
    """The knobs a budget allows, what they are estimated to take, and why."""

    budget_s: float
    knobs: Knobs
    estimate: Estimate
    fits: bool  # False: even the smallest plan is over budget (it is used anyway, with a warning)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"budget_s": self.budget_s, "knobs": asdict(self.knobs), "estimate": asdict(self.estimate),
                "estimate_total_s": self.estimate.total_s, "fits": self.fits, "notes": list(self.notes)}


def plan_for_budget(budget_s: float, model: CostModel, ceiling: Knobs) -> Plan:
    """Trials, epochs and iterations that fill ``budget_s`` without passing it.

    The configured epochs and ``max_iterations`` are ceilings (the planner lowers them only when
    the smallest plan would not fit otherwise); trials are added a wave (``concurrency`` trials) at
    a time to the phase furthest below its share of the budget, while the total still fits.
    """
    conc = max(1, model.workload.concurrency)
    notes: list[str] = []
    epochs = ceiling.epochs
    k = _smallest(ceiling, epochs, conc)
    while model.estimate(k).total_s > budget_s and epochs > 1:
        epochs -= 1
        k = _smallest(ceiling, epochs, conc)
    if epochs < ceiling.epochs:
        notes.append(f"train.num_epochs lowered from {ceiling.epochs} to {epochs} to fit the budget")
    if model.estimate(k).total_s > budget_s:
        notes.append(f"even the smallest plan takes about {model.estimate(k).total_s / 60:.1f} min, over the "
                     f"budget of {budget_s / 60:.1f} min")
        return Plan(budget_s, k, model.estimate(k), False, tuple(notes))
    while True:
        options = _growths(k, ceiling, conc)
        est = model.estimate(k)
        fitting = [(share_gap, g) for share_gap, g in ((_share_gap(est, phase, budget_s), g) for phase, g in options)
                   if model.estimate(g).total_s <= budget_s]
        if not fitting:
            break
        k = max(fitting, key=lambda t: t[0])[1]
    return Plan(budget_s, k, model.estimate(k), True, tuple(notes))


def phase3_trials_for(left_s: float, model: CostModel, train_rows: int, epochs: int) -> int:
    """Phase 3's trials, planned when Phase 3 starts under a time budget: as many waves of
    ``concurrency`` trials on ``train_rows`` rows as fit in ``left_s`` (the budget not yet spent),
    after the sweep's set-up and the run's closing work; at least one wave, at most ``MAX_TRIALS``.

    The plan made at approval counts the worst case (every DEFT iteration, Phase 1's noise-guard
    re-run, Phase 3 on the largest training set), and the loop usually stops as soon as the KPI is
    met: measured on the demo under ``--time-budget 10m``, runs ended 34-37 % early. Planning Phase 3
    from what is actually left spends that time on more refinement trials instead.
    """
    conc = max(1, model.workload.concurrency)
    closing = 2 * model.stage_s("evaluate") + model.stage_s("loop_stop") + RUN_OVERHEAD_S  # winner's KPI + test scoring
    setup = model.sweep_s(0, epochs, train_rows, warm=True)  # set-up and the warm start's evaluation, no trial
    waves = int((left_s - closing - setup) // model.trial_s(epochs, train_rows))
    return max(conc, min(MAX_TRIALS // conc, waves) * conc)


def _smallest(ceiling: Knobs, epochs: int, conc: int) -> Knobs:
    loop = min(ceiling.loop_epochs, epochs) if ceiling.loop_epochs != ceiling.epochs else epochs
    return replace(ceiling, phase1_trials=max(MIN_PHASE1_TRIALS, conc) if ceiling.phase1 else ceiling.phase1_trials,
                   phase3_trials=conc if ceiling.phase3 else ceiling.phase3_trials, epochs=epochs, loop_epochs=loop,
                   max_iterations=1)


def _growths(k: Knobs, ceiling: Knobs, conc: int) -> list[tuple[str, Knobs]]:
    out = []
    if k.phase1 and k.phase1_trials + conc <= MAX_TRIALS:
        out.append(("phase1", replace(k, phase1_trials=k.phase1_trials + conc)))
    if k.max_iterations < min(ceiling.max_iterations, MAX_ITERATIONS):
        out.append(("phase2", replace(k, max_iterations=k.max_iterations + 1)))
    if k.phase3 and k.phase3_trials + conc <= MAX_TRIALS:
        out.append(("phase3", replace(k, phase3_trials=k.phase3_trials + conc)))
    return out


def _share_gap(est: Estimate, phase: str, budget_s: float) -> float:
    """How far ``phase`` is below its share of the budget (the phase most below it grows next)."""
    spent = {"phase1": est.phase1_s, "phase2": est.phase2_s, "phase3": est.phase3_s}[phase]
    return SHARES[phase] - spent / budget_s


@dataclass(frozen=True)
class Timing:
    """The time model of one run as pre-flight shows it and ``RD/time_plan.json`` keeps it."""

    model: CostModel
    knobs: Knobs  # the counts the run will use (planned ones under a budget)
    source: str  # where ``epoch_s`` came from
    plan: Plan | None = None
    spent_s: float = 0.0  # of the budget, spent before planning (start-up, demo generation, the probe)

    def to_json(self) -> dict[str, Any]:
        return {"epoch_s": self.model.epoch_s, "source": self.source, "workload": asdict(self.model.workload),
                "knobs": asdict(self.knobs), "estimate": asdict(self.model.estimate(self.knobs)),
                "estimate_total_s": self.model.estimate(self.knobs).total_s,
                "plan": self.plan.to_json() if self.plan else None, "spent_before_plan_s": self.spent_s}

    def lines(self) -> list[str]:
        """Pre-flight's compute estimate (section 8)."""
        if self.plan is not None:
            return describe(self.plan, self.model, self.spent_s)
        k, e, m = self.knobs, self.model.estimate(self.knobs), self.model
        parts = []
        if k.phase1:
            parts.append(f"Phase 1 {k.phase1_trials} trials ≈ {e.phase1_s / 60:.1f} min")
        parts.append(f"Phase 2 ≤ {k.max_iterations} iteration(s) ≈ {e.phase2_s / 60:.1f} min")
        if k.phase3:
            parts.append(f"Phase 3 {k.phase3_trials} trials ≈ {e.phase3_s / 60:.1f} min")
        return [f"{'; '.join(parts)}; total ≈ {e.total_s / 60:.1f} min",
                f"{m.epoch_s:.1f} s per training epoch on {m.workload.train_rows} rows, from {self.source}; "
                f"--time-budget 45m sizes the run to a wall time"]


def epoch_from_config(cfg: RunConfig) -> float:
    """``epoch_s`` when nothing was measured: from ``preflight.t_trial_s`` (a whole trial's seconds)."""
    epochs = max(1, int(cfg.spec_overrides.get("train.num_epochs", 1)))
    return max(0.1, (cfg.preflight.t_trial_s - TRIAL_OVERHEAD_S) / epochs)


def measure_epoch_s(cfg: RunConfig, workspace: Any, spec: dict[str, Any]) -> float:
    """One training epoch with a trial's resources, measured as a Ray task (a probe in the driver
    would use every core of this machine, a trial gets ``automl.resources_per_trial``)."""
    from raypipe._ray import run_task
    from raypipe.preflight import measure_probe

    return float(run_task(measure_probe(cfg, workspace, spec), resources=cfg.automl.resources_per_trial))


def csv_rows(workspace: Any) -> dict[str, int]:
    """Rows of the train, validation, KPI and pool CSVs (0 for a missing pool)."""
    from raypipe.workspace import read_rows

    out = {}
    for which, path in (("train", workspace.train_csv), ("validation", workspace.val_csv),
                        ("kpi", workspace.kpi_csv), ("pool", workspace.pool_csv)):
        out[which] = len(read_rows(path)) if path is not None else 0
    return out


def describe(plan: Plan, model: CostModel, spent_s: float = 0.0) -> list[str]:
    """Pre-flight lines: what each phase gets and the estimate. ``plan.budget_s`` is what was left
    after ``spent_s`` (start-up and the probe)."""
    k, e = plan.knobs, plan.estimate
    head = f"time budget {(plan.budget_s + spent_s) / 60:.1f} min"
    if spent_s > 0:
        head += f", {spent_s / 60:.1f} min already spent (start-up, probe), {plan.budget_s / 60:.1f} min left"
    lines = [f"{head} → planned {e.total_s / 60:.1f} min (measured {model.epoch_s:.1f} s per training epoch)"]
    if k.phase1:
        lines.append(f"Phase 1: {k.phase1_trials} trials × {k.epochs} epoch(s), {model.workload.concurrency} at a "
                     f"time ≈ {e.phase1_s / 60:.1f} min")
    lines.append(f"Phase 2: up to {k.max_iterations} DEFT iteration(s), {k.loop_epochs} epoch(s) per retrain "
                 f"≈ {e.phase2_s / 60:.1f} min at most (less when the KPI is met early)")
    if k.phase3:
        lines.append(f"Phase 3: {k.phase3_trials} trials × {k.epochs} epoch(s) ≈ {e.phase3_s / 60:.1f} min; planned again "
                     "from the time left when Phase 3 starts")
    return lines + list(plan.notes)


__all__ = [
    "MAX_TRIALS", "MINED_POOL_PART", "SHARES", "BudgetError", "CostModel", "Estimate", "Knobs", "Plan", "Timing",
    "Workload", "csv_rows", "describe", "epoch_from_config", "measure_epoch_s", "parse_duration", "phase3_trials_for",
    "plan_for_budget",
]
