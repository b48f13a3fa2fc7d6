"""Lambda entry points: API Gateway WebSocket routes for EAs, the HTTP API for REST, the schedule.

- `connect` (`$connect`): the EA token from `Authorization: Bearer ...`, checked against the store's
  tokens; refused with 401 (API Gateway then refuses the upgrade). The connection -> account binding is
  remembered in the live table.
- `default` (`$default`): one protocol v1 frame through the same core as the server: `SessionCore`
  (validation, hello first, one account per token), `LiveState`'s diff logic on the account view loaded
  from the live table, `AlertRules`, and the DynamoDB store (the shared exactly-once planner, conditional
  writes). Replies (welcome, error, one cumulative ack per frame) go back through `@connections`;
  publications go to AppSync Events on DESIGN §6's channels after commit.
- `disconnect` (`$disconnect`): the session ended; CONNECTION_LOST follows if no new one comes in time.
- `schedule` (EventBridge, every minute): CONNECTION_LOST / STALE_DATA for silent accounts, exposure.
- `rest` (HTTP API, payload format 2.0): the `/api/v1` queries, from DynamoDB.

Process model: Lambda calls a handler synchronously. Each handler runs its async body with
`run_until_complete` on ONE event loop per process (created on first use), so the store (its
aiobotocore client and writer task), the live table and the HTTP session to AppSync are opened once per
Lambda container and reused by later invocations (a cold start pays for opening them; a warm call does
not). Nothing else is kept between calls: state comes from DynamoDB every time. `reset()` closes all of
it (tests; `asyncio.run` semantics per call are available by calling `reset()` after each).

Environment: `TRADEWIRE_STORE` (dynamodb://PREFIX?region=...), `TRADEWIRE_LIVE_TABLE` (default
PREFIX-live), `TRADEWIRE_APPSYNC_HTTP_URL` (https://.../event), `TRADEWIRE_APPSYNC_API_KEY`,
`TRADEWIRE_APPSYNC_NAMESPACE` (default `trading`), and the usual TRADEWIRE_* settings (system magic
numbers, alert levels, heartbeat).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgspec

from tradewire import api, channels
from tradewire.alerts import CONNECTION_LOST, AlertRules, Raise, Resolve, Transition, is_stop_out_close
from tradewire.aws.connections import ApiGatewayConnections, Connections, management_endpoint
from tradewire.aws.publisher import EventPublisher, PublishError
from tradewire.aws.state import Connection, LiveTable
from tradewire.config import Settings, load_settings
from tradewire.ingest import protocol as p
from tradewire.ingest.session import (
    Durable,
    Greet,
    Reply,
    SessionCore,
    Volatile,
    account_info,
    account_state,
    login_changed,
    positions_refused,
    symbols_refused,
)
from tradewire.model import Alert, Position, is_account_id, new_alert, now_ms
from tradewire.redact import redact_url
from tradewire.state import LiveState
from tradewire.store.base import (
    AlertAckOp,
    AlertQuery,
    AlertRaiseOp,
    AlertResolveOp,
    DurableStream,
    EAErrorOp,
    EAPositionOp,
    PresenceOp,
    ReconcileOp,
    StoreError,
    WriteResult,
    hash_secret,
)
from tradewire.store.dynamodb import DynamoStore

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


# --- per-process runtime ------------------------------------------------------------------------
class Runtime:
    def __init__(self, env: Mapping[str, str], connections: Callable[[dict], Connections] | None = None) -> None:
        self.env = dict(env)
        # Settings from TRADEWIRE_* variables, and those only a file can hold (per-account alert levels, market
        # hours, symbol classes) from TRADEWIRE_CONFIG: a TOML file shipped with the functions (the layer's /opt).
        self.settings: Settings = load_settings(self.env.get("TRADEWIRE_CONFIG") or None, env=self.env)
        self.store_url = self.settings.store.url
        if not self.store_url.startswith("dynamodb://"):
            raise ValueError(f"TRADEWIRE_STORE must be a dynamodb:// URL on AWS, not {redact_url(self.store_url)!r}")
        self.loop = asyncio.new_event_loop()
        self.store: DynamoStore | None = None
        self.live = LiveTable(self.store_url, self.env.get("TRADEWIRE_LIVE_TABLE") or None)
        url = self.env.get("TRADEWIRE_APPSYNC_HTTP_URL", "")
        self.publisher = (
            EventPublisher(
                url,
                self.env.get("TRADEWIRE_APPSYNC_API_KEY", ""),  # none: SigV4 with the function's role
                self.env.get("TRADEWIRE_APPSYNC_NAMESPACE") or channels.NAMESPACE,
                region=self.env.get("AWS_REGION", ""),
            )
            if url
            else None
        )
        self._connections_factory = connections
        self._connections: dict[str, Connections] = {}
        self._tokens: dict[str, tuple[str | None, int]] = {}  # token hash -> (account or None, asked again after)
        self.system_magics = set(self.settings.system.magic_numbers)
        self.clock: Callable[[], int] = now_ms

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def token_stands(self, conn: Connection) -> bool:
        """Whether the token a connection was opened with is still valid for its account: asked of the store
        at most once per auth_cache_s per token in this container (containers serve many frames)."""
        if not conn.tokenHash:
            # Opened under a version that did not record its token: nothing to check a revoke against (it
            # would write on for up to API Gateway's 2 h). Closed once: the EA reconnects and is authorized.
            return False
        now = self.clock()
        known = self._tokens.get(conn.tokenHash)
        if known is None or known[1] <= now:
            store = await self.open()
            known = (
                await store.token_hash_account(conn.tokenHash),
                now + int(self.settings.server.auth_cache_s * 1000),
            )
            self._tokens[conn.tokenHash] = known
        return known[0] == conn.account

    async def open(self) -> DynamoStore:
        if self.store is None:
            store = DynamoStore(self.store_url)
            await store.open()  # creates missing tables (the template creates them on AWS)
            await self.live.open(create=True)
            self.store = store
        return self.store

    def connections(self, request_context: dict) -> Connections:
        endpoint = management_endpoint(request_context)
        client = self._connections.get(endpoint)
        if client is None:
            factory = self._connections_factory or (lambda rc: ApiGatewayConnections(management_endpoint(rc)))
            client = self._connections[endpoint] = factory(request_context)
        return client

    def publish(self, channel: str, payload: Any) -> None:
        if self.publisher is not None:
            self.publisher.publish(channel, payload)

    async def flush(self) -> None:
        if self.publisher is None:
            return
        try:
            await self.publisher.flush()
        except PublishError as exc:  # AppSync keeps no history: say so loudly, the data is in DynamoDB
            log.error("publish to AppSync Events failed: %s", exc)

    async def aclose(self) -> None:
        for client in self._connections.values():
            await client.close()
        if self.publisher is not None:
            await self.publisher.close()
        await self.live.close()
        if self.store is not None:
            await self.store.close()
            self.store = None


_runtime: Runtime | None = None


def runtime(env: Mapping[str, str] | None = None, connections: Callable[[dict], Connections] | None = None) -> Runtime:
    """The process's runtime, created from the environment on first use (or from `env` given by a test)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(os.environ if env is None else env, connections)
    return _runtime


