from __future__ import annotations

import json
import os
import stat

from raypipe._io import append_jsonl, atomic_write_json, read_json, read_jsonl


def test_atomic_write_keeps_normal_permissions_and_replaces_whole(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert read_json(path) == {"b": 2}
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_read_jsonl_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"seq": 1})
    with open(path, "a") as fh:
        fh.write(json.dumps({"seq": 2})[:5])  # a kill mid-write
    assert read_jsonl(path) == [{"seq": 1}]
