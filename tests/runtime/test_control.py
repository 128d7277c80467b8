from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecart import config
from livecart.core.control import Control, ControlAction, parse_params
from livecart.core.errors import BadControl, ControlError, LivecartError
from livecart.runtime.control import ControlServer, MqttControl, control_state_path, ctl_main, send_control

A = ControlAction


# --- parsing ---

@pytest.mark.parametrize(("action", "params", "expected"), [
    ("restock", ["egg-10", "500"], Control(A.RESTOCK, "egg-10", qty=500)),
    ("restock", ["tea-chry/50g", "20"], Control(A.RESTOCK, "tea-chry", "50g", qty=20)),
    ("restock", ["tea-chry", "50g", "20"], Control(A.RESTOCK, "tea-chry", "50g", qty=20)),
    ("补货", ["egg-10", "500"], Control(A.RESTOCK, "egg-10", qty=500)),
    ("feature", ["tea-chry"], Control(A.FEATURE, "tea-chry")),
    ("上链接", ["tea-chry"], Control(A.FEATURE, "tea-chry")),
    ("presale", ["egg-10", "off"], Control(A.PRESALE, "egg-10", enabled=False)),
    ("presale", ["egg-10", "on"], Control(A.PRESALE, "egg-10", enabled=True)),
    ("预售", ["egg-10", "关"], Control(A.PRESALE, "egg-10", enabled=False)),
    ("presale", ["egg-10", "500"], Control(A.PRESALE, "egg-10", qty=500, enabled=True)),
    ("presale", ["egg-10", "0"], Control(A.PRESALE, "egg-10", qty=0, enabled=False)),
    # "on" with a cap (it read "on" as a variant and answered "egg-10 has no variants")
    ("presale", ["egg-10", "on", "50"], Control(A.PRESALE, "egg-10", qty=50, enabled=True)),
    ("预售", ["tea/50g", "开", "5"], Control(A.PRESALE, "tea", "50g", qty=5, enabled=True)),
    ("limit", ["egg-10", "3"], Control(A.LIMIT, "egg-10", qty=3)),
    ("限购", ["egg-10", "0"], Control(A.LIMIT, "egg-10", qty=0)),
    ("pay", ["o-000012"], Control(A.PAY, order="o-000012")),
    ("cancel", ["o-000012"], Control(A.CANCEL, order="o-000012")),
    ("PAUSE", [], Control(A.PAUSE)),
    ("恢复", [], Control(A.RESUME)),
    ("status", [], Control(A.STATUS)),
])
def test_parse_params(action: str, params: list[str], expected: Control) -> None:
    assert parse_params(action, params) == expected


@pytest.mark.parametrize(("action", "params", "message"), [
    ("explode", [], "unknown action 'explode'"),
    ("restock", ["egg-10"], "usage: restock SKU"),
    ("restock", ["egg-10", "lots"], "whole number"),
    ("restock", ["egg-10", "0"], "quantity from 1"),
    ("restock", ["egg-10", "99999999999"], "quantity from 1"),
    ("limit", ["egg-10", "-1"], "from 0"),
    ("presale", ["egg-10", "maybe"], "on/off"),
    ("presale", ["egg-10", "off", "5"], "off takes no number"),
    ("pay", [], "takes 1 argument"),
    ("pause", ["now"], "takes 0 argument"),
    ("feature", ["tea-chry/50g"], "not a variant"),
    ("restock", ["tea-chry/", "5"], "SKU/VARIANT"),
])
def test_bad_params_say_what_is_expected(action: str, params: list[str], message: str) -> None:
    with pytest.raises(BadControl, match=message):
        parse_params(action, params)


def test_bad_control_is_a_control_error() -> None:
    assert issubclass(BadControl, ControlError)


@given(st.text(max_size=12), st.lists(st.text(max_size=12), max_size=4))
def test_parse_params_raises_only_bad_control(action: str, params: list[str]) -> None:
    try:
        c = parse_params(action, params)
    except BadControl:
        return
    assert Control.from_json(c.to_dict()) == c


def test_from_json_fields_and_params_forms() -> None:
    assert Control.from_json({"action": "restock", "sku": "egg-10", "qty": 5}) == Control(A.RESTOCK, "egg-10",
                                                                                        qty=5)
    assert Control.from_json({"action": "补货", "params": ["tea-chry/50g", "5"]}) == Control(
        A.RESTOCK, "tea-chry", "50g", qty=5)
    assert Control.from_json({"action": "presale", "sku": "tea-chry/100g", "enabled": False}) == Control(
        A.PRESALE, "tea-chry", "100g", enabled=False)


