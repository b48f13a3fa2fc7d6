"""EA-side builders and a small client for tests: real protocol frames over real sockets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import aiohttp

from tradewire.app import Server


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


def db_rows(server: Server, sql: str, *args: Any) -> list[tuple]:
    """Read the store's file through a separate connection: what is really committed on disk."""
    conn = sqlite3.connect(server.store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
