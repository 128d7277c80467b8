"""Bounded memory of the comment keys seen (docs/journal-and-durability.md, "Duplicate comments").

No I/O, no clock: values in, answers out. The ledger asks it whether a comment key ``(platform, room, id)``
has been processed before; the answer is exact at any age, with memory that does not grow with every key:

* **The window.** The last ``recent`` keys, exactly, in per-room sets (a re-delivery by a platform is nearly
  always of recent comments, and is answered here at the cost of one set lookup). A ring remembers their
  order; the oldest key leaves the window when a new one arrives.
* **The filter.** Every key that has left the window is added to a blocked Bloom filter (one 64-bit word
  per key, six bits set in it: ~2 bytes per key). A key the filter does not hold was never seen: that is
  the answer for nearly every new comment, with no I/O. A key it holds *may* have been seen (a real old
  duplicate, or a false positive, a fraction of a percent of new keys).
* **Confirmation.** A "maybe" is confirmed exactly: against the keys that left the window since the last
  full chunk (``chunk`` keys, in memory), against the chunks handed to the store and not yet indexed (in
  memory until :meth:`indexed`), and finally through ``lookup`` (a callable the store provides; it reads the
  journal's index of older chunks). Only a key found there is a duplicate: a false positive never drops a
  new comment. Without a ``lookup`` (a bare ledger, a replay) an unconfirmed "maybe" counts as new.

Everything here is deterministic: the same keys in the same order give the same state, the same chunk
boundaries (a chunk is the keys of ``chunk`` consecutive comment events, so the store can rebuild a chunk
it lost in a crash from the journal's entries between ``first`` and ``last``) and the same snapshot.
"""

from __future__ import annotations

import base64
import zlib
from array import array
from collections.abc import Callable, Iterator
from typing import Any

#: Keys per chunk of the store's index (and the most keys kept exactly in memory beyond the window).
CHUNK = 65_536
#: Keys that leave the window together: it holds the last ``recent`` to ``recent + EVICT`` keys, and the
#: oldest ``EVICT`` leave in one pass (cheaper than one at a time on every new key).
EVICT = 4_096
#: Keys the first filter segment is sized for; each further segment is twice the one before.
SEGMENT0 = 2_000_000
#: 64-bit words per key of a segment's capacity, as a power of two: 1/4, i.e. 16 bits per key.
_WORDS_SHIFT = 2
#: How many masks (6 bits each) the second half of a key's hash picks from.
_MASK_BITS = 12


def _masks() -> list[int]:
    """4,096 masks of six distinct bits in a 64-bit word, from a fixed generator (splitmix64): a filter
    written by one livecart reads the same in the next. Each 64-bit output gives ten 6-bit bit numbers."""
    out: list[int] = []
    x = 0x9E3779B97F4A7C15
    m64 = (1 << 64) - 1
    mask = bits = 0
    while len(out) < 1 << _MASK_BITS:
        x = (x + 0x9E3779B97F4A7C15) & m64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        z ^= z >> 31
        for _ in range(10):
            bit = 1 << (z & 63)
            z >>= 6
            if not mask & bit:
                mask |= bit
                bits += 1
                if bits == 6:
                    out.append(mask)
                    mask = bits = 0
    return out


#: Filled by the first :class:`Dedupe` (a ``report`` that only restores a snapshot never needs them).
_MASKS: list[int] = []
_HIGH = 32 - _MASK_BITS


def escape(s: str) -> str:
    """A key part with ``\\``, NUL, ``\\n`` and ``\\x1f`` escaped: joined by ``\\x1f`` into a key, and keys by
    ``\\n`` into an index row, keys never run into each other."""
    if "\\" in s or not s.isprintable():  # NUL, 0x1f and a newline are not printable
        return s.replace("\\", "\\\\").replace("\x00", "\\0").replace("\x1f", "\\u").replace("\n", "\\n")
    return s


def key_text(platform: str, room: str, cid: str) -> str:
    """The one-string form of a comment key, as the store's index holds it."""
    return f"{escape(platform)}\x1f{escape(room)}\x1f{escape(cid)}"


def key_hash(platform: str, room: str, cid: str) -> int:
    """A comment key's 32-bit hash (CRC-32 of its :func:`key_text`'s room prefix, then of the id): what the
    filter and the store's index buckets use. The same in every process and every livecart version."""
    prefix = f"{escape(platform)}\x1f{escape(room)}\x1f"
    return zlib.crc32(_utf8(cid), zlib.crc32(_utf8(prefix)))


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


