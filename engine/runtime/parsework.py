"""Parsing ahead in a second process: the daemon's event loop decides, a helper process parses.

In a flash sale the event loop of ``livecart run`` is the bottleneck, and parsing was ~30 % of its time
per comment (with the parser's tables and cache and the ledger's sets evicting each other from the CPU's
caches). While a batch waits in the daemon's intake queue, its texts go to this process, which parses them
with a parser built from the same catalogue and answers with the index of each result in a table of the
distinct results it has sent so far (chat repeats itself: a flash sale's 300,000 comments have a few dozen
distinct results). The event loop then only looks results up.

What keeps it exact:

* A result depends only on ``(text, featured)`` and the catalogue (:class:`~livecart.core.parser.Parser`).
  Each request carries the featured product it was parsed under; the engine uses the results only while
  the ledger's featured product is still that one, and parses again otherwise (a host's control changed it
  since).
* A decision never depends on the helper. A batch whose results are not back when the engine takes it is
  waited for a moment (the helper parses it while the event loop decides the batch before:
  :meth:`livecart.runtime.daemon.Daemon._parsed`), and parsed in the daemon if they are still not back, as
  without this process. A helper too slow to wait for (no free core, or stuck) costs its own CPU and
  at most :data:`MAX_WAITING` requests or :data:`MAX_WAITING_BYTES` of texts buffered for it.
* A text the helper fails on comes back as "parse it yourself" (the daemon then logs and counts the
  failure, as always). A helper that dies, or answers nonsense, is stopped; the daemon goes on parsing
  itself and says so once in its log.

Wire: each frame is a 4-byte little-endian length and a body. The first frame to the helper is the pickled
``(catalogue, bare_plus_one, max_qty, table_max)`` (its own parent wrote it); then each request is msgpack
``[featured, [text, ...]]`` and each answer msgpack ``[reset, fresh, indices]``: ``reset`` true when both
sides start their table again (it holds at most ``table_max`` results), ``fresh`` the results new to the
table in order, each ``[intent, [[sku, variant, qty, reason], ...]]``, and ``indices`` uint32 in the
machine's order (both ends run on one machine), one a text; index 0 means "parse it yourself".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
from array import array
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import msgspec

from livecart.core.catalogue import DEFAULT_MAX_QTY, Catalogue
from livecart.core.parser import Parser
from livecart.core.records import Intent, Item, Parsed, ParseResult, Reason

log = logging.getLogger(__name__)

#: Distinct results kept in the table before both sides start it again.
TABLE_MAX = 1 << 16
#: Index of "parse it yourself" (the table's first entry is never a result).
YOURSELF = 0
_HEAD = struct.Struct("<I")
#: A frame longer than this is nonsense (a batch is at most a few thousand texts of at most 2,000 chars).
FRAME_MAX = 1 << 28
#: Requests not answered yet, and their bytes, beyond which :meth:`ParseAhead.ask` asks no more: a helper
#: that is behind (long comments are slow to parse, or it has no CPU) or stuck would otherwise have every
#: batch's texts buffered for it in the daemon (40,000 comments of 1,500 characters: 262 MB against 107).
MAX_WAITING = 64
MAX_WAITING_BYTES = 8 << 20

Fresh = list[tuple[str, list[tuple[str | None, str | None, int, str | None]]]]


class ParseAheadGone(Exception):
    """The helper process stopped answering; the daemon parses itself from here on."""


# ---------------------------------------------------------------------------------------------- the helper

def _read_frame(inp: BinaryIO) -> bytes | None:
    head = inp.read(4)
    if len(head) < 4:
        return None
    (n,) = _HEAD.unpack(head)
    body = inp.read(n)
    return body if len(body) == n else None


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """The helper's loop: read requests from ``inp`` and answer on ``out`` until ``inp`` ends."""
    init = _read_frame(inp)
    if init is None:
        return 0
    catalogue, bare_plus_one, max_qty, table_max = pickle.loads(init)  # noqa: S301 - from our own parent
    parse = Parser(catalogue, bare_plus_one=bare_plus_one, max_qty=max_qty).parse
    decode = msgspec.msgpack.Decoder(tuple[str | None, list[str]]).decode
    encode = msgspec.msgpack.Encoder().encode
    table: dict[ParseResult, int] = {}
    while (frame := _read_frame(inp)) is not None:
        featured, texts = decode(frame)
        reset = len(table) >= table_max
        if reset:
            table.clear()
        fresh: Fresh = []
        idx = array("I")
        put = idx.append
        for text in texts:
            try:
                r = parse(text, featured)
            except Exception:  # the daemon parses it again and logs, counts and survives it there
                put(YOURSELF)
                continue
            i = table.get(r)
            if i is None:
                i = table[r] = len(table) + 1
                fresh.append((r.intent.value, [(it.sku, it.variant, it.qty,
                                                None if it.reason is None else it.reason.value)
                                               for it in r.items]))
            put(i)
        body = encode((reset, fresh, idx.tobytes()))
        out.write(_HEAD.pack(len(body)))
        out.write(body)
        out.flush()
    return 0


