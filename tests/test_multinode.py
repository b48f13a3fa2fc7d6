"""Several hub nodes sharing Redis (backplane) and PostgreSQL (store), over real sockets."""

import asyncio
import json
import signal
import uuid

import asyncpg
import pytest

from tradewire.app import Server

from conftest import make_settings
from helpers import (
    EA,
    ServeProcess,
    Subscriber,
    account_state,
    batch,
    hello,
    issue_key,
    issue_token,
    position_event,
    until,
)
from stores import PG_URL, REDIS_URL, drop_pg_schema, need_service


@pytest.fixture
async def shared(tmp_path):
    """A fresh PostgreSQL schema and Redis prefix that several nodes share."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    need_service("Redis", "127.0.0.1", 6379)
    tag = uuid.uuid4().hex[:10]
    store_url, broker_url = f"{PG_URL}?schema=mn_{tag}", f"{REDIS_URL}?prefix=mn{tag}"
    nodes: list[Server] = []

    async def node(**alerts) -> Server:
        settings = make_settings(tmp_path)
        settings.store.url, settings.broker.url = store_url, broker_url
        settings.alerts.connection_lost_after_s = 1.0
        settings.alerts.check_interval_s = 0.1
        for key, value in alerts.items():
            setattr(settings.alerts, key, value)
        srv = Server(settings)
        await srv.start()
        nodes.append(srv)
        return srv

    node.store_url, node.broker_url = store_url, broker_url  # type: ignore[attr-defined]
    yield node
    for srv in nodes:
        await srv.stop()
    await drop_pg_schema(f"mn_{tag}")


async def alerts(http, node, key, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    async with http.get(f"{node.url}/api/v1/alerts?{qs}", headers={"x-api-key": key}) as r:
        return (await r.json())["items"]


async def test_subscriber_on_b_sees_everything_from_an_ea_on_a_with_snapshot(shared, http):
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "acc-1"), await issue_key(b)
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.send(account_state(equity=7_777.0))
    await ea.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.1001, "ts": 1}]})
    await asyncio.sleep(0.3)
    sub = await Subscriber.connect(http, b, key)
    await sub.subscribe("all", "/trading/*")
    # snapshot on B of an account whose EA is on A
    snap = await sub.event(id="acc-1")
    while (snap.get("state") or {}).get("equity") != 7_777.0:
        snap = await sub.event(id="acc-1")
    assert (await sub.event(symbol="EURUSD"))["bid"] == 1.1
    # and live: state, durable events with offsets
    await ea.send(position_event(1, pid=11))
    await ea.wait_ack(1)
    event = await sub.event(event="OPEN")
    assert event["positionId"] == 11 and event["_offset"] > 0


async def test_ea_moves_to_another_node_mid_stream_nothing_lost_nothing_twice(shared, http):
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "acc-1"), await issue_key(a)
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.send([position_event(s, pid=s) for s in range(1, 51)])
    await ea.wait_ack(50)
    await ea.send([position_event(s, pid=s) for s in range(51, 101)])
    await ea.ws.close()  # gone with some of 51..100 unacked
    ea = await EA.connect(http, b, token)
    welcome = await ea.greet()
    assert 50 <= welcome["ackedSeq"] <= 100
    await ea.send([position_event(s, pid=s) for s in range(welcome["ackedSeq"] + 1, 121)])
    await ea.send([position_event(s, pid=s) for s in range(51, 61)])  # an over-eager resend: duplicates
    await ea.wait_ack(120)
    await asyncio.sleep(1.5)  # past the 1 s grace period on A
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": shared.store_url.split("schema=")[1]})
    try:
        ids = [r["msg_id"] for r in await conn.fetch("SELECT msg_id FROM ea_inbox WHERE account = 'acc-1'")]
        opens = await conn.fetchval("SELECT count(*) FROM position_events WHERE account = 'acc-1'")
    finally:
        await conn.close()
    assert len(ids) == len(set(ids)) == 120 and opens == 120
    assert await alerts(http, a, key, type="CONNECTION_LOST") == []  # it only moved: no false alert


async def test_a_connection_lost_raised_after_the_ea_moved_on_is_resolved(shared, http):
    """The race: A decides CONNECTION_LOST before B's presence shows, and stores it after B's greet
    resolved what was open. A must resolve it itself: the EA's frames go to B, so nothing else would."""
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "acc-1"), await issue_key(a)
    live_accounts = a.hub.presence.live_accounts
    lagging = True

    async def lagging_presence() -> set[str]:  # A reads presence before B's session shows in it
        return set() if lagging else await live_accounts()

    a.hub.presence.live_accounts = lagging_presence  # type: ignore[method-assign]
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.ws.close()
    ea = await EA.connect(http, b, token)
    await ea.greet()  # resolves what is open: nothing yet
    lost = []
    for _ in range(50):  # the 1 s grace on A
        lost = await alerts(http, a, key, type="CONNECTION_LOST", account="acc-1")
        if lost:
            break
        await asyncio.sleep(0.1)
    assert len(lost) == 1 and lost[0]["resolvedAt"] is None  # the race happened: a false alert is open
    lagging = False
    for _ in range(30):
        [lost] = await alerts(http, a, key, type="CONNECTION_LOST", account="acc-1")
        if lost["resolvedAt"]:
            break
        await asyncio.sleep(0.1)
    assert lost["resolvedAt"], "a CONNECTION_LOST stayed open while the EA was live on B"


