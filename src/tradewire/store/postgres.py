"""PostgreSQL store (asyncpg): the same contract as SQLite, shared by several hub nodes.

One writer task per node takes everything queued, runs it as one transaction (a savepoint per
operation) and resolves the futures only after COMMIT. The exactly-once decisions come from the
pure planner in store/plan.py; the database's unique constraints make them hold across nodes too:
when another node wins a race (the same EA message id, the same OPEN), the operation is planned
again from fresh facts instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from tradewire.model import Alert, ApiKeyInfo, Position, PositionEvent, Role, SystemTrade, TokenInfo, now_ms
from tradewire.store import plan as planner
from tradewire.store.base import (
    ALERT_DECODER,
    EVENT_DECODER,
    KEY_PREFIX,
    TOKEN_PREFIX,
    TRADE_DECODER,
    AlertAckOp,
    AlertQuery,
    AlertRaiseOp,
    AlertResolveOp,
    EAErrorOp,
    EAPositionOp,
    EventQuery,
    Page,
    PresenceOp,
    StoreError,
    WriteOp,
    WriteResult,
    blocked,
    hash_secret,
    new_secret,
    note_failure,
    sql_where,
    take_group,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE SEQUENCE tw_offset;
    CREATE TABLE ea_inbox (
        account TEXT NOT NULL, msg_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
        stored_at BIGINT NOT NULL, PRIMARY KEY (account, msg_id));
    CREATE INDEX ea_inbox_seq ON ea_inbox (account, seq);
    CREATE TABLE position_events (
        id BIGSERIAL PRIMARY KEY, "offset" BIGINT NOT NULL UNIQUE, account TEXT NOT NULL,
        position_id BIGINT NOT NULL, event TEXT NOT NULL, ts BIGINT NOT NULL, source TEXT NOT NULL,
        symbol TEXT NOT NULL, system BOOLEAN NOT NULL, body BYTEA NOT NULL);
    CREATE UNIQUE INDEX position_events_once ON position_events (account, position_id, event)
        WHERE event IN ('OPEN', 'CLOSE');
    CREATE INDEX position_events_account ON position_events (account, "offset");
    CREATE INDEX position_events_ts ON position_events (ts);
    CREATE TABLE system_trades (
        id BIGSERIAL, account TEXT NOT NULL, position_id BIGINT NOT NULL, executed_at BIGINT NOT NULL,
        body BYTEA NOT NULL, PRIMARY KEY (account, position_id));
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY, "offset" BIGINT NOT NULL, account TEXT NOT NULL, type TEXT NOT NULL,
        raised_at BIGINT NOT NULL, resolved_at BIGINT, body BYTEA NOT NULL);
    CREATE UNIQUE INDEX alerts_open_episode ON alerts (account, type)
        WHERE resolved_at IS NULL AND type <> 'SYSTEM_ERROR';
    CREATE INDEX alerts_account ON alerts (account, raised_at);
    CREATE INDEX alerts_offset ON alerts ("offset");
    CREATE TABLE ea_tokens (
        token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
        label TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT);
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        label TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT);
    CREATE TABLE ea_presence (account TEXT PRIMARY KEY, last_hello_at BIGINT NOT NULL);
    """,
}
MIGRATION_LOCK = 0x7477_0001  # pg_advisory_xact_lock key: one node migrates at a time
# Taken by every write group: nodes commit one at a time, so offsets (drawn from one sequence) become
# visible in the order they were drawn. Without it node A could draw 10, node B draw 11 and commit first,
# and a subscriber resuming `since` 11 would never be sent 10.
COMMIT_LOCK = 0x7477_0002

_encode = msgspec.json.encode


# How long one statement may take before the store is taken as unreachable. A server gone silent (a
# failover that leaves the old address black-holed) otherwise holds the writer, and every ack, until the
# kernel gives up on the connection: a quarter of an hour.
COMMAND_TIMEOUT_S = 30.0
OWN_OPTIONS = ("schema", "timeout_s")  # tradewire's, not the driver's


