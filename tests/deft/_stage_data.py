"""Real inputs for the DEFT stage tests, built on the tiny demo workspace (no mocks).

``kpi_gaps`` runs the real RCA on an inference CSV whose scores are a deterministic function of
the label (defects high, PASS low, one PASS false alarm), so the tests exercise RCA → routing →
SDG/mining → merge on the files those stages really exchange.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from raypipe.deft.rca import run_rca
from raypipe.deft.routing import run_routing
from raypipe.deft.sdg import supported_sdg_labels
from raypipe.workspace import ImageLayout, read_rows

LAYOUT = ImageLayout(("LowAngleLight", "SolderLight"), ".png")


def run_dir(ws: Path) -> Path:
    rd = ws / "results" / "run_20260101_000000"
    rd.mkdir(parents=True, exist_ok=True)
    return rd


def kpi_capture_files(ws: Path) -> set[Path]:
    kpi = read_rows(ws / "kpi" / "testing_set.csv")
    return {p for rec in kpi.to_dict(orient="records") for p in LAYOUT.capture_paths(ws / "images", rec)}


def kpi_gaps(ws: Path, top_k: int = 3) -> Path:
    kpi = read_rows(ws / "kpi" / "testing_set.csv")
    rng = np.random.default_rng(7)
    scores = np.where(kpi["label"] == "PASS", rng.uniform(0.0, 0.4, len(kpi)), rng.uniform(0.5, 1.0, len(kpi)))
    scores[int(np.flatnonzero(kpi["label"] == "PASS")[0])] = 0.95  # one false alarm
    kpi["siamese_score"] = scores
    rd = run_dir(ws)
    inf = rd / "baseline" / "inference" / "best_val" / "inference.csv"
    inf.parent.mkdir(parents=True, exist_ok=True)
    kpi.to_csv(inf, index=False)
    ev = run_rca(inf, rd / "baseline" / "rca_results" / "T0", layout=LAYOUT, images_dir=ws / "images",
                 top_k_per_label=top_k, thumbnails_per_label=0)
    return Path(ev["rca_gaps_parquet"])


def routed(ws: Path, top_k: int = 3) -> tuple[Path, Path]:
    """(mining_gaps.parquet, anomalygen_gaps.parquet) for iter1 from the real RCA and routing."""
    ev = run_routing(kpi_gaps(ws, top_k), ws / "augmentation/mining_pool/mining_pool.csv",
                     run_dir(ws) / "iter1" / "routing_results" / "T0", supported_labels=supported_sdg_labels({}, None))
    return Path(ev["routing_mining_parquet"]), Path(ev["routing_anomalygen_parquet"])


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def mine(ws: Path, gaps: Path, iteration: int = 1, *, k: int = 3, min_sim: float = -1.0, label_mode: str = "label",
         sdg_rows: Path | None = None, pool: Path | None = None, cache_dir: Path | None = None) -> dict:
    """The real data_mining stage function with the model-free ``pixels`` embedder, in this process."""
    from raypipe.deft._selection import SelectionConfig
    from raypipe.deft.mining import Embedding, MiningInputs, run_mining
    from raypipe.embedding import EmbeddingCache, make_embedder
    from raypipe.rundir import RunDir
    from raypipe.tao_interop import RESOLVED_POOL_CSV

    rd = RunDir(run_dir(ws))
    embedder = make_embedder("pixels", LAYOUT)
    cache = EmbeddingCache(cache_dir, embedder) if cache_dir is not None else None
    return run_mining(MiningInputs(
        mining_gaps=gaps, pool_csv=pool or ws / "augmentation/mining_pool/mining_pool.csv",
        pool_images_dir=ws / "images", out=rd.iteration(f"iter{iteration}").mining, workspace_root=ws,
        selection=SelectionConfig(k, min_sim, label_mode), history_path=rd.mining_history,  # type: ignore[arg-type]
        resolved_pool_csv=rd.root / RESOLVED_POOL_CSV, iteration=iteration,
        validation_csv=ws / "train/base/validation_set.csv", validation_images_dir=ws / "images",
        sdg_rows_csv=sdg_rows), embedding=Embedding(embedder, cache))