async def test_a_margin_call_raised_on_one_node_is_resolved_on_another(shared, http):
    """Each node knew only the episodes it raised itself (and those open at its start): a margin call raised
    on A, with the EA then on B and back above the level, stayed open for good."""
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "acc-1"), await issue_key(a)
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.send(account_state(equity=900.0, margin=1000.0))  # 90 %
    for _ in range(50):
        if await alerts(http, a, key, type="MARGIN_CALL", state="open"):
            break
        await asyncio.sleep(0.1)
    assert len(await alerts(http, a, key, type="MARGIN_CALL", state="open")) == 1
    await ea.ws.close()
    ea = await EA.connect(http, b, token)
    await ea.greet()
    await ea.send(account_state(equity=1_500.0, margin=1000.0))  # 150 %: well clear
    for _ in range(50):
        if not await alerts(http, a, key, type="MARGIN_CALL", state="open"):
            break
        await asyncio.sleep(0.1)
    assert await alerts(http, a, key, type="MARGIN_CALL", state="open") == []


async def test_a_killed_node_s_eas_are_reported_lost_once(shared, http, tmp_path):
    b = await shared()
    key = await issue_key(b)
    token = await issue_token(b, "acc-9")
    env = {"TRADEWIRE_ALERTS_CONNECTION_LOST_AFTER_S": "1", "TRADEWIRE_ALERTS_CHECK_INTERVAL_S": "0.2"}
    node_a = await ServeProcess.start("--store", shared.store_url, "--broker", shared.broker_url, env=env)
    proc = node_a.proc
    try:
        ea = await EA.connect(http, node_a, token)
        await ea.greet()
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # no drain, no goodbye: its presence simply stops being refreshed
        await proc.wait()
        lost = []
        for _ in range(150):  # presence TTL (10 s) + grace (1 s)
            lost = await alerts(http, b, key, type="CONNECTION_LOST", account="acc-9")
            if lost:
                break
            await asyncio.sleep(0.1)
        assert len(lost) == 1 and lost[0]["resolvedAt"] is None
        # and its summary on the backplane, the dead node's last ("live"), now says so too

        async def lost_summary() -> bool:  # published by the adoption, apart from the alert's commit
            [summary] = await b.broker.snapshot("/trading/accounts/acc-9")
            return json.loads(summary.data)["status"] == "lost"

        await until(lost_summary, what="acc-9's summary on the backplane to say lost")
        await asyncio.sleep(1.0)
        assert len(await alerts(http, b, key, type="CONNECTION_LOST", account="acc-9")) == 1  # once
        # the EA comes back on B: resolved
        ea = await EA.connect(http, b, token)
        await ea.greet()
        for _ in range(50):
            [now] = await alerts(http, b, key, type="CONNECTION_LOST", account="acc-9")
            if now["resolvedAt"]:
                break
            await asyncio.sleep(0.1)
        assert now["resolvedAt"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def post(http, node, token, body) -> dict:
    status, answer = await batch(http, node, token, body)
    assert status == 200, answer
    return answer


def mt4_hello() -> dict:
    return {"platform": "MT4", "login": 812345, "server": "OANDA-v20 Live-1", "currency": "USD", "leverage": 100}


async def test_an_mt4_ea_behind_a_round_robin_balancer_is_served_by_every_node(shared, http):
    """A node knew an MT4 EA from its own hello only: with POSTs dealt to A and B in turn, every one B got
    was refused hello_required (its positions, account updates and trade events with it), the EA said hello
    again, and that went to A."""
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "mt4-1"), await issue_key(a)
    answer = await post(http, a, token, {"hello": mt4_hello(), "messages": [account_state(equity=5_000.0)]})
    assert answer["errors"] == []
    for _ in range(50):  # A's presence reaches Redis a moment after its greet
        if "mt4-1" in await b.hub.presence.live_accounts():
            break
        await asyncio.sleep(0.02)
    for seq, node in enumerate((b, a, b, a), start=1):
        answer = await post(http, node, token, {"messages": [account_state(), position_event(seq, pid=seq)]})
        assert answer["errors"] == [] and answer["ackedSeq"] == seq, (node is b, answer)
    assert b.hub.state.accounts["mt4-1"].info.login == 812345
    # It moves to B for good: A's silence check must not leave it reported lost (heartbeat_sec is 1 here).
    for _ in range(40):
        await post(http, b, token, {"messages": [account_state()]})
        await asyncio.sleep(0.1)
    lost = await alerts(http, a, key, type="CONNECTION_LOST", account="mt4-1", state="open")
    assert lost == [], "an MT4 EA live on B was left reported lost by A"


