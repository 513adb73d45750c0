"""What the DEFT loop works with: the workspace inputs, the run dir, the config, and Ray tasks.

:class:`LoopContext` is where the loop's inputs are and who trains (picklable: it crosses into
the driver actor). :class:`StageContext` is what every stage's ``run`` receives: those inputs,
the typed run config, the :class:`~raypipe.rundir.RunDir`, and a way to run a Ray task with the
stage's declared resources that records where it ran. :func:`config_block` builds the state's
``config`` section — TAO's vocabulary — from the typed config, in one place.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from raypipe import tao_interop as ti
from raypipe.deft.errors import HardStop
from raypipe.rundir import BASELINE, RunDir, ordered_labels
from raypipe.workspace._rows import ImageLayout

if TYPE_CHECKING:
    from raypipe.config import Resources, RunConfig
    from raypipe.deft.stages.base import ResourceClass
    from raypipe.metrics import MetricContract
    from raypipe.placement import Placement

T = TypeVar("T")


@dataclass(frozen=True)
class LoopContext:
    """Where the loop's inputs are and who trains; picklable (it crosses into the driver actor)."""

    root: Path
    images_dir: Path
    train_csv: Path
    val_csv: Path
    kpi_csv: Path
    pool_csv: Path | None
    spec: dict[str, Any]  # the run spec (workspace spec + spec_overrides + backbone substitution)
    layout: ImageLayout
    spec_path: Path | None = None  # the spec file the state's config names (TAO's ``specs_file``)
    pool_images_dir: Path | None = None
    backend: str = "builtin"
    backend_options: dict[str, Any] = field(default_factory=dict)
    tracking: Any = None  # raypipe.tracking.TrackingContext | None

    @classmethod
    def from_root(cls, root: str | Path, *, spec: Mapping[str, Any] | None = None, backend: str = "builtin",
                  backend_options: Mapping[str, Any] | None = None, tracking: Any = None) -> LoopContext:
        """A workspace in TAO's AOI layout (images under ``images/`` or the legacy ``kpi/images``)."""
        from raypipe.spec import load_spec
        from raypipe.workspace._layout import CSV_FILES, IMAGE_ROOTS, SPEC_FILE

        root = Path(root).resolve()
        images = next((root / r for r in IMAGE_ROOTS if (root / r).is_dir()), root / IMAGE_ROOTS[0])
        spec_path = root / SPEC_FILE
        the_spec = dict(spec) if spec is not None else load_spec(spec_path)
        pool = root / CSV_FILES["pool"]
        return cls(root=root, images_dir=images, train_csv=root / CSV_FILES["train"],
                   val_csv=root / CSV_FILES["validation"], kpi_csv=root / CSV_FILES["kpi"],
                   pool_csv=pool if pool.is_file() else None, spec=the_spec, layout=ImageLayout.from_spec(the_spec),
                   spec_path=spec_path, backend=backend, backend_options=dict(backend_options or {}),
                   tracking=tracking)

    @classmethod
    def from_workspace(cls, ws: Any, *, spec: Mapping[str, Any], backend: str = "builtin",
                       backend_options: Mapping[str, Any] | None = None, tracking: Any = None,
                       spec_path: Path | None = None) -> LoopContext:
        """From a loaded :class:`raypipe.workspace.Workspace`; ``spec_path`` overrides the spec file named."""
        pool = getattr(ws, "pool_csv", None)
        return cls(root=Path(ws.root).resolve(), images_dir=Path(ws.images_dir).resolve(),
                   train_csv=Path(ws.train_csv).resolve(), val_csv=Path(ws.val_csv).resolve(),
                   kpi_csv=Path(ws.kpi_csv).resolve(), pool_csv=Path(pool).resolve() if pool else None,
                   spec=dict(spec), layout=ImageLayout.from_spec(dict(spec)),
                   spec_path=spec_path or (Path(ws.spec_path) if getattr(ws, "spec_path", None) else None),
                   pool_images_dir=Path(getattr(ws, "pool_images_dir", None) or ws.images_dir).resolve(),
                   backend=backend, backend_options=dict(backend_options or {}), tracking=tracking)

    @property
    def pool_images(self) -> Path:
        return self.pool_images_dir or self.images_dir


