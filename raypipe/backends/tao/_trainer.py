"""``TaoTrainer``: the Trainer protocol on NVIDIA TAO's ``visual_changenet`` container."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_text
from raypipe.backends.base import EpochCallback, EpochMetrics, TrainingError, TrainResult, parse_checkpoint_name
from raypipe.backends.tao import _results as results
from raypipe.backends.tao import _spec as tao_spec
from raypipe.backends.tao._docker import (
    ContainerRun,
    device_requests,
    docker_client,
    is_secret_name,
    run_container,
)
from raypipe.backends.tao._layout import ContainerLayout
from raypipe.metrics import MetricUndefinedError, far_at_recall
from raypipe.spec import dump_spec
from raypipe.workspace._rows import is_defect, read_rows

DEFAULT_IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:6.25.9-pyt"
DEFAULT_BACKBONE = "c_radio_v2_vit_base_patch16_224"
# Backbone families visual_changenet classify builds; the container, not us, has the last word.
BACKBONE_PREFIXES = ("fan_", "vit_", "c_radio", "radio_")
VAL_SCORING = ("inference", "status")


class TaoEmbedUnsupported(NotImplementedError):
    """TAO's visual_changenet has no embedding entry point."""


class TaoTrainer:
    """Trains, infers and evaluates with ``visual_changenet`` in a TAO container via the docker SDK.

    Validation scoring (``val_scoring``): TAO's status.json reports ``val_loss`` and a fixed-margin
    ``val_fpr``, not FAR at 100 % recall. With ``"inference"`` (default) every checkpoint is run on
    the validation CSV after training and scored with :func:`raypipe.metrics.far_at_recall`, so
    ``val_far`` — the AutoML objective and checkpoint criterion — means the same as on the built-in
    backend (one extra short container per checkpoint). ``"status"`` skips that: ``val_far`` is NaN,
    best-val is the lowest ``val_loss`` from status.json, or the latest checkpoint when there is none.
    Epoch callbacks fire after the container exits (a container can't report mid-run), so ASHA
    cannot stop a TAO trial early.
    """

    name = "tao"

    def __init__(self, image: str = DEFAULT_IMAGE, *, client: Any | None = None, shm_size: str = "8g",
                 gpus: Any = "auto", workspace_root: str | Path | None = None,
                 run_dir: str | Path | None = None, image_root: str | Path | None = None,
                 env_allowlist: Iterable[str] = (), user: str | None = "host",
                 val_scoring: str = "inference", credentials: Iterable[str] = ("NGC_KEY",),
                 anomalygen_image: str | None = None, execution_policy: Mapping[str, Any] | None = None) -> None:
        if val_scoring not in VAL_SCORING:
            raise ValueError(f"tao.val_scoring: expected one of {VAL_SCORING}, got {val_scoring!r}")
        self.credentials = tuple(credentials)
        forbidden = [n for n in env_allowlist if n in self.credentials or is_secret_name(n)]
        if forbidden:
            raise ValueError(
                f"tao.env_allowlist: refusing to forward {', '.join(forbidden)} into the container — the docker "
                f"SDK passes a variable with its value, readable by `docker inspect`. TAO's train/inference/"
                f"evaluate need no credential at run time; the image pull uses it on the host only.")
        self.image = image
        self.anomalygen_image = anomalygen_image
        self.shm_size = shm_size
        self.gpus = gpus
        self.workspace_root = Path(workspace_root).resolve() if workspace_root else None
        self.run_dir = Path(run_dir).resolve() if run_dir else None
        self.image_root = Path(image_root).resolve() if image_root else None
        self.env_allowlist = tuple(env_allowlist)
        self.user = user
        self.val_scoring = val_scoring
        # The run's execution policy: every container runs under it (None reads as airgap).
        self.execution_policy = dict(execution_policy) if execution_policy is not None else None
        self._client = client

    # -- protocol -------------------------------------------------------------------------------

    def default_backbone(self) -> str:
        return DEFAULT_BACKBONE

    def supports_backbone(self, backbone_type: str) -> bool:
        return str(backbone_type).startswith(BACKBONE_PREFIXES)

    def train(self, spec: dict[str, Any], train_csv: Path, val_csv: Path, out_dir: Path,
              init_ckpt: Path | None = None, *, images_dir: Path, val_images_dir: Path | None = None,
              seed: int = 0, on_epoch: EpochCallback | None = None) -> TrainResult:
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        _clear_stale_training_outputs(out_dir)
        layout = self._layout()
        results_c = layout.expose(out_dir, writable=True)
        val_images = val_images_dir or images_dir
        container_spec = tao_spec.train_spec(
            spec, layout,
            train_csv=tao_spec.stage_csv(Path(train_csv), layout, out_dir),
            val_csv=tao_spec.stage_csv(Path(val_csv), layout, out_dir),
            images_dir=layout.expose(images_dir), val_images_dir=layout.expose(val_images),
            results_dir=results_c, init_ckpt=layout.expose(init_ckpt) if init_ckpt else None, seed=seed)
        spec_path, log = out_dir / "experiment.yaml", out_dir / "train.log"
        status = self._run_task("train", container_spec, spec_path, layout, results_c, log, out_dir)
        ckpts = results.find_checkpoints(out_dir)
        if not ckpts:
            raise TrainingError(f"TAO train exited 0 but wrote no model_epoch_<EEE>_step_<SSS>.pth under "
                                f"{out_dir}; a run without a new checkpoint is a failure.\n"
                                f"{results.log_tail(log)}")
        interval = int((container_spec.get("train") or {}).get("validation_interval")
                       or (container_spec.get("train") or {}).get("val_interval") or 1)
        train_loss, val_loss = results.epoch_losses(status, interval)
        epochs = [self._epoch_metrics(spec, ck, Path(val_csv), Path(val_images), out_dir, train_loss, val_loss)
                  for ck in ckpts]
        if on_epoch is not None:
            for em in epochs:
                on_epoch(em)
        best = _pick_best(epochs, self.val_scoring)
        return TrainResult(
            out_dir=out_dir, epochs=epochs, checkpoints=ckpts, best_val_ckpt=Path(str(best.checkpoint)),
            latest_ckpt=ckpts[-1], best_epoch=best.epoch, best_step=best.step, best_val_far=best.val_far,
            best_val_loss=best.val_loss, status="SUCCESS",
            extra={"backend": "tao", "image": self.image, "log": str(log), "container_spec": str(spec_path),
                   "val_scoring": self.val_scoring})

    def infer(self, spec: dict[str, Any], ckpt: Path, csv: Path, out_dir: Path, *, images_dir: Path) -> Path:
        out_dir = Path(out_dir).resolve()
        log = out_dir / "inference.log"
        tao_dir, _ = self._run_on_csv("inference", spec, ckpt, csv, out_dir, images_dir, log)
        tao_csv = results.find_inference_csv(tao_dir)
        if tao_csv is None:
            raise TrainingError(f"TAO inference exited 0 but wrote no inference.csv under {tao_dir}.\n"
                                f"{results.log_tail(log)}")
        return results.normalise_inference_csv(tao_csv, Path(csv), out_dir / "inference.csv")

    def evaluate(self, spec: dict[str, Any], ckpt: Path, csv: Path, out_dir: Path, *,
                 images_dir: Path) -> dict[str, Any]:
        """``visual_changenet evaluate``: TAO's own KPIs (accuracy, FPR/FNR at ``eval_margin``).

        raypipe's metric (FAR at 100 % recall) comes from :meth:`infer` + ``raypipe.metrics``; this
        is for comparing with numbers TAO users already know.
        """
        out_dir = Path(out_dir).resolve()
        _, status = self._run_on_csv("evaluate", spec, ckpt, csv, out_dir, images_dir, out_dir / "evaluate.log")
        return results.last_kpi(status)

    def embed(self, spec: dict[str, Any], ckpt: Path | None, rows: pd.DataFrame, *, images_dir: Path) -> np.ndarray:
        raise TaoEmbedUnsupported(
            "the TAO backend cannot embed images: visual_changenet has no embedding entry point "
            "(train/evaluate/inference/export only). Set `phase2.mining_filter.embedder: pixels` to mine "
            "with raypipe's pixel embedder, or use `backend: builtin`.")

    # -- internals ------------------------------------------------------------------------------

    def _run_on_csv(self, task: str, spec: dict[str, Any], ckpt: Path, csv: Path, out_dir: Path, images_dir: Path,
                    log: Path) -> tuple[Path, list[dict[str, Any]]]:
        """``inference``/``evaluate`` of ``ckpt`` on one CSV in a fresh ``out_dir/tao_<task>`` (a re-run
        replaces partial outputs and never picks up an old CSV)."""
        tao_dir = out_dir / f"tao_{task}"
        if tao_dir.exists():
            shutil.rmtree(tao_dir)
        tao_dir.mkdir(parents=True)
        layout = self._layout()
        results_c = layout.expose(tao_dir, writable=True)
        container_spec = tao_spec.inference_spec(
            spec, layout, csv=tao_spec.stage_csv(Path(csv), layout, tao_dir),
            images_dir=layout.expose(images_dir), checkpoint=layout.expose(ckpt), results_dir=results_c,
            task=task)
        status = self._run_task(task, container_spec, tao_dir / f"{task}_spec.yaml", layout, results_c, log, tao_dir)
        return tao_dir, status

    def _run_task(self, task: str, container_spec: dict[str, Any], spec_path: Path, layout: ContainerLayout,
                  results_c: str, log: Path, status_dir: Path) -> list[dict[str, Any]]:
        """Write the container spec, run ``visual_changenet <task>``, fail on exit code or FAILURE status."""
        atomic_write_text(spec_path, dump_spec(container_spec))
        command = ["visual_changenet", task, "-e", layout.container_path(spec_path), f"results_dir={results_c}"]
        code = run_container(self._docker(), self._run(command, layout, task), log, policy=self.execution_policy)
        status = results.read_status(status_dir / "status.json")
        _raise_on_failure(task, code, status, log)
        return status

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker_client(None)
        return self._client

    def _layout(self) -> ContainerLayout:
        return ContainerLayout.for_workspace(self.workspace_root, self.run_dir, self.image_root)

    def _run(self, command: list[str], layout: ContainerLayout, task: str) -> ContainerRun:
        env = {name: os.environ[name] for name in self.env_allowlist if name in os.environ}
        user = self.user
        if user == "host":
            # Files TAO writes into the run dir stay owned (and deletable) by the user who ran raypipe.
            user = f"{os.getuid()}:{os.getgid()}"
        if user not in (None, "root", "0", "0:0"):
            env.setdefault("HOME", "/tmp")  # an arbitrary uid has no home in the image; caches go here
        return ContainerRun(
            image=self.image, command=command, layout=layout, shm_size=self.shm_size,
            device_requests=device_requests(self.gpus), environment=env,
            user=None if user == "root" else user, labels={"raypipe.backend": "tao", "raypipe.task": task})

    def _epoch_metrics(self, spec: dict[str, Any], ckpt: Path, val_csv: Path, val_images: Path, out_dir: Path,
                       train_loss: dict[int, float], val_loss: dict[int, float]) -> EpochMetrics:
        epoch = results.checkpoint_epoch(ckpt)
        step = parse_checkpoint_name(ckpt)[1]
        far = threshold = math.nan
        pred_counts: dict[str, int] = {}
        if self.val_scoring == "inference":
            scored = self.infer(spec, ckpt, val_csv, out_dir / "val_scoring" / ckpt.stem, images_dir=val_images)
            df = read_rows(scored)
            y = df["label"].map(is_defect).to_numpy(dtype=bool)
            s = pd.to_numeric(df["siamese_score"]).to_numpy(dtype=np.float64)
            try:
                res = far_at_recall(y, s, 1.0)
            except MetricUndefinedError as exc:
                raise TrainingError(f"{val_csv}: cannot score checkpoints: {exc}") from None
            far, threshold = res.far * 100.0, res.threshold
            n_defect = int((s > 0.5).sum())  # argmax of a 2-class softmax == P(defect) > 0.5
            pred_counts = {"PASS": int(len(s) - n_defect), "NO_PASS": n_defect}
        return EpochMetrics(epoch=epoch, step=step, train_loss=train_loss.get(epoch, math.nan),
                            val_loss=val_loss.get(epoch, math.nan), val_far=far, val_threshold=threshold,
                            pred_counts=pred_counts, checkpoint=str(ckpt))


