"""The CSV row contract shared by every stage: columns ``input_path,golden_path,label,object_name`` first
(extra columns kept), paths are image DIRECTORIES relative to the image root, labels normalised.

Rows are read as strings (no NaN coercion) so that extra columns survive every stage byte-for-byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REQUIRED_COLUMNS = ("input_path", "golden_path", "label", "object_name")
LEAKAGE_KEY = ("input_path", "golden_path", "label", "object_name", "boardname")
PASS = "PASS"


def normalise_label(label: Any) -> str:
    """``PASS`` (any case/whitespace) → ``PASS``; anything else → stripped lower case."""
    text = str(label).strip()
    return PASS if text.upper() == PASS else text.lower()


def is_defect(label: Any) -> bool:
    return str(label).strip().upper() != PASS


def read_rows(path: str | Path) -> pd.DataFrame:
    """Read a workspace CSV with every cell as a string (no type guessing, no NaN)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)


def write_rows(df: pd.DataFrame, path: str | Path) -> Path:
    """Write rows atomically with the required columns first and labels normalised."""
    from raypipe._io import atomic_write_text

    out = df.copy()
    out["label"] = out["label"].map(normalise_label)
    cols = list(REQUIRED_COLUMNS) + [c for c in out.columns if c not in REQUIRED_COLUMNS]
    return atomic_write_text(path, out[cols].to_csv(index=False))


@dataclass(frozen=True)
class ImageLayout:
    """How a row maps to image files: lights (in channel order) and the file extension."""

    lights: tuple[str, ...]
    image_ext: str = ".png"

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ImageLayout:
        ds = spec.get("dataset", {}).get("classify", {})
        input_map = ds.get("input_map") or {}
        if not isinstance(input_map, dict) or not input_map:
            raise ValueError("spec: dataset.classify.input_map must map light names to channel indices")
        lights = tuple(name for name, _ in sorted(input_map.items(), key=lambda kv: int(kv[1])))
        ext = str(ds.get("image_ext", ".png"))
        if not ext.startswith("."):
            ext = "." + ext
        return cls(lights=lights, image_ext=ext)

    def image_path(self, images_dir: Path, directory: str, object_name: str, light: str) -> Path:
        base = Path(directory)
        if not base.is_absolute():
            base = Path(images_dir) / base
        return base / f"{object_name}_{light}{self.image_ext}"

    def capture_paths(self, images_dir: Path, row: Any) -> list[Path]:
        return [self.image_path(images_dir, row["input_path"], row["object_name"], lt) for lt in self.lights]

    def golden_paths(self, images_dir: Path, row: Any) -> list[Path]:
        return [self.image_path(images_dir, row["golden_path"], row["object_name"], lt) for lt in self.lights]


def iter_records(df: pd.DataFrame) -> Iterable[dict[str, str]]:
    return df.to_dict(orient="records")
