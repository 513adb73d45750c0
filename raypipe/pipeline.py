"""The three phases end to end: every step reads its inputs from disk, so a run killed at any
moment resumes from its files with ``--resume RD``.

Phase 1 (AutoML on the validation set) → handoff (merged spec and checkpoint into the run dir) →
Phase 2 (the DEFT loop, :mod:`raypipe.deft`) → Phase 3 (AutoML warm-started from the loop's best,
its winner scored on the KPI set by the loop's own evaluate code) → the deliverable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from raypipe import pipeline_state
from raypipe import tao_interop as ti
from raypipe._testhook import point
from raypipe.backends import backend_options
from raypipe.console import fmt_duration, follow_deft, get_console, phase_heading
from raypipe.deft.context import LoopContext, config_block
from raypipe.deft.driver import refresh_report
from raypipe.deft.state import initialise_state, load_state, ordered_labels
from raypipe.handoffs import Phase1Handoff, phase1_to_phase2
from raypipe.metrics import pick_best
from raypipe.rundir import BASELINE, FINAL_AUTOML, RunDir, is_loop_label, iteration_number, resume_command
from raypipe.scoring import record_on_best_model
from raypipe.spec import flatten, load_training_spec
from raypipe.trajectory import write_trajectory

if TYPE_CHECKING:
    from raypipe.automl import SweepInputs, SweepResult
    from raypipe.config import RunConfig
    from raypipe.workspace import Workspace

log = logging.getLogger("raypipe")


class PipelineFailed(RuntimeError):
    """A hard stop: the run is marked failed; the message ends with what to fix and how to resume."""


@dataclass
class PipelineOutcome:
    status: str
    run_dir: Path
    best_model_json: Path | None
    trajectory: dict[str, Any]
    message: str = ""


@dataclass(frozen=True)
class LoopBest:
    """The loop's best evaluated entry: where Phase 3 starts from, and what it must beat."""

    label: str
    entry: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return Path(self.entry["best_ckpt_path"])

    @property
    def value(self) -> float:
        return float(self.entry["metric_result"]["value"])


def _registered_final(state: dict[str, Any]) -> dict[str, Any] | None:
    """Phase 3's winner as the DEFT state holds it once it is scored and registered (None: not yet)."""
    entry = state.get("iterations", {}).get(FINAL_AUTOML)
    if isinstance(entry, dict) and entry.get("stage_completed") == "evaluate" and "far_pct" in entry:
        return entry
    return None


