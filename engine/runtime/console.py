"""The host's console: a web page at ``/`` of the status address (docs/contract.md §8).

What it serves, on the status server's aiohttp application:

* ``GET /`` the page, ``GET /console/{app.js,app.css,summary.js}`` its assets (shipped in the wheel under
  ``livecart/console/``; no resource from anywhere else). The page holds no data and no secret: it asks
  for the ``[control].token`` once and everything else comes from the session-protected API below.
* ``POST /console/login`` ``{"token": ...}`` -> an HttpOnly, SameSite=Strict session cookie and the
  session's CSRF token; ``POST /console/logout`` clears it.
* ``GET /console/api/session``: the session's CSRF token and the page's language, or ``{"login": true}``.
* With the session only (401 otherwise): ``GET /console/api/events`` (server
  push, Server-Sent Events), ``GET /console/api/orders``, ``GET /console/api/queue``,
  ``GET /console/api/summary``, and the changes, ``POST /console/api/control`` and ``POST /console/api/pay``.

Cross-site requests: every POST must carry the session's CSRF token in ``X-CSRF-Token`` (a form on another
site cannot set a header) and must not be cross-site by ``Sec-Fetch-Site`` or ``Origin``; login checks the
last two. The cookie is SameSite=Strict on top.

Sessions are stateless: the cookie is ``EXPIRES.NONCE.MAC`` with an HMAC keyed by the control token, so a
session survives a daemon restart with the same token (the open page reconnects by itself) and a new token
ends every session.

Live updates: a ticker (:meth:`Console.run`) looks at the ledger every :data:`TICK` seconds and, when
something changed, encodes *one* delta (changed product figures, rates, new feed lines, adapter health) and
hands the same bytes to every open page; a page that cannot keep up is dropped (it reconnects and gets a full
state). So the cost is per tick, not per outcome or per page, and a durable outcome shows within ``TICK``
plus the network.

Every control goes through the daemon's one control entry (``handle_control``), which journals it exactly
like ``livecart ctl``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.resources
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web

from livecart.core.catalogue import Catalogue
from livecart.core.control import KEY, Control, ControlAction
from livecart.core.errors import BadControl
from livecart.core.events import Event
from livecart.core.ledger import CONTROL_KEY_SECONDS, CONTROL_KEYS
from livecart.core.records import Outcome
from livecart.listen import UnreadableBody, closing, read_body
from livecart.runtime.control import ControlCounts, apply
from livecart.runtime.metrics import Registry
from livecart.runtime.replies import shown_name

log = logging.getLogger("livecart.console")

#: Seconds between two looks at the ledger (deltas go out at most this often).
TICK = 0.25
#: Seconds a session lasts.
SESSION_SECONDS = 12 * 3600
#: Latest outcomes and events kept for the feed.
FEED = 60
#: Per-second samples kept for the charts (beyond this, older samples are merged pairwise).
HISTORY = 1800
#: Deltas a page may have waiting before it is dropped (it reconnects and gets a full state).
CLIENT_BACKLOG = 64
COOKIE = "livecart_session"
STATUSES = ("reserved", "presale", "paid", "cancelled", "expired", "rejected", "promoted")
#: Controls the console may send (``status`` is what the page already shows).
ACTIONS = frozenset({ControlAction.FEATURE, ControlAction.RESTOCK, ControlAction.PRESALE, ControlAction.LIMIT,
                     ControlAction.PAY, ControlAction.CANCEL, ControlAction.PAUSE, ControlAction.RESUME})
ASSETS = {"app.js": "application/javascript", "app.css": "text/css", "summary.js": "application/javascript"}
SECURITY_HEADERS = {
    # Nothing but the daemon itself: scripts, styles, images, connections.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def asset(name: str) -> bytes:
    """One of the console's files shipped in the package (``livecart/console/NAME``)."""
    return importlib.resources.files("livecart").joinpath("console", name).read_bytes()


