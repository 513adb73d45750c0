"""The DEFT loop driver: a Ray actor that takes every decision from disk (SPEC §6, §11).

Each step is ``next_stage(load_state())`` → run that stage (heavy work as Ray tasks with declared
resources) → ``commit`` its evidence. The actor holds no cursor of its own, so a loop killed at any
moment (SIGKILL included) resumes by simply running again: the interrupted stage starts over,
every stage replacing its partial outputs.

Resources: training, KPI inference and mining embeddings get ``phase2.resources.train``
({cpu, gpu}); RCA, routing, SDG and merge run as CPU tasks with ``phase2.resources.cpu_stage``.
The actor itself reserves no CPU (it mostly waits on tasks), so a 2-core machine can run a
training task and a CPU stage side by side.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import ray

from raypipe._io import read_json
from raypipe.deft.errors import EvidenceError, HardStop
from raypipe.deft.state import (
    NextStep,
    commit,
    iteration_number,
    load_state,
    next_stage,
    ordered_labels,
    reopen_failed,
    state_path_of,
)
from raypipe.metrics import MetricContract, pick_best
from raypipe.placement import Placement
from raypipe.workspace._rows import ImageLayout

log = logging.getLogger(__name__)


def resume_command(run_dir: str | Path) -> str:
    return f"python -m raypipe.run --resume {Path(run_dir).resolve()}"


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class LoopConfig:
    """The ``phase2`` section of the config plus the top-level keys the loop uses."""

    max_iterations: int = 3
    metric_contract: dict[str, Any] = field(default_factory=lambda: MetricContract().to_dict())
    train_resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    cpu_stage_resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    rca_min_recall: float = 1.0
    rca_top_k_per_label: int = 50
    sdg_kind: str = "builtin"
    num_sdg: int = 120
    sdg_supported_labels: list[str] | None = None
    sdg_recipes: dict[str, str] = field(default_factory=dict)
    top_k_per_target: int = 5
    min_similarity: float = 0.80
    embedder: str = "model"  # model | pixels
    train_overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys, loop iterations only
    finetune_lr_scale: float = 0.25  # warm-started iterations train at this fraction of the spec's lr
    spec_overrides: dict[str, Any] = field(default_factory=dict)  # top-level spec_overrides (every spec)
    backend: str = "builtin"
    seed: int = 42

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ValueError(f"phase2.max_iterations must be >= 1, got {self.max_iterations}")
        if self.embedder not in ("model", "pixels"):
            raise ValueError(f"phase2.mining_filter.embedder must be 'model' or 'pixels', got {self.embedder!r}")
        if self.sdg_kind != "builtin":
            raise ValueError(f"phase2.sdg.kind {self.sdg_kind!r}: only the built-in procedural SDG runs in the "
                             "loop; the AnomalyGen container is not wired in this version")
        MetricContract.from_dict(self.metric_contract)

    @property
    def contract(self) -> MetricContract:
        return MetricContract.from_dict(self.metric_contract)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "LoopConfig":
        """From a merged config dict (``raypipe.config.load_config``); missing keys take the package defaults."""
        from raypipe.config import package_defaults
        from raypipe.spec import deep_merge

        full = deep_merge(package_defaults(), dict(cfg))
        p2 = full["phase2"]
        mf = p2["mining_filter"]
        return cls(
            max_iterations=int(p2["max_iterations"]),
            metric_contract=MetricContract.from_dict(p2["metric_contract"]).to_dict(),
            train_resources={k: float(v) for k, v in p2["resources"]["train"].items()},
            cpu_stage_resources={k: float(v) for k, v in p2["resources"]["cpu_stage"].items()},
            rca_min_recall=float(p2["rca"]["min_recall"]),
            rca_top_k_per_label=int(p2["rca"]["top_k_per_label"]),
            sdg_kind=str(p2["sdg"]["kind"]),
            num_sdg=int(p2["sdg"]["num_SDG"]),
            sdg_supported_labels=p2["sdg"].get("supported_labels"),
            sdg_recipes=dict(p2["sdg"].get("recipes") or {}),
            top_k_per_target=int(mf["top_k_per_target"]),
            min_similarity=float(mf["min_similarity"]),
            embedder=str(mf.get("embedder", "model")),
            train_overrides=dict(p2.get("train_overrides") or {}),
            finetune_lr_scale=float(p2.get("finetune_lr_scale", 1.0)),
            spec_overrides=dict(full.get("spec_overrides") or {}),
            backend=str(full.get("backend", "builtin")),
            seed=int(full.get("seed", 42)),
        )


@dataclass(frozen=True)
class LoopContext:
    """Where the loop's inputs are (SPEC §2 layout) and who trains; picklable (it crosses into the actor)."""

    root: Path
    images_dir: Path
    train_csv: Path
    val_csv: Path
    kpi_csv: Path
    pool_csv: Path | None
    spec: dict[str, Any]
    layout: ImageLayout
    spec_path: Path | None = None
    pool_images_dir: Path | None = None
    backend: str = "builtin"
    backend_options: dict[str, Any] = field(default_factory=dict)
    tracking: Any = None  # raypipe.tracking.TrackingContext | None

    @classmethod
    def from_root(cls, root: str | Path, *, spec: Mapping[str, Any] | None = None, backend: str = "builtin",
                  backend_options: Mapping[str, Any] | None = None, tracking: Any = None) -> "LoopContext":
        """A workspace in the SPEC §2 layout (``images/`` or the legacy ``kpi/images``)."""
        from raypipe.spec import load_spec

        root = Path(root).resolve()
        images = root / "images"
        if not images.is_dir() and (root / "kpi" / "images").is_dir():
            images = root / "kpi" / "images"
        spec_path = root / "specs" / "baseline_spec.yaml"
        the_spec = dict(spec) if spec is not None else load_spec(spec_path)
        pool = root / "augmentation" / "mining_pool" / "mining_pool.csv"
        return cls(root=root, images_dir=images, train_csv=root / "train" / "base" / "training_set.csv",
                   val_csv=root / "train" / "base" / "validation_set.csv", kpi_csv=root / "kpi" / "testing_set.csv",
                   pool_csv=pool if pool.is_file() else None, spec=the_spec, layout=ImageLayout.from_spec(the_spec),
                   spec_path=spec_path, backend=backend, backend_options=dict(backend_options or {}),
                   tracking=tracking)

    @classmethod
    def from_workspace(cls, ws: Any, *, spec: Mapping[str, Any], backend: str = "builtin",
                       backend_options: Mapping[str, Any] | None = None, tracking: Any = None) -> "LoopContext":
        """From a loaded workspace object (attributes root, images_dir, train_csv, val_csv, kpi_csv, pool_csv)."""
        pool = getattr(ws, "pool_csv", None)
        return cls(root=Path(ws.root).resolve(), images_dir=Path(ws.images_dir).resolve(),
                   train_csv=Path(ws.train_csv).resolve(), val_csv=Path(ws.val_csv).resolve(),
                   kpi_csv=Path(ws.kpi_csv).resolve(), pool_csv=Path(pool).resolve() if pool else None,
                   spec=dict(spec), layout=ImageLayout.from_spec(dict(spec)),
                   spec_path=Path(ws.spec_path) if getattr(ws, "spec_path", None) else None,
                   pool_images_dir=Path(getattr(ws, "pool_images_dir", None) or ws.images_dir).resolve(),
                   backend=backend, backend_options=dict(backend_options or {}), tracking=tracking)

    @property
    def pool_images(self) -> Path:
        return self.pool_images_dir or self.images_dir


