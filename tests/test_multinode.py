"""Multi-node Ray: trials spread over nodes, share fractional GPUs, and survive losing a node.

A real multi-node Ray cluster in one process tree (``ray.cluster_utils.Cluster``): a head with one
CPU and no GPU (like a real cluster's head) and two worker nodes with 2 CPUs and 1 (fake) GPU each.
Trials take ``{"cpu": 1, "gpu": 0.5}`` and need a GPU, so each worker fits exactly two (sharing its
GPU) and four trials must use both workers. Synchronisation is a barrier actor pinned to the head,
never a sleep: a trial proceeds only when the others have arrived, which is what proves they ran at
the same time.

Tests, in order (the cluster is module-scoped; the node-loss test removes a node, so it is last):
1. four half-GPU trials run concurrently on both nodes with ``CUDA_VISIBLE_DEVICES`` assigned;
2. the whole smoke pipeline (``python -m raypipe.run --ray-address …`` in a subprocess) runs on the
   cluster: trials on both workers, two half-GPU trials at once on one GPU, DEFT's GPU stages on GPU
   nodes, CPU stages anywhere — read from the run's ``placement.jsonl`` — and the cluster survives it;
3. a worker node is hard-killed mid-sweep: its trials are retried on the other node
   (``FailureConfig(max_failures)``) and the sweep completes.

Auth: Ray 2.60 token auth requires every node and driver to agree on ``RAY_AUTH_MODE``. The nodes
of ``Cluster``, this driver and the pipeline subprocess run in this process tree and inherit it; the
fixture pins it to ``disabled`` when unset (and leaves an explicit setting alone), so they agree.

By hand (docs/cluster.md): ``python -m pytest tests/test_multinode.py -k smoke_pipeline -s`` prints
the pipeline's placement table and wall time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tests.conftest import REPO
from tests.run._artifacts import check_complete_run, find_run_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Worker processes cannot import this test module (tests/ is not on their path): ship the trial
# function and the Gate class by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GATE_NAMESPACE = "raypipe_multinode_test"
TRIAL_RESOURCES = {"cpu": 1, "gpu": 0.5}
WAIT_S = 90  # a trial waiting longer than this means Ray did not schedule the others: fail, don't hang


@ray.remote(num_cpus=0)
class Gate:
    """Barrier + release switch for trials; records every attempt (node, GPUs, times)."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self.expected = 0

    async def arrive(self, record: dict[str, Any], expected: int) -> None:
        self.attempts.append(record)
        self.expected = expected
        if len(self.attempts) >= expected:
            self.arrived.set()

    async def wait_all_arrived(self) -> int:
        await self.arrived.wait()
        return len(self.attempts)

    async def open(self) -> None:
        self.opened.set()

    async def wait_open(self) -> None:
        await self.opened.wait()

    def get_attempts(self) -> list[dict[str, Any]]:
        return list(self.attempts)