class Dedupe:
    """The seen-keys memory of one ledger. See the module docstring."""

    def __init__(self, recent: int, *, chunk: int = 0, segment: int = 0) -> None:
        if recent < 1:
            raise ValueError(f"recent must be 1 or more, got {recent}")
        if not _MASKS:
            _MASKS.extend(_masks())
        self.recent = recent
        self.chunk = chunk or CHUNK  # 0: the module's (read at each call, so a test can make it small)
        self.segment = segment or SEGMENT0
        #: Every key in memory, per room: (platform, room) -> ids; each room's index into :attr:`rooms`.
        self.sets: dict[tuple[str, str], set[str]] = {}
        self.room_index: dict[tuple[str, str], int] = {}
        self.rooms: list[tuple[str, str]] = []
        self.prefixes: list[str] = []  # escaped "platform\x1froom\x1f" per room
        self._room_crc: list[int] = []  # CRC-32 of that prefix: a key's hash starts from it
        self._room_sets: list[set[str]] = []
        # The keys in memory in arrival order: id, room, seq of its comment event, hash (0 while the filter
        # is empty). The first ``_infilter`` of them have left the window (they are in the filter too, and
        # make up the chunk being filled); the rest are the window.
        self._ids: list[str] = []
        self._rms: list[int] = []
        self._seqs = array("q")
        self._hashes = array("Q")
        self._infilter = 0
        self._evict = EVICT if recent >= EVICT else 1
        self._limit = recent + self._evict
        #: Keys that have left the window (all of them are in the filter).
        self.spilled = 0
        #: Every full chunk: its first and last comment event (its number is its place in this list).
        self.chunks: list[tuple[int, int]] = []
        #: Full chunks still held here until the store has indexed them (number -> ids, rooms), and the
        #: numbers not yet handed to the store (see :meth:`take_fresh`).
        self.handoff: dict[int, tuple[list[str], list[int], array[int]]] = {}
        self.fresh: list[int] = []
        #: Whether full chunks are held for the store (a replay lets them go: the store rebuilds any it lacks).
        self.keep = False
        # The filter: segments (64-bit words, a power of two each), the keys each holds and is sized for.
        self._segs: list[array[int]] = []
        self._seg_n: list[int] = []
        self._seg_cap: list[int] = []
        #: Confirms a "maybe": whether the store's index holds this key (:func:`key_text`, :func:`key_hash`).
        #: None: no store.
        self.lookup: Callable[[str, int], bool] | None = None
        self._h = 0  # the hash of the key being confirmed
        #: Counters: "maybe" answers of the filter, and how many of them were old duplicates.
        self.maybes = 0
        self.old_dupes = 0

    # ------------------------------------------------------------------ rooms

    def room(self, platform: str, room: str) -> tuple[int, set[str]]:
        """The index and the id set of a room (created on first use)."""
        k = (platform, room)
        ri = self.room_index.get(k)
        if ri is not None:
            return ri, self._room_sets[ri]
        ri = len(self.rooms)
        ids: set[str] = set()
        self.room_index[k] = ri
        self.rooms.append(k)
        self.sets[k] = ids
        self._room_sets.append(ids)
        prefix = f"{escape(platform)}\x1f{escape(room)}\x1f"
        self.prefixes.append(prefix)
        self._room_crc.append(zlib.crc32(_utf8(prefix)))
        return ri, ids

    # ------------------------------------------------------------------ the hot path

    def admit(self, ri: int, cid: str, seq: int, ask: bool) -> bool:
        """Called for a key of room ``ri`` that is not in the room's set: False when it was seen before (nothing
        changes), else True, and the key is remembered as comment event ``seq`` (the caller adds it to the
        room's set). ``ask``: False when the caller knows the key is new (a journal replay)."""
        if self.spilled:
            try:
                b = cid.encode()
            except UnicodeEncodeError:
                b = cid.encode("utf-8", "surrogatepass")
            h = zlib.crc32(b, self._room_crc[ri])
            if ask:
                m = _MASKS[h >> _HIGH]
                for seg in self._segs:
                    if seg[h & (len(seg) - 1)] & m == m:
                        self._h = h
                        if self._confirm(ri, cid):
                            return False
                        break
        else:
            h = 0
        ids = self._ids
        ids.append(cid)
        self._rms.append(ri)
        self._seqs.append(seq)
        self._hashes.append(h)
        if len(ids) - self._infilter >= self._limit:
            self._leave()
        return True

    def _leave(self) -> None:
        """The oldest keys of the window leave it: into the filter (they stay in memory until their chunk is
        full)."""
        lo = self._infilter
        hi = lo + self._evict
        ids, rms, hashes, crcs = self._ids, self._rms, self._hashes, self._room_crc
        masks = _MASKS
        i = lo
        while i < hi:
            if not self._segs or self._seg_n[-1] >= self._seg_cap[-1]:
                self._grow()
            seg = self._segs[-1]
            top = len(seg) - 1
            n = min(hi - i, self._seg_cap[-1] - self._seg_n[-1])
            for j in range(i, i + n):
                h = hashes[j]
                if not h:
                    h = hashes[j] = zlib.crc32(_utf8(ids[j]), crcs[rms[j]])
                seg[h & top] |= masks[h >> _HIGH]
            self._seg_n[-1] += n
            i += n
        self._infilter = hi
        self.spilled += hi - lo
        if hi >= self.chunk:
            self._chunk_full()

    def _grow(self) -> None:
        """A new filter segment, twice the size of the one before."""
        cap = self.segment << len(self._segs)
        words = 1
        while words < cap >> _WORDS_SHIFT:
            words <<= 1
        self._segs.append(array("Q", bytes(8 * words)))
        self._seg_n.append(0)
        self._seg_cap.append(cap)

    def _chunk_full(self) -> None:
        """The first ``chunk`` keys in memory make a chunk: they go to the store (or, in a replay, just go)."""
        c = self.chunk
        ids, rms, hashes = self._ids[:c], self._rms[:c], self._hashes[:c]
        no = len(self.chunks)
        self.chunks.append((self._seqs[0], self._seqs[c - 1]))
        sets = self._room_sets
        for cid, ri in zip(ids, rms, strict=True):
            sets[ri].discard(cid)
        del self._ids[:c]
        del self._rms[:c]
        del self._seqs[:c]
        del self._hashes[:c]
        self._infilter -= c
        if self.keep:
            self.handoff[no] = (ids, rms, hashes)
            self.fresh.append(no)

    def _confirm(self, ri: int, cid: str) -> bool:
        """The filter said "maybe" for a key not in memory: whether a chunk held for the store or the store's
        index holds it."""
        self.maybes += 1
        for ids, rms, _ in self.handoff.values():
            j = -1
            try:
                while True:
                    j = ids.index(cid, j + 1)
                    if rms[j] == ri:
                        self.old_dupes += 1
                        return True
            except ValueError:
                pass
        lookup = self.lookup
        if lookup is not None and lookup(self.prefixes[ri] + escape(cid), self._h):
            self.old_dupes += 1
            return True
        return False

    def contains(self, platform: str, room: str, cid: str) -> bool:
        """Whether the key was seen (memory, then the filter and what confirms it)."""
        ri = self.room_index.get((platform, room))
        if ri is None:
            return False
        if cid in self._room_sets[ri]:
            return True
        if not self.spilled:
            return False
        self._h = h = zlib.crc32(_utf8(cid), self._room_crc[ri])
        m = _MASKS[h >> _HIGH]
        return any(seg[h & (len(seg) - 1)] & m == m for seg in self._segs) and self._confirm(ri, cid)

    @property
    def in_memory(self) -> int:
        """Ids held exactly in memory: the window, the chunk being filled, the chunks not yet indexed."""
        return len(self._ids) + sum(len(ids) for ids, _, _ in self.handoff.values())

    # ------------------------------------------------------------------ the store's side

    def take_fresh(self) -> list[tuple[int, int, int, Iterator[tuple[str, int]]]]:
        """Full chunks not yet handed to the store: (number, first event, last event, its keys as
        (:func:`key_text`, :func:`key_hash`), computed as they are read: on the store's thread, not the loop)."""
        out = [(no, *self.chunks[no], self._keys(*self.handoff[no])) for no in self.fresh if no in self.handoff]
        self.fresh.clear()
        return out

    def _keys(self, ids: list[str], rms: list[int], hashes: array[int]) -> Iterator[tuple[str, int]]:
        prefixes = list(self.prefixes)
        if len(prefixes) == 1 or all(r == rms[0] for r in rms):  # one room: nearly always
            prefix = prefixes[rms[0]] if rms else ""
            for cid, h in zip(ids, hashes, strict=True):
                if "\\" in cid or not cid.isprintable():
                    cid = escape(cid)
                yield prefix + cid, h
            return
        for cid, ri, h in zip(ids, rms, hashes, strict=True):
            yield prefixes[ri] + escape(cid), h

    def indexed(self, no: int) -> None:
        """The store's index holds chunk ``no`` now: its keys need not stay in memory."""
        self.handoff.pop(no, None)

    # ------------------------------------------------------------------ snapshots

    def state(self) -> dict[str, Any]:
        """Plain data for a snapshot (the snapshot's encoder writes the arrays raw): copies, as bytes, except for
        the filter's full segments, which are passed as read-only views of the segments themselves. A full
        segment never changes again (:meth:`_leave` sets bits in the last segment only, and grows a new one
        before it sets any once that is full), so a snapshot need not copy it: at 10M keys that is 12 of the
        filter's 28 MB, and at every size all segments but the last. The chunks still held for the store are
        not in it: a restart rebuilds what the index lacks from the journal."""
        return {
            "recent": self.recent, "chunk": self.chunk, "segment": self.segment,
            "rooms": [list(r) for r in self.rooms],
            "ids": list(self._ids), "ring_rooms": list(self._rms),
            "seqs": self._seqs.tobytes(), "hashes": self._hashes.tobytes(), "infilter": self._infilter,
            "spilled": self.spilled, "chunks": [list(c) for c in self.chunks],
            "filter": [[memoryview(seg).cast("B").toreadonly() if n >= cap else seg.tobytes(), n, cap]
                       for seg, n, cap in zip(self._segs, self._seg_n, self._seg_cap, strict=True)],
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Dedupe:
        """The memory :meth:`state` described. Raises ``KeyError`` / ``ValueError`` / ``TypeError``."""
        dd = cls(int(state["recent"]), chunk=int(state["chunk"]), segment=int(state["segment"]))
        for platform, room in state["rooms"]:
            dd.room(str(platform), str(room))
        ids = [str(i) for i in state["ids"]]
        rms = [int(r) for r in state["ring_rooms"]]
        dd._seqs = _array("q", state["seqs"], len(ids))
        dd._hashes = _array("Q", state["hashes"], len(ids))
        dd._infilter = int(state["infilter"])
        if (len(rms) != len(ids) or any(r >= len(dd.rooms) for r in rms) or not 0 <= dd._infilter < dd.chunk
                or len(ids) - dd._infilter >= dd._limit):
            raise ValueError("the ids in memory in the snapshot do not fit its window")
        dd._ids, dd._rms = ids, rms
        sets = dd._room_sets
        for cid, ri in zip(ids, rms, strict=True):
            sets[ri].add(cid)
        dd.spilled = int(state["spilled"])
        dd.chunks = [(int(a), int(b)) for a, b in state["chunks"]]
        for data, n, cap in state["filter"]:
            seg = _array("Q", data, None)
            if not seg or len(seg) & (len(seg) - 1):
                raise ValueError("a filter segment in the snapshot is not a power of two words")
            dd._segs.append(seg)
            dd._seg_n.append(int(n))
            dd._seg_cap.append(int(cap))
        return dd

    def __repr__(self) -> str:
        return (f"<Dedupe window {self.recent:,}, {len(self._ids):,} ids in memory, {self.spilled:,} in the filter "
                f"({sum(len(s) for s in self._segs) * 8 / 2**20:.1f} MB), {len(self.chunks)} chunks>")


def _array(code: str, data: Any, n: int | None) -> array[int]:
    """An array from a snapshot's bytes (bytes, a memoryview, or base64 text)."""
    a = array(code)
    a.frombytes(base64.b64decode(data) if isinstance(data, str) else data)
    if n is not None and len(a) != n:
        raise ValueError("an array in the snapshot does not have its stated size")
    return a


__all__ = ["CHUNK", "SEGMENT0", "Dedupe", "escape", "key_hash", "key_text"]
