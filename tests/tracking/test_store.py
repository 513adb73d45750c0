"""Crash-safe creation of the sqlite MLflow store: real processes, real SIGKILL, real sqlite."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raypipe.tracking import StoreError, ensure_store, inspect_store, start_pipeline_run
from raypipe.tracking._store import _head_revision

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 300.0  # 2 shared cores: importing MLflow alone can take 10 s under load


def _uri(db: Path) -> str:
    return f"sqlite:///{db}"


def _spawn(code: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen[bytes], condition: Callable[[], bool], what: str) -> None:
    """Poll the filesystem until ``condition`` holds (never a guessed sleep)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"the process exited ({proc.returncode}) before {what}:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(0.005)  # poll interval, bounded by the deadline


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _migrating(db: Path) -> Callable[[], bool]:
    """True once alembic has recorded a revision in ``db``: the migrations are under way."""
    def check() -> bool:
        if not db.is_file() or db.stat().st_size == 0:
            return False
        try:
            con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=0.1)
            try:
                return con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
            finally:
                con.close()
        except sqlite3.Error:  # no such table yet, or the writer holds the lock right now
            return False
    return check


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store built by ensure_store, copied by the tests that need a complete one."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    ensure_store(_uri(db))
    return db


def _use(client: MlflowClient) -> str:
    """Prove a store works: an experiment and a run in it."""
    exp = client.create_experiment("check")
    return client.create_run(exp).info.run_id


@pytest.mark.slow  # a real second process creates a store (~10-20 s on 2 shared cores)
def test_sigkill_during_creation_then_open(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    proc = _spawn(f"from raypipe.tracking import ensure_store; ensure_store({_uri(db)!r})", tmp_path)
    temp: list[Path] = []

    def migrating_temp() -> bool:
        temp[:] = list(db.parent.glob(".mlflow.db.*.creating")) if db.parent.is_dir() else []
        return bool(temp) and _migrating(temp[0])()

    _wait_for(proc, migrating_temp, "a store under construction")
    _kill(proc)
    # The kill landed mid-migration, and the store path never held the half-built file.
    assert not inspect_store(temp[0]).complete
    assert not db.exists()

    ensure_store(_uri(db))
    health = inspect_store(db)
    assert health.complete and health.empty
    assert sorted(p.name for p in db.parent.iterdir()) == [".mlflow.db.lock", "mlflow.db"]
    run_id = _use(MlflowClient(_uri(db)))
    assert MlflowClient(_uri(db)).get_run(run_id).info.status == "RUNNING"
    # MLflow's table-creation lines stay out of the console by default.
    err = capfd.readouterr().err
    assert "Creating initial MLflow database tables" not in err and "Updating database tables" not in err


@pytest.mark.slow  # a real second process creates a store (~10-20 s on 2 shared cores)
def test_store_half_migrated_by_a_killed_mlflow_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The brick users met: plain MLflow creating the store in place, SIGKILLed mid-migration."""
    db = tmp_path / "mlflow.db"
    proc = _spawn(f"from mlflow import MlflowClient; MlflowClient({_uri(db)!r}).search_experiments()", tmp_path)
    _wait_for(proc, _migrating(db), "schema migrations in the store")
    _kill(proc)
    broken = inspect_store(db, recover=True)
    assert not broken.complete and broken.empty, broken

    ensure_store(_uri(db))
    assert inspect_store(db).complete
    assert "incomplete MLflow store holding nothing" in caplog.text and str(db) in caplog.text
    ctx = start_pipeline_run(_uri(db), "raypipe-aoi", tmp_path / "rd", {})
    assert MlflowClient(_uri(db)).get_run(ctx.parent_run_id).data.tags["raypipe.run_dir"] == str(tmp_path / "rd")


def _older_revision() -> str:
    import mlflow.store
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(mlflow.store.__file__).parent / "db_migrations"))
    down = ScriptDirectory.from_config(cfg).get_revision(_head_revision()).down_revision
    assert isinstance(down, str)
    return down


def test_half_migrated_store_with_runs_is_refused_untouched(tmp_path: Path, complete_store: Path) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copy(complete_store, db)
    _use(MlflowClient(_uri(db)))
    # What a kill inside a batch migration leaves: the previous revision and alembic's table copy.
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = ?", (_older_revision(),))
    con.execute("CREATE TABLE _alembic_tmp_model_versions (name VARCHAR(256))")
    con.commit()
    con.close()
    before = db.read_bytes()

    with pytest.raises(StoreError) as err:
        ensure_store(_uri(db))
    message = str(err.value)
    assert str(db) in message and "1 runs" in message and "_alembic_tmp_model_versions" in message
    assert "will not rebuild" in message
    assert db.read_bytes() == before


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = db.read_bytes()
    with pytest.raises(StoreError, match=f"{db}: not a readable sqlite database"):
        ensure_store(_uri(db))
    assert db.read_bytes() == before


@pytest.mark.slow  # a real second process creates a store (~10-20 s on 2 shared cores)
def test_concurrent_creators_make_one_store(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    code = ("import sys; from raypipe.tracking import start_pipeline_run; "
            f"ctx = start_pipeline_run({_uri(db)!r}, 'raypipe-aoi', sys.argv[-1], {{}}); print(ctx.experiment_id)")
    procs = [_spawn(code.replace("sys.argv[-1]", repr(str(tmp_path / f"rd{i}"))), tmp_path) for i in range(2)]
    outs = [p.communicate(timeout=DEADLINE_S)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1  # both found the same experiment
    assert not list(db.parent.glob(".mlflow.db.*creating*"))
    health = inspect_store(db)
    assert health.complete and health.runs == 2


def test_other_uris_are_left_alone(tmp_path: Path) -> None:
    ensure_store("http://127.0.0.1:9")  # no connection is attempted
    ensure_store("databricks")
    assert list(tmp_path.iterdir()) == []
