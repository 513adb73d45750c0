"""``train``: one training run as a Ray task; the evidence must name a NEW checkpoint under ``RD/<label>/train/``.

The baseline trains from the run spec (or is pre-seeded with Phase 1's winner, so this stage is
skipped); iteration N warm-starts from the best checkpoint so far on ``train_combined_iter<N>.csv``
(see :mod:`raypipe.deft.train` for why a warm start, never a resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe.deft.stages._checks import fail, finite, training_spec, under
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import BASELINE, RunDir, iteration_number

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class _TrainRequired(TypedDict):
    best_ckpt_path: FilePath
    training_spec: str | dict[str, Any]  # a spec file, or the spec inline


class TrainEvidence(_TrainRequired, total=False):
    best_ckpt_kind: str
    val_loss: float | None
    train_metric: float | None
    source: str  # automl_phase1 | pre-seeded (a baseline the loop did not train)
    latest_ckpt_path: FilePath
    val_far: float | None
    best_epoch: int
    num_epochs: int
    init_ckpt: str | None
    train_rows: int
    parent_ckpt_path: str


class TrainStage(Stage):
    name = "train"
    resources = ResourceClass.TRAIN
    evidence = TrainEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.train import TrainJob, iteration_spec, run_train

        inputs = ctx.inputs
        out = ctx.rd.iteration(label).train.path
        if label == BASELINE:
            # A baseline trained here (no Phase 1) honours the spec's own warm start, if any.
            init_key = inputs.spec.get("train", {}).get("pretrained_model_path")
            init = Path(init_key) if init_key else None
            spec = iteration_spec(ctx.base_spec(state), overrides=None, init_ckpt=init)
            job = TrainJob(inputs.backend, inputs.backend_options, spec, inputs.train_csv, inputs.images_dir,
                           inputs.val_csv, inputs.images_dir, out, init, ctx.cfg.seed)
        else:
            entry = state["iterations"][label]
            init = Path(ctx.best_so_far(state)["best_ckpt_path"])
            p2 = ctx.cfg.phase2
            spec = iteration_spec(ctx.base_spec(state), overrides=p2.train_overrides, init_ckpt=init,
                                  lr_scale=p2.finetune_lr_scale)
            job = TrainJob(inputs.backend, inputs.backend_options, spec, Path(entry["combined_training_csv"]),
                           inputs.root, inputs.val_csv, inputs.images_dir, out, init,
                           ctx.cfg.seed + iteration_number(label))
        return run_train(job, resources=ctx.resources(self.resources), placement=ctx.placement(f"{label}/train"))

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        from raypipe.backends.base import parse_checkpoint_name

        ckpt = Path(evidence["best_ckpt_path"])
        if ckpt.stat().st_size <= 0:
            fail(label, self.name, f"checkpoint {ckpt} is empty")
        try:
            _, step = parse_checkpoint_name(ckpt)
        except ValueError:
            step = None
        if step == 0:
            fail(label, self.name, f"checkpoint {ckpt} is from step 0: a zero-step training is a failure")
        for other, entry in state.get("iterations", {}).items():
            if other == label:
                continue
            for key in ("best_ckpt_path", "latest_ckpt_path"):
                prev = entry.get(key)
                if prev and Path(prev).resolve() == ckpt.resolve():
                    fail(label, self.name, f"checkpoint {ckpt} is not new: it is {other}'s {key}")
        train_dir = RunDir(state["results_dir"]).iteration(label).train.path
        if not under(ckpt, train_dir):
            fail(label, self.name, f"checkpoint {ckpt} does not lie under {train_dir}")
        training_spec(label, self.name, evidence["training_spec"])
        for key in ("val_loss", "val_far", "train_metric"):
            if evidence.get(key) is not None and not finite(evidence[key]):
                fail(label, self.name, f"'{key}' must be a finite number or null, got {evidence[key]!r}")

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        init = evidence.get("init_ckpt")
        vf = evidence.get("val_far")
        return (f"trained {evidence.get('num_epochs', '?')} epoch(s) on {evidence.get('train_rows', '?')} rows"
                + (f" from {Path(init).name}" if init else "") + f"; best_val {Path(evidence['best_ckpt_path']).name}"
                + (f" val_far {vf:.2f}%" if vf is not None else ""))
