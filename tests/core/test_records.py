"""livecart.core.records: outcomes and comments are frozen msgspec structs that behave as records should."""

from __future__ import annotations

import gc
import pickle

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecart.core.errors import MalformedInput
from livecart.core.records import (
    Comment,
    CommentDecoder,
    Outcome,
    Reason,
    Status,
    comment_problem,
    make_outcome,
    stable_comment_id,
)

_opt_text = st.none() | st.text(max_size=12)
_fields = st.tuples(_opt_text, st.text(max_size=12), _opt_text, _opt_text, _opt_text, st.integers(),
                    st.sampled_from(Status), st.none() | st.sampled_from(Reason), st.none() | st.integers(),
                    _opt_text, _opt_text, st.floats(allow_nan=False), st.none() | st.integers())


@given(_fields)
def test_make_outcome_equals_the_constructor(fields: tuple[object, ...]) -> None:
    made = make_outcome(*fields)  # type: ignore[arg-type]
    built = Outcome(*fields)  # type: ignore[arg-type]
    assert type(made) is Outcome
    assert made == built
    assert hash(made) == hash(built)
    assert made.to_dict() == built.to_dict()
    assert msgspec.structs.astuple(made) == fields


def test_outcome_is_frozen_untracked_and_works_with_struct_tools() -> None:
    o = make_outcome("m-1", "u-1", "o-000001", "egg", None, 2, Status.RESERVED, None, None, "douyin", "7312",
                     1.5, 7)
    with pytest.raises(AttributeError):
        o.qty = 3  # type: ignore[misc]
    assert msgspec.structs.replace(o, qty=1).qty == 1
    assert not gc.is_tracked(o)  # the ledger makes one per item of every buy: the collector never scans them
    assert pickle.loads(pickle.dumps(o)) == o
    assert repr(o).startswith("Outcome(comment='m-1', user='u-1', order='o-000001'")


_line = {"platform": "douyin", "room": "7312", "id": "m-1", "user": "u-1", "name": "张三", "text": "要2",
         "ts": 1584250000.5}


def _decode(payload: bytes, **where: str) -> tuple[list[Comment], list[tuple[int | None, str]]]:
    out: list[Comment] = []
    bad: list[tuple[int | None, MalformedInput]] = []
    CommentDecoder(**where).decode(payload, out, bad)
    return out, [(i, e.reason) for i, e in bad]


def test_a_complete_line_decodes_straight_into_an_untracked_comment() -> None:
    out, bad = _decode(orjson.dumps(_line))
    assert out == [Comment("douyin", "7312", "m-1", "u-1", "张三", "要2", 1584250000.5)]
    assert bad == []
    assert not gc.is_tracked(out[0])


def test_gaps_are_filled_as_the_contract_says() -> None:
    bare = {"user": 42, "text": "+1", "ts": 7, "room": 9}
    out, bad = _decode(orjson.dumps(bare), platform="bilibili", room="ignored")
    assert bad == []
    c = out[0]
    assert (c.platform, c.room, c.user, c.name, c.ts) == ("bilibili", "9", "42", "42", 7.0)
    assert c.id == stable_comment_id("bilibili", "9", "42", 7.0, "+1")
    assert c == Comment.from_mapping(bare, platform="bilibili", room="ignored")


def test_an_empty_display_name_is_the_user_id_not_a_dropped_comment() -> None:
    # Platforms send "" for a viewer who set no nickname: the comment (a buy, often) must not be dropped.
    one = {**_line, "name": ""}
    out, bad = _decode(orjson.dumps(one))
    assert bad == []
    assert out[0].name == "u-1"
    out, bad = _decode(orjson.dumps([one, {**_line, "id": "m-2", "user": 7, "name": ""}]))
    assert bad == []
    assert [c.name for c in out] == ["u-1", "7"]
    assert Comment.from_mapping(one).name == "u-1"


