"""Nodes whose Redis backplane goes away and comes back: a private redis-server process, stopped and started."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from pathlib import Path

import aiohttp
import pytest

from tradewire.app import Server
from tradewire.store.base import AlertQuery

from conftest import fast_alert_settings
from helpers import EA, Subscriber, issue_key, issue_token, position_event
from stores import PG_URL, drop_pg_schema, need_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, on a spare port, keeping its dump in `folder` (SHUTDOWN SAVE)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--dir", str(self.folder), "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    async def stop(self, save: bool = False) -> None:
        if self.proc is None:
            return
        if save:  # what a restart of a Redis with persistence keeps: the keys, their TTLs run on meanwhile
            cli = await asyncio.create_subprocess_exec(
                "redis-cli", "-p", str(self.port), "shutdown", "save", stdout=asyncio.subprocess.DEVNULL
            )
            await cli.wait()
        else:
            self.proc.kill()
        await self.proc.wait()
        self.proc = None


@pytest.fixture
async def redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    await server.stop()


async def lost_alerts(node: Server, account: str) -> list:
    return await node.store.alerts(AlertQuery(account=account, type="CONNECTION_LOST", limit=10))


async def test_alert_checks_go_on_while_the_backplane_is_down(tmp_path, http, redis):
    """Presence is read over the backplane in every check; it raised while Redis was down, and the check
    stopped there: not even this node's own EAs were reported lost."""
    settings = fast_alert_settings(tmp_path)
    settings.broker.url = redis.url
    node = Server(settings)
    await node.start()
    try:
        ea = await EA.connect(http, node, await issue_token(node, "acc-1"))
        await ea.greet()
        await redis.stop()
        await ea.close()  # and the EA goes away while Redis is down
        for _ in range(60):
            if await lost_alerts(node, "acc-1"):
                break
            await asyncio.sleep(0.1)
        [lost] = await lost_alerts(node, "acc-1")
        assert lost.resolvedAt is None
    finally:
        await node.stop()


async def test_a_backplane_restart_does_not_report_a_live_fleet_lost(tmp_path, http, redis):
    """Redis restarted with its data: the nodes' presence had lapsed, each account's last-live time had
    not, and the first node to read presence again adopted every other node's EAs, lost since the outage."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"bo_{uuid.uuid4().hex[:10]}"
    nodes: list[Server] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        settings = fast_alert_settings(tmp_path / name)
        settings.store.url = f"{PG_URL}?schema={schema}"
        settings.broker.url = redis.url
        settings.alerts.connection_lost_after_s = 3.0
        nodes.append(Server(settings))
        await nodes[-1].start()
    a, b = nodes
    try:
        ea = await EA.connect(http, a, await issue_token(a, "acc-1"))
        await ea.greet()
        beats = asyncio.create_task(_heartbeats(ea))
        await asyncio.sleep(1.0)  # presence written
        await redis.stop(save=True)
        await asyncio.sleep(12)  # past the presence TTL (10 s) and the grace (3 s)
        await redis.start()
        await asyncio.sleep(6)  # B reads presence again at once; A writes its own within 3 s
        assert await lost_alerts(b, "acc-1") == []  # the EA was live on A all along
        beats.cancel()
    finally:
        for node in nodes:
            await node.stop()
        await drop_pg_schema(schema)


async def _heartbeats(ea: EA) -> None:
    while True:
        await ea.send({"type": "heartbeat", "ts": 1})
        await asyncio.sleep(0.5)


async def node_with_an_open_position(tmp_path, http, redis: PrivateRedis) -> tuple[Server, str, EA]:
    """A node on the private Redis, a read key, and acc-1's EA with position 101 open (seq 1 acked)."""
    settings = fast_alert_settings(tmp_path)
    settings.broker.url = redis.url
    node = Server(settings)
    await node.start()
    key = await issue_key(node)
    ea = await EA.connect(http, node, await issue_token(node, "acc-1"))
    await ea.greet()
    await ea.send(position_event(1, "OPEN", pid=101))
    await ea.wait_ack(1)
    return node, key, ea


async def test_after_a_backplane_gap_subscribers_catch_up_and_snapshots_are_current(tmp_path, http, redis):
    """Publications made while Redis was down were lost on every node, and so was Redis's copy of the
    latest values (a restart without its data): subscribers missed events for good, without a word, and a
    new one was given no positions at all. Now the hub publishes its latest values again and closes
    subscribers 4008, to come back with `since`."""
    node, key, ea = await node_with_an_open_position(tmp_path, http, redis)
    try:
        sub = await Subscriber.connect(http, node, key)
        await sub.subscribe("ev", "/trading/events/*", since=0)
        first = await sub.event(positionId=101)

        await redis.stop()
        await ea.send(position_event(2, "OPEN", pid=102))  # stored and acked; its publication is lost
        await ea.wait_ack(2)
        await redis.start()  # empty: the latest values it held are gone too

        async with asyncio.timeout(15):
            while (await sub.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert sub.ws.close_code == 4008
        again = await Subscriber.connect(http, node, key)
        await again.subscribe("ev", "/trading/events/*", since=first["_offset"])
        assert (await again.event(positionId=102))["event"] == "OPEN"  # caught up from the store
        await again.subscribe("pos", "/trading/positions/*")
        listed = await again.event(account="acc-1", timeout=10)
        assert sorted(p["id"] for p in listed["positions"]) == [101, 102]
    finally:
        await node.stop()


async def test_a_redis_restart_too_short_to_raise_is_still_a_gap(tmp_path, http, redis):
    """redis-py reconnects and resubscribes by itself inside `listen()` after a short outage, raising
    nothing: the gap went unnoticed, and a Redis restarted without its data kept no latest values (a new
    subscriber got no positions) until each changed again."""
    node, key, _ea = await node_with_an_open_position(tmp_path, http, redis)
    try:
        await redis.stop()
        await redis.start()  # at once, and empty
        for _ in range(100):  # the hub republishes what it knows once it sees the gap
            sub = await Subscriber.connect(http, node, key)
            await sub.subscribe("pos", "/trading/positions/*")
            try:
                listed = await sub.event(account="acc-1", timeout=0.5)
                break
            except (AssertionError, TimeoutError):
                await sub.ws.close()
        assert [p["id"] for p in listed["positions"]] == [101]
    finally:
        await node.stop()


async def test_readiness_says_the_backplane_is_down_and_back(tmp_path, http, redis):
    """A node without its backplane fans out nothing of the others' and loses what it publishes: readyz says so
    (degraded, still 200: the outage is every node's, and each still serves its own EAs), then ready again."""
    settings = fast_alert_settings(tmp_path)
    settings.broker.url = redis.url
    node = Server(settings)
    await node.start()

    async def ready() -> tuple[int, dict]:
        await asyncio.sleep(1.05)  # readyz answers from a cache of a second
        async with http.get(node.url + "/api/v1/readyz") as r:
            return r.status, await r.json()

    try:
        assert (await ready())[0] == 200
        await redis.stop()
        for _ in range(20):
            status, body = await ready()
            if body["status"] != "ready":
                break
        assert (status, body["status"]) == (200, "degraded") and "Redis backplane" in body["problems"]["broker"]
        await redis.start()
        for _ in range(20):
            status, body = await ready()
            if body["status"] == "ready":
                break
        assert (status, body["status"]) == (200, "ready"), body
    finally:
        await node.stop()
