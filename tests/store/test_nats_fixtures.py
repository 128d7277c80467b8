"""The NATS fixtures themselves: a 3-node cluster that elects leaders and survives a node's SIGKILL."""

from __future__ import annotations

import asyncio

import nats
import pytest

from livecart.bench.natscluster import Cluster

pytestmark = pytest.mark.slow


async def test_three_node_cluster_replicates_a_stream_and_survives_a_leader_kill(nats_cluster: Cluster) -> None:
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        # Creating a replicated stream forms its Raft group first: on a loaded machine that took over the
        # client's default 5 s (a CI run beside another NATS cluster, 2026-12-03). A bound, not a wait.
        js = nc.jetstream(timeout=30)
        await js.add_stream(name="FIXTURE", subjects=["fixture.>"], num_replicas=3)

        async def publish(payload: bytes) -> int:
            # A new replicated stream has no leader for a moment (on a loaded machine, long enough for the
            # first publish to find no responder), and a killed leader's successor takes a few seconds. The
            # message id makes a retry after a timeout that did store it the same message, not a second one.
            for _ in range(300):
                try:
                    ack = await js.publish("fixture.a", payload, timeout=1,
                                           headers={"Nats-Msg-Id": payload.decode()})
                    return ack.seq
                except (nats.errors.Error, nats.js.errors.Error):
                    await asyncio.sleep(0.1)
            raise AssertionError("the stream took no message for 30 s and more")

        assert await publish(b"1") == 1
        leader = nats_cluster.stream_leader("FIXTURE")
        assert leader is not None
        leader.kill()
        assert await publish(b"2") == 2
        info = await js.stream_info("FIXTURE")
        assert info.state.messages == 2
        assert info.config.num_replicas == 3
    finally:
        await nc.close()


async def test_single_server_has_jetstream(nats_server: str) -> None:
    nc = await nats.connect(servers=[nats_server])
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
