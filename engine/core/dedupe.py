"""Bounded memory of the comment keys seen (docs/journal-and-durability.md, "Duplicate comments").

No I/O, no clock: values in, answers out. The ledger asks it whether a comment key ``(platform, room, id)``
has been processed before; the answer is exact at any age, with memory that does not grow with every key:

* **The window.** The last ``recent`` keys, exactly, in per-room sets (a re-delivery by a platform is nearly
  always of recent comments, and is answered here at the cost of one set lookup). A ring remembers their
  order; the oldest key leaves the window when a new one arrives.
* **The filter.** From the first key that leaves the window on, every key is added to a blocked Bloom
  filter as it comes (one 64-bit word per key, six bits set in it: ~2 bytes per key), the window's too: the
  probe that answers a new key has found its word, so adding it there costs one store, where adding keys
  as they leave the window cost a second pass over each. A key the filter does not hold was never seen:
  that is the answer for nearly every new comment, with no I/O. A key it holds *may* have been seen (a real
  old duplicate, or a false positive, a fraction of a percent of new keys). (A key in the window is found in
  its room's set before the filter is asked.)
* **Confirmation.** Every key held in memory is in its room's set: the window, the keys that left it since
  the last full chunk, and the chunks handed to the store and not yet indexed (until :meth:`indexed`). The
  ledger looks there first, so a "maybe" is for a key in none of them, and is confirmed exactly through
  ``lookup`` (a callable the store provides; it reads the journal's index of older chunks). Only a key found
  there is a duplicate: a false positive never drops a new comment. Without a ``lookup`` (a bare ledger, a
  replay) an unconfirmed "maybe" counts as new.

Everything here is deterministic: the same keys in the same order give the same state, the same chunk
boundaries (a chunk is the keys of ``chunk`` consecutive comment events, so the store can rebuild a chunk
it lost in a crash from the journal's entries between ``first`` and ``last``) and the same snapshot.

Per new key the hot path does the least it can: a hash and one probe once the filter is on, one or two
appends, one comparison; :meth:`Ledger.decide <livecart.core.ledger.Ledger.decide>` does it inline and calls
:meth:`Dedupe.admit` only for the rest. Everything else (a chunk's first and last event, the filter's count, a
full chunk, a change of room) happens at steps thousands of keys apart.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import and_, rshift
from typing import Any, Final, TypeVar
from zlib import crc32

_K = TypeVar("_K", str, int)

#: Keys per chunk of the store's index (and the most keys kept exactly in memory beyond the window).
CHUNK = 65_536
#: Keys the first filter segment is sized for; each further segment is twice the one before.
SEGMENT0 = 2_000_000
#: 64-bit words per key of a segment's capacity, as a power of two: 1/4, i.e. 16 bits per key.
_WORDS_SHIFT = 2
#: Keys put in the filter at a time before it is on (see :meth:`Dedupe._prefill`): ~1 ms of one decision.
PREFILL_STEP = 1_024
#: Ids of an indexed chunk that leave the room sets at each :meth:`Dedupe.forget_some` (~0.6 ms): the 65,536
#: of a chunk at once were a 9 ms stall of the event loop.
FORGET_STEP = 4_096
#: Keys (or groups of keys) the store's worker thread handles between two calls of its pause (see
#: :meth:`ChunkKeys.lines`): ~0.3 ms of work.
PAUSE_STEP = 4_096
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
#: The filter's 64-bit words: typecode "L" where a C long has 64 bits (its items go to and from Python ints
#: several times faster than "Q"'s, with the same bytes), else "Q". Keys' hashes (CRC-32s): "I".
_WORD: Final = "L" if array("L").itemsize == 8 else "Q"
MASK_SHIFT: Final = 32 - _MASK_BITS  # a key's mask is picked by the top _MASK_BITS bits of its hash


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
    return crc32(_utf8(cid), crc32(_utf8(prefix)))


def holds(segs: list[array[int]], h: int, m: int) -> bool:
    """Whether one of the filter segments ``segs`` holds the bits ``m`` of hash ``h`` (a key it may have seen)."""
    for seg in segs:  # noqa: SIM110 (a loop, not any() over a generator: asked per new key once a segment is full)
        if seg[h & (len(seg) - 1)] & m == m:
            return True
    return False


def _typed_list(values: Any, kind: type[_K]) -> list[_K]:
    """A new list of ``values``, each a ``kind`` (converted by ``kind()``). A snapshot's ~170,000 ids (the window
    and a chunk) are checked and copied by C loops (map, set, list) when they already are, not a line of
    Python each (which was ~60 ms of a restart's 150 ms at 10M comments); copied, because a state taken in
    memory holds the memory's own lists."""
    if type(values) is list and set(map(type, values)) <= {kind}:
        return list(values)
    return [kind(v) for v in values]


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


class Dedupe:
    """The seen-keys memory of one ledger. See the module docstring."""

    def __init__(self, recent: int, *, chunk: int = 0, segment: int = 0) -> None:
        if recent < 1:
            raise ValueError(f"recent must be 1 or more, got {recent}")
        if not _MASKS:
            _MASKS.extend(_masks())
        self.masks = _MASKS
        self.recent = recent
        self._prefill_every = max(1, min(recent // 16, PREFILL_STEP))  # keys between the filter's fills (_prefill)
        self.chunk = chunk or CHUNK  # 0: the module's (read at each call, so a test can make it small)
        self.segment = segment or SEGMENT0
        #: Every key in memory, per room: (platform, room) -> ids; each room's index into :attr:`rooms`.
        self.sets: dict[tuple[str, str], set[str]] = {}
        self.room_index: dict[tuple[str, str], int] = {}
        self.rooms: list[tuple[str, str]] = []
        self.prefixes: list[str] = []  # escaped "platform\x1froom\x1f" per room
        self.room_crc: list[int] = []  # CRC-32 of that prefix: a key's hash starts from it
        self._room_sets: list[set[str]] = []
        #: The keys in memory in arrival order (the window, and before it the keys of the chunk being filled):
        #: ids here, and, once the filter is on, their hashes in :attr:`hashes`. The first of them is the first
        #: key of a chunk. Their rooms go by runs: keys ``_run_at[k]`` on (up to the next run) are of room
        #: ``_run_ri[k]``, and the last run is always the room :meth:`switch` named last, so a key of that room
        #: is taken with no per-key room at all (a chat nearly always has one room).
        self.ring: list[str] = []
        self.hashes = array("I")
        self._run_at: list[int] = []
        self._run_ri: list[int] = []
        # The comment events of the chunk edges among them: first and last of each chunk, in order (a chunk is
        # the keys of consecutive comment events, so its edges are all the store needs to rebuild it).
        self._edges: list[int] = []
        #: Whether the filter is on: from the first key that leaves the window, every key is in it.
        self.filtering = False
        #: Every full chunk: its first and last comment event (its number is its place in this list).
        self.chunks: list[tuple[int, int]] = []
        #: Full chunks still held here until the store has indexed them (number -> ids, rooms, hashes), and
        #: the numbers not yet handed to the store (see :meth:`take_fresh`).
        self.handoff: dict[int, tuple[list[str], list[int], array[int]]] = {}
        self.fresh: list[int] = []
        #: Whether full chunks are held for the store (a replay lets them go: the store rebuilds any it lacks).
        self.keep = False
        #: Indexed chunks whose ids are leaving the room sets a step at a time (ids, rooms, how many left).
        self.forgetting: list[tuple[list[str], list[int], int]] = []
        # The filter: segments (64-bit words, a power of two each), the keys each holds and is sized for. New
        # keys go into the last one (``seg``, ``top`` its index mask; ``older`` the others); the keys counted
        # into ``_seg_n`` are the first ``_counted`` of all keys ever taken.
        self._segs: list[array[int]] = []
        self._seg_n: list[int] = []
        self._seg_cap: list[int] = []
        self.seg = array(_WORD)
        self.older: list[array[int]] = []
        self.top = 0
        self._counted = 0
        #: Nothing happens per key beyond the appends until ``len(self.ring)`` reaches this: a chunk edge, the
        #: window's first overflow, the last segment full, or a full chunk (see :meth:`_step`).
        self.next_step = 1
        #: Confirms a "maybe": whether the store's index holds this key (:func:`key_text`, :func:`key_hash`) in
        #: one of the chunks ``lo`` up to ``hi`` (exclusive; None: the last indexed). None: no store.
        self.lookup: Callable[[str, int, int, int | None], bool] | None = None
        #: Whether each segment's count is the keys it holds (true of every memory this code made; checked at a
        #: restore), so that a "maybe" is asked of the chunks of the segments that hold it (:meth:`_span`).
        self.spans = True
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
        self.room_crc.append(crc32(_utf8(prefix)))
        return ri, ids

    def switch(self, ri: int) -> None:
        """The keys taken from now on are of room ``ri`` (until the next switch)."""
        at, rs = self._run_at, self._run_ri
        if at and at[-1] == len(self.ring):  # the last run has no key yet: it goes
            at.pop()
            rs.pop()
        if not rs or rs[-1] != ri:
            at.append(len(self.ring))
            rs.append(ri)

    def _rooms_of(self, lo: int, hi: int) -> list[int]:
        """The room of each key in memory from ``lo`` to ``hi``."""
        out: list[int] = []
        at, rs = self._run_at, self._run_ri
        for k, ri in enumerate(rs):
            a = max(at[k], lo)
            b = min(at[k + 1] if k + 1 < len(at) else hi, hi)
            if b > a:
                out += [ri] * (b - a)
        return out

    @property
    def spilled(self) -> int:
        """Keys that have left the window (all of them are in the filter, as are the window's since then)."""
        return max(0, len(self.chunks) * self.chunk + len(self.ring) - self.recent)

    # ------------------------------------------------------------------ the hot path

    def admit(self, ri: int, cid: str, seq: int, ask: bool) -> bool:
        """Called for a key of room ``ri`` that is not in the room's set: False when it was seen before (nothing
        changes), else True, and the key is remembered as comment event ``seq`` (the caller adds it to the
        room's set). ``ask``: False when the caller knows the key is new (a journal replay).

        :meth:`Ledger.decide <livecart.core.ledger.Ledger.decide>` does this itself for a key of the room
        switched to last that the filter rules out at once and that makes no step (nearly every key: a
        method call per comment was ~5% of deciding it), and calls this for every other."""
        if not self._run_ri or self._run_ri[-1] != ri:
            self.switch(ri)
        if self.filtering:
            try:
                b = cid.encode()
            except UnicodeEncodeError:
                b = cid.encode("utf-8", "surrogatepass")
            h = crc32(b, self.room_crc[ri])
            seg = self.seg
            i = h & self.top
            w = seg[i]
            m = self.masks[h >> MASK_SHIFT]
            x = w | m
            if ask and (x == w or (self.older and holds(self.older, h, m))):  # maybe seen
                self._h = h
                if self._confirm(ri, cid):
                    return False
            if x != w:
                seg[i] = x
            self.hashes.append(h)
        ids = self.ring
        ids.append(cid)
        if len(ids) >= self.next_step:
            self._step(seq)
        return True

    def _step(self, seq: int) -> None:
        """What happens at the key just taken (comment event ``seq``), the ``n``-th in memory: the filter's
        count, and its first start or a new segment; a chunk edge; a full chunk. Then when to come back."""
        n = len(self.ring)
        c = self.chunk
        if self.filtering:
            total = len(self.chunks) * c + n
            self._seg_n[-1] += total - self._counted
            self._counted = total
            if self._seg_n[-1] >= self._seg_cap[-1]:
                self._grow()
        elif n > self.recent:  # the first key leaves the window
            self._start_filter()
        elif n % self._prefill_every == 0:
            self._prefill()
        if (n - 1) % c == 0:
            self._edges.append(seq)
        if n % c == 0:
            self._edges.append(seq)
        if n >= self.recent + c:
            self._chunk_full()
        self.next_step = self._next_step()

    def _next_step(self) -> int:
        """How many keys in memory make the next step: a chunk's first or last key, a full chunk, the first
        key to leave the window, a full segment."""
        n = len(self.ring)
        c = self.chunk
        nxt = min((n // c + 1) * c, ((n - 1) // c + 1) * c + 1, self.recent + c)
        if self.filtering:
            return min(nxt, n + self._seg_cap[-1] - self._seg_n[-1])
        q = self._prefill_every
        return min(nxt, self.recent + 1, (n // q + 1) * q)

    def _start_filter(self) -> None:
        """The filter is turned on: every key in memory is in it from now on."""
        self._prefill()
        self.filtering = True

    def _prefill(self) -> None:
        """Put the keys in memory that are not in the filter yet in it. Before the first key leaves the window
        this happens every :data:`PREFILL_STEP` keys (or every sixteenth of a smaller window), so that no one
        decision puts many keys in: the whole window of 100,000 at once was ~30 ms, a stall of the event loop,
        and a sixteenth of it still 5-11 ms, each one a burst of acknowledgements over 5 ms at 50,000
        comments/s. The filter answers nothing until it is on."""
        ids, crcs = self.ring, self.room_crc
        lo = len(self.hashes)
        if len(self._run_ri) == 1:  # one room: hashed by map() over C functions, no bytecode per key
            try:
                self.hashes.extend(map(crc32, map(str.encode, ids[lo:]), repeat(crcs[self._run_ri[0]])))
            except UnicodeEncodeError:  # a lone surrogate in an id: _utf8 below
                del self.hashes[lo:]
        if len(self.hashes) != len(ids):
            rms = self._rooms_of(lo, len(ids))
            self.hashes.extend([crc32(_utf8(cid), crcs[ri]) for cid, ri in zip(ids[lo:], rms, strict=True)])
        self._fill(lo)

    def _fill(self, lo: int) -> None:
        """Put the keys in memory from ``lo`` on in the filter and count them (a new segment as one fills)."""
        hashes, masks = self.hashes, self.masks
        hi = len(hashes)
        i = lo
        while i < hi:
            if not self._segs or self._seg_n[-1] >= self._seg_cap[-1]:
                self._grow()
            seg, top = self.seg, self.top
            n = min(hi - i, self._seg_cap[-1] - self._seg_n[-1])
            part = hashes[i:i + n]
            # Words and masks by map() over C functions; only the stores are a loop (two keys may share a word).
            words = map(and_, part, repeat(top))
            for w, m in zip(words, map(masks.__getitem__, map(rshift, part, repeat(MASK_SHIFT))), strict=True):
                seg[w] |= m
            self._seg_n[-1] += n
            i += n
        self._counted += hi - lo
        if self._seg_n[-1] >= self._seg_cap[-1]:
            self._grow()

    def _grow(self) -> None:
        """A new filter segment, twice the size of the one before; new keys go into it."""
        cap = self.segment << len(self._segs)
        words = 1
        while words < cap >> _WORDS_SHIFT:
            words <<= 1
        self.seg = array(_WORD, bytes(8 * words))
        self.top = words - 1
        self._segs.append(self.seg)
        self.older = self._segs[:-1]
        self._seg_n.append(0)
        self._seg_cap.append(cap)

    def _chunk_full(self) -> None:
        """The first ``chunk`` keys in memory make a chunk: they go to the store (or, in a replay, just go)."""
        c = self.chunk
        ids, rms, hashes = self.ring[:c], self._rooms_of(0, c), self.hashes[:c]
        no = len(self.chunks)
        self.chunks.append((self._edges[0], self._edges[1]))
        del self._edges[:2]
        if not self.keep:
            self._forget(ids, rms)
        del self.ring[:c]
        del self.hashes[:c]
        at, rs = self._run_at, self._run_ri
        k = 0
        while k + 1 < len(at) and at[k + 1] <= c:  # the runs that end in the chunk go; the one it ends in stays
            k += 1
        self._run_at = [0] + [a - c for a in at[k + 1:]]
        self._run_ri = rs[k:]
        if self.keep:
            self.handoff[no] = (ids, rms, hashes)
            self.fresh.append(no)

    def _forget(self, ids: list[str], rms: list[int]) -> None:
        """The keys of a chunk leave the room sets."""
        sets = self._room_sets
        if rms.count(rms[0]) == len(ids):  # one room: nearly always
            sets[rms[0]].difference_update(ids)
        else:
            for cid, ri in zip(ids, rms, strict=True):
                sets[ri].discard(cid)

    def _confirm(self, ri: int, cid: str) -> bool:
        """The filter said "maybe" for a key not in memory: whether the store's index holds it. (A key of a
        chunk held for the store is still in its room's set, so it never gets here.)"""
        self.maybes += 1
        lookup = self.lookup
        if lookup is not None and lookup(self.prefixes[ri] + escape(cid), self._h, *self._span(self._h)):
            self.old_dupes += 1
            return True
        return False

    def _span(self, h: int) -> tuple[int, int | None]:
        """The chunks that can hold a key of hash ``h`` that the filter holds (``lo``, and ``hi`` exclusive or
        None for the last): those whose keys went into the segments that hold its bits. Keys go into the last
        segment in the order they are taken, and a new segment is grown exactly when it is full, so a segment
        holds the keys numbered ``start`` to ``start + n`` (its count ``n``, ``start`` the counts before it),
        which are those of the chunks ``start // chunk`` to ``(start + n - 1) // chunk``. A lookup costs ~5 µs
        a chunk (two B-tree seeks and a search of the row): at 10M comments a "maybe" from the first segment
        (the first 2M keys) is asked of its 31 chunks, not of all 151."""
        segs = self._segs
        if not self.spans or not segs:
            return 0, None
        m = self.masks[h >> MASK_SHIFT]
        c = self.chunk
        last = len(segs) - 1
        lo: int | None = None
        hi: int | None = None
        start = 0
        for s, (seg, n) in enumerate(zip(segs, self._seg_n, strict=True)):
            if seg[h & (len(seg) - 1)] & m == m:
                if lo is None:
                    lo = start // c
                hi = None if s == last else (start + n - 1) // c + 1
            start += n
        return (0, None) if lo is None else (lo, hi)

    def contains(self, platform: str, room: str, cid: str) -> bool:
        """Whether the key was seen (memory, then the filter and what confirms it)."""
        ri = self.room_index.get((platform, room))
        if ri is None:
            return False
        if cid in self._room_sets[ri]:
            return True
        if not self.filtering:
            return False
        self._h = h = crc32(_utf8(cid), self.room_crc[ri])
        m = self.masks[h >> MASK_SHIFT]
        return holds(self._segs, h, m) and self._confirm(ri, cid)

    @property
    def in_memory(self) -> int:
        """Ids held exactly in memory: the window, the chunk being filled, the chunks not yet indexed or still
        leaving the sets (:meth:`forget_some`)."""
        return (len(self.ring) + sum(len(ids) for ids, _, _ in self.handoff.values())
                + sum(len(ids) - done for ids, _, done in self.forgetting))

    # ------------------------------------------------------------------ the store's side

    def take_fresh(self) -> list[tuple[int, int, int, ChunkKeys]]:
        """Full chunks not yet handed to the store: (number, first event, last event, its keys)."""
        out = [(no, *self.chunks[no], ChunkKeys(*self.handoff[no], list(self.prefixes)))
               for no in self.fresh if no in self.handoff]
        self.fresh.clear()
        return out

    def indexed(self, no: int, *, gradual: bool = False) -> None:
        """The store's index holds chunk ``no`` now: its keys need not stay in memory (until then they stay in
        their rooms' sets, where the ledger finds a re-delivery of one before it asks anything else). With
        ``gradual`` they leave :data:`FORGET_STEP` at a time, at each :meth:`forget_some` (the daemon calls it
        after each batch); a key still in its set meanwhile is found there, as before."""
        held = self.handoff.pop(no, None)
        if held is None:
            return
        if gradual:
            self.forgetting.append((held[0], held[1], 0))
        else:
            self._forget(held[0], held[1])

    def forget_some(self, n: int = FORGET_STEP) -> None:
        """Let up to ``n`` keys of the chunks :meth:`indexed` gradually leave the room sets."""
        while n > 0 and self.forgetting:
            ids, rms, done = self.forgetting[0]
            k = min(n, len(ids) - done)
            self._forget(ids[done:done + k], rms[done:done + k])
            n -= k
            if done + k < len(ids):
                self.forgetting[0] = (ids, rms, done + k)
            else:
                del self.forgetting[0]

    # ------------------------------------------------------------------ snapshots

    def state(self) -> dict[str, Any]:
        """Plain data for a snapshot (the snapshot's encoder writes the arrays raw): copies, as bytes, except for
        the filter's full segments, which are passed as read-only views of the segments themselves. A full
        segment never changes again (keys go into the last segment only, and a new one is grown as soon as that
        is full), so a snapshot need not copy it: at 10M keys that is 12 of the filter's 28 MB, and at every
        size all segments but the last. The chunks still held for the store are not in it: a restart rebuilds
        what the index lacks from the journal."""
        return {
            "recent": self.recent, "chunk": self.chunk, "segment": self.segment,
            "rooms": [list(r) for r in self.rooms],
            "ids": list(self.ring), "ring_rooms": self._rooms_of(0, len(self.ring)),
            "hashes": self.hashes.tobytes() if self.filtering else b"",
            "edges": list(self._edges), "filtering": self.filtering, "spilled": self.spilled,
            "chunks": [list(c) for c in self.chunks],
            "filter": [[memoryview(seg).cast("B").toreadonly() if n >= cap else seg.tobytes(), n, cap]
                       for seg, n, cap in zip(self._segs, self._counts(), self._seg_cap, strict=True)]
            if self.filtering else [],  # the keys put in before it is on are put in again after a restore
        }

    def _counts(self) -> list[int]:
        """The keys in each filter segment (those taken since the last step are not counted yet)."""
        counts = list(self._seg_n)
        if counts:
            counts[-1] += len(self.chunks) * self.chunk + len(self.ring) - self._counted
        return counts

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Dedupe:
        """The memory :meth:`state` described, or a state of snapshot format 3 (which kept every key's event
        and put keys in the filter only as they left the window). Raises ``KeyError`` / ``ValueError`` /
        ``TypeError``."""
        dd = cls(int(state["recent"]), chunk=int(state["chunk"]), segment=int(state["segment"]))
        for platform, room in state["rooms"]:
            dd.room(str(platform), str(room))
        ids = _typed_list(state["ids"], str)
        rms = _typed_list(state["ring_rooms"], int)
        c = dd.chunk
        if "infilter" in state:  # format 3
            infilter = int(state["infilter"])
            seqs = _array("q", state["seqs"], len(ids))
            filtering = int(state["spilled"]) > 0
            hashes = array("I", _array("Q", state["hashes"], len(ids)) if filtering else ())
            for j in range(len(hashes)):  # a key taken before the filter began had none
                if not hashes[j]:
                    hashes[j] = crc32(_utf8(ids[j]), dd.room_crc[rms[j]])
            edges: list[int] = []
            for k in range(0, len(ids), c):
                edges.append(seqs[k])
                if k + c <= len(ids):
                    edges.append(seqs[k + c - 1])
            most = len(ids)  # it cut chunks a little later: see below
        else:
            filtering = bool(state["filtering"])
            hashes = _array("I", state["hashes"], len(ids) if filtering else 0)
            edges = [int(e) for e in state["edges"]]
            infilter = len(ids)
            most = dd.recent + c - 1
        if (len(rms) != len(ids) or (rms and not 0 <= min(rms) <= max(rms) < len(dd.rooms)) or len(ids) > most
                or len(edges) != (len(ids) + c - 1) // c + len(ids) // c):
            raise ValueError("the ids in memory in the snapshot do not fit its window")
        dd.ring, dd.hashes, dd._edges = ids, hashes, edges
        if rms and rms.count(rms[0]) == len(rms):  # one room (nearly always): one run
            dd._run_at.append(0)
            dd._run_ri.append(rms[0])
        else:
            for j, ri in enumerate(rms):
                if not dd._run_ri or dd._run_ri[-1] != ri:
                    dd._run_at.append(j)
                    dd._run_ri.append(ri)
        sets = dd._room_sets
        for k, (at, ri) in enumerate(zip(dd._run_at, dd._run_ri, strict=True)):
            end = dd._run_at[k + 1] if k + 1 < len(dd._run_at) else len(ids)
            sets[ri].update(ids[at:end])
        dd.chunks = [(int(a), int(b)) for a, b in state["chunks"]]
        for data, n, cap in state["filter"]:
            seg = _array(_WORD, data, None)
            if not seg or len(seg) & (len(seg) - 1):
                raise ValueError("a filter segment in the snapshot is not a power of two words")
            dd._segs.append(seg)
            dd._seg_n.append(int(n))
            dd._seg_cap.append(int(cap))
        if dd._segs:
            dd.seg, dd.top, dd.older = dd._segs[-1], len(dd._segs[-1]) - 1, dd._segs[:-1]
        elif filtering:
            raise ValueError("the snapshot's filter has no segment")
        dd.filtering = filtering
        dd._counted = len(dd.chunks) * c + (infilter if filtering else 0)
        # The segments' counts must add up to the keys put in, or they cannot say which chunks hold which keys:
        # then every "maybe" is asked of every chunk, as before there were spans (exact, only slower).
        dd.spans = sum(dd._seg_n) == dd._counted
        if filtering:
            dd._fill(infilter)  # format 3's window was not in the filter
        # Format 3 began the filter and cut chunks a little later than this memory does: catch up.
        if not dd.filtering and len(ids) > dd.recent:
            dd._start_filter()
        if len(ids) >= dd.recent + c:
            dd._chunk_full()
        dd.next_step = dd._next_step()
        return dd

    def __repr__(self) -> str:
        return (f"<Dedupe window {self.recent:,}, {len(self.ring):,} ids in memory, {self.spilled:,} left it, "
                f"filter {sum(len(s) for s in self._segs) * 8 / 2**20:.1f} MB, {len(self.chunks)} chunks>")


class ChunkKeys:
    """The keys of one full chunk, for the store, read on its thread (not the loop's): iterating gives each
    as (:func:`key_text`, :func:`key_hash`); :meth:`lines` gives them grouped by hash, with no string built
    per key when no id needs escaping."""

    def __init__(self, ids: list[str], rms: list[int], hashes: array[int], prefixes: list[str]) -> None:
        self.ids = ids
        self.rms = rms
        self.hashes = hashes
        self.prefixes = prefixes  # of every room, as they were when the chunk was handed over

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        prefixes = self.prefixes
        for cid, ri, h in zip(self.ids, self.rms, self.hashes, strict=True):
            yield prefixes[ri] + escape(cid), h

    def lines(self, groups: int, pause: Callable[[], None] | None = None) -> dict[int, str]:
        """:func:`key_lines` of these keys (``groups`` a power of two up to 65,536). ``pause``, when given, is
        called every :data:`PAUSE_STEP` keys or groups (the store's worker thread lets the event loop have the
        interpreter there)."""
        ids, rms = self.ids, self.rms
        if ids and rms.count(rms[0]) == len(ids):  # one room (nearly always): its prefix goes in the join
            joined = "".join(ids)
            # What escape() replaces, looked for directly (a scan per character each, where isprintable()
            # looked every character up in the Unicode tables: ~25% of this method).
            if "\\" in joined or "\x00" in joined or "\x1f" in joined or "\n" in joined:
                ids = [escape(cid) for cid in ids]
            sep = "\n" + self.prefixes[rms[0]]
            out: dict[int, str] = {}
            n = 0
            for g, keys in enumerate(_grouped(ids, self.hashes, groups, pause)):
                if keys:
                    out[g] = sep + sep.join(keys) + "\n"
                    n += len(keys) + 1
                    if pause is not None and n >= PAUSE_STEP:
                        pause()
                        n = 0
            return out
        return key_lines(self, groups, pause)


def _grouped(ids: list[str], hashes: array[int], groups: int,
             pause: Callable[[], None] | None = None) -> list[list[str]]:
    """``ids`` by the low bits of their ``hashes`` (``groups`` lists). A key's group is read from the low
    bytes of its hash as the array holds them (a byte taken from bytes is a cached small int): no arithmetic
    and no int made per key, about a third of the work of ``by[h & mask].append(cid)``. ``pause`` is called
    every :data:`PAUSE_STEP` keys."""
    by: list[list[str]] = [[] for _ in range(groups)]
    raw = hashes.tobytes()
    step = hashes.itemsize
    low = 0 if sys.byteorder == "little" else step - 1
    high = 1 if sys.byteorder == "little" else step - 2
    lo = raw[low::step]
    every = PAUSE_STEP
    if groups <= 256:
        lo = lo.translate(bytes(b & (groups - 1) for b in range(256)))
        adds = [g.append for g in by]
        for at in range(0, len(ids), every):
            for cid, b in zip(ids[at:at + every], lo[at:at + every], strict=True):
                adds[b](cid)
            if pause is not None:
                pause()
        return by
    hi = raw[high::step].translate(bytes(b & ((groups >> 8) - 1) for b in range(256)))
    add2 = [[g.append for g in by[i:i + 256]] for i in range(0, groups, 256)]
    for at in range(0, len(ids), every):
        for cid, a, b in zip(ids[at:at + every], hi[at:at + every], lo[at:at + every], strict=True):
            add2[a][b](cid)
        if pause is not None:
            pause()
    return by


def key_lines(keys: Iterable[tuple[str, int]], groups: int,
              pause: Callable[[], None] | None = None) -> dict[int, str]:
    """Keys (text, hash) by the low bits of their hash (``groups``, a power of two), each group one string:
    a newline, then every key followed by a newline (a key holds none: see :func:`escape`). ``pause``, when
    given, is called every :data:`PAUSE_STEP` keys."""
    by: list[list[str]] = [[] for _ in range(groups)]
    mask = groups - 1
    n = 0
    for key, h in keys:
        by[h & mask].append(key)
        n += 1
        if pause is not None and n == PAUSE_STEP:
            pause()
            n = 0
    return {g: "\n" + "\n".join(v) + "\n" for g, v in enumerate(by) if v}


def _array(code: str, data: Any, n: int | None) -> array[int]:
    """An array from a snapshot's bytes (bytes, a memoryview, or base64 text)."""
    a = array(code)
    a.frombytes(base64.b64decode(data) if isinstance(data, str) else data)
    if n is not None and len(a) != n:
        raise ValueError("an array in the snapshot does not have its stated size")
    return a


__all__ = ["CHUNK", "FORGET_STEP", "MASK_SHIFT", "SEGMENT0", "ChunkKeys", "Dedupe", "escape", "holds", "key_hash",
           "key_lines", "key_text"]