def split_url(url: str) -> tuple[str, str | None]:
    """The asyncpg DSN and the `schema` option (tradewire's own: the search_path to use)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in OWN_OPTIONS]
    schema = dict(parse_qsl(parts.query)).get("schema")
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), schema


def command_timeout(url: str) -> float:
    """The `timeout_s` option: seconds a statement may take (COMMAND_TIMEOUT_S by default)."""
    raw = dict(parse_qsl(urlsplit(url).query)).get("timeout_s")
    if raw is None:
        return COMMAND_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"PostgreSQL URL option timeout_s must be a number of seconds above 0, not {raw!r}")
    return value


class PostgresStore:
    def __init__(self, url: str, *, batch_max: int = 1024, pool_size: int = 4) -> None:
        self.dsn, self.schema = split_url(url)
        self.command_timeout = command_timeout(url)
        self.batch_max = batch_max
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[tuple[WriteOp | Callable, asyncio.Future] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self.commits = 0
        self.committed_ops = 0
        self.on_commit: Callable[[float, int], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        settings = {"search_path": self.schema} if self.schema else {}
        # A node cut off mid-group would hold COMMIT_LOCK, and every node's writes, until TCP noticed (hours):
        # the server ends a transaction left idle past the statement timeout, and the lock with it.
        settings["idle_in_transaction_session_timeout"] = str(int(self.command_timeout * 1000))
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings=settings,
                command_timeout=self.command_timeout,
            )
        except TimeoutError:
            where = urlsplit(self.dsn).hostname or "?"
            raise StoreError(f"cannot connect to PostgreSQL at {where}: timed out") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            async with self._pool.acquire() as conn:
                await self._migrate(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # e.g. a role without CREATE on the schema (PostgreSQL 15+'s default for public): a clear error
            # for `serve` and the CLI alike, not a traceback.
            await self._pool.close()
            self._pool = None
            raise StoreError(f"cannot set up the tradewire tables in PostgreSQL: {exc}") from None
        self._writer = asyncio.create_task(self._write_loop(), name="tradewire-pg-writer")

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute("CREATE TABLE IF NOT EXISTS tw_schema (version INT NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM tw_schema") or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"database has schema version {version}, newer than this tradewire ({SCHEMA_VERSION})")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[target])
                await conn.execute("INSERT INTO tw_schema (version) VALUES ($1)", target)

    # --- the writer ---------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        assert self._pool is not None
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch, stop = take_group(item, self._queue.get_nowait, asyncio.QueueEmpty, self.batch_max)
            await self._run_batch(batch)
            if stop:
                return

    async def _run_batch(self, batch: list) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            async with self._pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
                await conn.execute("SELECT pg_advisory_xact_lock($1)", COMMIT_LOCK)
                for op, fut in batch:
                    outcomes.append((fut, *await self._apply_isolated(conn, op)))
        except Exception as exc:  # the connection, the commit, or an op nobody foresaw: none of it is durable
            if not isinstance(exc, OSError | TimeoutError | asyncpg.PostgresError | asyncpg.InterfaceError):
                log.exception("store group failed")  # a bug, not an outage: say where
            error = StoreError(f"commit failed: {exc}")
            outcomes = [(fut, None, error) for _, fut in batch]
            for op, _ in batch:
                note_failure(op)
        else:
            self.commits += 1
            self.committed_ops += len(batch)
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, len(batch))
        for fut, result, exc in outcomes:
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    async def _apply_isolated(
        self, conn: asyncpg.Connection, op: WriteOp | Callable
    ) -> tuple[Any, BaseException | None]:
        if (refused := blocked(op)) is not None:
            return None, refused
        for attempt in (1, 2):
            try:
                async with conn.transaction():  # a savepoint: one failure does not spoil the batch
                    if callable(op):
                        return await op(conn), None
                    return await self._apply(conn, op), None
            except asyncpg.UniqueViolationError:
                if attempt == 2:
                    raise
                # another node stored the same message or event between our read and our write:
                # plan again from what is there now.
            except (asyncpg.InterfaceError, OSError, TimeoutError):
                raise  # the connection itself: the group fails (and its ops with it), as a failed COMMIT does
            except Exception as exc:  # this operation alone (its savepoint is rolled back), as on SQLite
                log.exception("store operation failed")
                note_failure(op)
                return None, StoreError(f"store operation failed: {exc}")
        raise AssertionError("unreachable")

    def _call_writer(self, op: WriteOp | Callable) -> asyncio.Future:
        if self._writer is None:
            raise StoreError("store is not open")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    def submit(self, op: WriteOp) -> asyncio.Future[WriteResult]:
        return self._call_writer(op)

    async def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        return list(await asyncio.gather(*(self.submit(op) for op in ops)))

    async def _apply(self, conn: asyncpg.Connection, op: WriteOp) -> WriteResult:
        if isinstance(op, AlertRaiseOp | AlertResolveOp | AlertAckOp | PresenceOp):
            return await self._apply_alert(conn, op)
        now = now_ms()
        facts = planner.Facts()
        if isinstance(op, EAPositionOp | EAErrorOp):
            facts.inbox_seq = await conn.fetchval(
                "SELECT seq FROM ea_inbox WHERE account = $1 AND msg_id = $2", op.account, op.msg.id
            )
            facts.max_seq = await conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM ea_inbox WHERE account = $1", op.account
            )
        position_id = planner.needs_position_facts(op)
        if position_id is not None:
            for row in await conn.fetch(
                "SELECT event, body FROM position_events WHERE account = $1 AND position_id = $2 "
                "AND event IN ('OPEN', 'CLOSE')",
                op.account,
                position_id,
            ):
                event = EVENT_DECODER.decode(row["body"])
                if row["event"] == "OPEN":
                    facts.open_event = event
                else:
                    facts.close_event = event
        p = planner.plan(op, facts, now)
        result = WriteResult(p.status, p.detail)
        if p.inbox is not None:
            msg_id, seq, kind = p.inbox
            await conn.execute(
                "INSERT INTO ea_inbox (account, msg_id, seq, kind, stored_at) VALUES ($1, $2, $3, $4, $5)",
                op.account,
                msg_id,
                seq,
                kind,
                now,
            )
        for ev in p.inserts:
            ev.offset = await conn.fetchval("SELECT nextval('tw_offset')")
            await conn.execute(
                'INSERT INTO position_events ("offset", account, position_id, event, ts, source, symbol, system, body)'
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                ev.offset,
                ev.account,
                ev.positionId,
                ev.event,
                ev.ts,
                ev.source,
                ev.position.symbol,
                ev.system,
                _encode(ev),
            )
            result.events.append(ev)
        for ev in p.updates:
            ev.offset = await conn.fetchval("SELECT nextval('tw_offset')")
            await conn.execute(
                'UPDATE position_events SET "offset" = $1, ts = $2, source = $3, body = $4 '
                "WHERE account = $5 AND position_id = $6 AND event = $7",
                ev.offset,
                ev.ts,
                ev.source,
                _encode(ev),
                ev.account,
                ev.positionId,
                ev.event,
            )
            result.events.append(ev)
        if p.system_trade is not None:
            st = p.system_trade
            inserted = await conn.fetchval(
                "INSERT INTO system_trades (account, position_id, executed_at, body) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                st.account,
                st.positionId,
                st.executedAt,
                _encode(st),
            )
            if inserted:
                result.system_trades.append(st)
        if p.alert is not None:
            await self._insert_alert(conn, p.alert)
            result.alerts.append(p.alert)
        return result

    async def _insert_alert(self, conn: asyncpg.Connection, alert: Alert) -> None:
        alert.offset = await conn.fetchval("SELECT nextval('tw_offset')")
        await conn.execute(
            'INSERT INTO alerts (id, "offset", account, type, raised_at, resolved_at, body)'
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            alert.id,
            alert.offset,
            alert.account,
            alert.type,
            alert.raisedAt,
            alert.resolvedAt,
            _encode(alert),
        )

    async def _apply_alert(
        self, conn: asyncpg.Connection, op: AlertRaiseOp | AlertResolveOp | AlertAckOp | PresenceOp
    ) -> WriteResult:
        if isinstance(op, PresenceOp):
            await conn.execute(
                "INSERT INTO ea_presence (account, last_hello_at) VALUES ($1, $2) "
                "ON CONFLICT (account) DO UPDATE SET last_hello_at = excluded.last_hello_at",
                op.account,
                op.at,
            )
            return WriteResult("stored")
        if isinstance(op, AlertRaiseOp):
            exists = await conn.fetchval(
                "SELECT 1 FROM alerts WHERE account = $1 AND type = $2 AND resolved_at IS NULL "
                "AND type <> 'SYSTEM_ERROR'",
                op.alert.account,
                op.alert.type,
            )
            if exists:
                return WriteResult("ignored", f"{op.alert.type} already open for {op.alert.account}")
            await self._insert_alert(conn, op.alert)  # a race with another node: unique violation, planned again
            return WriteResult("stored", alerts=[op.alert])
        if isinstance(op, AlertResolveOp):
            body = await conn.fetchval(
                "SELECT body FROM alerts WHERE account = $1 AND type = $2 AND resolved_at IS NULL FOR UPDATE",
                op.account,
                op.type,
            )
        else:
            body = await conn.fetchval("SELECT body FROM alerts WHERE id = $1 FOR UPDATE", op.alert_id)
        status, detail, alert = planner.change_alert(op, ALERT_DECODER.decode(body) if body is not None else None)
        if status != "stored" or alert is None:
            return WriteResult(status, detail, alerts=[alert] if alert else [])
        alert.offset = await conn.fetchval("SELECT nextval('tw_offset')")
        await conn.execute(
            'UPDATE alerts SET "offset" = $1, resolved_at = $2, body = $3 WHERE id = $4',
            alert.offset,
            alert.resolvedAt,
            _encode(alert),
            alert.id,
        )
        return WriteResult("stored", alerts=[alert])

    # --- reads --------------------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            return await self._pool.fetch(sql, *args)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"read failed: {exc}") from None

    async def acked_seq(self, account: str) -> int:
        rows = await self._fetch("SELECT coalesce(max(seq), 0) AS s FROM ea_inbox WHERE account = $1", account)
        return rows[0]["s"]

    async def open_positions(self, account: str) -> list[Position]:
        rows = await self._fetch(
            "SELECT o.body FROM position_events o WHERE o.account = $1 AND o.event = 'OPEN' AND NOT EXISTS "
            "(SELECT 1 FROM position_events c WHERE c.account = o.account AND c.position_id = o.position_id "
            "AND c.event = 'CLOSE') ORDER BY o.\"offset\"",  # as DynamoDB: the same ones kept past a cap
            account,
        )
        return [EVENT_DECODER.decode(r["body"]).position for r in rows]

    async def head_offset(self) -> int:
        rows = await self._fetch(
            'SELECT greatest((SELECT max("offset") FROM position_events), (SELECT max("offset") FROM alerts)) AS m'
        )
        return rows[0]["m"] or 0

    async def history(self, kind: str, account: str | None, since: int, limit: int) -> list[tuple[str, int, bytes]]:
        table = {"events": "position_events", "alerts": "alerts"}[kind]
        if account:
            rows = await self._fetch(
                f'SELECT account, "offset", body FROM {table} WHERE "offset" > $1 AND account = $2 '
                'ORDER BY "offset" LIMIT $3',
                since,
                account,
                limit,
            )
        else:
            rows = await self._fetch(
                f'SELECT account, "offset", body FROM {table} WHERE "offset" > $1 ORDER BY "offset" LIMIT $2',
                since,
                limit,
            )
        return [(f"/trading/{kind}/{r['account']}", r["offset"], bytes(r["body"])) for r in rows]

    async def events(self, query: EventQuery) -> Page[PositionEvent]:
        where, args = _filters(query, ts_col="ts", offset_col='"offset"')
        if query.type:
            args.append(query.type)
            where.append(f"event = ${len(args)}")
        args.append(query.limit + 1)
        sql = (
            f'SELECT "offset" AS k, body FROM position_events {sql_where(where)} '
            f'ORDER BY "offset" DESC LIMIT ${len(args)}'
        )
        return self._page(await self._fetch(sql, *args), query.limit, EVENT_DECODER)

    async def system_trades(self, query: EventQuery) -> Page[SystemTrade]:
        where, args = _filters(query, ts_col="executed_at", offset_col="id")
        args.append(query.limit + 1)
        sql = f"SELECT id AS k, body FROM system_trades {sql_where(where)} ORDER BY id DESC LIMIT ${len(args)}"
        return self._page(await self._fetch(sql, *args), query.limit, TRADE_DECODER)

    @staticmethod
    def _page(rows: list[asyncpg.Record], limit: int, decoder: msgspec.json.Decoder) -> Page:
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([decoder.decode(r["body"]) for r in rows], rows[-1]["k"] if more and rows else None)

    async def alerts(self, query: AlertQuery) -> list[Alert]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("account = $", query.account),
            ("type = $", query.type),
            ("raised_at >= $", query.since),
            ("raised_at < $", query.until),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{clause}{len(args)}")
        if query.state == "open":
            where.append("resolved_at IS NULL")
        elif query.state == "resolved":
            where.append("resolved_at IS NOT NULL")
        if query.before is not None:
            args.extend(query.before)
            where.append(f'(raised_at, "offset") < (${len(args) - 1}, ${len(args)})')
        args.append(query.limit)
        rows = await self._fetch(
            f'SELECT body FROM alerts {sql_where(where)} ORDER BY raised_at DESC, "offset" DESC LIMIT ${len(args)}',
            *args,
        )
        return [ALERT_DECODER.decode(r["body"]) for r in rows]

    async def open_alerts(self) -> list[Alert]:
        return await self.alerts(AlertQuery(state="open", limit=1_000_000))

    async def open_episodes(self, account: str) -> list[str]:
        sql = "SELECT DISTINCT type FROM alerts WHERE account = $1 AND resolved_at IS NULL ORDER BY type"
        return [r["type"] for r in await self._fetch(sql, account)]

    async def present_accounts(self) -> list[str]:
        return [r["account"] for r in await self._fetch("SELECT account FROM ea_presence ORDER BY account")]

    # --- credentials --------------------------------------------------------------------------
    async def add_token(self, account: str, label: str = "") -> tuple[str, TokenInfo]:
        token_id, token = new_secret(TOKEN_PREFIX)
        info = TokenInfo(tokenId=token_id, account=account, createdAt=now_ms(), label=label)
        await self._call_writer(
            lambda conn: conn.execute(
                "INSERT INTO ea_tokens (token_id, token_hash, account, label, created_at) VALUES ($1, $2, $3, $4, $5)",
                token_id,
                hash_secret(token),
                account,
                label,
                info.createdAt,
            )
        )
        return token, info

    async def token_account(self, token: str) -> str | None:
        rows = await self._fetch(
            "SELECT account FROM ea_tokens WHERE token_hash = $1 AND revoked_at IS NULL", hash_secret(token)
        )
        return rows[0]["account"] if rows else None

    async def list_tokens(self, account: str | None = None) -> list[TokenInfo]:
        sql = "SELECT token_id, account, created_at, revoked_at, label FROM ea_tokens"
        if account:
            rows = await self._fetch(sql + " WHERE account = $1 ORDER BY created_at", account)
        else:
            rows = await self._fetch(sql + " ORDER BY created_at")
        return [TokenInfo(tokenId=r[0], account=r[1], createdAt=r[2], revokedAt=r[3], label=r[4]) for r in rows]

    async def revoke_token(self, token_id: str) -> bool:
        return await self._revoke("ea_tokens", "token_id", token_id)

    async def add_api_key(self, role: Role, label: str = "") -> tuple[str, ApiKeyInfo]:
        key_id, key = new_secret(KEY_PREFIX)
        info = ApiKeyInfo(keyId=key_id, role=role, createdAt=now_ms(), label=label)
        await self._call_writer(
            lambda conn: conn.execute(
                "INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES ($1, $2, $3, $4, $5)",
                key_id,
                hash_secret(key),
                role,
                label,
                info.createdAt,
            )
        )
        return key, info

    async def api_key_role(self, key: str) -> Role | None:
        rows = await self._fetch(
            "SELECT role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_secret(key)
        )
        return rows[0]["role"] if rows else None

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        rows = await self._fetch("SELECT key_id, role, created_at, revoked_at, label FROM api_keys ORDER BY created_at")
        return [ApiKeyInfo(keyId=r[0], role=r[1], createdAt=r[2], revokedAt=r[3], label=r[4]) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._revoke("api_keys", "key_id", key_id)

    async def _revoke(self, table: str, id_col: str, value: str) -> bool:
        async def fn(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                f"UPDATE {table} SET revoked_at = $1 WHERE {id_col} = $2 AND revoked_at IS NULL", now_ms(), value
            )
            return status.endswith(" 1")

        return await self._call_writer(fn)

    async def known_accounts(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT account FROM ea_tokens WHERE revoked_at IS NULL")
        return [r["account"] for r in rows]


def _filters(query: EventQuery, *, ts_col: str, offset_col: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("account = $", query.account),
        (f"{ts_col} >= $", query.since),
        (f"{ts_col} < $", query.until),
        (f"{offset_col} < $", query.cursor),
    ):
        if value is not None:
            args.append(value)
            where.append(f"{clause}{len(args)}")
    return where, args
