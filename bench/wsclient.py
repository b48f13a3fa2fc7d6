"""A small raw WebSocket client for the load generators: hand-made handshake, frames masked with a zero key.

RFC 6455 requires every client frame to be masked, but not with any particular key. A zero key leaves the
payload as it is, so a frame can be built once and written many times: the load generators spend their CPU
writing bytes, not XOR-ing them, which keeps them cheap next to the server they measure. Both servers under
test (aiohttp for tradewire, websockets under uvicorn for the baseline) unmask with whatever key is given.

Two receive modes:
- framed: frames are parsed and text messages queued (`recv`, `expect`) or handed to `on_message`: used
  for set-up (welcome, connection_ack, subscribe_success) and for acks in the durable scenario;
- scan: raw bytes go to `on_raw` without any framing at all. Server frames are not masked, so their JSON
  is in the byte stream as it is, and counting `"data"` or finding a probe price is a C-speed scan.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

ZERO_MASK = b"\x00\x00\x00\x00"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final client frame, masked with a zero key (so the payload bytes are sent unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + ZERO_MASK + payload


def json_frame(obj: Any) -> bytes:
    return client_frame(json.dumps(obj, separators=(",", ":")).encode())


class FrameParser:
    """Server frames (unmasked) out of a byte stream; fragments are not used by either server."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out: list[tuple[int, bytes]] = []
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            length, j = b1 & 0x7F, i + 2
            if length == 126:
                if n - j < 2:
                    break
                length, j = int.from_bytes(buf[j : j + 2], "big"), j + 2
            elif length == 127:
                if n - j < 8:
                    break
                length, j = int.from_bytes(buf[j : j + 8], "big"), j + 8
            if b1 & 0x80:  # a masked server frame: not allowed, and neither server sends one
                raise ConnectionError("the server sent a masked frame")
            if n - j < length:
                break
            out.append((b0 & 0x0F, bytes(buf[j : j + length])))
            i = j + length
        del buf[:i]
        return out

    def take_rest(self) -> bytes:
        rest = bytes(self.buf)
        self.buf.clear()
        return rest