def _clear_stale_training_outputs(out_dir: Path) -> None:
    """Remove checkpoints/status of an earlier, uncommitted attempt in ``out_dir``.

    TAO resumes by itself from the latest checkpoint it finds in its results dir; a redone stage
    must start fresh: a redone stage replaces its partial outputs, never continues or appends to them.
    """
    for pattern in ("model_epoch_*_step_*.pth", "*_latest.pth", "status.json"):
        for p in out_dir.glob(pattern):
            p.unlink()
    if (out_dir / "val_scoring").exists():
        shutil.rmtree(out_dir / "val_scoring")


def _raise_on_failure(task: str, code: int, status: list[dict[str, Any]], log: Path) -> None:
    failure = results.failure_message(status)
    if code != 0 or failure is not None:
        why = f"exit code {code}" if code != 0 else "status.json reports FAILURE"
        detail = f" ({failure})" if failure else ""
        raise TrainingError(f"TAO {task} failed: {why}{detail}; log: {log}\n--- last lines ---\n"
                            f"{results.log_tail(log)}")


def _pick_best(epochs: list[EpochMetrics], val_scoring: str) -> EpochMetrics:
    """Lowest val FAR (ties: lower val_loss, then later); by val_loss with ``status``; else latest."""
    def nan_inf(x: float) -> float:
        return math.inf if x is None or math.isnan(x) else x

    if val_scoring == "inference":
        return min(reversed(epochs), key=lambda e: (nan_inf(e.val_far), nan_inf(e.val_loss)))
    with_loss = [e for e in epochs if not math.isnan(e.val_loss)]
    if not with_loss:
        return epochs[-1]
    return min(reversed(with_loss), key=lambda e: e.val_loss)
