"""Limits: connection caps, per-account message rates that slow an EA down without losing anything."""

import asyncio

import aiohttp

from tradewire.app import Server
from tradewire.limits import ConnectionCaps, TokenBucket

from conftest import make_settings
from helpers import EA, db_rows, hello, issue_token, position_event


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert bucket.take(5) == 0.0  # the burst
    assert bucket.take(2) == 0.2  # 2 over at 10/s
    now[0] = 1.0
    assert bucket.take(5) == 0.0  # refilled (capped at the burst)


def test_connection_caps():
    caps = ConnectionCaps(max_total=3, max_per_ip=2)
    assert caps.admit("a") is None and caps.admit("a") is None
    assert "from a" in caps.admit("a")
    assert caps.admit("b") is None
    assert "connection limit (3)" in caps.admit("c")
    caps.release("a")
    assert caps.admit("c") is None and caps.refused == 2


async def start(tmp_path, **limits):
    settings = make_settings(tmp_path)
    for key, value in limits.items():
        setattr(settings.limits, key, value)
    srv = Server(settings)
    await srv.start()
    return srv


async def test_connections_over_the_per_ip_cap_are_refused_with_503(tmp_path, http):
    srv = await start(tmp_path, max_connections_per_ip=2)
    try:
        token = await issue_token(srv, "acc-1")
        first = await EA.connect(http, srv, token)
        second = await EA.connect(http, srv, await issue_token(srv, "acc-2"))
        url = srv.url.replace("http", "ws", 1) + "/ea/v1"
        try:
            await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            raise AssertionError("a third connection from the same address was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 503
        async with http.get(srv.url.replace("http", "http", 1) + "/event/realtime") as r:  # subscribers count too
            assert r.status == 503 and "too many connections" in (await r.json())["message"]
        await first.close()
        await asyncio.sleep(0.1)
        third = await EA.connect(http, srv, token)  # a slot freed up
        await third.greet()
        await second.close()
    finally:
        await srv.stop()


async def test_a_fast_ea_is_slowed_down_and_loses_nothing(tmp_path, http):
    srv = await start(tmp_path, ea_messages_per_s=200, ea_burst=50)
    try:
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for start_seq in range(1, 301, 50):
            await ea.send([position_event(s, pid=s) for s in range(start_seq, start_seq + 50)])
        await ea.wait_ack(300, timeout=20)
        elapsed = loop.time() - started
        assert elapsed >= 1.0  # 300 messages at 200/s after a 50 burst: it was held back...
        assert db_rows(srv, "SELECT COUNT(*) FROM ea_inbox") == [(300,)]  # ...and everything was stored
        assert srv.hub.counters["throttled"] > 0
    finally:
        await srv.stop()


async def test_an_http_batch_over_the_rate_is_429_and_acks_nothing(tmp_path, http):
    srv = await start(tmp_path, ea_messages_per_s=5, ea_burst=10)
    try:
        token = await issue_token(srv, "mt4-1")
        headers = {"Authorization": f"Bearer {token}"}
        body = {"hello": hello(platform="MT4"), "messages": [position_event(s, pid=s) for s in range(1, 31)]}
        async with http.post(srv.url + "/ea/v1/batch", json=body, headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert (await r.json())["error"]["code"] == "rate_limited"
        assert db_rows(srv, "SELECT COUNT(*) FROM ea_inbox") == [(0,)]
        small = {"hello": hello(platform="MT4"), "messages": [position_event(1)]}
        async with http.post(srv.url + "/ea/v1/batch", json=small, headers=headers) as r:
            assert r.status == 200 and (await r.json())["ackedSeq"] == 1  # refused batch cost nothing
    finally:
        await srv.stop()
