"""SQLite store: WAL, one writer thread with group commit, a small pool of reader threads.

The writer takes everything queued, runs it as one transaction (a savepoint per operation, so one
failing operation does not spoil its neighbours), commits, and only then resolves the futures of
every operation in the batch. While one batch is being fsynced the next one queues up, so the
commit rate follows the load instead of the disk's fsync rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE ea_inbox (
        account TEXT NOT NULL, msg_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        stored_at INTEGER NOT NULL, PRIMARY KEY (account, msg_id)) WITHOUT ROWID;
    CREATE INDEX ea_inbox_seq ON ea_inbox (account, seq);
    CREATE TABLE position_events (
        id INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL UNIQUE, account TEXT NOT NULL,
        position_id INTEGER NOT NULL, event TEXT NOT NULL, ts INTEGER NOT NULL, source TEXT NOT NULL,
        symbol TEXT NOT NULL, system INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE UNIQUE INDEX position_events_once ON position_events (account, position_id, event)
        WHERE event IN ('OPEN', 'CLOSE');
    CREATE INDEX position_events_account ON position_events (account, "offset");
    CREATE TABLE system_trades (
        account TEXT NOT NULL, position_id INTEGER NOT NULL, executed_at INTEGER NOT NULL,
        body BLOB NOT NULL, PRIMARY KEY (account, position_id));
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY, "offset" INTEGER NOT NULL, account TEXT NOT NULL, type TEXT NOT NULL,
        raised_at INTEGER NOT NULL, resolved_at INTEGER, body BLOB NOT NULL);
    CREATE INDEX alerts_account ON alerts (account, raised_at);
    CREATE INDEX alerts_offset ON alerts ("offset");
    CREATE TABLE ea_tokens (
        token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
        label TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        label TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
    """,
    2: """
    CREATE UNIQUE INDEX alerts_open_episode ON alerts (account, type)
        WHERE resolved_at IS NULL AND type != 'SYSTEM_ERROR';
    CREATE INDEX alerts_raised ON alerts (raised_at);
    CREATE TABLE ea_presence (account TEXT PRIMARY KEY, last_hello_at INTEGER NOT NULL);
    """,
}

_encode = msgspec.json.encode


def _library_memory_used() -> Callable[[], int] | None:
    """`sqlite3_memory_used()` of the SQLite library this process runs: page caches, statements, schema.

    Looked up through the `_sqlite3` extension, so it finds the copy Python uses whether it is linked
    statically or as libsqlite3.so. None where it cannot be found (the metric is then left out)."""
    try:
        import _sqlite3

        function = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    function.restype, function.argtypes = ctypes.c_int64, []
    return function


_MEMORY_USED = _library_memory_used()


