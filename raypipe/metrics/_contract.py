"""The metric contract and ``pick_best`` (the best completed entry of a run).

The contract says what "better" means; nothing else in raypipe infers direction from a metric's
name. An evaluator's ``passed`` is never trusted: it is recomputed here.
"""

from __future__ import annotations

import math
import operator as _op
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_OPS = {"<": _op.lt, "<=": _op.le, ">": _op.gt, ">=": _op.ge}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ContractError(ValueError):
    """A contract or a metric result is malformed (name, operator, evaluator kind, value, unit, constraints)."""


@dataclass(frozen=True)
class Constraint:
    name: str
    operator: str
    target: float
    unit: str = "%"
    display_name: str = ""

    def holds(self, value: float) -> bool:
        return _OPS[self.operator](value, self.target)


@dataclass(frozen=True)
class MetricContract:
    name: str = "far_pct"
    display_name: str = "FAR at 100% recall"
    operator: str = "<"
    target: float = 10.0
    unit: str = "%"
    evaluator: dict[str, Any] = field(default_factory=lambda: {
        "type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100}})
    constraints: tuple[Constraint, ...] = (Constraint("recall_pct", ">=", 100.0, "%", "Recall"),)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ContractError(f"metric_contract.name '{self.name}' must match ^[a-z][a-z0-9_]*$")
        if self.operator not in _OPS:
            raise ContractError(f"metric_contract.operator '{self.operator}' must be one of < <= > >=")
        for c in self.constraints:
            if c.operator not in _OPS:
                raise ContractError(f"constraint '{c.name}': operator '{c.operator}' must be one of < <= > >=")
        kind = self.evaluator.get("type")
        if kind not in ("builtin", "command", "artifact"):
            raise ContractError(f"metric_contract.evaluator.type '{kind}' must be builtin, command or artifact")

    @property
    def minimize(self) -> bool:
        return self.operator in ("<", "<=")

    @property
    def recall_target_pct(self) -> float:
        return float(self.evaluator.get("parameters", {}).get("recall_target_pct", 100))

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b`` under this contract."""
        return a < b if self.minimize else a > b

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constraints"] = [asdict(c) for c in self.constraints]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricContract:
        allowed = {"name", "display_name", "operator", "target", "unit", "evaluator", "constraints"}
        unknown = set(d) - allowed
        if unknown:
            raise ContractError(f"metric_contract: unknown key(s) {sorted(unknown)}")
        kw = dict(d)
        if "constraints" in kw:
            kw["constraints"] = tuple(
                Constraint(**{k: v for k, v in c.items() if k in Constraint.__dataclass_fields__})
                for c in kw["constraints"])
        if "target" in kw:
            kw["target"] = float(kw["target"])
        return cls(**kw)

    @property
    def kpi_text(self) -> str:
        cons = ", ".join(f"{c.name} {c.operator} {c.target:g}{c.unit}" for c in self.constraints)
        return f"{self.name} {self.operator} {self.target:g}{self.unit}" + (f" with {cons}" if cons else "")


def validate_result(contract: MetricContract, result: Mapping[str, Any]) -> dict[str, Any]:
    """Check an evaluator's output against the contract and return it with ``passed`` recomputed.

    Raises :class:`ContractError` naming the first violated rule (wrong name/unit, non-finite value,
    missing constraint value).
    """
    if not isinstance(result, Mapping):
        raise ContractError("metric result must be a JSON object")
    if result.get("name") != contract.name:
        raise ContractError(f"metric result name '{result.get('name')}' != contract name '{contract.name}'")
    value = result.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ContractError(f"metric result value {value!r} is not a finite number")
    if result.get("unit") != contract.unit:
        raise ContractError(f"metric result unit {result.get('unit')!r} != contract unit {contract.unit!r}")
    given = result.get("constraints") or {}
    if not isinstance(given, Mapping):
        raise ContractError("metric result 'constraints' must be an object")
    checked: dict[str, Any] = {}
    ok = contract_op(contract.operator, float(value), contract.target)
    for c in contract.constraints:
        v = given.get(c.name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ContractError(f"metric result is missing a finite value for constraint '{c.name}'")
        holds = c.holds(float(v))
        checked[c.name] = float(v)
        ok = ok and holds
    out = dict(result)
    out["constraints"] = {**dict(given), **checked}
    out["passed"] = bool(ok)
    return out


def contract_op(operator: str, value: float, target: float) -> bool:
    return _OPS[operator](value, target)


def constraints_hold(contract: MetricContract, result: Mapping[str, Any]) -> bool:
    cons = result.get("constraints") or {}
    for c in contract.constraints:
        v = cons.get(c.name)
        if v is None or not c.holds(float(v)):
            return False
    return True


@dataclass(frozen=True)
class BestPick:
    label: str
    entry: Mapping[str, Any]
    satisfies_constraints: bool
    passed: bool


def pick_best(contract: MetricContract, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> BestPick | None:
    """Best completed entry. ``entries`` in canonical order (baseline, iter1…, final_automl).

    Constraint-satisfying entries first (all if none satisfy); sorted by value in the contract's
    direction, stable so ties go to the earlier entry. The primary target is not a filter.
    """
    cands = [(label, e) for label, e in entries
             if e.get("status") == "complete" and isinstance(e.get("metric_result"), Mapping)]
    if not cands:
        return None
    ok = [(l, e) for l, e in cands if constraints_hold(contract, e["metric_result"])]
    pool = ok or cands
    sign = 1.0 if contract.minimize else -1.0
    ranked = sorted(pool, key=lambda le: sign * float(le[1]["metric_result"]["value"]))
    label, entry = ranked[0]
    passed = bool(ok) and contract_op(contract.operator, float(entry["metric_result"]["value"]), contract.target)
    return BestPick(label=label, entry=entry, satisfies_constraints=bool(ok), passed=passed)
