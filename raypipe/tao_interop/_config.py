"""The ``deft_state.json`` ``config`` keys TAO's scripts resolve paths and facts from.

TAO's scripts resolve paths from ``config``: ``prepare_inference_spec.py`` finds the backbone file
through ``backbone_weight_dir`` (a KeyError without it); the mining pool resolver writes
``resolved_mining_pool_csv``; its report prints ``num_gpus``x``gpu_model``. ``train_container`` and the
``anomalygen`` block are what TAO's state schema records about who trained and who synthesised.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESOLVED_POOL_CSV = Path("inputs") / "mining_pool.resolved.csv"
BUILTIN_BACKBONE_DIR = "backbone"  # RD/backbone: the built-in backend's staged backbone weights
WORKSPACE_BACKBONE_DIR = Path("augmentation") / "backbone"  # where TAO stages backbone files
ANOMALYGEN_KEYS = ("sub_skill", "mode", "project", "defect_spec", "checkpoint_dir", "dataset_dir_source", "step",
                   "num_SDG", "container")


def anomalygen_block(kind: str, num_sdg: int, *, images_dir: str | Path, workspace_root: str | Path | None = None,
                     project: str | None = None, step: int | None = None,
                     container: str | None = None) -> dict[str, Any]:
    """``config.anomalygen``: TAO's record of the synthetic-defect generator, for either SDG kind.

    ``builtin``: raypipe's procedural generator draws defects onto golden images of the training
    rows, so its "dataset" is the image root and it has no project, spec, checkpoint or container.
    ``anomalygen``: NVIDIA AnomalyGen in its container, laid out as TAO lays it out under
    ``<workspace>/augmentation/anomalygen/``.
    """
    if kind == "builtin":
        return {"sub_skill": "raypipe.deft.sdg", "mode": "procedural", "project": None, "defect_spec": None,
                "checkpoint_dir": None, "dataset_dir_source": str(images_dir), "step": None,
                "num_SDG": int(num_sdg), "container": None}
    if kind == "anomalygen":
        if workspace_root is None or not project:
            raise ValueError("anomalygen_block: the AnomalyGen generator needs workspace_root and project")
        base = Path(workspace_root) / "augmentation" / "anomalygen"
        return {"sub_skill": "paidf-anomalygen", "mode": "inference_only", "project": project,
                "defect_spec": str(base / "datasets" / project / "defect_spec.jsonl"),
                "checkpoint_dir": str(base / "checkpoints" / project),
                "dataset_dir_source": str(base / "datasets" / project), "step": step,
                "num_SDG": int(num_sdg), "container": container}
    raise ValueError(f"anomalygen_block: unknown SDG kind {kind!r} (builtin | anomalygen)")


def gpu_model_text(name: str | None) -> str:
    """``config.gpu_model`` is never empty in TAO's state: say "CPU only" rather than null."""
    return name.strip() if name and name.strip() else "none (CPU only)"


def write_resolved_mining_pool(pool_csv: str | Path, images_root: str | Path, out: str | Path, *, light: str,
                               image_ext: str) -> Path:
    """``config.resolved_mining_pool_csv``: the pool with one canonical ``filepath`` per row.

    TAO mines only from this resolved copy, never from guessed paths: ``filepath`` is the row's
    capture image for ``light`` (relative to ``images_root`` when inside it), and every capture and
    golden file must exist. Problems name the pool CSV, the row (1-based, header excluded) and
    the column; nothing is written then. The workspace's pool itself is never touched.
    """
    import pandas as pd

    from raypipe._io import atomic_write_text

    pool_csv, root = Path(pool_csv), Path(images_root).resolve()
    rows = pd.read_csv(pool_csv, dtype=str, keep_default_na=False)
    problems: list[str] = []
    missing_cols = [c for c in ("input_path", "golden_path", "object_name") if c not in rows.columns]
    if missing_cols:
        raise ValueError(f"{pool_csv}: missing column(s) {missing_cols}")
    filepaths: list[str] = []
    for i, rec in enumerate(rows.to_dict("records"), start=1):
        name = f"{rec['object_name']}_{light}{image_ext}"
        capture = (root / rec["input_path"] / name).resolve()
        for col in ("input_path", "golden_path"):
            f = (root / rec[col] / name).resolve()
            if not f.is_file():
                problems.append(f"row {i}, column '{col}': {f} does not exist")
        filepaths.append(capture.relative_to(root).as_posix() if capture.is_relative_to(root) else str(capture))
    if problems:
        shown = "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
        raise ValueError(f"{pool_csv}: {len(problems)} pool file(s) do not resolve under {root}: {shown}")
    rows["filepath"] = filepaths
    return atomic_write_text(Path(out), rows.to_csv(index=False))


def state_config_additions(*, run_dir: str | Path, backbone_weight_dir: str | Path, train_container: str | None,
                           anomalygen: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` keys TAO's state has and raypipe's lacked; merge them into the config block.

    ``backbone_weight_dir``: the directory holding the backbone file the training spec names
    (:func:`stage_builtin_backbone` for the built-in backend; the TAO backend's staged file's
    directory, normally ``<workspace>/augmentation/backbone``). ``train_container``: the TAO image
    URI, or None for the built-in backend, which trains in-process.
    """
    missing = [k for k in ANOMALYGEN_KEYS if k not in anomalygen]
    if missing:
        raise ValueError(f"state_config_additions: anomalygen block lacks {missing}")
    return {"backbone_weight_dir": str(Path(backbone_weight_dir).resolve()),
            "resolved_mining_pool_csv": str(Path(run_dir).resolve() / RESOLVED_POOL_CSV),
            "train_container": train_container, "anomalygen": dict(anomalygen)}
