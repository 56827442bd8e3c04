"""Splitting SqliteSaver rows into PostgresSaver rows without touching application objects."""

from __future__ import annotations

import json
import math

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langchain_core.messages import AIMessage, HumanMessage

from include.checkpoint_core.migration.transcode import (
    Rejected,
    parse_metadata,
    transcode_checkpoint,
    transcode_store_item,
    transcode_write,
)

SERDE = JsonPlusSerializer()


def _checkpoint(values: dict, versions: dict | None = None) -> dict:
    return {"v": 4, "ts": "2025-01-01T00:00:00+00:00", "id": "1f0-id", "channel_values": values,
            "channel_versions": versions or {k: f"{i + 1:032}.0.5" for i, k in enumerate(values)},
            "versions_seen": {"__input__": {}}, "updated_channels": list(values)}


def _row(values: dict, metadata='{"step": 1}', versions=None):
    type_, blob = SERDE.dumps_typed(_checkpoint(values, versions))
    return ("t1", "", "1f0-id", None, type_, blob, metadata)


def test_primitives_inline_objects_as_blobs_with_exact_bytes():
    messages = [HumanMessage(content="hi", id="h1"), AIMessage(content="", id="a1", tool_calls=[{"name": "x", "args": {}, "id": "c"}])]
    values = {"messages": messages, "count": 3, "name": "alice", "flag": True, "nothing": None, "ratio": 0.25,
              "tags": {"a", "b"}, "raw": b"\x00\x01"}
    cp = transcode_checkpoint(*_row(values))
    doc = json.loads(cp.checkpoint_json)
    assert doc["channel_values"] == {"count": 3, "name": "alice", "flag": True, "nothing": None, "ratio": 0.25}
    blobs = {b[0]: b for b in cp.blobs}
    assert set(blobs) == {"messages", "tags", "raw"}
    # each blob is byte-for-byte what PostgresSaver's serializer writes for that value
    assert blobs["messages"][2:] == SERDE.dumps_typed(messages)
    assert blobs["raw"][2:] == ("bytes", b"\x00\x01") == SERDE.dumps_typed(b"\x00\x01")
    assert SERDE.loads_typed(blobs["tags"][2:]) == {"a", "b"}
    assert blobs["messages"][1] == _checkpoint(values)["channel_versions"]["messages"]
    assert doc["channel_versions"] and doc["versions_seen"] == {"__input__": {}}


def test_values_jsonb_cannot_hold_stay_faithful_as_blobs():
    cp = transcode_checkpoint(*_row({"nul": "a\x00b", "nan": math.nan, "inf": math.inf, "ok": "fine"}))
    doc = json.loads(cp.checkpoint_json)
    assert doc["channel_values"] == {"ok": "fine"}
    loaded = {b[0]: SERDE.loads_typed(b[2:]) for b in cp.blobs}
    assert loaded["nul"] == "a\x00b" and math.isnan(loaded["nan"]) and loaded["inf"] == math.inf


def test_delta_snapshot_gets_the_inline_marker():
    cp = transcode_checkpoint(*_row({"history": _DeltaSnapshot(["a", "b"])}))
    assert json.loads(cp.checkpoint_json)["channel_values"] == {"history": True}
    assert isinstance(SERDE.loads_typed(cp.blobs[0][2:]), _DeltaSnapshot)


@pytest.mark.parametrize(
    "metadata, words",
    [
        ('{"user": "a\\u0000b"}', "NUL"),
        ('{"score": NaN}', "NaN"),
        ('not json', "not valid JSON"),
        ('[1, 2]', "not a JSON object"),
    ],
)
def test_metadata_postgres_cannot_hold_is_rejected(metadata, words):
    with pytest.raises(Rejected, match=words):
        transcode_checkpoint(*_row({"x": 1}, metadata=metadata))


def test_old_metadata_as_json_bytes():
    assert parse_metadata(b'{"source": "loop", "step": 2}') == {"source": "loop", "step": 2}
    assert parse_metadata(None) == {}


