"""Loading the run config: package defaults ← ``--config FILE`` ← ``key.path=value`` overrides.

The layers are merged as plain YAML, remembering which layer set each key, and validated once as a
:class:`~raypipe.config.RunConfig`. Every error names the dotted key and the layer it came from
("override 'automl.max_concurrent_trials=0': automl.max_concurrent_trials: ..."), and an unknown
key names the closest valid one, so a typo never silently falls back to a default three phases
later.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from raypipe.config._model import KeyProblem, RunConfig

log = logging.getLogger(__name__)

DEFAULTS_SOURCE = "package defaults (raypipe/defaults.yaml)"

# Keys removed from the schema, with what replaces them. A user layer that sets one is refused
# with the reason; a saved run config (``RD/config.yaml`` of an older run) has them dropped.
REMOVED_KEYS = {
    "phase2.mining_filter.metric": "mining always compares L2-normalised embeddings by cosine",
    "phase2.mining_filter.history_aware": "mining is always history-aware (RD/mining_history.json, "
                                          "identity = the sample's file path)",
}

# Top-level keys added to the schema since a run may have been started, with the value that run
# implied: a saved ``RD/config.yaml`` without one gets it (a run from before ``label_map`` mapped no label).
ADDED_KEYS: dict[str, Any] = {"label_map": {}}

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")

# (layer rank, layer name): which layer set a key; a later layer has a higher rank.
_Source = tuple[int, str]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the source (file or override) and the key."""


# ---------------------------------------------------------------------------------------------
# the schema, as the loader sees it


def _sections(model: type[BaseModel], prefix: str = "") -> tuple[dict[str, type[BaseModel] | None], set[str]]:
    """(every dotted key of the schema → its node class or None for a leaf, the open sections).

    An open section is a mapping of user data (``spec_overrides``, ``automl.search_space``, …):
    its children are not schema keys and an override takes its remainder as one key.
    """
    keys: dict[str, type[BaseModel] | None] = {}
    open_sections: set[str] = set()
    for name, field in model.model_fields.items():
        full = f"{prefix}.{name}" if prefix else name
        node = _node_class(field.annotation)
        keys[full] = node
        if node is not None:
            sub, sub_open = _sections(node, full)
            keys.update(sub)
            open_sections |= sub_open
        elif _is_mapping(field.annotation):
            open_sections.add(full)
    return keys, open_sections


def _node_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return origin is dict or annotation is dict


_KEYS, _OPEN = _sections(RunConfig)


def _is_open(path: str) -> bool:
    return any(path == s or path.startswith(s + ".") for s in _OPEN)


def _open_section_of(path: str) -> str | None:
    return next((s for s in _OPEN if path.startswith(s + ".")), None)


# ---------------------------------------------------------------------------------------------
# layers


