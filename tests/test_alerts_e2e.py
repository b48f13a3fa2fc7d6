"""Alerts end to end over real sockets: EA frames in -> stored, pushed, listed, acknowledged, resolved."""

import asyncio
import hashlib
import hmac

import pytest
from aiohttp import web

from tradewire.app import Server
from tradewire.config import WebhookSettings

from conftest import fast_alert_settings
from helpers import (
    EA,
    Subscriber,
    account_state,
    http_server,
    issue_key,
    issue_token,
    position,
    position_event,
    running,
    sqlite_locked,
    until,
)


def fast_settings(tmp_path):
    return fast_alert_settings(tmp_path)


@pytest.fixture
async def hub(tmp_path):
    srv = Server(fast_settings(tmp_path))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def keys(hub):
    return {"read": await issue_key(hub, "read"), "admin": await issue_key(hub, "admin")}


async def watcher(http, hub, keys, account="acc-1"):
    sub = await Subscriber.connect(http, hub, keys["read"])
    await sub.subscribe("al", f"/trading/alerts/{account}")
    return sub


async def alerts(http, hub, key, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    async with http.get(f"{hub.url}/api/v1/alerts?{qs}", headers={"x-api-key": key}) as r:
        assert r.status == 200
        return (await r.json())["items"]


async def ack(http, hub, key, alert_id):
    async with http.post(f"{hub.url}/api/v1/alerts/{alert_id}/ack", headers={"x-api-key": key}) as r:
        return r.status, await r.json()


async def ea(http, hub, account="acc-1"):
    client = await EA.connect(http, hub, await issue_token(hub, account))
    await client.greet()
    return client


async def test_margin_call_raised_pushed_listed_acked_resolved(hub, http, keys):
    sub = await watcher(http, hub, keys)
    client = await ea(http, hub)
    await client.send(account_state(equity=900.0, margin=1000.0))  # 90 %
    raised = await sub.event(type="MARGIN_CALL")
    assert raised["severity"] == "HIGH" and raised["resolvedAt"] is None and "90.00%" in raised["message"]
    assert raised["_offset"] > 0
    [listed] = await alerts(http, hub, keys["read"], account="acc-1", state="open", type="MARGIN_CALL")
    assert listed["id"] == raised["id"]

    assert (await ack(http, hub, keys["read"], raised["id"]))[0] == 403
    status, acked = await ack(http, hub, keys["admin"], raised["id"])
    assert status == 200 and acked["ackedAt"] and acked["ackedBy"].startswith("key:")
    pushed = await sub.event(type="MARGIN_CALL", ackedBy=acked["ackedBy"])
    assert pushed["resolvedAt"] is None  # acknowledged, still open: the level is still low
    assert (await ack(http, hub, keys["admin"], "no-such-id"))[0] == 404

    await client.send(account_state(equity=1_050.0, margin=1000.0))  # 105 %: inside the hysteresis band
    await client.send(account_state(equity=1_200.0, margin=1000.0))  # 120 %: resolved
    resolved = None
    while resolved is None or resolved["resolvedAt"] is None:
        resolved = await sub.event(type="MARGIN_CALL")
    assert resolved["id"] == raised["id"]
    assert await alerts(http, hub, keys["read"], state="open") == []
    [done] = await alerts(http, hub, keys["read"], state="resolved")
    assert done["resolvedAt"] and done["ackedAt"]


async def test_stop_out_by_level_and_by_close_reason(hub, http, keys):
    sub = await watcher(http, hub, keys)
    client = await ea(http, hub)
    await client.send(account_state(equity=400.0, margin=1000.0))  # 40 %
    stop = await sub.event(type="STOP_OUT")
    assert stop["severity"] == "CRITICAL"
    assert {a["type"] for a in await alerts(http, hub, keys["read"], state="open")} == {"MARGIN_CALL", "STOP_OUT"}

    other = await ea(http, hub, "acc-2")
    sub2 = await watcher(http, hub, keys, "acc-2")
    await other.send(position_event(1, "CLOSE", pid=5, position=position(5), reason="stopout", profit=-900.0))
    await other.wait_ack(1)
    by_close = await sub2.event(type="STOP_OUT")
    assert "closed by stop-out" in by_close["message"]


async def test_a_stop_out_is_one_alert_however_its_close_comes(hub, http, keys):
    """The liquidation lifts the level: the account update resolved STOP_OUT, and the CLOSE(stopout) that
    came after raised a second one. And a CLOSE resent after a reconnect (a duplicate) raised it again."""
    client = await ea(http, hub)
    await client.send(account_state(equity=400.0, margin=1000.0))  # 40 %: STOP_OUT
    await client.send(account_state(equity=1_300.0, margin=1000.0))  # liquidated: 130 %, resolved
    close = position_event(1, "CLOSE", pid=5, position=position(5), reason="stopout", profit=-900.0)
    await client.send(close)
    await client.wait_ack(1)
    await client.close()
    client = await ea(http, hub)
    await client.send(close)  # resent: its ack was lost with the connection
    await client.wait_ack(1)
    await asyncio.sleep(0.3)
    stop_outs = await alerts(http, hub, keys["read"], type="STOP_OUT")
    assert len(stop_outs) == 1 and stop_outs[0]["resolvedAt"]


async def test_connection_lost_after_grace_and_resolved_on_reconnect(hub, http, keys):
    sub = await watcher(http, hub, keys)
    client = await ea(http, hub)
    await client.close()
    lost = await sub.event(type="CONNECTION_LOST", timeout=5)
    assert lost["resolvedAt"] is None
    assert [a["type"] for a in await alerts(http, hub, keys["read"], state="open")] == ["CONNECTION_LOST"]
    await ea(http, hub)
    back = await sub.event(type="CONNECTION_LOST", timeout=5)
    assert back["id"] == lost["id"] and back["resolvedAt"]


async def test_quick_reconnect_raises_nothing(hub, http, keys):
    token = await issue_token(hub, "acc-1")
    client = await EA.connect(http, hub, token)
    await client.greet()
    await client.close()
    client = await EA.connect(http, hub, token)
    await client.greet()
    await asyncio.sleep(1.5)
    assert await alerts(http, hub, keys["read"], type="CONNECTION_LOST") == []


async def test_ea_error_is_a_system_error_that_ack_resolves(hub, http, keys):
    sub = await watcher(http, hub, keys)
    client = await ea(http, hub)
    err = {
        "type": "error",
        "seq": 1,
        "id": "e-1",
        "code": "TRADE_DISABLED",
        "message": "AutoTrading off",
        "severity": "CRITICAL",
    }
    await client.send(err)
    await client.wait_ack(1)
    alert = await sub.event(type="SYSTEM_ERROR")
    assert alert["severity"] == "CRITICAL" and "TRADE_DISABLED" in alert["message"]
    status, acked = await ack(http, hub, keys["admin"], alert["id"])
    assert status == 200 and acked["resolvedAt"]
    await client.send(err)  # resent: stored once
    await client.wait_ack(1)
    assert len(await alerts(http, hub, keys["read"], type="SYSTEM_ERROR")) == 1


async def test_stale_prices_while_connected(hub, http, keys):
    sub = await watcher(http, hub, keys)
    client = await ea(http, hub)
    await client.send({"type": "positions", "ts": 1, "positions": [position(1, symbol="EURUSD")]})
    await client.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.1001, "ts": 1}]})
    for _ in range(12):  # heartbeats keep the session live; the price never moves
        await client.send({"type": "heartbeat", "ts": 2})
        await client.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.1001, "ts": 3}]})
        await asyncio.sleep(0.15)
    stale = await sub.event(type="STALE_DATA", timeout=5)
    assert stale["data"]["symbols"] == ["EURUSD"]
    await client.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1002, "ask": 1.1003, "ts": 4}]})
    fresh = await sub.event(type="STALE_DATA", timeout=5)
    assert fresh["resolvedAt"]


