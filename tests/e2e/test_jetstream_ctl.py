"""``livecart ctl`` in the JetStream mode, with sales side by side on one machine: two sales whose configs sit
in one folder (sharing the default ``path``), and one sale started twice there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from pathlib import Path

import nats
import nats.js.errors

from livecart.bench.natscluster import LivecartRun, jetstream_storage, sale_config
from livecart.config import load
from livecart.runtime.control import control_state_path
from tests.e2e.proc import livecart, wait_for


class _Run(LivecartRun):
    """``livecart run`` with a log of its own (several configs share the folder)."""

    def __init__(self, cfg: Path, log: str) -> None:
        super().__init__(cfg)
        self.log = cfg.parent / log


def _stock(cfg: Path) -> int | None:
    r = livecart("report", str(cfg), "--json")
    if r.returncode != 0:
        return None
    return int(json.loads(r.stdout)["products"]["egg"]["stock"])


async def _delete(server: str, sales: list[str]) -> None:
    nc = await nats.connect(servers=[server])
    try:
        for sale in sales:
            for name in (f"LIVECART_{sale}", f"KV_livecart_{sale}"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def test_sales_side_by_side_in_one_folder_each_answer_their_own_ctl(nats_server: str, tmp_path: Path) -> None:
    comments = tmp_path / "none.jsonl"
    comments.write_text("", encoding="utf-8")
    tag = uuid.uuid4().hex[:8]
    sales = [f"ctl-{tag}-a", f"ctl-{tag}-b"]
    cfgs = []
    for i, sale in enumerate(sales):
        cfg = tmp_path / f"s{i + 1}.toml"  # both with the default path = "livecart.db", in one folder
        cfg.write_text(sale_config(jetstream_storage([nats_server], sale, 1), comments, 0, name=f"Sale {sale}",
                                   egg_stock=100, egg_limit=5, egg_presale=0, tea_stock=10), encoding="utf-8")
        cfgs.append(cfg)
    states = [control_state_path(load(c)) for c in cfgs]
    assert states[0] != states[1]
    runs = [_Run(cfgs[0], "s1.log"), _Run(cfgs[1], "s2.log")]
    again = _Run(cfgs[0], "s1-again.log")
    try:
        for r in runs:
            r.start()
        wait_for(lambda: all(s.exists() for s in states), "both daemons' control addresses", 60)
        r = livecart("ctl", str(cfgs[0]), "restock", "egg", "7")
        assert r.returncode == 0, r.stderr
        # Before: both wrote livecart.db.ctl.json, and the restock of sale 1 went to sale 2.
        assert wait_for(lambda: _stock(cfgs[0]) == 107 or None, "sale 1 restocked", 30)
        assert _stock(cfgs[1]) == 100
        # The same sale started a second time in the folder: it leaves the first one's state file alone
        # (before, it took it over, and removed it when it stopped: ctl lost the running daemon).
        first = json.loads(states[0].read_text(encoding="utf-8"))
        again.start()
        wait_for(lambda: "names another running process of this sale" in again.text(), "the second process", 60)
        again.stop()
        assert json.loads(states[0].read_text(encoding="utf-8")) == first
        r = livecart("ctl", str(cfgs[0]), "status")
        assert r.returncode == 0, r.stderr
        # And when the first one is killed, the second one takes the file over: ctl reaches it (it said "no
        # process of this sale runs on this machine" while the second one was deciding).
        again.start()  # its log is appended to: the line said a second time
        wait_for(lambda: again.text().count("names another running process of this sale") == 2,
                 "the second process again", 60)
        runs[0].signal(signal.SIGKILL)
        assert again.proc is not None
        second_pid = again.proc.pid
        wait_for(lambda: json.loads(states[0].read_text(encoding="utf-8"))["pid"] == second_pid,
                 "the second process to take the state file over", 30)
        r = livecart("ctl", str(cfgs[0]), "status")
        assert r.returncode == 0, r.stderr
    finally:
        for run in (*runs, again):
            run.stop()
        asyncio.run(_delete(nats_server, sales))


def test_a_sale_that_refuses_this_process_stops_it_before_any_adapter_listens(nats_server: str,
                                                                               tmp_path: Path) -> None:
    # An operator's check: with a config whose catalogue differs from the sale's (or no cluster at the
    # address), run logged "websocket server listening" and bound the port, then exited 1.
    sale = f"ctl-{uuid.uuid4().hex[:8]}-c"
    comments = tmp_path / "none.jsonl"
    comments.write_text("", encoding="utf-8")

    def config(name: str, stock: int) -> Path:
        cfg = tmp_path / f"{name}.toml"
        text = sale_config(jetstream_storage([nats_server], sale, 1), comments, 0, name="Refused", egg_stock=stock,
                           egg_limit=5, egg_presale=0, tea_stock=10)
        text = text.replace('[[adapters]]\ntype = "replay"', '[[adapters]]\ntype = "websocket"\nmode = "server"\n'
                            'port = 0\n\n[[adapters]]\ntype = "replay"')
        cfg.write_text(text, encoding="utf-8")
        return cfg

    first = _Run(config("first", 100), "first.log")
    try:
        first.start()
        wait_for(lambda: "websocket server listening" in first.text(), "the first process", 60)
    finally:
        first.stop()
    refused = livecart("run", str(config("other", 250)))
    assert refused.returncode == 1, refused.stderr
    assert "different catalogue" in refused.stderr
    assert "(egg: stock 250 here, 100 in the sale)" in refused.stderr  # what differs, not only that
    assert "listening" not in refused.stderr
    asyncio.run(_delete(nats_server, [sale]))
