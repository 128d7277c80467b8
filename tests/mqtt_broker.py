"""A private Mosquitto for tests that need the broker settings of the docs ("MQTT: broker settings"): a
persistent store in a temporary folder, a queue large enough for a burst, on a free port of 127.0.0.1.

The process is started and stopped (or killed) by the test; :meth:`PrivateBroker.ready` waits until it
accepts connections, with a deadline as a safety bound only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {store}/
autosave_interval 1
max_queued_messages 1000000
max_inflight_messages 1000
persistent_client_expiration 1h
log_dest file {store}/mosquitto.log
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateBroker:
    """``mosquitto -c CONF`` on a free port, with its persistence in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        exe = shutil.which("mosquitto")
        if exe is None:
            pytest.skip("needs the mosquitto executable")
        self.exe = exe
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = folder / "mosquitto.conf"
        # As root, Mosquitto would switch to its own user, who cannot write a test's temporary folder.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(CONF.format(port=self.port, store=folder) + user, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self) -> PrivateBroker:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.ready()
        return self

    def ready(self, deadline: float = 15.0) -> None:
        limit = time.monotonic() + deadline
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(self.address, timeout=1).close()
                return
            except OSError:
                if time.monotonic() > limit:
                    raise AssertionError(f"mosquitto on port {self.port} did not start") from None
                time.sleep(0.02)  # the broker process is starting; there is nothing to wait on but time

    def log(self) -> str:
        p = self.folder / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        """SIGTERM: the broker saves its store, as a restart by an operator does."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=15)
            self.proc = None