def reset() -> None:
    """Close the cached store, clients and loop: the next call starts from scratch."""
    global _runtime
    rt, _runtime = _runtime, None
    if rt is not None:
        rt.run(rt.aclose())
        rt.loop.close()


def _header(event: dict, name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    for key, values in (event.get("multiValueHeaders") or {}).items():
        if key.lower() == name and values:
            return values[0]
    return None


def _bearer(event: dict) -> str | None:
    scheme, _, token = (_header(event, "authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- WebSocket routes ---------------------------------------------------------------------------
def connect(event: dict, context: Any) -> dict:
    rt = runtime()
    return rt.run(_connect(rt, event))


async def _connect(rt: Runtime, event: dict) -> dict:
    store = await rt.open()
    token = _bearer(event)
    account = await store.token_account(token) if token else None
    if account is None:
        reason = "missing bearer token" if token is None else "invalid or revoked token"
        return {"statusCode": 401, "body": reason}
    cid = event["requestContext"]["connectionId"]
    await rt.live.put_connection(
        Connection(id=cid, account=account, connectedAt=rt.clock(), tokenHash=hash_secret(token or ""))
    )
    return {"statusCode": 200}


def disconnect(event: dict, context: Any) -> dict:
    rt = runtime()
    return rt.run(_disconnect(rt, event))


async def _disconnect(rt: Runtime, event: dict) -> dict:
    await rt.open()
    conn = await rt.live.delete_connection(event["requestContext"]["connectionId"])
    if conn is not None and conn.greeted:
        await _session_ended(rt, conn.account)
    return {"statusCode": 200}


async def _session_ended(rt: Runtime, account: str) -> None:
    """A greeted connection is gone: one session fewer, atomically (at none, CONNECTION_LOST follows after
    the grace period unless a new session says hello). The body is not written: a frame may be saving it."""
    now = rt.clock()
    state = LiveState()
    await rt.live.load(state, account)
    view = state.account(account)
    view.sessions = max(0, await rt.live.session_ended(account, now, counted=view.sessions))
    if view.sessions == 0:
        view.connected_at = None
    rt.publish(channels.accounts(account), state.summary(account, now))
    await rt.flush()


def default(event: dict, context: Any) -> dict:
    rt = runtime()
    return rt.run(_default(rt, event))


async def _default(rt: Runtime, event: dict) -> dict:
    store = await rt.open()
    ctx = event["requestContext"]
    cid = ctx["connectionId"]
    conns = rt.connections(ctx)
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body)
    conn = await rt.live.get_connection(cid)
    if conn is None:  # $connect's item expired or was never written: the EA must reconnect
        await conns.post(cid, p.encode(p.ErrorReply(code="unknown_connection", message="reconnect")))
        await conns.delete(cid)
        return {"statusCode": 200}
    if not await rt.token_stands(conn):  # revoked since $connect: it writes nothing more (it gets 401 anew)
        why = "the token was revoked" if conn.tokenHash else "opened before tokens were recorded: to reconnect"
        log.info("account %s: closing its connection: %s", conn.account, why)
        # Its session ends here: the $disconnect that follows finds no connection item, and did nothing.
        if (gone := await rt.live.delete_connection(cid)) is not None and gone.greeted:
            await _session_ended(rt, conn.account)
        await conns.delete(cid)
        return {"statusCode": 200}
    frame = _Frame(rt, store, conns, conn)
    try:
        await frame.run(body)
    finally:  # what was committed (and maybe acked) is told even when the rest of the frame failed
        await rt.flush()
    return {"statusCode": 200}


class _Frame:
    """One `$default` invocation: the hub's work for one frame, with state loaded and saved around it."""

    def __init__(self, rt: Runtime, store: DynamoStore, conns: Connections, conn: Connection) -> None:
        self.rt, self.store, self.conns, self.conn = rt, store, conns, conn
        self.account = conn.account
        self.now = rt.clock()
        limits = rt.settings.limits
        self.state = LiveState(
            max_symbols_per_account=limits.max_symbols_per_account,
            max_positions_per_account=limits.max_positions_per_account,
        )
        self.rules = AlertRules(rt.settings.alerts, rt.settings.server.heartbeat_sec)
        self.ended_at: int | None = None
        self.alert_futures: list[asyncio.Future[WriteResult]] = []
        self.other_futures: list[asyncio.Future[WriteResult]] = []
        self.stream = DurableStream()  # this frame's durable messages, in order (see DurableStream)
        self.positions_changed = False

    async def send(self, msg: msgspec.Struct) -> None:
        await self.conns.post(self.conn.id, p.encode(msg))

    async def run(self, body: str | bytes) -> None:
        core = SessionCore(self.account, greeted=self.conn.greeted)
        steps = core.receive(body)
        self.ended_at = await self.rt.live.load(self.state, self.account)
        # Its open episodes, not its newest open alerts: 100 SYSTEM_ERRORs newer than a MARGIN_CALL hid it,
        # and the MARGIN_CALL then stayed open for good (recovery never resolved it).
        self.rules.load_episodes(self.account, await self.store.open_episodes(self.account))
        if self.ended_at is not None:
            self.rules.session_ended(self.account, self.ended_at)
        known = self.state.account(self.account).info  # kept in the live table: across calls and deploys
        for step in steps:
            if isinstance(step, Greet) and (refused := login_changed(self.account, known, step.hello)) is not None:
                log.warning("account %s: hello refused: %s", self.account, refused)
                await self.send(p.ErrorReply(code=p.LOGIN_CHANGED, message=refused, ref="hello"))
                await self.conns.delete(self.conn.id)  # nothing of the frame applied, nothing saved
                return
        durable: list[tuple[p.DurableMsg, asyncio.Future[WriteResult]]] = []
        for step in steps:
            if isinstance(step, Greet):
                await self.send(await self.greet(step.hello))
            elif isinstance(step, Volatile):
                await self.volatile(step.msg)
            elif isinstance(step, Durable):
                durable.append((step.msg, self.submit_durable(step.msg)))
            elif isinstance(step, Reply):
                await self.send(step.msg)
        acked = 0
        for msg, fut in durable:
            try:
                result = await fut
            except StoreError as exc:
                # Ack nothing more; the EA resends after it reconnects (as the server closes with 1011).
                log.error("account %s: store failed for %s: %s", self.account, msg.id, exc)
                await self.send(p.ErrorReply(code=p.STORE_UNAVAILABLE, message="store unavailable; resend later"))
                await self.conns.delete(self.conn.id)
                break
            acked = max(acked, msg.seq)
            if result.status == "stored" and result.events and is_stop_out_close(msg):  # a resend is the same one
                # The rules are new in each call: when the last STOP_OUT ended comes from the store.
                last = await self.store.alerts(AlertQuery(account=self.account, type="STOP_OUT", limit=1))
                if last and last[0].resolvedAt is not None:
                    self.rules.stop_out_ended(self.account, last[0].resolvedAt)
                self.transitions(
                    self.rules.stop_out_close(self.account, msg.position.id, msg.position.symbol, self.now)
                )
            for ev in result.events:
                self.rt.publish(channels.events(ev.account), ev)
            for alert in result.alerts:
                self.rt.publish(channels.alerts(alert.account), alert)
            error = SessionCore.outcome(msg, result)
            if error is not None:
                await self.send(error)
        if acked:
            await self.send(p.Ack(seq=acked))
        await self.settle_background()
        view = self.state.account(self.account)
        if self.positions_changed:
            self.rt.publish(
                channels.positions(self.account),
                {"account": self.account, "ts": view.updated_at, "positions": list(view.positions.values())},
            )
            # Its position count and floating P/L changed too (as the server's hub publishes them).
            self.rt.publish(channels.accounts(self.account), self.state.summary(self.account, self.now))
        await self.rt.live.save(view)

    async def settle_background(self) -> None:
        for fut in self.other_futures:
            try:
                result = await fut
            except StoreError as exc:
                log.error("account %s: background write failed: %s", self.account, exc)
                continue
            for ev in result.events:
                self.rt.publish(channels.events(ev.account), ev)
        for alert in await settle_alerts(self.alert_futures):
            self.rt.publish(channels.alerts(alert.account), alert)

    # --- the hub's steps, on the loaded view --------------------------------------------------
    async def greet(self, hello: p.Hello) -> p.Welcome:
        account, now = self.account, self.now
        view = self.state.account(account)
        if not view.positions_known:
            self.state.seed_positions(account, await self.store.open_positions(account))
        acked = await self.store.acked_seq(account)
        info = account_info(hello)
        self.state.on_hello(account, info, "ws", now)
        if self.conn.greeted:
            view.sessions -= 1  # a second hello on the same connection is not a second session
        else:
            self.conn.greeted = True
            await self.rt.live.put_connection(self.conn)
            # Counted now, atomically, before the welcome goes out: the EA's next frame, sent on the welcome,
            # may be loading the item already, and must find the session open.
            view.sessions = await self.rt.live.session_started(account, counted=view.sessions - 1)
        self.ended_at = None
        self.rt.publish(channels.accounts(account), self.state.summary(account, now))
        self.rules.session_started(account, now)
        self.transitions([Resolve(CONNECTION_LOST, account, "EA connected again", now)])
        self.other_futures.append(self.store.submit(PresenceOp(account, now)))
        return p.Welcome(
            sessionId=str(uuid.uuid4()),
            ackedSeq=acked,
            heartbeatSec=self.rt.settings.server.heartbeat_sec,
            serverTime=now,
        )

    def touch(self) -> None:
        self.state.touch(self.account, self.now)
        if (self.account, CONNECTION_LOST) in self.rules.open:
            self.transitions(self.rules.seen(self.account, self.now))

    async def volatile(self, msg: p.AccountMsg | p.PositionsMsg | p.TicksMsg | p.HeartbeatMsg) -> None:
        account, now = self.account, self.now
        self.touch()
        if isinstance(msg, p.AccountMsg):
            state = account_state(msg)
            view = self.state.apply_account(account, state, now)
            self.rt.publish(channels.accounts(account), self.state.summary(account, now))
            platform = view.info.platform if view.info else None
            self.transitions(self.rules.margin(account, state, platform, now))
        elif isinstance(msg, p.PositionsMsg):
            rec = self.state.apply_snapshot(account, msg.positions, now, msg.ts)
            if rec.refused:  # the account's item holds its open positions too: the bound keeps it small
                await self.send(positions_refused(account, rec.refused, self.state.max_positions_per_account))
                return
            if rec.late:
                return
            magics = self.rt.system_magics
            for event, changed in (("OPEN", rec.opened), ("CLOSE", rec.closed)):
                for pos in changed:
                    fut = self.store.submit(ReconcileOp(account, event, pos, msg.ts, pos.magic in magics))
                    fut.add_done_callback(functools.partial(self._reconciled, event, pos))
                    self.other_futures.append(fut)
            self.positions_changed = True
        elif isinstance(msg, p.TicksMsg):
            accepted, refused = self.state.apply_ticks(msg.ticks, now, account)
            for tick in accepted:
                if await self.rt.live.put_tick(tick, now):
                    self.rt.publish(channels.prices(tick.symbol), tick)
            if refused:  # the account's item holds every symbol it streams: a bound keeps it under 400 KB
                await self.send(symbols_refused(account, refused, self.state.max_symbols_per_account))

    def _reconciled(self, event: str, position: Position, fut: asyncio.Future[WriteResult]) -> None:
        if not fut.cancelled():  # failed: tried again at the next snapshot, as on the server
            self.state.reconciled(self.account, event, position, stored=fut.exception() is None)

    def submit_durable(self, msg: p.DurableMsg) -> asyncio.Future[WriteResult]:
        self.touch()
        if isinstance(msg, p.PositionMsg):
            op: EAPositionOp | EAErrorOp = EAPositionOp(
                self.account, msg, msg.position.magic in self.rt.system_magics, self.stream
            )
            fut = self.store.submit(op)
            fut.add_done_callback(functools.partial(self._position_committed, msg))
            return fut
        return self.store.submit(EAErrorOp(self.account, msg, self.stream))

    def _position_committed(self, msg: p.PositionMsg, fut: asyncio.Future[WriteResult]) -> None:
        """The live view takes the event once the store did (as the server's hub: `apply_committed_event`)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        result = fut.result()
        applied = self.state.apply_committed_event(
            self.account, msg.event, msg.position, result.status, bool(result.events), self.now
        )
        if applied:
            self.positions_changed = True  # else left out of the live list, or nothing to apply

    def transitions(self, transitions: list[Transition]) -> None:
        self.alert_futures.extend(submit_transitions(self.store, transitions))


def submit_transitions(store: DynamoStore, transitions: list[Transition]) -> list[asyncio.Future[WriteResult]]:
    futures = []
    for t in transitions:
        if isinstance(t, Raise):
            futures.append(
                store.submit(AlertRaiseOp(new_alert(t.type, t.severity, t.account, t.message, t.at, t.data)))
            )
        elif isinstance(t, Resolve):
            futures.append(store.submit(AlertResolveOp(t.account, t.type, t.at, t.message)))
    return futures


async def settle_alerts(futures: list[asyncio.Future[WriteResult]]) -> list[Alert]:
    """The alerts that committed writes raised or resolved (to publish)."""
    out: list[Alert] = []
    for fut in futures:
        try:
            out.extend((await fut).alerts)
        except StoreError as exc:
            log.error("alert write failed: %s", exc)
    return out


# --- schedule -----------------------------------------------------------------------------------
def schedule(event: dict, context: Any) -> dict:
    rt = runtime()
    return rt.run(_schedule(rt))


async def _schedule(rt: Runtime) -> dict:
    """The hub's periodic check over every account in the live table, plus the exposure channel."""
    store = await rt.open()
    now = rt.clock()
    state = LiveState()
    ended = await rt.live.load_all(state)
    rules = AlertRules(rt.settings.alerts, rt.settings.server.heartbeat_sec)
    rules.load(await store.open_alerts())
    for account, at in ended.items():
        if state.accounts[account].sessions == 0:
            rules.session_ended(account, at)
    transitions = rules.check(now, state.accounts)
    alerts = await settle_alerts(submit_transitions(store, transitions))
    for alert in alerts:
        rt.publish(channels.alerts(alert.account), alert)
    rt.publish(channels.exposure(), {"ts": now, "symbols": state.exposure()})
    await rt.flush()
    return {
        "accounts": len(state.accounts),
        "raised": sum(isinstance(t, Raise) for t in transitions),
        "resolved": sum(isinstance(t, Resolve) for t in transitions),
    }


# --- REST (HTTP API, payload format 2.0) --------------------------------------------------------
class _Query:
    """Enough of an aiohttp request for api.py's parameter parsers: `.query`."""

    def __init__(self, params: dict[str, str] | None) -> None:
        self.query = params or {}


def _json(status: int, data: Any) -> dict:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": _encode(data).decode()}


def _error(status: int, code: str, message: str) -> dict:
    return _json(status, {"error": {"code": code, "message": message}})


def rest(event: dict, context: Any) -> dict:
    rt = runtime()
    return rt.run(_rest(rt, event))


async def _rest(rt: Runtime, event: dict) -> dict:
    path = event.get("rawPath") or event.get("path") or ""
    method = (event.get("requestContext", {}).get("http", {}).get("method") or event.get("httpMethod") or "GET").upper()
    if path == f"{api.PREFIX}/healthz":
        return _json(200, {"status": "ok", "time": rt.clock()})
    store = await rt.open()
    if path == f"{api.PREFIX}/readyz":  # the tables answer (no backplane here: AppSync is AWS's)
        if (trouble := await api.store_problem(store)) is not None:
            return _json(503, {"status": "not_ready", "problems": {"store": trouble}, "time": rt.clock()})
        return _json(200, {"status": "ready", "time": rt.clock()})
    key = _header(event, "x-api-key") or _bearer(event)
    try:
        role = await store.api_key_role(key) if key else None
    except StoreError as exc:  # the table failed, not the client: a 503 to retry, not a 500
        return _error(503, "store_unavailable", f"could not check the API key: {exc}")
    if role is None:
        return _error(401, "unauthorized", "missing API key (x-api-key)" if not key else "invalid API key")
    request = _Query(event.get("queryStringParameters"))
    parts = path.removeprefix(api.PREFIX + "/").split("/")
    try:
        if method == "POST" and len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack":
            if role != "admin":
                return _error(403, "forbidden", "acknowledging an alert needs an admin API key")
            result = await store.submit(AlertAckOp(parts[1], api.key_id(key or ""), rt.clock()))
            if result.status == "not_found":
                return _error(404, "not_found", f"no alert {parts[1]!r}")
            alert = result.alerts[0]
            if result.status == "stored":
                rt.publish(channels.alerts(alert.account), alert)
                await rt.flush()
            return _json(200, alert)
        if method != "GET":
            return _error(405, "method_not_allowed", f"{method} {path}")
        return await _rest_get(rt, store, parts, request)
    except api.BadParam as exc:
        return _error(400, "bad_request", str(exc))
    except StoreError as exc:
        return _error(503, "store_unavailable", str(exc))


async def _rest_get(rt: Runtime, store: DynamoStore, parts: list[str], request: Any) -> dict:
    now = rt.clock()
    route = parts[0] if len(parts) == 1 else None
    checked = route if route in api.PARAMS else "account" if len(parts) == 2 and parts[0] == "accounts" else None
    if checked is not None:
        api.check_params(request.query, checked)
    if route in ("accounts", "positions", "exposure") or (len(parts) == 2 and parts[0] == "accounts"):
        state = LiveState()
        await rt.live.load_all(state)
        if route == "accounts":
            ids = set(state.accounts) | set(await store.known_accounts())
            return _json(200, {"items": [state.summary(a, now) for a in sorted(ids)]})
        if route == "positions":
            return _json(200, api.positions_page(state, request))
        if route == "exposure":
            return _json(200, {"items": state.exposure()})
        account = parts[1]
        if not is_account_id(account):
            return _error(400, "bad_request", "account id is not valid")
        if account not in state.accounts and account not in await store.known_accounts():
            return _error(404, "not_found", f"no account {account!r}")
        return _json(200, api.account_detail(state, account, now))
    if route == "prices":
        state = LiveState()
        await rt.live.load_prices(state)
        return _json(200, {"items": sorted(state.prices.values(), key=lambda t: t.symbol)})
    if route == "events":
        return _json(200, api._page(await store.events(api._event_query(request))))
    if route == "system-trades":
        return _json(200, api._page(await store.system_trades(api._event_query(request, typed=False))))
    if route == "alerts":
        return _json(200, await api.alerts_page(store, request))
    return _error(404, "not_found", f"no route /{'/'.join(parts)}")