async def test_after_a_restart_open_alerts_stay_open_and_timers_restart(tmp_path, http):
    settings = fast_settings(tmp_path)
    srv = Server(settings)
    await srv.start()
    key = await issue_key(srv, "read")
    client = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
    await client.greet()
    await client.send(account_state(equity=900.0, margin=1000.0))
    for _ in range(50):
        if await alerts(http, srv, key, state="open"):
            break
        await asyncio.sleep(0.05)
    await client.close()
    await srv.stop()

    async with running(settings) as srv:
        [still] = await alerts(http, srv, key, state="open", type="MARGIN_CALL")
        assert still["resolvedAt"] is None
        # the EA that had a session does not come back: CONNECTION_LOST once the grace period is over
        for _ in range(60):
            lost = await alerts(http, srv, key, type="CONNECTION_LOST")
            if lost:
                break
            await asyncio.sleep(0.05)
        assert len(lost) == 1
        assert len(await alerts(http, srv, key, type="MARGIN_CALL")) == 1  # not raised a second time


async def test_webhook_receives_raised_and_resolved(tmp_path, http):
    got: list[tuple[dict, dict]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.json()))
        body = await request.read()
        ts = request.headers["X-Tradewire-Timestamp"]
        expected = hmac.new(b"s3cret", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["X-Tradewire-Signature"], f"sha256={expected}")
        return web.Response(text="ok")

    async with http_server("POST", "/hook", receive) as base:
        settings = fast_settings(tmp_path)
        settings.notify.webhook = [WebhookSettings(url=f"{base}/hook", secret="s3cret", types=["MARGIN_CALL"])]
        async with running(settings) as srv:
            client = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
            await client.greet()
            await client.send(account_state(equity=900.0, margin=1000.0))
            await client.send(account_state(equity=1_500.0, margin=1000.0))
            for _ in range(100):
                if len(got) >= 2:
                    break
                await asyncio.sleep(0.05)
            # What an operator alerts on: a hook that refuses (a revoked Slack URL) is a rising failed count.
            headers = {"x-api-key": await issue_key(srv, "read")}
            async with http.get(srv.url + "/api/v1/metrics", headers=headers) as r:
                metrics = await r.text()
            assert 'tradewire_webhook_deliveries_total{outcome="sent"} 2.0' in metrics
            assert 'tradewire_webhook_deliveries_total{outcome="failed"} 0.0' in metrics
    assert [body["event"] for _, body in got] == ["raised", "resolved"]
    assert got[0][1]["alert"]["type"] == "MARGIN_CALL"


