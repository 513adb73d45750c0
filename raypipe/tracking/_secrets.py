"""The secrets guard: nothing that looks like a credential reaches the tracking store.

Every param, tag, metric key, run name, dataset field and artifact file passes through here.
No credential and no value of a credential-like environment variable is ever logged. Two rules:

1. a key whose name looks like a credential (``NGC_KEY``, ``HF_TOKEN``, ``*_TOKEN``, ``*_KEY``,
   ``*PASSWORD*``, ``*SECRET*``) is refused, whatever its value;
2. a value that equals, or contains, the value of a credential-like environment variable is
   refused.

Refused entries are dropped (keys) or replaced by a marker naming the variable (values), and a
warning names the key and the variable — never the value. The environment is read at each call,
so a Ray worker checks against its own environment.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: Variables that are credentials whatever their name pattern says.
KNOWN_CREDENTIAL_VARS = frozenset(
    {
        "NGC_KEY",
        "NGC_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "WANDB_API_KEY",
        "GITHUB_TOKEN",
        "DOCKER_PASSWORD",
        "AZURE_STORAGE_CONNECTION_STRING",
        "GOOGLE_APPLICATION_CREDENTIALS",
    }
)

# On the LAST dotted component of a key, case-insensitive. "raypipe.key" is not a credential
# (a bare "key" has no prefix); "tao.ngc_key" or "hub.api_token" are.
_CREDENTIAL_NAME = re.compile(r"^(?:.+_key|.+_token|.*password.*|.*passwd.*|.*secret.*)$", re.IGNORECASE)

# Shorter "secrets" are not real credentials, and substring-matching them (an env var set to
# "1" or "true") would redact every ordinary value.
MIN_SECRET_LENGTH = 6

REDACTED = "<redacted>"


def is_credential_name(key: str) -> bool:
    """True when a param/tag/metric key or env var name looks like a credential."""
    last = re.split(r"[./]", str(key))[-1]
    return last.upper() in KNOWN_CREDENTIAL_VARS or bool(_CREDENTIAL_NAME.match(last))


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{value: VAR_NAME}`` of every credential-like environment variable that is set."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name, value in env.items():
        if not value or len(value) < MIN_SECRET_LENGTH or not is_credential_name(name):
            continue
        if os.path.isabs(value) and os.path.exists(value):
            # e.g. SSH_KEY=/home/u/.ssh/id_rsa: a path to a key file, not the key. Treating it as
            # a secret would redact every logged path under that directory.
            continue
        out.setdefault(value, name)
    return out


def leaked_variable(text: str, secrets: Mapping[str, str]) -> str | None:
    """Name of the env variable whose value occurs in ``text``, else None."""
    for value, name in secrets.items():
        if value in text:
            return name
    return None


def guard_mapping(items: Mapping[str, str], what: str, secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """Filter string key→value pairs (params or tags) before they are logged."""
    secrets = secret_values() if secrets is None else secrets
    out: dict[str, str] = {}
    for key, value in items.items():
        if is_credential_name(key):
            log.warning("tracking: %s %r not logged (credential-like name)", what, key)
            continue
        if leaked_variable(key, secrets):
            log.warning("tracking: a %s key containing a credential value was not logged", what)
            continue
        var = leaked_variable(value, secrets)
        if var is not None:
            log.warning("tracking: %s %r not logged: it contains the value of $%s", what, key, var)
            value = f"{REDACTED} (contains ${var})"
        out[key] = value
    return out


def guard_keys(keys: Iterable[str], what: str, secrets: Mapping[str, str] | None = None) -> set[str]:
    """The subset of metric keys that may be logged."""
    secrets = secret_values() if secrets is None else secrets
    ok: set[str] = set()
    for key in keys:
        if is_credential_name(key) or leaked_variable(key, secrets):
            log.warning("tracking: %s key refused (credential-like)", what)
            continue
        ok.add(key)
    return ok


def guard_text(text: str, what: str, secrets: Mapping[str, str] | None = None) -> str:
    """A free-text field (run name, dataset name/source): the marker when it holds a secret."""
    secrets = secret_values() if secrets is None else secrets
    var = leaked_variable(text, secrets)
    if var is None:
        return text
    log.warning("tracking: %s not logged as is: it contains the value of $%s", what, var)
    return f"{REDACTED} (contains ${var})"


def file_leaks(path: Path, secrets: Mapping[str, str] | None = None, chunk: int = 1 << 22) -> str | None:
    """Name of the env variable whose value occurs in the file (or any file under a dir), else None.

    Streams the bytes with an overlap so a value split across chunk borders is still found;
    checkpoints of a few hundred MB scan at disk speed.
    """
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return None
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    needles = [(v.encode("utf-8"), n) for v, n in secrets.items()]
    overlap = max(len(n) for n, _ in needles) - 1
    for f in files:
        tail = b""
        with open(f, "rb") as fh:
            while True:
                block = fh.read(chunk)
                if not block:
                    break
                window = tail + block
                for needle, name in needles:
                    if needle in window:
                        return name
                tail = window[-overlap:] if overlap > 0 else b""
    return None
