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


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True,
                env_vars: Mapping[str, str] | None = None) -> Iterator[bool]:
    """Connect to Ray for the duration of the block; yields True when this call started it.

    Already connected: nothing to do. ``address`` (``auto`` or ``host:port``): join that cluster
    and leave it running. None: start a private local Ray (``address="local"``) and shut it down
    afterwards — a bare ``ray.init()`` would join any cluster ``ray start`` left on this machine,
    someone else's, with someone else's resources. A private Ray's clients all run with one auth
    mode (Ray 2.60 refuses a client whose ``RAY_AUTH_MODE`` differs from the cluster's).
    ``env_vars`` (e.g. an air-gapped run's offline variables) reach the workers of a joined
    cluster through the job's runtime environment; a private Ray's workers inherit this process's
    environment, where the caller has set them before calling.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver,
                 runtime_env={"env_vars": dict(env_vars)} if env_vars else None)
        try:
            yield False
        finally:
            ray.shutdown()  # disconnects this driver; the cluster keeps running
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=log_to_driver)
    try:
        yield True
    finally:
        ray.shutdown()


__all__ = ["ray_session", "run_task", "submit_task", "unwrap_task_error"]