def config_block(ctx: LoopContext, cfg: LoopConfig, run_dir: Path) -> dict[str, Any]:
    """``deft_state.json`` → ``config`` (SPEC §6.1) for a loop started without the lead's pipeline."""
    train = ctx.spec.get("train", {})
    return {
        "specs_file": str(ctx.spec_path) if ctx.spec_path else None, "training_csv": str(ctx.train_csv),
        "validation_csv": str(ctx.val_csv), "kpi_test_csv": str(ctx.kpi_csv), "images_dir": str(ctx.images_dir),
        "mining_pool_csv": str(ctx.pool_csv) if ctx.pool_csv else None, "mining_images_root": str(ctx.pool_images),
        "num_gpus": cfg.train_resources.get("gpu", 0), "gpu_model": None,
        "batch_size": ctx.spec.get("dataset", {}).get("classify", {}).get("batch_size"),
        "num_epochs": train.get("num_epochs"), "backend": ctx.backend,
        "sdg": {"kind": cfg.sdg_kind, "num_SDG": cfg.num_sdg},
        "mining_filter": {"top_k_per_target": cfg.top_k_per_target, "metric": "cosine",
                          "min_similarity": cfg.min_similarity, "embedder": cfg.embedder,
                          "history_aware": {"enabled": True, "identity": "filepath",
                                            "history_file": str(Path(run_dir).resolve() / "mining_history.json")}},
    }


