"""Search spaces in TAO dotted keys: parsing, validation, Tune domains, the centre point.

A space is ``{dotted_key: {valid_min, valid_max, [log], [type]} | {valid_options: [...]}}`` — the
format of TAO AutoML's parameter tables — so a TAO user's space works unchanged. Everything here
runs in the driver before Ray is touched: a bad space must fail in seconds with the key named,
not after a worker pool has started.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from raypipe.spec import ARCHITECTURE_KEYS, SpecError, flatten, get_dotted, has_dotted, nest_dotted

# Keys a space entry may hold. `type` forces int/float; TAO's tables also call it `value_type`.
_ENTRY_FIELDS = frozenset({"valid_min", "valid_max", "log", "valid_options", "type", "value_type"})
_MISSING = object()


class SearchSpaceError(ValueError):
    """The search space is invalid; the message names the offending key."""


@dataclass(frozen=True)
class SearchParam:
    """One swept hyper-parameter: a numeric range or a list of options."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    options: tuple[Any, ...] = ()

    def clip(self, value: Any) -> Any:
        """``value`` moved into the range (options: kept only if it is one of them, else None)."""
        if self.kind == "choice":
            return value if value in self.options else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None
        low, high = self.bounds()
        v = min(max(value, low), high)
        return int(round(v)) if self.kind == "int" else float(v)

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric parameter (ints for ``kind == "int"``)."""
        if self.low is None or self.high is None:
            raise ValueError(f"search space '{self.key}': a {self.kind} parameter has no bounds")
        return self.low, self.high


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_arch_key(key: str) -> str | None:
    """The architecture key ``key`` falls under (itself or a child like ``input_map.Light``), if any."""
    for arch in ARCHITECTURE_KEYS:
        if key == arch or key.startswith(arch + ".") or key.startswith(arch + "["):
            return arch
    return None


def parse_entry(key: str, entry: Any, base_value: Any = _MISSING) -> SearchParam:
    """One space entry → :class:`SearchParam`, or :class:`SearchSpaceError` naming ``key``."""
    if not isinstance(entry, Mapping):
        raise SearchSpaceError(f"search space '{key}': expected a mapping with valid_min/valid_max or "
                               f"valid_options, got {type(entry).__name__} {entry!r}")
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise SearchSpaceError(f"search space '{key}': unknown field(s) {unknown}; allowed: "
                               f"{sorted(_ENTRY_FIELDS)}")
    vtype = entry.get("type", entry.get("value_type"))
    if vtype is not None and vtype not in ("int", "float", "categorical", "ordered"):
        raise SearchSpaceError(f"search space '{key}': type must be 'int' or 'float', got {vtype!r}")
    if "valid_options" in entry:
        if "valid_min" in entry or "valid_max" in entry:
            raise SearchSpaceError(f"search space '{key}': give either valid_options or valid_min/valid_max, not both")
        options = entry["valid_options"]
        if not isinstance(options, (list, tuple)) or not options:
            raise SearchSpaceError(f"search space '{key}': valid_options must be a non-empty list, got {options!r}")
        return SearchParam(key, "choice", options=tuple(options))
    if "valid_min" not in entry or "valid_max" not in entry:
        missing = [f for f in ("valid_min", "valid_max") if f not in entry]
        raise SearchSpaceError(f"search space '{key}': missing {', '.join(missing)} (or give valid_options)")
    low, high = entry["valid_min"], entry["valid_max"]
    for name, val in (("valid_min", low), ("valid_max", high)):
        if not _is_number(val):
            raise SearchSpaceError(f"search space '{key}': {name} must be a finite number, got {val!r}")
    if low > high:
        raise SearchSpaceError(f"search space '{key}': valid_min {low} > valid_max {high}")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"search space '{key}': log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"search space '{key}': log scale needs valid_min > 0, got {low}")
    if vtype == "int":
        is_int = True
    elif vtype == "float":
        is_int = False
    else:  # inferred: integer bounds on an integer spec value (e.g. learnable_difference_modules)
        base_is_int = base_value is _MISSING or base_value is None or (
            isinstance(base_value, int) and not isinstance(base_value, bool))
        is_int = isinstance(low, int) and isinstance(high, int) and base_is_int
    if is_int:
        if float(low) != int(low) or float(high) != int(high):
            raise SearchSpaceError(f"search space '{key}': type int needs whole-number bounds, got {low}..{high}")
        return SearchParam(key, "int", int(low), int(high), log)
    return SearchParam(key, "float", float(low), float(high), log)


def _closest(key: str, base_spec: Mapping[str, Any]) -> str:
    candidates = list(flatten(dict(base_spec)).keys())
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def parse_search_space(space: Mapping[str, Any] | None, base_spec: Mapping[str, Any]) -> list[SearchParam]:
    """Every entry parsed against the base spec (key must exist there), in the space's order."""
    if not space:
        return []
    if not isinstance(space, Mapping):
        raise SearchSpaceError(f"search space: expected a mapping of dotted keys, got {type(space).__name__}")
    params = []
    for key, entry in space.items():
        key = str(key)
        try:
            present = has_dotted(dict(base_spec), key)
        except SpecError as exc:
            raise SearchSpaceError(f"search space '{key}': {exc}") from None
        if not present:
            raise SearchSpaceError(f"search space '{key}': unknown key — not present in the base spec"
                                   f"{_closest(key, base_spec)}")
        params.append(parse_entry(key, entry, get_dotted(dict(base_spec), key)))
    return params


