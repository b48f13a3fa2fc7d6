"""The Python client SDK and `watch` against a real hub over real sockets."""

import asyncio
import io

import msgspec
import pytest

from tradewire.app import Server
from tradewire.client import AuthError, Client, Event, PublishError, SubscribeError
from tradewire.watch import watch

from conftest import make_settings
from helpers import EA, account_state, issue_key, issue_token, position_event


@pytest.fixture
async def keys(server):
    return {"read": await issue_key(server, "read"), "admin": await issue_key(server, "admin")}


async def live_ea(http, server, account="acc-1"):
    ea = await EA.connect(http, server, await issue_token(server, account))
    await ea.greet()
    return ea


async def next_event(sub, timeout=5.0, **where):
    """The next event of the subscription whose (dict) data matches `where`."""
    async with asyncio.timeout(timeout):
        async for event in sub:
            data = event.data
            if isinstance(data, dict) and all(data.get(k) == v for k, v in where.items()):
                return event
    raise AssertionError("the subscription ended")


async def test_subscribe_with_a_callback_receives_an_eas_account_update(server, http, keys):
    seen: list[Event] = []
    got = asyncio.Event()

    def on_event(event: Event) -> None:
        seen.append(event)
        if (event.data.get("state") or {}).get("equity") == 12_345.0:
            got.set()

    async with Client(server.url, keys["read"]) as client:
        sub = await client.subscribe("/trading/accounts/acc-1", on_event)
        ea = await live_ea(http, server)
        await ea.send(account_state(equity=12_345.0))
        await asyncio.wait_for(got.wait(), 5)
    last = seen[-1]
    assert last.channel == "/trading/accounts/acc-1" and last.subscription_id == sub.id and last.offset is None
    assert last.data["id"] == "acc-1" and last.data["state"]["marginLevel"] == 6172.5


async def test_async_for_on_a_wildcard_subscription(server, http, keys):
    async with Client(server.url, keys["read"]) as client:
        sub = await client.subscribe("trading/*")
        ea = await live_ea(http, server)
        await ea.send(account_state(equity=11_111.0))
        event = await next_event(sub, id="acc-1")
        while (event.data.get("state") or {}).get("equity") != 11_111.0:
            event = await next_event(sub, id="acc-1")
        assert event.channel is None and event.subscription_id == sub.id
        await sub.unsubscribe()
        async with asyncio.timeout(1):  # iteration ends after an unsubscribe, once what was queued is read
            _ = [e async for e in sub]
        assert sub.closed and client.subscriptions == []


async def test_publish_over_ws_and_post_over_http_reach_a_subscriber(server, keys):
    async with Client(server.url, keys["read"]) as reader, Client(server.url, keys["admin"]) as admin:
        sub = await reader.subscribe("/custom/*")
        ok = await admin.publish("/custom/ops/notes", {"msg": "hi"}, 42)
        assert [s["index"] for s in ok["successful"]] == [0, 1] and ok["failed"] == []
        posted = await admin.post("custom/ops/notes", {"msg": "via http"})
        assert len(posted["successful"]) == 1
        got = [(await anext(sub)).data for _ in range(3)]
        assert got == [{"msg": "hi"}, 42, {"msg": "via http"}]


async def test_a_read_keys_publish_is_refused(server, keys):
    async with Client(server.url, keys["read"]) as reader:
        with pytest.raises(PublishError) as ws_err:
            await reader.publish("/custom/x", 1)
        assert ws_err.value.error_type == "UnauthorizedException" and "admin" in ws_err.value.message
        with pytest.raises(PublishError) as http_err:
            await reader.post("/custom/x", 1)
        assert http_err.value.status == 403 and http_err.value.error_type == "UnauthorizedException"


@pytest.fixture
async def make_server(tmp_path):
    """Start hubs with adjusted realtime settings; stopped at the end."""
    started: list[Server] = []

    async def start(**realtime) -> Server:
        settings = make_settings(tmp_path / str(len(started)))
        for name, value in realtime.items():
            setattr(settings.realtime, name, value)
        srv = Server(settings)
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


@pytest.mark.parametrize("flush_ms", [0, 5])
async def test_a_wrong_key_is_refused_on_connect(make_server, flush_ms):
    srv = await make_server(flush_interval_ms=flush_ms)
    client = Client(srv.url, "not-a-key", reconnect=False)
    with pytest.raises(AuthError) as err:
        await client.connect()
    assert "invalid API key" in str(err.value)
    await client.close()


async def test_ka_watchdog_reconnects_a_silent_connection(make_server):
    quiet = await make_server(connection_timeout_ms=1000, ka_interval_s=60)
    chatty = await make_server(connection_timeout_ms=1000, ka_interval_s=0.2)
    async with (
        Client(quiet.url, await issue_key(quiet), min_backoff=0.05, max_backoff=0.1) as silent,
        Client(chatty.url, await issue_key(chatty)) as kept,
    ):
        sub = await silent.subscribe("/custom/x")
        assert silent.timeout_s == 1.0
        async with asyncio.timeout(5):  # no ka within 1 s: the watchdog gives up on it and reconnects
            while silent.reconnects == 0:
                await asyncio.sleep(0.02)
        assert silent.reconnects == 1 and kept.reconnects == 0
        async with asyncio.timeout(2):
            while not sub.confirmed or not silent.connected:
                await asyncio.sleep(0.01)
        assert len(quiet.gateway.connections) == 1  # the dead one was closed, the new one resubscribed
        assert next(iter(quiet.gateway.connections)).subs.keys() == {sub.id}