class WS(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._head = bytearray()
        self.parser = FrameParser()
        self.inbox: deque[dict] = deque()
        self._arrived = asyncio.Event()
        self.on_message: Callable[[bytes], None] | None = None  # framed mode: text payloads
        self.on_raw: Callable[[bytes], None] | None = None  # scan mode: the raw byte stream
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self.close_code: int | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.on_raw is not None:
            self.on_raw(data)
            return
        if not self.handshake.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._head[: self._head.find(b"\r\n")])
            rest = bytes(self._head[end + 4 :])
            self._head.clear()
            if b" 101 " not in status + b" ":
                error = Refused if b" 429 " in status + b" " else ConnectionError
                self.handshake.set_exception(error(f"upgrade refused: {status.decode(errors='replace')}"))
                return
            self.handshake.set_result(None)
            if not rest:
                return
            data = rest
        for opcode, payload in self.parser.feed(data):
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == TEXT:
            if self.on_message is not None:
                self.on_message(payload)
            else:
                msg = json.loads(payload)
                # tradewire's batching extension wraps replies too: {"type":"batch","items":[...]}
                if isinstance(msg, dict) and msg.get("type") == "batch":
                    self.inbox.extend(msg.get("items", []))
                else:
                    self.inbox.append(msg)
                self._arrived.set()
        elif opcode == PING:
            self.write(client_frame(payload, PONG))
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.transport is not None:
                self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"connection lost during the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.resume_writing()
        self._arrived.set()

    # --- use ----------------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send(self, obj: Any) -> None:
        self.write(json_frame(obj))

    async def drain(self) -> None:
        if self.paused and not self.is_closed:
            if self._drain is None:
                self._drain = self.loop.create_future()
            await self._drain

    async def recv(self, timeout: float = 10.0) -> dict:
        deadline = self.loop.time() + timeout
        while not self.inbox:
            if self.is_closed:
                raise ConnectionError(f"closed by the server (code {self.close_code})")
            self._arrived.clear()
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError("no message from the server")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.inbox.popleft()

    async def expect(self, type_: str, timeout: float = 10.0) -> dict:
        deadline = self.loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - self.loop.time()))
            if msg.get("type") == type_:
                return msg
            if msg.get("type") in ("error", "connection_error", "subscribe_error"):
                raise ConnectionError(f"expected {type_}, got {msg}")

    def scan(self, on_raw: Callable[[bytes], None]) -> None:
        """Switch to scan mode: from now on raw bytes go to `on_raw`, starting with what was buffered."""
        self.inbox.clear()
        rest = self.parser.take_rest()
        self.on_raw = on_raw
        if rest:
            on_raw(rest)

    def abort(self) -> None:
        """Reset the connection: the server drops whatever of ours it has not read yet."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(client_frame(b"\x03\xe8", CLOSE))
            self.transport.close()


def tuned_socket(rcvbuf: int | None = None, sndbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket with its buffers set before connecting (they cannot be shrunk after)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # A deliberately slow reader: a small receive buffer and a small MSS, both set before connecting.
        # Loopback's 64 KiB MSS would otherwise let the server's kernel buffer megabytes for it, and it
        # would take the server a minute to notice that this subscriber has fallen behind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    if sndbuf:
        # A flooding writer: a bounded send buffer keeps what it has written close to what the server read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.setblocking(False)
    return sock


def upgrade_request(
    host: str, port: int, path: str, headers: dict[str, str] | None = None, protocols: list[str] | None = None
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Refused(ConnectionError):
    """The server answered the upgrade with 429: over its connect rate."""


async def connect(
    host: str,
    port: int,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    protocols: list[str] | None = None,
    timeout: float = 30.0,
    write_high_water: int = 256 * 1024,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
) -> WS:
    loop = asyncio.get_running_loop()
    if rcvbuf or sndbuf:
        sock = tuned_socket(rcvbuf, sndbuf)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        _, ws = await loop.create_connection(WS, sock=sock)
    else:
        _, ws = await asyncio.wait_for(loop.create_connection(WS, host, port), timeout)
    assert ws.transport is not None
    ws.transport.set_write_buffer_limits(high=write_high_water)
    ws.transport.write(upgrade_request(host, port, path, headers, protocols))
    try:
        await asyncio.wait_for(asyncio.shield(ws.handshake), timeout)
    except BaseException:
        ws.transport.close()
        raise
    return ws


async def raw_subscriber(
    host: str, port: int, key: str, sub_id: str, channel: str, rcvbuf: int, timeout: float = 30.0
) -> socket.socket:
    """A subscriber on a bare socket, for clients that read on their own terms or never: upgrade,
    `connection_init`, `subscribe`, read up to `subscribe_success`, and hand the socket over. Nothing reads
    it after that unless its owner calls `recv` on it; `tcp_established` tells whether the server dropped it."""
    loop = asyncio.get_running_loop()
    sock = tuned_socket(rcvbuf=rcvbuf)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            protocols = ["aws-appsync-event-ws", auth_subprotocol(key, host)]
            auth = {"x-api-key": key, "host": host}
            subscribe = {"type": "subscribe", "id": sub_id, "channel": channel, "authorization": auth}
            hello = [{"type": "connection_init"}, subscribe]
            await loop.sock_sendall(
                sock, upgrade_request(host, port, "/event/realtime", None, protocols) + b"".join(map(json_frame, hello))
            )
            head, upgraded, parser = b"", False, FrameParser()
            while True:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectionError("closed by the server while subscribing")
                if not upgraded:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    status, _, data = head.partition(b"\r\n\r\n")
                    if b" 101 " not in status.split(b"\r\n", 1)[0] + b" ":
                        raise ConnectionError(f"upgrade refused: {status[:80].decode(errors='replace')}")
                    upgraded = True
                for opcode, payload in parser.feed(data):
                    if opcode != TEXT:
                        continue
                    kind = json.loads(payload).get("type")
                    if kind == "subscribe_success":
                        return sock
                    if kind in ("error", "connection_error", "subscribe_error"):
                        raise ConnectionError(f"subscribe refused: {payload[:200]!r}")
    except BaseException:
        sock.close()
        raise


def tcp_established(sock: socket.socket) -> bool:
    """Whether the connection is still open, read from TCP_INFO without reading the socket: a peer's reset
    or FIN shows here even while nothing reads (tcpi_state 1 is ESTABLISHED)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1
    except OSError:
        return False


def auth_subprotocol(key: str, host: str) -> str:
    """The `header-<base64url(JSON)>` subprotocol an AppSync Events client sends (tests/helpers.py does the same)."""
    raw = json.dumps({"host": host, "x-api-key": key}).encode()
    return "header-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