async def test_a_node_that_never_greeted_the_account_refuses_another_login_too(shared, http):
    """The login an account was greeted as lived in one node's memory: a switched terminal refused on A was
    taken by B (or by A after a restart), and its snapshot closed the account's positions for good."""
    a, b = await shared(), await shared()
    token = await issue_token(a, "acc-1")
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.send(position_event(1, pid=11))
    await ea.wait_ack(1)
    await asyncio.sleep(0.2)  # A's summary reaches the backplane
    switched = await EA.connect(http, b, token)
    await switched.send(hello(login=999001))
    err = await switched.expect("error")
    assert err["code"] == "login_changed"
    assert [p.id for p in a.hub.state.accounts["acc-1"].positions.values()] == [11]


async def test_a_silent_ea_is_reported_lost_with_the_redis_backplane_too(shared, http):
    """No message for 3 heartbeats (a hung terminal, a half-open TCP connection: the session never ends)
    never fired with Redis: the node's own presence listed the account, so its own silent EA counted as
    "live elsewhere" and the raise was dropped. The memory broker raised it."""
    a = await shared()
    key = await issue_key(a)
    ea = await EA.connect(http, a, await issue_token(a, "acc-quiet"))
    await ea.greet()  # and then says nothing, with its socket open
    for _ in range(100):
        if await alerts(http, a, key, type="CONNECTION_LOST", account="acc-quiet", state="open"):
            break
        await asyncio.sleep(0.1)
    [lost] = await alerts(http, a, key, type="CONNECTION_LOST", account="acc-quiet", state="open")
    assert "no message from the EA" in lost["message"]
    await ea.close()


async def test_a_durable_event_a_node_failed_to_publish_reaches_the_other_nodes_subscribers(shared, http):
    """A's pipeline to Redis failed (A alone cut off, a reset): the event was stored and acked, A resynced its
    own subscribers when Redis came back, and B's never got it, nor a 4008: only A knew of the gap."""
    a, b = await shared(), await shared()
    token, key = await issue_token(a, "acc-1"), await issue_key(b)
    sub = await Subscriber.connect(http, b, key)
    await sub.subscribe("ev", "/trading/events/*")
    ea = await EA.connect(http, a, token)
    await ea.greet()
    redis = a.broker._redis
    real_pipeline, failures = redis.pipeline, []

    def failing_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        if not failures and kwargs.get("transaction") is False:  # a publication's, not a presence refresh's
            failures.append(1)

            async def refuse():
                raise ConnectionError("Connection reset by peer")

            pipe.execute = refuse
        return pipe

    redis.pipeline = failing_pipeline
    await ea.send(position_event(1, pid=11))
    await ea.wait_ack(1)  # stored and acked; its publication failed
    await asyncio.sleep(0.2)
    assert failures and a.broker.lost >= 1
    await ea.send(position_event(2, pid=12))  # Redis works again for A
    await ea.wait_ack(2)
    got = {(await sub.event(event="OPEN"))["positionId"] for _ in range(2)}
    assert got == {11, 12}


