"""What the JetStream journal (livecart.store.jsstore) does beyond the contract suite: messages cut in parts,
reading a tail by bisection, snapshots in chunks, and a second writer fenced out."""

from __future__ import annotations

import pytest

from livecart.core.errors import JournalError
from livecart.store import jetstream, jsstore
from livecart.store.jsstore import JetStreamStore
from tests.store.conftest import Opener
from tests.store.test_contract import CAT, decided, norm

KW = {"catalogue": CAT, "hold_seconds": 60.0, "featured": "egg", "clock": lambda: 100.0}


@pytest.fixture
def open_js(request: pytest.FixtureRequest, tmp_path: object) -> Opener:
    from tests.store.conftest import _jetstream
    return _jetstream(request, tmp_path)  # type: ignore[arg-type]


async def test_a_long_append_is_cut_in_messages_and_any_tail_reads_back(open_js: Opener,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsstore, "MESSAGE_BYTES", 300)  # a few entries per message
    s = await open_js(**KW)
    assert isinstance(s, JetStreamStore)
    led, rows = decided(40)
    await s.append(rows[:25])
    for r in rows[25:]:
        s.append([r])
    await s.flush()
    info = await s.js.stream_info(s.names.stream)
    assert info.state.messages > 20  # cut in parts: the bisection has something to search
    for after in (0, 1, 7, 24, 25, 31, 39, 40):
        assert [e[0] for e in await s.entries(after=after)] == list(range(after + 1, 41))
    await s.close()
    again = await open_js(**KW)
    assert again.last_seq == 40
    assert (await again.rebuild()).snapshot() == led.snapshot()
    await again.close()


async def test_a_snapshot_bigger_than_a_value_is_stored_in_chunks(open_js: Opener,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream, "SNAPSHOT_CHUNK", 100)
    s = await open_js(**KW)
    assert isinstance(s, JetStreamStore)
    led, rows = decided(35)
    await s.append(rows[:30])
    assert s.checkpoint(30, decided(30)[0].state())
    await s.close()
    again = await open_js(**KW)
    assert isinstance(again, JetStreamStore)
    info = await again.snapshots.info()
    assert info is not None
    assert info.seq == 30
    assert info.chunks > 3
    assert norm((await again.rebuild()).state()) == norm(decided(30)[0].state())
    assert again.rebuilt_from == (30, 0)
    # A newer snapshot replaces it, and the older one's chunks are purged.
    await again.append(rows[30:])
    assert again.checkpoint(35, led.state())
    await again.flush()
    await again.close()
    third = await open_js(**KW)
    assert isinstance(third, JetStreamStore)
    newer = await third.snapshots.info()
    assert newer is not None
    assert newer.seq == 35
    assert newer.id != info.id
    keys = set(await third.kv.keys())
    assert not any(k.startswith(f"snap.{info.id}.") for k in keys)
    assert any(k.startswith(f"snap.{newer.id}.") for k in keys)
    assert norm((await third.rebuild()).state()) == norm(led.state())
    await third.close()


async def test_a_second_writer_fences_the_first_out(open_js: Opener) -> None:
    first = await open_js(**KW)
    _, rows = decided(6)
    await first.append(rows[:3])
    second = await open_js(**KW)  # another process took the journal over (it sees entries 1-3)
    assert second.last_seq == 3
    await second.append(rows[3:4])
    with pytest.raises(JournalError, match="another process"):
        await first.append(rows[4:5])
    with pytest.raises(JournalError, match="failed earlier"):
        await first.append(rows[5:])
    await first.close()
    await second.close()