def test_json_typed_checkpoints_from_old_releases():
    doc = _checkpoint({"messages": [{"lc": 1, "type": "constructor", "id": ["x"], "kwargs": {}}], "n": 1})
    cp = transcode_checkpoint("t", "", "c", None, "json", json.dumps(doc).encode(), "{}")
    assert json.loads(cp.checkpoint_json)["channel_values"] == {"n": 1}
    assert cp.blobs[0][2] == "json" and json.loads(cp.blobs[0][3]) == doc["channel_values"]["messages"]


@pytest.mark.parametrize("type_", ["pickle", "msgpack+aes", None])
def test_checkpoints_that_need_the_apps_code_are_rejected(type_):
    with pytest.raises(Rejected, match="serialised as"):
        transcode_checkpoint("t", "", "c", None, type_, b"\x80\x04", "{}")


def test_value_without_version_is_rejected():
    with pytest.raises(Rejected, match="no version"):
        transcode_checkpoint(*_row({"messages": [1, 2]}, versions={"other": "1"}))


def test_nul_in_ids_is_rejected():
    type_, blob = SERDE.dumps_typed(_checkpoint({"x": 1}))
    with pytest.raises(Rejected, match="thread_id"):
        transcode_checkpoint("t\x00", "", "c", None, type_, blob, "{}")


def test_writes_keep_task_path_idx_and_bytes():
    row = ("t", "", "c", "task", "~__pregel_pull, node", -3, "__interrupt__", "msgpack", b"\x91\x01")
    assert transcode_write(row) == row
    assert transcode_write(("t", "", "c", "task", "", 0, "x", "null", None))[-1] == b""
    with pytest.raises(Rejected, match="NULL"):
        transcode_write(("t", "", "c", "task", "", 0, "x", "msgpack", None))
    with pytest.raises(Rejected, match="channel"):
        transcode_write(("t", "", "c", "task", "", 0, "x\x00", "msgpack", b""))


def test_store_items():
    item = transcode_store_item({"prefix": "memories.u1", "key": "k", "value": '{"a": 1}', "created_at": "2025-01-01 00:00:00"})
    assert item[:3] == ("memories.u1", "k", '{"a":1}')
    with pytest.raises(Rejected, match="NUL"):
        transcode_store_item({"prefix": "p", "key": "k", "value": '{"a": "\\u0000"}'})


def test_floats_jsonb_would_change_stay_blobs_and_versions_match_postgres_text():
    values = {"big": 1e300, "huge_int_like": 1.2345678901234567e20, "tiny": 1e-05, "plain": 2.5}
    cp = transcode_checkpoint(*_row(values, versions={"big": 1e16, "huge_int_like": 2, "tiny": 1e-05, "plain": "3"}))
    assert json.loads(cp.checkpoint_json)["channel_values"] == {"plain": 2.5}
    versions = {b[0]: b[1] for b in cp.blobs}
    # as PostgreSQL's jsonb_each_text prints these numbers, which is what PostgresSaver joins on
    assert versions == {"big": "10000000000000000", "huge_int_like": "2", "tiny": "0.00001"}


def test_old_checkpoints_pending_sends_and_metadata_writes():
    doc = _checkpoint({"x": 1})
    doc["v"] = 1
    doc["pending_sends"] = [{"lc": 2, "type": "constructor", "id": ["langgraph", "types", "Send"], "kwargs": {}}]
    cp = transcode_checkpoint("t", "", "c", None, "json", json.dumps(doc).encode(),
                              '{"source": "loop", "step": 3, "writes": {"node": {"x": 1}}}')
    assert json.loads(cp.checkpoint_json)["pending_sends"] == [], "rebuilt from the parent's TASKS writes, as PostgresSaver does"
    assert json.loads(cp.metadata_json) == {"source": "loop", "step": 3}


def test_lone_surrogates_from_old_json_checkpoints():
    doc = _checkpoint({"text": "placeholder"})
    raw = json.dumps(doc).replace("placeholder", "broken \\ud83d emoji").encode()
    cp = transcode_checkpoint("t", "", "c", None, "json", raw, "{}")
    assert json.loads(cp.checkpoint_json)["channel_values"] == {}
    assert json.loads(cp.blobs[0][3]) == "broken \ud83d emoji"
    with pytest.raises(Rejected, match="surrogate"):
        transcode_checkpoint("t", "", "c", None, "json", json.dumps(_checkpoint({"x": 1})).encode(), '{"note": "\\ud83d"}')
