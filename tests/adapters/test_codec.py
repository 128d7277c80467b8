"""The shared payload decoder: values in, values out, no event loop."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.adapters._codec import (
    Decoder,
    FieldMap,
    JsonObjectStream,
    RecentKeys,
    SseDecoder,
    check_fields,
    with_defaults,
)
from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment
from livecart.plugin import AdapterStats, Option, sample_repr


def dec(**kw: Any) -> Decoder:
    return Decoder(AdapterStats("t"), platform=kw.pop("platform", "p"), room=kw.pop("room", "r"), **kw)


def c(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"id": f"m-{i}", "user": f"u-{i}", "text": f"+{i}", "ts": float(i)}
    d.update(kw)
    return d


def test_one_object_or_an_array() -> None:
    d = dec()
    assert d.decode(orjson.dumps(c(1))) == [Comment("p", "r", "m-1", "u-1", "u-1", "+1", 1.0)]
    assert [x.id for x in d.decode(orjson.dumps([c(2), c(3)]))] == ["m-2", "m-3"]
    assert d.decode(b"[]") == []
    assert d.stats.received == 3


def test_each_kind_of_bad_input_is_counted_under_its_reason_and_reported() -> None:
    d = dec(max_bytes=300)
    rejected: list[tuple[int | None, MalformedInput]] = []
    assert d.decode(b"nope", rejected) == []
    assert d.decode(b"x" * 301, rejected) == []
    assert d.decode(orjson.dumps([c(1), [c(2)], c(3, text=None)]), rejected) == [d.decode_object(c(1))]
    assert d.stats.malformed_by_reason == {"bad_json": 1, "oversized": 1, "not_an_object": 1,
                                           "missing_field": 1}
    assert [(i, e.reason) for i, e in rejected] == [(None, "bad_json"), (None, "oversized"),
                                                    (1, "not_an_object"), (2, "missing_field")]


def test_a_deeply_nested_sample_is_logged_short_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    # logging lets RecursionError through: the repr of a 990-deep list in a log call stopped the adapter.
    d = dec(fields={"text": "content"})
    deep = b"[" * 990 + b"]" * 990
    with caplog.at_level(logging.DEBUG, logger="livecart.adapter"):
        assert d.decode(b"[" + deep + b',{"a":' + deep + b"}]") == []
    assert d.stats.malformed_by_reason == {"not_an_object": 1, "missing_field": 1}
    assert all(len(r.getMessage()) < 600 for r in caplog.records)
    assert sample_repr(b"x" * 1000) == repr(b"x" * 200)
    assert sample_repr(memoryview(b"abc")) == "b'abc'"


def test_field_map_reads_renamed_and_nested_fields() -> None:
    d = dec(fields={"text": "content", "user": "sender.uid", "name": "sender.nick", "id": "msg_id"})
    payload = {"msg_id": 9, "content": "+1", "sender": {"uid": 7, "nick": "ann"}, "ts": 3}
    assert d.decode(orjson.dumps(payload)) == [Comment("p", "r", "9", "7", "ann", "+1", 3.0)]


def test_a_mapped_field_that_is_absent_is_missing_not_read_under_its_own_name() -> None:
    d = dec(fields={"text": "content"})
    assert d.decode(orjson.dumps(c(1))) == []  # has "text" but not "content"
    assert d.stats.malformed_by_reason == {"missing_field": 1}


def test_millisecond_timestamps_are_converted() -> None:
    assert dec(ts_unit="ms").decode(orjson.dumps(c(1, ts=1500)))[0].ts == 1.5


def test_duplicates_pass_through_and_are_counted() -> None:
    d = dec()
    out = [x.id for _ in range(3) for x in d.decode(orjson.dumps(c(1)))]
    assert out == ["m-1"] * 3
    assert d.stats.duplicates == 2


def test_recent_keys_remember_at_least_capacity_keys() -> None:
    r = RecentKeys(4)
    assert [r.seen(k) for k in range(4)] == [False] * 4
    assert all(r.seen(k) for k in range(4))
    for k in range(4, 12):
        r.seen(k)
    assert not r.seen(0)  # long gone
    assert all(r.seen(k) for k in range(8, 12))  # the last `capacity` are always remembered
    assert len(r) <= 8


def test_zero_window_never_reports_a_duplicate() -> None:
    r = RecentKeys(0)
    assert not r.seen("a")
    assert not r.seen("a")


@pytest.mark.parametrize(("fields", "problem"), [
    ({"txt": "a"}, "unknown comment field"),
    ({"text": ""}, "field name or a dotted path"),
    ({"text": "a..b"}, "field name or a dotted path"),
    ("text", "must be a table"),
])
def test_bad_field_maps_are_refused(fields: Any, problem: str) -> None:
    assert problem in (check_fields(fields) or "")
    if isinstance(fields, dict):
        with pytest.raises(FatalAdapterError, match=problem):
            FieldMap(fields)


def test_with_defaults_fills_defaults_and_refuses_missing_or_bad_choices() -> None:
    schema = {"a": Option(int, 3), "b": Option(str, required=True), "m": Option(str, "x", choices=("x", "y"))}
    assert with_defaults(schema, {"b": "hi"}, "t") == {"a": 3, "b": "hi", "m": "x"}
    with pytest.raises(FatalAdapterError, match="'b' is required"):
        with_defaults(schema, {}, "t")
    with pytest.raises(FatalAdapterError, match="'m' must be one of"):
        with_defaults(schema, {"b": "", "m": "z"}, "t")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_no_payload_makes_the_decoder_raise_and_each_is_accounted_for(payload: bytes) -> None:
    d = dec(max_bytes=200)
    out = d.decode(payload)
    assert all(isinstance(x, Comment) for x in out)
    assert d.stats.received == len(out)
    if not out and not d.stats.malformed_total:
        assert orjson.loads(payload) == []  # the one payload that is fine and holds nothing


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["id", "user", "name", "text", "ts", "platform", "room", "x"]), inner, max_size=7),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=8))
def test_every_element_of_an_array_is_either_a_comment_or_one_counted_problem(items: list[Any]) -> None:
    d = dec()
    try:
        payload = orjson.dumps(items)
    except orjson.JSONEncodeError:  # e.g. NaN is fine for orjson, but huge ints are not
        return
    out = d.decode(payload)
    assert len(out) + d.stats.malformed_total == len(items)


def test_recent_keys_forget_lets_a_redelivery_through() -> None:
    r = RecentKeys(8)
    assert r.seen("m-1") is False
    assert r.seen("m-1") is True
    r.forget("m-1")
    assert r.seen("m-1") is False


# --- JsonObjectStream: server-streamed JSON (streamList) ---------------------------------------------------

def test_json_stream_splits_an_array_written_piece_by_piece() -> None:
    raw = b'[{"a": "x}{\\"y"},\n{"b": {"c": [1, {"d": 2}]}}]'
    s = JsonObjectStream()
    got = [obj for i in range(0, len(raw), 3) for obj in s.feed(raw[i:i + 3])]
    assert got == [{"a": 'x}{"y'}, {"b": {"c": [1, {"d": 2}]}}]


def test_json_stream_takes_back_to_back_objects_and_refuses_junk() -> None:
    assert JsonObjectStream().feed(b'{"a":1}\n{"b":2}') == [{"a": 1}, {"b": 2}]
    with pytest.raises(MalformedInput, match="bad_json"):
        JsonObjectStream().feed(b'{"a":1} nope')
    with pytest.raises(MalformedInput, match="oversized"):
        JsonObjectStream(max_bytes=8).feed(b'{"a": "0123456789"}')


# --- the stream parsers do not care where the network cuts the bytes --------------------------------------

_SSE = (b": keep-alive\r\n\r\nid: 1\r\ndata: {\"a\": \"x\\ny\"}\r\n\r\nevent: e\ndata: 1\ndata: 2\n\n"
        b"retry: 500\rdata: \xe4\xb8\xad\r\rdata: last\n\n")
_JSON = b'[{"id": "a", "t": "}{\\"[]"},\n {"id": "b", "n": {"x": [1, {"y": 2}]}}, {"id": "\xe4\xb8\xad"}]'


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(_SSE)), max_size=12))
def test_sse_events_are_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    whole = SseDecoder().feed(_SSE)
    d = SseDecoder()
    points = [0, *sorted(cuts), len(_SSE)]
    pieces = [ev for a, b in zip(points, points[1:], strict=False) for ev in d.feed(_SSE[a:b])]
    assert pieces == whole
    assert [e.data for e in whole] == ['{"a": "x\\ny"}', "1\n2", "中", "last"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(_JSON)), max_size=12))
def test_json_objects_are_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    s = JsonObjectStream()
    points = [0, *sorted(cuts), len(_JSON)]
    got = [o for a, b in zip(points, points[1:], strict=False) for o in s.feed(_JSON[a:b])]
    assert [o["id"] for o in got] == ["a", "b", "中"]


def test_a_cut_emoji_is_kept_through_a_field_map_too() -> None:
    d = dec(fields={"text": "content"})
    got = d.decode(b'{"id": "1", "user": "u", "ts": 1, "content": "\\u9e21\\u86cb \\ud83d"}')
    assert [x.text for x in got] == ["\u9e21\u86cb \ufffd"]
    assert d.stats.malformed_total == 0


def test_plugins_have_a_public_name_for_the_decoder() -> None:
    """docs/writing-an-adapter.md sends plugin authors to livecart.adapters.codec, not the private module."""
    from livecart.adapters import codec
    from livecart.plugin import AdapterStats

    stats = AdapterStats("mine")
    d = codec.Decoder(stats, platform="myplatform", room="r1", fields={"text": "content"})
    got = d.decode(b'[{"id": "1", "user": "u", "content": "+1", "ts": 1700000000}, 7, {"id": "2"}]')
    assert [(c.platform, c.room, c.id, c.text) for c in got] == [("myplatform", "r1", "1", "+1")]
    assert stats.received == 1
    assert stats.malformed_total == 2
    assert set(codec.__all__) == {"DEFAULT_MAX_BYTES", "TS_UNITS", "Decoder", "FieldMap"}
