"""A subscriber that stops reading must not delay others nor grow the server's memory without bound."""

import asyncio
import base64
import json
import os
import socket
import struct

from tradewire.app import Server

from conftest import make_settings
from helpers import EA, Subscriber, account_state, auth_subprotocol, issue_key, issue_token, position, position_event


async def start(tmp_path, **realtime):
    settings = make_settings(tmp_path)
    for key, value in realtime.items():
        setattr(settings.realtime, key, value)
    srv = Server(settings)
    await srv.start()
    return srv


async def raw_stalled_subscriber(srv, key: str, channel: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A subscriber that subscribes and then never reads again, with a tiny receive buffer, so that
    the kernel cannot soak up the backlog for it (loopback buffers are megabytes otherwise)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    ws_key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /event/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: aws-appsync-event-ws, {auth_subprotocol(key)}\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    for frame in ({"type": "connection_init"}, {"type": "subscribe", "id": "s", "channel": channel}):
        writer.write(masked_text_frame(json.dumps(frame).encode()))
    await writer.drain()
    return reader, writer


def tcp_established(sock) -> bool:
    """The connection's state from TCP_INFO, without reading it (tcpi_state 1 is ESTABLISHED)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    header = (
        bytes([0x81, 0x80 | len(payload)])
        if len(payload) < 126
        else bytes([0x81, 0xFE]) + struct.pack("!H", len(payload))
    )
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_stalled_durable_subscriber_is_closed_and_others_get_everything(tmp_path, http):
    srv = await start(tmp_path, max_backlog_bytes=256 * 1024)
    try:
        key = await issue_key(srv)
        _, stalled = await raw_stalled_subscriber(srv, key, "/trading/events/*")
        healthy = await Subscriber.connect(http, srv, key)
        await healthy.subscribe("ev", "/trading/events/*")

        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        total, peak = 8000, 0
        fat = "x" * 250  # ~0.7 KB per event: 8000 events is ~5.6 MB, far past the 256 KiB bound and kernel buffers
        received = 0

        async def read_healthy():
            nonlocal received
            while received < total:
                msg = await healthy.ws.receive(timeout=10)
                received += msg.data.count('"type":"data"')

        reader = asyncio.create_task(read_healthy())
        for start_seq in range(1, total + 1, 100):
            batch = [
                position_event(s, pid=s, position=position(s, comment=fat)) for s in range(start_seq, start_seq + 100)
            ]
            await ea.send(batch)
            await ea.wait_ack(start_seq + 99)
            peak = max([peak, *(c.outbox.stream_bytes for c in srv.gateway.connections)])
        await asyncio.wait_for(reader, 20)  # the healthy one got every event despite its stalled neighbour

        assert received == total
        assert peak <= 256 * 1024 + 4096  # bounded by the limit (plus at most one frame)
        assert srv.gateway.stats["closed_slow"] == 1
        for _ in range(100):
            if len(srv.gateway.connections) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(srv.gateway.connections) == 1  # the stalled one is gone, its memory with it
        assert srv.gateway.missed.parked == 0 and not srv.gateway.missed.active  # parked until it went
        # ...and the client is told, though it reads nothing: a graceful close would sit behind the unsent
        # backlog in the kernel for minutes, leaving the client ESTABLISHED and never reconnecting.
        sock = stalled.get_extra_info("socket")
        for _ in range(100):
            if not tcp_established(sock):
                break
            await asyncio.sleep(0.05)
        assert not tcp_established(sock)
        stalled.close()
    finally:
        await srv.stop()


async def test_stalled_latest_wins_subscriber_is_conflated_not_closed(tmp_path, http):
    srv = await start(tmp_path)
    try:
        key = await issue_key(srv)
        _, stalled = await raw_stalled_subscriber(srv, key, "/trading/prices/*")
        healthy = await Subscriber.connect(http, srv, key)
        await healthy.subscribe("p", "/trading/prices/*")
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        symbols = [f"SYM{i}" for i in range(20)]
        last = {}
        for n in range(1, 6001):
            ticks = [{"symbol": s, "bid": n + i / 100, "ask": n + i / 100 + 1, "ts": n} for i, s in enumerate(symbols)]
            await ea.send({"type": "ticks", "ticks": ticks})
            last = {t["symbol"]: t["bid"] for t in ticks}
        # A durable message is acked only after everything before it on the session was applied.
        await ea.send(position_event(1))
        await ea.wait_ack(1, timeout=60)
        slow = max(srv.gateway.connections, key=lambda c: c.outbox.pending_latest())
        assert 0 < slow.outbox.pending_latest() <= len(symbols)  # never more than one pending frame per channel
        assert srv.gateway.stats["conflated"] > 0
        assert srv.gateway.stats["closed_slow"] == 0 and len(srv.gateway.connections) == 2
        # the healthy subscriber's view converges on the newest prices
        seen = {}
        while seen != last:
            frame = await healthy.expect("data")
            event = json.loads(frame["event"])
            seen[event["symbol"]] = event["bid"]
        stalled.close()
    finally:
        await srv.stop()


async def read_text_frame(reader: asyncio.StreamReader) -> bytes:
    """One unmasked server-to-client WebSocket frame's payload (RFC 6455 §5.2)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return await reader.readexactly(length)


async def test_a_parked_subscriber_takes_no_value_per_tick_and_resumes_with_the_newest(tmp_path, http):
    """A latest-wins subscriber that stops reading is parked: publications no longer touch its pending
    values one by one; when it reads again it gets the newest value of every channel, those published
    while it was parked (a symbol it never had, too), as conflation would have left them."""
    srv = await start(tmp_path)
    try:
        gw = srv.gateway
        key = await issue_key(srv)
        reader, stalled = await raw_stalled_subscriber(srv, key, "/trading/prices/*")
        watcher = await Subscriber.connect(http, srv, key)  # someone reads the accounts: they are published
        await watcher.subscribe("a", "/trading/accounts/*")
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        last: dict[str, float] = {}

        async def tick(n: int, symbols: list[str]) -> None:
            ticks = [{"symbol": s, "bid": n + i / 100, "ask": n + i / 100 + 1, "ts": n} for i, s in enumerate(symbols)]
            await ea.send({"type": "ticks", "ticks": ticks})
            last.update((t["symbol"], t["bid"]) for t in ticks)

        symbols = [f"SYM{i}" for i in range(20)]
        for n in range(1, 6001):  # ~5 MB of frames: past the kernel's buffers and the transport's
            await tick(n, symbols)
        await ea.send(position_event(1))  # acked only once everything before it on the session was applied
        await ea.wait_ack(1, timeout=60)
        assert gw.missed.parked == 1
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
            assert "tradewire_subscriber_connections_parked 1.0" in await r.text()
        (slow,) = [c for c in gw.connections if c.parked_at is not None]
        (sub,) = slow.subs.values()
        before = dict(sub.pending)
        assert 0 < len(before) <= len(symbols)

        for n in range(6001, 6101):  # while parked: a few symbols move, one appears
            await tick(n, [*symbols[:5], "NEW"])
        await ea.send(account_state(equity=9_000.0))  # latest-wins too, on a channel it does not watch
        await ea.send(position_event(2))
        await ea.wait_ack(2, timeout=30)
        async with asyncio.timeout(10):  # the account was published, to the watcher
            while not any('"equity":9000' in i.get("event", "") for i in watcher.inbox):
                await watcher.recv(10)
        assert sub.pending == before  # the fan-out left it alone...
        # It reads nothing, and sends: nothing more of its is read while it is parked (each message would
        # queue a reply it never reads; an error quoting a megabyte frame was a megabyte). One: the read
        # that was already waiting when it was parked.
        read_before, replies_before = gw.stats["messages_in"], len(slow.outbox.replies)
        junk = masked_text_frame(json.dumps({"type": "x" * 20_000}).encode())
        for _ in range(50):
            stalled.write(junk)
        await asyncio.sleep(0.5)
        assert gw.stats["messages_in"] <= read_before + 1 and len(slow.outbox.replies) <= replies_before + 1
        # ...and noted one value per channel it watches (bounded by channels), nothing for the others
        assert sorted(c for c, _ in gw.missed.since(0, "/trading/*")) == sorted(
            f"/trading/prices/{s}" for s in [*symbols, "NEW"]
        )

        view: dict[str, float] = {}
        async with asyncio.timeout(30):
            while view != last:  # it reads again: everything, then what it missed
                frame = json.loads(await read_text_frame(reader))
                if frame["type"] == "data":
                    event = json.loads(frame["event"])
                    view[event["symbol"]] = event["bid"]
        assert gw.missed.parked == 0 and len(gw.missed) == 0 and slow.parked_at is None
        assert gw.stats["closed_slow"] == 0
        async with asyncio.timeout(10):  # reading again, it is read again: the 50 are answered
            while gw.stats["messages_in"] < read_before + 50:
                await asyncio.sleep(0.05)
        stalled.close()
    finally:
        await srv.stop()


async def test_a_subscriber_that_takes_nothing_for_stall_close_s_is_closed_and_told(tmp_path, http):
    """A latest-wins subscriber never overflows a backlog, so one that stopped reading for good (a frozen
    client, a peer gone without a FIN) held its socket, kernel buffers and place under the caps forever. Parked
    for `stall_close_s` it is closed 4008, reset so the client is told; an idle reader is left alone."""
    srv = await start(tmp_path, stall_close_s=1.0, ka_interval_s=0.5)
    try:
        gw = srv.gateway
        key = await issue_key(srv)
        _, stalled = await raw_stalled_subscriber(srv, key, "/trading/prices/*")
        idle = await Subscriber.connect(http, srv, key)  # reads, but nothing comes on its channel
        await idle.subscribe("a", "/trading/alerts/*")
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        symbols = [f"SYM{i}" for i in range(20)]
        n = 0
        async with asyncio.timeout(30):
            while gw.missed.parked == 0:  # until it is parked: the kernel's buffers and the transport's are full
                n += 1
                ticks = [{"symbol": s, "bid": n + i / 100, "ask": n + 1, "ts": n} for i, s in enumerate(symbols)]
                await ea.send({"type": "ticks", "ticks": ticks})
                if n % 200 == 0:
                    await ea.send(position_event(n // 200))
                    await ea.wait_ack(n // 200, timeout=30)
        sock = stalled.get_extra_info("socket")
        async with asyncio.timeout(5):
            while tcp_established(sock):
                await asyncio.sleep(0.05)
        assert gw.stats["closed_stalled"] == 1 and gw.stats["closed_slow"] == 0
        assert len(gw.connections) == 1 and gw.missed.parked == 0  # the idle reader is still there
        assert (await idle.expect("ka"))["type"] == "ka"  # and still kept alive
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
            assert "tradewire_realtime_closed_stalled_total 1.0" in await r.text()
        stalled.close()
    finally:
        await srv.stop()
