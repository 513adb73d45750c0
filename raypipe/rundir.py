"""The run-dir catalog: every path under ``results/run_<YYYYMMDD_HHMMSS>/`` has one owner, here.

Writers and readers ask a :class:`RunDir` (or the small directory classes it hands out) for a
path instead of joining file names by hand, so a name is spelled once and TAO's layout stays
exact. Iteration labels (``baseline``, ``iter<N>``, ``final_automl``) are parsed and ordered here
too.

    rd = RunDir("/ws/results/run_20260101_120000")
    rd.deft_state                       # …/deft_state.json
    rd.iteration("iter2").train          # …/iter2/train/
    rd.iteration("iter2").dataset.combined_csv   # …/iter2/dataset/train_combined_iter2.csv
    rd.sweep("phase1").best_rec          # …/phase1_automl/best_rec.json
    ordered_labels(["iter10", "baseline", "iter9"])   # ["baseline", "iter9", "iter10"]
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from raypipe._io import _fsync_dir

# -- iteration labels ----------------------------------------------------------------------------

BASELINE = "baseline"
FINAL_AUTOML = "final_automl"  # Phase 3's KPI-evaluated winner, filed beside the loop's iterations
LABEL_RE = re.compile(r"^(baseline|final_automl|iter([1-9][0-9]*))$")
_FINAL_RANK = 10**9


def iteration_number(label: str) -> int:
    """``baseline`` → 0, ``iter<N>`` → N; ``final_automl`` sorts after every loop iteration."""
    m = LABEL_RE.match(label)
    if not m:
        raise ValueError(f"bad iteration label '{label}' (expected baseline, iter<N> or final_automl)")
    if label == BASELINE:
        return 0
    if label == FINAL_AUTOML:
        return _FINAL_RANK
    return int(m.group(2))


def iteration_label(n: int) -> str:
    """0 → ``baseline``, N → ``iter<N>``."""
    if n < 0:
        raise ValueError(f"iteration number must be >= 0, got {n}")
    return BASELINE if n == 0 else f"iter{n}"


def is_loop_label(label: str) -> bool:
    """``baseline`` or ``iter<N>`` (not Phase 3's ``final_automl``)."""
    return bool(LABEL_RE.match(label)) and label != FINAL_AUTOML


def ordered_labels(labels: Iterable[str], *, include_final: bool = True) -> list[str]:
    """Labels in canonical order: baseline, iter1, …, iter10, …, final_automl (the pick-best order)."""
    return sorted((lb for lb in labels if include_final or lb != FINAL_AUTOML), key=iteration_number)


def resume_command(run_dir: str | os.PathLike[str]) -> str:
    """What a user types to continue a stopped run (printed at the end of every hard stop)."""
    return f"python -m raypipe.run --resume {Path(run_dir).resolve()}"


# -- directories of one iteration ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainDir:
    """``RD/<label>/train/``: checkpoints, the effective spec, the backend's log and status."""

    path: Path

    @property
    def spec(self) -> Path:
        return self.path / "experiment.yaml"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def status(self) -> Path:
        return self.path / "status.json"


@dataclass(frozen=True)
class InferenceDir:
    """``RD/<label>/inference/<kind>/`` (kind ``best_val`` | ``latest``): one scored checkpoint."""

    path: Path

    @property
    def inference_csv(self) -> Path:
        return self.path / "inference.csv"

    @property
    def metric_result(self) -> Path:
        return self.path / "metric_result.json"

    @property
    def score_histogram(self) -> Path:
        return self.path / "score_histogram.png"


@dataclass(frozen=True)
class SealedTestDir(InferenceDir):
    """``RD/test/<step>/``: one trajectory step scored on the sealed test split (``result`` last)."""

    @property
    def result(self) -> Path:  # written last: its presence means the step is scored
        return self.path / "test_result.json"


@dataclass(frozen=True)
class RcaDir:
    """``RD/<label>/rca_results/<TS>/``: the weakest KPI samples (feeds the next iteration)."""

    path: Path

    @property
    def gaps_parquet(self) -> Path:
        return self.path / "kpi_gaps.parquet"

    @property
    def threshold_txt(self) -> Path:
        return self.path / "threshold.txt"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def breakdown_txt(self) -> Path:
        return self.path / "weak_samples_breakdown.txt"

    @property
    def images(self) -> Path:
        return self.path / "rca_images"

    @property
    def unreachable_txt(self) -> Path:
        return self.path / "unreachable_kpi.txt"


@dataclass(frozen=True)
class RoutingDir:
    """``RD/iter<N>/routing_results/<TS>/``: the RCA gaps split into mining and SDG subsets."""

    path: Path

    @property
    def mining_gaps(self) -> Path:
        return self.path / "mining_gaps.parquet"

    @property
    def anomalygen_gaps(self) -> Path:
        return self.path / "anomalygen_gaps.parquet"

    @property
    def summary(self) -> Path:
        return self.path / "routing_summary.txt"


@dataclass(frozen=True)
class SdgDir:
    """``RD/iter<N>/anomalygen/sdg/``: AnomalyGen's output layout, written by the built-in SDG."""

    path: Path

    @property
    def reconstructed(self) -> Path:
        return self.path / "reconstructed_image"

    @property
    def original(self) -> Path:
        return self.path / "original_image"

    @property
    def result_csv(self) -> Path:
        return self.path / "SDG_result.csv"

    @property
    def allocation_json(self) -> Path:
        return self.path / "allocation.json"


@dataclass(frozen=True)
class MiningDir:
    """``RD/iter<N>/mining_filter/``: the SDG rows, the k-NN mining outputs and ``mining_pool.csv``."""

    path: Path

    @property
    def sdg_rows_raw(self) -> Path:  # written by the anomalygen stage, read by mining and merge
        return self.path / "sdg_rows_raw.csv"

    @property
    def knn_summary(self) -> Path:
        return self.path / "knn_summary.csv"

    @property
    def source_embeddings(self) -> Path:
        return self.path / "source_embeddings.parquet"

    @property
    def target_embeddings(self) -> Path:
        return self.path / "target_embeddings.parquet"

    @property
    def candidates(self) -> Path:
        return self.path / "mined_candidates.parquet"

    @property
    def mined(self) -> Path:
        return self.path / "mined.parquet"

    @property
    def history_summary(self) -> Path:
        return self.path / "mining_history_summary.json"

    @property
    def mining_pool(self) -> Path:
        return self.path / "mining_pool.csv"

    @property
    def stats(self) -> Path:  # per label: targets, mined, same-label precision, pool recall
        return self.path / "mining_stats.csv"

    def mining_outputs(self) -> list[Path]:
        """Every file the data_mining stage owns here (``sdg_rows_raw.csv`` belongs to the SDG stage)."""
        return [self.knn_summary, self.source_embeddings, self.target_embeddings, self.candidates, self.mined,
                self.history_summary, self.mining_pool, self.stats]


@dataclass(frozen=True)
class DatasetDir:
    """``RD/iter<N>/dataset/``: the merged training set of iteration N and the staged synthetic images."""

    path: Path
    n: int

    @property
    def combined_csv(self) -> Path:
        return self.path / f"train_combined_iter{self.n}.csv"

    @property
    def provenance_csv(self) -> Path:
        return provenance_of(self.combined_csv)

    @property
    def merge_validation(self) -> Path:
        return self.path / "merge_validation.json"

    @property
    def synthetic_ng(self) -> Path:
        return self.path / "images" / f"synthetic_iter{self.n}_ng"

    @property
    def synthetic_ok(self) -> Path:
        return self.path / "images" / f"synthetic_iter{self.n}_ok"

    def merge_outputs(self) -> list[Path]:
        """Every file the data_merge stage owns here (the staged images belong to the SDG stage)."""
        return [self.combined_csv, self.provenance_csv, self.merge_validation]


def provenance_of(combined_csv: Path) -> Path:
    """``train_combined_iter<N>_provenance.csv`` beside ``train_combined_iter<N>.csv``."""
    return combined_csv.with_name(combined_csv.stem + "_provenance.csv")


@dataclass(frozen=True)
class IterationDir:
    """``RD/<label>/``: everything one DEFT iteration (or Phase 3's ``final_automl``) writes."""

    path: Path
    label: str

    @property
    def n(self) -> int:
        return iteration_number(self.label)

    @property
    def train(self) -> TrainDir:
        return TrainDir(self.path / "train")

    @property
    def inference_root(self) -> Path:
        return self.path / "inference"

    def inference(self, kind: str) -> InferenceDir:
        return InferenceDir(self.inference_root / kind)

    @property
    def rca_root(self) -> Path:
        return self.path / "rca_results"

    def rca(self, ts: str) -> RcaDir:
        return RcaDir(self.rca_root / ts)

    @property
    def routing_root(self) -> Path:
        return self.path / "routing_results"

    def routing(self, ts: str) -> RoutingDir:
        return RoutingDir(self.routing_root / ts)

    @property
    def sdg(self) -> SdgDir:
        return SdgDir(self.path / "anomalygen" / "sdg")

    @property
    def mining(self) -> MiningDir:
        return MiningDir(self.path / "mining_filter")

    @property
    def dataset(self) -> DatasetDir:
        return DatasetDir(self.path / "dataset", self.n)


# -- a sweep's directory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepDir:
    """A sweep's outputs (``RD/phase1_automl/``, ``RD/final_automl/``, or any dir given to the CLI).

    ``name`` is the Tune experiment's name (``phase1`` | ``final_automl``); the experiment itself
    lives at ``<storage>/<name>`` (this dir unless ``storage_path`` points elsewhere).
    """

    path: Path
    name: str

    @property
    def best_rec(self) -> Path:
        return self.path / "best_rec.json"

    @property
    def trials_csv(self) -> Path:
        return self.path / "trials.csv"

    @property
    def sweep_json(self) -> Path:  # the sweep's identity: a restore with other settings is refused
        return self.path / f"{self.name}.sweep.json"

    @property
    def summary_json(self) -> Path:
        return self.path / f"{self.name}.sweep_summary.json"

    @property
    def sampler_log(self) -> Path:  # what the Optuna sampler was asked and told, trial by trial (JSONL)
        return self.path / f"{self.name}.sampler.jsonl"

    @property
    def baseline_eval(self) -> Path:
        return self.path / "baseline_eval.json"

    @property
    def baseline_eval_dir(self) -> Path:
        return self.path / "baseline_eval"

    @property
    def checkpoints(self) -> Path:  # local copies of remote trial checkpoints
        return self.path / "checkpoints"

    @property
    def best_spec(self) -> Path:  # Phase 3's winner spec, scored on the KPI set
        return self.path / "best_spec.yaml"


@dataclass(frozen=True)
class TrialCheckpoint:
    """A checkpoint directory a sweep trial hands to Tune (kept in the experiment's storage)."""

    path: Path

    @property
    def meta(self) -> Path:  # the epoch's metrics: what the driver ranks by after the sweep
        return self.path / "trial_meta.json"

    @property
    def spec(self) -> Path:  # the trial's full training spec
        return self.path / "experiment.yaml"


# -- the run dir ------------------------------------------------------------------------------------

PHASE_DIRS = {"phase1": "phase1_automl", "phase3": "final_automl"}
SWEEP_NAMES = {"phase1": "phase1", "phase3": "final_automl"}


_STAGING = ".partial"


def _remove_dead_staging(results: Path) -> None:
    """Remove ``.run_<TS>.<pid>.partial`` dirs whose creator no longer runs (killed while populating)."""
    for staging in results.glob(f".run_*{_STAGING}"):
        try:
            pid = int(staging.name[: -len(_STAGING)].rsplit(".", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue  # not ours to judge (a foreign name, or another user's live process)


@dataclass(frozen=True)
class RunDir:
    """``results/run_<YYYYMMDD_HHMMSS>/`` of one pipeline run (or of ``python -m raypipe.deft run RD``)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    @staticmethod
    def create(workspace: str | os.PathLike[str], *, now: float | None = None,
               populate: Callable[[RunDir, RunDir], None] | None = None) -> RunDir:
        """A new ``<workspace>/results/run_<YYYYMMDD_HHMMSS>``, created exclusively: two runs never share one.

        With ``populate(staging, final)``, the starting files are written into a hidden staging dir
        (``results/.run_<TS>.<pid>.partial``) that is then renamed into place, so a kill at any moment
        leaves either a run dir that ``--resume`` can read or none at all. ``final`` is the name the
        files may refer to. Staging dirs of creators that are gone are removed first.
        """
        import time

        results = Path(workspace) / "results"
        results.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(results)
        t = time.time() if now is None else now
        for _ in range(3600):
            name = f"run_{datetime.fromtimestamp(t).strftime('%Y%m%d_%H%M%S')}"
            rd = results / name
            t += 1
            if populate is None:
                try:
                    rd.mkdir()
                except FileExistsError:
                    continue
                return RunDir(rd.resolve())
            if rd.exists():
                continue
            staging = results / f".{name}.{os.getpid()}{_STAGING}"
            staging.mkdir()
            populate(RunDir(staging.resolve()), RunDir(rd.resolve()))
            try:
                # rename(2) onto an existing non-empty dir fails: a run dir that appeared meanwhile is kept.
                os.rename(staging, rd)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                continue
            _fsync_dir(results)
            return RunDir(rd.resolve())
        raise RuntimeError(f"could not create a unique run dir under {results}")

    def resolve(self) -> RunDir:
        return RunDir(self.root.resolve())

    # -- written before the phases (the gate) --------------------------------------------------
    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_spec(self) -> Path:
        return self.root / "run_spec.yaml"

    @property
    def preflight_md(self) -> Path:
        return self.root / "preflight.md"

    @property
    def pipeline_state(self) -> Path:
        return self.root / "pipeline_state.json"

    @property
    def labels(self) -> Path:
        """``RD/labels/``: the workspace CSVs with ``label_map`` applied (laid out as in the workspace);
        every phase reads these when the config maps labels, and the workspace stays untouched."""
        return self.root / "labels"

    @property
    def backbone_dir(self) -> Path:
        """``RD/backbone/``: the built-in backend's staged backbone file (TAO's specs always name one)."""
        from raypipe.tao_interop import BUILTIN_BACKBONE_DIR

        return self.root / BUILTIN_BACKBONE_DIR

    @property
    def time_plan(self) -> Path:
        """The approved time model and plan: what the ETA of ``raypipe.status`` starts from."""
        return self.root / "time_plan.json"

    # -- Phase 1 / 3 ---------------------------------------------------------------------------
    def sweep(self, phase: str) -> SweepDir:
        """``phase1`` → ``RD/phase1_automl/``, ``phase3`` → ``RD/final_automl/``."""
        return SweepDir(self.root / PHASE_DIRS[phase], SWEEP_NAMES[phase])

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def baseline_spec_automl(self) -> Path:
        """The workspace spec with Phase 1's winner merged in (the workspace spec is never written)."""
        return self.specs / "baseline_spec_automl.yaml"

    # -- Phase 2 -------------------------------------------------------------------------------
    @property
    def deft_state(self) -> Path:
        return self.root / "deft_state.json"

    @property
    def deft_state_lock(self) -> Path:
        return self.root / "deft_state.json.lock"

    @property
    def loop_log(self) -> Path:
        return self.root / "loop_log.jsonl"

    @property
    def report(self) -> Path:
        return self.root / "DEFT_Loop_Report.html"

    @property
    def mining_history(self) -> Path:
        return self.root / "mining_history.json"

    def iteration(self, label: str) -> IterationDir:
        """``RD/<label>/`` for ``baseline``, ``iter<N>`` or ``final_automl``."""
        iteration_number(label)  # refuses a malformed label
        return IterationDir(self.root / label, label)

    # -- the deliverable and the run's records -------------------------------------------------
    @property
    def best_model(self) -> Path:
        return self.root / "best_model.json"

    @property
    def inference_spec(self) -> Path:
        return self.root / "best_model_inference_spec.yaml"

    @property
    def trajectory(self) -> Path:
        return self.root / "trajectory.json"

    @property
    def lineage(self) -> Path:
        return self.root / "lineage.json"

    @property
    def placement(self) -> Path:
        return self.root / "placement.jsonl"

    @property
    def test(self) -> Path:
        """``RD/test/``: scoring on the workspace's sealed test split (never read by any phase)."""
        return self.root / "test"

    def sealed_test(self, step: str) -> SealedTestDir:
        """``RD/test/<step>/`` for a trajectory step (``phase1_best``, ``baseline``, ``iter<N>``, ``phase3_best``)."""
        if not re.fullmatch(r"[a-z0-9_]+", step):
            raise ValueError(f"bad trajectory step '{step}'")
        return SealedTestDir(self.test / step)

    def deliverables(self) -> list[Path]:
        """What the run hands over (logged as the MLflow ``deliverable`` run's artifacts when present)."""
        return [self.trajectory, self.best_model, self.inference_spec, self.lineage, self.report, self.deft_state,
                self.preflight_md, self.config_yaml]


__all__ = [
    "BASELINE", "FINAL_AUTOML", "LABEL_RE", "DatasetDir", "InferenceDir", "IterationDir", "MiningDir", "RcaDir",
    "RoutingDir", "RunDir", "SdgDir", "SealedTestDir", "SweepDir", "TrainDir", "TrialCheckpoint", "is_loop_label",
    "iteration_label", "iteration_number", "ordered_labels", "provenance_of", "resume_command",
]
