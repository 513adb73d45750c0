"""The handoff: backbone resolution, ``best_model.json``, ``best_model_inference_spec.yaml``.

TAO's handoff resolves the backbone file the training spec names (``pretrained_backbone_path``):
as a host file when it is one, else ``config.backbone_weight_dir/<its file name>``; it refuses a
spec without one, a name without a weights suffix, and a file that is not there. Its consumer
mounts ``best_model.json``'s ``backbone`` at ``backbone_container_path`` and the checkpoint at
``/model/best.pth``, and runs the inference spec as written.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.tao_interop._config import BUILTIN_BACKBONE_DIR

CHECKPOINT_MOUNT = "/model/best.pth"
BACKBONE_SUFFIXES = (".ckpt", ".pth", ".safetensors")
BEST_MODEL_KEYS = ("checkpoint", "threshold", "metric_contract", "metric_result", "iteration", "backbone",
                   "backbone_container_path", "backbone_type", "backbone_frozen", "images_dir", "training_spec")
INFERENCE_SPEC_TOP_KEYS = ("encryption_key", "task", "results_dir", "train", "model", "dataset", "inference")
_TRAINING_DATASETS = ("train_dataset", "validation_dataset", "test_dataset")


class BackboneError(ValueError):
    """The training spec names no backbone file TAO's handoff can resolve; the message says what to stage."""


@dataclass(frozen=True)
class ResolvedBackbone:
    host: Path  # the file to mount
    container_path: str  # the spec's value: where the file appears inside a TAO container
    backbone_type: str
    frozen: bool


