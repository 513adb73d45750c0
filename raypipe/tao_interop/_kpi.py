"""``kpi_target``: a text TAO's compact KPI grammar reads back as the metric contract.

TAO reads ``kpi_target`` only when a state has no ``metric_contract``, with a compact grammar:
"<label> <op> <number><unit>[ at <context>]", where the label's slug must be the metric name
("FAR" with unit "%" is ``far_pct``) and, for FAR, "Recall=<r>%" in the context sets the recall.
"far_pct < 10% with recall_pct >= 100%" reads as a metric called "far_pct_10_with_recall_pct".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def _slug(text: str, unit: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return "far_pct" if slug == "far" and unit == "%" else slug


def _plain_number(x: float) -> str:
    """No exponent (TAO's grammar reads "1e-05" as 1 with unit "e-05")."""
    text = format(Decimal(repr(float(x))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_unit(value: float, unit: str) -> str:
    if not unit or any(ch.isspace() for ch in unit):
        return _plain_number(value)  # a unit with a space cannot be carried by the grammar
    return f"{_plain_number(value)}{unit}" if unit == "%" else f"{_plain_number(value)} {unit}"


def kpi_target_text(contract: Mapping[str, Any]) -> str:
    """Human-readable KPI text that TAO's parser turns back into the contract's name, operator,
    target and unit (and, for FAR, its recall target)."""
    name, unit = str(contract["name"]), str(contract.get("unit", ""))
    display = str(contract.get("display_name") or name)
    if name == "far_pct":
        label = "FAR"
    elif _slug(display, unit) == name and not re.search(r"[<>=]|\sat\s", display):
        label = display
    else:
        label = name
    text = f"{label} {contract['operator']} {_with_unit(float(contract['target']), unit)}"
    if name == "far_pct":
        recall = ((contract.get("evaluator") or {}).get("parameters") or {}).get("recall_target_pct", 100)
        return f"{text} at Recall={_plain_number(float(recall))}%"
    context = [f"{c.get('display_name') or c['name']} {c['operator']} "
               f"{_with_unit(float(c['target']), str(c.get('unit', '')))}" for c in contract.get("constraints") or []]
    return f"{text} at {', '.join(context)}" if context else text
