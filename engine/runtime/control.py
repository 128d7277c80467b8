"""Host controls while live: ``livecart ctl FILE ACTION ...``, a local HTTP endpoint, an MQTT control topic.

A :class:`Control` is a plain value: what the host asked for. It is parsed from the command line
(:func:`parse_params`) or from a JSON object (:meth:`Control.from_json`, the MQTT payload and the HTTP body)
and handed to the daemon's ``handler``, which applies it to the ledger, journals it (every control is
journalled) and returns a JSON-ready dict; a control that cannot be applied (unknown sku or order, bad
value) raises :class:`~livecart.core.errors.ControlError`.

The actions and the value they are parsed into live in :mod:`livecart.core.control`.

Transports: :class:`ControlServer` (POST ``/control`` on 127.0.0.1 with a Bearer token; it writes its
address to :func:`control_state_path` so ``livecart ctl`` finds it) and :class:`MqttControl` (JSON payloads
on a topic, answers on ``<topic>/result``).

Errors, as HTTP statuses: 401 bad token, 400 a control that cannot be parsed (:class:`BadControl`),
409 the handler's :class:`ControlError`, 500 anything else the handler raised (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from livecart.core.control import Control, ControlAction, checked_key, parse_params
from livecart.core.errors import BadControl, ControlError, LivecartError
from livecart.core.settings import Config
from livecart.listen import (
    DEFAULT_IDLE,
    Guard,
    GuardedSite,
    UnreadableBody,
    closing,
    read_body,
    runner_options,
)
from livecart.runtime.metrics import Registry

log = logging.getLogger("livecart.control")


Handler = Callable[[Control], Awaitable[Mapping[str, Any]]]


def control_state_path(cfg: Config) -> Path:
    """Where a running daemon writes its control address: the journal path + ``.ctl.json``; in the JetStream
    mode, where there is no journal file of its own, the path + ``.<sale>.ctl.json``, so that two sales whose
    configs sit in one folder (and share the default path) do not take each other's (``livecart ctl`` for one
    sale restocked the other)."""
    return Path(str(cfg.storage.path) + _state_suffix(cfg))


def _state_suffix(cfg: Config) -> str:
    return f".{cfg.storage.sale}.ctl.json" if cfg.storage.backend == "jetstream" else ".ctl.json"


def resolved_state_path(cfg: Config) -> Path | None:
    """The state file beside the journal's real name (symlinks resolved) when that differs from the one
    :func:`control_state_path` gives: a daemon writes both, and ``livecart ctl`` whose config names the
    journal through a symlink finds the daemon through it."""
    real = Path(str(Path(cfg.storage.path).resolve()) + _state_suffix(cfg))
    return None if real == control_state_path(cfg) else real


class ControlCounts:
    """``livecart_controls_total`` by transport, action and result (every control transport's, and the
    console's)."""

    def __init__(self, metrics: Registry | None) -> None:
        self.metrics = metrics if metrics is not None else Registry()
        self.counter = self.metrics.counter("controls_total", "Host controls by transport, action and result")

    def inc(self, transport: str, action: str, result: str) -> None:
        self.counter.inc(transport=transport, action=action, result=result)

    def get(self, transport: str, action: str, result: str) -> int:
        return int(self.counter.get(transport=transport, action=action, result=result))


def refused(action: str, exc: ControlError) -> dict[str, Any]:
    """The answer to a control the sale refused: the English ``error`` ``ctl`` prints, and where the case has
    one, its ``code`` and ``detail`` (what the console says in its own language)."""
    answer: dict[str, Any] = {"ok": False, "action": action, "error": str(exc)}
    if exc.code:
        answer["code"] = exc.code
        answer["detail"] = dict(exc.detail)
    return answer


async def apply(handler: Handler, control: Control, counts: ControlCounts, transport: str, stream: str = ""
                ) -> tuple[int, dict[str, Any]]:
    """Run the handler; map its outcome to an HTTP-like status and a JSON-ready answer."""
    action = control.action.value
    try:
        result = await handler(control)
    except ControlError as exc:
        counts.inc(transport, action, "refused")
        return 409, refused(action, exc)
    except Exception as exc:
        counts.inc(transport, action, "error")
        log.exception("control %s failed in the handler", action)
        return 500, {"ok": False, "action": action, "error": f"internal error: {exc!r}"}
    if result.get("replayed"):  # a keyed control sent again: applied before, not again (the daemon logs it)
        counts.inc(transport, action, "replayed")
    else:
        counts.inc(transport, action, "ok")
        log.info("control %s via %s applied: %s", action, transport,
                 {k: v for k, v in control.to_dict().items() if v is not None})
    return 200, {"ok": True, "action": action, "result": dict(result)}


#: Seconds between two looks at a state file another process of the sale holds.
CLAIM_SECONDS = 1.0


def _live_owner(path: Path) -> int | None:
    """The pid a state file names, when that is another process and it runs; else None (no file, unreadable,
    ours, or its process is gone)."""
    try:
        pid = orjson.loads(path.read_bytes()).get("pid")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # it runs, as another user
    return pid


class ControlServer:
    """POST ``/control`` on ``host`` (127.0.0.1), authenticated with ``Authorization: Bearer TOKEN``.

    With ``token=""`` a random token is generated and written to the state file (mode 0600) beside the
    journal, so only a user who can read that folder can control the daemon. ``state_path``, when given, is
    written after :meth:`start` with ``{"host", "port", "pid"}`` (plus ``token`` when generated) and
    removed by :meth:`close`. Counters: ``livecart_controls_total{transport="http", action, result}``.
    """

    def __init__(self, host: str, port: int, token: str, handler: Handler, *,
                 state_path: Path | None = None, metrics: Registry | None = None, stream: str = "") -> None:
        self.stream = stream
        self.host = host
        self.port = port
        self.generated_token = not token
        self.token = token or secrets.token_urlsafe(24)
        self.handler = handler
        self.state_path = state_path
        #: A second state file, beside the journal's real name (:func:`resolved_state_path`), or None.
        self.mirror_path: Path | None = None
        self.counts = ControlCounts(metrics)
        #: Extra keys written to the state file beside host/port/pid (the daemon adds its status URL and
        #: adapter addresses, so tools and tests find them).
        self.state_extra: dict[str, Any] = {}
        #: Leave a state file that names another running process as it is (the JetStream mode, where one sale
        #: may run twice on a machine and no journal lock keeps a second process out): ``livecart ctl`` goes
        #: on reaching the first, and this one does not remove it when it stops.
        self.keep_live_owner = False
        self._waiting: list[Path] = []  # state files another running process holds (see _claim_when_free)
        self._claimer: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    def _authorised(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def _control(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.counts.inc("http", "", "unauthorized")
            return _json(401, {"ok": False, "error": "missing or wrong token; see [control].token"})
        try:
            obj = orjson.loads(await read_body(request))
        except UnreadableBody as exc:
            self.counts.inc("http", "", "bad")
            return closing(_json(400, {"ok": False, "error": str(exc)}))
        except orjson.JSONDecodeError as exc:
            self.counts.inc("http", "", "bad")
            return _json(400, {"ok": False, "error": f"the body is not JSON: {exc}"})
        try:
            control = Control.from_json(obj).keyed(request.headers.get("Idempotency-Key"))
        except BadControl as exc:
            self.counts.inc("http", "", "bad")
            return _json(400, {"ok": False, "error": str(exc)})
        status, answer = await apply(self.handler, control, self.counts, "http", self.stream)
        return _json(status, answer)

    async def start(self) -> None:
        """Bind (port 0 picks a free one), serve, and write the state file. Idempotent."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/control", self._control)
        runner = web.AppRunner(app, access_log=None, **runner_options(DEFAULT_IDLE))
        await runner.setup()
        try:
            await GuardedSite(runner, self.host, self.port, Guard("control")).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        for path in (self.state_path, self.mirror_path):
            if path is not None:
                owner = _live_owner(path) if self.keep_live_owner else None
                if owner is not None:
                    if path == self.state_path:  # said once (the mirror beside the real path names it too)
                        log.warning("%s names another running process of this sale (pid %d): `livecart ctl` goes "
                                    "on reaching that one; this one's controls are at http://%s:%d/control",
                                    path, owner, self.host, self.port)
                    self._waiting.append(path)
                    continue
                try:
                    self._write_state(path)
                except OSError as exc:
                    # Not a listening problem: said as what it is (it read "cannot listen ... Operation not
                    # permitted" when the journal's folder could not be written).
                    self._runner = None
                    await runner.cleanup()
                    raise LivecartError(f"cannot write the daemon's address to {path}: {exc.strerror or exc} "
                                        "(`livecart ctl` finds the daemon there; the journal's folder must be "
                                        "writable by this user)") from exc
        log.info("host controls on http://%s:%d/control", self.host, self.port)
        if self._waiting:
            self._claimer = asyncio.get_running_loop().create_task(self._claim_when_free(), name="ctl-state")

    async def _claim_when_free(self) -> None:
        """Write the state files another process held once it is gone (killed, say), so that `livecart ctl`
        reaches this process of the sale again."""
        while self._waiting:
            await asyncio.sleep(CLAIM_SECONDS)
            for path in list(self._waiting):
                if _live_owner(path) is None:
                    with contextlib.suppress(OSError):
                        self._write_state(path)
                        self._waiting.remove(path)
                        if path == self.state_path:
                            log.info("%s: the process it named is gone; `livecart ctl` reaches this one now", path)

    def _write_state(self, path: Path) -> None:
        state: dict[str, Any] = {**self.state_extra, "host": self.host, "port": self.port, "pid": os.getpid()}
        if self.generated_token:
            state["token"] = self.token
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(state))
        os.replace(tmp, path)

    async def close(self) -> None:
        """Stop serving and remove the state file if it is still ours. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
        await runner.cleanup()
        for path in (self.state_path, self.mirror_path):
            if path is not None:
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    if orjson.loads(path.read_bytes()).get("port") == self.port:
                        path.unlink()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "serving" if self._runner is not None else "stopped"
        return f"<ControlServer {self.host}:{self.port} {state}>"


def _json(status: int, data: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
                        content_type="application/json")


class MqttControl:
    """Host controls from an MQTT topic: each payload one JSON control (:meth:`Control.from_json`, plus an
    optional ``"id"`` echoed in the answer and the required ``"token"``); each answer, the same JSON as the
    HTTP endpoint's, is published to ``<topic>/result``.

    The token is always required: anyone who can publish to the broker could otherwise pause intake or add
    stock. The daemon passes ``[control].token``, or the one it generated when that is empty (written to
    the state file, mode 0600, as for ``livecart ctl``).

    Malformed payloads and wrong tokens are answered with ``{"ok": false, ...}``, counted
    (``livecart_controls_total{transport="mqtt", result="bad"|"unauthorized"}``) and logged once; never fatal.
    A lost broker connection is retried with capped exponential backoff until :meth:`close`. ``ready`` is
    set each time the subscription is in place.
    """

    def __init__(self, host: str, port: int, topic: str, handler: Handler, token: str, *,
                 metrics: Registry | None = None, max_delay: float = 30.0, stream: str = "") -> None:
        if not topic or any(c in topic for c in "#+") or topic.startswith("$"):
            raise ValueError(f"control topic {topic!r} must be a plain topic (no wildcards, no $share)")
        self.stream = stream
        self.host = host
        self.port = port
        self.topic = topic
        self.result_topic = f"{topic}/result"
        self.handler = handler
        if not token:
            raise ValueError("the MQTT control topic needs a token; an empty one would let anyone control the sale")
        self.token: str = token
        self.counts = ControlCounts(metrics)
        self.max_delay = max_delay
        self.ready = asyncio.Event()
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    def _log_once(self, kind: str, message: str) -> None:
        level = logging.DEBUG if kind in self._logged else logging.WARNING
        self._logged.add(kind)
        log.log(level, "mqtt control %s: %s", self.topic, message)

    async def answer(self, payload: bytes) -> dict[str, Any]:
        """Decode one payload, apply it, and return the answer (what :meth:`run` publishes)."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.counts.inc("mqtt", "", "bad")
            self._log_once("bad", f"payload is not JSON ({exc}); sample {payload[:120]!r}")
            return {"ok": False, "error": f"the payload is not JSON: {exc}"}
        if not isinstance(obj, dict):
            self.counts.inc("mqtt", "", "bad")
            self._log_once("bad", f"payload is not a JSON object; sample {payload[:120]!r}")
            return {"ok": False, "error": f"the payload must be a JSON object, got {type(obj).__name__}"}
        ident = obj.get("id")
        extra = {"id": ident} if ident is not None else {}
        given = obj.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
            self.counts.inc("mqtt", "", "unauthorized")
            self._log_once("unauthorized", "payload with a missing or wrong token")
            return {**extra, "ok": False, "error": "missing or wrong token"}
        try:
            control = Control.from_json(obj)
        except BadControl as exc:
            self.counts.inc("mqtt", "", "bad")
            self._log_once("bad", f"bad control: {exc}")
            return {**extra, "ok": False, "error": str(exc)}
        _, answer = await apply(self.handler, control, self.counts, "mqtt", self.stream)
        return {**extra, **answer}

    async def run(self) -> None:
        """Subscribe and serve until cancelled, reconnecting after broker errors."""
        import aiomqtt

        failures = 0
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port) as client:
                    await client.subscribe(self.topic, qos=1)
                    if failures:
                        log.info("mqtt control %s: reconnected after %d failed attempt(s)",
                                 self.topic, failures)
                    failures = 0
                    self.ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                        answer = await self.answer(bytes(raw))
                        await client.publish(self.result_topic, orjson.dumps(answer), qos=1)
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                failures += 1
                self.reconnects += 1
                delay = min(self.max_delay, 0.2 * 2 ** min(failures - 1, 10))
                self._log_once("connection", f"broker {self.host}:{self.port} lost ({exc}); retrying in "
                                             f"{delay:.1f}s")
                await asyncio.sleep(delay)

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a named background task. Idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"livecart-mqtt-control-{self.topic}")
        return self._task

    async def close(self) -> None:
        """Stop the background task. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ready.clear()

    def __repr__(self) -> str:
        state = "subscribed" if self.ready.is_set() else "not subscribed"
        return f"<MqttControl {self.host}:{self.port} {self.topic} {state}, {self.reconnects} reconnects>"


# --- the `livecart ctl` command ---

def send_control(state_path: Path, token: str, control: Control, *, timeout: float = 10.0
                 ) -> tuple[int, dict[str, Any]]:
    """POST ``control`` to the daemon whose address is in ``state_path``; ``(status, answer)``.

    Raises :class:`ControlError` with a plain message when no daemon is running or it cannot be reached.
    """
    try:
        state = orjson.loads(state_path.read_bytes())
        host, port = str(state["host"]), int(state["port"])
    except FileNotFoundError:
        raise ControlError(f"no daemon is running for this stream ({state_path} does not exist); "
                           "start it with `livecart run FILE`") from None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ControlError(f"cannot read the daemon's address from {state_path}: {exc}") from exc
    token = token or str(state.get("token", ""))
    req = urllib.request.Request(
        f"http://{host}:{port}/control", data=orjson.dumps(control.to_dict()), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the daemon's own address
            return int(resp.status), _answer(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), _answer(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):  # nothing listens: the control was not sent
            raise ControlError(f"the daemon is not running (nothing answers on {host}:{port}: {reason}); "
                               f"{state_path} is stale") from exc
        raise NoAnswer(f"the daemon at {host}:{port} gave no answer ({reason!r})") from exc


class NoAnswer(ControlError):
    """A control was sent and no answer came (the daemon died or the connection broke): it may have been
    applied or not."""


def _send_once(cfg: Config, control: Control, wait: float) -> tuple[int, dict[str, Any]]:
    """:func:`send_control` to the daemon of ``cfg``; when a try gets no answer, the same control (same key)
    again every half second, to the daemon or the one started after it, for up to ``wait`` seconds: the
    daemon applies a keyed control once, so the host's control is neither lost nor applied twice."""
    import sys

    deadline = time.monotonic() + wait
    sent = False
    while True:
        where = control_state_path(cfg)
        real = resolved_state_path(cfg)
        if real is not None and not where.exists() and real.exists():
            where = real  # the daemon's config names the journal by its real name, this one by a symlink
        try:
            return send_control(where, cfg.control.token, control)
        except NoAnswer as exc:
            if not sent:
                print(f"livecart ctl: {exc}; sending it again with the same key (--key {control.key}) for up "
                      f"to {wait:g} s: it is applied once", file=sys.stderr)
            sent = True
            if time.monotonic() >= deadline:
                raise ControlError(f"{exc}; it may or may not have been applied: `livecart ctl --key "
                                   f"{control.key} ...` with the same control applies it once") from None
        except ControlError as exc:
            if not sent or time.monotonic() >= deadline:
                if sent:
                    raise ControlError(f"{exc}; the control was sent before and may have been applied: "
                                       f"`livecart ctl --key {control.key} ...` with the same control applies "
                                       "it once") from None
                raise
        time.sleep(0.5)


def _answer(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"ok": False, "error": body[:200].decode("utf-8", "replace")}
    return obj if isinstance(obj, dict) else {"ok": False, "error": repr(obj)}


def _ctl_via_log(cfg: Config, control: Control) -> int:
    import sys

    from livecart.runtime.cluster import control_via_log

    try:
        outs = asyncio.run(control_via_log(cfg, control))
    except ControlError as exc:
        print(f"livecart ctl: {exc}", file=sys.stderr)
        return 1
    answer = {"ok": True, "via": "log", "outcomes": [o.to_dict() for o in outs]}
    print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    return 0


def ctl_main(args: Any) -> int:
    """``livecart ctl FILE ACTION [PARAMS...]``: print the daemon's JSON answer; 0 when applied, 1 when not,
    2 when the command line is wrong (no action, an unknown one, missing or extra arguments)."""
    import sys

    from livecart import config as config_mod

    cfg = config_mod.load_for_reading(args.file)  # ctl runs no adapter: a plugin need not be installed here
    if not args.action:
        print("livecart ctl: say what to do: livecart ctl FILE ACTION [ARGS]; ACTION is one of feature, restock, "
              "presale, limit, pay, cancel, pause, resume, status (or 上链接, 补货, 预售, 限购 ...)", file=sys.stderr)
        return 2
    try:
        control = parse_params(args.action, list(args.params))
    except BadControl as exc:
        print(f"livecart ctl: {exc}", file=sys.stderr)
        return 2
    try:
        control = control.keyed(checked_key(key) if (key := getattr(args, "key", None)) else secrets.token_urlsafe(12))
    except BadControl as exc:
        print(f"livecart ctl: --key: {exc}", file=sys.stderr)
        return 2
    try:
        status, answer = _send_once(cfg, control, float(getattr(args, "wait", 30.0)))
    except ControlError as exc:
        if cfg.storage.backend != "jetstream":
            print(f"livecart ctl: {exc}", file=sys.stderr)
            return 1
        if control.action is ControlAction.STATUS:
            # The sale may well be running on other machines: status needs a process of it on this one.
            print("livecart ctl: no process of this sale runs on this machine, so there is none to ask for its "
                  f"status; `livecart cluster status {args.file}` shows the sale's decider and standbys, "
                  f"`livecart report {args.file}` its state", file=sys.stderr)
            return 1
        # JetStream mode with no process of the sale on this machine: the control goes into the sale's
        # log directly (docs/contract.md §7), and its outcomes come from replaying the log up to it.
        return _ctl_via_log(cfg, control)
    print(orjson.dumps(answer, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    if status == 200 and answer.get("ok"):
        return 0
    if status == 401:
        print("livecart ctl: the daemon refused the token; check [control].token in the config",
              file=sys.stderr)
    else:
        print(f"livecart ctl: {answer.get('error', f'HTTP {status}')}", file=sys.stderr)
    return 1
