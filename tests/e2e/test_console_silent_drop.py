"""The host's console over a network that goes silent (docs/console.md, "Live").

Found from outside: with the phone's Wi-Fi stalled (no reset, sockets left open) the badge stayed green
"live" for minutes over frozen numbers, and a control tapped meanwhile said nothing, kept its button
disabled for good and was applied minutes later when the network came back.

Here real Chromium reaches ``livecart run`` through a TCP proxy that can be switched to a black hole: it stops
forwarding in both directions but keeps every connection open and holds what it was sent (as TCP would,
retransmitting), delivering it when it forwards again. The page is opened with ``?stall=6`` (its stream is
declared dead after 6 s of silence instead of 30) so that the test takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_sale import TOKEN, Sale, running_sale

pytestmark = pytest.mark.slow

STALL = 6  # seconds: the page's ?stall=
CONTROL_TIMEOUT = 10  # seconds: how long the page waits for a control's answer (app.js TIMEOUT)


class SilentProxy:
    """A TCP proxy from a free port on 127.0.0.1 to ``target``, on its own event loop in a thread.

    :meth:`stall` stops forwarding without closing anything: what either side sends (data or the end of its
    connection) is held until :meth:`resume`, new connections are accepted and held the same way."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.accepted = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="silent-proxy", daemon=True)
        self._thread.start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # set: forwarding; bound to the proxy's loop when first awaited
        self._flowing.set()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self.loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.set)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                await self._flowing.wait()
                writer.close()
                return
            pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                for w in (writer, up_writer):
                    w.close()
        finally:
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy ``src`` to ``dst`` until ``src`` ends; nothing (not even the end) passes while stalled."""
        while True:
            try:
                data = await src.read(65536)
            except OSError:
                data = b""
            await self._flowing.wait()
            if not data:
                return
            try:
                dst.write(data)
                await dst.drain()
            except OSError:
                return

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def restocks(metrics: str, result: str) -> float:
    """``livecart_controls_total`` of the console's restocks with ``result`` (0 when there is none)."""
    m = re.search(rf'^livecart_controls_total{{action="restock",result="{result}",transport="console"}} (\S+)$',
                  metrics, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def sale(tmp_path: Path) -> Iterator[Sale]:
    yield from running_sale(tmp_path)


@pytest.fixture
def proxy(sale: Sale) -> Iterator[SilentProxy]:
    p = SilentProxy(sale.port)
    try:
        yield p
    finally:
        p.close()


def test_a_silent_drop_is_noticed_and_a_control_tapped_during_it_is_answered_and_applied_once(
        sale: Sale, proxy: SilentProxy, chromium: Any) -> None:
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{proxy.url}/?lang=en&stall={STALL}")
        page.get_by_label("Control token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        conn = page.locator("#conn")
        page.locator("#conn.ok").filter(has_text="live").wait_for()
        stock = page.locator('tr[data-sku="honey-500"] [data-field="stock"]')
        stock.filter(has_text=re.compile(r"^30$")).wait_for()

        # A quiet sale is not a dead connection: the daemon's per-second deltas keep the page live.
        time.sleep(STALL + 3)  # longer than the stall window, on a healthy connection
        assert conn.get_attribute("class") == "conn ok"
        assert sum("/console/api/events" in u for u in requests) == 1

        # The network goes silent. The host taps Restock 5 -> Apply at once.
        proxy.stall()
        t0 = time.monotonic()
        row = page.locator('tr[data-sku="honey-500"]')
        row.get_by_role("button", name="Restock").click()
        page.get_by_label("Quantity").fill("5")
        apply = page.get_by_role("button", name="Apply")
        apply.click()
        assert apply.is_disabled()  # a double tap still sends it once

        # Within the window the badge stops saying "live".
        page.locator("#conn.down").filter(has_text="reconnecting").wait_for(timeout=(STALL + 4) * 1000)
        noticed = time.monotonic() - t0
        assert noticed < STALL + 4, noticed

        # The control gets no answer: within its timeout the page says so, keeps the form open and lets the
        # host tap again.
        page.locator("#toast.bad").filter(has_text="Cannot reach livecart").wait_for(
            timeout=(CONTROL_TIMEOUT + 5) * 1000)
        assert time.monotonic() - t0 < CONTROL_TIMEOUT + 5
        assert apply.is_enabled()
        assert page.get_by_label("Quantity").input_value() == "5"
        assert sale.state()["products"]["honey-500"]["stock"] == 30  # nothing got through
        assert conn.get_attribute("class") == "conn down"  # still down while the network is

        # The network comes back: what was held is delivered (the first tap may reach the daemon now), the
        # page reconnects by itself and its numbers move again.
        proxy.resume()
        page.locator("#conn.ok").filter(has_text="live").wait_for(timeout=(CONTROL_TIMEOUT + 5) * 1000)
        # The host taps Apply again: same request, same Idempotency-Key, so it is applied once in all.
        apply.click()
        page.locator("#toast:not(.bad)").filter(has_text="Applied: restock Wild honey").wait_for()
        page.get_by_label("Quantity").wait_for(state="detached")  # answered: the form closes
        stock.filter(has_text=re.compile(r"^35$")).wait_for()
        assert sale.daemon.ctl("restock", "tea/50g", "1")[0] == 0  # a later change still shows, live
        page.locator('tr[data-sku="tea/50g"] [data-field="stock"]').filter(has_text=re.compile(r"^11$")).wait_for()
        assert sale.state()["products"]["honey-500"]["stock"] == 35
        metrics = sale.daemon.api("/metrics")
        # Whichever of the two taps reached the daemon first was applied; the other, if it arrived, was given
        # the first one's answer (the held first tap usually arrives when the network comes back).
        assert restocks(metrics, "ok") == 1
        assert restocks(metrics, "replayed") <= 1

        assert [u for u in requests if not u.startswith(proxy.url + "/")] == []
        assert [e for e in errors if "Failed to load resource" not in e and "net::ERR_" not in e] == [], errors
    finally:
        context.close()