def _trial(config: dict[str, Any]) -> None:
    """A Tune trial that records where it runs, meets the others at the barrier, then waits for release."""
    import time

    start = time.time()
    ctx = ray.get_runtime_context()
    record = {"trial_id": tune.get_context().get_trial_id(), "node": ctx.get_node_id(),
              "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "pid": os.getpid()}
    gate = ray.get_actor(config["gate"], namespace=GATE_NAMESPACE)
    ray.get(gate.arrive.remote(record, config["expected"]), timeout=WAIT_S)
    tune.report({"phase": "arrived", "node": record["node"], "pid": record["pid"]})
    if config["barrier"]:
        ray.get(gate.wait_all_arrived.remote(), timeout=WAIT_S)
    ray.get(gate.wait_open.remote(), timeout=WAIT_S)
    tune.report({"phase": "done", "node": record["node"], "cuda": record["cuda"], "start": start,
                 "end": time.time()})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Head (1 CPU, no GPU) + 2 workers × (2 CPU, 1 fake GPU); driver connected; always shut down.

    Module-scoped (starting three nodes is the slow part); the node-loss test removes a worker, so
    it is the last test in this file.
    """
    set_mode = "RAY_AUTH_MODE" not in os.environ
    if set_mode:
        os.environ["RAY_AUTH_MODE"] = "disabled"
    if ray.is_initialized():  # a driver can join only one cluster at a time
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False,
        # detect a killed node in ~2 s instead of the default ~30 s
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_failure_threshold": 2},
    })
    try:
        for _ in range(2):
            c.add_node(num_cpus=2, num_gpus=1)
        c.wait_for_nodes()
        ray.init(address=c.address, namespace=GATE_NAMESPACE, include_dashboard=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if set_mode:
            os.environ.pop("RAY_AUTH_MODE", None)


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny demo workspace for the module (the sweep test only reads it; the pipeline adds results/)."""
    from raypipe.workspace import generate_demo

    return generate_demo(tmp_path_factory.mktemp("multinode") / "ws", seed=0, scale=0.05)


def _gate(c: Cluster) -> tuple[Any, str]:
    name = f"gate-{uuid.uuid4().hex[:8]}"
    gate = Gate.options(name=name, namespace=GATE_NAMESPACE, scheduling_strategy=NodeAffinitySchedulingStrategy(
        c.head_node.node_id, soft=False)).remote()
    return gate, name


def _tuner(gate_name: str, storage: Path, *, barrier: bool, callbacks: list[Any] | None = None,
           max_failures: int = 0) -> tune.Tuner:
    return tune.Tuner(
        tune.with_resources(_trial, TRIAL_RESOURCES),
        param_space={"i": tune.grid_search([0, 1, 2, 3]), "gate": gate_name, "expected": 4, "barrier": barrier},
        tune_config=tune.TuneConfig(max_concurrent_trials=4, reuse_actors=False),
        run_config=tune.RunConfig(name="multinode", storage_path=str(storage), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )


def test_four_half_gpu_trials_run_concurrently_on_two_nodes(cluster: Cluster, tmp_path: Path) -> None:
    gate, name = _gate(cluster)
    ray.get(gate.open.remote())  # only the barrier holds trials here
    results = _tuner(name, tmp_path, barrier=True).fit()

    assert results.num_errors == 0, [r.error for r in results]
    done = [r.metrics for r in results]
    worker_ids = {n.node_id for n in cluster.worker_nodes}
    nodes = [m["node"] for m in done]
    assert set(nodes) == worker_ids  # trials ran on more than one node: both workers
    assert sorted(nodes.count(n) for n in worker_ids) == [2, 2]
    # concurrent: every trial passed the 4-way barrier, so all four intervals overlap
    assert max(m["start"] for m in done) < min(m["end"] for m in done)
    # Ray assigned each trial one of its node's GPUs; two halves at most per GPU
    assert all(m["cuda"] in ("0", "1") for m in done)
    per_gpu = [(m["node"], m["cuda"]) for m in done]
    assert max(per_gpu.count(k) for k in per_gpu) <= 2


# The smoke profile on the cluster: 4 half-GPU Phase 1 trials (two per worker, sharing its GPU),
# whole-GPU DEFT training/inference/embedding, no MLflow (not what this test is about).
PIPELINE_OVERRIDES = ["automl.resources_per_trial.gpu=0.5", "automl.max_concurrent_trials=4",
                      "phase1.automl_max_recommendations=4", "phase2.resources.train.gpu=1", "tracking.enabled=false",
                      # embed the pool now, whatever an earlier test left in the session's cache
                      "phase2.mining_filter.cache.enabled=false"]
PIPELINE_TIMEOUT_S = 300
GPU_STAGES = ("/train", "/embed")  # + "<label>/inference/<kind>"; CPU stages: rca, routing, anomalygen, data_merge
CPU_STAGES = ("/rca", "/routing", "/anomalygen", "/data_merge")


def _trial_intervals(sweep_dir: Path) -> dict[str, tuple[float, float]]:
    """trial id → (started_at, end of its last reported epoch), from Tune's own result.json files."""
    out: dict[str, tuple[float, float]] = {}
    for result in sweep_dir.glob("*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        out[last["trial_id"]] = (last["started_at"], last["started_at"] + last["compute_s"])
    return out


@pytest.mark.timeout(PIPELINE_TIMEOUT_S + 60)
def test_smoke_pipeline_places_trials_and_gpu_stages_on_gpu_nodes(cluster: Cluster, demo_ws: Path,
                                                                   tmp_path: Path) -> None:
    from raypipe.placement import format_placements, read_placements

    workers = {n.node_id for n in cluster.worker_nodes}
    head = cluster.head_node.node_id
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    assert env["RAY_AUTH_MODE"] == os.environ["RAY_AUTH_MODE"]  # the subprocess joins with the cluster's mode
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "raypipe.run", "--config", str(REPO / "experiments" / "smoke.yaml"),
                           "--workspace", str(demo_ws), "--yes", "--ray-address", cluster.address,
                           *PIPELINE_OVERRIDES], cwd=tmp_path, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=PIPELINE_TIMEOUT_S)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rd = find_run_dir(demo_ws)
    state = check_complete_run(rd)

    # The pipeline joined the cluster and left it running: every node is still alive.
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert alive >= workers | {head}

    recs = read_placements(rd)
    names = {head: "head", **{n.node_id: f"worker{i}" for i, n in enumerate(cluster.worker_nodes, 1)}}
    print(f"\nsmoke pipeline on 3 local nodes: {wall:.1f} s\n{format_placements(recs, names)}")

    # (a) every trial of both sweeps recorded once, on a GPU worker; Phase 1's four used both workers.
    for phase, sweep_dir in (("phase1", rd / "phase1_automl" / "phase1"),
                             ("final_automl", rd / "final_automl" / "final_automl")):
        trials = {r["what"].removeprefix("trial "): r for r in recs
                  if r["phase"] == phase and r["what"].startswith("trial ")}
        assert set(trials) == set(_trial_intervals(sweep_dir)), phase
        assert {r["node_id"] for r in trials.values()} <= workers, phase
        for r in trials.values():
            assert r["assigned_resources"]["GPU"] == 0.5 and r["gpu_ids"] == [r["cuda_visible_devices"]]
    p1 = {r["what"].removeprefix("trial "): r for r in recs if r["phase"] == "phase1" and r["what"].startswith("trial ")}
    assert len(p1) == 4 and {r["node_id"] for r in p1.values()} == workers

    # (b) half-GPU trials shared a GPU: on each worker two trials on the same GPU id, at the same time.
    intervals = _trial_intervals(rd / "phase1_automl" / "phase1")
    by_gpu: dict[tuple[str, str], list[str]] = {}
    for trial_id, r in p1.items():
        by_gpu.setdefault((r["node_id"], r["gpu_ids"][0]), []).append(trial_id)
    assert sorted(len(v) for v in by_gpu.values()) == [2, 2], by_gpu
    for pair in by_gpu.values():
        (s1, e1), (s2, e2) = (intervals[t] for t in pair)
        assert max(s1, s2) < min(e1, e2), (pair, intervals)  # overlapping lifetimes

    # Phase 3's winner is scored on the KPI set by a GPU task too, never on the GPU-less head.
    final = [r for r in recs if r["what"] == "final_automl/inference/best_val"]
    assert len(final) == 1 and final[0]["node_id"] in workers and final[0]["assigned_resources"]["GPU"] == 1.0

    # (c) DEFT: GPU stages on GPU workers with a whole GPU; CPU stages anywhere, without a GPU.
    p2 = [r for r in recs if r["phase"] == "phase2"]
    whats = {r["what"] for r in p2}
    expected = {"baseline/inference/best_val", "baseline/rca", "iter1/routing", "iter1/anomalygen",
                "iter1/data_merge", "iter1/train", "iter1/inference/best_val"}
    if not state["iterations"]["iter1"].get("data_mining_skipped"):
        expected.add("iter1/embed")
    assert expected <= whats, expected - whats
    for r in p2:
        if r["what"].endswith(GPU_STAGES) or "/inference/" in r["what"]:
            assert r["node_id"] in workers and r["node_id"] != head, r
            assert r["assigned_resources"]["GPU"] == 1.0 and len(r["gpu_ids"]) == 1, r
        elif r["what"].endswith(CPU_STAGES):
            assert r["node_id"] in workers | {head}, r
            assert "GPU" not in r["assigned_resources"] and r["gpu_ids"] == [], r


class KillNodeWhenAllArrived(tune.Callback):
    """Driver-side: once every trial is running, hard-kill one worker node, then release the trials.

    A lost machine takes its trial processes with it. ``Cluster.remove_node`` kills the node's Ray
    services, but a trial's worker process may outlive its raylet for a moment and still finish
    (actor calls go straight to the worker), so the trial processes on that node — started by this
    test — are SIGKILLed by PID first.
    """

    def __init__(self, cluster: Cluster, victim: Any, gate: Any, expected: int) -> None:
        self.cluster, self.victim, self.gate, self.expected = cluster, victim, gate, expected
        self.arrived: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.killed = False

    def __getstate__(self) -> dict[str, Any]:
        # Tuner pickles its run config (callbacks included) for restore; the live cluster handle
        # (locks, processes) is needed only by this in-process instance.
        return dict(self.__dict__, cluster=None, victim=None)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get("phase") == "arrived":
            self.arrived.setdefault(trial.trial_id, result["node"])
            self.pids.setdefault(trial.trial_id, result["pid"])
        if not self.killed and len(self.arrived) == self.expected:
            self.killed = True
            for trial_id, node in self.arrived.items():
                if node == self.victim.node_id:
                    os.kill(self.pids[trial_id], signal.SIGKILL)
            self.cluster.remove_node(self.victim, allow_graceful=False)
            ray.get(self.gate.open.remote())


def test_trials_on_a_lost_node_are_retried_elsewhere_and_the_sweep_completes(cluster: Cluster, tmp_path: Path) -> None:
    driver_socket = ray._private.worker.global_worker.node._raylet_socket_name
    victim = next(n for n in cluster.worker_nodes if n._raylet_socket_name != driver_socket)
    victim_id = victim.node_id
    survivor_id = next(n.node_id for n in cluster.worker_nodes if n is not victim)
    gate, name = _gate(cluster)
    killer = KillNodeWhenAllArrived(cluster, victim, gate, expected=4)

    results = _tuner(name, tmp_path, barrier=False, callbacks=[killer], max_failures=2).fit()

    assert killer.killed
    assert results.num_errors == 0, [r.error for r in results]
    assert len(results) == 4 and all(r.metrics["phase"] == "done" for r in results)
    on_victim = {t for t, node in killer.arrived.items() if node == victim_id}
    assert len(on_victim) == 2  # each node held two trials when the node died
    attempts = ray.get(gate.get_attempts.remote())
    per_trial: dict[str, list[str]] = {}
    for a in attempts:
        per_trial.setdefault(a["trial_id"], []).append(a["node"])
    for trial_id, nodes in per_trial.items():
        if trial_id in on_victim:
            assert nodes == [victim_id, survivor_id], (trial_id, nodes)  # retried on the surviving node
        else:
            assert nodes == [survivor_id], (trial_id, nodes)  # untouched, one attempt
    assert {r.metrics["node"] for r in results} == {survivor_id}
