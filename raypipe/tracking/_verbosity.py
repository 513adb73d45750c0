"""MLflow's own console output: off by default, shown with raypipe's ``--verbose``.

MLflow prints INFO lines when it creates a store ("Creating initial MLflow database tables...",
"Updating database tables"), alembic logs each schema migration, and MLflow warns about things a
raypipe user cannot act on. None of that belongs in raypipe's console unless asked for.

No mlflow import here: run.py calls :func:`set_mlflow_verbosity` before anything imports MLflow,
and MLflow reads ``MLFLOW_LOGGING_LEVEL`` when it is imported.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Loggers MLflow configures at import (each with its own handler, not propagating to the root).
_LOGGERS = ("mlflow", "alembic")
_QUIET = logging.ERROR
_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"
# With a tracking server, MLflow writes "View run ... at: URL" to stdout each time a run ends (every
# trial, from every Ray worker). MLflow reads this variable at each call.
_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
_WARNING_MODULES = r"(mlflow|alembic)(\.|$)"

_verbose = False


def set_mlflow_verbosity(verbose: bool = False) -> None:
    """Show (``verbose``) or hide MLflow's chatter in this process and the processes it starts.

    Hidden: MLflow's and alembic's INFO and WARNING log lines, its "View run ... at" lines and
    Python warnings raised in MLflow's modules; errors still show. Call it once at start-up, before Ray starts: Ray workers
    and subprocesses inherit ``MLFLOW_LOGGING_LEVEL`` and MLflow configures itself from it. A
    warnings filter, once added, stays for the life of the process.
    """
    global _verbose
    _verbose = verbose
    level = logging.INFO if verbose else _QUIET
    os.environ[_LEVEL_ENV] = logging.getLevelName(level)
    os.environ[_URL_ENV] = "false" if verbose else "true"
    # Already imported MLflow has configured its loggers from the old value: set them directly too.
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore", module=_WARNING_MODULES)


def mlflow_is_verbose() -> bool:
    """True when MLflow's INFO lines were asked for: ``set_mlflow_verbosity(True)``, or the user
    set ``MLFLOW_LOGGING_LEVEL`` to INFO or DEBUG themselves."""
    return _verbose or os.environ.get(_LEVEL_ENV, "").upper() in ("INFO", "DEBUG")


def quiet_run_links() -> None:
    """Hide the "View run" lines unless verbose or the user set the variable: called wherever a
    client is made, so Ray workers logging to a server stay quiet without any set-up."""
    if not mlflow_is_verbose():
        os.environ.setdefault(_URL_ENV, "true")


@contextmanager
def mlflow_chatter_suppressed() -> Iterator[None]:
    """Silence MLflow's and alembic's loggers for one block (store creation) unless verbose.

    This is what keeps the console clean when nobody called :func:`set_mlflow_verbosity`: the
    table-creation and migration lines are the loudest MLflow output of a run.
    """
    if mlflow_is_verbose():
        yield
        return
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(_QUIET)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_WARNING_MODULES)
            yield
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)