def test_every_bad_element_is_named_and_the_good_ones_kept() -> None:
    payload = orjson.dumps([_line, 3, {**_line, "ts": True}, {**_line, "id": [1]}, {**_line, "text": "x" * 2001},
                            {"text": "no user", "ts": 1}, {**_line, "id": "m-2"}])
    out, bad = _decode(payload)
    assert [c.id for c in out] == ["m-1", "m-2"]
    assert bad == [(1, "not_an_object"), (2, "bad_field"), (3, "bad_field"), (4, "oversized"),
                   (5, "missing_field")]  # mistyped: bad_field; absent: missing_field
    assert _decode(b'{"text": ')[1] == [(None, "bad_json")]
    assert _decode(b'{"text": "\xff", "ts": 1}')[1] == [(None, "bad_json")]
    assert _decode(orjson.dumps({"text": "a", "ts": 1, "user": "u"}))[1] == [(None, "missing_field")]


def _at_depth(frames: int, decoder: CommentDecoder, payload: bytes) -> tuple[list[str], list[tuple[int | None, str]]]:
    """``decoder`` run on ``payload`` with ``frames`` more Python frames on the stack (a daemon's stack is
    deeper than a test's): the ids decoded and the problems found."""
    if frames > 0:
        return _at_depth(frames - 1, decoder, payload)
    out: list[Comment] = []
    bad: list[tuple[int | None, MalformedInput]] = []
    decoder.decode(payload, out, bad)
    return [c.id for c in out], [(i, e.reason) for i, e in bad]


@pytest.mark.parametrize("frames", [0, 200, 600])
def test_deep_nesting_is_bad_input_at_any_stack_depth_and_the_good_elements_are_kept(frames: int) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    line = orjson.dumps(_line)
    arrays = CommentDecoder()  # one that has seen a feed of arrays, so it tries list[Comment] first
    assert _at_depth(0, arrays, orjson.dumps([_line])) == (["m-1"], [])
    for decoder in (CommentDecoder(), arrays):
        assert _at_depth(frames, decoder, b"[" + line + b"," + deep + b"]") == (["m-1"], [(1, "not_an_object")])
        assert _at_depth(frames, decoder, b"[" * 5000 + b"]" * 5000) == ([], [(None, "bad_json")])
        assert _at_depth(frames, decoder, deep)[1] == [(0, "not_an_object")]


def test_a_bad_field_says_which_and_what_it_must_be() -> None:
    with pytest.raises(MalformedInput, match=r"'ts' must be a finite number .*got `str` - at `\$\.ts`"):
        Comment.from_mapping({**_line, "ts": "noon"})
    with pytest.raises(MalformedInput, match="'ts' must be a finite number"):
        Comment.from_mapping({**_line, "ts": float("nan")})
    with pytest.raises(MalformedInput, match="'user' must be a non-empty string"):
        Comment.from_mapping({**_line, "user": ""})


def test_a_feed_of_incomplete_objects_stops_being_decoded_twice() -> None:
    dec = CommentDecoder(platform="mqtt", room="r")
    out: list[Comment] = []
    bad: list[tuple[int | None, MalformedInput]] = []
    for i in range(20):
        dec.decode(orjson.dumps({"id": f"m-{i}", "user": "u", "text": "+1", "ts": i}), out, bad)
    assert "lenient" in repr(dec)
    dec.decode(orjson.dumps(_line), out, bad)  # a complete one still decodes, through the lenient path
    assert [c.id for c in out] == [f"m-{i}" for i in range(20)] + ["m-1"]
    assert out[-1] == Comment("douyin", "7312", "m-1", "u-1", "张三", "要2", 1584250000.5)
    assert bad == []


