"""The three phases end to end (SPEC §7, §9): every step reads its inputs from disk, so a run
killed at any moment resumes from its files with ``--resume RD``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from raypipe import pipeline_state
from raypipe._io import read_json
from raypipe.handoffs import Phase1Handoff, load_training_spec, phase1_to_phase2
from raypipe.metrics import MetricContract, pick_best, run_evaluator
from raypipe.spec import flatten
from raypipe.trajectory import format_table, write_trajectory

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


def resume_hint(run_dir: Path) -> str:
    return f"python -m raypipe.run --resume {run_dir}"


class Pipeline:
    """Runs Phase 1 → handoff → Phase 2 → handoff → Phase 3 → finalize for one run dir."""

    def __init__(self, run_dir: Path, cfg: dict[str, Any], workspace: Any, run_spec: dict[str, Any],
                 tracking: Any = None) -> None:
        self.rd = Path(run_dir).resolve()
        self.cfg = cfg
        self.ws = workspace
        self.run_spec = run_spec
        self.tracking = tracking
        self.contract = MetricContract.from_dict(cfg["phase2"]["metric_contract"])

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _phase_run(self, phase: str) -> Iterator[Any]:
        from raypipe import tracking as tr

        with tr.child_run(self.tracking, phase, key=phase, tags={"raypipe.phase": phase}) as run:
            yield run

    def _phase_status(self, phase: str) -> str:
        return pipeline_state.load(self.rd)["phases"][phase]["status"]

    def _sweep_inputs(self, **kw: Any) -> Any:
        from raypipe.automl import SweepInputs

        return SweepInputs(backend=self.cfg["backend"], backend_options=self._backend_options(), run_dir=self.rd, **kw)

    def _backend_options(self) -> dict[str, Any]:
        if self.cfg["backend"] == "builtin":
            return {"device": self.cfg["device"]}
        return {**self.cfg["tao"], "workspace_root": str(self.ws.root), "run_dir": str(self.rd)}

    # -- phases ----------------------------------------------------------------------------
    def run(self) -> PipelineOutcome:
        p1 = self.phase1()
        ok = self.phase2(p1)
        if ok:
            self.phase3(p1)
        traj = write_trajectory(self.rd)
        state = read_json(self.rd / "deft_state.json")
        status = "complete" if ok and state.get("status") == "complete" else "failed"
        pipeline_state.set_run_status(self.rd, status)
        bm = self.rd / "best_model.json"
        self._log_final_artifacts(status)
        return PipelineOutcome(status=status, run_dir=self.rd, best_model_json=bm if bm.is_file() else None,
                               trajectory=traj, message=self._failure_message(state) if status == "failed" else "")

    def phase1(self) -> Phase1Handoff | None:
        if not self.cfg["phase1"]["enabled"]:
            if self._phase_status("phase1") != "skipped":
                pipeline_state.mark(self.rd, "phase1", "skipped")
            self._init_deft_state(None)
            return None
        from raypipe.automl import SweepConfig, run_sweep
        from raypipe.deft import load_state

        state_file = self.rd / "deft_state.json"
        if self._phase_status("phase1") == "complete" and state_file.is_file():
            h = pipeline_state.load(self.rd)["phases"]["phase1"]["handoff"]
            return Phase1Handoff(**{k: (Path(v) if k.endswith(("ckpt", "spec_path", "workspace_spec")) else v)
                                    for k, v in h.items()})
        pipeline_state.mark(self.rd, "phase1", "in_progress")
        with self._phase_run("phase1") as run:
            init = self.cfg["phase1"].get("pretrained_model_path")
            sweep = run_sweep(
                SweepConfig.from_config(self.cfg, "phase1"),
                self._sweep_inputs(base_spec=self.run_spec, train_csv=self.ws.train_csv,
                                   train_images_dir=self.ws.images_dir, val_csv=self.ws.val_csv,
                                   val_images_dir=self.ws.images_dir,
                                   init_ckpt=Path(init) if init else None, tracking=run.context()),
                self.rd / "phase1_automl", name="phase1")
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
        h = {k: str(v) if isinstance(v, Path) else v for k, v in handoff.__dict__.items()}
        pipeline_state.mark(self.rd, "phase1", "complete", handoff=h, best_val_far=handoff.score)
        _ = load_state  # state exists from here on
        return handoff

    def _init_deft_state(self, handoff: Phase1Handoff | None) -> None:
        from raypipe.deft import LoopConfig, initialise_state

        lc = LoopConfig.from_config(self.cfg)
        baseline = None
        if handoff is not None:
            baseline = {"stage_completed": "train", "best_ckpt_path": str(handoff.baseline_ckpt),
                        "train_metric": handoff.score, "source": "automl_phase1",
                        "training_spec": str(handoff.training_spec_path)}
        initialise_state(self.rd, config_block=self._state_config_block(), metric_contract=self.contract,
                         max_iterations=lc.max_iterations, execution_policy=dict(self.cfg["execution_policy"]),
                         kpi_target=self.contract.kpi_text, baseline=baseline)

    def _state_config_block(self) -> dict[str, Any]:
        p2 = self.cfg["phase2"]
        ws = self.ws
        gpus = self.cfg["phase2"]["resources"]["train"].get("gpu", 0)
        return {
            "specs_file": str(ws.spec_path), "training_csv": str(ws.train_csv), "validation_csv": str(ws.val_csv),
            "kpi_test_csv": str(ws.kpi_csv), "images_dir": str(ws.images_dir),
            "mining_pool_csv": str(ws.pool_csv) if ws.pool_csv else None,
            "mining_images_root": str(ws.images_dir), "num_gpus": gpus, "gpu_model": _gpu_model(),
            "batch_size": self.run_spec["dataset"]["classify"].get("batch_size"),
            "num_epochs": self.run_spec["train"].get("num_epochs"), "backend": self.cfg["backend"],
            "sdg": {"kind": p2["sdg"]["kind"], "num_SDG": p2["sdg"]["num_SDG"]},
            "mining_filter": {**copy.deepcopy(p2["mining_filter"]),
                              "history_aware": {**p2["mining_filter"]["history_aware"],
                                                "history_file": str(self.rd / "mining_history.json")}},
        }

    def phase2(self, p1: Phase1Handoff | None) -> bool:
        from raypipe.deft import LoopConfig, LoopContext, run_loop

        status = self._phase_status("phase2")
        if status == "complete":
            return True
        # A hard-stopped loop is retried on --resume: run_loop re-opens its failed state once the
        # user has fixed the cause; within one invocation a hard stop ends the run.
        pipeline_state.mark(self.rd, "phase2", "in_progress")
        with self._phase_run("phase2") as run:
            ctx = LoopContext.from_workspace(self.ws, spec=self.run_spec, backend=self.cfg["backend"],
                                             backend_options=self._backend_options(), tracking=run.context())
            outcome = run_loop(self.rd, LoopConfig.from_config(self.cfg), ctx)
            state = read_json(self.rd / "deft_state.json")
            self._lineage_phase2(state, p1, run.run_id)
            self._log_iteration_datasets(state, run.context())
            for name in ("deft_state.json", "DEFT_Loop_Report.html", "mining_history.json"):
                if (self.rd / name).is_file():
                    run.log_artifact(self.rd / name)
        if outcome.status != "complete":
            pipeline_state.mark(self.rd, "phase2", "failed", reason=outcome.message)
            pipeline_state.mark(self.rd, "phase3", "skipped", reason="Phase 2 hard-stopped")
            return False
        pipeline_state.mark(self.rd, "phase2", "complete")
        return True

    def _loop_best(self, state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        its = state["iterations"]
        labels = ["baseline"] + sorted((k for k in its if k.startswith("iter")), key=lambda k: int(k[4:]))
        best = pick_best(self.contract, [(l, its[l]) for l in labels if l in its])
        if best is None:
            raise PipelineFailed("Phase 2 produced no evaluated entry")
        return best.label, dict(best.entry)

    def phase3(self, p1: Phase1Handoff | None) -> None:
        if not self.cfg["phase3"]["enabled"]:
            pipeline_state.mark(self.rd, "phase3", "skipped", reason="disabled in config")
            return
        if self._phase_status("phase3") == "complete":
            return
        from raypipe.automl import SweepConfig, run_sweep
        from raypipe.deft import finalize, register_final_automl

        state = read_json(self.rd / "deft_state.json")
        best_label, best = self._loop_best(state)
        its = state["iterations"]
        merged = [k for k in its if k.startswith("iter") and its[k].get("combined_training_csv")]
        if merged:
            final = max(merged, key=lambda k: int(k[4:]))
            train_csv, train_images = Path(its[final]["combined_training_csv"]), self.ws.root
        else:  # the baseline met the KPI: nothing was added, refine on the base training set
            train_csv, train_images = self.ws.train_csv, self.ws.images_dir
        pipeline_state.mark(self.rd, "phase3", "in_progress", warm_start=best["best_ckpt_path"],
                            training_csv=str(train_csv), loop_best=best_label)
        centre = None
        if p1 is not None:
            best_rec = read_json(self.rd / "phase1_automl" / "best_rec.json")
            centre = flatten(best_rec["best"]["specs"])
        with self._phase_run("phase3") as run:
            sweep = run_sweep(
                SweepConfig.from_config(self.cfg, "phase3"),
                self._sweep_inputs(base_spec=load_training_spec(best["training_spec"]), train_csv=train_csv,
                                   train_images_dir=train_images, val_csv=self.ws.val_csv,
                                   val_images_dir=self.ws.images_dir, init_ckpt=Path(best["best_ckpt_path"]),
                                   centre=centre, tracking=run.context()),
                self.rd / "final_automl", name="final_automl")
            run.log_dataset(train_csv, train_csv.stem, "training")
            run.log_artifact(sweep.best_rec_path)
            run.log_artifact(sweep.trials_csv)
            # Phase 3's winner is scored on the KPI set with the loop's evaluator, so the numbers compare.
            entry = self._evaluate_final(sweep, best)
            run.log_metrics({"kpi_far_pct": entry["far_pct"], "best_val_far": sweep.best_score})
            self._lineage({"checkpoint": entry["best_ckpt_path"], "phase": "phase3", "trial": sweep.best_trial_id,
                           "parent_checkpoint": best["best_ckpt_path"], "training_data_digest": self._digest(train_csv),
                           "metric": {"name": "far_pct", "value": entry["far_pct"], "split": "kpi"},
                           "mlflow_run_id": run.run_id})
        register_final_automl(self.rd / "deft_state.json", entry)
        finalize(self.rd)
        loop_far = best["metric_result"]["value"]
        regressed = self.contract.better(loop_far, entry["far_pct"])
        pipeline_state.mark(self.rd, "phase3", "complete", kpi_far_pct=entry["far_pct"], loop_best_far_pct=loop_far,
                            regressed=regressed)
        if regressed:
            log.warning("Phase 3 regressed on the KPI set (%.2f %% vs the loop's %.2f %%): the loop's best (%s) "
                        "stays the deliverable", entry["far_pct"], loop_far, best_label)

    def _evaluate_final(self, sweep: Any, loop_best: dict[str, Any]) -> dict[str, Any]:
        import ray

        from raypipe._io import atomic_write_text
        from raypipe.deft.evaluate import InferJob, infer_job
        from raypipe.placement import Placement
        from raypipe.spec import dump_spec

        out = self.rd / "final_automl" / "inference" / "best_val"
        spec_path = self.rd / "final_automl" / "best_spec.yaml"
        atomic_write_text(spec_path, dump_spec(sweep.best_spec))
        # A Ray task with the loop's training resources: on a cluster the driver's node has no GPU.
        res = self.cfg["phase2"]["resources"]["train"]
        task = ray.remote(infer_job).options(num_cpus=float(res.get("cpu", 1)), num_gpus=float(res.get("gpu", 0)),
                                             max_retries=0)
        job = InferJob(self.cfg["backend"], self._backend_options(), sweep.best_spec, Path(sweep.best_checkpoint),
                       self.ws.kpi_csv, self.ws.images_dir, out)
        csv = Path(ray.get(task.remote(job, Placement(str(self.rd), "final_automl", "final_automl/inference/best_val"))))
        result = run_evaluator(self.contract, csv, out / "metric_result.json", iter_label="final_automl")
        return {"status": "complete", "stage_completed": "evaluate", "best_ckpt_path": str(Path(sweep.best_checkpoint).resolve()),
                "training_spec": str(spec_path), "metric_result": result, "threshold": result["threshold"],
                "far_pct": result["value"], "source": "automl_phase3", "inference_csv": str(csv),
                "parent_ckpt_path": loop_best["best_ckpt_path"]}

    # -- tracking & lineage ------------------------------------------------------------------
    def _digest(self, csv: Path) -> str | None:
        from raypipe import tracking as tr

        return tr.data_digest(Path(csv))

    def _lineage(self, record: dict[str, Any]) -> None:
        from raypipe import tracking as tr

        tr.record_lineage(self.rd, record)

    def _lineage_phase2(self, state: dict[str, Any], p1: Phase1Handoff | None, run_id: str | None) -> None:
        its = state.get("iterations", {})
        labels = ["baseline"] + sorted((k for k in its if k.startswith("iter")), key=lambda k: int(k[4:]))
        for label in labels:
            e = its.get(label)
            if not e or e.get("status") != "complete":
                continue
            if label == "baseline":
                parent = str(p1.source_ckpt) if p1 else None
                data = self.ws.train_csv
            else:
                parent = _warm_start_of(e)
                data = Path(e["combined_training_csv"]) if e.get("combined_training_csv") else self.ws.train_csv
            self._lineage({"checkpoint": e["best_ckpt_path"], "phase": "phase2", "iteration": label,
                           "parent_checkpoint": parent, "training_data_digest": self._digest(data),
                           "metric": {"name": "far_pct", "value": e["metric_result"]["value"], "split": "kpi"},
                           "mlflow_run_id": run_id})

    def _log_iteration_datasets(self, state: dict[str, Any], phase_ctx: Any) -> None:
        """Each iteration's combined training CSV becomes an MLflow dataset input of its run."""
        from raypipe import tracking as tr

        for label, e in state.get("iterations", {}).items():
            if label.startswith("iter") and e.get("combined_training_csv"):
                with tr.child_run(phase_ctx, label, key=f"phase2/{label}") as it:
                    it.log_dataset(Path(e["combined_training_csv"]), f"train_combined_{label}", "training")

    def _log_final_artifacts(self, status: str) -> None:
        from raypipe import tracking as tr

        if self.tracking is None:
            return
        with tr.child_run(self.tracking, "deliverable", key="deliverable") as run:
            for name in ("trajectory.json", "best_model.json", "best_model_inference_spec.yaml", "lineage.json",
                         "DEFT_Loop_Report.html", "deft_state.json", "preflight.md", "config.yaml"):
                if (self.rd / name).is_file():
                    run.log_artifact(self.rd / name)
        bm = self.rd / "best_model.json"
        if status == "complete" and bm.is_file():
            best = read_json(bm)
            chain = tr.lineage_chain(self.rd, best["checkpoint"])
            inference_spec = self.rd / "best_model_inference_spec.yaml"
            tr.register_model(self.tracking, Path(best["checkpoint"]), self.cfg["tracking"]["registered_model_name"],
                              chain, {"raypipe.run_dir": str(self.rd), "raypipe.iteration": str(best.get("iteration")),
                                      "raypipe.far_pct": f"{best.get('far_pct')}",
                                      "raypipe.inference_spec": str(inference_spec)})

    def _failure_message(self, state: dict[str, Any]) -> str:
        errors = [e for e in state.get("events", []) if e.get("status") == "error"]
        reason = errors[-1]["summary"] if errors else "see deft_state.json"
        return f"Phase 2 hard stop: {reason}\nFix the cause, then resume: {resume_hint(self.rd)}"


def _warm_start_of(entry: dict[str, Any]) -> str | None:
    spec = entry.get("training_spec")
    try:
        s = load_training_spec(spec) if spec else {}
    except Exception:  # noqa: BLE001 - lineage is best effort when a spec was moved by hand
        return None
    return (s.get("train") or {}).get("pretrained_model_path")


def _gpu_model() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def print_summary(outcome: PipelineOutcome) -> str:
    text = format_table(outcome.trajectory)
    tail = f"\nbest model: {outcome.best_model_json}" if outcome.best_model_json else ""
    return f"{text}{tail}"