class Host(Protocol):
    """What the console needs from the daemon (:class:`livecart.runtime.daemon.Daemon` is one)."""

    names: Mapping[str, str]

    def buyer_name(self, user: str, order: str | None = None) -> str: ...
    def snapshot(self) -> Mapping[str, Any]: ...
    def order_rows(self) -> Iterator[dict[str, Any]]: ...
    def presale_queue(self, key: str) -> list[dict[str, Any]]: ...
    def adapter_state(self) -> dict[str, dict[str, Any]]: ...
    def is_paused(self) -> bool: ...
    def handle_control(self, c: Control) -> Awaitable[Mapping[str, Any]]: ...
    def limits(self) -> Mapping[str, int]: ...
    def recent_orders(self, n: int) -> Sequence[Outcome]: ...


class Sessions:
    """Stateless session cookies and CSRF tokens, both HMACs keyed by the control token. Pure but for the
    injected clock."""

    def __init__(self, token: Callable[[], str], *, clock: Callable[[], float] = time.time,
                 lifetime: float = SESSION_SECONDS) -> None:
        self._token = token
        self.clock = clock
        self.lifetime = lifetime
        #: Sessions logged out, by nonce, with when they would have expired (forgotten then).
        self._revoked: dict[str, float] = {}

    def _key(self) -> bytes:
        return hashlib.sha256(b"livecart-console\0" + self._token().encode()).digest()

    def _mac(self, text: str) -> str:
        return hmac.new(self._key(), text.encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: object) -> bool:
        token = self._token()
        return bool(token) and isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())

    def issue(self) -> str:
        expires = int(self.clock() + self.lifetime)
        nonce = secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{self._mac(f's|{expires}|{nonce}')}"

    def nonce(self, cookie: str | None) -> str | None:
        """The session's nonce when ``cookie`` is a valid, unexpired session, else None."""
        if not cookie or not self._token():
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"s|{expires}|{nonce}")) or int(expires) < self.clock():
            return None
        if nonce in self._revoked:
            return None
        return nonce

    def revoke(self, cookie: str | None) -> None:
        """Log a session out: its cookie is refused from now on (until this process ends; a new
        ``[control].token`` ends every session for good)."""
        nonce = self.nonce(cookie)
        if nonce is None or cookie is None:
            return
        now = self.clock()
        for n, until in list(self._revoked.items()):
            if until < now:
                del self._revoked[n]
        self._revoked[nonce] = float(cookie.split(".")[0])

    def csrf(self, nonce: str) -> str:
        return self._mac(f"c|{nonce}")

    def __repr__(self) -> str:
        return f"<Sessions lifetime={self.lifetime:.0f}s>"


#: Wrong tokens from one address within LOGIN_WINDOW seconds before its logins are refused (429) until the
#: oldest of them is that old.
LOGIN_FAILURES = 10
LOGIN_WINDOW = 60.0

#: Controls remembered by Idempotency-Key (a host's tap sent again after no answer is applied once): how
#: many, and for how long (s).
IDEMPOTENCY_KEYS = CONTROL_KEYS
IDEMPOTENCY_SECONDS = CONTROL_KEY_SECONDS


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json", headers=SECURITY_HEADERS)


def _denied(status: int, error: str) -> web.Response:
    return _json({"ok": False, "error": error}, status)


def _cross_site(request: web.Request) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"cross-site request refused (Origin {origin} is not this console)"
    return None


class _Client:
    __slots__ = ("queue", "dropped")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_BACKLOG)
        self.dropped = False


