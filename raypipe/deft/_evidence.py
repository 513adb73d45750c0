"""Evidence checks the state commit runs before it writes anything (SPEC §6.1 "One writer").

A stage's evidence is a claim about files on disk. The commit trusts none of it: every referenced
file must exist, counts must match the files, a training checkpoint must be new and live where the
spec says, and a metric result must satisfy the contract. Each check raises
:class:`~raypipe.deft.errors.EvidenceError` naming the iteration, the stage and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

from raypipe._io import read_json
from raypipe.deft.errors import EvidenceError
from raypipe.metrics import ContractError, MetricContract, validate_result

STAGES = ("train", "evaluate", "rca", "routing", "anomalygen", "data_mining", "data_merge", "loop_stop")

# Required and optional evidence keys per stage: SPEC §6.1 names plus the few extras of
# DEFT_INTERFACES.md. Unknown keys are refused so that a typo never silently drops evidence.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "train": ("best_ckpt_path", "training_spec"),
    "evaluate": ("best_ckpt_path", "metric_result", "threshold", "far_pct", "training_spec"),
    "rca": ("rca_gaps_parquet", "rca_threshold", "rca_target_defects"),
    "routing": ("routing_mining_parquet", "routing_anomalygen_parquet"),
    "anomalygen": ("anomalygen_sdg_csv", "anomalygen_allocation_json", "anomalygen_amp_allocated"),
    "data_mining": ("mining_mined_parquet", "mining_candidate_parquet", "mining_summary",
                    "mining_history_summary", "mining_target_embeddings", "mining_source_embeddings",
                    "mining_mined_count"),
    "data_merge": ("combined_training_csv", "provenance_csv", "merge_validation_report"),
    "loop_stop": ("final_artifacts",),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "train": ("best_ckpt_kind", "val_loss", "train_metric", "source", "latest_ckpt_path", "val_far",
              "best_epoch", "num_epochs", "init_ckpt", "train_rows", "parent_ckpt_path"),
    "evaluate": ("inference_csv", "source", "best_ckpt_kind", "candidates", "parent_ckpt_path"),
    "rca": ("rca_dir",),
    "routing": ("routing_summary",),
    "anomalygen": ("anomalygen_sdg_rows_csv",),
    "data_mining": ("mining_pool_csv",),
    "data_merge": (),
    "loop_stop": (),
}
_SKIP_KEY = {"anomalygen": "anomalygen_skipped", "data_mining": "data_mining_skipped"}
_SKIP_OPTIONAL = {"anomalygen": (), "data_mining": ("mining_pool_csv",)}

# Keys whose value is a path that must exist (checked for every stage that carries them).
_FILE_KEYS = (
    "best_ckpt_path", "latest_ckpt_path", "inference_csv", "rca_gaps_parquet", "routing_mining_parquet",
    "routing_anomalygen_parquet", "routing_summary", "anomalygen_sdg_csv", "anomalygen_allocation_json",
    "anomalygen_sdg_rows_csv", "mining_mined_parquet", "mining_candidate_parquet", "mining_summary",
    "mining_history_summary", "mining_target_embeddings", "mining_source_embeddings", "mining_pool_csv",
    "combined_training_csv", "provenance_csv", "merge_validation_report",
)


def _fail(label: str, stage: str, problem: str) -> None:
    raise EvidenceError(stage, label, problem)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _file(label: str, stage: str, key: str, value: Any) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        _fail(label, stage, f"'{key}' must be a path, got {value!r}")
    p = Path(value)
    if not p.is_absolute():
        _fail(label, stage, f"'{key}' must be an absolute path, got {value}")
    if not p.is_file():
        _fail(label, stage, f"'{key}' names {p}, which does not exist")
    return p


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def csv_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(path, dtype=str, keep_default_na=False))


def _parquet(label: str, stage: str, key: str, path: Path) -> int:
    try:
        return parquet_rows(path)
    except Exception as exc:  # noqa: BLE001 - any read failure means the evidence is bad
        _fail(label, stage, f"'{key}' {path} is not a readable parquet file: {exc}")
    raise AssertionError  # unreachable


def _training_spec(label: str, stage: str, value: Any) -> None:
    if isinstance(value, Mapping):
        if not value:
            _fail(label, stage, "'training_spec' is an empty mapping")
        return
    _file(label, stage, "training_spec", value)


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _check_keys(label: str, stage: str, evidence: Mapping[str, Any]) -> bool:
    """Check the key set; returns True for a ``*_skipped`` evidence."""
    skip = _SKIP_KEY.get(stage)
    if skip and evidence.get(skip) is True:
        extra = set(evidence) - {skip} - set(_SKIP_OPTIONAL[stage])
        if extra:
            _fail(label, stage, f"a skipped stage carries only '{skip}', got also {sorted(extra)}")
        return True
    if skip and skip in evidence:
        _fail(label, stage, f"'{skip}' must be true when present, got {evidence[skip]!r}")
    missing = [k for k in _REQUIRED[stage] if k not in evidence]
    if missing:
        _fail(label, stage, f"missing evidence field(s) {missing}")
    unknown = set(evidence) - set(_REQUIRED[stage]) - set(_OPTIONAL[stage])
    if unknown:
        _fail(label, stage, f"unknown evidence field(s) {sorted(unknown)} "
                            f"(allowed: {sorted(_REQUIRED[stage] + _OPTIONAL[stage])})")
    return False


def validate_evidence(state: Mapping[str, Any], label: str, stage: str, evidence: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``evidence`` of ``stage`` for iteration ``label``; return what to store.

    Raises :class:`EvidenceError` on the first problem. Returns a normalised copy (paths as
    strings, ``metric_result`` with ``passed`` recomputed).
    """
    if stage not in STAGES:
        _fail(label, stage, f"unknown stage '{stage}' (known: {', '.join(STAGES)})")
    if not isinstance(evidence, Mapping):
        _fail(label, stage, "evidence must be a mapping")
    skipped = _check_keys(label, stage, evidence)
    out: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in evidence.items()}
    for key in _FILE_KEYS:
        if key in evidence:
            _file(label, stage, key, evidence[key])
    if not skipped:
        _CHECKS[stage](state, label, out)
    return out