def validate_search_space(space: Mapping[str, Any] | None, base_spec: Mapping[str, Any], *,
                          pinned_arch: Mapping[str, Any] | None,
                          pinned: Mapping[str, Any] | None = None) -> None:
    """Refuse a bad space before launch; raises :class:`SearchSpaceError` naming the key.

    ``pinned_arch`` (a warm start's checkpoint architecture) forbids sweeping any architecture key:
    the checkpoint's weights only load into the network they came from. ``pinned`` (the
    ``spec_overrides``) forbids sweeping a key the config fixes, e.g. ``train.num_epochs``.
    """
    params = parse_search_space(space, base_spec)
    for p in params:
        if pinned_arch is not None:
            arch = _is_arch_key(p.key)
            if arch is not None:
                value = pinned_arch.get(arch, get_dotted(dict(base_spec), arch, None))
                raise SearchSpaceError(
                    f"search space '{p.key}': architecture key is pinned to the warm-start checkpoint's value "
                    f"({arch} = {value!r}); remove it from the search space")
        if pinned and p.key in pinned:
            raise SearchSpaceError(f"search space '{p.key}': pinned by spec_overrides ({pinned[p.key]!r}); "
                                   "remove it from the search space or from spec_overrides")


def tune_param_space(params: list[SearchParam]) -> dict[str, Any]:
    """Tune domains (flat dotted keys) for OptunaSearch: a param_space, so points_to_evaluate works."""
    from ray import tune

    space: dict[str, Any] = {}
    for p in params:
        if p.kind == "choice":
            space[p.key] = tune.choice(list(p.options))
        elif p.kind == "int":
            low, high = p.bounds()
            # Tune's integer upper bound is exclusive; TAO's valid_max is inclusive.
            space[p.key] = (tune.lograndint if p.log else tune.randint)(int(low), int(high) + 1)
        else:
            low, high = p.bounds()
            space[p.key] = (tune.loguniform if p.log else tune.uniform)(low, high)
    return space


def grid_values(p: SearchParam) -> list[Any]:
    """Grid points of one parameter: its options, small int ranges in full, else the two ends."""
    if p.kind == "choice":
        return list(p.options)
    low, high = p.bounds()
    if p.kind == "int" and high - low <= 8:
        return list(range(int(low), int(high) + 1))
    return [low, high] if low != high else [low]


def grid_param_space(params: list[SearchParam]) -> tuple[dict[str, Any], int]:
    """Tune grid over every parameter, and the number of grid points (trials)."""
    from ray import tune

    space = {}
    total = 1
    for p in params:
        values = grid_values(p)
        space[p.key] = tune.grid_search(values)
        total *= len(values)
    return space, total


def centre_point(params: list[SearchParam], centre: Mapping[str, Any],
                 base_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The first trial of a centred sweep: the centre's value of every swept key, clipped into range.

    ``centre`` may be dotted HPs (``cls_weight[1]``) or a flattened nested spec (``cls_weight`` as a
    list, what ``flatten(best_rec.best.specs)`` gives); keys it lacks take the base spec's value.
    """
    try:
        nested = nest_dotted({k: v for k, v in centre.items() if "[" not in k})
    except SpecError:
        nested = {}
    point: dict[str, Any] = {}
    for p in params:
        value = centre.get(p.key, _MISSING)
        if value is _MISSING:
            value = get_dotted(nested, p.key, _MISSING)
        if value is _MISSING:
            value = get_dotted(dict(base_spec), p.key, None)
        clipped = p.clip(value)
        if clipped is None:  # not representable in this space: let the sampler draw it
            clipped = p.clip(get_dotted(dict(base_spec), p.key, None))
        if clipped is None:
            clipped = p.options[0] if p.kind == "choice" else p.clip(p.low)
        point[p.key] = clipped
    return point
