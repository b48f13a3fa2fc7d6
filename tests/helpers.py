"""EA-side builders and a small client for tests: real protocol frames over real sockets."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tradewire.app import Server
from tradewire.config import Settings


def hello(**extra: Any) -> dict:
    return {
        "type": "hello",
        "platform": "MT5",
        "login": 5123456,
        "server": "ICMarkets-Live01",
        "broker": "IC Markets",
        "currency": "USD",
        "leverage": 500,
        "ea": {"name": "TradewireEA", "version": "1.0"},
        "tzOffsetSec": 7200,
        **extra,
    }


def position(pid: int = 1001, **extra: Any) -> dict:
    return {
        "id": pid,
        "ticket": pid,
        "symbol": "EURUSD",
        "side": "buy",
        "volume": 0.1,
        "openPrice": 1.08512,
        "price": 1.08530,
        "sl": 0.0,
        "tp": 0.0,
        "profit": 1.8,
        "swap": 0.0,
        "commission": -0.7,
        "magic": 0,
        "comment": "",
        "openTime": 1_700_000_000_000,
        **extra,
    }


def position_event(seq: int, event: str = "OPEN", pid: int = 1001, msg_id: str | None = None, **extra: Any) -> dict:
    pos = extra.pop("position", None) or position(pid)
    return {
        "type": "position",
        "seq": seq,
        "id": msg_id or f"{event.lower()}-{pid}-{seq}",
        "event": event,
        "ts": 1_700_000_000_000 + seq,
        "position": pos,
        **extra,
    }


def account_state(equity: float = 10_000.0, margin: float = 200.0, **extra: Any) -> dict:
    return {
        "type": "account",
        "ts": 1_700_000_000_000,
        "balance": 10_000.0,
        "equity": equity,
        "margin": margin,
        "freeMargin": equity - margin,
        "marginLevel": equity / margin * 100 if margin else 0,
        "marginCallLevel": 100.0,
        "stopOutLevel": 50.0,
        **extra,
    }


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Server]:
    """A hub on `settings` for the length of an `async with` block, stopped however the block ends."""
    server = Server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def issue_token(server: Server, account: str) -> str:
    token, _ = await server.store.add_token(account)
    return token


async def issue_key(server: Server, role: str = "read") -> str:
    key, _ = await server.store.add_api_key(role)
    return key


class EA:
    """A minimal EA over WebSocket: send frames, read replies by type."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: list[dict] = []

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, server: Server, token: str | None, **kw: Any) -> EA:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = server.url.replace("http", "ws", 1) + "/ea/v1"
        return cls(await session.ws_connect(url, headers=headers, **kw))

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected a text frame, got {msg.type} {msg.data!r} {msg.extra!r}")
        data = json.loads(msg.data)
        self.inbox.append(data)
        return data

    async def expect(self, type_: str, timeout: float = 5.0) -> dict:
        """The next message of this type; others are kept in `inbox`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if msg["type"] == type_:
                return msg

    async def greet(self, **extra: Any) -> dict:
        await self.send(hello(**extra))
        return await self.expect("welcome")

    async def wait_ack(self, seq: int, timeout: float = 5.0) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ack = await self.expect("ack", max(0.01, deadline - loop.time()))
            if ack["seq"] >= seq:
                return ack

    async def close(self) -> None:
        await self.ws.close()


async def until(check: Any, timeout: float = 8.0, what: str = "condition") -> Any:
    """Poll the async `check` until it returns something true (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.03)