def main() -> int:
    # Ctrl-C in the daemon's terminal, or systemd's SIGTERM to the whole unit, reaches this process too.
    # The daemon decides when it ends: it closes the pipe during its shutdown (and its end, even by
    # SIGKILL, closes it too), so the helper never dies in the middle of the daemon's drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The answers go out on the pipe that was stdout; anything printed from here on goes to stderr, where it
    # cannot be taken for an answer.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


# ---------------------------------------------------------------------------------------------- the daemon's side

class ParseAhead:
    """The daemon's end of the helper process. Start with :meth:`start`; :meth:`ask` per batch."""

    def __init__(self, proc: asyncio.subprocess.Process, where: str) -> None:
        self.proc = proc
        self.where = where
        #: Set once the helper is stopped or gone; :meth:`ask` then returns None.
        self.gone: str | None = None
        self._waiting: deque[tuple[asyncio.Future[Parsed], str | None, int]] = deque()
        self._bytes = 0  # of the requests in _waiting
        self._table: list[ParseResult | None] = [None]
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(tuple[bool, Fresh, bytes]).decode
        self._reader: asyncio.Task[None] | None = None
        #: Batches answered (whether or not the engine still wanted them).
        self.answered = 0
        #: Batches not sent: a text could not be encoded (a lone surrogate); the daemon parsed them.
        self.unsent = 0
        #: Batches not sent because the helper was behind (MAX_WAITING, MAX_WAITING_BYTES).
        self.skipped = 0

    @classmethod
    async def start(cls, catalogue: Catalogue, *, bare_plus_one: bool = True, max_qty: int = DEFAULT_MAX_QTY,
                    table_max: int = TABLE_MAX) -> ParseAhead:
        """Start the helper with a parser of ``catalogue`` (the arguments of
        :class:`~livecart.core.parser.Parser`). Raises :class:`OSError` if it cannot.

        The daemon starts it before it reads its journal: forking a small process is quicker (~5 ms against
        ~15 ms at 150 MB), and the helper's own start (~0.17 s) goes on while the journal is read."""
        # -P: not the working directory first on the import path (a livecart.py or msgspec.py of the
        # operator's there would be imported instead). Its own session: Ctrl-C in a terminal signals the
        # daemon's process group, and the helper is not in it (it ignores SIGINT and SIGTERM too, but only
        # once its imports are done, ~0.2 s after it starts).
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "livecart.runtime.parsework",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        self = cls(proc, f"pid {proc.pid}")
        self._send(pickle.dumps((catalogue, bare_plus_one, max_qty, table_max), protocol=pickle.HIGHEST_PROTOCOL))
        self._reader = asyncio.create_task(self._read_loop(), name="parse-ahead")
        return self

    def _send(self, body: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(_HEAD.pack(len(body)))
        stdin.write(body)

    def ask(self, texts: Sequence[str], featured: str | None) -> asyncio.Future[Parsed] | None:
        """Start parsing ``texts`` under ``featured``; the future gives ``(featured, results)``, one result
        (or None: parse it yourself) a text. None when the helper is gone. Never waits."""
        if self.gone is not None or len(self._waiting) >= MAX_WAITING or self._bytes >= MAX_WAITING_BYTES:
            self.skipped += self.gone is None
            return None
        try:
            body = self._encode((featured, texts))
        except (msgspec.EncodeError, ValueError):  # a lone surrogate in a text (UnicodeEncodeError): parsed here
            self.unsent += 1
            return None
        fut: asyncio.Future[Parsed] = asyncio.get_running_loop().create_future()
        try:
            self._send(body)
        except (OSError, RuntimeError):  # the pipe is closed: the helper died (its reader says how, if first)
            self._lost("it ended")
            return None
        self._waiting.append((fut, featured, len(body)))
        self._bytes += len(body)
        return fut

    async def _read_loop(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        table = self._table
        try:
            while True:
                head = await stdout.readexactly(4)
                (n,) = _HEAD.unpack(head)
                if n > FRAME_MAX:
                    raise ValueError(f"a frame of {n} bytes")
                reset, fresh, raw = self._decode(await stdout.readexactly(n))
                if reset:
                    del table[1:]
                for intent, items in fresh:
                    table.append(ParseResult(Intent(intent), tuple(
                        Item(sku, variant, qty, None if reason is None else Reason(reason))
                        for sku, variant, qty, reason in items)))
                idx = array("I")
                idx.frombytes(raw)
                if not self._waiting:
                    raise ValueError("an answer to nothing asked")
                results = list(map(table.__getitem__, idx))  # IndexError: an index it never sent
                fut, featured, size = self._waiting.popleft()
                self._bytes -= size
                self.answered += 1
                if not fut.done():  # the engine did not give up on it
                    fut.set_result((featured, results))
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            code = await self._exit_code()
            self._lost(f"it ended with exit status {code}")
        except Exception as exc:  # nonsense from it: stop it, parse here
            self._lost(f"its answer made no sense: {exc!r}")

    async def _exit_code(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), 1.0)
        return self.proc.returncode

    def _lost(self, why: str) -> None:
        if self.gone is None:
            self.gone = why
            log.warning("the parsing process (%s) is gone: %s; comments are parsed in the daemon from here on",
                        self.where, why)
        self._fail_waiting()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def _fail_waiting(self, *, forget: bool = True) -> None:
        """Fail every request not answered yet; ``forget=False`` keeps them in line, so that the answers
        the helper still sends (while it is being closed) are matched to them and dropped."""
        for fut, _, _ in self._waiting:
            if not fut.done():
                fut.set_exception(ParseAheadGone(self.gone or "stopped"))
                fut.exception()  # retrieved: nobody may be waiting for it
        if forget:
            self._waiting.clear()
            self._bytes = 0

    async def close(self) -> None:
        """Stop the helper: close its input (it answers what it has, then exits), wait a moment while its
        answers are still read (so that it never blocks writing to a full pipe), kill it if it has not."""
        if self.gone is None:
            self.gone = "stopped"  # its end is no news now: _lost logs nothing
        self._fail_waiting(forget=False)
        stdin = self.proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 2.0)
        except TimeoutError:
            log.warning("the parsing process (%s) did not end within 2 s of its input closing (stuck, or "
                        "stopped); killed", self.where)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def cpus(root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> int:
    """Whole CPUs this process may use: those it may run on, fewer when the CPU quota of its cgroup, or of
    one above it, says so (a container started with ``--cpus 1``, or a systemd unit with ``CPUQuota=``,
    still sees every CPU of the host)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _quota(root, own)
    return n if quota is None else max(1, min(n, int(quota)))


def _quota(root: Path, own: Path) -> float | None:
    """The smallest CPU quota, in CPUs, of the cgroups this process is in (as ``own`` lists them) and of
    their parents: v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``. None when there is
    none or it cannot be read."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        lines = []
    found: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2: one hierarchy, mounted at root
            found += filter(None, map(_v2, _up(root, path)))
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            base = next((b for b in (root / controllers, root / "cpu") if b.is_dir()), None)
            if base is not None:
                found += filter(None, map(_v1, _up(base, path)))
    if not lines:  # no /proc: the mount's own root at least
        found += filter(None, (_v2(root), _v1(root / "cpu")))
    return min(found) if found else None


def _up(base: Path, path: str) -> list[Path]:
    """``base/path`` and every folder above it up to ``base``."""
    d = base.joinpath(*[p for p in path.split("/") if p and p != ".."])
    out = [d]
    while d != base and base in d.parents:
        d = d.parent
        out.append(d)
    return out


def _v2(d: Path) -> float | None:
    try:
        quota, _, period = (d / "cpu.max").read_text().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1(d: Path) -> float | None:
    try:
        q = int((d / "cpu.cfs_quota_us").read_text())
        p = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if q <= 0 or p <= 0 else q / p


if __name__ == "__main__":
    sys.exit(main())