def _gpu_model() -> str | None:
    """The local GPU's name for the state's config block (None without CUDA)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def backbone_weight_dir(ctx: LoopContext, rd: RunDir) -> Path:
    """``config.backbone_weight_dir``: where TAO's handoff finds the spec's backbone file by its name.

    TAO backend: the staged file's directory (normally ``<workspace>/augmentation/backbone``).
    Built-in: the directory of the host file the run spec names (raypipe stages its seeded initial
    backbone under ``RD/backbone/`` before Phase 1), else that staging directory.
    """
    from raypipe.spec import get_dotted

    if ctx.backend == "tao":
        from raypipe.backends.tao import find_staged_backbone

        staged = find_staged_backbone(ctx.spec, ctx.root)  # pre-flight has refused a spec without one
        return staged.weight_dir if staged is not None else ctx.root / ti.WORKSPACE_BACKBONE_DIR
    value = get_dotted(ctx.spec, "model.backbone.pretrained_backbone_path", None)
    if isinstance(value, str) and value and Path(value).is_file():
        return Path(value).resolve().parent
    return rd.backbone_dir


def config_block(cfg: RunConfig, ctx: LoopContext, rd: RunDir) -> dict[str, Any]:
    """``deft_state.json`` → ``config``: TAO's names for the loop's inputs and settings.

    Mining is always cosine k-NN and always history-aware by file path (the ledger
    ``RD/mining_history.json``): TAO's ``mining_filter`` fields say so. TAO's state also records
    where the backbone file is, who trains (``train_container``) and who synthesises
    (``anomalygen``); ``num_gpus`` is a whole count (a fractional request shares one GPU) and
    ``gpu_model`` is never empty.
    """
    p2 = cfg.phase2
    classify = ctx.spec.get("dataset", {}).get("classify", {})
    block: dict[str, Any] = {
        "specs_file": str(ctx.spec_path) if ctx.spec_path else None, "training_csv": str(ctx.train_csv),
        "validation_csv": str(ctx.val_csv), "kpi_test_csv": str(ctx.kpi_csv), "images_dir": str(ctx.images_dir),
        "mining_pool_csv": str(ctx.pool_csv) if ctx.pool_csv else None, "mining_images_root": str(ctx.pool_images),
        "num_gpus": math.ceil(p2.resources.train.gpu), "gpu_model": ti.gpu_model_text(_gpu_model()),
        "batch_size": classify.get("batch_size"), "num_epochs": ctx.spec.get("train", {}).get("num_epochs"),
        "backend": cfg.backend,
        "sdg": {"kind": p2.sdg.kind, "num_SDG": p2.sdg.num_SDG},
        "mining_filter": {"top_k_per_target": p2.mining_filter.top_k_per_target, "metric": "cosine",
                          "min_similarity": p2.mining_filter.min_similarity, "embedder": p2.mining_filter.embedder,
                          "history_aware": {"enabled": True, "identity": "filepath",
                                            "history_file": str(rd.resolve().mining_history)}},
    }
    anomalygen = ti.anomalygen_block(p2.sdg.kind, p2.sdg.num_SDG, images_dir=ctx.images_dir, workspace_root=ctx.root,
                                     container=cfg.tao.anomalygen_image)
    block.update(ti.state_config_additions(
        run_dir=rd.root, backbone_weight_dir=backbone_weight_dir(ctx, rd), anomalygen=anomalygen,
        train_container=cfg.tao.image if cfg.backend == "tao" else None))
    return block


def timestamp() -> str:
    """``YYYYMMDD_HHMMSS`` (UTC): the name of a stage's attempt directory (``rca_results/<TS>/``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")


@dataclass(frozen=True)
class StageContext:
    """What a stage's ``run`` gets: the run dir, the config, the inputs, and Ray tasks with placement."""

    rd: RunDir
    cfg: RunConfig
    inputs: LoopContext

    @property
    def contract(self) -> MetricContract:
        contract: MetricContract = self.cfg.phase2.contract
        return contract

    def placement(self, what: str) -> Placement:
        """Where a stage's Ray task records itself (``RD/placement.jsonl``), e.g. ``iter1/train``."""
        from raypipe.placement import Placement

        return Placement(str(self.rd.root), "phase2", what)

    def resources(self, kind: ResourceClass) -> Resources:
        from raypipe.deft.stages.base import ResourceClass

        res = self.cfg.phase2.resources
        return res.train if kind is ResourceClass.TRAIN else res.cpu_stage

    def run_task(self, what: str, kind: ResourceClass, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` as a Ray task with the resources of ``kind``, recorded as ``what``."""
        from raypipe._ray import run_task

        return run_task(fn, *args, resources=self.resources(kind), placement=self.placement(what), **kwargs)

    # -- facts several stages need ------------------------------------------------------------
    def best_so_far(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        """The best evaluated loop entry (the warm start and the embedding model of the next iteration)."""
        from raypipe.metrics import pick_best

        labels = ordered_labels(state.get("iterations", {}), include_final=False)
        pick = pick_best(self.contract, [(lb, state["iterations"][lb]) for lb in labels])
        if pick is None:
            raise HardStop("train", "no evaluated iteration to warm-start from", "evaluate the baseline first")
        return pick.entry

    def base_spec(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The spec the loop trains with: the baseline's (Phase 1's winner) when known, else the run spec."""
        from raypipe.spec import load_training_spec, nest_dotted

        ts = state["iterations"].get(BASELINE, {}).get("training_spec")
        spec = load_training_spec(ts) if ts else copy.deepcopy(self.inputs.spec)
        return nest_dotted(dict(self.cfg.spec_overrides), spec)

    def fresh_attempt_dir(self, parent: Path) -> Path:
        """``parent/<TS>/`` after removing any uncommitted attempt (a committed one is never redone)."""
        from raypipe.deft._stage_io import fresh_dir

        fresh_dir(parent)
        return parent / timestamp()

    def kpi_capture_files(self) -> set[Path]:
        """Every capture file of the KPI set: training data must never draw on one."""
        from raypipe.workspace._rows import read_rows

        kpi = read_rows(self.inputs.kpi_csv)
        return {p.resolve() for _, row in kpi.iterrows()
                for p in self.inputs.layout.capture_paths(self.inputs.images_dir, row)}


__all__ = ["LoopContext", "StageContext", "backbone_weight_dir", "config_block", "timestamp"]
