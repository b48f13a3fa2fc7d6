"""The SQLite store: idempotent, group-committed, isolated failures, secrets hashed, schema versioned."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tradewire.ingest.protocol import PositionMsg
from tradewire.model import Position
from tradewire.store import make_store, parse_store_url
from tradewire.store.base import EAPositionOp, EventQuery, ReconcileOp, StoreError
from tradewire.store.sqlite import SCHEMA_VERSION, SQLiteStore


def pos(pid, magic=0):
    return Position(id=pid, symbol="EURUSD", side="buy", volume=0.1, openPrice=1.1, openTime=pid, magic=magic)


def op(seq, event="OPEN", pid=None, account="a", msg_id=None, system=False):
    pid = pid if pid is not None else seq
    msg = PositionMsg(seq=seq, id=msg_id or f"m{seq}", event=event, ts=1000 + seq, position=pos(pid))
    return EAPositionOp(account, msg, system)


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "t.db"))
    await s.open()
    yield s
    await s.close()


async def test_each_message_id_is_stored_once(store):
    results = await store.write([op(1), op(1), op(2)])
    assert [r.status for r in results] == ["stored", "duplicate", "stored"]
    page = await store.events(EventQuery())
    assert sorted(e.msgId for e in page.items) == ["m1", "m2"]
    assert await store.acked_seq("a") == 2


async def test_idempotency_survives_a_restart(tmp_path):
    path = str(tmp_path / "r.db")
    s = SQLiteStore(path)
    await s.open()
    await s.write([op(1), op(2)])
    await s.close()
    s = SQLiteStore(path)
    await s.open()
    try:
        assert [r.status for r in await s.write([op(2), op(3)])] == ["duplicate", "stored"]
        assert [r.status for r in await s.write([op(2, msg_id="fresh")])] == ["seq_not_increasing"]
        assert await s.acked_seq("a") == 3
    finally:
        await s.close()


async def test_accounts_are_independent(store):
    results = await store.write([op(5, account="a"), op(1, account="b", pid=99)])
    assert [r.status for r in results] == ["stored", "stored"]


async def test_group_commit_puts_many_concurrent_operations_in_few_transactions(store):
    commits_before = store.commits
    results = await asyncio.gather(*(store.submit(op(i, account=f"acc-{i % 7}")) for i in range(1, 401)))
    assert all(r.status == "stored" for r in results)
    assert store.commits - commits_before < 400 / 4  # batched, not one fsync per message
    assert len((await store.events(EventQuery(limit=1000))).items) == 400


async def test_one_failing_operation_does_not_spoil_its_batch(store, monkeypatch):
    real = store._apply

    def flaky(conn, o):
        if getattr(o, "msg", None) is not None and o.msg.id == "m2":
            raise sqlite3.OperationalError("simulated failure")
        return real(conn, o)

    monkeypatch.setattr(store, "_apply", flaky)
    futures = [store.submit(op(i)) for i in (1, 2, 3)]
    done = await asyncio.gather(*futures, return_exceptions=True)
    assert done[0].status == "stored" and done[2].status == "stored"
    assert isinstance(done[1], StoreError)
    assert {e.msgId for e in (await store.events(EventQuery())).items} == {"m1", "m3"}


async def test_failed_commit_fails_every_operation_and_forgets_its_counters(tmp_path):
    """If the transaction fails nothing is durable: no future may succeed, and a resend must be storable."""
    store = SQLiteStore(str(tmp_path / "busy.db"), busy_timeout_ms=100)
    await store.open()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # holds the write lock: the writer's BEGIN times out
    try:
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.submit(op(1)), 30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        assert (await store.write([op(1)]))[0].status == "stored"
    finally:
        await store.close()


async def test_reconcile_then_ea_report_is_one_record(store):
    await store.write([ReconcileOp("a", "OPEN", pos(5), 10, False)])
    [r] = await store.write([op(1, pid=5)])
    assert r.status == "stored" and r.events[0].source == "ea"
    opens = [e for e in (await store.events(EventQuery(type="OPEN"))).items if e.positionId == 5]
    assert len(opens) == 1 and opens[0].msgId == "m1"


async def test_open_positions_are_those_without_close(store):
    await store.write([op(1, pid=1), op(2, pid=2), op(3, "CLOSE", pid=1)])
    assert [p.id for p in await store.open_positions("a")] == [2]


async def test_event_paging_with_cursor_and_filters(store):
    await store.write([op(i) for i in range(1, 8)])
    first = await store.events(EventQuery(limit=3))
    assert [e.seq for e in first.items] == [7, 6, 5] and first.next_cursor is not None
    second = await store.events(EventQuery(limit=3, cursor=first.next_cursor))
    assert [e.seq for e in second.items] == [4, 3, 2]
    last = await store.events(EventQuery(limit=3, cursor=second.next_cursor))
    assert [e.seq for e in last.items] == [1] and last.next_cursor is None
    window = await store.events(EventQuery(since=1003, until=1005))
    assert sorted(e.seq for e in window.items) == [3, 4]


async def test_system_trades_recorded_once(store):
    await store.write([op(1, pid=5, system=True), op(2, "MODIFY", pid=5, system=True)])
    await store.write([ReconcileOp("a", "OPEN", pos(5, 7001), 1, True)])
    trades = (await store.system_trades(EventQuery())).items
    assert [(t.account, t.positionId) for t in trades] == [("a", 5)]


async def test_credentials_are_stored_hashed_and_revocable(store):
    token, info = await store.add_token("acc-1", label="vps-3")
    key, kinfo = await store.add_api_key("admin")
    assert await store.token_account(token) == "acc-1"
    assert await store.api_key_role(key) == "admin"
    assert await store.token_account(token + "x") is None
    raw = Path(store.path).read_bytes() + Path(store.path + "-wal").read_bytes()
    assert token.encode() not in raw and key.encode() not in raw
    assert await store.revoke_token(info.tokenId)
    assert not await store.revoke_token(info.tokenId)  # already revoked
    assert await store.token_account(token) is None
    assert [t.revokedAt is not None for t in await store.list_tokens()] == [True]
    assert await store.revoke_api_key(kinfo.keyId) and await store.api_key_role(key) is None


async def test_schema_version_is_recorded_and_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "v.db"
    s = SQLiteStore(str(path))
    await s.open()
    await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(str(path)).open()


async def test_synchronous_full_by_default(store):
    conn = store._reader()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite://tradewire.db", "three slashes"),
        ("sqlite:///:memory:", "file path"),
        ("mysql://x", "unknown scheme"),
        ("sqlite:///x.db?fsync=1", "unknown option"),
        ("postgresql://localhost/test", "not available"),
    ],
)
def test_bad_store_urls_say_what_is_wrong(url, problem):
    with pytest.raises(ValueError, match=problem):
        parse_store_url(url)


def test_store_url_options(tmp_path):
    s = make_store(f"sqlite:///{tmp_path}/x.db?synchronous=normal&busy_timeout_ms=100")
    assert s.synchronous == "NORMAL" and s.busy_timeout_ms == 100
    with pytest.raises(ValueError, match="synchronous"):
        make_store(f"sqlite:///{tmp_path}/x.db?synchronous=OFF")
