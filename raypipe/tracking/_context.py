"""Where runs go: the picklable tracking context and tracking-URI resolution.

No mlflow import here: the context travels into Ray workers (other nodes too), so it is a
plain frozen dataclass of strings and must stay cheap to pickle and to import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

#: Tag on the pipeline (parent) run naming its run dir: how a resumed run finds its parent again.
RUN_DIR_TAG = "raypipe.run_dir"
#: Tag on a child run making it idempotent on resume (e.g. ``phase1/trial_00003``).
KEY_TAG = "raypipe.key"
#: MLflow's own tag that nests a run in the UI.
PARENT_TAG = "mlflow.parentRunId"

_DB_NAME = "mlflow.db"
_ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class TrackingContext:
    """Everything a worker needs to log a run nested under another one.

    Small and picklable on purpose: it is passed to Ray tasks/trials instead of relying on
    MLflow's process-global active run, which does not exist in a worker process.
    """

    tracking_uri: str  # absolute: sqlite:////abs/mlruns/mlflow.db, http://host:port, ...
    experiment_id: str
    parent_run_id: str | None  # the run new runs nest under
    enabled: bool = True

    @property
    def active(self) -> bool:
        """True when logging should really happen (enabled and inside an experiment)."""
        return self.enabled and bool(self.experiment_id)


def resolve_tracking_uri(uri: str | None, cwd: Path) -> str:
    """Turn the config's ``tracking.tracking_uri`` into an absolute MLflow URI.

    - ``None`` → ``sqlite:///<cwd>/mlruns/mlflow.db`` (MLflow's plain file store is in
      maintenance mode in 3.x; a sqlite db inside ``mlruns/`` keeps ``mlruns/`` the one place
      users look, with artifacts under ``mlruns/artifacts``).
    - relative sqlite paths are made absolute against ``cwd``: Ray workers run with another
      working directory and would otherwise create a second, empty database.
    - a bare path: ``*.db`` → that sqlite file; anything else → a directory holding
      ``mlflow.db`` (so ``tracking_uri: ./mlruns`` does what a user means).
    - ``file:`` URIs are refused with the fix named (file store = maintenance mode).
    - any other scheme (``http(s)://``, ``databricks``, ...) is passed through unchanged.
    """
    cwd = Path(cwd).absolute()
    if uri is None or not str(uri).strip():
        return _sqlite_uri(cwd / "mlruns" / _DB_NAME)
    uri = str(uri).strip()
    if uri.startswith("sqlite:"):
        if not uri.startswith("sqlite:///"):
            raise ValueError(
                f"tracking.tracking_uri {uri!r}: expected sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        path = Path(uri[len("sqlite:///"):])
        if str(path) == ":memory:" or not str(path):
            raise ValueError(
                f"tracking.tracking_uri {uri!r}: an in-memory sqlite store is lost when the "
                "process exits and is invisible to Ray workers; give a file path"
            )
        return _sqlite_uri(path if path.is_absolute() else cwd / path)
    if uri.startswith("file:"):
        raise ValueError(
            f"tracking.tracking_uri {uri!r}: MLflow's file store is in maintenance mode; use "
            f"a sqlite database instead, e.g. sqlite:///{urlparse(uri).path.rstrip('/') or 'mlruns'}/{_DB_NAME} "
            "(or leave tracking_uri null for ./mlruns/mlflow.db)"
        )
    if "://" in uri or uri.startswith("databricks"):
        return uri
    path = Path(os.path.expanduser(uri))
    path = path if path.is_absolute() else cwd / path
    return _sqlite_uri(path if path.suffix == ".db" else path / _DB_NAME)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def default_artifact_location(uri: str) -> str | None:
    """Artifact root for a new experiment: ``<db dir>/artifacts`` for sqlite, else the server's.

    A tracking server decides its own artifact root (``--artifacts-destination``); forcing a
    local path there would write artifacts onto the client's disk only.
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / _ARTIFACTS_DIR).as_uri()


def _sqlite_uri(path: Path) -> str:
    # os.path.normpath, not resolve(): keep the user's symlinks (shared mounts) as they are.
    return "sqlite:///" + os.path.normpath(str(path))