def test_a_feed_of_arrays_decodes_each_array_whole_with_the_same_comments_as_the_lenient_path() -> None:
    """After the first array, an array of complete comments is decoded in one msgspec call; what it gives is
    exactly what the per-element path gives, and an array that does not fit still goes element by element
    (gaps filled, bad elements named, the good ones kept)."""
    dec = CommentDecoder(platform="mqtt", room="r")
    out: list[Comment] = []
    bad: list[tuple[int | None, MalformedInput]] = []
    frames = [[{**_line, "id": f"m-{k}-{i}", "text": f"要{i}"} for i in range(3)] for k in range(4)]
    for f in frames:
        dec.decode(orjson.dumps(f), out, bad)
    assert dec._arrays  # the first array switched the decoder to whole arrays
    lenient = []
    for f in frames:
        for obj in f:
            lenient.append(Comment.from_mapping(obj, platform="mqtt", room="r"))
    assert out == lenient
    assert all(not gc.is_tracked(c) for c in out)
    # An array with gaps and a bad element: the whole-array decode refuses it; the lenient path keeps the rest.
    out.clear()
    dec.decode(orjson.dumps([{**_line, "id": ""}, {"user": 7, "text": "+1", "ts": 1}, 3, {**_line, "id": "m-9"}]),
               out, bad)
    assert [c.id for c in out][2:] == ["m-9"]
    assert out[0].id == stable_comment_id("douyin", "7312", "u-1", 1584250000.5, "要2")
    assert (out[1].platform, out[1].room, out[1].user) == ("mqtt", "r", "7")
    assert [(i, e.reason) for i, e in bad] == [(2, "not_an_object")]


def test_a_feed_whose_arrays_never_fit_stops_trying_them_whole() -> None:
    from livecart.core.records import STRICT_MISSES

    dec = CommentDecoder(platform="mqtt", room="r")
    out: list[Comment] = []
    bad: list[tuple[int | None, MalformedInput]] = []
    for k in range(STRICT_MISSES + 2):
        dec.decode(orjson.dumps([{"user": 1, "text": "+1", "ts": k, "id": f"m-{k}"}]), out, bad)
    assert not dec._arrays
    assert [c.id for c in out] == [f"m-{k}" for k in range(STRICT_MISSES + 2)]
    assert bad == []


def test_comment_problem_names_what_a_hand_built_comment_got_wrong() -> None:
    good = Comment("douyin", "7312", "m-1", "u", "n", "要2", 1.0)
    assert comment_problem(good) is None
    assert comment_problem(msgspec.structs.replace(good, ts=3)) is None
    cases = {"text": None, "ts": float("nan"), "user": "", "id": 5, "room": "r" * 257, "name": None}
    for field, value in cases.items():
        problem = comment_problem(msgspec.structs.replace(good, **{field: value}))
        assert f"'{field}'" in str(problem), (field, problem)
    assert comment_problem(msgspec.structs.replace(good, ts=True)) is not None
    assert comment_problem(good.to_dict()) == "expected a Comment, got dict"


def test_an_emoji_cut_in_two_keeps_the_comment_with_a_replacement_character() -> None:
    # Found from outside: a text ending in half an emoji ("\ud83d") made the whole comment bad_json.
    line = orjson.dumps({**_line, "text": "PLACEHOLDER"})
    cases = {b"\\ud83d": "\ufffd", b"a\\ud83d\\ude00b\\ude00": "a\U0001f600b\ufffd", b"\\uDBFF x": "\ufffd x"}
    for escaped, text in cases.items():
        out, bad = _decode(line.replace(b"PLACEHOLDER", escaped))
        assert bad == []
        assert [c.text for c in out] == [text]
    assert _decode(b'{"text": "\\ud83d')[1] == [(None, "bad_json")]  # still not JSON: refused


def test_comment_problem_says_what_was_got() -> None:
    good = Comment("douyin", "7312", "m-1", "u", "n", "要2", 1.0)
    assert str(comment_problem(msgspec.structs.replace(good, user=""))).endswith("got an empty string")
    assert str(comment_problem(msgspec.structs.replace(good, text="x" * 5000))).endswith("got 5,000 characters")
    assert str(comment_problem(msgspec.structs.replace(good, text=b"x"))).endswith("got bytes")
