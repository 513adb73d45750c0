"""Crash-safe creation of a local sqlite MLflow store.

MLflow creates a missing sqlite store in place: it makes the initial tables, then runs its schema
migrations (about 10 s on 2 cores). On sqlite those migrations are many small transactions, so a
kill in that window leaves a half-migrated file (typically a leftover ``_alembic_tmp_<table>``)
that every later open fails on, and ``--resume`` with it.

So raypipe never lets MLflow create the file in place. :func:`ensure_store` builds a new store in
a hidden temporary file next to it with MLflow's own ``mlflow db upgrade`` and renames it into
place: the store path only ever holds a complete store. A lock file next to it serialises creators
(the driver, a second run, a tool). A store found half-migrated is rebuilt when it holds nothing,
and refused, naming the file, when it holds runs.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from raypipe._io import _fsync_dir
from raypipe.tracking._context import sqlite_path
from raypipe.tracking._filelock import exclusive
from raypipe.tracking._verbosity import mlflow_chatter_suppressed

log = logging.getLogger(__name__)

_LEFTOVER_PREFIX = "_alembic_tmp_"  # alembic's copy of a table being rebuilt by a batch migration
_CREATING = "creating"  # marks a store under construction: .<db name>.<pid>.creating
_SIDE_FILES = ("-journal", "-wal", "-shm")  # sqlite's companions of a database file

#: Stores found complete by this process (checked again only if the file disappears).
_complete: set[Path] = set()


class StoreError(RuntimeError):
    """A local MLflow store raypipe cannot use and will not repair (it holds data)."""


@dataclass(frozen=True)
class StoreHealth:
    """What a sqlite file holds, read with sqlite itself (never through MLflow, which would try
    to migrate it)."""

    revision: str | None  # alembic's schema revision; None when the table is missing
    head: str  # the revision this MLflow expects
    leftover_tables: tuple[str, ...]
    runs: int
    experiments: int  # besides MLflow's "Default"
    registered_models: int

    @property
    def complete(self) -> bool:
        return not self.leftover_tables and self.revision == self.head

    @property
    def empty(self) -> bool:
        return self.runs == 0 and self.experiments == 0 and self.registered_models == 0

    def describe(self) -> str:
        parts = [f"schema revision {self.revision or 'none'} (this MLflow expects {self.head})"]
        if self.leftover_tables:
            parts.append("leftover migration tables " + ", ".join(self.leftover_tables))
        parts.append(f"{self.runs} runs, {self.experiments} experiments, {self.registered_models} registered models")
        return "; ".join(parts)


def ensure_store(uri: str) -> None:
    """Make sure the sqlite store of ``uri`` exists and is complete; other URIs are left alone.

    Missing → built in a temporary file and renamed into place. Half-migrated (a kill during a
    creation by MLflow itself, or by an older raypipe) and holding no runs → rebuilt the same way.
    Half-migrated or at another schema revision *with* data → :class:`StoreError` naming the file;
    nothing is changed.
    """
    db = sqlite_path(uri)
    if db is None or (db in _complete and db.is_file()):
        return
    if not _looks_complete(db):
        with exclusive(db.with_name(f".{db.name}.lock")):
            _prepare(db)
    _complete.add(db)


def inspect_store(db: Path, *, recover: bool = False) -> StoreHealth:
    """Read a sqlite file's schema revision, leftover tables and contents.

    ``recover`` opens it read-write, so sqlite rolls back a transaction a killed writer left in
    its journal before anything is read; read-only is for the quick check, which must never write.
    """
    mode = "rw" if recover else "ro"
    try:
        con = sqlite3.connect(f"{db.absolute().as_uri()}?mode={mode}", uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: cannot open the MLflow store: {exc}") from exc
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revisions = [row[0] for row in con.execute("SELECT version_num FROM alembic_version")] \
            if "alembic_version" in tables else []

        def count(table: str, where: str = "") -> int:
            return int(con.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]) if table in tables else 0

        return StoreHealth(
            revision=revisions[0] if len(revisions) == 1 else None,
            head=_head_revision(),
            leftover_tables=tuple(sorted(t for t in tables if t.startswith(_LEFTOVER_PREFIX))),
            runs=count("runs"),
            experiments=count("experiments", "WHERE name != 'Default'"),
            registered_models=count("registered_models"),
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db}: not a readable sqlite database ({exc}); raypipe will not overwrite it. "
                         "Move it away or set tracking.tracking_uri to another store") from exc
    finally:
        con.close()


def _looks_complete(db: Path) -> bool:
    """The lock-free check every process makes once: a complete store needs no lock."""
    if not db.is_file():
        return False
    try:
        return inspect_store(db).complete
    except StoreError:
        return False  # e.g. a hot journal a read-only connection may not roll back: look under the lock


def _prepare(db: Path) -> None:
    """Under the lock: clear a dead creator's leftovers, then keep, rebuild or refuse the store."""
    for stale in db.parent.glob(f".{db.name}.*.{_CREATING}*"):
        stale.unlink(missing_ok=True)  # every live creator holds the lock, so these are orphans
    if db.is_file():
        health = inspect_store(db, recover=True)
        if health.complete:
            return
        if not health.empty:
            raise StoreError(
                f"{db}: this MLflow store is half-migrated or at another schema version ({health.describe()}), "
                "and it holds data, so raypipe will not rebuild it. Restore it from a backup, upgrade it with "
                f"`mlflow db upgrade sqlite:///{db}` if it was made by an older MLflow, or set "
                "tracking.tracking_uri to another store")
        log.warning("tracking: %s is an incomplete MLflow store holding nothing (%s); rebuilding it", db, health.describe())
    _create(db)


def _create(db: Path) -> None:
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{_CREATING}")
    import mlflow.db  # MLflow's `mlflow db upgrade`: creates every table of an empty database, migrated to head

    with mlflow_chatter_suppressed():
        mlflow.db.upgrade.main(["sqlite:///" + str(tmp)], standalone_mode=False)
    # The command's engine is garbage now but sits in a reference cycle holding two open
    # connections; collect it, or they would stay open on the renamed file for the process's life.
    gc.collect()
    health = inspect_store(tmp)
    if not health.complete:
        raise StoreError(f"{tmp}: MLflow built an incomplete store ({health.describe()})")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    for suffix in _SIDE_FILES:
        # A journal of the file being replaced would be replayed into the new one on its next open.
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db)
    _fsync_dir(db.parent)
    log.debug("tracking: created MLflow store %s", db)


@functools.cache
def _head_revision() -> str:
    """The schema revision this MLflow's migrations end at (what its own schema check expects)."""
    import mlflow.store
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(mlflow.store.__file__).parent / "db_migrations"))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    if len(heads) != 1:
        raise StoreError(f"MLflow's schema migrations have {len(heads)} heads ({heads}); expected one")
    return str(heads[0])
