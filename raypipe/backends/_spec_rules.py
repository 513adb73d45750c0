"""The value rules of the Visual ChangeNet classify spec keys a backend reads, checked all at once.

A spec value is read deep inside a training task, long after the user approved the run: a
``lr: fast`` would surface as a ``float()`` error in a Ray worker, ``rgb_input_std: [0, 0, 0]`` as
NaN losses, ``num_epochs: -1`` as a run with no checkpoint. So the gate checks every key here
against its rule and reports every problem with its dotted key, before anything starts.

A key the spec leaves out is not checked (the backend's default applies); ``null`` counts as left
out. Numbers may be written as YAML strings (PyYAML reads ``1e-4`` as a string; TAO's loader reads
it as a float), so ``"1e-4"`` is a number here too.

The common rules hold for TAO's meaning of each key (both backends train with the same spec);
a backend adds the rules of what it alone cannot do (:func:`raypipe.backends.spec_problems`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raypipe.spec import get_dotted

Check = Callable[[Any], "str | None"]  # the problem with a (non-null) value, or None


@dataclass(frozen=True)
class SpecProblem:
    """One bad spec value: the dotted key and what is wrong with it."""

    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


def number(value: Any) -> float | None:
    """The value as a finite float, or None (booleans and non-finite values are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def integer(value: Any) -> int | None:
    x = number(value)
    return int(x) if x is not None and x.is_integer() else None


def int_at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        n = integer(value)
        if n is None:
            return f"expected an integer ≥ {low}, got {value!r}"
        return None if n >= low else f"must be ≥ {low}, got {n}"
    return check


def num_range(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A finite number in the interval (``low_open``/``high_open`` exclude the ends)."""
    lo = "(" if low_open else "["
    hi = ")" if high_open or high is None else "]"
    interval = f"{lo}{low:g}, {'∞' if high is None else f'{high:g}'}{hi}"

    def check(value: Any) -> str | None:
        x = number(value)
        if x is None:
            return f"expected a number in {interval}, got {value!r}"
        bad_low = x <= low if low_open else x < low
        bad_high = high is not None and (x >= high if high_open else x > high)
        return f"must be in {interval}, got {value!r}" if bad_low or bad_high else None
    return check


def one_of(*options: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value.strip().lower() in options:
            return None
        return f"expected one of {', '.join(options)}, got {value!r}"
    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {value!r}"


def cls_weight(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return f"expected [w_pass, w_defect] (two positive numbers), got {value!r}"
    bad = [v for v in value if number(v) is None or (number(v) or 0.0) <= 0]
    return f"weights must be positive numbers, got {value!r}" if bad else None


def rgb(*, positive: bool) -> Check:
    """One number or a list of 1 or 3 (R, G, B); ``positive`` for a divisor (the std)."""
    what = "positive numbers" if positive else "numbers"

    def check(value: Any) -> str | None:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) not in (1, 3):
            return f"expected 3 {what} (R, G, B), got {value!r}"
        xs = [number(v) for v in values]
        if any(x is None for x in xs):
            return f"expected 3 {what} (R, G, B), got {value!r}"
        if positive and any(x is not None and x <= 0 for x in xs):
            return f"every value must be > 0 (the input is divided by it), got {value!r}"
        return None
    return check


_AUG = "dataset.classify.augmentation_config"
_PROBABILITY = num_range(0.0, 1.0)

# TAO's meaning of each key; both backends read them.
COMMON_RULES: dict[str, Check] = {
    "train.num_epochs": int_at_least(1),
    "train.checkpoint_interval": int_at_least(1),
    "train.validation_interval": int_at_least(1),
    "train.val_interval": int_at_least(1),
    "train.optim.lr": num_range(0.0, low_open=True),
    "train.optim.momentum": num_range(0.0, 1.0, high_open=True),
    "train.optim.weight_decay": num_range(0.0),
    "train.classify.cls_weight": cls_weight,
    "dataset.classify.batch_size": int_at_least(1),
    "dataset.classify.workers": int_at_least(0),
    "dataset.classify.fpratio_sampling": num_range(0.0),
    "dataset.classify.image_width": int_at_least(1),
    "dataset.classify.image_height": int_at_least(1),
    "dataset.classify.concat_type": one_of("linear", "grid"),
    "model.classify.difference_module": one_of("learnable", "euclidean"),
    "model.classify.learnable_difference_modules": int_at_least(0),
    "model.classify.embedding_vectors": int_at_least(1),
    "model.classify.embed_dec": int_at_least(1),
    "model.backbone.freeze_backbone": boolean,
    f"{_AUG}.rgb_input_mean": rgb(positive=False),
    f"{_AUG}.rgb_input_std": rgb(positive=True),
    f"{_AUG}.random_flip.hflip_probability": _PROBABILITY,
    f"{_AUG}.random_flip.vflip_probability": _PROBABILITY,
    f"{_AUG}.random_rotate.rotate_probability": _PROBABILITY,
    f"{_AUG}.random_color.color_probability": _PROBABILITY,
    f"{_AUG}.random_color.brightness": num_range(0.0),
    f"{_AUG}.random_color.contrast": num_range(0.0),
}


# One element of a list-valued key, as a search space sweeps it (``train.classify.cls_weight[1]``).
ELEMENT_RULES: dict[str, Check] = {
    "train.classify.cls_weight[0]": num_range(0.0, low_open=True),
    "train.classify.cls_weight[1]": num_range(0.0, low_open=True),
}


def check_rules(spec: Mapping[str, Any], rules: Mapping[str, Check]) -> list[SpecProblem]:
    """Every rule whose key the spec sets (non-null), in the rules' order."""
    out: list[SpecProblem] = []
    for key, check in rules.items():
        value = get_dotted(dict(spec), key, None)
        if value is None:
            continue
        problem = check(value)
        if problem:
            out.append(SpecProblem(key, problem))
    return out


def check_value(key: str, value: Any, rules: Mapping[str, Check]) -> str | None:
    """The problem with ``value`` under ``key``'s rule (None: fine, or no rule for that key)."""
    check = rules.get(key) or ELEMENT_RULES.get(key)
    return check(value) if check is not None and value is not None else None


__all__ = ["COMMON_RULES", "ELEMENT_RULES", "Check", "SpecProblem", "check_rules", "check_value", "int_at_least", "number",
           "one_of", "num_range"]