async def test_a_margin_call_whose_write_failed_is_raised_again_while_the_level_stays_low(tmp_path, http):
    """The rules took the episode as open when they decided it: a failed write left it so, never stored nor
    told for as long as the level stayed low. Now the next account update raises it again."""
    settings = fast_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=100"
    async with running(settings) as srv:
        keys = {"read": await issue_key(srv, "read")}
        sub = await watcher(http, srv, keys)
        client = await ea(http, srv)
        with sqlite_locked(srv.store.path):
            await client.send(account_state(equity=900.0, margin=1000.0))  # 90 %: its write fails (locked)
            told = await sub.event(type="SYSTEM_ERROR")  # the failure is told live: released once it happened
        assert told["message"].startswith("MARGIN_CALL not stored (")
        assert await alerts(http, srv, keys["read"], type="MARGIN_CALL") == []
        await client.send(account_state(equity=890.0, margin=1000.0))  # still low: raised again, stored now
        raised = await sub.event(type="MARGIN_CALL")
        assert "89.00%" in raised["message"]
        [stored] = await alerts(http, srv, keys["read"], state="open", type="MARGIN_CALL")
        assert stored["id"] == raised["id"]


async def test_an_alert_whose_delivery_a_stop_abandoned_is_sent_again_at_the_next_start(tmp_path, http):
    """Deliveries wait in memory: a margin call raised while its webhook was down, then the hub stopped (or
    crashed), was never sent. The next start sends open, unacknowledged alerts raised lately again, under the
    same delivery id (a receiver that got it the first time drops the second)."""
    got: list[tuple[str, dict]] = []
    down = True

    async def receive(request: web.Request) -> web.Response:
        if down:
            return web.Response(status=503)
        got.append((request.headers["X-Tradewire-Delivery"], await request.json()))
        return web.Response(text="ok")

    async with http_server("POST", "/hook", receive) as base:
        settings = fast_settings(tmp_path)
        settings.notify.webhook = [WebhookSettings(url=f"{base}/hook", types=["MARGIN_CALL"], max_attempts=20)]
        async with running(settings) as srv:
            client = await ea(http, srv)
            await client.send(account_state(equity=900.0, margin=1000.0))
            key = await issue_key(srv, "read")
            for _ in range(100):
                if await alerts(http, srv, key, type="MARGIN_CALL"):
                    break
                await asyncio.sleep(0.05)
            [raised] = await alerts(http, srv, key, type="MARGIN_CALL")
            await client.close()
        assert got == []  # stopped with the delivery still being retried
        down = False
        async with running(settings):
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.05)
    assert [(delivery, body["event"], body["alert"]["id"]) for delivery, body in got] == [
        (f"{raised['id']}:raised", "raised", raised["id"])
    ]


