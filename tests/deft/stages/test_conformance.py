"""Every registered DEFT stage passes the stage conformance suite shipped in ``raypipe.testing``."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.deft.stages import REGISTRY, DataMiningStage, Stage
from raypipe.rundir import RunDir
from raypipe.testing.stage_conformance import (
    BUILTIN_CASES,
    StageCase,
    StageConformance,
    builtin_case,
    check_accepts,
    check_declaration,
    check_rejects_bad_keys,
    check_rejects_missing_files,
    check_rejects_wrong,
    check_summary,
)

NAMES = list(REGISTRY.names)


def _case(name: str, tmp_path: Path) -> StageCase:
    return builtin_case(name, RunDir(tmp_path / "results" / "run_20260101_000000"))


def test_every_registered_stage_has_a_case() -> None:
    assert set(BUILTIN_CASES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declaration(name: str) -> None:
    check_declaration(REGISTRY[name])


@pytest.mark.parametrize("name", NAMES)
def test_accepts_its_evidence(name: str, tmp_path: Path) -> None:
    check_accepts(REGISTRY[name], _case(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_summary_is_one_line(name: str, tmp_path: Path) -> None:
    check_summary(REGISTRY[name], _case(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_rejects_missing_files_leaving_the_state_byte_identical(name: str, tmp_path: Path) -> None:
    check_rejects_missing_files(REGISTRY[name], _case(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_rejects_missing_and_unknown_keys(name: str, tmp_path: Path) -> None:
    check_rejects_bad_keys(REGISTRY[name], _case(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_rejects_wrong_counts_and_values(name: str, tmp_path: Path) -> None:
    check_rejects_wrong(REGISTRY[name], _case(name, tmp_path))


def test_the_suite_catches_a_stage_that_accepts_a_wrong_count(tmp_path: Path) -> None:
    """The suite has teeth: a data_mining stage that skips its count check fails it."""

    class Lenient(DataMiningStage):
        def check(self, state, label, evidence):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        check_rejects_wrong(Lenient(), _case("data_mining", tmp_path))


class TestSubclassForm(StageConformance):
    """The class form a plugin stage would use (here: the shipped routing stage)."""

    stage: Stage = REGISTRY["routing"]

    def make_case(self, rd: RunDir) -> StageCase:
        return builtin_case("routing", rd)
