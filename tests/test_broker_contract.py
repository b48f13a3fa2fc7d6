"""The Broker contract on every engine (memory, Redis): delivery in order, latest values for snapshots."""

import asyncio
import uuid

import pytest

from tradewire.broker import make_broker
from tradewire.broker.base import Publication

from stores import REDIS_URL, need_service


@pytest.fixture(params=["memory", "redis"])
async def broker_pair(request):
    """Two brokers on the same backplane (for memory: the same one twice, it has one node)."""
    if request.param == "memory":
        b = make_broker("memory://")
        got: list[Publication] = []
        await b.start(got.append)
        yield b, b, got, got
        await b.stop()
        return
    need_service("Redis", "127.0.0.1", 6379)
    url = f"{REDIS_URL}?prefix=t{uuid.uuid4().hex[:8]}"
    a, b = make_broker(url), make_broker(url)
    got_a: list[Publication] = []
    got_b: list[Publication] = []
    await a.start(got_a.append)
    await b.start(got_b.append)
    yield a, b, got_a, got_b
    await a.stop()
    await b.stop()


async def until(cond, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_every_node_receives_every_publication_in_order(broker_pair):
    a, _b, _got_a, got_b = broker_pair
    for n in range(200):
        a.publish(Publication(f"/trading/prices/S{n % 5}", f'{{"n":{n}}}'.encode(), latest=True))
    a.publish(Publication("/trading/events/acc-1", b'{"e":1}', latest=False, offset=42))
    await until(lambda: len(got_b) == 201)
    assert [p.data for p in got_b[:200]] == [f'{{"n":{n}}}'.encode() for n in range(200)]
    assert got_b[-1] == Publication("/trading/events/acc-1", b'{"e":1}', False, 42)


async def test_snapshot_holds_the_latest_value_of_latest_wins_channels_only(broker_pair):
    a, b, _got_a, got_b = broker_pair
    a.publish(Publication("/trading/accounts/acc-1", b"1", latest=True))
    a.publish(Publication("/trading/accounts/acc-1", b"2", latest=True))
    a.publish(Publication("/trading/accounts/acc-2", b"3", latest=True))
    a.publish(Publication("/trading/prices/EURUSD", b"4", latest=True))
    a.publish(Publication("/trading/events/acc-1", b"5", latest=False, offset=1))
    await until(lambda: len(got_b) >= 5)
    snap = {p.channel: p.data for p in await b.snapshot("/trading/accounts/*")}
    assert snap == {"/trading/accounts/acc-1": b"2", "/trading/accounts/acc-2": b"3"}
    assert {p.channel for p in await b.snapshot("/trading/*")} == {
        "/trading/accounts/acc-1",
        "/trading/accounts/acc-2",
        "/trading/prices/EURUSD",
    }
    assert [p.data for p in await b.snapshot("/trading/accounts/acc-1")] == [b"2"]
    assert await b.snapshot("/trading/accounts/none") == []


async def test_presence_is_shared_across_nodes(broker_pair):
    a, b, _, _ = broker_pair
    if a is b:
        assert await a.live_accounts() == set() and await a.last_seen() == {}  # one node: the hub knows
        return
    a.session_started("acc-1")
    async with asyncio.timeout(5):
        while "acc-1" not in await b.live_accounts():
            await asyncio.sleep(0.02)
    assert "acc-1" in await b.last_seen()
    a.session_ended("acc-1")
    async with asyncio.timeout(5):
        while "acc-1" in await b.live_accounts():
            await asyncio.sleep(0.02)


async def test_a_message_the_backplane_cannot_read_is_skipped_not_taken_for_a_gap():
    """A stray PUBLISH on the prefix (or a node of another version) was taken for a lost subscription: a
    gap, and every subscriber of the node closed 4008 to catch up."""
    import redis.asyncio as aioredis

    need_service("Redis", "127.0.0.1", 6379)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    broker = make_broker(f"{REDIS_URL}?prefix={prefix}")
    got: list[Publication] = []
    gaps: list[int] = []
    broker.on_gap = lambda: gaps.append(1)  # type: ignore[attr-defined]
    await broker.start(got.append)
    raw = aioredis.from_url(REDIS_URL)
    try:
        await until(lambda: broker._confirmations >= 1)  # type: ignore[attr-defined]
        await raw.publish(f"{prefix}:pub", b"junk")
        broker.publish(Publication("/trading/events/acc-1", b'{"e":1}', latest=False, offset=7))
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.3)
        assert broker.skipped == 1 and got[0].offset == 7  # type: ignore[attr-defined]
        assert gaps == [] and not broker._gap  # type: ignore[attr-defined]
    finally:
        await raw.aclose()
        await broker.stop()


async def test_an_unreadable_latest_value_is_skipped_by_snapshots():
    """One value in the latest hash that cannot be read (a node of another version during a rollout, a stray
    HSET) failed every wildcard subscribe of every node for as long as it stayed there: for good."""
    import redis.asyncio as aioredis

    need_service("Redis", "127.0.0.1", 6379)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    broker = make_broker(f"{REDIS_URL}?prefix={prefix}")
    await broker.start(lambda pub: None)
    raw = aioredis.from_url(REDIS_URL)
    try:
        broker.publish(Publication("/trading/prices/EURUSD", b'{"bid":1.1}', latest=True))
        await until(lambda: broker.published == 1 and not broker._pending)  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        await raw.hset(f"{prefix}:latest", "/trading/prices/JUNK", b"junk")
        snap = await broker.snapshot("/trading/*")
        assert [p.channel for p in snap] == ["/trading/prices/EURUSD"]
    finally:
        await raw.delete(f"{prefix}:latest")
        await raw.aclose()
        await broker.stop()
