"""The consolidated pre-flight summary (SPEC §8.1): the only gate of a run.

Every check here is read-only. The summary is printed before the prompt and, once approved,
saved as ``RD/preflight.md`` — the audit trail of what the user agreed to.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raypipe.spec import flatten, get_dotted

SECTION_TITLES = (
    "1. Workspace, host, platform",
    "2. Credentials",
    "3. Container images",
    "4. Dataset",
    "5. Phase 1 — AutoML baseline",
    "6. Phase 2 — DEFT loop",
    "7. Phase 3 — AutoML refinement",
    "8. Compute estimate",
    "9. Confirmation",
)


@dataclass
class Preflight:
    sections: list[list[str]] = field(default_factory=lambda: [[] for _ in SECTION_TITLES])
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Facts later phases reuse (resolved spec, backbone substitution) so nothing is decided twice.
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, section: int, line: str) -> None:
        self.sections[section - 1].append(line)

    def blocker(self, section: int, line: str) -> None:
        self.blockers.append(line)
        self.add(section, f"BLOCKER  {line}")

    def warn(self, section: int, line: str) -> None:
        self.warnings.append(line)
        self.add(section, f"WARN     {line}")

    def ok(self, section: int, line: str) -> None:
        self.add(section, f"OK       {line}")

    def render(self) -> str:
        out = ["# raypipe pre-flight summary", ""]
        for title, lines in zip(SECTION_TITLES, self.sections):
            out.append(f"## {title}")
            out.extend(f"    {line}" for line in lines or ["(nothing to report)"])
            out.append("")
        return "\n".join(out)


def _fmt_res(res: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in res.items())


def ray_cluster_info() -> dict[str, Any]:
    """Nodes, CPUs and GPUs (with model and memory where known) of the connected Ray cluster."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    gpus: list[str] = []
    for n in nodes:
        res = n.get("Resources", {})
        kinds = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        if res.get("GPU"):
            gpus.append(f"{res['GPU']:g}× {kinds[0] if kinds else 'GPU'} on {n.get('NodeManagerAddress')}")
    local_gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            local_gpu = f"{p.name}, {p.total_memory / 2**30:.0f} GiB"
    except Exception:  # noqa: BLE001 - information only
        pass
    ctx = ray.get_runtime_context()
    return {"address": getattr(ctx, "gcs_address", None) or "local", "nodes": len(nodes),
            "cpus": total.get("CPU", 0), "gpus": total.get("GPU", 0), "gpu_detail": gpus, "local_gpu": local_gpu}