async def test_subscribing_to_an_invalid_channel_names_the_problem(server, keys):
    async with Client(server.url, keys["read"]) as client:
        with pytest.raises(SubscribeError) as bad_segment:
            await client.subscribe("/trading/bad_segment")
        assert bad_segment.value.error_type == "BadRequestException" and "bad_segment" in str(bad_segment.value)
        with pytest.raises(SubscribeError) as bad_ns:
            await client.subscribe("/nowhere/x")
        assert "namespace 'nowhere' does not exist" in str(bad_ns.value)
        assert client.subscriptions == [] and client.connected


async def test_reconnects_and_resumes_durable_events_with_since(server, http, keys):
    port = server.port
    ea = await live_ea(http, server)
    async with Client(server.url, keys["read"], min_backoff=3.0, max_backoff=3.0) as client:
        sub = await client.subscribe("/trading/events/acc-1")
        await ea.send(position_event(1, pid=1))
        await ea.wait_ack(1)
        first = await next_event(sub, event="OPEN")
        assert first.offset is not None and sub.last_offset == first.offset

        await server.stop()  # the client sees a close and backs off for at least 1.5 s: the restart's time
        late = asyncio.create_task(client.subscribe("/trading/accounts/acc-1"))  # waits for the reconnect
        settings = msgspec.structs.replace(
            server.settings, server=msgspec.structs.replace(server.settings.server, port=port)
        )
        restarted = Server(settings)
        await restarted.start()
        try:
            assert not client.connected
            ea2 = await live_ea(http, restarted)  # published while the client is still away
            await ea2.send([position_event(seq, pid=seq) for seq in (2, 3, 4)])
            await ea2.wait_ack(4)
            assert not client.connected  # so 2-4 can only come from history, through since
            got = [first] + [await next_event(sub, event="OPEN") for _ in range(3)]
            assert client.reconnects == 1 and sub.recovered is True
            late_sub = await late
            (conn,) = restarted.gateway.connections
            assert conn.subs.keys() == {sub.id, late_sub.id}  # same id as before, each subscribed once
            await asyncio.sleep(0.05)
            assert {s.id for s in client.subscriptions} == {sub.id, late_sub.id} and not late_sub.closed
            await ea2.send(position_event(5, pid=5))  # and live ones keep coming
            got.append(await next_event(sub, event="OPEN"))
            assert [e.data["positionId"] for e in got] == [1, 2, 3, 4, 5]
            offsets = [e.offset for e in got]
            assert offsets == sorted(set(offsets))  # increasing: nothing twice
            assert sub._queue.empty()  # and nothing else pending
        finally:
            await restarted.stop()


async def test_a_subscription_that_saw_no_event_resumes_from_the_head_at_subscribe(server, http, keys):
    port = server.port
    ea = await live_ea(http, server)
    await ea.send(position_event(1, pid=1))  # history from before the subscription: not wanted
    await ea.wait_ack(1)
    async with Client(server.url, keys["read"], min_backoff=3.0, max_backoff=3.0) as client:
        sub = await client.subscribe("/trading/events/acc-1")
        assert sub.last_offset is not None  # the head, from subscribe_success
        await server.stop()
        settings = msgspec.structs.replace(
            server.settings, server=msgspec.structs.replace(server.settings.server, port=port)
        )
        restarted = Server(settings)
        await restarted.start()
        try:
            ea2 = await live_ea(http, restarted)
            await ea2.send([position_event(seq, pid=seq) for seq in (2, 3)])
            await ea2.wait_ack(3)
            assert not client.connected  # published during the outage
            got = [await next_event(sub, event="OPEN") for _ in range(2)]
            assert [e.data["positionId"] for e in got] == [2, 3] and sub.recovered is True
        finally:
            await restarted.stop()


async def test_watch_prints_one_line_per_event(server, http, keys):
    ea = await live_ea(http, server)
    await ea.send(account_state(equity=10_500.0))
    await asyncio.sleep(0.05)
    out = io.StringIO()
    code = await asyncio.wait_for(watch(server.url, "/trading/accounts/acc-1", keys["read"], out=out, limit=1), 5)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    stamp, channel, body = lines[0].split(" ", 2)
    assert stamp.endswith("Z") and channel == "/trading/accounts/acc-1"
    assert msgspec.json.decode(body)["id"] == "acc-1" and "\x1b[" not in lines[0]


async def test_watch_with_a_wrong_key_exits_2(server, capsys):
    assert await watch(server.url, "/trading/*", "nope", out=io.StringIO(), limit=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused the API key" in err[0]


async def test_watch_since_shows_offsets_and_styles_a_terminal(server, http, keys, monkeypatch):
    ea = await live_ea(http, server)
    await ea.send(position_event(1, pid=1))
    await ea.wait_ack(1)
    plain = io.StringIO()
    assert await watch(server.url, "/trading/events/acc-1", keys["read"], since=0, out=plain, limit=1) == 0
    assert " /trading/events/acc-1 #" in plain.getvalue() and '"positionId":1' in plain.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    styled = Terminal()
    assert await watch(server.url, "/trading/events/*", keys["read"], since=0, out=styled, limit=1) == 0
    assert "\x1b[" in styled.getvalue() and len(styled.getvalue().splitlines()) == 1