def _backbone_section(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    model = spec.get("model") or {}
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    return backbone if isinstance(backbone, Mapping) else {}


def resolve_backbone(spec: Mapping[str, Any], backbone_weight_dir: str | Path | None) -> ResolvedBackbone:
    """The backbone file of ``spec`` resolved the way TAO's handoff resolves it."""
    section = _backbone_section(spec)
    value = section.get("pretrained_backbone_path")
    if not isinstance(value, str) or not value.strip():
        raise BackboneError("the training spec names no backbone weights (model.backbone.pretrained_backbone_path "
                            "is empty); TAO's handoff needs the file the backbone was built from")
    named = Path(value)
    if named.suffix not in BACKBONE_SUFFIXES:
        raise BackboneError(f"model.backbone.pretrained_backbone_path {value!r}: TAO loads a local "
                            f"{'/'.join(BACKBONE_SUFFIXES)} file (no URL or hub id)")
    if named.is_absolute() and named.is_file():
        host = named
    elif backbone_weight_dir is not None:
        host = Path(backbone_weight_dir) / named.name
    else:
        raise BackboneError(f"{value} is not a host file and no backbone_weight_dir is recorded to find it in")
    if not host.is_file() or host.stat().st_size == 0:
        raise BackboneError(f"backbone file {host} (for model.backbone.pretrained_backbone_path {value}) is missing "
                            "or empty")
    return ResolvedBackbone(host=host.resolve(), container_path=value, backbone_type=str(section.get("type", "")),
                            frozen=bool(section.get("freeze_backbone", False)))


def best_model_record(*, label: str, entry: Mapping[str, Any], spec: Mapping[str, Any],
                      metric_contract: Mapping[str, Any], images_dir: str | Path,
                      backbone_weight_dir: str | Path | None) -> dict[str, Any]:
    """``best_model.json`` with TAO's fields, in TAO's order (``far_pct`` last, for a far_pct contract).

    ``entry`` is the picked iteration's state entry, ``spec`` the loaded training spec it names.
    """
    backbone = resolve_backbone(spec, backbone_weight_dir)
    ts = entry["training_spec"]
    threshold = entry.get("threshold")
    record: dict[str, Any] = {
        "checkpoint": str(entry["best_ckpt_path"]),
        "threshold": float(threshold) if threshold is not None else None,
        "metric_contract": dict(metric_contract),
        "metric_result": dict(entry["metric_result"]),
        "iteration": label,
        "backbone": str(backbone.host),
        "backbone_container_path": backbone.container_path,
        "backbone_type": backbone.backbone_type,
        "backbone_frozen": backbone.frozen,
        "images_dir": str(images_dir),
        "training_spec": str(ts),
    }
    if metric_contract.get("name") == "far_pct":
        record["far_pct"] = float(entry["metric_result"]["value"])
    return record


def inference_spec(training_spec: Mapping[str, Any], *, threshold: float | None,
                   backbone_container_path: str) -> dict[str, Any]:
    """``best_model_inference_spec.yaml``: runnable by ``visual_changenet inference -e`` once the
    consumer fills four empty fields (``dataset.classify.infer_dataset.{csv_path, images_dir}``,
    ``inference.results_dir``, ``results_dir``).

    Model and dataset blocks are the training spec's, verbatim, so architecture, lights, image size
    and difference module match the checkpoint; training data sources are dropped; augmentation is
    off; one sample per batch. The checkpoint is the container mount ``/model/best.pth`` (the host
    file is ``best_model.json``'s ``checkpoint``). ``train.classify.loss`` is kept alone because the
    TAO 7.1 runtime rebuilds its criterion even for inference.
    """
    if not isinstance(training_spec.get("model"), Mapping):
        raise ValueError("inference_spec: the training spec has no model block")
    classify = copy.deepcopy(dict(((training_spec.get("dataset") or {}).get("classify")) or {}))
    for key in _TRAINING_DATASETS:
        classify.pop(key, None)
    classify["infer_dataset"] = {"csv_path": "", "images_dir": ""}
    classify["batch_size"] = 1
    classify["workers"] = 1
    if isinstance(classify.get("augmentation_config"), dict):
        classify["augmentation_config"]["augment"] = False
    model = copy.deepcopy(dict(training_spec["model"]))
    if threshold is not None:
        model.setdefault("classify", {})["eval_margin"] = float(threshold)
    model.setdefault("backbone", {})["pretrained_backbone_path"] = backbone_container_path
    loss = ((training_spec.get("train") or {}).get("classify") or {}).get("loss", "ce")
    return {
        "encryption_key": training_spec.get("encryption_key", "tlt_encode"),
        "task": training_spec.get("task", "classify"),
        "results_dir": "",
        "train": {"classify": {"loss": loss}},
        "model": model,
        "dataset": {"classify": classify},
        "inference": {"checkpoint": CHECKPOINT_MOUNT, "batch_size": 1, "results_dir": ""},
    }


def builtin_backbone_filename(backbone_type: str, seed: int) -> str:
    """The staged initial weights of the built-in backbone: the name says they are an init, not a pretraining."""
    return f"{backbone_type}_init_seed{int(seed)}.pth"


def stage_builtin_backbone(run_dir: str | Path, spec: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], Path]:
    """Give the built-in backend a backbone file, as TAO specs always have one; returns ``(spec', dir)``.

    The built-in backbone has no pretrained weights. So that the spec still names the file its
    backbone starts from (TAO's handoff and its consumers need one), the seeded initial network is
    written once per run to ``RD/backbone/<type>_init_seed<seed>.pth`` and ``spec'`` points
    ``model.backbone.pretrained_backbone_path`` at it (a host path: nothing runs in a container).
    The built-in trainer loads its stem from that file in every training that does not warm-start,
    which makes the spec true. A spec that already names an existing file is returned unchanged.
    ``dir`` is the run's ``config.backbone_weight_dir``.
    """
    section = _backbone_section(spec)
    current = section.get("pretrained_backbone_path")
    if isinstance(current, str) and current and Path(current).is_file():
        return copy.deepcopy(dict(spec)), Path(current).resolve().parent
    from raypipe.backends.builtin import DEFAULT_BACKBONE, save_untrained_checkpoint

    backbone_type = str(section.get("type") or DEFAULT_BACKBONE)
    weight_dir = Path(run_dir).resolve() / BUILTIN_BACKBONE_DIR
    path = weight_dir / builtin_backbone_filename(backbone_type, seed)
    if not path.is_file() or path.stat().st_size == 0:
        weight_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_untrained_checkpoint(dict(spec), tmp, seed=int(seed))
        tmp.replace(path)  # atomic: a resumed run never finds half a file
    out = copy.deepcopy(dict(spec))
    out.setdefault("model", {}).setdefault("backbone", {})["pretrained_backbone_path"] = str(path)
    return out, weight_dir
