"""Helpers for end-to-end tests: ``livecart run`` as a real subprocess, found through its state file.

Readiness is observed, never slept for: :meth:`Daemon.start` polls the control state file (written once the
daemon listens) and ``/healthz`` until they answer, with a deadline as a safety bound only. Every process
started is killed in :meth:`Daemon.kill` if it is still alive, which tests call in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

POLL = 0.01  # polling interval; every wait below is bounded by a deadline


def livecart(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a ``livecart`` command to completion (``python -m livecart.cli.main``: no venv activation needed)."""
    return subprocess.run([sys.executable, "-m", "livecart.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_for(cond: Callable[[], Any], what: str, deadline: float = 20.0) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``deadline`` seconds."""
    limit = time.monotonic() + deadline
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > limit:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(POLL)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - 127.0.0.1 only
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class Daemon:
    """One ``livecart run CFG`` subprocess; its log goes to ``<dir>/daemon-N.log``."""

    def __init__(self, cfg: Path, journal: Path, *, prefix: Sequence[str] = ()) -> None:
        """``prefix`` goes before the command, e.g. ``["prlimit", "--nofile=1024", "--"]``."""
        self.cfg = cfg
        self.prefix = list(prefix)
        self.state_path = Path(str(journal) + ".ctl.json")
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        self.runs = 0
        self.log_path = cfg.parent / "daemon-0.log"

    def start(self, deadline: float = 20.0) -> dict[str, Any]:
        self.runs += 1
        self.log_path = self.cfg.parent / f"daemon-{self.runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "livecart.cli.main", "run",
                                          str(self.cfg)],
                                         stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"livecart run exited with {proc.returncode}:\n{self.log()}")
            try:
                state: dict[str, Any] = orjson.loads(self.state_path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                return None
            if state.get("pid") != proc.pid:
                return None  # a stale file from an earlier run
            return state if http_get(state["status"] + "/healthz")[0] == 200 else None

        self.state = wait_for(ready, "the daemon to be ready", deadline)
        return self.state

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def api(self, path: str = "/api/state") -> Any:
        status, body = http_get(self.state["status"] + path)
        assert status == 200, body
        return orjson.loads(body) if path != "/metrics" else body.decode()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def ctl(self, *args: str) -> tuple[int, dict[str, Any], str]:
        r = livecart("ctl", str(self.cfg), *args)
        answer = json.loads(r.stdout) if r.stdout.strip() else {}
        return r.returncode, answer, r.stderr


class HangingHttp:
    """A TCP server that accepts HTTP requests and never answers (a hook endpoint that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.settimeout(5)
                if conn.recv(65536).startswith(b"POST"):
                    self.requests += 1
            self._conns.append(conn)  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self.sock.close()