class Pipeline:
    """Runs Phase 1 → handoff → Phase 2 → Phase 3 → the deliverable for one run dir."""

    def __init__(self, run_dir: str | Path | RunDir, cfg: RunConfig, workspace: Workspace,
                 run_spec: dict[str, Any], tracking: Any = None,
                 execution_policy: Mapping[str, Any] | None = None, deadline: float | None = None) -> None:
        self.rd = RunDir(run_dir).resolve()
        # When a new run's time budget runs out (``time.time()``); None: no budget, or a resumed run
        # (its budget was spent by the stop). Phase 3's trials are planned against it when it starts.
        self.deadline = deadline
        self.cfg = cfg
        self.ws = workspace
        self.run_spec = run_spec
        self.tracking = tracking
        self.contract = cfg.phase2.contract
        # TAO's record of the run's network mode (run.py resolves it once per run; a resumed run keeps it).
        self.policy = dict(execution_policy) if execution_policy is not None else cfg.execution_policy.tao_policy()
        self.backend_options = backend_options(cfg, workspace_root=workspace.root, run_dir=self.rd.root,
                                               execution_policy=self.policy)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> PipelineOutcome:
        p1 = self.phase1()
        ok = self.phase2(p1)
        if ok:
            self.phase3(p1)
        traj = write_trajectory(self.rd.root, sealed_test=self.score_sealed_test() if ok else None)
        if ok:
            record_on_best_model(self.rd, traj)
            refresh_report(self.rd.root)  # now with the verdict and the sealed test numbers
        state = load_state(self.rd.deft_state)
        status = "complete" if ok and state.get("status") == "complete" else "failed"
        # The deliverable goes to MLflow before the run is marked complete: a resume of a complete
        # run has nothing left to do, so nothing may remain undone after the mark.
        self._log_final_artifacts(status)
        pipeline_state.set_run_status(self.rd, status)
        point("complete")
        bm = self.rd.best_model
        return PipelineOutcome(status=status, run_dir=self.rd.root, best_model_json=bm if bm.is_file() else None,
                               trajectory=traj, message=self._failure_message(state) if status == "failed" else "")

    # -- Phase 1 ---------------------------------------------------------------------------
    def phase1(self) -> Phase1Handoff | None:
        if not self.cfg.phase1.enabled:
            if self._phase_status("phase1") != "skipped":
                pipeline_state.mark(self.rd, "phase1", "skipped")
            return None
        if self._phase_status("phase1") == "complete" and self.rd.deft_state.is_file():
            return Phase1Handoff.from_json(pipeline_state.load(self.rd)["phases"]["phase1"]["handoff"])
        from raypipe.automl import SweepConfig, run_sweep

        pipeline_state.mark(self.rd, "phase1", "in_progress")
        init = self.cfg.phase1.pretrained_model_path
        sweep_dir = self.rd.sweep("phase1")
        with self._phase_run("phase1") as run:
            sweep = run_sweep(
                SweepConfig.from_config(self.cfg, "phase1"),
                self._sweep_inputs(base_spec=self.run_spec, train_csv=self.ws.train_csv,
                                   train_images_dir=self.ws.images_dir, val_csv=self.ws.val_csv,
                                   val_images_dir=self.ws.images_dir, init_ckpt=Path(init) if init else None,
                                   tracking=run.context()),
                sweep_dir.path, name=sweep_dir.name)
            run.log_metrics({"best_val_far": sweep.best_score})
            run.log_dataset(self.ws.train_csv, "training_set", "training")
            run.log_dataset(self.ws.val_csv, "validation_set", "validation")
            run.log_artifact(sweep.best_rec_path)
            run.log_artifact(sweep.trials_csv)
            handoff = phase1_to_phase2(self.rd, self.ws.spec_path, sweep, self.run_spec)
            log.info("Phase 1 → 2 handoff: %s", handoff.note)
            self._lineage({"checkpoint": str(handoff.source_ckpt), "phase": "phase1", "trial": handoff.trial_id,
                           "parent_checkpoint": str(init) if init else None,
                           "training_data_digest": self._digest(self.ws.train_csv),
                           "metric": {"name": "val_far", "value": handoff.score, "split": "validation"},
                           "mlflow_run_id": run.run_id})
        self._init_deft_state(handoff)
        point("phase1_handoff")
        pipeline_state.mark(self.rd, "phase1", "complete", handoff=handoff.to_json(), best_val_far=handoff.score)
        return handoff

    def _init_deft_state(self, handoff: Phase1Handoff) -> None:
        """The DEFT state with Phase 1's winner pre-seeded as the baseline (its training is skipped)."""
        baseline = {"stage_completed": "train", "best_ckpt_path": str(handoff.baseline_ckpt),
                    "train_metric": handoff.score, "source": "automl_phase1",
                    "training_spec": str(handoff.training_spec_path)}
        p2 = self.cfg.phase2
        initialise_state(self.rd.root, config_block=config_block(self.cfg, self._loop_inputs(handoff), self.rd),
                         metric_contract=self.contract, max_iterations=p2.max_iterations,
                         execution_policy=self.policy, baseline=baseline)
        refresh_report(self.rd.root)

    # -- Phase 2 ---------------------------------------------------------------------------
    def phase2(self, p1: Phase1Handoff | None) -> bool:
        from raypipe.deft.driver import run_loop

        if self._phase_status("phase2") == "complete":
            return True
        # A hard-stopped loop is retried on --resume: run_loop re-opens its failed state once the
        # user has fixed the cause; within one invocation a hard stop ends the run.
        pipeline_state.mark(self.rd, "phase2", "in_progress")
        with self._phase_run("phase2") as run:
            with follow_deft(self.rd.root):  # the loop runs in an actor: its progress is printed from here
                outcome = run_loop(self.rd.root, self.cfg, self._loop_inputs(p1, tracking=run.context()))
            state = load_state(self.rd.deft_state)
            self._lineage_phase2(state, p1, run.run_id)
            self._log_iteration_datasets(state, run.context())
            for path in (self.rd.deft_state, self.rd.report, self.rd.mining_history):
                if path.is_file():
                    run.log_artifact(path)
        if outcome.status != "complete":
            pipeline_state.mark(self.rd, "phase2", "failed", reason=outcome.message)
            pipeline_state.mark(self.rd, "phase3", "skipped", reason="Phase 2 hard-stopped")
            return False
        pipeline_state.mark(self.rd, "phase2", "complete")
        return True

    def _loop_inputs(self, p1: Phase1Handoff | None, tracking: Any = None) -> LoopContext:
        """The loop's inputs; the spec file it names is the Phase 1-merged one in the run dir when Phase 1 ran."""
        return LoopContext.from_workspace(self.ws, spec=self.run_spec, backend=self.cfg.backend,
                                          backend_options=self.backend_options, tracking=tracking,
                                          spec_path=p1.merged_spec if p1 is not None else None)

    def _loop_best(self, state: dict[str, Any]) -> LoopBest:
        labels = ordered_labels(state, include_final=False)
        best = pick_best(self.contract, [(lb, state["iterations"][lb]) for lb in labels])
        if best is None:
            raise PipelineFailed("Phase 2 produced no evaluated entry")
        return LoopBest(best.label, dict(best.entry))

    # -- Phase 3 ---------------------------------------------------------------------------
    def phase3(self, p1: Phase1Handoff | None) -> None:
        if not self.cfg.phase3.enabled:
            pipeline_state.mark(self.rd, "phase3", "skipped", reason="disabled in config")
            return
        if self._phase_status("phase3") == "complete":
            return
        from raypipe.deft import register_final_automl

        state = load_state(self.rd.deft_state)
        best = self._loop_best(state)
        if (registered := _registered_final(state)) is not None:
            # Stopped after Phase 3's winner was registered: register it once, finish from there.
            self._finish_phase3(best, registered)
            return
        train_csv, train_images = self._phase3_training_set(state)
        # A resumed Phase 3 keeps the trial count it started with (its sweep is restored, not redone).
        trials = pipeline_state.load(self.rd)["phases"]["phase3"].get("trials") or self._phase3_trials(train_csv)
        pipeline_state.mark(self.rd, "phase3", "in_progress", warm_start=str(best.checkpoint),
                            training_csv=str(train_csv), loop_best=best.label, trials=trials)
        with self._phase_run("phase3") as run:
            sweep = self._phase3_sweep(best, train_csv, train_images, trials, centred=p1 is not None,
                                       tracking=run.context())
            run.log_dataset(train_csv, train_csv.stem, "training")
            run.log_artifact(sweep.best_rec_path)
            run.log_artifact(sweep.trials_csv)
            # Phase 3's winner is scored on the KPI set with the loop's evaluator, so the numbers compare.
            entry = self._evaluate_final(sweep, best, train_csv)
            run.log_metrics({"kpi_far_pct": entry["far_pct"], "best_val_far": sweep.best_score})
            self._lineage({"checkpoint": entry["best_ckpt_path"], "phase": "phase3", "trial": sweep.best_trial_id,
                           "parent_checkpoint": str(best.checkpoint), "training_data_digest": self._digest(train_csv),
                           "metric": {"name": "far_pct", "value": entry["far_pct"], "split": "kpi"},
                           "mlflow_run_id": run.run_id})
        # TAO's Phase 3 handoff: the entry without an event, then the handoff files re-picked (the
        # loop's one loop_stop stands).
        register_final_automl(self.rd.deft_state, entry)
        self._finish_phase3(best, entry)

    def _finish_phase3(self, best: LoopBest, entry: dict[str, Any]) -> None:
        """The deliverable from the registered winner, and Phase 3 marked complete (idempotent)."""
        from raypipe.deft.finalize import refresh_handoff

        point("phase3_finalize")
        refresh_handoff(self.rd.root)
        refresh_report(self.rd.root)
        regressed = self.contract.better(best.value, entry["far_pct"])
        pipeline_state.mark(self.rd, "phase3", "complete", kpi_far_pct=entry["far_pct"], loop_best_far_pct=best.value,
                            regressed=regressed)
        if regressed:
            log.warning("Phase 3 regressed on the KPI set (%.2f %% vs the loop's %.2f %%): the loop's best (%s) "
                        "stays the deliverable", entry["far_pct"], best.value, best.label)

    def _phase3_training_set(self, state: dict[str, Any]) -> tuple[Path, Path]:
        """(CSV, image root) Phase 3 trains on: the last iteration's combined CSV (its rows are
        workspace-root-relative), or the base training CSV when the loop added nothing."""
        csv = ti.phase3_training_csv(state)
        if csv.resolve() == Path(self.ws.train_csv).resolve():
            return Path(self.ws.train_csv), Path(self.ws.images_dir)  # the baseline met the KPI
        return csv, Path(self.ws.root)

    def _phase3_trials(self, train_csv: Path) -> int:
        """Phase 3's trials: as configured (or as planned at approval), or, for a new run under a time
        budget, as many as fit in the time left now (``budget.phase3_trials_for``)."""
        from raypipe import budget
        from raypipe._io import read_json
        from raypipe.status import epoch_seconds
        from raypipe.workspace import read_rows

        planned = self.cfg.phase3.automl_max_recommendations
        if self.deadline is None or not self.rd.time_plan.is_file():
            return planned
        model = budget.CostModel.from_json(read_json(self.rd.time_plan))
        measured = epoch_seconds(self.rd.sweep("phase1"))
        if measured:  # Phase 1's trials, timed in this run: truer than one probe epoch (a load spike skews it)
            model = dataclasses.replace(model, epoch_s=statistics.median(measured))
        left = self.deadline - time.time()
        trials = budget.phase3_trials_for(left, model, len(read_rows(train_csv)), budget.Knobs.of(self.cfg).epochs)
        log.info("Phase 3: %d trial(s) fit in the %.1f min left of the time budget (%d planned at approval; "
                 "%.1f s per epoch, %s)", trials, left / 60, planned, model.epoch_s,
                 "as Phase 1's trials measured" if measured else "as the probe measured")
        return trials

    def _phase3_sweep(self, best: LoopBest, train_csv: Path, train_images: Path, trials: int, *, centred: bool,
                      tracking: Any) -> SweepResult:
        from raypipe._io import read_json
        from raypipe.automl import SweepConfig, run_sweep

        centre = flatten(read_json(self.rd.sweep("phase1").best_rec)["best"]["specs"]) if centred else None
        sweep_dir = self.rd.sweep("phase3")
        cfg = self.cfg.replace(phase3=self.cfg.phase3.replace(automl_max_recommendations=trials))
        return run_sweep(
            SweepConfig.from_config(cfg, "phase3"),
            self._sweep_inputs(base_spec=load_training_spec(best.entry["training_spec"]), train_csv=train_csv,
                               train_images_dir=train_images, val_csv=self.ws.val_csv,
                               val_images_dir=self.ws.images_dir, init_ckpt=best.checkpoint, centre=centre,
                               tracking=tracking),
            sweep_dir.path, name=sweep_dir.name)

    def _evaluate_final(self, sweep: SweepResult, loop_best: LoopBest, train_csv: Path) -> dict[str, Any]:
        """Phase 3's winner scored on the KPI set by the evaluate stage's code, as a Ray task with the
        loop's training resources (on a cluster the driver's node has no GPU); returns its
        ``iterations.final_automl`` entry (which names ``train_csv``, the CSV it trained on)."""
        from raypipe._io import atomic_write_text, read_json
        from raypipe.deft.evaluate import run_evaluate
        from raypipe.placement import Placement
        from raypipe.spec import dump_spec

        spec_path = atomic_write_text(self.rd.sweep("phase3").best_spec, dump_spec(sweep.best_spec))
        evidence = run_evaluate(
            label=FINAL_AUTOML, out=self.rd.iteration(FINAL_AUTOML), ckpts={"best_val": Path(sweep.best_checkpoint)},
            spec=sweep.best_spec, training_spec=str(spec_path), contract=self.contract, kpi_csv=self.ws.kpi_csv,
            images_dir=self.ws.images_dir, backend=self.cfg.backend, backend_options=self.backend_options,
            resources=self.cfg.phase2.resources.train,
            placement=Placement(str(self.rd.root), FINAL_AUTOML, f"{FINAL_AUTOML}/inference"))
        written = read_json(evidence["metric_result"]["evidence_path"])
        return ti.final_automl_entry(
            best_ckpt_path=evidence["best_ckpt_path"], training_spec=spec_path,
            metric_result=ti.metric_result_record(written, evidence_path=evidence["metric_result"]["evidence_path"],
                                                  passed=evidence["metric_result"]["passed"]),
            threshold=evidence["threshold"], training_csv=train_csv, metric_name=self.contract.name,
            inference_csv=evidence["inference_csv"], parent_ckpt_path=loop_best.checkpoint)

    # -- after the last phase: the sealed test split ------------------------------------------
    def score_sealed_test(self) -> dict[str, Any]:
        """Score every trajectory step on the workspace's sealed test split (on ``--resume`` only
        what is missing); returns the split's status for ``trajectory.json``. A scoring failure is
        reported, not fatal: the deliverable stands, and a resume retries the missing steps."""
        from raypipe.scoring import ScoringError, describe_test_split, score_sealed_test

        if self.ws.test_csv is None:
            log.warning("no sealed test split (test/testing_set.csv): nothing to score; the delivered model is "
                        "judged only on the KPI set that chose it")
            return {"status": "absent", "note": "the workspace has no test/testing_set.csv"}
        log.info("scoring every trajectory step on the %s", describe_test_split(self.ws.test_csv))
        try:
            out = score_sealed_test(self.rd, test_csv=self.ws.test_csv, images_dir=self.ws.images_dir,
                                    contract=self.contract, backend=self.cfg.backend,
                                    backend_options=self.backend_options, resources=self.cfg.phase2.resources.train)
        except ScoringError as exc:
            log.warning("%s; resume to retry: %s", exc, resume_command(self.rd))
            return {"status": "failed", "note": str(exc)}
        reused = len(out.by_step) - len(out.scored_now)
        log.info("sealed test split: %d step(s) scored, %d already scored or sharing a checkpoint",
                 len(out.scored_now), reused)
        return {"status": "scored"}

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _phase_run(self, phase: str) -> Iterator[Any]:
        """The phase's MLflow run, and its lines on the console (a heading, every line tagged, its time)."""
        from raypipe import tracking as tr

        console = get_console()
        console.rule(phase_heading(phase))
        t0 = time.monotonic()
        with console.in_phase(phase), tr.child_run(self.tracking, phase, key=phase,
                                                   tags={"raypipe.phase": phase}) as run:
            yield run
        console.line(f"done in {fmt_duration(time.monotonic() - t0)}", phase=phase)

    def _phase_status(self, phase: str) -> str:
        status: str = pipeline_state.load(self.rd)["phases"][phase]["status"]
        return status

    def _sweep_inputs(self, **kw: Any) -> SweepInputs:
        from raypipe.automl import SweepInputs

        return SweepInputs(backend=self.cfg.backend, backend_options=self.backend_options, run_dir=self.rd.root, **kw)

    # -- tracking & lineage ------------------------------------------------------------------
    def _digest(self, csv: Path) -> str | None:
        from raypipe import tracking as tr

        return tr.data_digest(Path(csv))

    def _lineage(self, record: dict[str, Any]) -> None:
        from raypipe import tracking as tr

        tr.record_lineage(self.rd.root, record)

    def _lineage_phase2(self, state: dict[str, Any], p1: Phase1Handoff | None, run_id: str | None) -> None:
        its = state.get("iterations", {})
        for label in ordered_labels(state, include_final=False):
            e = its[label]
            if e.get("status") != "complete":
                continue
            if label == BASELINE:
                parent = str(p1.source_ckpt) if p1 else None
                data = Path(self.ws.train_csv)
            else:
                parent = _warm_start_of(e)
                data = Path(e["combined_training_csv"]) if e.get("combined_training_csv") else Path(self.ws.train_csv)
            self._lineage({"checkpoint": e["best_ckpt_path"], "phase": "phase2", "iteration": label,
                           "parent_checkpoint": parent, "training_data_digest": self._digest(data),
                           "metric": {"name": "far_pct", "value": e["metric_result"]["value"], "split": "kpi"},
                           "mlflow_run_id": run_id})

    def _log_iteration_datasets(self, state: dict[str, Any], phase_ctx: Any) -> None:
        """Each iteration's combined training CSV becomes an MLflow dataset input of its run."""
        from raypipe import tracking as tr

        for label, e in state.get("iterations", {}).items():
            if is_loop_label(label) and iteration_number(label) > 0 and e.get("combined_training_csv"):
                with tr.child_run(phase_ctx, label, key=f"phase2/{label}") as it:
                    it.log_dataset(Path(e["combined_training_csv"]), f"train_combined_{label}", "training")

    def _log_final_artifacts(self, status: str) -> None:
        from raypipe import tracking as tr
        from raypipe._io import read_json

        if self.tracking is None:
            return
        with tr.child_run(self.tracking, "deliverable", key="deliverable") as run:
            for path in self.rd.deliverables():
                if path.is_file():
                    run.log_artifact(path)
        if status == "complete" and self.rd.best_model.is_file():
            best = read_json(self.rd.best_model)
            chain = tr.lineage_chain(self.rd.root, best["checkpoint"])
            tags = {"raypipe.run_dir": str(self.rd.root), "raypipe.iteration": str(best.get("iteration")),
                    "raypipe.far_pct": f"{best.get('far_pct')}", "raypipe.inference_spec": str(self.rd.inference_spec)}
            tr.register_model(self.tracking, Path(best["checkpoint"]), self.cfg.tracking.registered_model_name,
                              chain, tags)
            # The verdict and the KPI / sealed test numbers on the pipeline run, its phases and the version.
            tr.log_outcome(self.tracking, best, read_json(self.rd.trajectory))

    def _failure_message(self, state: dict[str, Any]) -> str:
        errors = [e for e in state.get("events", []) if e.get("status") == "error"]
        reason = errors[-1]["summary"] if errors else f"see {self.rd.deft_state}"
        return f"Phase 2 hard stop: {reason}\nFix the cause, then resume: {resume_command(self.rd)}"


def _warm_start_of(entry: dict[str, Any]) -> str | None:
    """The checkpoint an iteration was warm-started from (lineage is best effort: a moved spec gives None)."""
    from raypipe.spec import SpecError

    spec = entry.get("training_spec")
    try:
        s = load_training_spec(spec) if spec else {}
    except (OSError, SpecError):
        return None
    value = (s.get("train") or {}).get("pretrained_model_path")
    return str(value) if value else None