@pytest.mark.parametrize("obj", [
    [], "restock", {"sku": "x"}, {"action": "restock", "sku": "egg", "qty": "5"},
    {"action": "restock", "sku": "egg", "qty": True}, {"action": "presale", "sku": "egg", "enabled": "no"},
    {"action": "pay", "order": 12}, {"action": "restock", "params": "egg 5"}, {"action": "pay"},
])
def test_from_json_refuses_bad_objects(obj: Any) -> None:
    with pytest.raises(BadControl):
        Control.from_json(obj)


def test_control_state_path_sits_beside_the_journal(tmp_config: Path) -> None:
    cfg = config.load(tmp_config)
    assert control_state_path(cfg) == Path(str(cfg.storage.path) + ".ctl.json")


# --- server + `livecart ctl` end to end ---

class FakeEngine:
    def __init__(self) -> None:
        self.applied: list[Control] = []
        self.stock = {"egg-10": 10}

    async def __call__(self, c: Control) -> Mapping[str, Any]:
        if c.action is A.RESTOCK:
            if c.sku not in self.stock:
                raise ControlError(f"unknown sku {c.sku!r}")
            self.stock[c.sku] += c.qty or 0
            self.applied.append(c)
            return {"sku": c.sku, "stock": self.stock[c.sku]}
        if c.action is A.CANCEL:
            raise RuntimeError("ledger exploded")
        self.applied.append(c)
        return {"paused": c.action is A.PAUSE}


def ctl_args(file: Path, action: str, *params: str) -> argparse.Namespace:
    return argparse.Namespace(file=str(file), action=action, params=list(params))


@pytest.fixture
def token_config(tmp_config: Path) -> Path:
    text = tmp_config.read_text(encoding="utf-8") + '\n[control]\ntoken = "sesame"\n'
    tmp_config.write_text(text, encoding="utf-8")
    return tmp_config


@pytest.fixture
async def daemon(token_config: Path) -> AsyncIterator[tuple[ControlServer, FakeEngine, Path]]:
    tmp_config = token_config
    cfg = config.load(tmp_config)
    engine = FakeEngine()
    srv = ControlServer("127.0.0.1", 0, "sesame", engine, state_path=control_state_path(cfg))
    async with srv:
        yield srv, engine, tmp_config


async def test_a_state_file_that_cannot_be_written_is_said_as_such_not_as_a_listening_failure(
        tmp_path: Path) -> None:
    where = tmp_path / "no-such-folder" / "j.db.ctl.json"
    srv = ControlServer("127.0.0.1", 0, "sesame", FakeEngine(), state_path=where)
    with pytest.raises(LivecartError, match=r"cannot write the daemon's address to .*j\.db\.ctl\.json: "
                                            r"No such file or directory .*folder must be writable"):
        await srv.start()
    assert srv._runner is None  # the listener was closed again


async def test_ctl_restock_reaches_the_handler_and_prints_its_answer(
        daemon: tuple[ControlServer, FakeEngine, Path], capsys: pytest.CaptureFixture[str]) -> None:
    srv, engine, file = daemon
    rc = await asyncio.to_thread(ctl_main, ctl_args(file, "补货", "egg-10", "500"))
    assert rc == 0
    assert engine.applied == [Control(A.RESTOCK, "egg-10", qty=500)]
    out = orjson.loads(capsys.readouterr().out)
    assert out == {"ok": True, "action": "restock", "result": {"sku": "egg-10", "stock": 510}}
    assert srv.counts.get("http", "restock", "ok") == 1