@dataclass(frozen=True)
class LoopOutcome:
    status: str  # complete | failed
    run_dir: Path
    best_label: str | None = None
    best_model_json: Path | None = None
    stop_reason: str | None = None
    message: str = ""


# ---------------------------------------------------------------------------------------------
# the actor


def _ts() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], placement: Placement | None = None) -> Any:
    """A CPU stage inside its Ray task."""
    if placement is not None:
        placement.record()
    return fn(**kwargs)


def _unwrap(exc: BaseException) -> BaseException:
    """The stage's own exception out of Ray's RayTaskError wrapper(s)."""
    seen = 0
    while seen < 5 and getattr(exc, "cause", None) is not None and isinstance(exc.cause, BaseException):
        exc = exc.cause
        seen += 1
    return exc


class _Loop:
    """The loop body; wrapped as a Ray actor by :data:`DeftDriver` (kept plain so it is testable)."""

    def __init__(self, run_dir: Path, cfg: LoopConfig, ctx: LoopContext) -> None:
        self.rd = Path(run_dir).resolve()
        self.sp = state_path_of(self.rd)
        self.cfg = cfg
        self.ctx = ctx
        self.contract = cfg.contract

    # -- helpers -----------------------------------------------------------------------------
    def _placement(self, what: str) -> Placement:
        """Where a stage's Ray task records itself (``RD/placement.jsonl``), e.g. ``iter1/train``."""
        return Placement(str(self.rd), "phase2", what)

    def _cpu(self, what: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        task = ray.remote(_call).options(num_cpus=float(self.cfg.cpu_stage_resources.get("cpu", 1)),
                                         num_gpus=float(self.cfg.cpu_stage_resources.get("gpu", 0)), max_retries=0)
        return ray.get(task.remote(fn, kwargs, self._placement(what)))

    def _fresh_ts_dir(self, parent: Path) -> Path:
        """``parent/<TS>/`` after removing any uncommitted attempt (a committed one is never redone)."""
        from raypipe.deft._stage_io import fresh_dir

        fresh_dir(parent)
        return parent / _ts()

    def _base_spec(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The spec the loop trains with: the baseline's (Phase 1 winner) when known, else the run spec."""
        from raypipe.deft.finalize import load_training_spec
        from raypipe.spec import nest_dotted

        ts = state["iterations"].get("baseline", {}).get("training_spec")
        spec = load_training_spec(ts) if ts else copy.deepcopy(self.ctx.spec)
        return nest_dotted(dict(self.cfg.spec_overrides), spec)

    def _best_so_far(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        labels = ordered_labels(state, include_final=False)
        pick = pick_best(self.contract, [(lb, state["iterations"][lb]) for lb in labels])
        if pick is None:
            raise HardStop("train", "no evaluated iteration to warm-start from", "evaluate the baseline first")
        return pick.entry

    def _spec_of(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        from raypipe.deft.finalize import load_training_spec

        return load_training_spec(entry["training_spec"])

    # -- stages ------------------------------------------------------------------------------
    def stage_train(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.train import TrainJob, iteration_spec, run_train

        out = self.rd / label / "train"
        if label == "baseline":
            # A baseline trained here (no Phase 1) honours the spec's own warm start, if any.
            init_key = self.ctx.spec.get("train", {}).get("pretrained_model_path")
            init = Path(init_key) if init_key else None
            spec = iteration_spec(self._base_spec(state), overrides=None, init_ckpt=init)
            job = TrainJob(self.ctx.backend, self.ctx.backend_options, spec, self.ctx.train_csv, self.ctx.images_dir,
                           self.ctx.val_csv, self.ctx.images_dir, out, init, self.cfg.seed)
        else:
            n = iteration_number(label)
            entry = state["iterations"][label]
            prev = self._best_so_far(state)
            init = Path(prev["best_ckpt_path"])
            spec = iteration_spec(self._base_spec(state), overrides=self.cfg.train_overrides, init_ckpt=init,
                                  lr_scale=self.cfg.finetune_lr_scale)
            job = TrainJob(self.ctx.backend, self.ctx.backend_options, spec, Path(entry["combined_training_csv"]),
                           self.ctx.root, self.ctx.val_csv, self.ctx.images_dir, out, init, self.cfg.seed + n)
        ev = run_train(job, resources=self.cfg.train_resources, placement=self._placement(f"{label}/train"))
        vf = ev.get("val_far")
        return ev, (f"trained {ev['num_epochs']} epoch(s) on {ev.get('train_rows', '?')} rows"
                    + (f" from {init.name}" if init else "") + f"; best_val {Path(ev['best_ckpt_path']).name}"
                    + (f" val_far {vf:.2f}%" if vf is not None else ""))

    def stage_evaluate(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.evaluate import run_evaluate

        entry = state["iterations"][label]
        spec = self._spec_of(entry)
        ev = run_evaluate(label=label, run_dir=self.rd,
                          ckpts={"best_val": Path(entry["best_ckpt_path"]),
                                 "latest": Path(entry["latest_ckpt_path"]) if entry.get("latest_ckpt_path") else None},
                          spec=spec, training_spec=entry["training_spec"], contract=self.contract,
                          kpi_csv=self.ctx.kpi_csv, images_dir=self.ctx.images_dir, backend=self.ctx.backend,
                          backend_options=self.ctx.backend_options, resources=self.cfg.train_resources,
                          placement=self._placement(f"{label}/inference"))
        mr = ev["metric_result"]
        cands = ", ".join(f"{k} {v:.2f}" for k, v in ev["candidates"].items())
        return ev, (f"KPI {mr['name']}={mr['value']:.2f}{mr['unit']} ({ev['best_ckpt_kind']}; {cands}) "
                    f"threshold={ev['threshold']:.4g} recall={mr['constraints'].get('recall_pct', float('nan')):.1f}%")

    def stage_rca(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.rca import run_rca

        entry = state["iterations"][label]
        out = self._fresh_ts_dir(self.rd / label / "rca_results")
        ev = self._cpu(f"{label}/rca", run_rca, inference_csv=Path(entry["inference_csv"]), out_dir=out,
                       layout=self.ctx.layout, images_dir=self.ctx.images_dir, min_recall=self.cfg.rca_min_recall,
                       top_k_per_label=self.cfg.rca_top_k_per_label)
        return ev, (f"RCA at threshold {ev['rca_threshold']:.4g}: targets "
                    f"{', '.join(ev['rca_target_defects']) or 'none'}")

    def stage_routing(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.routing import run_routing
        from raypipe.deft.sdg import supported_sdg_labels

        n = iteration_number(label)
        prev = "baseline" if n == 1 else f"iter{n - 1}"
        gaps = state["iterations"][prev]["rca_gaps_parquet"]
        out = self._fresh_ts_dir(self.rd / label / "routing_results")
        ev = self._cpu(f"{label}/routing", run_routing, gaps_parquet=Path(gaps), pool_csv=self.ctx.pool_csv,
                       out_dir=out,
                       supported_labels=supported_sdg_labels(self.cfg.sdg_recipes, self.cfg.sdg_supported_labels))
        from raypipe.deft._evidence import parquet_rows

        return ev, (f"routed {parquet_rows(Path(ev['routing_mining_parquet']))} gap rows to mining, "
                    f"{parquet_rows(Path(ev['routing_anomalygen_parquet']))} to SDG")

    def _kpi_capture_files(self) -> set[Path]:
        from raypipe.workspace._rows import read_rows

        kpi = read_rows(self.ctx.kpi_csv)
        return {p.resolve() for _, row in kpi.iterrows() for p in self.ctx.layout.capture_paths(self.ctx.images_dir, row)}

    def stage_anomalygen(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.sdg import run_sdg

        n = iteration_number(label)
        entry = state["iterations"][label]
        ev = self._cpu(f"{label}/anomalygen", run_sdg,
                       anomalygen_gaps_parquet=Path(entry["routing_anomalygen_parquet"]),
                       train_csv=self.ctx.train_csv, train_images_dir=self.ctx.images_dir, iter_dir=self.rd / label,
                       workspace_root=self.ctx.root, layout=self.ctx.layout, num_sdg=self.cfg.num_sdg,
                       recipes=self.cfg.sdg_recipes, iteration=n, seed=self.cfg.seed,
                       kpi_capture_files=self._kpi_capture_files())
        if ev.get("anomalygen_skipped"):
            return ev, "SDG skipped: no gap routed to SDG"
        return ev, f"SDG synthesised {ev['anomalygen_amp_allocated']} defect samples"

    def _embed_fn(self, state: Mapping[str, Any], label: str) -> Callable[[Any, Path], Any]:
        from raypipe.deft._embed import EmbedJob, run_embed

        best = self._best_so_far(state)
        job = EmbedJob(self.cfg.embedder, self.ctx.backend, self.ctx.backend_options, self._spec_of(best),
                       Path(best["best_ckpt_path"]) if self.cfg.embedder == "model" else None, self.ctx.layout)
        res = self.cfg.train_resources
        task = ray.remote(run_embed).options(num_cpus=float(res.get("cpu", 1)), num_gpus=float(res.get("gpu", 0)),
                                             max_retries=0)

        def embed(rows: Any, images_dir: Path) -> Any:
            return ray.get(task.remote(job, rows, Path(images_dir), self._placement(f"{label}/embed")))

        return embed

    def stage_data_mining(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.mining import run_mining

        n = iteration_number(label)
        entry = state["iterations"][label]
        sdg_rows = None if entry.get("anomalygen_skipped") else entry.get("anomalygen_sdg_rows_csv")
        if sdg_rows is None and not entry.get("anomalygen_skipped"):
            sdg_rows = str(self.rd / label / "mining_filter" / "sdg_rows_raw.csv")
        # Mining runs here in the actor (FAISS search is light); the embeddings are Ray tasks.
        self._placement(f"{label}/data_mining").record()
        ev = run_mining(Path(entry["routing_mining_parquet"]), self.ctx.pool_csv, self.ctx.pool_images,
                        self.rd / label, embed=self._embed_fn(state, label), workspace_root=self.ctx.root,
                        top_k_per_target=self.cfg.top_k_per_target, min_similarity=self.cfg.min_similarity,
                        history_path=self.rd / "mining_history.json", iteration=n, validation_csv=self.ctx.val_csv,
                        validation_images_dir=self.ctx.images_dir, sdg_rows_csv=Path(sdg_rows) if sdg_rows else None)
        if ev.get("data_mining_skipped"):
            return ev, "mining skipped: no gap routed to mining"
        return ev, f"mined {ev['mining_mined_count']} novel pool rows"

    def stage_data_merge(self, state: Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
        from raypipe.deft.merge import run_merge

        n = iteration_number(label)
        entry = state["iterations"][label]
        prev = state["iterations"].get(f"iter{n - 1}", {}).get("combined_training_csv") if n > 1 else None
        pool = entry.get("mining_pool_csv") or str(self.rd / label / "mining_filter" / "mining_pool.csv")
        ev = self._cpu(f"{label}/data_merge", run_merge, iteration=n, iter_dir=self.rd / label,
                       base_train_csv=self.ctx.train_csv, base_images_dir=self.ctx.images_dir,
                       prev_combined_csv=Path(prev) if prev else None,
                       mining_pool_csv=Path(pool), workspace_root=self.ctx.root, validation_csv=self.ctx.val_csv,
                       validation_images_dir=self.ctx.images_dir, kpi_csv=self.ctx.kpi_csv,
                       kpi_images_dir=self.ctx.images_dir, layout=self.ctx.layout)
        from raypipe.deft._evidence import csv_rows

        return ev, f"combined training set: {csv_rows(Path(ev['combined_training_csv']))} rows"

    # -- the loop ----------------------------------------------------------------------------
    def _fail(self, step: NextStep, exc: BaseException, t0: float) -> LoopOutcome:
        exc = _unwrap(exc)
        stage = "loop_stop" if step.stage == "finalize" else step.stage
        if isinstance(exc, HardStop):
            reason, fix = exc.reason, exc.fix
        elif isinstance(exc, EvidenceError):
            reason, fix = f"stage evidence rejected: {exc}", "the stage produced inconsistent outputs; see the log"
        else:
            reason, fix = f"{type(exc).__name__}: {exc}", "see the traceback in the driver log"
        log.error("DEFT hard stop at %s/%s: %s", step.label, stage, reason, exc_info=exc)
        label = step.label or "baseline"
        commit(self.sp, label, stage, {"reason": reason, "fix": fix}, duration_s=max(time.monotonic() - t0, 1e-3),
               summary=f"hard stop: {reason}", status="error")
        self._track(label)
        msg = (f"DEFT loop hard stop at {label}/{stage}: {reason}\n"
               f"What to fix first: {fix or 'see ' + str(self.rd / 'DEFT_Loop_Report.html')}\n"
               f"Then resume with: {resume_command(self.rd)}")
        return LoopOutcome("failed", self.rd, message=msg)

    def run(self) -> LoopOutcome:
        from raypipe.deft.finalize import finalize

        if reopen_failed(self.sp):
            log.info("resuming a hard-stopped loop in %s", self.rd)
        state = load_state(self.sp)
        budget = 8 * (int(state.get("max_iterations", self.cfg.max_iterations)) + 2) + 4
        stop_reason: str | None = None
        for _ in range(budget):
            state = load_state(self.sp)
            step = next_stage(state)
            if step.stage == "done":
                bm = self.rd / "best_model.json"
                best = read_json(bm).get("iteration") if bm.is_file() else None
                return LoopOutcome("complete", self.rd, best, bm if bm.is_file() else None, stop_reason,
                                   f"DEFT loop complete: best {best}; {bm}")
            if step.stage == "halt":
                return LoopOutcome("failed", self.rd, message=f"DEFT state is failed; resume with {resume_command(self.rd)}")
            t0 = time.monotonic()
            log.info("DEFT %s/%s", step.label, step.stage)
            try:
                if step.stage == "finalize":
                    entry = state["iterations"][step.label]
                    stop_reason = "metric_met" if entry["metric_result"].get("passed") else "max_iterations"
                    finalize(self.rd, stop_reason=stop_reason, label=step.label)
                    continue
                evidence, summary = getattr(self, f"stage_{step.stage}")(state, step.label)
                commit(self.sp, step.label, step.stage, evidence, duration_s=max(time.monotonic() - t0, 1e-3),
                       summary=summary)
            except Exception as exc:  # noqa: BLE001 - every stage error is a hard stop (SPEC §6.7)
                return self._fail(step, exc, t0)
            if step.stage == "evaluate":
                self._track(step.label)
        raise RuntimeError(f"{self.sp}: the loop made {budget} steps without finishing; next_stage is not advancing")

    # -- tracking ----------------------------------------------------------------------------
    def _track(self, label: str) -> None:
        """Log the iteration's numbers to its nested MLflow run (idempotent key; tracking optional)."""
        if self.ctx.tracking is None:
            return
        try:
            from raypipe import tracking as tr
        except ImportError:
            return
        try:
            state = load_state(self.sp, reconcile=False)
            metrics = iteration_metrics(state, label)
            with tr.child_run(self.ctx.tracking, label, key=f"phase2/{label}",
                              tags={"raypipe.phase": "phase2", "raypipe.iteration": label}) as run:
                run.log_metrics(metrics)
        except Exception:  # noqa: BLE001 - tracking must never stop the loop
            log.exception("tracking for %s failed", label)


def iteration_metrics(state: Mapping[str, Any], label: str) -> dict[str, float]:
    """The numbers an iteration logs: KPI FAR/threshold/recall, data added by source, stage seconds."""
    import pandas as pd

    e = state["iterations"].get(label, {})
    out: dict[str, float] = {}
    mr = e.get("metric_result") or {}
    if mr:
        out["kpi_" + mr["name"]] = float(mr["value"])
        for k, v in (mr.get("constraints") or {}).items():
            out[f"kpi_{k}"] = float(v)
    if e.get("threshold") is not None:
        out["threshold"] = float(e["threshold"])
    if e.get("far_pct") is not None:
        out["kpi_far_pct"] = float(e["far_pct"])
    if e.get("provenance_csv") and Path(e["provenance_csv"]).is_file():
        prov = pd.read_csv(e["provenance_csv"], dtype=str, keep_default_na=False)
        for src, n in prov["source"].value_counts().items():
            out[f"rows_{src}"] = float(n)
        out["rows_total"] = float(len(prov))
    if e.get("mining_summary") and Path(e["mining_summary"]).is_file():
        knn = pd.read_csv(e["mining_summary"])
        if len(knn):
            out["mining_candidates"] = float(knn.iloc[0].get("candidate_count", 0))
            out["mining_kept"] = float(knn.iloc[0].get("kept_count", 0))
    if "mining_mined_count" in e:
        out["mining_mined"] = float(e["mining_mined_count"])
    if "anomalygen_amp_allocated" in e:
        out["sdg_count"] = float(e["anomalygen_amp_allocated"])
    for ev in state.get("events", []):
        if ev["iter"] == label:
            out[f"stage_sec_{ev['stage']}"] = out.get(f"stage_sec_{ev['stage']}", 0.0) + float(ev["duration_sec"])
    return out


# The loop as a Ray actor. It reserves no CPU: it mostly waits on its stage tasks, and a reserved
# core would starve a 2-core machine of the one a training task needs.
DeftDriver = ray.remote(num_cpus=0, max_restarts=0)(_Loop)


def run_loop(run_dir: str | Path, cfg: LoopConfig, ctx: LoopContext) -> LoopOutcome:
    """Run (or resume) the DEFT loop of ``run_dir`` in a Ray actor; returns when it completes or stops.

    Starts a local Ray when none is connected. Initialises ``deft_state.json`` (no pre-seeded
    baseline) if the caller did not. A hard-stopped state is re-opened: the interrupted stage runs again.
    """
    from raypipe.deft.state import initialise_state

    run_dir = Path(run_dir).resolve()
    if not state_path_of(run_dir).is_file():
        initialise_state(run_dir, config_block=config_block(ctx, cfg, run_dir), metric_contract=cfg.metric_contract,
                         max_iterations=cfg.max_iterations, execution_policy={"network_mode": "offline"})
    started = not ray.is_initialized()
    if started:  # "local": a cluster of our own, never someone else's `ray start` on this machine
        ray.init(address="local", include_dashboard=False)
    actor = DeftDriver.remote(run_dir, cfg, ctx)
    try:
        return ray.get(actor.run.remote())
    finally:
        ray.kill(actor)
        if started:
            ray.shutdown()