def _check_train(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    ckpt = Path(ev["best_ckpt_path"])
    if ckpt.stat().st_size <= 0:
        _fail(label, "train", f"checkpoint {ckpt} is empty")
    from raypipe.backends.base import parse_checkpoint_name

    try:
        _, step = parse_checkpoint_name(ckpt)
    except ValueError:
        step = None
    if step == 0:
        _fail(label, "train", f"checkpoint {ckpt} is from step 0: a zero-step training is a failure")
    for other, entry in state.get("iterations", {}).items():
        if other == label:
            continue
        for key in ("best_ckpt_path", "latest_ckpt_path"):
            prev = entry.get(key)
            if prev and Path(prev).resolve() == ckpt.resolve():
                _fail(label, "train", f"checkpoint {ckpt} is not new: it is {other}'s {key}")
    train_dir = Path(state["results_dir"]) / label / "train"
    if not _under(ckpt, train_dir):
        _fail(label, "train", f"checkpoint {ckpt} does not lie under {train_dir}")
    _training_spec(label, "train", ev["training_spec"])
    for key in ("val_loss", "val_far", "train_metric"):
        if key in ev and ev[key] is not None and not _finite(ev[key]):
            _fail(label, "train", f"'{key}' must be a finite number or null, got {ev[key]!r}")


def _check_evaluate(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    ckpt = Path(ev["best_ckpt_path"])
    if label != "final_automl":
        train_dir = Path(state["results_dir"]) / label / "train"
        if not _under(ckpt, train_dir):
            _fail(label, "evaluate", f"checkpoint {ckpt} does not lie under {train_dir}")
        if "inference_csv" not in ev:
            _fail(label, "evaluate", "missing evidence field(s) ['inference_csv']")
    _training_spec(label, "evaluate", ev["training_spec"])
    contract = MetricContract.from_dict(state["metric_contract"])
    mr = ev["metric_result"]
    if not isinstance(mr, Mapping):
        _fail(label, "evaluate", "'metric_result' must be a mapping")
    try:
        checked = validate_result(contract, mr)
    except ContractError as exc:
        _fail(label, "evaluate", f"metric result rejected by the contract: {exc}")
    evidence_path = _file(label, "evaluate", "metric_result.evidence_path", mr.get("evidence_path"))
    try:
        on_disk = validate_result(contract, read_json(evidence_path))
    except (ContractError, ValueError) as exc:
        _fail(label, "evaluate", f"{evidence_path} is not a valid metric result: {exc}")
    if not math.isclose(float(on_disk["value"]), float(checked["value"]), rel_tol=1e-9, abs_tol=1e-12):
        _fail(label, "evaluate", f"metric_result value {checked['value']} differs from {evidence_path} "
                                 f"({on_disk['value']})")
    if not _finite(ev["threshold"]):
        _fail(label, "evaluate", f"'threshold' must be a finite number, got {ev['threshold']!r}")
    if not _finite(ev["far_pct"]):
        _fail(label, "evaluate", f"'far_pct' must be a finite number, got {ev['far_pct']!r}")
    ev["metric_result"] = {k: checked[k] for k in ("name", "value", "unit", "passed", "constraints")}
    ev["metric_result"]["evidence_path"] = str(evidence_path)


def _check_rca(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    _parquet(label, "rca", "rca_gaps_parquet", Path(ev["rca_gaps_parquet"]))
    if not _finite(ev["rca_threshold"]):
        _fail(label, "rca", f"'rca_threshold' must be a finite number, got {ev['rca_threshold']!r}")
    tgt = ev["rca_target_defects"]
    if not isinstance(tgt, list) or not all(isinstance(t, str) for t in tgt):
        _fail(label, "rca", f"'rca_target_defects' must be a list of labels, got {tgt!r}")


def _check_routing(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    for key in ("routing_mining_parquet", "routing_anomalygen_parquet"):
        _parquet(label, "routing", key, Path(ev[key]))


def _check_anomalygen(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    alloc_path = Path(ev["anomalygen_allocation_json"])
    try:
        alloc = read_json(alloc_path)
    except ValueError as exc:
        _fail(label, "anomalygen", f"{alloc_path} is not JSON: {exc}")
    if not isinstance(alloc, Mapping) or not all(_finite(v) for v in alloc.values()):
        _fail(label, "anomalygen", f"{alloc_path} must map '<TEXTURE>+<LABEL>' to counts")
    total = sum(int(v) for v in alloc.values())
    if total <= 0:
        _fail(label, "anomalygen", f"{alloc_path}: allocation sums to {total}; expected > 0")
    amp = ev["anomalygen_amp_allocated"]
    if _finite(amp) and int(amp) != total:
        _fail(label, "anomalygen", f"anomalygen_amp_allocated={amp} but {alloc_path} sums to {total}")
    n = csv_rows(Path(ev["anomalygen_sdg_csv"]))
    if n <= 0:
        _fail(label, "anomalygen", f"{ev['anomalygen_sdg_csv']} has no rows")


def _check_data_mining(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    count = ev["mining_mined_count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        _fail(label, "data_mining", f"'mining_mined_count' must be a non-negative int, got {count!r}")
    rows = _parquet(label, "data_mining", "mining_mined_parquet", Path(ev["mining_mined_parquet"]))
    if rows != count:
        _fail(label, "data_mining", f"mining_mined_count={count} but {ev['mining_mined_parquet']} has {rows} rows")
    for key in ("mining_candidate_parquet", "mining_target_embeddings", "mining_source_embeddings"):
        _parquet(label, "data_mining", key, Path(ev[key]))


def _check_data_merge(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    combined = csv_rows(Path(ev["combined_training_csv"]))
    prov = csv_rows(Path(ev["provenance_csv"]))
    if combined <= 0:
        _fail(label, "data_merge", f"{ev['combined_training_csv']} has no rows")
    if prov != combined:
        _fail(label, "data_merge", f"provenance has {prov} rows but the combined training CSV has {combined}")
    report_path = Path(ev["merge_validation_report"])
    try:
        report = read_json(report_path)
    except ValueError as exc:
        _fail(label, "data_merge", f"{report_path} is not JSON: {exc}")
    for key in ("missing_file_count", "train_val_leakage_overlap_count", "kpi_overlap_count"):
        if report.get(key) != 0:
            _fail(label, "data_merge", f"{report_path}: {key}={report.get(key)!r}; expected 0")
    if "rows_checked" in report and report["rows_checked"] != combined:
        _fail(label, "data_merge", f"{report_path}: rows_checked={report['rows_checked']} but the combined "
                                   f"training CSV has {combined} rows")


def _check_loop_stop(state: Mapping[str, Any], label: str, ev: dict[str, Any]) -> None:
    fa = ev["final_artifacts"]
    if not isinstance(fa, Mapping):
        _fail(label, "loop_stop", "'final_artifacts' must be a mapping")
    for key in ("best_model_json", "inference_spec"):
        _file(label, "loop_stop", f"final_artifacts.{key}", fa.get(key))
    ev["final_artifacts"] = {k: str(v) for k, v in fa.items()}


_CHECKS: dict[str, Callable[[Mapping[str, Any], str, dict[str, Any]], None]] = {
    "train": _check_train, "evaluate": _check_evaluate, "rca": _check_rca, "routing": _check_routing,
    "anomalygen": _check_anomalygen, "data_mining": _check_data_mining, "data_merge": _check_data_merge,
    "loop_stop": _check_loop_stop,
}