async def test_a_margin_call_the_store_refused_still_reaches_the_webhook(tmp_path, http):
    """Alerts are notified once stored; while the store refuses writes (a failover, a full disk, a lock),
    a margin call was logged as a failed write and nothing else: no webhook, no live alert. It is now told
    live as a CRITICAL SYSTEM_ERROR naming it, and raised again (stored) once the store takes writes."""
    got: list[dict] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    async with http_server("POST", "/hook", receive) as base:
        settings = fast_settings(tmp_path)
        settings.store.url += "?busy_timeout_ms=100"
        settings.notify.webhook = [WebhookSettings(url=f"{base}/hook", secret="s3cret")]
        async with running(settings) as srv:
            client = await ea(http, srv)
            with sqlite_locked(srv.store.path):
                await client.send(account_state(equity=900.0, margin=1000.0))
                for _ in range(100):
                    if any(body["alert"]["type"] == "SYSTEM_ERROR" for body in got):
                        break
                    await asyncio.sleep(0.05)
            told = [body["alert"] for body in got if body["alert"]["type"] == "SYSTEM_ERROR"]
            assert len(told) == 1 and told[0]["severity"] == "CRITICAL"
            assert (
                told[0]["message"].startswith("MARGIN_CALL not stored (") and told[0]["data"]["alert"] == "MARGIN_CALL"
            )
            await client.send(account_state(equity=890.0, margin=1000.0))  # the store is back: stored, notified
            for _ in range(100):
                if any(body["alert"]["type"] == "MARGIN_CALL" for body in got):
                    break
                await asyncio.sleep(0.05)
            assert [body["event"] for body in got if body["alert"]["type"] == "MARGIN_CALL"] == ["raised"]


async def test_a_stop_out_close_reported_again_under_another_id_raises_nothing_new(hub, http, keys):
    """An EA that lost its outbox reports the same CLOSE under a new id and seq: taken, nothing recorded (the
    position's one CLOSE stands), and yet it raised a new CRITICAL STOP_OUT, long after the liquidation."""
    client = await ea(http, hub)
    close = position_event(1, "CLOSE", pid=5, position=position(5), reason="stopout", profit=-900.0)
    await client.send(close)
    await client.wait_ack(1)
    await client.send(account_state(equity=1_300.0, margin=1000.0))  # after the liquidation: 130 %, resolved

    async def resolved() -> dict | None:  # the STOP_OUT is written after the CLOSE's ack: it may not be listed yet
        listed = await alerts(http, hub, keys["read"], type="STOP_OUT")
        assert len(listed) <= 1
        return listed[0] if listed and listed[0]["resolvedAt"] else None

    first = await until(resolved, what="the STOP_OUT raised and resolved")
    real_clock = hub.hub.clock
    hub.hub.clock = lambda: real_clock() + 600_000  # ten minutes on: past the "late CLOSE of the same" window
    again = position_event(7, "CLOSE", pid=5, msg_id="close-5-again", position=position(5), reason="stopout")
    await client.send(again)
    await client.wait_ack(7)
    await asyncio.sleep(0.3)
    assert [a["id"] for a in await alerts(http, hub, keys["read"], type="STOP_OUT")] == [first["id"]]


async def test_a_stop_out_committed_after_its_session_ended_still_raises_stop_out(tmp_path, http):
    """A session that ends (the EA dropped its socket) stops waiting for its acks after drain_timeout_s, and
    cancelled the wait on the store's future itself, which the hub's callbacks share: the CLOSE committed
    all the same, but was never published and never raised STOP_OUT (and its resend was a duplicate)."""
    settings = fast_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=5000"
    settings.server.drain_timeout_s = 0.2
    async with running(settings) as srv:
        key = await issue_key(srv, "read")
        client = await ea(http, srv)
        with sqlite_locked(srv.store.path):  # the store is slow: the commit waits for the lock
            await client.send(position_event(1, "CLOSE", pid=5, position=position(5), reason="stopout"))
            await asyncio.sleep(0.1)
            await client.ws.close()  # the session ends, and gives up waiting for the ack
            await asyncio.sleep(0.6)
        for _ in range(100):  # the lock is gone: the commit lands
            if await alerts(http, srv, key, type="STOP_OUT"):
                break
            await asyncio.sleep(0.05)
        [stop] = await alerts(http, srv, key, type="STOP_OUT")
        assert "closed by stop-out" in stop["message"]


