"""Checks every artifact of a finished run dir and their cross-references."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pandas as pd
import yaml


def find_run_dir(workspace: Path) -> Path:
    runs = sorted((workspace / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


def check_complete_run(rd: Path, *, iterations: int = 1) -> dict:
    for name in ("config.yaml", "pipeline_state.json", "preflight.md", "deft_state.json", "loop_log.jsonl",
                 "DEFT_Loop_Report.html", "best_model.json", "best_model_inference_spec.yaml", "trajectory.json",
                 "mining_history.json", "lineage.json"):
        assert (rd / name).is_file(), f"missing {name}"

    ps = json.loads((rd / "pipeline_state.json").read_text())
    assert ps["status"] == "complete", ps
    assert [ps["phases"][p]["status"] for p in ("phase1", "phase2", "phase3")] == ["complete"] * 3

    # Sweeps: trials.csv + best_rec.json against the repo's schema, no duplicated trials.
    from raypipe.automl import best_rec_schema

    for sweep in ("phase1_automl", "final_automl"):
        rec = json.loads((rd / sweep / "best_rec.json").read_text())
        jsonschema.validate(rec, best_rec_schema())
        trials = pd.read_csv(rd / sweep / "trials.csv")
        assert trials.iloc[:, 0].is_unique, f"duplicated trials in {sweep}/trials.csv"
        assert Path(rec["best"]["checkpoint_uri"]).is_file()

    state = json.loads((rd / "deft_state.json").read_text())
    assert state["version"] == 4 and state["status"] == "complete"
    events = state["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(isinstance(e["duration_sec"], int) and e["duration_sec"] > 0 for e in events)
    ok = Counter((e["iter"], e["stage"]) for e in events if e["status"] == "ok")
    assert max(ok.values()) == 1, f"duplicated events: {[k for k, v in ok.items() if v > 1]}"
    log_lines = [json.loads(l) for l in (rd / "loop_log.jsonl").read_text().splitlines() if l.strip()]
    assert [l["seq"] for l in log_lines] == [e["seq"] for e in events]
    assert events[-1]["stage"] == "loop_stop"

    its = state["iterations"]
    assert its["baseline"]["source"] == "automl_phase1"
    assert Path(its["baseline"]["best_ckpt_path"]).parent == rd / "baseline" / "train"
    for n in range(1, iterations + 1):
        it = its[f"iter{n}"]
        assert it["status"] == "complete"
        assert Path(it["best_ckpt_path"]).is_relative_to(rd / f"iter{n}" / "train")
        combined = pd.read_csv(it["combined_training_csv"], dtype=str, keep_default_na=False)
        prov = pd.read_csv(it["provenance_csv"], dtype=str, keep_default_na=False)
        assert len(prov) == len(combined)
        key = ["input_path", "golden_path", "object_name", "label"]
        assert not combined.duplicated(subset=key).any(), "duplicated training rows"
        mv = json.loads(Path(it["merge_validation_report"]).read_text())
        assert mv["missing_file_count"] == 0 and mv["train_val_leakage_overlap_count"] == 0 and mv["kpi_overlap_count"] == 0
        for kind in ("best_val", "latest"):
            assert (rd / f"iter{n}" / "inference" / kind / "inference.csv").is_file()
    final = its["final_automl"]
    assert final["source"] == "automl_phase3" and final["status"] == "complete"
    assert Path(final["best_ckpt_path"]).is_file()

    best = json.loads((rd / "best_model.json").read_text())
    assert Path(best["checkpoint"]).is_file()
    assert best["iteration"] in its
    assert best["checkpoint"] == its[best["iteration"]]["best_ckpt_path"]
    infer_spec = yaml.safe_load((rd / "best_model_inference_spec.yaml").read_text())
    assert infer_spec["model"]["classify"]["eval_margin"] == best["threshold"]
    assert "automl_policy" not in infer_spec and "workflow" not in infer_spec

    traj = json.loads((rd / "trajectory.json").read_text())
    steps = [r["step"] for r in traj["rows"]]
    assert steps == ["phase1_best", "baseline", *[f"iter{n}" for n in range(1, iterations + 1)], "phase3_best"]
    assert sum(1 for r in traj["rows"] if r["delivered"]) == 1

    html = (rd / "DEFT_Loop_Report.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    return state
