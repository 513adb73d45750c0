"""TAO experiment specs: loading, dotted keys (``train.classify.cls_weight[1]``) and deep merges.

Specs stay plain nested dicts so that what we write is exactly what TAO reads.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")

# TAO's schema rejects these keys: never write them into a spec.
FORBIDDEN_SPEC_KEYS = ("automl_policy", "workflow")

# Keys that define the network's shape: a warm start must keep them as the checkpoint has them.
ARCHITECTURE_KEYS = (
    "model.backbone.type",
    "model.classify.difference_module",
    "model.classify.learnable_difference_modules",
    "model.classify.embedding_vectors",
    "model.classify.embed_dec",
    "dataset.classify.input_map",
    "dataset.classify.num_input",
    "dataset.classify.image_width",
    "dataset.classify.image_height",
    "dataset.classify.concat_type",
    "dataset.classify.grid_map",
)


class SpecError(ValueError):
    """A spec file or dotted key is malformed; the message names the file/key."""


def load_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise SpecError(f"{path}: spec is empty; expected a mapping with train/model/dataset sections")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def dump_spec(spec: dict[str, Any]) -> str:
    for key in FORBIDDEN_SPEC_KEYS:
        if key in spec:
            raise SpecError(f"refusing to write '{key}' into a spec: TAO's schema rejects it")
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)


def parse_dotted(key: str) -> list[str | int]:
    """``train.classify.cls_weight[1]`` → ``["train", "classify", "cls_weight", 1]``; :class:`SpecError` if malformed."""
    parts: list[str | int] = []
    for seg in key.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise SpecError(f"malformed dotted key '{key}' (segment '{seg}')")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


_MISSING = object()


def get_dotted(spec: dict[str, Any], key: str, default: Any = _MISSING) -> Any:
    node: Any = spec
    for part in parse_dotted(key):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            if default is _MISSING:
                raise KeyError(key) from None
            return default
    return node


def has_dotted(spec: dict[str, Any], key: str) -> bool:
    return get_dotted(spec, key, _MISSING_SENTINEL) is not _MISSING_SENTINEL


_MISSING_SENTINEL = object()


def set_dotted(spec: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in place, creating intermediate mappings (list indices must exist)."""
    parts = parse_dotted(key)
    node: Any = spec
    for part, nxt in zip(parts[:-1], parts[1:]):
        if isinstance(part, int):
            node = node[part]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise SpecError(f"'{key}': list index {last} out of range")
    node[last] = value


def nest_dotted(flat: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``{"train.optim.lr": 1e-4}`` into a nested dict (on a copy of ``base`` if given)."""
    out = copy.deepcopy(base) if base is not None else {}
    for key, value in flat.items():
        set_dotted(out, key, value)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return a new dict: ``override`` merged onto ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → dotted keys (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def load_training_spec(value: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A ``training_spec`` as deft_state.json records it: a spec path (TAO style) or an inline mapping."""
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return load_spec(Path(value))
