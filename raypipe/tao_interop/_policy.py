"""The execution policy in TAO's words (``deft_state.json`` → ``execution_policy``).

TAO records, once per run, whether the run may touch the network. Its command wrapper reads only
``network_mode`` and locks everything down when it equals "airgap"; ANY other word (raypipe used
to write "offline") leaves installs, downloads and registry access open. So raypipe writes
exactly TAO's two words, and for its own decisions treats anything but "network-enabled" as
air-gapped (fail closed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

NetworkMode = Literal["airgap", "network-enabled"]
NETWORK_MODES: tuple[str, ...] = ("airgap", "network-enabled")
_OLD_WORDS = {"offline": "airgap", "online": "network-enabled"}
POLICY_KEYS = ("network_mode", "activation_source", "allow_package_install", "allow_remote_fetch",
               "allow_container_pull", "allow_registry_login", "python_launcher", "python_executable",
               "hf_offline")
# How this run's Python was started: TAO records its launcher script here; ours is the CLI.
PYTHON_LAUNCHER = "python -m raypipe.run"
# What TAO injects into every air-gapped container (and its own environment).
OFFLINE_CONTAINER_ENV: dict[str, str] = {"AIR_GAPPED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                         "PIP_NO_INDEX": "1"}
# raypipe's own process additionally silences the two libraries that report usage over the network
# by default (Ray's usage stats, MLflow's telemetry): an air-gapped run makes no network call at all.
OFFLINE_PROCESS_ENV: dict[str, str] = {**OFFLINE_CONTAINER_ENV, "RAY_USAGE_STATS_ENABLED": "0",
                                       "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
PolicyAction = Literal["container_pull", "registry_login", "package_install", "remote_fetch"]


class PolicyError(ValueError):
    """An execution policy TAO's tools would misread, or one that contradicts itself."""


def network_mode_of(value: Any) -> NetworkMode:
    """``value`` if it is one of TAO's two words; otherwise an error that names the right one."""
    if value == "airgap" or value == "network-enabled":
        return value
    hint = f" (did you mean '{_OLD_WORDS[value]}'?)" if value in _OLD_WORDS else ""
    raise PolicyError(f"execution_policy.network_mode: {value!r} is not one of {', '.join(NETWORK_MODES)}{hint}; "
                      "TAO's tools know only these two words and treat any other as network-enabled")


def resolve_network_mode(configured: str | None, *, source: str,
                         environ: Mapping[str, str] | None = None) -> tuple[NetworkMode, str]:
    """``(network_mode, activation_source)`` for a new run.

    ``AIR_GAPPED=1`` in the environment forces ``airgap`` and cannot be overridden (TAO's rule: the
    environment of an isolated site outranks a config file). Without a configured value raypipe
    defaults to ``airgap``: it needs no network to run. ``source`` says where ``configured`` came
    from (e.g. ``"config:execution_policy.network_mode"``).
    """
    env = os.environ if environ is None else environ
    mode = network_mode_of(configured) if configured is not None else None
    if env.get("AIR_GAPPED") == "1":
        if mode == "network-enabled":
            raise PolicyError("AIR_GAPPED=1 is set in the environment: execution_policy.network_mode cannot be "
                              "network-enabled (unset AIR_GAPPED, or set network_mode: airgap)")
        return "airgap", "environment:AIR_GAPPED"
    if mode is None:
        return "airgap", "default"
    return mode, source


