"""The DEFT loop driver: look up the next stage → run it → commit its evidence → render the report.

Every decision comes from disk: ``next_stage(load_state())`` names the stage, the registry has
the stage object, its ``run`` returns evidence, ``commit`` validates and writes it. The driver
holds no cursor of its own, so a loop killed at any moment (SIGKILL included) resumes by simply
running again: the interrupted stage starts over, replacing its partial outputs.

The loop itself (:class:`DeftLoop`) needs no Ray; :func:`run_loop` runs it as a Ray actor that
reserves no CPU (it mostly waits on its stages' tasks, and a reserved core would starve a 2-core
machine of the one a training task needs). Stages start their heavy work as Ray tasks with the
resources they declare.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe._io import read_json
from raypipe._ray import unwrap_task_error
from raypipe._testhook import point
from raypipe.deft.context import LoopContext, StageContext, config_block
from raypipe.deft.errors import EvidenceError, HardStop
from raypipe.deft.iteration_metrics import track_iteration
from raypipe.deft.stages import REGISTRY, StageRegistry
from raypipe.deft.state import DONE, HALT, NextStep, commit, initialise_state, load_state, next_stage, reopen_failed
from raypipe.rundir import BASELINE, RunDir, resume_command

if TYPE_CHECKING:
    from raypipe.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopOutcome:
    status: str  # complete | failed
    run_dir: Path
    best_label: str | None = None
    best_model_json: Path | None = None
    message: str = ""


def refresh_report(run_dir: str | Path) -> Path | None:
    """Re-render ``DEFT_Loop_Report.html`` from the files on disk; None when rendering failed.

    A boundary: the state is already durable and the report is presentation, so a rendering error
    is logged with its traceback and never stops the loop or undoes a commit.
    """
    from raypipe.deft.report import render_report

    try:
        return render_report(run_dir)
    except Exception:  # see the docstring: any error of the renderer, logged in full
        log.exception("%s could not be rendered; the run goes on", RunDir(run_dir).report)
        return None


class DeftLoop:
    """The loop body (no Ray of its own: :func:`run_loop` wraps it as an actor)."""

    def __init__(self, run_dir: str | Path, cfg: RunConfig, inputs: LoopContext,
                 registry: StageRegistry = REGISTRY) -> None:
        self.rd = RunDir(run_dir).resolve()
        self.registry = registry
        self.ctx = StageContext(self.rd, cfg, inputs)

    def run(self) -> LoopOutcome:
        if reopen_failed(self.rd.deft_state):
            log.info("resuming a hard-stopped loop in %s", self.rd.root)
        state = load_state(self.rd.deft_state)
        # Each iteration commits at most one event per stage: a loop that exceeds this is not advancing.
        budget = (len(self.registry.names) + 1) * (int(state.get("max_iterations", 1)) + 2) + 4
        for _ in range(budget):
            state = load_state(self.rd.deft_state)
            step = next_stage(state, self.registry)
            if step.stage == DONE:
                return self._complete()
            if step.stage == HALT:
                return LoopOutcome("failed", self.rd.root,
                                   message=f"DEFT state is failed; resume with {resume_command(self.rd)}")
            failed = self._step(step, state)
            if failed is not None:
                return failed
        raise RuntimeError(f"{self.rd.deft_state}: the loop made {budget} steps without finishing; "
                           "next_stage is not advancing")

    def _step(self, step: NextStep, state: dict[str, Any]) -> LoopOutcome | None:
        """Look the stage up, run it, commit its evidence; a failure is committed as a hard stop."""
        assert step.label is not None
        stage = self.registry[step.stage]
        t0 = time.monotonic()
        log.info("DEFT %s/%s", step.label, stage.name)
        try:
            evidence = stage.run(self.ctx, state, step.label)
            point(f"deft_commit:{stage.name}")
            commit(self.rd.deft_state, step.label, stage.name, evidence, duration_s=_since(t0),
                   summary=stage.summary(state, step.label, evidence), registry=self.registry)
        except Exception as exc:  # a boundary: every stage error is a hard stop, committed and explained
            return self._fail(step, exc, t0)
        refresh_report(self.rd.root)
        if stage.name == self.registry.decides:
            track_iteration(self.ctx.inputs.tracking, self.rd, step.label)
        return None

    def _complete(self) -> LoopOutcome:
        bm = self.rd.best_model
        best = read_json(bm).get("iteration") if bm.is_file() else None
        return LoopOutcome("complete", self.rd.root, best, bm if bm.is_file() else None,
                           f"DEFT loop complete: best {best}; {bm}")

    def _fail(self, step: NextStep, exc: BaseException, t0: float) -> LoopOutcome:
        exc = unwrap_task_error(exc)
        if isinstance(exc, HardStop):
            reason, fix = exc.reason, exc.fix
        elif isinstance(exc, EvidenceError):
            reason, fix = f"stage evidence rejected: {exc}", "the stage produced inconsistent outputs; see the log"
        else:
            reason, fix = f"{type(exc).__name__}: {exc}", "see the traceback in the driver log"
        log.error("DEFT hard stop at %s/%s: %s", step.label, step.stage, reason, exc_info=exc)
        label = step.label or BASELINE
        commit(self.rd.deft_state, label, step.stage, {"reason": reason, "fix": fix}, duration_s=_since(t0),
               summary=f"hard stop: {reason}", status="error", registry=self.registry)
        refresh_report(self.rd.root)
        track_iteration(self.ctx.inputs.tracking, self.rd, label)
        msg = (f"DEFT loop hard stop at {label}/{step.stage}: {reason}\n"
               f"What to fix first: {fix or 'see ' + str(self.rd.report)}\n"
               f"Then resume with: {resume_command(self.rd)}")
        return LoopOutcome("failed", self.rd.root, message=msg)


def _since(t0: float) -> float:
    return max(time.monotonic() - t0, 1e-3)


def run_loop(run_dir: str | Path, cfg: RunConfig, inputs: LoopContext) -> LoopOutcome:
    """Run (or resume) the DEFT loop of ``run_dir`` in a Ray actor; returns when it completes or stops.

    Starts a private local Ray when none is connected. Initialises ``deft_state.json`` (no
    pre-seeded baseline) if the caller did not. A hard-stopped state is re-opened: the interrupted
    stage runs again. The loop trains from a spec that names its backbone file
    (:func:`raypipe.backends.stage_backbone`; a no-op when the caller staged it): ``loop_stop``
    hands that file over in TAO's words.
    """
    import ray

    from raypipe._ray import ray_session
    from raypipe.backends import stage_backbone

    rd = RunDir(run_dir).resolve()
    inputs = dataclasses.replace(inputs, spec=stage_backbone(cfg, rd.root, inputs.spec))
    if not rd.deft_state.is_file():
        initialise_state(rd.root, config_block=config_block(cfg, inputs, rd),
                         metric_contract=cfg.phase2.metric_contract, max_iterations=cfg.phase2.max_iterations,
                         execution_policy=cfg.execution_policy.tao_policy())
        refresh_report(rd.root)
    with ray_session():
        actor_class: Any = ray.remote(num_cpus=0, max_restarts=0)(DeftLoop)
        actor = actor_class.remote(rd.root, cfg, inputs)
        try:
            outcome: LoopOutcome = ray.get(actor.run.remote())
        finally:
            ray.kill(actor)
    return outcome


__all__ = ["DeftLoop", "LoopOutcome", "refresh_report", "run_loop"]