async def test_ctl_handler_refusal_is_409_and_exit_1(
        daemon: tuple[ControlServer, FakeEngine, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, _, file = daemon
    rc = await asyncio.to_thread(ctl_main, ctl_args(file, "restock", "nope", "5"))
    assert rc == 1
    captured = capsys.readouterr()
    assert "unknown sku 'nope'" in captured.err
    assert orjson.loads(captured.out)["ok"] is False


async def test_handler_crash_is_500_and_the_server_keeps_serving(
        daemon: tuple[ControlServer, FakeEngine, Path], caplog: pytest.LogCaptureFixture) -> None:
    srv, engine, _ = daemon
    assert srv.state_path is not None
    status, answer = await asyncio.to_thread(send_control, srv.state_path, "sesame",
                                             Control(A.CANCEL, order="o-1"))
    assert status == 500
    assert "ledger exploded" in answer["error"]
    status, _ = await asyncio.to_thread(send_control, srv.state_path, "sesame", Control(A.PAUSE))
    assert status == 200
    assert engine.applied == [Control(A.PAUSE)]


async def test_wrong_token_is_401(daemon: tuple[ControlServer, FakeEngine, Path]) -> None:
    srv, engine, _ = daemon
    assert srv.state_path is not None
    status, answer = await asyncio.to_thread(send_control, srv.state_path, "guess", Control(A.PAUSE))
    assert status == 401
    assert answer["ok"] is False
    assert engine.applied == []


async def test_bad_control_body_is_400(daemon: tuple[ControlServer, FakeEngine, Path]) -> None:
    import aiohttp

    srv, engine, _ = daemon
    url = f"http://127.0.0.1:{srv.port}/control"
    headers = {"Authorization": "Bearer sesame"}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=b'{"action": "restock", "sku": "egg-10"}', headers=headers) as r:
            assert r.status == 400
            assert "quantity" in (await r.json())["error"]
        async with s.post(url, data=b"not json", headers=headers) as r:
            assert r.status == 400
    assert engine.applied == []


async def test_generated_token_lives_in_a_private_state_file(tmp_path: Path) -> None:
    engine = FakeEngine()
    state = tmp_path / "j.db.ctl.json"
    async with ControlServer("127.0.0.1", 0, "", engine, state_path=state) as srv:
        mode = stat.S_IMODE(os.stat(state).st_mode)
        assert mode == 0o600
        saved = orjson.loads(state.read_bytes())
        assert saved["port"] == srv.port
        assert saved["token"] == srv.token
        status, _ = await asyncio.to_thread(send_control, state, "", Control(A.STATUS))
        assert status == 200
    assert not state.exists()  # removed on close


def test_ctl_says_plainly_when_no_daemon_runs(tmp_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(ctl_args(tmp_config, "pause")) == 1
    assert "no daemon is running" in capsys.readouterr().err


def test_ctl_status_of_a_jetstream_sale_with_no_process_here_points_to_cluster_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found from outside: it said "no daemon is running ... start it with livecart run FILE" while the sale
    # ran on other machines (and restock or pay from here go through the log).
    cfg = tmp_path / "sale.toml"
    cfg.write_text('[stream]\nname = "s"\n\n[storage]\nbackend = "jetstream"\nservers = ["nats://127.0.0.1:1"]\n'
                   'sale = "s"\n\n[[products]]\nsku = "egg"\nname = "Eggs"\nstock = 1\n', encoding="utf-8")
    assert ctl_main(ctl_args(cfg, "status")) == 1
    err = capsys.readouterr().err
    assert "no process of this sale runs on this machine" in err
    assert f"livecart cluster status {cfg}" in err
    assert "start it with" not in err


def test_ctl_with_a_stale_state_file(tmp_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    control_state_path(config.load(tmp_config)).write_bytes(orjson.dumps({"host": "127.0.0.1", "port": port}))
    assert ctl_main(ctl_args(tmp_config, "status")) == 1
    assert "not running" in capsys.readouterr().err


def test_ctl_bad_params_exit_2_without_contacting_anyone(tmp_config: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl_main(ctl_args(tmp_config, "restock", "egg-10")) == 2  # bad usage (docs/commands.md)
    assert "usage: restock" in capsys.readouterr().err


# --- MQTT control against the real broker ---

@pytest.fixture
async def mqtt_control(mosquitto: tuple[str, int]) -> AsyncIterator[tuple[MqttControl, FakeEngine]]:
    host, port = mosquitto
    engine = FakeEngine()
    mc = MqttControl(host, port, f"livecart-test/{uuid.uuid4().hex}/control", engine, token="sesame")
    mc.start()
    await asyncio.wait_for(mc.ready.wait(), 10.0)
    yield mc, engine
    await mc.close()


async def roundtrip(mc: MqttControl, payloads: list[bytes]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    async with aiomqtt.Client(mc.host, mc.port) as client:
        await client.subscribe(mc.result_topic, qos=1)
        for p in payloads:
            await client.publish(mc.topic, p, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            answers.append(orjson.loads(message.payload))
            if len(answers) == len(payloads):
                break
    return answers


async def test_mqtt_control_applies_and_answers(mqtt_control: tuple[MqttControl, FakeEngine]) -> None:
    mc, engine = mqtt_control
    payload = orjson.dumps({"id": "c1", "token": "sesame", "action": "restock", "sku": "egg-10", "qty": 5})
    answers = await asyncio.wait_for(roundtrip(mc, [payload]), 10.0)
    assert answers == [{"id": "c1", "ok": True, "action": "restock", "result": {"sku": "egg-10", "stock": 15}}]
    assert engine.applied == [Control(A.RESTOCK, "egg-10", qty=5)]


async def test_mqtt_malformed_and_unauthorised_payloads_are_answered_and_counted(
        mqtt_control: tuple[MqttControl, FakeEngine]) -> None:
    mc, engine = mqtt_control
    payloads = [b"{not json", orjson.dumps({"id": 2, "action": "pause"}),
                orjson.dumps({"id": 3, "token": "sesame", "action": "fly"}),
                orjson.dumps({"id": 4, "token": "sesame", "action": "pause"})]
    answers = await asyncio.wait_for(roundtrip(mc, payloads), 10.0)
    assert [a["ok"] for a in answers] == [False, False, False, True]
    assert "not JSON" in answers[0]["error"]
    assert answers[1]["error"] == "missing or wrong token"
    assert "unknown action" in answers[2]["error"]
    assert engine.applied == [Control(A.PAUSE)]
    assert mc.counts.get("mqtt", "", "bad") == 2
    assert mc.counts.get("mqtt", "", "unauthorized") == 1


def test_mqtt_control_refuses_wildcard_topics() -> None:
    async def handler(c: Control) -> Mapping[str, Any]:
        return {}

    with pytest.raises(ValueError, match="plain topic"):
        MqttControl("127.0.0.1", 1883, "live/#", handler, token="t")


def test_mqtt_control_refuses_to_run_without_a_token() -> None:
    async def handler(c: Control) -> Mapping[str, Any]:
        return {}

    with pytest.raises(ValueError, match="token"):
        MqttControl("127.0.0.1", 1883, "live/control", handler, token="")


async def test_livecart_ctl_command_dispatches_here(
        daemon: tuple[ControlServer, FakeEngine, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from livecart.cli import main as cli

    _, engine, file = daemon
    rc = await asyncio.to_thread(cli.main, ["ctl", str(file), "暂停"])
    assert rc == 0
    assert engine.applied == [Control(A.PAUSE)]
    assert orjson.loads(capsys.readouterr().out)["action"] == "pause"


@pytest.mark.parametrize(("argv", "said"), [
    ([], "say what to do"),
    (["frobnicate"], "unknown action 'frobnicate'"),
    (["restock"], "restock takes 2 argument(s), got 0"),
    (["pause", "now"], "pause takes"),
])
def test_ctl_with_a_wrong_command_line_exits_2_with_a_message(
        tmp_config: Path, argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    from livecart.cli import main as cli

    assert cli.main(["ctl", str(tmp_config), *argv]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "required" not in err


@pytest.mark.parametrize("answered", [True, False])
def test_ctl_sends_a_control_again_with_its_key_when_no_answer_came(
        token_config: Path, capsys: pytest.CaptureFixture[str], answered: bool) -> None:
    """A daemon that took the control and died (the connection closed with no answer): ctl sends the same
    control with the same key again, to the daemon started after it, so it is applied once."""
    import re
    import socket
    import threading

    cfg = config.load(token_config)
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[dict[str, Any]] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    found = re.search(rb"content-length: *(\d+)", head, re.I)
                    assert found is not None
                    while len(body) < int(found.group(1)):
                        body += conn.recv(65536)
                    seen.append(orjson.loads(body))
                    if answered and len(seen) == 2:
                        answer = orjson.dumps({"ok": True, "action": "restock", "result": {"replayed": True}})
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(answer) + answer)

    threading.Thread(target=serve, daemon=True).start()
    control_state_path(cfg).write_bytes(orjson.dumps({"host": "127.0.0.1", "port": server.getsockname()[1],
                                                      "pid": os.getpid()}))
    try:
        rc = ctl_main(argparse.Namespace(file=str(token_config), action="restock", params=["egg-10", "5"],
                                         key=None, wait=1.2))
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "sending it again with the same key" in err
    assert len({s["key"] for s in seen}) == 1
    assert len(seen) >= 2
    if answered:
        assert rc == 0
        assert len(seen) == 2
    else:
        assert rc == 1
        assert f"may or may not have been applied: `livecart ctl --key {seen[0]['key']} ...`" in err


async def test_mqtt_control_payload_that_is_not_an_object_is_bad_not_unauthorized() -> None:
    async def handler(c: Control) -> Mapping[str, Any]:
        return {}

    mc = MqttControl("127.0.0.1", 1883, "live/control", handler, token="t")
    for payload in (b"[]", b'"status"', b"3"):
        answer = await mc.answer(payload)
        assert answer["ok"] is False
        assert "must be a JSON object" in answer["error"]
    assert mc.counts.get("mqtt", "", "bad") == 3
    assert mc.counts.get("mqtt", "", "unauthorized") == 0