class Console:
    """The console's routes, its live state and the ticker that pushes deltas. ``token`` returns the control
    token (the daemon generates one when ``[control].token`` is empty); ``language`` is the page's default.
    """

    def __init__(self, host: Host, catalogue: Catalogue, token: Callable[[], str], *, stream: str,
                 language: str = "zh", hold_minutes: float = 0.0, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.catalogue = catalogue
        self.stream = stream
        self.language = language if language in ("zh", "en") else "zh"
        self.hold_minutes = hold_minutes
        self.sessions = Sessions(token, clock=clock)
        self.clock = clock
        self.started = clock()
        reg = registry if registry is not None else Registry()
        self._counts = ControlCounts(reg)
        self._controls = self._counts.counter
        self._clients_g = reg.gauge("console_clients", "Open console pages (live connections)")
        self._refused = reg.counter("console_refused_total", "Console requests refused, by reason")
        self._work = reg.counter("console_seconds_total",
                                 "Seconds the daemon spent on the console's live updates (feed, deltas, pushes)")
        self.clients: set[_Client] = set()
        self._restored = False
        #: Wrong tokens by remote address: when, within the last LOGIN_WINDOW seconds.
        self._failed_logins: dict[str, deque[float]] = {}
        #: Answers of recent controls by their Idempotency-Key: (when, the body, the answer to come or given).
        self._answers: OrderedDict[str, tuple[float, bytes, asyncio.Future[tuple[int, dict[str, Any]]]]] = \
            OrderedDict()
        self.prices = {p.sku: p.price for p in catalogue.products}
        for p in catalogue.products:
            for v in p.variants:
                self.prices[f"{p.sku}/{v.name}"] = v.price if v.price is not None else p.price
        # Feed: durable outcomes and stream events, newest last; ``_fed`` counts everything ever added.
        self._feed: deque[Outcome | dict[str, Any]] = deque(maxlen=FEED)
        self._fed = 0
        self._sent_fed = 0
        self._events: list[dict[str, Any]] = []
        self.history: list[list[float]] = []  # [t, comments/s, orders/s] once a second
        self._last: dict[str, Any] = {}
        self._sample: tuple[float, int, int] | None = None
        self._rates = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        #: Called with an event stream's transport: the status server's connection guard must not close
        #: it for idleness (the page sends nothing on it).
        self.streaming: Callable[[object], None] | None = None

    # ------------------------------------------------------------------ fed by the daemon (never blocks)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Durable outcomes (an engine listener): only references to the latest few are kept (turned into
        feed lines when a delta goes out), so a batch costs O(FEED) pointer copies."""
        t0 = time.perf_counter()
        self._fed += len(outcomes)
        self._feed.extend(outcomes[-FEED:] if len(outcomes) > FEED else outcomes)
        self._work.inc(time.perf_counter() - t0)

    def record_event(self, event: Event) -> None:
        """A stream event (sold out, presale opened/full, low stock)."""
        self.note({"kind": "event", "event": event.kind.value, "key": event.key, **event.data})

    def record_control(self, c: Control) -> None:
        """A host control the daemon applied, whichever way it came (console, ``ctl``, MQTT)."""
        self.note({"kind": "control", **{k: v for k, v in c.to_dict().items() if v is not None}})

    def note(self, item: dict[str, Any]) -> None:
        """A feed line (stream events, host actions)."""
        item.setdefault("ts", self.clock())
        self._fed += 1
        self._feed.append(item)
        if item.get("kind") == "event":
            self._events.append(item)

    # ------------------------------------------------------------------ state and deltas

    def _products(self, snap: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        limits = self.host.limits() if hasattr(self.host, "limits") else {}
        for key, p in snap["products"].items():
            paid = int(p.get("paid", 0))
            out[key] = {"stock": p["stock"], "left": p["left"], "reserved": p["reserved"], "paid": paid,
                        "held": p["reserved"] - paid, "presale": p["presale"], "queue": p.get("queue", 0),
                        "cap": p.get("cap", 0), "limit": limits.get(key.partition("/")[0], 0)}
        return out

    def _revenue(self, products: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        paid = held = 0.0
        for key, p in products.items():
            price = self.prices.get(key, 0.0)
            paid += p["paid"] * price
            held += p["held"] * price
        return {"paid": round(paid, 2), "held": round(held, 2)}

    def _measure(self, snap: Mapping[str, Any]) -> None:
        now = self.clock()
        comments, orders = int(snap["comments"]), int(snap["orders"])
        if self._sample is None:
            self._sample = (now, comments, orders)
            return
        t0, c0, o0 = self._sample
        if now - t0 >= 1.0:
            dt = now - t0
            self._rates = (round((comments - c0) / dt, 1), round((orders - o0) / dt, 1))
            self._sample = (now, comments, orders)
            self.history.append([round(now, 1), *self._rates])
            if len(self.history) > HISTORY:
                # Keep the whole sale at a coarser grain: merge pairs of the older half.
                old = self.history[: HISTORY // 2]
                merged = [[a[0], round((a[1] + b[1]) / 2, 1), round((a[2] + b[2]) / 2, 1)]
                          for a, b in zip(old[::2], old[1::2], strict=False)]
                self.history = merged + self.history[HISTORY // 2:]

    def full(self) -> dict[str, Any]:
        """Everything the page shows, at once (the first message on every connection). Its feed ends where the
        last delta's did: the lines since come in the next delta, to every page (a page that connected just
        after a restart showed the orders before it, and the line saying so, twice)."""
        snap = self.host.snapshot()
        products = self._products(snap)
        feed = list(self._feed)
        pending = min(self._fed - self._sent_fed, len(feed))
        return {"type": "full", "stream": self.stream, "t": self.clock(), "started": self.started,
                "featured": snap["featured"], "paused": self.host.is_paused(), "comments": snap["comments"],
                "orders": snap["orders"], "outcomes": snap["outcomes"], "rates": list(self._rates),
                "products": products, "revenue": self._revenue(products), "adapters": self.host.adapter_state(),
                "feed": [self._named(f) for f in feed[:len(feed) - pending]], "history": self.history,
                "names": self._product_names()}

    def _product_names(self) -> dict[str, str]:
        names = {p.sku: p.name for p in self.catalogue.products}
        for p in self.catalogue.products:
            for v in p.variants:
                names[f"{p.sku}/{v.name}"] = f"{p.name} · {v.name}"
        return names

    def _named(self, item: Outcome | Mapping[str, Any]) -> dict[str, Any]:
        """A feed line as the page gets it, with the buyer's display name."""
        if isinstance(item, Outcome):
            o = item
            return {"kind": "outcome", "ts": o.ts, "user": o.user, "name": self.host.buyer_name(o.user, o.order),
                    "order": o.order, "sku": o.sku, "variant": o.variant, "qty": o.qty, "status": o.status.value,
                    "reason": o.reason.value if o.reason is not None else None, "position": o.position}
        user = item.get("user")
        if user is None:
            return dict(item)
        order = item.get("order")
        return {**item, "name": self.host.buyer_name(str(user), str(order) if order is not None else None)}

    def delta(self) -> dict[str, Any] | None:
        """What changed since the last call, or None when nothing did."""
        snap = self.host.snapshot()
        self._measure(snap)
        products = self._products(snap)
        last = self._last
        out: dict[str, Any] = {}
        changed = {k: v for k, v in products.items() if last.get("products", {}).get(k) != v}
        if changed:
            out["products"] = changed
            out["revenue"] = self._revenue(products)
        for field, value in (("featured", snap["featured"]), ("paused", self.host.is_paused()),
                             ("comments", snap["comments"]), ("orders", snap["orders"]),
                             ("outcomes", snap["outcomes"]), ("rates", list(self._rates)),
                             ("adapters", self.host.adapter_state())):
            if last.get(field) != value:
                out[field] = value
        if self.history and last.get("history_t") != self.history[-1][0]:
            out["sample"] = self.history[-1]
        new = min(self._fed - self._sent_fed, len(self._feed))
        if new:
            out["feed"] = [self._named(f) for f in list(self._feed)[-new:]]
        self._sent_fed = self._fed
        self._last = {"products": products, "featured": snap["featured"], "paused": self.host.is_paused(),
                      "comments": snap["comments"], "orders": snap["orders"], "outcomes": snap["outcomes"],
                      "rates": list(self._rates), "adapters": out.get("adapters", last.get("adapters")),
                      "history_t": self.history[-1][0] if self.history else None}
        if "adapters" not in self._last or self._last["adapters"] is None:
            self._last["adapters"] = self.host.adapter_state()
        if not out:
            return None
        out["type"] = "delta"
        out["t"] = self.clock()
        return out

    def summary(self) -> dict[str, Any]:
        """The after-sale summary (also what ``livecart report --html`` writes)."""
        snap = self.host.snapshot()
        return summary_data(self.stream, self._products(snap), self._product_names(), self.prices, snap,
                            self.history, self._events, language=self.language,
                            since=self.started if self._restored else None)

    # ------------------------------------------------------------------ the ticker

    def broadcast(self, message: Mapping[str, Any]) -> None:
        frame = b"event: " + str(message["type"]).encode() + b"\ndata: " + orjson.dumps(
            message, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"
        for c in list(self.clients):
            try:
                c.queue.put_nowait(frame)
            except asyncio.QueueFull:
                c.dropped = True
                self.clients.discard(c)

    async def run(self) -> None:
        """Push a delta to every open page each :data:`TICK` seconds when something changed."""
        while True:
            await asyncio.sleep(TICK)
            self.ticks += 1
            t0 = time.perf_counter()
            try:
                d = self.delta()
                if d is not None and self.clients:
                    self.broadcast(d)
            except Exception:  # a bug here must not end the sale
                log.exception("console delta failed")
            self._work.inc(time.perf_counter() - t0)

    def start(self) -> asyncio.Task[None]:
        # Comments in the journal before this process: its timeline and events begin now (said on the page).
        self._restored = bool(self.host.snapshot().get("comments"))
        if self._restored and not self._fed:
            # A host who reopens the page after a crash sees the sale's newest orders as they stand, under a
            # line saying the daemon started again, rather than an empty feed.
            recent = self.host.recent_orders(FEED - 1)
            self._fed += len(recent)
            self._feed.extend(recent)
            self.note({"kind": "restart"})
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="console")
        return self._task

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # An empty frame ends each open stream, so the status server can stop without waiting for them.
        for c in list(self.clients):
            c.dropped = True
            with contextlib.suppress(asyncio.QueueFull):
                c.queue.put_nowait(b"")
        self.clients.clear()

    # ------------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._page)
        r.add_get("/console/{name}", self._asset)
        r.add_post("/console/login", self._login)
        r.add_post("/console/logout", self._logout)
        r.add_get("/console/api/session", self._session)
        r.add_get("/console/api/events", self._events_stream)
        r.add_get("/console/api/orders", self._orders)
        r.add_get("/console/api/queue", self._queue)
        r.add_get("/console/api/summary", self._summary)
        r.add_post("/console/api/control", self._control)
        r.add_post("/console/api/pay", self._pay)

    def _nonce(self, request: web.Request) -> str | None:
        return self.sessions.nonce(request.cookies.get(COOKIE))

    def _refuse(self, reason: str, status: int, error: str) -> web.Response:
        self._refused.inc(reason=reason)
        return _denied(status, error)

    def _guard_post(self, request: web.Request) -> web.Response | None:
        nonce = self._nonce(request)
        if nonce is None:
            return self._refuse("session", 401, "log in first")
        why = _cross_site(request)
        if why is not None:
            return self._refuse("cross_site", 403, why)
        given = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(given.encode(), self.sessions.csrf(nonce).encode()):
            return self._refuse("csrf", 403, "missing or wrong CSRF token; reload the page")
        return None

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=asset("index.html"), content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = ASSETS.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        return web.Response(body=asset(name), content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    async def _login(self, request: web.Request) -> web.Response:
        why = _cross_site(request)
        if why is not None:
            return self._refuse("cross_site", 403, why)
        try:
            body = orjson.loads(await read_body(request))
        except UnreadableBody as exc:
            return closing(self._refuse("bad", 400, str(exc)))
        except orjson.JSONDecodeError:
            return self._refuse("bad", 400, "the body must be JSON: {\"token\": ...}")
        who = request.remote or ""
        now = self.clock()
        recent = self._failed_logins.setdefault(who, deque())
        while recent and recent[0] < now - LOGIN_WINDOW:
            recent.popleft()
        if len(recent) >= LOGIN_FAILURES:
            wait = int(recent[0] + LOGIN_WINDOW - now) + 1
            resp = self._refuse("throttled", 429, f"too many wrong tokens from {who}; try again in {wait} s")
            resp.headers["Retry-After"] = str(wait)
            return resp
        if not isinstance(body, dict) or not self.sessions.check_token(body.get("token")):
            # A wrong guess costs the guesser a second, and a few in a row from one address a minute.
            recent.append(now)
            if len(self._failed_logins) > 10_000:  # addresses that stopped guessing: forgotten
                self._failed_logins = {k: v for k, v in self._failed_logins.items() if v}
            await asyncio.sleep(1.0)
            return self._refuse("token", 401, "wrong token; it is [control].token in the stream's config")
        recent.clear()
        cookie = self.sessions.issue()
        nonce = self.sessions.nonce(cookie)
        assert nonce is not None
        resp = _json({"ok": True, "csrf": self.sessions.csrf(nonce)})
        resp.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True, samesite="Strict", path="/")
        log.info("console: a session was opened from %s", request.remote)
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        refused = self._guard_post(request)
        if refused is not None:
            return refused
        self.sessions.revoke(request.cookies.get(COOKIE))
        resp = _json({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        log.info("console: a session was closed from %s", request.remote)
        return resp

    async def _session(self, request: web.Request) -> web.Response:
        nonce = self._nonce(request)
        if nonce is None:
            # The page asks this first; "log in" is an answer, not an error (nothing else is told).
            return _json({"ok": False, "login": True})
        return _json({"ok": True, "csrf": self.sessions.csrf(nonce), "stream": self.stream,
                      "language": self.language, "hold_minutes": self.hold_minutes})

    async def _events_stream(self, request: web.Request) -> web.StreamResponse:
        if self._nonce(request) is None:
            return self._refuse("session", 401, "log in first")
        resp = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        if self.streaming is not None:
            self.streaming(request.transport)
        client = _Client()
        first = self.full()
        # A page, from its full state on, gets every delta and no delta twice: added before the first await, so
        # a tick while the full state is written is queued behind it (full() leaves its feed lines to it).
        self.clients.add(client)
        self._clients_g.set(len(self.clients))
        try:
            await resp.write(b"retry: 1000\nevent: full\ndata: " + orjson.dumps(first, option=orjson.OPT_NON_STR_KEYS)
                             + b"\n\n")
            while not client.dropped:
                try:
                    frame = await asyncio.wait_for(client.queue.get(), 15.0)
                except TimeoutError:
                    frame = b"event: ping\ndata: {}\n\n"  # seen by the page (a comment is not): it is alive
                if not frame:
                    break
                t0 = time.perf_counter()
                await resp.write(frame)
                self._work.inc(time.perf_counter() - t0)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(client)
            self._clients_g.set(len(self.clients))
        return resp

    async def _orders(self, request: web.Request) -> web.Response:
        if self._nonce(request) is None:
            return self._refuse("session", 401, "log in first")
        q = request.query.get("q", "").strip()
        status = request.query.get("status", "").strip()
        user = request.query.get("user", "").strip()
        platform = request.query.get("platform", "").strip()
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "200"))))
            offset = max(0, min(1_000_000_000, int(request.query.get("offset", "0"))))
        except ValueError:
            return _denied(400, "limit and offset must be numbers")
        if status and status not in STATUSES and status != "unpaid":
            return _denied(400, f"status must be one of: unpaid, {', '.join(STATUSES)}")
        return _json(find_orders(self.host.order_rows(), self.host.names, q=q, status=status, user=user,
                                 platform=platform,
                                 limit=limit, offset=offset))

    async def _queue(self, request: web.Request) -> web.Response:
        if self._nonce(request) is None:
            return self._refuse("session", 401, "log in first")
        key = request.query.get("key", "")
        if key not in self.prices:
            return _denied(404, f"no product {key!r}")
        rows = self.host.presale_queue(key)
        buyer_name = self.host.buyer_name
        return _json({"key": key, "queue": [{**r, "place": i, "name": buyer_name(r["user"], r["order"])}
                                            for i, r in enumerate(rows, 1)]})

    async def _summary(self, request: web.Request) -> web.Response:
        if self._nonce(request) is None:
            return self._refuse("session", 401, "log in first")
        return _json(self.summary())

    async def _apply(self, c: Control) -> tuple[int, dict[str, Any]]:
        return await apply(self.host.handle_control, c, self._counts, "console")

    async def _control(self, request: web.Request) -> web.Response:
        """``POST /console/api/control``. With an ``Idempotency-Key`` header, the same control sent again with
        the same key (the page sends a tap again with the key of one that got no answer) is given the first
        one's answer, marked ``Idempotent-Replayed: true``, and applied once; a second request that comes
        while the first is being applied waits for its answer."""
        refused = self._guard_post(request)
        if refused is not None:
            return refused
        try:
            raw = await read_body(request)
        except UnreadableBody as exc:
            self._controls.inc(transport="console", action="", result="bad")
            return closing(_denied(400, str(exc)))
        key = request.headers.get("Idempotency-Key")
        if key is None:
            status, answer = await self._control_once(raw)
            return _json(answer, status)
        if not KEY.fullmatch(key):
            return _denied(400, "Idempotency-Key must be 8 to 64 letters, digits, '-' or '_'")
        now = self.clock()
        answers = self._answers
        while answers and (len(answers) > IDEMPOTENCY_KEYS
                           or next(iter(answers.values()))[0] < now - IDEMPOTENCY_SECONDS):
            answers.popitem(last=False)
        seen = answers.get(key)
        if seen is not None:
            if seen[1] != raw:
                return _denied(422, "this Idempotency-Key came with another control")
            status, answer = await asyncio.shield(seen[2])
            self._controls.inc(transport="console", action=str(answer.get("action", "")), result="replayed")
            response = _json(answer, status)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        fut: asyncio.Future[tuple[int, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        answers[key] = (now, raw, fut)
        try:
            status, answer = await self._control_once(raw, key)
        except BaseException as exc:
            # Not answered (the request was cancelled on the way): a retry with this key is tried afresh, and
            # one already waiting is told so.
            answers.pop(key, None)
            fut.set_result((503, {"ok": False, "error": f"the first request with this key did not finish "
                                                         f"({type(exc).__name__}); send it again"}))
            raise
        fut.set_result((status, answer))
        response = _json(answer, status)
        if answer.get("result", {}).get("replayed"):  # applied by the daemon before it restarted
            response.headers["Idempotent-Replayed"] = "true"
        return response

    async def _control_once(self, raw: bytes, key: str | None = None) -> tuple[int, dict[str, Any]]:
        """Decode and apply one control (with ``key``, its Idempotency-Key, journalled with it so that a
        daemon started again knows it): its HTTP status and answer."""
        try:
            c = Control.from_json(orjson.loads(raw)).keyed(key)
        except orjson.JSONDecodeError:
            return 400, {"ok": False, "error": "the body must be a JSON control"}
        except BadControl as exc:
            self._controls.inc(transport="console", action="", result="bad")
            return 400, {"ok": False, "error": str(exc)}
        if c.action not in ACTIONS:
            return 400, {"ok": False, "error": f"{c.action.value} is not a console control"}
        return await self._apply(c)

    async def _pay(self, request: web.Request) -> web.Response:
        refused = self._guard_post(request)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await read_body(request))
        except UnreadableBody as exc:
            self._controls.inc(transport="console", action="pay", result="bad")
            return closing(_denied(400, str(exc)))
        except orjson.JSONDecodeError:
            return _denied(400, "the body must be JSON: {\"orders\": [...]}")
        orders = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(orders, list) or not orders or not all(isinstance(o, str) for o in orders) \
                or len(orders) > 1000:
            return _denied(400, "'orders' must be a list of 1 to 1000 order ids")
        results = []
        for oid in dict.fromkeys(orders):
            status, answer = await self._apply(Control(ControlAction.PAY, order=oid))
            row: dict[str, Any] = {"order": oid, "ok": status == 200, "error": answer.get("error")}
            for k in ("code", "detail"):
                if k in answer:
                    row[k] = answer[k]
            results.append(row)
        return _json({"ok": all(r["ok"] for r in results), "paid": sum(r["ok"] for r in results),
                      "results": results})

    def __repr__(self) -> str:
        return f"<Console {self.stream!r}: {len(self.clients)} pages open, {self.ticks} ticks, {self._fed} fed>"


def find_orders(rows: Iterator[dict[str, Any]], names: Mapping[str, str], *, q: str = "", status: str = "",
                user: str = "", platform: str = "", limit: int = 200, offset: int = 0) -> dict[str, Any]:
    """Orders matching a search: ``q`` is an order id, a user id or part of a display name (any case);
    ``status`` one of :data:`STATUSES` or ``unpaid`` (held, not paid); ``user`` exactly one buyer, of
    ``platform`` when given (user ids of two platforms can be alike).
    Unpaid holds come soonest pay-by first; everything else newest first. ``total`` counts every match;
    ``orders`` holds ``limit`` of them from ``offset`` (the page asks for the next ones with "More")."""
    needle = q.casefold()
    want = "reserved" if status == "unpaid" else status
    found = []
    for r in rows:
        if want and r["status"] != want:
            continue
        if user and (r["user"] != user or (platform and r["platform"] != platform)):
            continue
        name = shown_name(r.get("name") or names.get(r["user"]), r["user"])
        if needle and not (r["order"].casefold() == needle or needle in r["user"].casefold()
                           or needle in name.casefold() or r["order"].casefold().endswith(needle)):
            continue
        found.append({**r, "name": name})
    if status == "unpaid":
        found.sort(key=lambda r: (r["pay_by"] is None, r["pay_by"] or 0.0))
    else:
        found.reverse()
    return {"total": len(found), "offset": offset, "orders": found[offset:offset + limit]}


def summary_data(stream: str, products: Mapping[str, Mapping[str, Any]], product_names: Mapping[str, str],
                 prices: Mapping[str, float], snap: Mapping[str, Any], history: Sequence[Sequence[float]],
                 events: Sequence[Mapping[str, Any]], *, language: str = "zh",
                 since: float | None = None) -> dict[str, Any]:
    """The after-sale summary: per product sold, presale, paid and revenue; totals; the timeline. ``since``:
    when the timeline and events begin, if not at the sale's start (a daemon that restarted mid-sale)."""
    rows = []
    for key, p in products.items():
        price = prices.get(key, 0.0)
        rows.append({"key": key, "name": product_names.get(key, key), "stock": p["stock"],
                     "sold": p["reserved"], "paid": p["paid"], "held": p["held"], "presale": p["presale"],
                     "left": p["left"], "price": price, "revenue_paid": round(p["paid"] * price, 2),
                     "revenue_held": round(p["held"] * price, 2)})
    return {"stream": stream, "language": language, "comments": snap["comments"], "orders": snap["orders"],
            "outcomes": snap["outcomes"], "products": rows,
            "revenue": {"paid": round(sum(r["revenue_paid"] for r in rows), 2),
                        "held": round(sum(r["revenue_held"] for r in rows), 2)},
            "history": [list(h) for h in history],
            "events": [{**e, "name": product_names.get(str(e.get("key")), e.get("key"))} for e in events],
            "since": since}


def summary_html(data: Mapping[str, Any]) -> str:
    """One self-contained HTML file showing :func:`summary_data` (styles, script and data inline)."""
    css = asset("app.css").decode()
    js = asset("summary.js").decode()
    blob = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode().replace("</", "<\\/")
    lang = "en" if data.get("language") == "en" else "zh"
    title = str(data.get("stream", "")).replace("&", "&amp;").replace("<", "&lt;")
    return (f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{css}</style></head>"
            f'<body class="report"><main id="summary"></main>'
            f'<script id="summary-data" type="application/json">{blob}</script>'
            f"<script>{js}\nLivecartSummary.render(document.getElementById('summary'), "
            f"JSON.parse(document.getElementById('summary-data').textContent));</script></body></html>\n")