async def test_a_subscriber_resuming_past_an_offset_another_node_published_late_is_sent_it(shared, http):
    """A committed 10, B committed 11 and published it first. A subscriber got 11 and lost its connection before
    10 arrived: resumed with `since` 11, it asked the store for what came after 11, and never got 10."""
    a, b = await shared(), await shared()
    key = await issue_key(b)
    one = await EA.connect(http, a, await issue_token(a, "acc-1"))
    two = await EA.connect(http, b, await issue_token(b, "acc-2"))
    await one.greet()
    await two.greet()
    held: list = []
    real_publish = a.broker.publish
    a.broker.publish = lambda pub: held.append(pub) if pub.offset is not None else real_publish(pub)
    sub = await Subscriber.connect(http, b, key)
    await sub.subscribe("ev", "/trading/events/*")
    await one.send(position_event(1, pid=10))
    await one.wait_ack(1)  # stored first; its publication is held up on A
    await two.send(position_event(1, pid=11))
    await two.wait_ack(1)
    seen = await sub.event(event="OPEN")
    assert seen["positionId"] == 11
    await sub.ws.close()  # gone before A's publication arrives
    a.broker.publish = real_publish
    [first] = held
    assert first.offset < seen["_offset"]
    watch = await Subscriber.connect(http, b, key)  # to see it reach B
    await watch.subscribe("ev", "/trading/events/acc-1")
    real_publish(first)
    assert (await watch.event(event="OPEN"))["positionId"] == 10
    back = await Subscriber.connect(http, b, key)
    resumed = await back.subscribe("ev", "/trading/events/*", since=seen["_offset"])
    assert resumed.get("recovered") is True
    missed = await back.event(event="OPEN")
    assert missed["positionId"] == 10 and missed["_offset"] == first.offset
    other = await Subscriber.connect(http, b, key)  # another account's channel is owed nothing
    await other.subscribe("ev", "/trading/events/acc-2", since=seen["_offset"])
    with pytest.raises(TimeoutError):
        await other.event(event="OPEN", timeout=0.3)


async def test_the_node_an_ea_left_does_not_call_it_lost_while_it_is_live_on_another(shared, http):
    """The EA reconnected to B before A noticed its old socket was gone: A's "lost", published last, stood on
    the backplane and on every dashboard while the EA streamed on B."""
    a, b = await shared(), await shared()
    token = await issue_token(a, "acc-1")
    old = await EA.connect(http, a, token)
    await old.greet()
    new = await EA.connect(http, b, token)
    await new.greet()
    await asyncio.sleep(0.3)  # B's presence is on the backplane
    await old.ws.close()  # and now A sees its session end
    await asyncio.sleep(0.5)
    [summary] = await b.broker.snapshot("/trading/accounts/acc-1")
    assert json.loads(summary.data)["status"] == "live"


async def test_a_retired_accounts_summary_leaves_the_backplane_at_the_next_start(shared, http):
    """Redis keeps every channel's latest value across restarts and nothing removed one: an account whose every
    token was revoked was still in every new subscriber's snapshot, for good."""
    a = await shared()
    token = await issue_token(a, "acc-gone")
    ea = await EA.connect(http, a, token)
    await ea.greet()
    await ea.send(account_state())
    await asyncio.sleep(0.3)
    assert await a.broker.snapshot("/trading/accounts/acc-gone")
    await ea.close()
    await asyncio.sleep(0.3)  # A has said it is lost
    [info] = await a.store.list_tokens("acc-gone")
    assert await a.store.revoke_token(info.tokenId)
    b = await shared()  # a node starting (a restart, a deploy)
    assert await b.broker.snapshot("/trading/accounts/acc-gone") == []
    assert await b.broker.snapshot("/trading/positions/acc-gone") == []
