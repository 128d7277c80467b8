"""``douyin``: Douyin open-platform live data push (直播间数据开放, message type ``live_comment``).

Protocol (developer.open-douyin.com, 直播玩法 > 服务端 > 直播间能力 > 数据开放, "data-open-desc"):

* The platform POSTs each batch to the developer's URL with the headers ``x-nonce-str`` (random string),
  ``x-timestamp`` (ms), ``x-roomid``, ``x-msg-type`` (``live_comment``, ``live_gift``, ``live_like`` ...) and
  ``x-signature``; the body is the JSON-serialised payload: a list of comments, each with ``msg_id``,
  ``sec_openid``, ``content``, ``avatar_url``, ``nickname`` and ``timestamp``.
* A response slower than 2 seconds, or not 2xx, counts as a failed push; ten in a row trip the platform's
  circuit breaker and it discards data. The handler verifies, decodes, hands the comments to the engine and
  answers 200 once they are durable (the journal committed them: ``docs``, "Acknowledgement"), which takes
  milliseconds; when that cannot be said within ``ack_timeout`` (1.5 s, under the platform's 2 s), or the
  backlog is full, or the journal failed, it answers 503 with ``Retry-After`` so that the platform retries.
  A retry of comments that were durable after all is recognised by id.
* Comments "may be delivered more than once; deduplicate by message id": ids are the platform's ``msg_id``.
* Signature: take the four ``x-`` headers other than ``x-signature``, sort by key, join as ``k=v`` with
  ``&``, append the raw body string and then the secret, MD5 the UTF-8 bytes and base64 the 16-byte digest.
  The push-protocol page only says to "verify the signature"; the construction above is the one spelled out,
  with a worked example (``GAkalGmhzqlUGQO/TgvMug==``), for the same header set on the sibling 直播玩法
  server-push page ("viewer-data-query-dev", 签名方式). That example is a test case here.

:func:`signature` and :func:`decode_comments` are pure; :class:`DouyinAdapter` runs an aiohttp server under the
shared reconnect loop (a bind failure, e.g. the port still held by a dying process, is retried).

Secure defaults: the endpoint listens on 127.0.0.1 (a reverse proxy with TLS publishes it), an empty
``secret`` is refused at start, and a push whose ``x-timestamp`` is more than ``max_skew`` seconds (300)
from now is refused (a replayed capture).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import orjson
from aiohttp import web

from livecart.adapters._codec import RecentKeys, with_defaults
from livecart.adapters.reconnect import Backoff, reconnecting
from livecart.core.errors import FatalAdapterError, LivecartError, MalformedInput, NotDurable, RetryableError
from livecart.core.records import Comment
from livecart.listen import DEFAULT_IDLE, DEFAULT_REQUEST, Guard, GuardedSite, runner_options
from livecart.plugin import Adapter, AdapterStats, Batch, Option, settle_all

log = logging.getLogger("livecart.adapter")

SIGNED_HEADERS = ("x-msg-type", "x-nonce-str", "x-roomid", "x-timestamp")
COMMENT_TYPE = "live_comment"
#: Largest push body accepted; a comment batch is far smaller.
MAX_BODY = 1 << 20

_OK = orjson.dumps({"err_no": 0, "err_msg": "ok"})


def signature(headers: Mapping[str, str], body: str | bytes, secret: str) -> str:
    """The ``x-signature`` of a push: base64(md5("k1=v1&k2=v2..." + body + secret)), keys sorted."""
    raw_body = body if isinstance(body, bytes) else body.encode()
    signed = "&".join(f"{k}={headers[k]}" for k in sorted(headers) if k in SIGNED_HEADERS)
    digest = hashlib.md5(signed.encode() + raw_body + secret.encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v / 1000.0 if v > 1e11 else v  # the docs give ms for x-timestamp; accept s or ms in the payload


def decode_comments(body: bytes, room: str, sent_ms: str) -> tuple[list[Comment], list[MalformedInput]]:
    """The comments in one ``live_comment`` body and the problems with the items that are not.

    A body that is not JSON, or neither an object nor a list of objects, raises :class:`MalformedInput`.
    An item lacking its ``timestamp`` takes the push's ``x-timestamp``.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedInput("bad_json", str(exc), body[:200]) from exc
    items = data if isinstance(data, list) else [data]
    fallback_ts = _seconds(sent_ms)
    comments: list[Comment] = []
    problems: list[MalformedInput] = []
    for item in items:
        if not isinstance(item, dict):
            problems.append(MalformedInput("not_an_object", "payload item is not an object", item))
            continue
        ts = _seconds(item.get("timestamp"))
        if ts is None:
            ts = fallback_ts
        msg_id = item.get("msg_id")
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool) or msg_id == "":
            problems.append(MalformedInput("missing_field", "'msg_id' is missing", item))
            continue
        try:
            comments.append(Comment.from_mapping({
                "platform": "douyin", "room": room, "id": str(msg_id), "user": item.get("sec_openid"),
                "name": item.get("nickname") or item.get("sec_openid"), "text": item.get("content"), "ts": ts}))
        except MalformedInput as exc:
            problems.append(exc)
    return comments, problems