def execution_policy(network_mode: str, *, activation_source: str, python_executable: str | Path | None = None,
                     allow_container_pull: bool = False, allow_registry_login: bool = False) -> dict[str, Any]:
    """``deft_state.json``'s ``execution_policy`` in TAO's vocabulary (its key order, too).

    TAO derives its four ``allow_*`` flags and ``hf_offline`` from the mode. raypipe keeps its own
    finer switches for the two actions it can take itself (``allow_container_pull``,
    ``allow_registry_login``, off unless the user turns them on) and refuses them under ``airgap``
    rather than silently dropping them. ``allow_package_install``/``allow_remote_fetch`` tell TAO's
    tools what the user allowed on this run; raypipe itself never installs or downloads anything.
    """
    mode = network_mode_of(network_mode)
    online = mode == "network-enabled"
    asked = [k for k, v in (("allow_container_pull", allow_container_pull),
                            ("allow_registry_login", allow_registry_login)) if v]
    if asked and not online:
        raise PolicyError(f"execution_policy: {', '.join(asked)} cannot be true with network_mode: airgap "
                          "(an air-gapped run pulls no image and logs into no registry); set them false, or "
                          "network_mode: network-enabled")
    if not str(activation_source).strip():
        raise PolicyError("execution_policy.activation_source must say where the network mode came from")
    # Absolute, not resolved: a virtualenv's python is a symlink to the base interpreter, and the
    # resolved path would name a Python without the run's packages.
    python = Path(os.path.abspath(Path(python_executable if python_executable is not None else sys.executable)
                                  .expanduser()))
    return {
        "network_mode": mode,
        "activation_source": str(activation_source),
        "allow_package_install": online,
        "allow_remote_fetch": online,
        "allow_container_pull": online and bool(allow_container_pull),
        "allow_registry_login": online and bool(allow_registry_login),
        "python_launcher": PYTHON_LAUNCHER,
        "python_executable": str(python),
        "hf_offline": not online,
    }


def validate_policy(policy: Any) -> dict[str, Any]:
    """A recorded ``execution_policy`` checked before it is written or trusted (a copy).

    TAO's tools act on the state's policy, and a run's policy never changes once recorded: so a
    policy missing one of TAO's keys, in a word TAO does not know, or allowing a pull under
    ``airgap`` is refused rather than written.
    """
    if not isinstance(policy, Mapping):
        raise PolicyError(f"execution_policy must be a mapping in TAO's words, got {policy!r}")
    missing = [k for k in POLICY_KEYS if k not in policy]
    if missing:
        raise PolicyError(f"execution_policy lacks {missing} (build it with raypipe.tao_interop.execution_policy)")
    online = network_mode_of(policy["network_mode"]) == "network-enabled"
    allowed = [k for k in ("allow_package_install", "allow_remote_fetch", "allow_container_pull",
                           "allow_registry_login") if policy[k] is True]
    if allowed and not online:
        raise PolicyError(f"execution_policy: {', '.join(allowed)} cannot be true with network_mode: airgap")
    if policy["hf_offline"] is online:
        raise PolicyError(f"execution_policy: hf_offline must be {not online} with network_mode "
                          f"{policy['network_mode']}")
    return dict(policy)


def airgapped(policy: Mapping[str, Any] | None) -> bool:
    """True unless the policy says, in TAO's word, ``network-enabled`` (no policy = air-gapped)."""
    return not (isinstance(policy, Mapping) and policy.get("network_mode") == "network-enabled")


def allows(policy: Mapping[str, Any] | None, action: PolicyAction) -> bool:
    """Whether ``action`` may happen: network-enabled AND its ``allow_<action>`` flag is exactly true."""
    return not airgapped(policy) and isinstance(policy, Mapping) and policy.get(f"allow_{action}") is True


def offline_environment(policy: Mapping[str, Any] | None, *, container: bool = False) -> dict[str, str]:
    """Variables an air-gapped run sets: for a container (TAO's four) or for raypipe's own process
    (those plus the usage-reporting switches of Ray and MLflow). Empty when network-enabled.

    The process variables must be in ``os.environ`` before Ray starts and before MLflow logs
    anything: Ray's head process and MLflow's telemetry read them at start-up.
    """
    if not airgapped(policy):
        return {}
    return dict(OFFLINE_CONTAINER_ENV if container else OFFLINE_PROCESS_ENV)


def policy_summary(policy: Mapping[str, Any]) -> str:
    """One pre-flight line: the mode, where it came from, and what raypipe will and will not do."""
    mode = policy.get("network_mode")
    source = policy.get("activation_source", "?")
    if airgapped(policy):
        env = " ".join(f"{k}={v}" for k, v in OFFLINE_PROCESS_ENV.items())
        return (f"network_mode: airgap (source: {source}): raypipe makes no image pull, no registry login and no "
                f"network call; it runs with {env}")
    pull = "allowed after approval" if allows(policy, "container_pull") else "not allowed"
    login = "allowed after approval" if allows(policy, "registry_login") else "not allowed"
    return f"network_mode: {mode} (source: {source}): image pull {pull}; registry login {login}"