class SQLiteStore:
    def __init__(
        self, path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000, batch_max: int = 1024
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.batch_max = batch_max
        # (what to run, its future, the write it does if any); None stops the writer
        self._queue: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future, WriteOp | None] | None
        ] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        # Every reader thread's connection, to close at close(): the threads' locals would only free
        # them (descriptors, page caches) at the next garbage collection.
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        # Writer-thread caches: only touched by the writer thread.
        self._next_offset = 0
        # The newest committed offset. Written by the writer thread after each commit, read by the loop:
        # every subscribe to a durable channel asks for it, and a query per subscribe (a thread hop and
        # two index look-ups) was a tenth of the server's CPU in a reconnect storm.
        self._head = 0
        self._max_seq: dict[str, int] = {}
        self._caches_stale = False  # a reload failed: redone before the next group
        self._optimistic = False  # see _transaction
        self.reruns = 0  # groups run a second time, each operation isolated
        # (account, position id) of an open position -> its OPEN record (and no CLOSE), as last written here
        self._positions: dict[tuple[str, int], tuple[PositionEvent | None, PositionEvent | None]] = {}
        self.commits = 0
        self.committed_ops = 0
        self.on_commit: Callable[[float, int], None] | None = None  # (seconds, operations), from the writer thread

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._writer = threading.Thread(target=self._writer_main, args=(ready,), name="tradewire-sqlite-writer")
        self._writer.daemon = True
        self._writer.start()
        await ready
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tradewire-sqlite-reader")

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this tradewire ({SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")  # not executescript(): it would commit on its own
            try:
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # --- the writer thread --------------------------------------------------------------------
    def _writer_main(self, ready: asyncio.Future) -> None:
        loop = ready.get_loop()
        try:
            conn = self._connect()
            self._migrate(conn)
            self._reload_caches(conn)
        except Exception as exc:
            loop.call_soon_threadsafe(_settle, ready, None, StoreError(f"cannot open {self.path}: {exc}"))
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch, stop = take_group(item, self._queue.get_nowait, queue.Empty, self.batch_max)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        if self._caches_stale:  # the last reload failed (the disk, say): the next offset is read again first
            with contextlib.suppress(Exception):
                self._reload_caches(conn)
        started = time.perf_counter()
        try:
            try:
                outcomes = self._transaction(conn, batch, isolate=False)
            except _OperationFailed:
                # Rare: some operation raised. Undo the group and run it again with a savepoint per
                # operation, so that only the failing one fails. Savepoints cost two statements per
                # operation, a third of the work of a typical event: the common case goes without.
                conn.execute("ROLLBACK")
                self._reload_caches(conn)
                self.reruns += 1
                outcomes = self._transaction(conn, batch, isolate=True)
        except Exception as exc:
            # Nothing of this batch is durable: fail every operation, and forget cached counters
            # that were advanced inside the lost transaction.
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            with contextlib.suppress(Exception):
                self._reload_caches(conn)
            error = StoreError(f"commit failed: {exc}")
            outcomes = [(fut, None, error) for _, fut, _ in batch]
            for _, _, op in batch:
                note_failure(op)
        else:
            self._head = self._next_offset - 1  # offsets are taken only inside the transaction just committed
            self.commits += 1
            self.committed_ops += len(batch)
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
                loop.call_soon_threadsafe(_settle_all, items)

    def _transaction(
        self, conn: sqlite3.Connection, batch: list, *, isolate: bool
    ) -> list[tuple[asyncio.Future, Any, BaseException | None]]:
        """Apply a group of operations in one transaction and commit it.

        Without `isolate` (the first try) operations skip the look-ups that only find something when a
        message or position event repeats (the unique indexes catch those), and a failing operation
        raises _OperationFailed: the caller rolls back and calls again with `isolate`, where every
        operation looks its facts up and runs in a savepoint, so a failure is its outcome alone."""
        outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        self._optimistic = not isolate
        conn.execute("BEGIN IMMEDIATE")
        for fn, fut, op in batch:
            if (refused := blocked(op)) is not None:
                if not isolate:
                    raise _OperationFailed  # rare: the group runs again, op by op
                outcomes.append((fut, None, refused))
                continue
            if not isolate:
                try:
                    outcomes.append((fut, fn(conn), None))
                except Exception as exc:
                    raise _OperationFailed from exc
                continue
            conn.execute("SAVEPOINT op")
            try:
                outcomes.append((fut, fn(conn), None))
                conn.execute("RELEASE op")
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                log.exception("store operation failed")
                note_failure(op)
                outcomes.append((fut, None, StoreError(f"store operation failed: {exc}")))
        conn.execute("COMMIT")
        return outcomes

    def _reload_caches(self, conn: sqlite3.Connection) -> None:
        # Forgotten first, whatever happens next: kept from a rolled-back transaction, they would have a
        # resend refused (a seq already "seen") and a CLOSE planned against an OPEN that was never stored.
        self._max_seq.clear()
        self._positions.clear()
        self._caches_stale = True
        row = conn.execute(
            'SELECT MAX(m) FROM (SELECT MAX("offset") AS m FROM position_events '
            'UNION ALL SELECT MAX("offset") FROM alerts)'
        ).fetchone()
        self._next_offset = (row[0] or 0) + 1
        self._head = self._next_offset - 1
        self._caches_stale = False

    def _take_offset(self) -> int:
        offset = self._next_offset
        self._next_offset += 1
        return offset

    def _call_writer(self, fn: Callable[[sqlite3.Connection], Any], op: WriteOp | None = None) -> asyncio.Future:
        """Run `fn` on the writer thread in the next group commit. `op`: the write it does, if any (its
        stream decides whether it is tried at all: see DurableStream)."""
        if self._writer is None:
            raise StoreError("store is not open")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put((fn, fut, op))
        return fut

    # --- durable writes -----------------------------------------------------------------------
    def submit(self, op: WriteOp) -> asyncio.Future[WriteResult]:
        return self._call_writer(lambda conn: self._apply(conn, op), op)

    async def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        return list(await asyncio.gather(*(self.submit(op) for op in ops)))

    def _apply(self, conn: sqlite3.Connection, op: WriteOp) -> WriteResult:
        if isinstance(op, AlertRaiseOp | AlertResolveOp | AlertAckOp | PresenceOp):
            return self._apply_alert(conn, op)
        now = now_ms()
        facts = planner.Facts()
        if isinstance(op, EAPositionOp | EAErrorOp):
            facts.max_seq = self._account_max_seq(conn, op.account)
            # A new message (seq above the account's highest) cannot be a resend; if its id was used
            # before, the inbox's primary key refuses the insert, and the group is run again looking.
            if not self._optimistic or op.msg.seq <= facts.max_seq:
                row = conn.execute(
                    "SELECT seq FROM ea_inbox WHERE account = ? AND msg_id = ?", (op.account, op.msg.id)
                ).fetchone()
                facts.inbox_seq = row[0] if row else None
        position_id = planner.needs_position_facts(op)
        if position_id is not None:
            key = (op.account, position_id)
            known = self._positions.get(key)
            if known is not None:  # written by this writer, the only one: the same as the rows
                facts.open_event, facts.close_event = known
            elif not (self._optimistic and planner.is_open(op)):
                for event, body in conn.execute(
                    "SELECT event, body FROM position_events WHERE account = ? AND position_id = ? "
                    "AND event IN ('OPEN', 'CLOSE')",
                    key,
                ):
                    if event == "OPEN":
                        facts.open_event = EVENT_DECODER.decode(body)
                    else:
                        facts.close_event = EVENT_DECODER.decode(body)
            # else optimistic: an OPEN of a position not seen yet assumes none on record; if there is
            # one, the one-OPEN-one-CLOSE unique index refuses the insert, and the group runs again.
        p = planner.plan(op, facts, now)
        result = WriteResult(p.status, p.detail)
        if p.inbox is not None:
            msg_id, seq, kind = p.inbox
            conn.execute(
                "INSERT INTO ea_inbox (account, msg_id, seq, kind, stored_at) VALUES (?, ?, ?, ?, ?)",
                (op.account, msg_id, seq, kind, now),
            )
        for ev in p.inserts:
            ev.offset = self._take_offset()
            conn.execute(
                'INSERT INTO position_events ("offset", account, position_id, event, ts, source, symbol, system, body)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.offset,
                    ev.account,
                    ev.positionId,
                    ev.event,
                    ev.ts,
                    ev.source,
                    ev.position.symbol,
                    int(ev.system),
                    _encode(ev),
                ),
            )
            result.events.append(ev)
        for ev in p.updates:
            ev.offset = self._take_offset()  # a changed record moves to the head of the history
            conn.execute(
                'UPDATE position_events SET "offset" = ?, ts = ?, source = ?, body = ? '
                "WHERE account = ? AND position_id = ? AND event = ?",
                (ev.offset, ev.ts, ev.source, _encode(ev), ev.account, ev.positionId, ev.event),
            )
            result.events.append(ev)
        if p.system_trade is not None:
            st = p.system_trade
            cur = conn.execute(
                "INSERT OR IGNORE INTO system_trades (account, position_id, executed_at, body) VALUES (?, ?, ?, ?)",
                (st.account, st.positionId, st.executedAt, _encode(st)),
            )
            if cur.rowcount:
                result.system_trades.append(st)
        if p.alert is not None:
            self._insert_alert(conn, p.alert)
            result.alerts.append(p.alert)
        # Only now, when every statement of the op has succeeded (a failed group clears both caches).
        if p.inbox is not None:
            self._max_seq[op.account] = max(self._max_seq.get(op.account, 0), p.inbox[1])
        if position_id is not None:
            self._remember_position(op.account, position_id, facts, p)
        return result

    def _remember_position(self, account: str, position_id: int, facts: planner.Facts, p: planner.Plan) -> None:
        """Keep an open position's OPEN record as just written: its next event needs no look-up. A closed
        one is forgotten (only a repeat would ask again, and finds the rows), so the cache holds the open
        positions, not every position ever seen."""
        key = (account, position_id)
        open_event, close_event = facts.open_event, facts.close_event
        for ev in (*p.inserts, *p.updates):
            if ev.event == "OPEN":
                open_event = ev
            elif ev.event == "CLOSE":
                close_event = ev
        if close_event is not None:
            self._positions.pop(key, None)
            return
        if len(self._positions) >= POSITION_CACHE_MAX:
            self._positions.clear()  # bounded; a miss only costs the look-up
        self._positions[key] = (open_event, None)

    def _apply_alert(self, conn: sqlite3.Connection, op: AlertRaiseOp | AlertResolveOp | AlertAckOp | PresenceOp):
        if isinstance(op, PresenceOp):
            conn.execute(
                "INSERT INTO ea_presence (account, last_hello_at) VALUES (?, ?) "
                "ON CONFLICT (account) DO UPDATE SET last_hello_at = excluded.last_hello_at",
                (op.account, op.at),
            )
            return WriteResult("stored")
        if isinstance(op, AlertRaiseOp):
            try:
                self._insert_alert(conn, op.alert)
            except sqlite3.IntegrityError:  # an episode of this type is already open for the account
                return WriteResult("ignored", f"{op.alert.type} already open for {op.alert.account}")
            return WriteResult("stored", alerts=[op.alert])
        if isinstance(op, AlertResolveOp):
            row = conn.execute(
                "SELECT body FROM alerts WHERE account = ? AND type = ? AND resolved_at IS NULL", (op.account, op.type)
            ).fetchone()
        else:
            row = conn.execute("SELECT body FROM alerts WHERE id = ?", (op.alert_id,)).fetchone()
        status, detail, alert = planner.change_alert(op, ALERT_DECODER.decode(row[0]) if row else None)
        if status != "stored" or alert is None:
            return WriteResult(status, detail, alerts=[alert] if alert else [])
        alert.offset = self._take_offset()
        conn.execute(
            'UPDATE alerts SET "offset" = ?, resolved_at = ?, body = ? WHERE id = ?',
            (alert.offset, alert.resolvedAt, _encode(alert), alert.id),
        )
        return WriteResult("stored", alerts=[alert])

    def _account_max_seq(self, conn: sqlite3.Connection, account: str) -> int:
        seq = self._max_seq.get(account)
        if seq is None:
            seq = conn.execute("SELECT MAX(seq) FROM ea_inbox WHERE account = ?", (account,)).fetchone()[0] or 0
            self._max_seq[account] = seq
        return seq

    def _insert_alert(self, conn: sqlite3.Connection, alert: Alert) -> None:
        offset = self._next_offset
        alert.offset = offset
        conn.execute(
            'INSERT INTO alerts (id, "offset", account, type, raised_at, resolved_at, body)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (alert.id, alert.offset, alert.account, alert.type, alert.raisedAt, alert.resolvedAt, _encode(alert)),
        )
        self._next_offset = offset + 1  # taken only once the row is in

    # --- reads --------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._readers is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc

    async def acked_seq(self, account: str) -> int:
        def q(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT MAX(seq) FROM ea_inbox WHERE account = ?", (account,)).fetchone()[0] or 0

        return await self._read(q)

    async def open_positions(self, account: str) -> list[Position]:
        def q(conn: sqlite3.Connection) -> list[Position]:
            rows = conn.execute(
                "SELECT o.body FROM position_events o WHERE o.account = ? AND o.event = 'OPEN' AND NOT EXISTS "
                "(SELECT 1 FROM position_events c WHERE c.account = o.account "
                "AND c.position_id = o.position_id AND c.event = 'CLOSE') ORDER BY o.\"offset\"",
                (account,),
            ).fetchall()
            return [EVENT_DECODER.decode(r[0]).position for r in rows]

        return await self._read(q)

    def memory_bytes(self) -> int | None:
        """Heap held by SQLite in this process (all its connections): mostly page caches, each bounded
        by `cache_size` (2 MiB by default), so it grows as a database does and then levels off."""
        return _MEMORY_USED() if _MEMORY_USED is not None else None

    async def head_offset(self) -> int:
        """The newest offset committed: where a subscriber that wants everything from now on resumes.

        Kept by the writer (the only one: the store's file belongs to this process), not queried."""
        if self._writer is None:
            raise StoreError("store is not open")
        return self._head

    async def history(self, kind: str, account: str | None, since: int, limit: int) -> list[tuple[str, int, bytes]]:
        """Durable publications after `since`, oldest first: (channel, offset, payload as published)."""
        table = {"events": "position_events", "alerts": "alerts"}[kind]
        where = '"offset" > ?' + (" AND account = ?" if account else "")
        args = [since, account] if account else [since]

        def q(conn: sqlite3.Connection) -> list[tuple[str, int, bytes]]:
            rows = conn.execute(
                f'SELECT account, "offset", body FROM {table} WHERE {where} ORDER BY "offset" LIMIT ?', [*args, limit]
            ).fetchall()
            return [(f"/trading/{kind}/{acc}", off, bytes(body)) for acc, off, body in rows]

        return await self._read(q)

    async def events(self, query: EventQuery) -> Page[PositionEvent]:
        where, args = _filters(query, ts_col="ts", offset_col='"offset"')
        if query.type:
            where.append("event = ?")
            args.append(query.type)
        sql = f'SELECT "offset", body FROM position_events {sql_where(where)} ORDER BY "offset" DESC LIMIT ?'
        return await self._page(sql, args, query.limit, EVENT_DECODER)

    async def system_trades(self, query: EventQuery) -> Page[SystemTrade]:
        where, args = _filters(query, ts_col="executed_at", offset_col="rowid")
        sql = f"SELECT rowid, body FROM system_trades {sql_where(where)} ORDER BY rowid DESC LIMIT ?"
        return await self._page(sql, args, query.limit, TRADE_DECODER)

    async def _page(self, sql: str, args: list, limit: int, decoder: msgspec.json.Decoder) -> Page:
        def q(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(sql, [*args, limit + 1]).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return Page([decoder.decode(r[1]) for r in rows], rows[-1][0] if more and rows else None)

        return await self._read(q)

    async def alerts(self, query: AlertQuery) -> list[Alert]:
        where, args = [], []
        for clause, value in (
            ("account = ?", query.account),
            ("type = ?", query.type),
            ("raised_at >= ?", query.since),
            ("raised_at < ?", query.until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if query.state == "open":
            where.append("resolved_at IS NULL")
        elif query.state == "resolved":
            where.append("resolved_at IS NOT NULL")
        if query.before is not None:
            where.append('(raised_at, "offset") < (?, ?)')
            args.extend(query.before)

        def q(conn: sqlite3.Connection) -> list[Alert]:
            rows = conn.execute(
                f'SELECT body FROM alerts {sql_where(where)} ORDER BY raised_at DESC, "offset" DESC LIMIT ?',
                [*args, query.limit],
            ).fetchall()
            return [ALERT_DECODER.decode(r[0]) for r in rows]

        return await self._read(q)

    async def open_alerts(self) -> list[Alert]:
        return await self.alerts(AlertQuery(state="open", limit=1_000_000))

    async def open_episodes(self, account: str) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT DISTINCT type FROM alerts WHERE account = ? AND resolved_at IS NULL ORDER BY type"
            return [r[0] for r in conn.execute(sql, (account,))]

        return await self._read(q)

    async def present_accounts(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT account FROM ea_presence ORDER BY account")]

        return await self._read(q)

    # --- credentials --------------------------------------------------------------------------
    async def add_token(self, account: str, label: str = "") -> tuple[str, TokenInfo]:
        token_id, token = new_secret(TOKEN_PREFIX)
        info = TokenInfo(tokenId=token_id, account=account, createdAt=now_ms(), label=label)
        await self._call_writer(
            lambda conn: conn.execute(
                "INSERT INTO ea_tokens (token_id, token_hash, account, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (token_id, hash_secret(token), account, label, info.createdAt),
            )
        )
        return token, info

    async def token_account(self, token: str) -> str | None:
        digest = hash_secret(token)

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT account FROM ea_tokens WHERE token_hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
            return row[0] if row else None

        return await self._read(q)

    async def list_tokens(self, account: str | None = None) -> list[TokenInfo]:
        def q(conn: sqlite3.Connection) -> list[TokenInfo]:
            sql = "SELECT token_id, account, created_at, revoked_at, label FROM ea_tokens"
            rows = conn.execute(
                sql + (" WHERE account = ?" if account else "") + " ORDER BY created_at",
                (account,) if account else (),
            ).fetchall()
            return [TokenInfo(tokenId=r[0], account=r[1], createdAt=r[2], revokedAt=r[3], label=r[4]) for r in rows]

        return await self._read(q)

    async def revoke_token(self, token_id: str) -> bool:
        return await self._revoke("ea_tokens", "token_id", token_id)

    async def add_api_key(self, role: Role, label: str = "") -> tuple[str, ApiKeyInfo]:
        key_id, key = new_secret(KEY_PREFIX)
        info = ApiKeyInfo(keyId=key_id, role=role, createdAt=now_ms(), label=label)
        await self._call_writer(
            lambda conn: conn.execute(
                "INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, hash_secret(key), role, label, info.createdAt),
            )
        )
        return key, info

    async def api_key_role(self, key: str) -> Role | None:
        digest = hash_secret(key)

        def q(conn: sqlite3.Connection) -> Role | None:
            row = conn.execute(
                "SELECT role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
            return row[0] if row else None

        return await self._read(q)

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        def q(conn: sqlite3.Connection) -> list[ApiKeyInfo]:
            rows = conn.execute(
                "SELECT key_id, role, created_at, revoked_at, label FROM api_keys ORDER BY created_at"
            ).fetchall()
            return [ApiKeyInfo(keyId=r[0], role=r[1], createdAt=r[2], revokedAt=r[3], label=r[4]) for r in rows]

        return await self._read(q)

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._revoke("api_keys", "key_id", key_id)

    async def _revoke(self, table: str, id_col: str, value: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE {table} SET revoked_at = ? WHERE {id_col} = ? AND revoked_at IS NULL",
                (now_ms(), value),
            )
            return cur.rowcount > 0

        return await self._call_writer(fn)

    async def known_accounts(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT account FROM ea_tokens WHERE revoked_at IS NULL").fetchall()
            return [r[0] for r in rows]

        return await self._read(q)


def _filters(query: EventQuery, *, ts_col: str, offset_col: str) -> tuple[list[str], list]:
    where: list[str] = []
    args: list = []
    if query.account:
        where.append("account = ?")
        args.append(query.account)
    if query.since is not None:
        where.append(f"{ts_col} >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append(f"{ts_col} < ?")
        args.append(query.until)
    if query.cursor is not None:
        where.append(f"{offset_col} < ?")
        args.append(query.cursor)
    return where, args


POSITION_CACHE_MAX = 20_000  # open positions whose OPEN is remembered (~1 KB each)


class _OperationFailed(Exception):
    """An operation of a group raised: the group is run again, each operation isolated."""


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _settle_all(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for fut, result, exc in items:
        _settle(fut, result, exc)
