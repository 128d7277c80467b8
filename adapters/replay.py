"""``replay``: comments from a JSON Lines file (or stdin), at recorded pace, scaled, or flat out.

Keys: ``path`` (a file, ``-`` = stdin), ``speed`` (1 = the pace of the comments' ``ts``, 10 = ten times
faster, 0 = as fast as possible), ``platform`` and ``room`` (filled in where a line lacks them), ``batch``
(most comments per yielded batch when replaying flat out).

Each line is one comment object or a JSON array of them, decoded and validated by msgspec
(:class:`~livecart.core.records.CommentDecoder`); flat out from a file, a block of ``batch`` lines is decoded
in one call. A line that is not valid JSON or not a valid comment is counted as malformed (with its line
number in the log sample) and skipped; the replay goes on.

From a file, the replay keeps its position in the journal (:class:`livecart.plugin.Resume`): the byte offset
and line after the last batch that is durable, with the CRC-32 of every byte before that offset (kept as the
file is read). A restart on the same journal goes on from there when the file still begins with exactly
those bytes (the same recording, or one that has only grown since); otherwise it reads the file from its
first line, and says why. Either way nothing is decided twice: what is sent again is recognised by id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from itertools import islice
from typing import IO, Any, ClassVar
from zlib import crc32

import msgspec

from livecart.adapters._codec import with_defaults
from livecart.core.errors import FatalAdapterError, MalformedInput
from livecart.core.records import Comment, CommentDecoder
from livecart.plugin import Adapter, Batch, Option

log = logging.getLogger("livecart.adapter")

#: A longer line is counted as malformed (``oversized``) rather than decoded.
MAX_LINE = 1 << 20
#: Bytes read at a time when a restart checks the CRC-32 of the file up to its kept position.
CHECK_READ = 1 << 20
#: The longest pause between two comments a paced replay (``speed`` > 0) waits out, in recorded seconds: a
#: longer one is a ``ts`` out of scale (milliseconds among seconds, a year typed wrong), not a pause of the
#: live room, and waiting for it would stall the replay for years. Said once, then not waited for.
MAX_GAP = 3600.0


#: How long stdin may be silent before the comments read from it so far go on without a full batch.
_IDLE = 0.005

def _crc_upto(fd: int, n: int) -> int:
    """The CRC-32 of the first ``n`` bytes of the file ``fd`` (a short file gives the CRC of what it has)."""
    crc = at = 0
    while at < n:
        chunk = os.pread(fd, min(CHECK_READ, n - at), at)
        if not chunk:
            break
        crc = crc32(chunk, crc)
        at += len(chunk)
    return crc


def _speed(v: Any) -> str | None:
    return "must be 0 (as fast as possible) or more" if v < 0 else None


class ReplayAdapter(Adapter):
    type = "replay"
    OPTIONS: ClassVar = {
        "path": Option(str, required=True, path=True, doc="JSON Lines file of comments; '-' = stdin"),
        "speed": Option(float, 0.0, check=_speed, doc="1 = recorded pace, 10 = 10x faster, 0 = flat out"),
        "platform": Option(str, "replay", doc="platform of lines that name none"),
        "room": Option(str, "replay", doc="room of lines that name none"),
        "batch": Option(int, 512, doc="most comments per batch when replaying flat out"),
    }

    def __init__(self, options: Any, *, name: str, stats: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        # Defaults filled here too, so an adapter built directly (tests, embedding) needs only ``path``.
        super().__init__(with_defaults(self.OPTIONS, options, f"replay {name}"), name=name, stats=stats)
        self._clock = clock
        self._sleep = sleep
        self._file: IO[bytes] | None = None
        self.lines_read = 0
        self._decoder = CommentDecoder(platform=self.options["platform"], room=self.options["room"])
        #: The line the replay went on from (0: the first), when a kept position was taken up.
        self.resumed_at = 0
        # A block of complete comment lines decodes in one call (msgspec's JSON Lines support).
        self._lines_decoder = msgspec.json.Decoder(Comment)

    async def open(self) -> None:
        if self._file is not None:
            return
        path = self.options["path"]
        if path == "-":
            self._file = sys.stdin.buffer
            return
        try:
            self._file = open(path, "rb")  # noqa: SIM115, ASYNC230 - closed in close(); opening is not a blocking read
        except OSError as exc:
            raise FatalAdapterError(f"replay {self.name}: cannot open {path}: {exc.strerror}") from exc

    async def close(self) -> None:
        if self._file is not None and self._file is not sys.stdin.buffer:
            self._file.close()
        self._file = None
        await super().close()

    def _decode(self, lineno: int, line: bytes, out: list[Comment]) -> None:
        """Append the comments of one line to ``out``; count and log what is bad (with its line number)."""
        if len(line) > MAX_LINE:
            self.stats.malformed("oversized", f"line {lineno} is {len(line)} bytes", line[:80])
            return
        bad: list[tuple[int | None, MalformedInput]] = []
        self._decoder.decode(line, out, bad)
        for index, exc in bad:
            where = f"line {lineno}" if index is None else f"line {lineno} element {index}"
            self.stats.malformed(exc.reason, f"{where}: {exc.detail}", exc.sample)

    async def batches(self) -> AsyncIterator[Sequence[Comment]]:
        await self.open()
        assert self._file is not None
        at = await self._go_on(self._file)
        self.stats.connected = True  # reading its recording (the board says so while it does)
        try:
            if float(self.options["speed"]) <= 0 and self._file is not sys.stdin.buffer:
                async for batch in self._flat_out(self._file, *at):
                    yield batch
                return
            async for batch in self._paced(self._file, *at):
                yield batch
        finally:
            self.stats.connected = False

    # ------------------------------------------------------------------ the position kept in the journal

    async def _go_on(self, f: IO[bytes]) -> tuple[int, int, int]:
        """Where to start, as (byte offset, line, CRC-32 of the bytes before): the start, or the kept position
        when it fits the file (then the file is there)."""
        if self.resume is None or f is sys.stdin.buffer:
            return 0, 0, 0
        saved = self.resume.saved
        if saved is None:
            log.info("replay %s: no position kept in the journal for it; reading %s from its first line",
                     self.name, self.options["path"])
            return 0, 0, 0
        why = await self._misfit(f, saved)
        if why is not None:
            log.warning("replay %s: the position kept in the journal does not fit %s (%s); reading it from the "
                        "first line: comments seen before are recognised by id", self.name,
                        self.options["path"], why)
            return 0, 0, 0
        offset, lineno, crc = saved["offset"], saved["line"], saved["crc"]
        f.seek(offset)
        self.resumed_at = self.lines_read = lineno
        if offset == os.fstat(f.fileno()).st_size:
            log.info("replay %s: %s was read to its end (%d lines) on this journal before; nothing new in it",
                     self.name, self.options["path"], lineno)
        else:
            log.info("replay %s: going on from line %d (byte %d) of %s, the position kept in the journal (what "
                     "comes again from the last second before a kill is recognised by id)", self.name, lineno + 1,
                     offset, self.options["path"])
        return offset, lineno, crc

    async def _misfit(self, f: IO[bytes], saved: Any) -> str | None:
        """Why ``saved`` is not a position in this file (None: it is). The file's bytes up to it are read again
        for their CRC-32 on a worker thread (zlib lets go of the interpreter's lock): ~0.03 s per 100 MB from
        the page cache here, what the disk takes otherwise."""
        if not isinstance(saved, dict) or not all(type(saved.get(k)) is int and saved[k] >= 0
                                                  for k in ("offset", "line", "crc")):
            return f"not a replay position: {str(saved)[:80]}"
        offset = saved["offset"]
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            return f"it is at byte {offset} and the file has {size}"
        crc = await asyncio.get_running_loop().run_in_executor(None, _crc_upto, f.fileno(), offset)
        if crc != saved["crc"]:
            return f"its first {offset} bytes have changed"
        return None

    def _batch(self, comments: list[Comment], offset: int, lineno: int, crc: int) -> Sequence[Comment]:
        """``comments`` as a :class:`Batch` whose settlement keeps (``offset``, ``lineno``, ``crc``) as the
        position (a plain list when nothing keeps positions)."""
        if self.resume is None or self._file is None or self._file is sys.stdin.buffer:
            return comments
        position = {"offset": offset, "line": lineno, "crc": crc}
        return Batch(comments, on_settled=functools.partial(self._durable, position))

    def _durable(self, position: dict[str, int], error: BaseException | None) -> None:
        if error is None and self.resume is not None:
            self.resume.keep(position)

    # ------------------------------------------------------------------ reading

    async def _flat_out(self, f: IO[bytes], offset: int = 0, lineno: int = 0,
                        crc: int = 0) -> AsyncIterator[Sequence[Comment]]:
        """A file as fast as possible: ``batch`` lines at a time, decoded in one msgspec call per block.

        A block with any bad line (or a line holding an array) is decoded again line by line, so every
        problem is counted and logged with its line number and the good lines around it are kept.

        The position each batch keeps is the end of the last whole line in it: a block cut into several
        batches (lines holding arrays) moves it a line at a time, and a last line without its newline (a
        recording still being written) is never passed, so the next run reads it again, whole by then."""
        limit = int(self.options["batch"])
        lines_decoder = self._lines_decoder
        stats = self.stats
        keep = self.resume is not None
        while True:
            lines = list(islice(f, limit))
            if not lines:
                break
            batch: list[Comment] = []
            block = b"".join(lines)
            start = (offset, lineno, crc)
            cut = 0 if lines[-1].endswith(b"\n") else len(lines[-1])
            offset += len(block)
            lineno += len(lines)
            whole = crc  # the CRC up to the end of the last whole line (a bytes object's full slice is itself)
            if keep:
                whole = crc32(block[:len(block) - cut], crc)
                crc = crc32(block[len(block) - cut:], whole)
            at = (offset - cut, lineno - (cut > 0), whole)
            ends: list[tuple[int, int, int, int]] | None = None
            try:
                if len(block) > MAX_LINE:
                    raise ValueError("a line may be over the limit")  # check line by line
                batch = lines_decoder.decode_lines(block)
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
                batch = []
                ends = []  # after each whole line: (comments so far, offset, line, crc)
                o, n, k = start
                for i, line in enumerate(lines, start[1] + 1):
                    if line.strip():
                        self._decode(i, line, batch)
                    if line.endswith(b"\n"):
                        o, n = o + len(line), n + 1
                        if keep:
                            k = crc32(line, k)
                        ends.append((len(batch), o, n, k))
            self.lines_read = lineno
            stats.received += len(batch)
            if len(batch) <= limit:
                if batch or keep:  # an empty Batch keeps the position past bad lines
                    yield self._batch(batch, *at)
                await asyncio.sleep(0)  # let the rest of the daemon run during a flat-out replay
                continue
            counts = [e[0] for e in ends] if ends is not None else []
            for i in range(0, len(batch), limit):  # lines holding arrays
                j = min(i + limit, len(batch))
                k = bisect_right(counts, j) - 1  # the last line whose comments are all in batch[:j]
                yield self._batch(batch[i:j], *(ends[k][1:] if ends is not None and k >= 0 else start))
            await asyncio.sleep(0)

    async def _paced(self, f: IO[bytes], offset: int = 0, lineno: int = 0,
                     crc: int = 0) -> AsyncIterator[Sequence[Comment]]:
        speed = float(self.options["speed"])
        limit = int(self.options["batch"])
        loop = asyncio.get_running_loop()
        is_stdin = f is sys.stdin.buffer
        prev_ts: float | None = None
        due = self._clock()
        said_gap = False
        batch: list[Comment] = []
        decoded: list[Comment] = []
        # A batch yielded in the middle of a line's comments keeps the position at the line's start.
        line_start, line_before, line_crc = offset, lineno, crc
        after = (offset, lineno, crc)
        while True:
            if is_stdin:
                pending = loop.run_in_executor(None, f.readline)
                if batch and not (await asyncio.wait({pending}, timeout=_IDLE))[0]:
                    # Nothing more has come for now (a live pipe): the comments read so far go on
                    # instead of waiting for a full batch or the end of the input.
                    yield batch
                    batch = []
                line = await pending
            else:
                line = f.readline()
            if not line:
                break
            line_start, line_before, line_crc = offset, lineno, crc
            offset += len(line)
            if self.resume is not None and not is_stdin:
                crc = crc32(line, crc)
            lineno += 1
            # Where a batch that ends with this line leaves the position: past it only when it is whole.
            after = (offset, lineno, crc) if line.endswith(b"\n") else (line_start, line_before, line_crc)
            self.lines_read = lineno
            if not line.strip():
                continue
            self._decode(lineno, line, decoded)
            for comment in decoded:
                self.stats.received += 1
                if speed > 0:
                    # Paced by the latest ts so far (an earlier one, out of order, goes at once); one more
                    # than MAX_GAP after it is out of scale: not waited for, and not the pace of what follows.
                    if prev_ts is None:
                        prev_ts = comment.ts
                    gap = comment.ts - prev_ts
                    if gap > MAX_GAP:
                        if not said_gap:
                            said_gap = True
                            log.warning("%s: line %d: its ts is %.0f s after the comments before (a ts in "
                                        "milliseconds among seconds?): replayed without waiting for it",
                                        self.name, lineno, gap)
                    elif gap > 0:
                        prev_ts = comment.ts
                        due += gap / speed
                    wait = due - self._clock()
                    if wait > 0:
                        if batch:
                            yield self._batch(batch, line_start, line_before, line_crc)
                            batch = []
                        await self._sleep(wait)
                batch.append(comment)
                if len(batch) >= limit:
                    yield self._batch(batch, line_start, line_before, line_crc)
                    batch = []
                    await asyncio.sleep(0)  # let the rest of the daemon run during a flat-out replay
            decoded.clear()
            if speed > 0 and batch:
                yield self._batch(batch, *after)
                batch = []
        if batch or (self.resume is not None and not is_stdin):
            yield self._batch(batch, *after)
