"""``data_merge``: the next training set = what we trained on + this iteration's ``mining_pool.csv``.

Validated before anything trains on it (files, leakage against validation and KPI); the rules live
in :mod:`raypipe.deft.merge`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

from raypipe.deft.stages._checks import csv_rows, fail, json_file
from raypipe.deft.stages.base import FilePath, ResourceClass, Stage
from raypipe.rundir import iteration_label, iteration_number

if TYPE_CHECKING:
    from raypipe.deft.context import StageContext


class DataMergeEvidence(TypedDict):
    combined_training_csv: FilePath  # dataset/train_combined_iter<N>.csv
    provenance_csv: FilePath  # one aligned row per combined row: source, origin, origin_iteration
    merge_validation_report: FilePath  # merge_validation.json


class DataMergeStage(Stage):
    name = "data_merge"
    resources = ResourceClass.CPU_STAGE
    evidence = DataMergeEvidence

    def run(self, ctx: StageContext, state: Mapping[str, Any], label: str) -> dict[str, Any]:
        from raypipe.deft.merge import run_merge

        n = iteration_number(label)
        entry = state["iterations"][label]
        previous = state["iterations"].get(iteration_label(n - 1), {}).get("combined_training_csv") if n > 1 else None
        it = ctx.rd.iteration(label)
        pool = entry.get("mining_pool_csv") or str(it.mining.mining_pool)
        inputs = ctx.inputs
        return ctx.run_task(f"{label}/data_merge", self.resources, run_merge, n, it.path,
                            base_train_csv=inputs.train_csv, base_images_dir=inputs.images_dir,
                            prev_combined_csv=Path(previous) if previous else None, mining_pool_csv=Path(pool),
                            workspace_root=inputs.root, validation_csv=inputs.val_csv,
                            validation_images_dir=inputs.images_dir, kpi_csv=inputs.kpi_csv,
                            kpi_images_dir=inputs.images_dir, layout=inputs.layout)

    def check(self, state: Mapping[str, Any], label: str, evidence: dict[str, Any]) -> None:
        combined = csv_rows(Path(evidence["combined_training_csv"]))
        provenance = csv_rows(Path(evidence["provenance_csv"]))
        if combined <= 0:
            fail(label, self.name, f"{evidence['combined_training_csv']} has no rows")
        if provenance != combined:
            fail(label, self.name, f"provenance has {provenance} rows but the combined training CSV has {combined}")
        report_path = Path(evidence["merge_validation_report"])
        report = json_file(label, self.name, report_path)
        for key in ("missing_file_count", "train_val_leakage_overlap_count", "kpi_overlap_count"):
            if report.get(key) != 0:
                fail(label, self.name, f"{report_path}: {key}={report.get(key)!r}; expected 0")
        if "rows_checked" in report and report["rows_checked"] != combined:
            fail(label, self.name, f"{report_path}: rows_checked={report['rows_checked']} but the combined "
                                   f"training CSV has {combined} rows")

    def summary(self, state: Mapping[str, Any], label: str, evidence: Mapping[str, Any]) -> str:
        return f"combined training set: {csv_rows(Path(evidence['combined_training_csv']))} rows"
