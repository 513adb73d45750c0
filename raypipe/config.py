"""Run configuration: package defaults ← ``--config FILE`` ← ``key.path=value`` overrides (SPEC §1).

Validation happens here, once, at the boundary: an unknown key names the closest valid one, so a
typo never silently falls back to a default three phases later.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from raypipe.spec import deep_merge, flatten

# Sections whose keys are user data (free-form), not config schema: their children are not checked.
_OPEN_SECTIONS = ("spec_overrides", "automl.search_space", "phase2.sdg.recipes", "phase2.metric_contract",
                  "phase2.train_overrides")


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key or file."""


def package_defaults() -> dict[str, Any]:
    text = resources.files("raypipe").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _is_open(path: str) -> bool:
    return any(path == s or path.startswith(s + ".") for s in _OPEN_SECTIONS)


def _valid_paths(defaults: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in defaults.items():
        full = f"{prefix}.{key}" if prefix else key
        out.append(full)
        if isinstance(value, dict) and not _is_open(full):
            out.extend(_valid_paths(value, full))
    return out


def _check_known(layer: dict[str, Any], defaults: dict[str, Any], source: str, prefix: str = "") -> None:
    valid = _valid_paths(defaults)
    for key, value in layer.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if _is_open(full) and full not in valid:
            continue
        if full not in valid:
            hint = _suggest(full, valid)
            raise ConfigError(f"{source}: unknown config key '{full}'{hint}")
        node = defaults
        for part in full.split("."):
            node = node[part] if isinstance(node, dict) else None
        if isinstance(value, dict) and isinstance(node, dict) and not _is_open(full):
            _check_known(value, defaults, source, full)


def _suggest(full: str, valid: list[str]) -> str:
    parent, _, leaf = full.rpartition(".")
    siblings = [v for v in valid if v.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, [v.rpartition(".")[2] for v in siblings], n=1, cutoff=0.3)
    if close:
        return f"; did you mean '{(parent + '.') if parent else ''}{close[0]}'?"
    close = difflib.get_close_matches(full, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


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
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; a learning rate typed that way is a number.
        value = float(value) if _FLOAT.match(value.strip()) else value
    return key, value


def _nest_override(key: str, value: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    # Open sections take their remainder as one key (``spec_overrides.train.num_epochs=2``).
    for section in _OPEN_SECTIONS:
        if key.startswith(section + "."):
            rest = key[len(section) + 1:]
            out: dict[str, Any] = {rest: value}
            for part in reversed(section.split(".")):
                out = {part: out}
            return out
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(config_file: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    defaults = package_defaults()
    cfg = copy.deepcopy(defaults)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            layer = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: malformed YAML: {exc}") from None
        if not isinstance(layer, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        _check_known(layer, defaults, str(path))
        cfg = deep_merge(cfg, layer)
    for item in overrides:
        key, value = parse_override(item)
        layer = _nest_override(key, value, defaults)
        _check_known(layer, defaults, f"override '{item}'")
        cfg = deep_merge(cfg, layer)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    if cfg["backend"] not in ("builtin", "tao"):
        raise ConfigError(f"backend: '{cfg['backend']}' is not one of builtin, tao")
    if cfg["automl"]["algorithm"] not in ("bayesian", "random", "asha", "grid"):
        raise ConfigError(f"automl.algorithm: '{cfg['automl']['algorithm']}' is not one of bayesian, random, asha, grid")
    if cfg["automl"]["metric"] not in ("far_pct", "val_loss"):
        raise ConfigError(f"automl.metric: '{cfg['automl']['metric']}' is not one of far_pct, val_loss")
    for key in ("phase1.automl_max_recommendations", "phase3.automl_max_recommendations", "phase2.max_iterations"):
        section, name = key.split(".")
        value = cfg[section][name]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    for key in ("cpu", "gpu"):
        v = cfg["automl"]["resources_per_trial"].get(key, 0)
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"automl.resources_per_trial.{key}: expected a non-negative number, got {v!r}")


def config_digest(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def flat_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return flatten(cfg)