def build_preflight(
    cfg: dict[str, Any],
    workspace_root: Path,
    *,
    ray_info: dict[str, Any] | None,
    resume_rd: Path | None = None,
    docker_client: Any = None,
    probe: Callable[[], float] | None = None,
) -> Preflight:
    """Run every read-only check and lay out the nine sections in order."""
    from raypipe.workspace import check_workspace

    pf = Preflight()
    backend = cfg["backend"]

    # 1. Workspace, host, platform
    pf.add(1, f"workspace root: {workspace_root}")
    pf.add(1, f"host: {platform.node()}  python {platform.python_version()}  {platform.platform(terse=True)}")
    if ray_info:
        pf.add(1, f"Ray cluster: {ray_info['address']}  nodes={ray_info['nodes']}  CPUs={ray_info['cpus']:g}  GPUs={ray_info['gpus']:g}")
        for g in ray_info.get("gpu_detail", []):
            pf.add(1, f"  GPU: {g}")
        if ray_info.get("local_gpu"):
            pf.add(1, f"  local GPU: {ray_info['local_gpu']}")
    pf.add(1, f"backend: {'built-in PyTorch ChangeNet' if backend == 'builtin' else 'TAO container (docker)'}")
    if backend == "tao":
        from raypipe.backends import tao as tao_backend

        version = tao_backend.docker_version(docker_client)
        if version:
            pf.ok(1, f"docker: {version}")
        else:
            pf.blocker(1, "docker: no Docker engine reachable (backend 'tao' needs one); use backend=builtin or start Docker")

    # 4. Dataset (run first: later sections need the spec)
    report = check_workspace(workspace_root)
    ws = report.workspace
    for problem in report.problems:
        pf.blocker(4, str(problem))
    spec: dict[str, Any] | None = ws.spec if ws is not None else None
    if ws is not None:
        _dataset_section(pf, ws)
        spec = _resolve_spec(pf, cfg, ws.spec)
        pf.facts["spec"] = spec
    net = get_dotted(spec, "model.backbone.type", "?") if spec else "?"
    pf.add(1, f"network_arch: visual_changenet classify, backbone {net}")

    # 2. Credentials / 3. Container images
    needed = list(cfg["tao"]["credentials"]) if backend == "tao" else []
    if needed:
        for name in needed:
            state = "SET" if os.environ.get(name) else "UNSET"
            (pf.ok if state == "SET" else pf.warn)(2, f"{name}: {state}")
    else:
        pf.add(2, "none required by the built-in backend")
    if backend == "tao":
        from raypipe.backends import tao as tao_backend

        for image in filter(None, [cfg["tao"]["image"], cfg["tao"].get("anomalygen_image")]):
            status = tao_backend.image_status(docker_client, image)
            line = f"{image}: {status}"
            if status == "PRESENT":
                pf.ok(3, line)
            elif cfg["execution_policy"]["allow_container_pull"]:
                pf.warn(3, line + " (will be pulled after approval)")
            else:
                pf.blocker(3, line + " and execution_policy.allow_container_pull is false")
    else:
        pf.add(3, "not used (built-in backend)")

    # 5–7. Phases
    automl = cfg["automl"]
    res = _fmt_res(automl["resources_per_trial"])
    swept = ", ".join(automl["search_space"])
    pinned = ", ".join(f"{k}={v}" for k, v in cfg["spec_overrides"].items())
    metric = "validation FAR@100% recall (min)" if automl["metric"] == "far_pct" else "validation loss (min, collapse guard, top-K FAR re-score)"
    if cfg["phase1"]["enabled"]:
        pf.add(5, f"algorithm: {automl['algorithm']}  trials: {cfg['phase1']['automl_max_recommendations']}  "
                  f"concurrency: {automl['max_concurrent_trials']}  per-trial resources: {res}")
        pf.add(5, f"metric: {metric}; the KPI set is never read by a sweep")
        pf.add(5, f"swept: {swept}")
        pf.add(5, f"pinned: {pinned}")
        pf.add(5, f"spec source: {workspace_root / 'specs' / 'baseline_spec.yaml'}")
        if cfg["phase1"].get("pretrained_model_path"):
            pf.add(5, f"warm start: {cfg['phase1']['pretrained_model_path']} (architecture pinned)")
    else:
        pf.add(5, "disabled: the baseline is trained by Phase 2 from the workspace spec")
    p2 = cfg["phase2"]
    from raypipe.metrics import MetricContract

    try:
        contract = MetricContract.from_dict(p2["metric_contract"])
        pf.add(6, f"KPI target: {contract.kpi_text} on {workspace_root / 'kpi' / 'testing_set.csv'}")
    except ValueError as exc:
        pf.blocker(6, f"phase2.metric_contract: {exc}")
    epochs = cfg["spec_overrides"].get("train.num_epochs", get_dotted(spec, "train.num_epochs", "?") if spec else "?")
    mf = p2["mining_filter"]
    pf.add(6, f"max_iterations: {p2['max_iterations']}  epochs per retrain: {epochs}  SDG images/iteration: {p2['sdg']['num_SDG']}")
    pf.add(6, f"mining: top-K {mf['top_k_per_target']} ({mf['metric']}), min_similarity {mf['min_similarity']}, embedder {mf['embedder']}")
    if backend == "tao" and mf["embedder"] == "model":
        pf.blocker(6, "phase2.mining_filter.embedder: model needs an embedding entry point the TAO container does "
                      "not have; set phase2.mining_filter.embedder=pixels")
    pf.add(6, f"resources: train/infer/embed {_fmt_res(p2['resources']['train'])}; CPU stages {_fmt_res(p2['resources']['cpu_stage'])}")
    pf.add(6, "baseline: " + ("pre-seeded from the Phase 1 winner's checkpoint (no retrain)" if cfg["phase1"]["enabled"]
                              else "trained from the workspace spec"))
    pf.add(6, f"resuming: {resume_rd}" if resume_rd else "resuming: no (new run)")
    if cfg["phase3"]["enabled"]:
        pf.add(7, f"trials: {cfg['phase3']['automl_max_recommendations']}  metric: {metric}")
        pf.add(7, "warm start: every trial from Phase 2's best checkpoint; architecture pinned; first trial = Phase 1 winner's HPs")
        pf.add(7, f"validation set: {workspace_root / 'train' / 'base' / 'validation_set.csv'} (same as Phase 1)")
    else:
        pf.add(7, "disabled: the loop's best is the deliverable")

    # 8. Compute estimate
    n1 = cfg["phase1"]["automl_max_recommendations"] if cfg["phase1"]["enabled"] else 0
    n3 = cfg["phase3"]["automl_max_recommendations"] if cfg["phase3"]["enabled"] else 0
    conc = max(1, int(automl["max_concurrent_trials"]))
    t_trial, source = float(cfg["preflight"]["t_trial_s"]), "config (preflight.t_trial_s)"
    t_iter = float(cfg["preflight"]["t_iter_s"])
    if cfg["preflight"]["probe"] and probe is not None and not pf.blockers:
        t_epoch = probe()
        epochs_n = int(epochs) if isinstance(epochs, int) else 1
        t_trial = t_epoch * epochs_n + 3.0
        t_iter = 2.5 * t_trial
        source = f"measured 1-epoch probe ({t_epoch:.1f} s/epoch)"
    m = p2["max_iterations"]
    total = n1 * t_trial / conc + m * t_iter + n3 * t_trial / conc
    pf.add(8, f"{n1} × {t_trial:.0f} s / {conc} concurrent + {m} × {t_iter:.0f} s + {n3} × {t_trial:.0f} s / {conc} "
              f"≈ {total / 60:.1f} min  (t from {source})")
    pf.add(9, "Approving runs all three phases without further pauses, except hard stops.")
    if pf.blockers:
        pf.add(9, f"{len(pf.blockers)} BLOCKER(s): the run will not start until they are fixed.")
    return pf


