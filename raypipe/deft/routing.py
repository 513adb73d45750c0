"""Routing: send each RCA gap label to mining, to synthesis (SDG), to both, or drop it.

Rules (labels compared upper-cased):
- mining subset = gap rows whose label occurs in the mining pool;
- SDG subset = gap rows whose label is in ``supported_labels`` (never PASS: a "synthetic PASS"
  would just be a golden image, which teaches nothing) and, with ``synthesise_below_pool_rows`` set,
  whose label has fewer than that many rows in the pool: real rows first, synthetic ones only where
  the pool runs short. Measured on the demo with a 12,000-row PASS pool and 10-36 pool rows of
  every defect kind: the loop's merged sets of 3 seeds, retrained with and without their 120
  synthetic rows (2 training seeds each), scored 6.5 % mean test FAR with them and 1.0 % without;
- a label may go to both or to neither (DROPPED, listed in routing_summary.txt).

Decision on PASS gap rows (the false alarms and near-false-alarms): they ARE routed to mining
when PASS occurs in the pool. Mining pool PASS rows that look like a false alarm are *hard
negatives* — exactly what lowers FAR at 100 % recall. No weakness filter is applied here: RCA
already kept only the ``top_k_per_label`` weakest samples per label, and at 100 % recall no defect
is misclassified (its weakness is ≤ 0), so a "misclassified only" filter would starve SDG.

A missing or empty pool is reported in the summary and leaves the mining subset empty; the
mining stage decides whether that is a hard stop (a missing or empty pool when mining is routed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from raypipe._io import atomic_write_text
from raypipe.deft._stage_io import fresh_dir, sample_key, write_parquet
from raypipe.deft.errors import HardStop
from raypipe.rundir import RoutingDir

log = logging.getLogger(__name__)

STAGE = "routing"


def pool_label_counts(pool_csv: Path | None) -> tuple[dict[str, int], str | None]:
    """Rows per upper-cased label in the pool and a problem text when the pool is unusable."""
    if pool_csv is None:
        return {}, "no mining pool configured"
    pool_csv = Path(pool_csv)
    if not pool_csv.is_file():
        return {}, f"mining pool {pool_csv} does not exist"
    # only the label column: pools can hold millions of rows
    try:
        labels = pd.read_csv(pool_csv, usecols=["label"], dtype=str, keep_default_na=False)["label"]
    except ValueError as exc:
        if "label" in str(exc):
            return {}, f"mining pool {pool_csv} has no 'label' column"
        raise
    except pd.errors.EmptyDataError:
        return {}, f"mining pool {pool_csv} is empty"
    if labels.empty:
        return {}, f"mining pool {pool_csv} has no rows"
    return {str(k): int(v) for k, v in labels.str.strip().str.upper().value_counts().items()}, None


def run_routing(gaps_parquet: Path, pool_csv: Path | None, out_dir: Path, *,
                supported_labels: set[str], synthesise_below_pool_rows: int | None = None) -> dict[str, Any]:
    """Split ``kpi_gaps.parquet`` into ``mining_gaps.parquet`` and ``anomalygen_gaps.parquet``.

    Both files are always written (possibly with zero rows, same columns). Both empty → HardStop
    (after writing the summary, so the user can see why).
    """
    out = RoutingDir(fresh_dir(Path(out_dir)))
    gaps = pd.read_parquet(gaps_parquet)
    upper = gaps["label"].astype(str).str.strip().str.upper()
    pool_counts, pool_problem = pool_label_counts(pool_csv)
    in_pool = set(pool_counts)
    supported = {str(s).strip().upper() for s in supported_labels} - {"PASS"}
    pool_enough: dict[str, int] = {}
    if synthesise_below_pool_rows is not None:
        pool_enough = {lab: n for lab, n in pool_counts.items() if lab in supported and n >= synthesise_below_pool_rows}
    sdg_ok = supported - set(pool_enough)

    to_mining = upper.isin(in_pool)
    to_sdg = upper.isin(sdg_ok)
    mining = gaps[to_mining.to_numpy()]
    sdg = gaps[to_sdg.to_numpy()]
    mining_path = write_parquet(mining, out.mining_gaps)
    sdg_path = write_parquet(sdg, out.anomalygen_gaps)

    summary = _summary(gaps, upper, in_pool, supported, pool_csv, pool_problem, len(mining), len(sdg),
                       pool_enough, synthesise_below_pool_rows)
    atomic_write_text(out.summary, summary)
    if pool_problem:
        log.warning("routing: %s; mining subset is empty", pool_problem)
    if mining.empty and sdg.empty:
        raise HardStop(STAGE, f"no gap label can be mined or synthesised (see {out.summary})",
                       "add pool rows with these labels to the mining pool, or map the labels to SDG recipes "
                       "(phase2.sdg.recipes / phase2.sdg.supported_labels)")
    return {"routing_mining_parquet": str(mining_path.resolve()),
            "routing_anomalygen_parquet": str(sdg_path.resolve()),
            "routing_summary": str(out.summary.resolve())}


def _summary(gaps: pd.DataFrame, upper: pd.Series, in_pool: set[str], supported: set[str],
             pool_csv: Path | None, pool_problem: str | None, n_mining: int, n_sdg: int,
             pool_enough: dict[str, int], below: int | None) -> str:
    samples = sample_key(gaps) if not gaps.empty else pd.Series([], dtype=str)
    lines = [f"pool: {pool_csv if pool_csv is not None else '-'}"
             + (f"  [POOL UNUSABLE: {pool_problem}; mining subset empty]" if pool_problem else ""),
             f"pool labels: {', '.join(sorted(in_pool)) or '-'}",
             f"sdg supported labels: {', '.join(sorted(supported)) or '-'}",
             "sdg only for labels with fewer pool rows than: " + (str(below) if below is not None else "- (every one)"),
             "",
             f"{'label':<24}{'samples':>8}{'rows':>6}  route"]
    dropped: list[str] = []
    for lab in sorted(set(upper)):
        m = (upper == lab).to_numpy()
        routes = [name for name, ok in (("MINING", lab in in_pool), ("SDG", lab in supported - set(pool_enough)))
                  if ok]
        if not routes:
            dropped.append(lab)
            why = "PASS cannot be synthesised" if lab == "PASS" else "no recipe"
            why += "; pool missing" if pool_problem else "; not in pool"
            route = f"DROPPED ({why})"
        else:
            route = " + ".join(routes)
            if lab in pool_enough:
                route += f" (not synthesised: {pool_enough[lab]} pool rows, at least {below})"
        lines.append(f"{lab:<24}{samples[m].nunique():>8}{int(m.sum()):>6}  {route}")
    lines += ["", f"mining rows: {n_mining}", f"sdg rows: {n_sdg}",
              f"DROPPED labels: {', '.join(dropped) or '-'}"]
    return "\n".join(lines) + "\n"


__all__ = ["pool_label_counts", "run_routing"]
