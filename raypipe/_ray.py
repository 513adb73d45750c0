"""Ray in one place: connecting (``ray_session``) and running one task with declared resources.

Every piece of heavy work outside a sweep (DEFT training, KPI inference, embeddings, CPU stages,
Phase 3's KPI scoring, a sweep's baseline eval) is one Ray task with ``{cpu, gpu}`` from the config
and no retries (a stage is redone from its start by the loop, never half-retried by Ray). The task
records where it ran in ``RD/placement.jsonl`` from inside the worker, the only place that knows.

    with ray_session(cfg.ray_address):
        csv = run_task(infer_job, job, resources=cfg.phase2.resources.train,
                       placement=Placement(rd, "phase2", "iter1/inference/best_val"))
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

if TYPE_CHECKING:
    from raypipe.config import Resources
    from raypipe.placement import Placement

T = TypeVar("T")

log = logging.getLogger(__name__)


def _cpu_gpu(resources: Resources | Mapping[str, float]) -> tuple[float, float]:
    if isinstance(resources, Mapping):
        return float(resources.get("cpu", 1)), float(resources.get("gpu", 0))
    return float(resources.cpu), float(resources.gpu)


def _placed(fn: Callable[..., T], placement: Placement | None, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> T:
    """The task body: record the placement, then run ``fn``."""
    if placement is not None:
        placement.record()
    return fn(*args, **kwargs)


def submit_task(fn: Callable[..., Any], /, *args: Any, resources: Resources | Mapping[str, float],
                placement: Placement | None = None, **kwargs: Any) -> Any:
    """Start ``fn(*args, **kwargs)`` as a Ray task with ``resources``; returns its ObjectRef."""
    import ray

    cpu, gpu = _cpu_gpu(resources)
    task: Any = ray.remote(_placed).options(num_cpus=cpu, num_gpus=gpu, max_retries=0)
    return task.remote(fn, placement, args, kwargs)


def run_task(fn: Callable[..., T], /, *args: Any, resources: Resources | Mapping[str, float],
             placement: Placement | None = None, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` as a Ray task with ``resources`` and return its result.

    An exception in the task is re-raised here (wrapped by Ray; :func:`unwrap_task_error` gets
    the original back).
    """
    import ray

    result: T = ray.get(submit_task(fn, *args, resources=resources, placement=placement, **kwargs))
    return result


def unwrap_task_error(exc: BaseException) -> BaseException:
    """The task's own exception out of Ray's ``RayTaskError`` wrapper(s)."""
    seen = 0
    while seen < 5 and isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause  # type: ignore[attr-defined]
        seen += 1
    return exc


_session: dict[str, str | None] = {"dashboard_url": None}


def quiet_termination() -> None:
    """Every worker of a raypipe Ray session runs this first (Ray's ``worker_process_setup_hook``).

    Tune ends each trial actor by removing the trial's placement group, and the raylet then
    SIGTERMs the worker, idle or still starting up. Ray's SIGTERM handler raises ``SystemExit`` in
    whatever Python code the worker's main thread runs at that instant; when that is a garbage
    collector callback (a ``WeakSet`` entry dying), Python cannot propagate it and prints
    "Exception ignored in … SystemExit: 1" with a traceback, which reached the user's console at
    the end of every sweep. The worker is being ended on purpose (Ray SIGKILLs it 200 ms later):
    such a ``SystemExit`` is dropped here, every other unraisable exception is reported as usual.
    """
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, SystemExit):
            return
        default(unraisable)

    sys.unraisablehook = hook


# The module path, not the function: Ray imports it in each worker (a callable would be pickled per job).
WORKER_RUNTIME_ENV = {"worker_process_setup_hook": f"{__name__}.quiet_termination"}


def dashboard_url() -> str | None:
    """``http://host:port`` of the Ray dashboard of the session :func:`ray_session` opened, if it runs one."""
    return _session["dashboard_url"]


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True,
                env_vars: Mapping[str, str] | None = None, dashboard: bool = False,
                logging_level: int = logging.WARNING) -> Iterator[bool]:
    """Connect to Ray for the duration of the block; yields True when this call started it.

    Already connected: nothing to do. ``address`` (``auto`` or ``host:port``): join that cluster
    and leave it running. None: start a private local Ray (``address="local"``) and shut it down
    afterwards — a bare ``ray.init()`` would join any cluster ``ray start`` left on this machine,
    someone else's, with someone else's resources. A private Ray's clients all run with one auth
    mode (Ray 2.60 refuses a client whose ``RAY_AUTH_MODE`` differs from the cluster's).
    ``env_vars`` (e.g. an air-gapped run's offline variables) reach the workers of a joined
    cluster through the job's runtime environment; a private Ray's workers inherit this process's
    environment, where the caller has set them before calling.

    ``dashboard``: a private Ray also starts its dashboard (loopback only; :func:`dashboard_url`);
    off by default, it is two more processes and ~200 MB. ``log_to_driver=False`` keeps the
    workers' own output (``(pid=…)`` lines) in Ray's session logs instead of this console;
    ``logging_level`` is the level of Ray's own loggers in this process.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        runtime_env = {**WORKER_RUNTIME_ENV, "env_vars": dict(env_vars)} if env_vars else WORKER_RUNTIME_ENV
        ctx = ray.init(address=address, logging_level=logging_level, log_to_driver=log_to_driver,
                       runtime_env=runtime_env)
        _session["dashboard_url"] = _url(getattr(ctx, "dashboard_url", None))
        try:
            yield False
        finally:
            _session["dashboard_url"] = None
            ray.shutdown()  # disconnects this driver; the cluster keeps running
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    extra: dict[str, Any] = {"dashboard_host": "127.0.0.1"} if dashboard else {}
    ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, logging_level=logging_level,
                   log_to_driver=log_to_driver, runtime_env=WORKER_RUNTIME_ENV, **extra)
    _session["dashboard_url"] = _url(getattr(ctx, "dashboard_url", None)) if dashboard else None
    try:
        yield True
    finally:
        _session["dashboard_url"] = None
        ray.shutdown()


def _url(address: str | None) -> str | None:
    if not address:
        return None
    return address if "://" in address else f"http://{address}"


__all__ = ["dashboard_url", "ray_session", "run_task", "submit_task", "unwrap_task_error"]