def _dataset_section(pf: Preflight, ws: Any) -> None:
    from raypipe.workspace import leakage_overlap, read_rows

    frames = {}
    for name, path in (("train", ws.train_csv), ("validation", ws.val_csv), ("KPI", ws.kpi_csv), ("pool", ws.pool_csv)):
        if path is not None and Path(path).is_file():
            frames[name] = read_rows(path)
    pf.add(4, "rows: " + "  ".join(f"{k}={len(v)}" for k, v in frames.items()) + ("" if "pool" in frames else "  pool=absent"))
    for name in ("KPI", "train"):
        if name in frames:
            counts = frames[name]["label"].map(lambda s: s.strip()).value_counts()
            pf.add(4, f"{name} labels: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    w, h = (get_dotted(ws.spec, f"dataset.classify.image_{d}", "?") for d in ("width", "height"))
    pf.add(4, f"lights: {', '.join(ws.layout.lights)}  image size: {w}×{h}  image root: {ws.images_dir}")
    if "train" in frames and "validation" in frames:
        overlap = leakage_overlap(frames["train"], ws.images_dir, frames["validation"], ws.images_dir, ws.root)
        if overlap:
            pf.blocker(4, f"train↔validation leakage: {len(overlap)} overlapping rows (first: train row {overlap[0][0]}, "
                          f"validation row {overlap[0][1]})")
        else:
            pf.ok(4, "train↔validation leakage: 0 overlapping rows")
    pf.ok(4, "missing files: 0 (every light of every row checked)")
    if "pool" not in frames:
        pf.warn(4, "no mining pool (augmentation/mining_pool/mining_pool.csv): Phase 2 mines nothing, SDG only")


def _resolve_spec(pf: Preflight, cfg: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Apply spec_overrides and the backend's backbone substitution (recorded in config.yaml)."""
    from raypipe.spec import set_dotted

    import copy

    out = copy.deepcopy(spec)
    for key, value in cfg["spec_overrides"].items():
        set_dotted(out, key, value)
    if cfg["backend"] == "builtin":
        from raypipe.backends.builtin import resolve_backbone

        out, note = resolve_backbone(out)
        if note:
            pf.warn(4, f"backbone substitution: {note}")
            pf.facts["backbone_substitution"] = note
    return out


def measure_probe(cfg: dict[str, Any], workspace: Any, spec: dict[str, Any]) -> Callable[[], float]:
    """A 1-epoch training probe on the real training set; returns seconds per epoch."""
    def _probe() -> float:
        from raypipe.backends import get_backend
        from raypipe.spec import set_dotted

        import copy

        trainer = get_backend(cfg["backend"])
        probe_spec = copy.deepcopy(spec)
        set_dotted(probe_spec, "train.num_epochs", 1)
        with tempfile.TemporaryDirectory(prefix="raypipe_probe_") as tmp:
            t0 = time.perf_counter()
            trainer.train(probe_spec, workspace.train_csv, workspace.val_csv, Path(tmp),
                          images_dir=workspace.images_dir, val_images_dir=workspace.images_dir, seed=cfg["seed"])
            return time.perf_counter() - t0

    return _probe
