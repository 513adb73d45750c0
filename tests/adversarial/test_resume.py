"""``python -m raypipe.run --resume RD`` on damaged or mismatched run dirs: a clear error naming the
file or flag, the run dir left exactly as it was (a complete run stays complete), no traceback.

Each case builds ``ws/results/run_20260101_000000`` as the gate leaves it (``run_dir``), then damages
it. Every refusal happens before Ray starts, in this process.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ._harness import Case
from ._mutations import RUN_DIR, both, remove, replace_text, run_dir, text, truncate

PS, DS, CFG = f"{RUN_DIR}/pipeline_state.json", f"{RUN_DIR}/deft_state.json", f"{RUN_DIR}/config.yaml"
KEEP = "The run dir was left as it is"

CASES = [
    # a complete run is never redone or downgraded
    Case("complete_run", "resume", run_dir("complete"), 0, ("this run is complete", "nothing to resume")),
    Case("complete_run_damaged_deft_state", "resume", both(run_dir("complete"), truncate(DS, 0.4)), 1,
         (DS, "not valid JSON", KEEP)),
    # truncated or damaged state files
    Case("pipeline_state_truncated", "resume", both(run_dir(), truncate(PS, 0.5)), 1, (PS, "not valid JSON"),
         subprocess=True),
    Case("pipeline_state_empty", "resume", both(run_dir(), text(PS, "")), 1, (PS, "empty")),
    Case("pipeline_state_a_list", "resume", both(run_dir(), text(PS, "[1, 2]")), 1, (PS, "expected a JSON object")),
    Case("pipeline_state_without_phases", "resume", both(run_dir(), text(PS, '{"status": "in_progress"}')), 1,
         (PS, "status of phase1, phase2 and phase3")),
    Case("pipeline_state_missing", "resume", both(run_dir(), remove(PS)), 1, (PS, "missing")),
    Case("deft_state_empty", "resume", both(run_dir(), text(DS, "")), 1, (DS, "empty")),
    Case("deft_state_truncated", "resume", both(run_dir(), truncate(DS, 0.7)), 1, (DS, "not valid JSON")),
    Case("deft_state_without_events", "resume", both(run_dir(), text(DS, '{"version": 4, "iterations": {}}')), 1,
         (DS, "expected 'iterations' and 'events'")),
    Case("config_truncated", "resume", both(run_dir(), truncate(CFG, 0.6)), 1, (CFG, "truncated")),
    Case("config_edited", "resume", both(run_dir(), replace_text(CFG, "seed: 42", "seed: 7")), 1,
         (CFG, "no longer matches the config the run was approved with")),
    Case("config_not_yaml", "resume", both(run_dir(), text(CFG, "workspace: [unclosed\n")), 1, (CFG, "malformed YAML")),
    Case("config_missing", "resume", both(run_dir(), remove(CFG)), 1, ("not a raypipe run dir (no config.yaml)",)),
    Case("run_dir_missing", "resume", None, 1, ("run_19990101_000000", "no such run dir"),
         argv=("--resume", "{dir}/ws/results/run_19990101_000000")),
    # the run resumes on its own workspace, or not at all
    Case("other_workspace_flag", "resume", run_dir(), 1,
         ("--workspace", "outside", "is not the workspace of the run being resumed"),
         args=("--workspace", "{dir}/outside")),
    Case("other_workspace_override", "resume", run_dir(), 1, ("workspace", "outside", "resumes on its own workspace"),
         args=("workspace={dir}/outside",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, run_case: Callable[[Case], None]) -> None:
    run_case(case)
