"""One writer per journal: an OS-level lock held for the writer's whole life (docs/contract.md §6).

The lock is ``fcntl.flock`` on a file beside the journal, ``<journal>.lock``. The kernel drops it when the
holder's process ends, however it ends (``kill -9`` included), so a stale lock cannot outlive a crash. The
holder writes who it is into the file (JSON: ``pid``, ``started``, ``purpose`` and, once a daemon listens
for host controls, ``control``), so a refused second writer can say whom to stop. The lock file is never
deleted: removing it would let a third process lock a new file while the holder still holds the old one.

Readers (``livecart report``, ``export``, ``verify``) take no lock: SQLite's WAL lets them read beside the
writer without slowing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from livecart.core.errors import JournalError, JournalLocked


def lock_path(journal: str | Path) -> Path:
    """The lock file of the journal at ``journal``, beside the file it names after symlinks are followed
    (``Path.resolve``): a journal reached through a symlink, a symlinked folder or a relative path is the
    same journal, with the same lock. A hard link is a name no path resolves to: :meth:`JournalLock.hold_file`
    locks the file itself for that."""
    p = Path(journal).resolve()
    return p.with_name(p.name + ".lock")


def describe(holder: dict[str, Any]) -> str:
    """``pid 123, started 2026-11-30 17:02:11 UTC, controls at http://...`` from what a holder wrote."""
    parts = []
    if holder.get("pid"):
        parts.append(f"pid {holder['pid']}")
    if holder.get("purpose"):
        parts.append(f"livecart {holder['purpose']}")
    if isinstance(holder.get("started"), (int, float)):
        parts.append("started " + datetime.fromtimestamp(float(holder["started"]), UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"))
    if holder.get("control"):
        parts.append(f"controls at {holder['control']}")
    return ", ".join(parts) or "a process that has not said who it is yet"


def read_holder(journal: str | Path) -> dict[str, Any]:
    """What the current (or last) holder wrote into the lock file; ``{}`` if nothing readable."""
    try:
        data = orjson.loads(lock_path(journal).read_bytes() or b"{}")
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class JournalLock:
    """The writer lock of one journal, held until :meth:`release` (or the process ends).

    Take it with :meth:`acquire`. Not re-entrant: a second ``acquire`` for the same journal, even in the
    same process, is refused, which is what makes "one writer" hold for tests running two engines too.
    """

    def __init__(self, journal: Path, fd: int, info: dict[str, Any]) -> None:
        self.journal = journal
        self.path = lock_path(journal)
        self._fd: int | None = fd
        self.info = info
        #: A descriptor of the journal file itself, flocked (:meth:`hold_file`), and the inode it is of.
        self._file: tuple[int, int, int] | None = None

    @classmethod
    def acquire(cls, journal: str | Path, *, purpose: str = "run") -> JournalLock:
        """Lock ``journal`` for writing, at once or not at all.

        Raises :class:`JournalLocked` (naming the holder) when another writer holds it, and
        :class:`JournalError` when the lock file cannot be created.
        """
        j = Path(journal)
        path = lock_path(j)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot create the lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(j)
            raise JournalLocked(
                f"the journal {j} is in use by another livecart ({describe(holder)}); only one process may "
                "write a journal. Stop that one first (or use its controls: livecart ctl), or give this "
                "stream another [storage] path.", holder) from None
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        lock = cls(j, fd, {"pid": os.getpid(), "started": round(time.time(), 3), "purpose": purpose,
                           "control": None})
        lock._write()
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold_file(self, journal_file: str | Path) -> None:
        """Also lock the journal file itself, by its inode, for as long as this lock is held.

        The lock file beside the journal is found by the journal's name, symlinks resolved; a hard link is a
        second name for the same file that no path tells of. A flock on the file's own inode, taken once the
        file exists, is the same lock under every name. (An flock is independent of SQLite's POSIX locks on
        the file; the descriptor is closed only in :meth:`release`, after the store has closed the file,
        since closing any descriptor of a file drops the process's POSIX locks on it.) Raises
        :class:`JournalLocked` when another process holds the file under another name."""
        st = os.stat(journal_file)
        if self._file is not None:
            if self._file[1:] == (st.st_dev, st.st_ino):
                return
            os.close(self._file[0])  # the file was replaced (a repair): hold the new one
            self._file = None
        fd = os.open(journal_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"the journal {journal_file} is in use by another livecart that opened it under another name "
                "(a hard link to the same file); only one process may write a journal. Stop that one first, "
                "or give this stream another [storage] path.", {}) from None
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot lock {journal_file}: {exc.strerror or exc}") from exc
        self._file = (fd, st.st_dev, st.st_ino)

    def update(self, **info: Any) -> None:
        """Add to what the lock file says about the holder (e.g. ``control=URL`` once it listens)."""
        self.info.update(info)
        self._write()

    def _write(self) -> None:
        if self._fd is None:
            return
        data = orjson.dumps(self.info)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Unlock (the file stays, emptied). Idempotent."""
        if self._file is not None:
            os.close(self._file[0])
            self._file = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> JournalLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<JournalLock {self.path.name}: {'held' if self.held else 'released'} by pid {self.info.get('pid')}>"


def hold_existing(lock: JournalLock, journal: Path) -> None:
    """:meth:`JournalLock.hold_file` on ``journal`` if the file exists yet (a stat and an flock: no wait)."""
    if journal.exists():
        lock.hold_file(journal)
