"""The spec a TAO container reads: our spec with every path rewritten to its container path.

A TAO spec's ``*_dataset.csv_path``/``images_dir`` are paths inside the container; raypipe takes
data from the workspace and rewrites those keys, ``train.pretrained_model_path``,
``model.backbone.pretrained_backbone_path`` and ``results_dir`` for each run. No host path
survives into a spec the container reads, and no ``automl_policy``/``workflow`` key is written
(:func:`raypipe.spec.dump_spec` refuses them; TAO's schema would reject them).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from raypipe.backends.tao._layout import ContainerLayout, ContainerPathError
from raypipe.spec import set_dotted
from raypipe.workspace._rows import read_rows, write_rows

DATASET_KEYS = ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")
PATH_COLUMNS = ("input_path", "golden_path")


def stage_csv(csv: Path, layout: ContainerLayout, staging_dir: Path) -> str:
    """Container path of a CSV whose rows resolve inside the container.

    Relative row paths resolve against ``images_dir`` in the container as on the host, so the CSV
    is mounted as it is. Absolute row paths are host paths: those rows are rewritten to container
    paths into ``staging_dir/<stem>.container.csv`` (the original is never touched).
    """
    csv = Path(csv).resolve()
    rows = read_rows(csv)
    absolute = [c for c in PATH_COLUMNS if c in rows.columns and rows[c].map(lambda p: Path(p).is_absolute()).any()]
    if not absolute:
        return layout.expose(csv)
    staged = rows.copy()
    for col in absolute:
        def translate(value: str, *, _col: str = col) -> str:
            if not Path(value).is_absolute():
                return value
            try:
                return layout.container_path(value)
            except ContainerPathError as exc:
                row = int(rows.index[rows[_col] == value][0]) + 1
                raise ContainerPathError(f"{csv}: row {row}, column '{_col}': {exc}") from None
        staged[col] = staged[col].map(translate)
    out = Path(staging_dir) / f"{csv.stem}.container.csv"
    write_rows(staged, out)
    return layout.container_path(out)


def _base(spec: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out.setdefault("task", "classify")  # TAO: "set task=classify in SPECS for all task specs"
    return out


def _set_datasets(spec: dict[str, Any], datasets: dict[str, tuple[str, str]]) -> None:
    for key in DATASET_KEYS:
        csv_path, images_dir = datasets[key]
        set_dotted(spec, f"dataset.classify.{key}", {"csv_path": csv_path, "images_dir": images_dir})


def _expose_backbone(spec: dict[str, Any], layout: ContainerLayout) -> None:
    """Mount the spec's staged backbone file read-only and point the spec at its container path.

    The value may be a host file, TAO's ``/data/pretrained_models/<file>`` or a bare file name; the
    last two resolve through ``<workspace>/augmentation/backbone/``, where TAO stages backbones
    (:meth:`ContainerLayout.stage_backbone`). A file that is not staged raises
    :class:`raypipe.tao_interop.BackboneError` (pre-flight reports it first): the container loads
    the value with ``torch.load`` and downloads nothing.
    """
    target = layout.stage_backbone(spec)
    if target is not None:
        set_dotted(spec, "model.backbone.pretrained_backbone_path", target)


def _clamp_intervals(spec: dict[str, Any]) -> None:
    """TAO asserts ``checkpoint_interval``/``validation_interval`` ≤ ``num_epochs``: clamp them."""
    train = spec.get("train") or {}
    epochs = train.get("num_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        return
    for key in ("checkpoint_interval", "validation_interval", "val_interval"):
        if isinstance(train.get(key), int):
            train[key] = max(1, min(train[key], epochs))


def train_spec(spec: dict[str, Any], layout: ContainerLayout, *, train_csv: str, val_csv: str,
               images_dir: str, val_images_dir: str, results_dir: str, init_ckpt: str | None,
               seed: int) -> dict[str, Any]:
    """Container-side training spec (all path arguments are container paths)."""
    out = _base(spec)
    _set_datasets(out, {"train_dataset": (train_csv, images_dir),
                        "validation_dataset": (val_csv, val_images_dir),
                        "test_dataset": (val_csv, val_images_dir),
                        "infer_dataset": (val_csv, val_images_dir)})
    # Weight init only, fresh epoch counter: a new phase/iteration must never resume the optimiser
    # state and epoch of another run (resume_training_checkpoint_path would do exactly that).
    set_dotted(out, "train.pretrained_model_path", init_ckpt)
    set_dotted(out, "train.resume_training_checkpoint_path", None)
    set_dotted(out, "train.results_dir", results_dir)
    set_dotted(out, "train.seed", int(seed))
    out["results_dir"] = results_dir
    _clamp_intervals(out)
    _expose_backbone(out, layout)
    return out


def inference_spec(spec: dict[str, Any], layout: ContainerLayout, *, csv: str, images_dir: str,
                   checkpoint: str, results_dir: str, task: str = "inference") -> dict[str, Any]:
    """Container-side spec for ``visual_changenet inference`` (or ``evaluate`` with ``task``)."""
    out = _base(spec)
    _set_datasets(out, {key: (csv, images_dir) for key in DATASET_KEYS})
    set_dotted(out, "train.pretrained_model_path", None)  # weights come from the checkpoint
    set_dotted(out, "train.resume_training_checkpoint_path", None)
    set_dotted(out, f"{task}.checkpoint", checkpoint)
    set_dotted(out, f"{task}.results_dir", results_dir)
    out["results_dir"] = results_dir
    _expose_backbone(out, layout)
    return out
