"""Slow and unruly subscribers: a reconnect storm and a reader that trickles one byte at a time must not
cost a well-behaved subscriber any event, and must leave no connection or memory behind."""

import asyncio
import os
import random

import aiohttp

from conftest import make_settings
from helpers import EA, Subscriber, auth_subprotocol, issue_key, issue_token, position_event, running

STORM = int(os.environ.get("TRADEWIRE_STORM_SUBSCRIBERS", "100"))


async def test_a_reconnect_storm_and_a_trickling_reader_cost_a_healthy_subscriber_nothing(tmp_path, http):
    settings = make_settings(tmp_path)
    settings.realtime.max_backlog_bytes = 64 * 1024
    # Every stormy connect goes through: what is tested here is the gateway taking them in and letting them
    # go. With the default connect rate most would be refused before the upgrade (test_limits.py).
    settings.limits.connects_per_s = 1e6
    async with running(settings) as srv:
        key = await issue_key(srv)
        healthy = await Subscriber.connect(http, srv, key)
        await healthy.subscribe("ev", "/trading/events/*")
        url = srv.url.replace("http", "ws", 1) + "/event/realtime"
        protocols = ["aws-appsync-event-ws", auth_subprotocol(key)]

        # a reader that takes one message every 10 ms, whatever arrives
        reader_opened = await http.ws_connect(url, protocols=protocols, max_msg_size=0)
        await reader_opened.send_json({"type": "subscribe", "id": "t", "channel": "/trading/*"})

        stop = asyncio.Event()

        async def storm() -> int:
            rng, cycles = random.Random(5), 0
            async with aiohttp.ClientSession() as own:
                while not stop.is_set():
                    conns = []
                    for _ in range(STORM // 10):
                        ws = await own.ws_connect(url, protocols=protocols)
                        await ws.send_json({"type": "connection_init"})
                        await ws.send_json({"type": "subscribe", "id": "s", "channel": "/trading/*"})
                        conns.append(ws)
                    await asyncio.sleep(rng.uniform(0.01, 0.05))
                    for ws in conns:
                        if rng.random() < 0.5:
                            await ws.close()
                        else:  # gone without a goodbye
                            ws._response.connection.transport.abort()
                    cycles += 1
            return cycles

        async def trickle() -> None:
            while not stop.is_set():
                await reader_opened.receive()
                await asyncio.sleep(0.01)

        storm_task, trickle_task = asyncio.create_task(storm()), asyncio.create_task(trickle())
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        total = 600
        for start in range(1, total + 1, 50):
            await ea.send([position_event(s, pid=s) for s in range(start, start + 50)])
            await ea.wait_ack(start + 49)
            await asyncio.sleep(0.05)
        got = set()
        async with asyncio.timeout(20):
            while len(got) < total:
                event = await healthy.event(event="OPEN")
                got.add(event["positionId"])
        stop.set()
        cycles = await storm_task
        trickle_task.cancel()
        await reader_opened.close()
        assert got == set(range(1, total + 1)) and cycles >= 3
        for _ in range(100):  # every stormy connection is released, whatever way it left
            if len(srv.gateway.connections) == 1 and srv.hub.caps.total == 2:
                break
            await asyncio.sleep(0.05)
        assert len(srv.gateway.connections) == 1  # only the healthy subscriber
        assert srv.hub.caps.total == 2  # its slot and the EA's
        assert len(srv.gateway.index) == 1
