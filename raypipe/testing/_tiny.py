"""A tiny synthetic AOI workspace for unit and conformance tests (seconds to generate and train on).

Goldens are textured boards with a component and two pads; captures are the golden plus sensor noise
and a small global brightness change; defects are drawn consistently into every light:
``speck`` (a 3-px dot — the case a model that pools before comparing misses), ``missing`` (component
gone) and ``bridge`` (a solder line between the pads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.workspace._rows import write_rows

DEFECTS = ("speck", "missing", "bridge")


@dataclass(frozen=True)
class TinyWorkspace:
    root: Path
    images_dir: Path
    train_csv: Path
    val_csv: Path
    spec: dict[str, Any]
    lights: tuple[str, ...]


def tiny_spec(lights: tuple[str, ...], size: int, *, num_epochs: int = 2, batch_size: int = 8) -> dict[str, Any]:
    """A TAO Visual ChangeNet classify spec sized for tests (small network, few epochs)."""
    return {
        "train": {
            "num_epochs": num_epochs, "checkpoint_interval": 1, "validation_interval": 1,
            "pretrained_model_path": None,
            "classify": {"loss": "ce", "cls_weight": [1.0, 4.0]},
            "optim": {"lr": 3e-3, "optim": "adamw", "policy": "linear", "momentum": 0.9, "weight_decay": 1e-4},
        },
        "model": {
            "backbone": {"type": "changenet_cnn", "pretrained_backbone_path": None, "freeze_backbone": False},
            "classify": {"train_margin_euclid": 2.0, "eval_margin": 0.5, "embedding_vectors": 2, "embed_dec": 8,
                         "difference_module": "learnable", "learnable_difference_modules": 2},
        },
        "dataset": {
            "classify": {
                "train_dataset": {"csv_path": "/data/train.csv", "images_dir": "/data/images"},
                "validation_dataset": {"csv_path": "/data/val.csv", "images_dir": "/data/images"},
                "image_ext": ".png", "batch_size": batch_size, "workers": 0, "fpratio_sampling": 0.5,
                "num_input": len(lights), "input_map": {name: i for i, name in enumerate(lights)},
                "concat_type": "linear", "grid_map": {"x": len(lights), "y": 1},
                "image_width": size, "image_height": size, "num_classes": 2,
                "augmentation_config": {"augment": False, "rgb_input_mean": [0.5, 0.5, 0.5],
                                        "rgb_input_std": [0.25, 0.25, 0.25]},
            }
        },
    }


def _golden(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(60, 100)
    img = np.full((size, size, 3), base, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    c = size // 2
    h = max(3, size // 6)
    img[c - h:c + h, c - 2 * h:c + 2 * h] = rng.integers(20, 50)  # component body (dark)
    img[c - h:c + h, c - 3 * h:c - 2 * h] = 200  # left pad
    img[c - h:c + h, c + 2 * h:c + 3 * h] = 200  # right pad
    return img


def _draw_defect(img: np.ndarray, golden: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    size = img.shape[0]
    c, h = size // 2, max(3, size // 6)
    if kind == "speck":
        y, x = rng.integers(2, size - 5, 2)
        img[y:y + 3, x:x + 3] = 255 if golden[y, x, 0] < 128 else 0
    elif kind == "missing":
        img[c - h:c + h, c - 2 * h:c + 2 * h] = golden[0:2 * h, 0:4 * h].mean()
    else:  # bridge
        img[c - 1:c + 1, c - 3 * h:c + 3 * h] = 230


def _light(img: np.ndarray, i: int) -> np.ndarray:
    # Different illumination per light: light 0 as is, others darker with a colour cast.
    out = img * (1.0 - 0.25 * i)
    out[..., i % 3] += 20 * i
    return out


def make_tiny_workspace(root: Path, *, n_train: int = 32, n_val: int = 16, size: int = 32,
                        lights: tuple[str, ...] = ("solder", "lowangle"), defect_rate: float = 0.4,
                        seed: int = 0, num_epochs: int = 2, batch_size: int = 8) -> TinyWorkspace:
    """Write ``root/images/...``, ``root/train.csv`` and ``root/val.csv``; return their paths and a spec."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    images = root / "images"
    frames: dict[str, list[dict[str, str]]] = {"train": [], "val": []}
    n_boards = 4
    for split, n in (("train", n_train), ("val", n_val)):
        n_def = max(1, int(round(n * defect_rate)))
        kinds = [DEFECTS[k % len(DEFECTS)] for k in range(n_def)] + [None] * (n - n_def)
        rng.shuffle(kinds)
        for k, kind in enumerate(kinds):
            board = f"{split}_board{k % n_boards}"
            obj = f"C{k}@{k % n_boards}"
            golden = _golden(rng, size)
            capture = golden * rng.uniform(0.95, 1.05) + rng.normal(0, 3, golden.shape)
            if kind is not None:
                _draw_defect(capture, golden, kind, rng)
            for i, light in enumerate(lights):
                for sub, arr in (("captures", capture), ("goldens", golden)):
                    path = images / sub / board / f"{obj}_{light}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.clip(_light(arr, i), 0, 255).astype(np.uint8)).save(path)
            frames[split].append({"input_path": f"captures/{board}", "golden_path": f"goldens/{board}",
                                  "label": "PASS" if kind is None else kind.upper(), "object_name": obj,
                                  "boardname": board, "comp_type_1": "R" if k % 2 else "C"})
    train_csv = write_rows(pd.DataFrame(frames["train"]), root / "train.csv")
    val_csv = write_rows(pd.DataFrame(frames["val"]), root / "val.csv")
    return TinyWorkspace(root=root, images_dir=images, train_csv=train_csv, val_csv=val_csv,
                         spec=tiny_spec(lights, size, num_epochs=num_epochs, batch_size=batch_size), lights=lights)