def _port(v: Any) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port (0 = any free port)"


def _nonneg(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be more than 0"


def _secret(v: Any) -> str | None:
    return None if str(v).strip() else "must not be empty: without it anyone could push comments"


class DouyinAdapter(Adapter):
    """Receives Douyin's live-data pushes on a local HTTP endpoint. No reply channel: ``can_reply`` is False."""

    type = "douyin"
    OPTIONS: ClassVar = {
        "host": Option(str, "127.0.0.1", doc="address to listen on; a reverse proxy publishes it"),
        "port": Option(int, 8790, check=_port, doc="port to listen on (0 = any free port)"),
        "path": Option(str, "/douyin/live", doc="the push URL's path, as configured on the platform"),
        "secret": Option(str, required=True, check=_secret, doc="the push secret from the 开发配置 page"),
        "max_skew": Option(float, 300.0, check=_nonneg,
                           doc="refuse pushes whose x-timestamp is further than this from now (s); 0 = off"),
        "ack_timeout": Option(float, 1.5, check=_positive,
                              doc="longest wait for the journal before answering 503 (s); the platform waits 2"),
        "retry_after": Option(int, 1, check=_positive, doc="Retry-After of a 503 (s)"),
        "queue_max": Option(int, 100_000, doc="comment batches held for the pipeline before answering 503"),
        "max_connections": Option(int, 0, check=_nonneg, doc="open connections at most; 0 = from the fd limit"),
        "idle_timeout": Option(float, DEFAULT_IDLE, check=_nonneg, doc="close a silent connection after (s)"),
        "request_timeout": Option(float, DEFAULT_REQUEST, check=_positive,
                                  doc="a request head must be complete within (s)"),
        "retry_initial": Option(float, 0.5, doc="first retry delay when the port cannot be bound (s)"),
        "retry_max": Option(float, 30.0, doc="longest retry delay (s)"),
    }

    def __init__(self, options: Any, *, name: str, stats: AdapterStats | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(with_defaults(self.OPTIONS, options, f"douyin {name}"), name=name, stats=stats)
        self._clock = clock
        self._sleep = sleep
        self._secret = str(self.options["secret"])
        problem = _secret(self._secret)
        if problem:
            raise FatalAdapterError(f"douyin {name}: secret {problem}")
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(int(self.options["queue_max"]))
        self._runner: web.AppRunner | None = None
        self.guard: Guard | None = None
        self._seen = RecentKeys(65536)
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.forgeries = 0
        self.ignored = 0
        self.overflows = 0

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Pushes still waiting for a commit that will not come now are answered 503 (the platform
            # retries); then the reader is woken with the end.
            stopping = NotDurable(f"douyin {self.name}: the daemon is stopping")
            while not self._queue.empty():
                settle_all([b for b in (self._queue.get_nowait(),) if b is not None], stopping)
            self._queue.put_nowait(None)
        await self._stop()
        await super().close()

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        self.ready.clear()
        if runner is not None:
            await runner.cleanup()

    def batches(self) -> AsyncIterator[Sequence[Comment]]:
        policy = Backoff(initial=float(self.options["retry_initial"]), cap=float(self.options["retry_max"]))
        return reconnecting(self._serve, stats=self.stats, policy=policy, sleep=self._sleep)

    async def _serve(self) -> AsyncIterator[Sequence[Comment]]:
        if self._closed:
            return
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.options["path"], self._handle)
        o = self.options
        runner = web.AppRunner(app, access_log=None, **runner_options(float(o["idle_timeout"])))
        await runner.setup()
        self.guard = Guard(f"douyin {self.name}", max_connections=int(o["max_connections"]),
                           idle_timeout=float(o["idle_timeout"]), request_timeout=float(o["request_timeout"]))
        try:
            site = GuardedSite(runner, o["host"], int(o["port"]), self.guard)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RetryableError(f"douyin: cannot listen on {self.options['host']}:{self.options['port']}: "
                                 f"{exc.strerror}") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.stats.connected = True
        self.ready.set()
        log.info("adapter %s: listening for Douyin pushes on port %s%s", self.name, self.port, self.options["path"])
        try:
            while True:
                batch = await self._queue.get()
                if batch is None:
                    return
                yield batch
        finally:
            await self._stop()

    async def _handle(self, request: web.Request) -> web.Response:
        # Everything here is synchronous after the body read: the answer goes out in well under 2 s.
        body = await request.read()
        headers = {k: request.headers.get(k, "") for k in SIGNED_HEADERS}
        missing = [k for k, v in headers.items() if not v]
        given = request.headers.get("x-signature", "")
        if missing or not given:
            self.stats.malformed("missing_header", f"push without {', '.join(missing) or 'x-signature'}",
                                 dict(request.headers))
            return web.Response(status=400, text="missing signature headers")
        if not hmac.compare_digest(given.encode(), signature(headers, body, self._secret).encode()):
            self.forgeries += 1
            self.stats.malformed("bad_signature", "x-signature does not match; push refused",
                                 {"roomid": headers["x-roomid"], "nonce": headers["x-nonce-str"]})
            return web.Response(status=401, text="bad signature")
        skew = float(self.options["max_skew"])
        sent = _seconds(headers["x-timestamp"])
        if skew and (sent is None or abs(self._clock() - sent) > skew):
            self.stats.malformed("stale", f"x-timestamp {headers['x-timestamp']} is more than {skew}s off",
                                 headers)
            return web.Response(status=401, text="stale timestamp")
        if headers["x-msg-type"] != COMMENT_TYPE:
            self.ignored += 1  # gifts and likes are signed and valid, just not orders
            return web.Response(body=_OK, content_type="application/json")
        try:
            comments, problems = decode_comments(body, headers["x-roomid"], headers["x-timestamp"])
        except MalformedInput as exc:
            self.stats.malformed(exc.reason, exc.detail, exc.sample)
            return web.Response(body=_OK, content_type="application/json")  # a retry would not fix it
        for p in problems:
            self.stats.malformed(p.reason, p.detail, p.sample)
        for c in comments:
            if self._seen.seen(c.id):
                self.stats.duplicates += 1
        if not comments:
            return web.Response(body=_OK, content_type="application/json")
        # Duplicates go on too: the engine recognises them, and the answer must wait until the first copy
        # is durable, which the engine's ordering of acknowledgements guarantees.
        batch = Batch(comments)
        durable = batch.durable()
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            durable.cancel()
            self.overflows += 1
            return self._busy(f"pipeline backlog full; a push of {len(comments)} comments")
        self.stats.received += len(comments)
        try:
            async with asyncio.timeout(float(self.options["ack_timeout"])):
                await durable
        except TimeoutError:
            return self._busy(f"no journal commit within {self.options['ack_timeout']}s")
        except LivecartError as exc:
            return self._busy(str(exc))
        return web.Response(body=_OK, content_type="application/json")

    def _busy(self, why: str) -> web.Response:
        self.stats.errors += 1
        level = logging.WARNING if self.stats.errors == 1 else logging.DEBUG
        log.log(level, "adapter %s: %s; answered 503 (the platform retries)%s", self.name, why,
                " (further ones are counted in errors, logged at DEBUG)" if self.stats.errors == 1 else "")
        return web.Response(status=503, text="busy", headers={"Retry-After": str(self.options["retry_after"])})