async def test_a_margin_call_committing_while_its_ea_says_hello_again_is_still_resolved(tmp_path, http):
    """A hello reads the account's open episodes from the store; read while this node's MARGIN_CALL was still
    committing (a slow store), it dropped the episode from the rules, and the level's recovery resolved
    nothing: the stored alert stayed open."""
    settings = fast_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=3000"
    async with running(settings) as srv:
        key, token = await issue_key(srv, "read"), await issue_token(srv, "acc-1")
        client = await EA.connect(http, srv, token)
        await client.greet()
        with sqlite_locked(srv.store.path):
            await client.send(account_state(equity=900.0, margin=1000.0))  # raised: its write waits for the lock
            await asyncio.sleep(0.3)
            again = await EA.connect(http, srv, token)
            greeting = asyncio.ensure_future(again.greet())
            await asyncio.sleep(0.3)
        await greeting
        for _ in range(100):  # the raise commits once the lock is gone
            if await alerts(http, srv, key, state="open"):
                break
            await asyncio.sleep(0.05)
        assert [a["type"] for a in await alerts(http, srv, key, state="open")] == ["MARGIN_CALL"]
        await again.send(account_state(equity=2_000.0, margin=1000.0))  # 200 %: recovered
        for _ in range(100):
            if not await alerts(http, srv, key, state="open"):
                break
            await asyncio.sleep(0.05)
        assert await alerts(http, srv, key, state="open") == []


async def test_a_slow_shutdown_reports_none_of_the_eas_it_closed_lost(tmp_path, http):
    """A drain closes every EA session (1001), then waits for what is still being written; a wait longer than
    the grace reported each of those EAs lost, and notified it: the server went away, not they."""
    from tradewire.store.base import AlertQuery

    settings = fast_settings(tmp_path)
    srv = Server(settings)
    await srv.start()
    client = await ea(http, srv)
    await client.send(account_state())
    await asyncio.sleep(0.2)
    slow = asyncio.get_running_loop().create_future()  # a write the store takes its time over
    srv.hub._track(slow)
    asyncio.get_running_loop().call_later(2.0, slow.set_result, None)  # twice the 1 s grace
    await srv.stop()
    again = Server(settings)
    await again.start()
    try:
        assert await again.store.alerts(AlertQuery(type="CONNECTION_LOST")) == []
    finally:
        await again.stop()


async def test_an_account_whose_tokens_are_all_revoked_is_not_reported_lost_after_a_restart(tmp_path, http):
    """Its presence outlived its tokens: after every restart it had to "come back", was reported lost, and
    that CONNECTION_LOST could never be resolved (nothing can connect for it; an ack resolves only errors)."""
    from tradewire.store.base import AlertQuery

    settings = fast_settings(tmp_path)
    async with running(settings) as srv:
        client = await ea(http, srv, "acc-old")
        await client.close()
        for _ in range(100):  # lost: raised, open
            if await srv.store.alerts(AlertQuery(account="acc-old", type="CONNECTION_LOST", state="open")):
                break
            await asyncio.sleep(0.05)
        [info] = await srv.store.list_tokens("acc-old")
        assert await srv.store.revoke_token(info.tokenId)
    async with running(settings) as srv:
        for _ in range(100):
            if not await srv.store.alerts(AlertQuery(account="acc-old", type="CONNECTION_LOST", state="open")):
                break
            await asyncio.sleep(0.05)
        [lost] = await srv.store.alerts(AlertQuery(account="acc-old", type="CONNECTION_LOST"))
        assert lost.resolvedAt is not None
        await asyncio.sleep(1.5)  # past the grace: not raised again
        assert await srv.store.alerts(AlertQuery(account="acc-old", type="CONNECTION_LOST", state="open")) == []