def package_defaults() -> dict[str, Any]:
    """``raypipe/defaults.yaml`` as a plain mapping (the only place default values are written)."""
    text = resources.files("raypipe").joinpath("defaults.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _suggest(full: str) -> str:
    valid = list(_KEYS)
    parent, _, leaf = full.rpartition(".")
    siblings = [v for v in valid if v.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, [v.rpartition(".")[2] for v in siblings], n=1, cutoff=0.3)
    if close:
        return f"; did you mean '{(parent + '.') if parent else ''}{close[0]}'?"
    close = difflib.get_close_matches(full, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_known(layer: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Refuse unknown and removed keys of one layer, naming the layer."""
    for key, value in layer.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if full in REMOVED_KEYS or any(full.startswith(r + ".") for r in REMOVED_KEYS):
            removed = next(r for r in REMOVED_KEYS if full == r or full.startswith(r + "."))
            raise ConfigError(f"{source}: config key '{full}' was removed: {REMOVED_KEYS[removed]}; delete it")
        if _open_section_of(full) is not None:
            continue
        if full not in _KEYS:
            raise ConfigError(f"{source}: unknown config key '{full}'{_suggest(full)}")
        if isinstance(value, Mapping) and _KEYS[full] is not None:
            _check_known(value, source, full)


def _merge(base: dict[str, Any], layer: Mapping[str, Any], source: _Source, sources: dict[str, _Source],
           prefix: str = "") -> None:
    """Merge ``layer`` into ``base`` in place (mappings merge, everything else replaces) and record
    ``source`` for every key it sets."""
    for key, value in layer.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, sources, full)
        else:
            base[key] = copy.deepcopy(value)
            for k in [k for k in sources if k == full or k.startswith(full + ".")]:
                del sources[k]
            # Leaves only: a mapping-level error is blamed on the latest layer that set one of its keys.
            for sub in _leaf_paths(value, full) if isinstance(value, Mapping) and value else [full]:
                sources[sub] = source


def _leaf_paths(mapping: Mapping[str, Any], prefix: str) -> list[str]:
    out = []
    for key, value in mapping.items():
        full = f"{prefix}.{key}"
        out.extend(_leaf_paths(value, full) if isinstance(value, Mapping) else [full])
    return out


def read_layer(path: str | Path) -> dict[str, Any]:
    """One YAML config file as a mapping; :class:`ConfigError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        layer = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(layer, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return layer


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` with the value parsed as a YAML scalar (``true``, ``3``, ``1e-4``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        # YAML 1.1 reads "1e-4" (no dot) as a string; a learning rate typed that way is a number.
        value = float(value)
    return key, value


def _nest_override(key: str, value: Any) -> dict[str, Any]:
    # An open section takes its remainder as one key (``spec_overrides.train.num_epochs=2``).
    section = _open_section_of(key)
    parts = section.split(".") + [key[len(section) + 1:]] if section else key.split(".")
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


# ---------------------------------------------------------------------------------------------
# validation


def _sources_of(path: str, sources: Mapping[str, _Source]) -> list[_Source]:
    """The layers that set ``path``: the one that set it or a key above it, and those that set a key
    below it (an override ``label_map.OK=good`` sets a key inside a mapping the defaults set)."""
    below = [v for k, v in sources.items() if k.startswith(path + ".")]
    probe = path
    while probe:
        if probe in sources:
            return [sources[probe], *below]
        probe = probe.rpartition(".")[0]
    return below


def _blame(keys: Iterable[str], sources: Mapping[str, _Source], default: str) -> str:
    """The latest layer that touched any of ``keys``: the change that broke a rule."""
    found = [s for key in keys for s in _sources_of(key, sources)]
    return max(found)[1] if found else default


def _error_lines(exc: ValidationError, sources: Mapping[str, _Source], *, prefix: str = "",
                 default: str = DEFAULTS_SOURCE) -> list[str]:
    """One "<source>: <dotted.key>: <problem>" line per validation error."""
    lines = []
    for err in exc.errors():
        loc = [*filter(None, prefix.split(".")), *(str(p) for p in err["loc"])]
        related: tuple[str, ...] = ()
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, KeyProblem):
            prefix = ".".join(loc)
            loc += cause.key.split(".")
            related = tuple(f"{prefix}.{r}" if prefix else r for r in cause.related)
            msg = cause.problem
        elif err["type"] == "extra_forbidden":
            msg = f"unknown config key{_suggest('.'.join(loc))}"
        elif err["type"] == "missing":
            msg = "missing (every key needs a value; the package defaults must define it)"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] != "value_error" and not isinstance(err.get("input"), Mapping):
                msg += f", got {err.get('input')!r}"
        key = ".".join(loc) or "<root>"
        lines.append(f"{_blame((key, *related), sources, default)}: {key}: {msg}")
    return lines


_Node = TypeVar("_Node", bound=BaseModel)


def check_node(model: type[_Node], data: Mapping[str, Any], *, prefix: str, source: str,
               error: type[ConfigError] = ConfigError) -> _Node:
    """Validate one node outside a full load (e.g. a sweep built in code) with the loader's messages."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise error("\n".join(_error_lines(exc, {}, prefix=prefix, default=source))) from None


def build_config(layers: Iterable[tuple[str, Mapping[str, Any]]], *,
                 base: Mapping[str, Any] | None = None, base_source: str = DEFAULTS_SOURCE) -> RunConfig:
    """Merge ``(source, mapping)`` layers onto ``base`` (default: the package defaults) and validate once."""
    merged: dict[str, Any] = copy.deepcopy(dict(base if base is not None else package_defaults()))
    sources: dict[str, _Source] = {}
    _merge({}, merged, (0, base_source), sources)
    for rank, (source, layer) in enumerate(layers, start=1):
        _check_known(layer, source)
        _merge(merged, layer, (rank, source), sources)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        lines = _error_lines(exc, sources)
        raise ConfigError("\n".join(lines)) from None


def load_config(config_file: str | Path | None = None, overrides: Iterable[str] = (), *,
                base: Mapping[str, Any] | None = None, base_source: str = DEFAULTS_SOURCE,
                extra: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> RunConfig:
    """The run config: ``base`` (package defaults) ← ``config_file`` ← ``overrides`` ← ``extra``.

    ``extra``: further named layers, e.g. ``("--workspace", {"workspace": "/data/ws"})``.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_layer(config_file)))
    for item in overrides:
        key, value = parse_override(item)
        layers.append((f"override '{item}'", _nest_override(key, value)))
    layers.extend(extra)
    return build_config(layers, base=base, base_source=base_source)


def read_saved_config(path: str | Path) -> dict[str, Any]:
    """A run's saved ``config.yaml`` as a base layer for ``--resume``: the ``resolved`` block and
    keys removed since that run was started are dropped (the latter with a warning)."""
    saved = read_layer(path)
    saved.pop("resolved", None)
    for key, value in ADDED_KEYS.items():
        saved.setdefault(key, copy.deepcopy(value))
    for key in REMOVED_KEYS:
        parent, _, leaf = key.rpartition(".")
        node: Any = saved
        for part in parent.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            del node[leaf]
            log.warning("%s: ignoring removed config key '%s' (%s)", path, key, REMOVED_KEYS[key])
    return saved


def config_digest(cfg: RunConfig | Mapping[str, Any], *, ignore: Iterable[str] = ()) -> str:
    """A short content hash of the config (``ignore``: top-level keys left out, e.g. ``ray_address``)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, RunConfig) else dict(cfg)
    for key in ignore:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dump_config(cfg: RunConfig, *, resolved: Mapping[str, Any] | None = None) -> str:
    """``RD/config.yaml``: the whole resolved config, plus the run's ``resolved`` facts."""
    data = cfg.model_dump(mode="json")
    if resolved is not None:
        data["resolved"] = dict(resolved)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
