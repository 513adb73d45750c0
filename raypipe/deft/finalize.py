"""Finalize the loop: ``best_model.json``, ``best_model_inference_spec.yaml``, then ``loop_stop``.

The handoff files are written BEFORE ``loop_stop`` is committed, so a completed state can never
exist without them (the loop_stop evidence check insists they are on disk). Both are written in
TAO's words (:mod:`raypipe.tao_interop`): TAO's inference consumer reads them as its own.
``loop_stop`` is committed once, by the loop, under its last iteration. After Phase 3 registers
``final_automl``, :func:`refresh_handoff` re-picks the best over every complete entry and rewrites
the two files (TAO's "re-run prepare_inference_spec.py"), without a second ``loop_stop``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raypipe import tao_interop as ti
from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.deft.state import commit, load_state, ordered_labels
from raypipe.metrics import BestPick, MetricContract, pick_best
from raypipe.rundir import RunDir
from raypipe.spec import dump_spec, load_training_spec
from raypipe.trajectory import verdict_of


@dataclass(frozen=True)
class FinalArtifacts:
    best_label: str
    best_model_json: Path
    inference_spec: Path
    passed: bool  # the best entry meets the contract (target and constraints)


def pick_final(state: Mapping[str, Any]) -> BestPick:
    """The best complete entry of the state (loop iterations and Phase 3's ``final_automl``)."""
    contract = MetricContract.from_dict(state["metric_contract"])
    pick = pick_best(contract, [(lb, state["iterations"][lb]) for lb in ordered_labels(state)])
    if pick is None:
        raise ValueError(f"{state.get('results_dir')}: no complete iteration with a metric result to finalize")
    return pick


def stop_reason(state: Mapping[str, Any]) -> str:
    """``metric_met`` when the last loop iteration passed, else ``max_iterations`` (TAO's two reasons)."""
    last = state["iterations"][ordered_labels(state, include_final=False)[-1]]
    return "metric_met" if (last.get("metric_result") or {}).get("passed") else "max_iterations"


def write_final_artifacts(rd: RunDir, state: Mapping[str, Any]) -> FinalArtifacts:
    """Pick the best complete entry and write ``best_model.json`` and its inference spec (no commit).

    A backbone that no longer resolves (:class:`raypipe.tao_interop.BackboneError`) is an error,
    never a silent null: TAO's consumer mounts that file beside the checkpoint.
    """
    if state.get("status") == "failed":
        raise ValueError(f"{rd.deft_state}: the loop hard-stopped; nothing to finalize (fix and --resume first)")
    pick = pick_final(state)
    spec = load_training_spec(pick.entry["training_spec"])
    config = state.get("config") or {}
    record = ti.best_model_record(label=pick.label, entry=pick.entry, spec=spec,
                                  metric_contract=state["metric_contract"], images_dir=config.get("images_dir", ""),
                                  backbone_weight_dir=config.get("backbone_weight_dir"))
    # kpi_met | kpi_not_met: the run's headline, a plain string beside TAO's fields (the final
    # scoring adds the sealed test split's numbers next to it, raypipe.scoring).
    record["verdict"] = verdict_of(pick.entry["metric_result"])
    bm_path = atomic_write_json(rd.best_model, record)
    header = (f"# raypipe: inference spec of {pick.label} ({pick.entry['best_ckpt_path']}, mounted at "
              f"{ti.CHECKPOINT_MOUNT}).\n"
              f"# Fill dataset.classify.infer_dataset {{csv_path, images_dir}}, inference.results_dir and "
              f"results_dir before running.\n")
    spec_path = atomic_write_text(rd.inference_spec, header + dump_spec(ti.inference_spec(
        spec, threshold=record["threshold"], backbone_container_path=record["backbone_container_path"])))
    return FinalArtifacts(pick.label, bm_path.resolve(), spec_path.resolve(), pick.passed)


def refresh_handoff(run_dir: str | Path) -> FinalArtifacts:
    """Rewrite the handoff after Phase 3 registered ``final_automl``: finalize without the commit.

    The best is re-picked over every complete entry, so the deliverable is the overall best; the
    state's ``final_artifacts`` paths stay as ``loop_stop`` recorded them.
    """
    rd = RunDir(run_dir)
    return write_final_artifacts(rd, load_state(rd.deft_state))


def finalize(run_dir: str | Path) -> FinalArtifacts:
    """Write the deliverable and commit ``loop_stop`` under the last loop iteration.

    The loop's driver runs the ``loop_stop`` stage itself; this is for callers outside the driver
    (a loop driven by hand). After Phase 3 use :func:`refresh_handoff`.
    """
    from raypipe.deft.stages import REGISTRY

    t0 = time.monotonic()
    rd = RunDir(run_dir)
    state = load_state(rd.deft_state)
    stage = REGISTRY.stop
    final = write_final_artifacts(rd, state)
    evidence = {"final_artifacts": {"best_model_json": str(final.best_model_json),
                                    "inference_spec": str(final.inference_spec)}}
    label = ordered_labels(state, include_final=False)[-1]
    commit(rd.deft_state, label, stage.name, evidence, duration_s=max(time.monotonic() - t0, 1e-3),
           summary=stage.summary(state, label, evidence))
    return final
