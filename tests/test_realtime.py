"""The AppSync-Events-compatible gateway over real sockets: subscribe, snapshot, fan-out, publish, errors."""

import asyncio
import contextlib
import json

import pytest

from helpers import EA, Subscriber, account_state, issue_key, issue_token, position, position_event, running, until


@pytest.fixture
async def keys(server):
    return {"read": await issue_key(server, "read"), "admin": await issue_key(server, "admin")}


async def live_ea(http, server, account="acc-1"):
    ea = await EA.connect(http, server, await issue_token(server, account))
    await ea.greet()
    return ea


async def applied(server, equity: float, symbols: list[str], account: str = "acc-1") -> None:
    """Wait until the hub has taken the EA's account update and ticks: they are not acked, and a snapshot read
    before the session's reader reached them holds none of them."""
    state = server.hub.state

    async def taken() -> bool:
        view = state.accounts.get(account)
        return bool(view and view.state and view.state.equity == equity and all(s in state.prices for s in symbols))

    await until(taken, what=f"the hub to apply equity {equity} and ticks {symbols}")


async def test_handshake_selects_the_subprotocol_and_acks(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    assert sub.ws.protocol == "aws-appsync-event-ws"
    ack = await sub.expect("connection_ack")
    assert ack["connectionTimeoutMs"] == 300000 and ack["payload"]["connectionTimeoutMs"] == 300000


async def test_wildcard_subscriber_receives_an_eas_account_update(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("s1", "/trading/*")
    ea = await live_ea(http, server)
    await ea.send(account_state(equity=12_345.0))
    event = await sub.event(id="acc-1", status="live")
    while (event.get("state") or {}).get("equity") != 12_345.0:
        event = await sub.event(id="acc-1")
    assert event["_sub"] == "s1" and event["state"]["marginLevel"] == 6172.5


async def test_data_event_is_a_json_string_one_frame_per_event(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("p", "/trading/prices/*")
    ea = await live_ea(http, server)
    ticks = [{"symbol": s, "bid": 1.0 + i, "ask": 1.0001 + i, "ts": 1} for i, s in enumerate(["EURUSD", "XAUUSD.r"])]
    await ea.send({"type": "ticks", "ticks": ticks})
    frames = [await sub.expect("data"), await sub.expect("data")]
    assert all(isinstance(f["event"], str) for f in frames)
    assert sorted(json.loads(f["event"])["symbol"] for f in frames) == ["EURUSD", "XAUUSD.r"]


async def test_snapshot_on_subscribe_then_live(server, http, keys):
    ea = await live_ea(http, server)
    await ea.send(account_state(equity=9_999.0))
    await ea.send({"type": "ticks", "ticks": [{"symbol": "GBPUSD", "bid": 1.27, "ask": 1.2702, "ts": 1}]})
    await ea.send({"type": "heartbeat", "ts": 1})
    await applied(server, 9_999.0, ["GBPUSD"])
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("all", "/trading/*")
    price = await sub.event(symbol="GBPUSD")
    assert price["bid"] == 1.27
    account = await sub.event(id="acc-1")
    assert account["state"]["equity"] == 9_999.0
    # and the exact-channel form gets just its channel's state
    await sub.subscribe("one", "/trading/accounts/acc-1")
    assert (await sub.event(id="acc-1"))["_sub"] == "one"


async def test_a_since_the_store_never_reached_or_a_channel_without_history_is_not_recovered(server, http, keys):
    """A dashboard open across a redeploy onto a new (or restored) store resubscribed with since=5000 against
    a head of 40 and was told recovered: it kept 5000 and skipped every event up to it, without a word. And a
    channel without history (/custom/*) said recovered to a `since` whose gap it cannot fill."""
    ea = await live_ea(http, server)
    await ea.send(position_event(1, pid=1))
    await ea.wait_ack(1)
    sub = await Subscriber.connect(http, server, keys["read"])
    ahead = await sub.subscribe("ev", "/trading/events/*", since=10**9)
    assert ahead["recovered"] is False and ahead["offset"] < 10**9  # the head to start from
    behind = await sub.subscribe("ev2", "/trading/events/*", since=0)
    assert behind["recovered"] is True
    custom = await sub.subscribe("c", "/custom/*", since=1)
    assert custom.get("recovered") is None


async def test_durable_events_carry_offsets_and_since_replays_them(server, http, keys):
    ea = await live_ea(http, server)
    await ea.send([position_event(s, pid=s) for s in (1, 2, 3)])
    await ea.wait_ack(3)
    await asyncio.sleep(0.1)
    sub = await Subscriber.connect(http, server, keys["read"])
    ok = await sub.subscribe("ev", "/trading/events/acc-1", since=0)
    assert ok["recovered"] is True
    got = [await sub.event(event="OPEN") for _ in range(3)]
    assert [e["positionId"] for e in got] == [1, 2, 3]
    offsets = [e["_offset"] for e in got]
    assert offsets == sorted(offsets) and all(o > 0 for o in offsets)
    # resubscribe from the second offset: only what came after it
    sub2 = await Subscriber.connect(http, server, keys["read"])
    await sub2.subscribe("ev", "/trading/events/*", since=offsets[1])
    assert (await sub2.event(event="OPEN"))["positionId"] == 3
    # live events keep coming after the replay
    await ea.send(position_event(4, pid=4))
    assert (await sub2.event(event="OPEN"))["positionId"] == 4


async def test_an_event_committed_after_the_replay_was_read_is_not_skipped(server, http, keys, monkeypatch):
    """With several nodes an offset can commit after a higher one: the replay read 1 and 3, and 2 arrived
    while the subscription was loading. Everything at or below the replay's highest was dropped as already
    sent, 2 with it, for good."""
    from tradewire.broker.base import Publication

    ea = await live_ea(http, server)
    await ea.send([position_event(s, pid=s) for s in (1, 2, 3)])
    await ea.wait_ack(3)
    await asyncio.sleep(0.1)
    history = server.store.history

    async def read_before_2_committed(kind, account, since, limit):
        rows = await history(kind, account, since, limit)
        late = rows[1]  # (channel, offset, data) of the event of position 2
        server.broker.publish(Publication(late[0], late[2], latest=False, offset=late[1]))  # arriving now
        await asyncio.sleep(0.05)  # delivered while the subscription loads: into its buffer
        return [rows[0], *rows[2:]]

    monkeypatch.setattr(server.store, "history", read_before_2_committed)
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("ev", "/trading/events/acc-1", since=0)
    got = {(await sub.event(event="OPEN"))["positionId"] for _ in range(3)}
    assert got == {1, 2, 3}


async def test_an_event_replayed_and_then_published_live_is_sent_once(server, http, keys, monkeypatch):
    """With several nodes the history can hold an event whose live publication is still on the backplane:
    it came after the subscription was ready and went out a second time (the dashboard listed it twice)."""
    from tradewire.broker.base import Publication

    ea = await live_ea(http, server)
    await ea.send([position_event(s, pid=s) for s in (1, 2)])
    await ea.wait_ack(2)
    await asyncio.sleep(0.1)
    history = server.store.history

    async def then_published_late(kind, account, since, limit):
        rows = await history(kind, account, since, limit)
        late = rows[1]  # another node's publish of it, still on its way
        asyncio.get_running_loop().call_later(
            0.1, server.broker.publish, Publication(late[0], late[2], latest=False, offset=late[1])
        )
        return rows

    monkeypatch.setattr(server.store, "history", then_published_late)
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("ev", "/trading/events/acc-1", since=0)
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.6  # past the late publish
    while (left := end - loop.time()) > 0:
        with contextlib.suppress(TimeoutError):
            await sub.recv(timeout=left)
    frames = [m for m in sub.inbox if m["type"] == "data"]
    assert sorted(json.loads(m["event"])["positionId"] for m in frames) == [1, 2]


async def test_since_too_far_back_is_not_recoverable(tmp_path, http):

    from conftest import make_settings

    settings = make_settings(tmp_path)
    settings.realtime.history_limit = 2
    async with running(settings) as srv:
        ea = await live_ea(http, srv)
        await ea.send([position_event(s, pid=s) for s in (1, 2, 3)])
        await ea.wait_ack(3)
        sub = await Subscriber.connect(http, srv, await issue_key(srv))
        ok = await sub.subscribe("ev", "/trading/events/*", since=0)
        assert ok["recovered"] is False


async def test_admin_publish_reaches_subscribers_read_key_cannot(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("c", "/custom/*")
    admin = await Subscriber.connect(http, server, keys["admin"])
    await admin.send({"type": "publish", "id": "p1", "channel": "custom/ops/notes", "events": ['{"msg":"hi"}', "42"]})
    ok = await admin.expect("publish_success", id="p1")
    assert [s["index"] for s in ok["successful"]] == [0, 1] and ok["failed"] == []
    assert (await sub.event(msg="hi"))["_sub"] == "c"
    assert json.loads((await sub.expect("data"))["event"]) in ({"msg": "hi"}, 42)
    reader = await Subscriber.connect(http, server, keys["read"])
    await reader.send({"type": "publish", "id": "p2", "channel": "/custom/x", "events": ["1"]})
    err = await reader.expect("publish_error", id="p2")
    assert err["errors"][0]["errorType"] == "UnauthorizedException"


async def test_http_publish(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("c", "/custom/*")
    body = {"channel": "/custom/alerts", "events": ['{"a":1}', '{"a":2}', '{"a":3}']}
    async with http.post(server.url + "/event", json=body, headers={"x-api-key": keys["admin"]}) as r:
        assert r.status == 200 and len((await r.json())["successful"]) == 3
    assert [(await sub.event())["a"] for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("key", "body", "status", "error_type"),
    [
        (None, {"channel": "/custom/a", "events": ["1"]}, 401, "UnauthorizedException"),
        ("wrong", {"channel": "/custom/a", "events": ["1"]}, 401, "UnauthorizedException"),
        ("read", {"channel": "/custom/a", "events": ["1"]}, 403, "UnauthorizedException"),
        ("admin", {"channel": "/trading/accounts/x", "events": ["1"]}, 403, "UnauthorizedException"),
        ("admin", {"channel": "/custom/a", "events": ["1"] * 6}, 400, "BadRequestException"),
        ("admin", {"channel": "/custom/a", "events": ["x" * (240 * 1024 + 1)]}, 400, "BadRequestException"),
        ("admin", {"channel": "/custom/a", "events": ["{not json"]}, 400, "BadRequestException"),
        ("admin", {"channel": "/custom/a/*", "events": ["1"]}, 400, "BadRequestException"),
        ("admin", {"channel": "/nope/a", "events": ["1"]}, 400, "BadRequestException"),
        ("admin", {"channel": "/custom/a"}, 400, "BadRequestException"),
        ("admin", {"channel": "/custom/a", "events": ['"' + "x" * 1_100_000 + '"'] * 3}, 413, "BadRequestException"),
    ],
)
async def test_http_publish_errors_are_aws_shaped(server, http, keys, key, body, status, error_type):
    headers = {"x-api-key": keys.get(key, key)} if key else {}
    async with http.post(server.url + "/event", json=body, headers=headers) as r:
        data = await r.json()
        assert r.status == status and r.headers["x-amzn-ErrorType"] == error_type
        assert data["errors"][0]["errorType"] == error_type and data["errors"][0]["message"]


async def test_http_publish_takes_what_appsync_takes_five_events_of_240_kb(server, http, keys):
    """1.2 MB per publish on AppSync: over the EA frame limit (1 MiB), and answered like any publish."""
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("c", "/custom/*")
    big = json.dumps({"blob": "y" * (240 * 1024 - 20)})
    body = {"channel": "/custom/big", "events": [big] * 5}
    async with http.post(server.url + "/event", json=body, headers={"x-api-key": keys["admin"]}) as r:
        assert r.status == 200 and len((await r.json())["successful"]) == 5
    assert len((await sub.event())["blob"]) == 240 * 1024 - 20


async def test_a_websocket_publish_of_five_escaped_events_is_answered_not_closed(server, http, keys):
    """Each event inside the frame is a JSON string, escaped again: five of 240 KB that are mostly quotes
    make a 2.4 MB frame, over the 2 MiB frame limit: the connection (and its subscriptions) closed 1009."""
    admin = await Subscriber.connect(http, server, keys["admin"])
    quoted = json.dumps('"' * (120 * 1024 - 1))  # 240 KB once encoded as the event's JSON
    assert len(quoted.encode()) <= 240 * 1024
    await admin.send({"type": "publish", "id": "p", "channel": "/custom/q", "events": [quoted] * 5})
    ok = await admin.expect("publish_success", id="p", timeout=10)
    assert len(ok["successful"]) == 5


async def test_cors_preflight(server, http):
    headers = {"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"}
    async with http.options(server.url + "/event", headers=headers) as r:
        assert r.status == 204
        allowed = r.headers["Access-Control-Allow-Headers"]
        assert all(h in allowed for h in ("x-api-key", "authorization", "x-amz-user-agent", "content-type"))


@pytest.mark.parametrize(
    ("frame", "reply", "error_type"),
    [
        ("{nope", "error", "BadRequestException"),
        ({"type": "subscribe_all"}, "error", "UnsupportedOperation"),
        ({"type": "subscribe", "id": "bad id!", "channel": "/trading/*"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "x" * 129, "channel": "/trading/*"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "s1", "channel": "/trading/a_b"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "s1", "channel": "/1/2/3/4/5/6"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "s1", "channel": "/*"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "s1", "channel": "/nowhere/*"}, "subscribe_error", "BadRequestException"),
        ({"type": "subscribe", "id": "s1"}, "subscribe_error", "BadRequestException"),
        ({"type": "unsubscribe", "id": "never"}, "unsubscribe_error", "UnknownOperationError"),
        (
            {"type": "publish", "id": "p", "channel": "/custom/a", "events": ["1"] * 6},
            "publish_error",
            "BadRequestException",
        ),
        (
            {"type": "publish", "id": "p", "channel": "/custom/a", "events": ["x" * 245_761]},
            "publish_error",
            "BadRequestException",
        ),
        (
            {"type": "publish", "id": "p", "channel": "/trading/x", "events": ["1"]},
            "publish_error",
            "UnauthorizedException",
        ),
    ],
)
async def test_bad_frames_get_appsync_errors_and_the_connection_carries_on(
    server, http, keys, frame, reply, error_type
):
    sub = await Subscriber.connect(http, server, keys["admin"])
    await sub.expect("connection_ack")
    await sub.send(frame)
    err = await sub.expect(reply)
    assert err["errors"][0]["errorType"] == error_type and err["errors"][0]["message"]
    await sub.subscribe("after", "/trading/*")  # still usable


async def test_duplicate_subscription_id_is_refused(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("s1", "/trading/*")
    await sub.send({"type": "subscribe", "id": "s1", "channel": "/trading/prices/*"})
    err = await sub.expect("subscribe_error", id="s1")
    assert "already in use" in err["errors"][0]["message"]


async def test_subscribe_without_auth_is_unauthorized(server, http):
    sub = await Subscriber.connect(http, server, None)
    await sub.expect("connection_ack")
    await sub.send({"type": "subscribe", "id": "s1", "channel": "/trading/*"})
    err = await sub.expect("subscribe_error", id="s1")
    assert err["errors"][0]["errorType"] == "UnauthorizedException"
    # auth may also come with the subscribe message itself
    key = await issue_key(server)
    await sub.subscribe("s2", "/trading/*", authorization={"x-api-key": key})


async def test_wrong_key_at_connect_is_a_connection_error(server, http):
    sub = await Subscriber.connect(http, server, "twk_wrong")
    err = await sub.expect("connection_error")
    assert err["errors"][0]["errorType"] == "UnauthorizedException" and err["errors"][0]["errorCode"] == 401


async def test_unsubscribe_stops_delivery(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("p", "/trading/prices/*")
    await sub.send({"type": "unsubscribe", "id": "p"})
    await sub.expect("unsubscribe_success", id="p")
    ea = await live_ea(http, server)
    await ea.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.1001, "ts": 1}]})
    with pytest.raises(asyncio.TimeoutError):
        await sub.expect("data", timeout=0.5)


async def test_batching_extension_groups_frames(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"], init={"batch": True})
    await sub.expect("connection_ack")
    await sub.subscribe("p", "/trading/prices/*")
    ea = await live_ea(http, server)
    ticks = [{"symbol": f"SYM{i}", "bid": 1.0, "ask": 1.1, "ts": 1} for i in range(50)]
    await ea.send({"type": "ticks", "ticks": ticks})
    frames = []
    while sum(len(f.get("items", [f])) for f in frames) < 50:
        frames.append(await sub.recv())
    assert any(f["type"] == "batch" and len(f["items"]) > 1 for f in frames)
    assert len(frames) < 50


async def test_a_flush_interval_spaces_writes_without_holding_back_the_first(tmp_path, http):

    from conftest import make_settings

    settings = make_settings(tmp_path)
    settings.realtime.flush_interval_ms = 1000  # the most allowed: room for three HTTP round trips on a slow box
    async with running(settings) as srv:
        admin = await issue_key(srv, "admin")
        sub = await Subscriber.connect(http, srv, admin, init={"batch": True})
        await sub.expect("connection_ack")
        await sub.subscribe("c", "/custom/*")
        await asyncio.sleep(1.1)  # a quiet interval

        async def publish(n: int) -> None:
            body = {"channel": "/custom/x", "events": [json.dumps({"n": n})]}
            async with http.post(srv.url + "/event", json=body, headers={"x-api-key": admin}) as r:
                assert r.status == 200

        loop = asyncio.get_running_loop()
        sent = loop.time()
        await publish(1)
        first = await sub.recv()
        first_s = loop.time() - sent
        # Three requests within the interval that the first write began.
        await asyncio.gather(*(publish(n) for n in (2, 3, 4)))
        rest = await sub.recv()
        rest_s = loop.time() - sent
    # After a quiet interval the first event is written at once, not an interval later ...
    assert json.loads(first["event"]) == {"n": 1} and first_s < 0.5
    # ... and what follows within the interval waits for its end, then goes in one write.
    assert rest["type"] == "batch" and sorted(json.loads(i["event"])["n"] for i in rest["items"]) == [2, 3, 4]
    assert rest_s >= 0.9


async def test_position_lists_and_events_flow_to_their_channels(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("pos", "/trading/positions/acc-1")
    await sub.subscribe("ev", "/trading/events/acc-1")
    ea = await live_ea(http, server)
    await ea.send(position_event(1, pid=5, position=position(5, magic=7001)))
    event = await sub.event(event="OPEN")
    assert event["_sub"] == "ev" and event["system"] is True and event["_offset"] > 0
    positions = await sub.event(account="acc-1")
    assert [p["id"] for p in positions["positions"]] == [5]


async def test_a_herd_of_subscribers_connecting_at_once_all_get_the_snapshot(server, http, keys):
    # Their upgrades and subscribes take turns on the loop (realtime/turns.py): each still gets in, in full.
    ea = await live_ea(http, server)
    await ea.send(account_state(equity=4_321.0))
    await ea.send({"type": "ticks", "ticks": [{"symbol": f"S{i}", "bid": 1.0, "ask": 1.1, "ts": 1} for i in range(50)]})
    await ea.send({"type": "heartbeat", "ts": 1})
    await applied(server, 4_321.0, [f"S{i}" for i in range(50)])

    async def dashboard(i: int) -> dict:
        sub = await Subscriber.connect(http, server, keys["read"])
        await sub.subscribe(f"d{i}", "/trading/*")
        prices = {(await sub.event(symbol=f"S{s}"))["symbol"] for s in range(50)}
        account = await sub.event(id="acc-1")
        await sub.ws.close()
        return {"prices": len(prices), "equity": account["state"]["equity"]}

    herd = await asyncio.gather(*(dashboard(i) for i in range(20)))
    assert herd == [{"prices": 50, "equity": 4_321.0}] * 20


async def test_a_subscribe_the_hub_cannot_load_is_refused_and_leaves_nothing_behind(server, http, keys, monkeypatch):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.subscribe("ok", "/trading/accounts/*")

    async def broken(pattern: str):
        raise ConnectionError("broker down")

    monkeypatch.setattr(server.gateway.broker, "snapshot", broken)
    await sub.send({"type": "subscribe", "id": "failed", "channel": "/trading/prices/*"})
    err = await sub.expect("subscribe_error", id="failed")
    assert err["errors"][0]["errorType"] == "SubscriptionProcessingError" and "broker down" in str(err)
    (conn,) = server.gateway.connections
    assert set(conn.subs) == {"ok"} and set(conn.outbox.slots) <= {"ok"}  # no slot left for "failed"


# --- conformance with AppSync at the edges ------------------------------------------------------------
async def test_a_keep_alive_never_comes_before_the_ack_and_a_client_without_init_is_acked(tmp_path, http):
    """The keep-alive timer wrote `ka` to every connection, acked or not: a client reading the first frame after
    its connection_init as the ack got a `ka`. And one that sends no connection_init (the Swift SDK) was never
    acked, so it never learned connectionTimeoutMs and never watched for a dead link."""
    from conftest import make_settings
    from helpers import auth_subprotocol

    settings = make_settings(tmp_path)
    settings.realtime.ka_interval_s = 0.1
    async with running(settings) as srv:
        key = await issue_key(srv)
        url = srv.url.replace("http", "ws", 1) + "/event/realtime"
        late = await http.ws_connect(url, protocols=["aws-appsync-event-ws", auth_subprotocol(key)])
        await asyncio.sleep(0.35)  # a few keep-alives are due before it says connection_init
        await late.send_str(json.dumps({"type": "connection_init"}))
        first = json.loads((await late.receive(timeout=5)).data)
        assert first["type"] == "connection_ack"
        await late.close()
        silent = await http.ws_connect(url, protocols=["aws-appsync-event-ws", auth_subprotocol(key)])
        first = json.loads((await silent.receive(timeout=5)).data)  # it sends nothing at all
        assert first["type"] == "connection_ack" and first["payload"]["connectionTimeoutMs"] == 300000
        assert json.loads((await silent.receive(timeout=5)).data)["type"] == "ka"
        await silent.close()


@pytest.mark.parametrize("authorization", [{"x-api-key": 5}, {"x-api-key": ""}, {"X-Api-Key": None}])
async def test_a_messages_own_unusable_key_does_not_fall_back_on_the_connections(server, http, keys, authorization):
    """AppSync checks the authorization a message carries: tradewire used the connection's key instead, and
    the client's bug showed only on AWS."""
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.send({"type": "subscribe", "id": "s", "channel": "/trading/*", "authorization": authorization})
    refused = await sub.expect("subscribe_error")
    assert refused["id"] == "s" and refused["errors"][0]["errorType"] == "UnauthorizedException"


@pytest.mark.parametrize("channel", ["///trading/x///", "/trading//x", "/custom/a/b/c/d/*"])
async def test_channel_paths_appsync_refuses_are_refused(server, http, keys, channel):
    sub = await Subscriber.connect(http, server, keys["read"])
    await sub.send({"type": "subscribe", "id": "s", "channel": channel})
    refused = await sub.expect("subscribe_error")
    assert refused["errors"][0]["errorType"] == "BadRequestException"


async def test_a_connection_init_whose_payload_is_not_an_object_is_still_acked(server, http, keys):
    sub = await Subscriber.connect(http, server, keys["read"], init="x")  # type: ignore[arg-type]
    assert (await sub.expect("connection_ack"))["type"] == "connection_ack"
