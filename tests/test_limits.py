"""Limits: connection caps, per-account message rates that slow an EA down without losing anything."""

import asyncio

import aiohttp
import pytest

from tradewire.app import Server
from tradewire.limits import ConnectionCaps, CredentialRates, TokenBucket, retry_after

from conftest import make_settings
from helpers import EA, Subscriber, db_rows, hello, issue_key, issue_token, position_event, running


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert bucket.take(5) == 0.0  # the burst
    assert bucket.take(2) == 0.2  # 2 over at 10/s
    now[0] = 1.0
    assert bucket.take(5) == 0.0  # refilled (capped at the burst)


def test_retry_after_is_whole_seconds_rounded_up():
    # A client told to come back before the bucket refills would only be refused again.
    assert [retry_after(w) for w in (0.01, 1.0, 1.2, 2.5)] == ["1", "1", "2", "3"]


def test_connection_caps():
    caps = ConnectionCaps(max_total=3, max_per_ip=2)
    assert caps.admit("a") is None and caps.admit("a") is None
    assert "from a" in caps.admit("a")
    assert caps.admit("b") is None
    assert "connection limit (3)" in caps.admit("c")
    caps.release("a")
    assert caps.admit("c") is None and caps.refused == 2


def test_connect_rates_refuse_past_the_burst_without_locking_the_client_out():
    now = [0.0]
    rates = CredentialRates(rate=2, burst=3, clock=lambda: now[0])
    assert [rates.admit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.admit("a") == 0.5 and rates.admit("a") == 0.5  # hammering does not push the next one back
    assert rates.admit("b") == 0.0  # per credential
    now[0] = 0.5
    assert rates.admit("a") == 0.0 and rates.admit("a") > 0
    assert rates.refused == 3


def test_connect_rates_forget_everyone_rather_than_grow_without_bound():
    rates = CredentialRates(rate=1, burst=1)
    rates.MAX_TRACKED = 10
    for i in range(25):
        rates.admit(f"k{i}")
    assert len(rates.buckets) <= 10


def limited(tmp_path, **limits):
    """Test settings with these `[limits]`."""
    settings = make_settings(tmp_path)
    for key, value in limits.items():
        setattr(settings.limits, key, value)
    return settings


async def start(tmp_path, **limits):
    srv = Server(limited(tmp_path, **limits))
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


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes this connection within `within` seconds (it sends nothing before that)."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_a_connection_without_a_request_in_progress_is_closed_after_the_idle_timeout(tmp_path, http):
    """Connected and silent, or sending a request's headers a byte at a time: each held a descriptor for an
    hour (aiohttp's default), without a credential."""
    settings = limited(tmp_path)
    settings.server.idle_timeout_s = 0.5
    srv = Server(settings)
    await srv.start()
    try:
        silent = await asyncio.open_connection("127.0.0.1", srv.port)
        dripping = await asyncio.open_connection("127.0.0.1", srv.port)
        dripping[1].write(b"GET /api/v1/healthz HTTP/1.1\r\n")
        for _ in range(3):
            await asyncio.sleep(0.3)
            dripping[1].write(b"X-Pad: 1\r\n")
        assert await _closed(silent[0], 3) and await _closed(dripping[0], 3)
        async with http.get(srv.url + "/api/v1/healthz") as r:  # a request that comes is answered
            assert r.status == 200
    finally:
        await srv.stop()


async def test_tcp_connections_past_the_caps_are_closed_on_accept(tmp_path, http):
    """The WebSocket caps count upgraded connections only; plain ones held without a request were not
    counted at all. Every TCP connection is now, up to the WebSocket cap plus room for HTTP requests."""
    from tradewire.tcp_guard import HTTP_HEADROOM_PER_IP

    settings = limited(tmp_path, max_connections_per_ip=2)
    settings.server.idle_timeout_s = 1.5
    srv = Server(settings)
    await srv.start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2 + HTTP_HEADROOM_PER_IP)]
        extra = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await _closed(extra[0], 1)  # closed at once, before the idle timeout
        assert not await _closed(held[-1][0], 0.1)  # those within the caps are not
        assert srv.hub.tcp_caps.refused == 1 and srv.hub.tcp_caps.total == 2 + HTTP_HEADROOM_PER_IP
        for reader, _writer in held:  # the idle timeout frees them, and everyone can connect again
            assert await _closed(reader, 5)
        async with http.get(srv.url + "/api/v1/healthz") as r:
            assert r.status == 200
        await asyncio.sleep(0.1)
        assert srv.hub.tcp_caps.total <= 1 and not srv.hub.tcp_caps.by_ip.get("127.0.0.1", 0) > 1
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
    async with running(limited(tmp_path, ea_messages_per_s=5, ea_burst=10)) as srv:
        token = await issue_token(srv, "mt4-1")
        headers = {"Authorization": f"Bearer {token}"}
        first = {"hello": hello(platform="MT4"), "messages": [position_event(s, pid=s) for s in range(1, 10)]}
        async with http.post(srv.url + "/ea/v1/batch", json=first, headers=headers) as r:
            assert r.status == 200 and (await r.json())["ackedSeq"] == 9  # the whole burst
        more = {"messages": [position_event(s, pid=s) for s in range(10, 15)]}
        async with http.post(srv.url + "/ea/v1/batch", json=more, headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert (await r.json())["error"]["code"] == "rate_limited"
        assert db_rows(srv, "SELECT COUNT(*) FROM ea_inbox") == [(9,)]
        await asyncio.sleep(0.3)  # a message's worth of rate: enough only if the refused batch cost nothing
        small = {"messages": [position_event(10, pid=10)]}
        async with http.post(srv.url + "/ea/v1/batch", json=small, headers=headers) as r:
            assert r.status == 200 and (await r.json())["ackedSeq"] == 10


async def test_an_http_batch_larger_than_the_burst_is_413_not_429(tmp_path, http):
    """A batch of more messages than the bucket holds could never be taken: 429 would have the EA retry it
    forever. 413 is what an EA answers by sending smaller batches (TradewireEA.mq4 halves its batch)."""
    async with running(limited(tmp_path, ea_messages_per_s=5, ea_burst=10)) as srv:
        token = await issue_token(srv, "mt4-1")
        headers = {"Authorization": f"Bearer {token}"}
        body = {"hello": hello(platform="MT4"), "messages": [position_event(s, pid=s) for s in range(1, 11)]}
        async with http.post(srv.url + "/ea/v1/batch", json=body, headers=headers) as r:
            assert r.status == 413
            error = (await r.json())["error"]
            assert error["code"] == "too_large" and "11 messages" in error["message"] and "ea_burst" in error["message"]
        assert db_rows(srv, "SELECT COUNT(*) FROM ea_inbox") == [(0,)]
        body["messages"] = body["messages"][:9]  # split: within the burst, taken at once
        async with http.post(srv.url + "/ea/v1/batch", json=body, headers=headers) as r:
            assert r.status == 200 and (await r.json())["ackedSeq"] == 9


def metric(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_an_ea_reconnecting_in_a_loop_is_refused_with_429_and_others_are_not(tmp_path, http):
    # 1 a second: the third connect is early even if the first two take most of a second on a loaded machine
    srv = await start(tmp_path, connects_per_s=1, connect_burst=2)
    try:
        token = await issue_token(srv, "acc-1")
        url = srv.url.replace("http", "ws", 1) + "/ea/v1"
        for _ in range(2):
            ea = await EA.connect(http, srv, token)
            await ea.greet()
            await ea.close()
        try:
            await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            raise AssertionError("a third connect within the burst's second was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429 and int(exc.headers["Retry-After"]) >= 1
        other = await EA.connect(http, srv, await issue_token(srv, "acc-2"))  # its own rate
        await other.greet()
        await asyncio.sleep(1.1)  # 1 a second: the next one is due
        again = await EA.connect(http, srv, token)
        await again.greet()
        key = await issue_key(srv)
        async with http.get(srv.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
            assert metric(await r.text(), "tradewire_connects_throttled_total") == 1
    finally:
        await srv.stop()


async def test_a_subscriber_key_reconnecting_in_a_loop_is_refused_and_a_wrong_key_is_told_why(tmp_path, http):
    srv = await start(tmp_path, connects_per_s=0.01, connect_burst=2)
    try:
        stormy, calm = await issue_key(srv), await issue_key(srv)
        for _ in range(2):
            sub = await Subscriber.connect(http, srv, stormy)
            await sub.expect("connection_ack")
            await sub.ws.close()
        try:
            await Subscriber.connect(http, srv, stormy)
            raise AssertionError("a third connect was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429
        sub = await Subscriber.connect(http, srv, calm)
        assert (await sub.subscribe("p", "/trading/prices/*"))["type"] == "subscribe_success"
        for _ in range(3):  # a wrong key has no rate to run out of: it is refused as unauthorized, after the upgrade
            wrong = await Subscriber.connect(http, srv, "twk_nope_nope")
            assert (await wrong.expect("connection_error"))["errors"][0]["errorType"] == "UnauthorizedException"
    finally:
        await srv.stop()


async def test_a_subscriber_sending_too_fast_waits_and_nobody_else_does(tmp_path, http):
    """Each subscribe costs the hub up to a millisecond (its snapshot): one connection subscribing and
    unsubscribing in a loop is held to `[realtime] messages_per_s`, after a burst, by its next message
    being read later; it is never refused, and other connections are not held with it."""
    settings = limited(tmp_path)
    settings.realtime.messages_per_s, settings.realtime.messages_burst = 1.0, 5
    async with running(settings) as srv:
        key = await issue_key(srv)
        busy = await Subscriber.connect(http, srv, key)  # connection_init: one of the five
        for n in range(8):
            await busy.send({"type": "subscribe", "id": f"s{n}", "channel": f"/trading/prices/S{n}"})
        for n in range(4):
            await busy.expect("subscribe_success", id=f"s{n}")
        with pytest.raises(TimeoutError):  # the fifth is read a second after the burst is spent
            await busy.expect("subscribe_success", id="s4", timeout=0.2)

        other = await Subscriber.connect(http, srv, key)
        await other.subscribe("o", "/trading/prices/*")  # at once: the busy one's wait is its own
        with pytest.raises(TimeoutError):  # while the busy one's last is still ~3 s away
            await busy.expect("subscribe_success", id="s7", timeout=0.05)
        async with asyncio.timeout(10):  # all of them in the end
            while {m["id"] for m in busy.inbox if m["type"] == "subscribe_success"} != {f"s{n}" for n in range(8)}:
                await busy.recv()
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
            assert metric(await r.text(), "tradewire_realtime_throttled_total") >= 1


async def test_a_big_snapshot_counts_against_the_subscribers_message_rate_by_its_size(tmp_path, http):
    """A subscribe's snapshot costs the hub by its size (/trading/* at 2,000 accounts is ~1.1 MiB): each 32 KiB
    of it counts as one more message, so re-subscribing to something big in a loop slows that connection.
    Small subscribes cost one message each, as before."""
    settings = limited(tmp_path)
    # A slow refill: the wait measured below (1.5 s owed) does not melt away while a slow machine sends the
    # big snapshot (at 10/s it was 0.3 s, and a busy CI run once refilled it in the meantime)
    settings.realtime.messages_per_s, settings.realtime.messages_burst = 2.0, 3
    async with running(settings) as srv:
        key = await issue_key(srv)
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet(account="acc-1")
        symbols = [f"S{i:04}" + "X" * 59 for i in range(1000)]  # ~140 KiB of prices: four more messages
        await ea.send({"type": "ticks", "ticks": [{"symbol": s, "bid": 1.1, "ask": 1.1002, "ts": 1} for s in symbols]})
        async with asyncio.timeout(5):
            while True:
                async with http.get(srv.url + "/api/v1/prices", headers={"x-api-key": key}) as r:
                    if len((await r.json())["items"]) == len(symbols):
                        break

        async def throttled() -> float:
            async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
                return metric(await r.text(), "tradewire_realtime_throttled_total")

        small = await Subscriber.connect(http, srv, key)  # connection_init and two small subscribes: the burst
        await small.subscribe("a", "/trading/alerts/*")
        await small.subscribe("b", "/trading/prices/S0000" + "X" * 45)  # a channel segment stops at 50
        assert await throttled() == 0

        big = await Subscriber.connect(http, srv, key)
        await big.subscribe("all", "/trading/prices/*")
        assert sum(1 for m in big.inbox if m["type"] == "data") <= len(symbols)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await big.subscribe("one", "/trading/alerts/*")  # 1 + 1 + 4 messages against a burst of 3: waits
        assert loop.time() - asked >= 0.5
        assert await throttled() == 1


async def test_an_api_key_polling_too_fast_is_429_and_others_are_not(tmp_path, http):
    """Each REST request is a store query and its encoding: a script polling in a loop is refused past
    `[limits] requests_per_s` (after a burst) with 429 and Retry-After; another key, and healthz, are not."""
    async with running(limited(tmp_path, requests_per_s=1.0, request_burst=3)) as srv:
        busy, other = await issue_key(srv), await issue_key(srv)

        async def get(key: str, path: str = "/api/v1/accounts") -> aiohttp.ClientResponse:
            async with http.get(srv.url + path, headers={"x-api-key": key}) as r:
                await r.read()
                return r

        assert [(await get(busy)).status for _ in range(3)] == [200, 200, 200]
        async with http.get(srv.url + "/api/v1/accounts", headers={"x-api-key": busy}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            error = (await r.json())["error"]
            assert error["code"] == "rate_limited" and "1 requests a second (burst 3)" in error["message"]
        assert (await get(other)).status == 200
        assert (await get(busy, "/api/v1/healthz")).status == 200
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": other}) as r:
            assert metric(await r.text(), "tradewire_requests_throttled_total") == 1


def test_the_open_files_limit_is_lifted_to_what_the_caps_allow_or_the_cap_lowered_to_fit():
    """Past the open-files limit the listener fails to accept anyone (EMFILE): the cap fits under it."""
    import resource

    from tradewire.tcp_guard import FD_RESERVE, fit_to_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_RESERVE + 10, hard))
        caps = ConnectionCaps(max_total=100, max_per_ip=10)
        assert fit_to_open_files(caps) is None and caps.max_total == 100  # lifted: 100 fit now
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 100 + FD_RESERVE
        if hard != resource.RLIM_INFINITY:
            caps = ConnectionCaps(max_total=hard + 1_000, max_per_ip=10)
            websockets = ConnectionCaps(max_total=hard, max_per_ip=10)
            said = fit_to_open_files(caps, websockets)
            assert caps.max_total == hard - FD_RESERVE and said is not None and str(hard) in said
            # and the WebSocket cap under it, with the HTTP headroom: an upgrade past the TCP cap was dropped
            # at accept, unanswered, where the WebSocket cap would have told it 503
            assert websockets.max_total < caps.max_total
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
