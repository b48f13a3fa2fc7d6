"""The baseline: a deliberately naive implementation of the brief's design, to measure tradewire against.

Starlette + uvicorn, one coroutine per socket, stdlib json, and for every message a broadcast loop that
JSON-encodes the event and its `data` frame again for every subscriber and awaits each send in turn. This is
the implementation the brief's design suggests when written the obvious way; it is not a straw man with
sleeps in it, and it is run with uvicorn's standard extras (uvloop, httptools, websockets).

It speaks just enough of the two protocols for the fan-out and latency scenarios to run against it
unchanged: EA `hello`/`ticks`/`account`/`positions`/`heartbeat` on `/ea/v1` (durable messages are acked at
once and stored nowhere: the baseline is not durable), and AppSync Events `connection_init`/`subscribe`/
`unsubscribe` and `data` frames on `/event/realtime`, with `/*` wildcards. It has no snapshots, no `since`,
no batching (a `connection_init` asking for it gets plain frames) and no conflation. Tokens and API keys
are checked against the same SQLite file tradewire uses (SHA-256 of the secret), one query per connection.

    python -m bench.baseline.app --port 0 --store sqlite:///PATH    # logs `listening on URL` on stderr
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import socket
import sqlite3
import sys
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

SUBPROTOCOL = "aws-appsync-event-ws"


def now_ms() -> int:
    return int(time.time() * 1000)


def slug(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", symbol).strip("-") or "x"


def matches(pattern: str, channel: str) -> bool:
    if pattern.endswith("/*"):
        return channel.startswith(pattern[:-1])
    return pattern == channel


class Hub:
    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.subscriptions: list[tuple[WebSocket, str, str]] = []  # (socket, subscription id, pattern)
        self.prices: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        self.positions: dict[str, list] = {}
        self.counters = {"frames": 0, "messages": 0, "errors": 0, "deliveries": 0, "frames_out": 0, "writes": 0}

    def lookup(self, sql: str, secret: str | None) -> str | None:
        if not secret:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        conn = sqlite3.connect(self.db_path)
        try:
            row = conn.execute(sql, (digest,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def account_of(self, token: str | None) -> str | None:
        return self.lookup("SELECT account FROM ea_tokens WHERE token_hash = ? AND revoked_at IS NULL", token)

    def role_of(self, key: str | None) -> str | None:
        return self.lookup("SELECT role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", key)

    async def broadcast(self, channel: str, payload: dict) -> None:
        for ws, sub_id, pattern in list(self.subscriptions):
            if not matches(pattern, channel):
                continue
            frame = json.dumps({"type": "data", "id": sub_id, "event": json.dumps(payload)})
            self.counters["deliveries"] += 1
            try:
                await ws.send_text(frame)
            except Exception:
                self.drop(ws)
                continue
            self.counters["frames_out"] += 1
            self.counters["writes"] += 1

    def drop(self, ws: WebSocket) -> None:
        self.subscriptions = [s for s in self.subscriptions if s[0] is not ws]


HUB: Hub


async def ea_endpoint(ws: WebSocket) -> None:
    hub = HUB
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    account = hub.account_of(token.strip()) if scheme.lower() == "bearer" else None
    await ws.accept()
    if account is None:
        await ws.close(code=1008, reason="invalid or revoked token")
        return
    greeted = False
    try:
        while True:
            text = await ws.receive_text()
            hub.counters["frames"] += 1
            try:
                data = json.loads(text)
            except ValueError as exc:
                hub.counters["errors"] += 1
                await ws.send_text(json.dumps({"type": "error", "code": "bad_json", "message": str(exc)}))
                continue
            for msg in data if isinstance(data, list) else [data]:
                hub.counters["messages"] += 1
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "hello":
                    greeted = True
                    hub.accounts[account] = {"id": account, "status": "live", "info": msg}
                    welcome = {
                        "type": "welcome",
                        "sessionId": str(uuid.uuid4()),
                        "ackedSeq": 0,
                        "heartbeatSec": 10,
                        "serverTime": now_ms(),
                    }
                    await ws.send_text(json.dumps(welcome))
                    await hub.broadcast(f"/trading/accounts/{account}", hub.accounts[account])
                elif not greeted:
                    hub.counters["errors"] += 1
                    await ws.send_text(json.dumps({"type": "error", "code": "hello_required", "message": "hello"}))
                elif kind == "ticks":
                    for tick in msg.get("ticks", []):
                        if tick.get("bid", 0) > 0 and tick.get("ask", 0) > 0:
                            hub.prices[tick["symbol"]] = tick
                            await hub.broadcast(f"/trading/prices/{slug(tick['symbol'])}", tick)
                elif kind == "account":
                    hub.accounts.setdefault(account, {"id": account})["state"] = msg
                    await hub.broadcast(f"/trading/accounts/{account}", hub.accounts[account])
                elif kind == "positions":
                    hub.positions[account] = msg.get("positions", [])
                    payload = {"account": account, "ts": msg.get("ts"), "positions": hub.positions[account]}
                    await hub.broadcast(f"/trading/positions/{account}", payload)
                elif kind in ("position", "error"):
                    # Not durable: acked at once, kept nowhere.
                    await ws.send_text(json.dumps({"type": "ack", "seq": msg.get("seq", 0)}))
                elif kind != "heartbeat":
                    hub.counters["errors"] += 1
                    await ws.send_text(json.dumps({"type": "error", "code": "unknown_type", "message": str(kind)}))
    except WebSocketDisconnect:
        pass


def _key_from_subprotocols(protocols: list[str]) -> str | None:
    for proto in protocols:
        if proto.startswith("header-"):
            encoded = proto[len("header-") :]
            try:
                auth = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            except ValueError:
                return None
            return _key_of(auth)
    return None


def _key_of(auth: object) -> str | None:
    if isinstance(auth, dict):
        for name, value in auth.items():
            if isinstance(name, str) and name.lower() == "x-api-key" and isinstance(value, str):
                return value
    return None


async def realtime_endpoint(ws: WebSocket) -> None:
    hub = HUB
    offered = list(ws.scope.get("subprotocols", []))
    conn_key = _key_from_subprotocols(offered) or ws.headers.get("x-api-key")
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    mine: dict[str, tuple[WebSocket, str, str]] = {}
    try:
        while True:
            try:
                msg = json.loads(await ws.receive_text())
            except ValueError:
                await ws.send_text(json.dumps({"type": "error", "errors": [{"errorType": "BadRequestException"}]}))
                continue
            kind = msg.get("type")
            if kind == "connection_init":
                await ws.send_text(json.dumps({"type": "connection_ack", "connectionTimeoutMs": 300000}))
            elif kind == "subscribe":
                key = _key_of(msg.get("authorization")) or conn_key
                if hub.role_of(key) is None:
                    error = {"errorType": "UnauthorizedException", "message": "subscribing needs a valid API key"}
                    await ws.send_text(json.dumps({"type": "subscribe_error", "id": msg.get("id"), "errors": [error]}))
                    continue
                sub = (ws, msg["id"], "/" + msg["channel"].strip("/"))
                mine[msg["id"]] = sub
                hub.subscriptions.append(sub)
                await ws.send_text(json.dumps({"type": "subscribe_success", "id": msg["id"]}))
            elif kind == "unsubscribe":
                sub = mine.pop(msg.get("id"), None)
                if sub is not None and sub in hub.subscriptions:
                    hub.subscriptions.remove(sub)
                await ws.send_text(json.dumps({"type": "unsubscribe_success", "id": msg.get("id")}))
            else:
                error = {"errorType": "UnsupportedOperation", "message": f"unsupported: {kind}"}
                await ws.send_text(json.dumps({"type": "error", "id": msg.get("id"), "errors": [error]}))
    except WebSocketDisconnect:
        pass
    finally:
        hub.drop(ws)


async def metrics(request: Request) -> PlainTextResponse:
    """The same counter names tradewire exposes, for the counters this server has."""
    hub = HUB
    key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if hub.role_of(key) is None:
        return PlainTextResponse("missing or invalid API key\n", status_code=401)
    lines = [f"tradewire_ea_{k}_total {hub.counters[k]}" for k in ("frames", "messages", "errors")]
    lines += [f"tradewire_realtime_{k}_total {hub.counters[k]}" for k in ("deliveries", "frames_out", "writes")]
    lines.append("tradewire_realtime_conflated_total 0")
    lines.append(f"tradewire_subscriptions {len(hub.subscriptions)}")
    return PlainTextResponse("\n".join(lines) + "\n")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def build_app(db_path: str) -> Starlette:
    global HUB
    HUB = Hub(db_path)
    return Starlette(
        routes=[
            WebSocketRoute("/ea/v1", ea_endpoint),
            WebSocketRoute("/event/realtime", realtime_endpoint),
            Route("/api/v1/metrics", metrics),
            Route("/api/v1/healthz", healthz),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--store", required=True, help="sqlite:///PATH: the tradewire database holding tokens/keys")
    args = parser.parse_args(argv)
    if not args.store.startswith("sqlite:///"):
        parser.error("--store must be sqlite:///PATH")
    db_path = args.store.removeprefix("sqlite:///").split("?", 1)[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        build_app(db_path),
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_ping_interval=None,  # the load generators do not answer pings in scan mode; tradewire sends none either
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    print(f"baseline listening on http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