def db_rows(server: Server, sql: str, *args: Any) -> list[tuple]:
    """Read the store's file through a separate connection: what is really committed on disk."""
    conn = sqlite3.connect(server.store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def auth_subprotocol(key: str, host: str = "127.0.0.1") -> str:
    """The `header-<base64url(JSON)>` subprotocol an AppSync Events client sends."""
    import base64

    raw = json.dumps({"host": host, "x-api-key": key}).encode()
    return "header-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Subscriber:
    """A raw AppSync Events client: frames exactly as AWS documents them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: list[dict] = []
        self.taken: set[int] = set()  # inbox indices already returned by event()

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, server: Server, key: str | None, *, init: dict | None = None, **kw: Any
    ) -> Subscriber:
        protocols = ["aws-appsync-event-ws"] + ([auth_subprotocol(key)] if key else [])
        url = server.url.replace("http", "ws", 1) + "/event/realtime"
        sub = cls(await session.ws_connect(url, protocols=protocols, **kw))
        await sub.send({"type": "connection_init", **({"payload": init} if init else {})})
        return sub

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected a text frame, got {msg.type} {msg.data!r} {msg.extra!r}")
        data = json.loads(msg.data)
        items = data["items"] if data.get("type") == "batch" else [data]
        self.inbox.extend(items)
        return data

    async def expect(self, type_: str, timeout: float = 5.0, **match: Any) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = len(self.inbox)
        while True:
            for item in self.inbox[seen:]:
                seen += 1
                if item["type"] == type_ and all(item.get(k) == v for k, v in match.items()):
                    return item
            await self.recv(max(0.01, deadline - loop.time()))

    async def subscribe(self, sub_id: str, channel: str, **extra: Any) -> dict:
        await self.send({"type": "subscribe", "id": sub_id, "channel": channel, **extra})
        return await self.expect("subscribe_success", id=sub_id)

    async def event(self, channel_part: str = "", timeout: float = 5.0, **where: Any) -> dict:
        """The first data frame not yet returned whose event matches, decoded, with the frame's extras."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, item in enumerate(self.inbox):
                if item["type"] == "data" and index not in self.taken:
                    event = json.loads(item["event"])
                    if isinstance(event, dict) and all(event.get(k) == v for k, v in where.items()):
                        self.taken.add(index)
                        return {**event, "_sub": item["id"], "_offset": item.get("offset")}
            await self.recv(max(0.01, deadline - loop.time()))


class ServeProcess:
    """`tradewire serve` as a real process on a free port: `url` once it logs that it listens.

    Its log is drained for as long as it runs (the last lines kept in `log`): a pipe nobody reads fills
    up, and the hub then blocks on its next log line (a 60-minute soak stalled so after 50 minutes).
    """

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url
        self.log: collections.deque[str] = collections.deque(maxlen=500)
        self._drain = asyncio.ensure_future(self._read_log())

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))

    @classmethod
    async def start(cls, *args: str, env: dict | None = None) -> ServeProcess:
        import os
        import re
        import sys

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradewire.cli",
            "serve",
            "--port",
            "0",
            *args,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TRADEWIRE_SERVER_HEARTBEAT_SEC": "1", **(env or {})},
        )
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
            if not line:
                raise RuntimeError("tradewire serve exited before listening")
            found = re.search(r"listening on (\S+)", line)
            if found:
                return cls(proc, found.group(1))

    async def stop(self, sig: int = 15) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        await asyncio.wait_for(self._drain, 5)  # the pipe ends with the process
        return code


async def batch(
    http: aiohttp.ClientSession, server: Any, token: str | None, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """An MT4 EA's POST /ea/v1/batch: (status, JSON answer). `raw`: a body sent as it is."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        resp = await http.post(server.url + "/ea/v1/batch", data=raw, headers=headers)
    else:
        resp = await http.post(server.url + "/ea/v1/batch", json=body, headers=headers)
    async with resp:
        return resp.status, await resp.json()


@contextlib.contextmanager
def sqlite_locked(path: str):
    """Another process holding the SQLite database's write lock: the hub's commits wait for it, then fail."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@contextlib.asynccontextmanager
async def http_server(method: str, path: str, handler: Any) -> AsyncIterator[str]:
    """A real HTTP server on a free port with one route (a webhook receiver, a stand-in API): its base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
