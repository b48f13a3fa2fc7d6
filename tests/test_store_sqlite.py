"""The SQLite store: idempotent, group-committed, isolated failures, secrets hashed, schema versioned."""

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from tradewire.ingest.protocol import PositionMsg
from tradewire.model import Alert, Position
from tradewire.store import make_store, parse_store_url
from tradewire.store.base import AlertRaiseOp, EAPositionOp, EventQuery, ReconcileOp, StoreError
from tradewire.store.sqlite import SCHEMA_VERSION, SQLiteStore

from helpers import sqlite_locked


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
    # The group was undone and run again op by op: no offset or seq was taken twice or lost.
    monkeypatch.setattr(store, "_apply", real)
    again = await store.submit(op(4))
    offsets = sorted(e.offset for e in (await store.events(EventQuery())).items)
    assert again.status == "stored" and offsets == sorted(set(offsets)) and offsets[-1] == again.events[0].offset
    assert await store.acked_seq("a") == 4


async def test_failed_commit_fails_every_operation_and_forgets_its_counters(tmp_path):
    """If the transaction fails nothing is durable: no future may succeed, and a resend must be storable."""
    store = SQLiteStore(str(tmp_path / "busy.db"), busy_timeout_ms=100)
    await store.open()
    with sqlite_locked(store.path):  # holds the write lock: the writer's BEGIN times out
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.submit(op(1)), 30)
        assert await store.head_offset() == 0  # nothing was committed, so the head did not move
    try:
        [result] = await store.write([op(1)])
        assert result.status == "stored" and await store.head_offset() == result.events[0].offset == 1
    finally:
        await store.close()


async def test_the_head_offset_is_kept_by_the_writer_and_found_again_at_open(tmp_path):
    """head_offset is answered from memory (a subscribe asks for it every time): it must be what the
    file holds, after events, after alerts, and after a restart."""
    path = str(tmp_path / "head.db")
    store = SQLiteStore(path)
    await store.open()
    assert await store.head_offset() == 0
    results = await store.write([op(1), op(2)])
    assert await store.head_offset() == results[-1].events[0].offset == 2
    alert = Alert(id="al-1", type="MARGIN_CALL", severity="HIGH", account="a", message="m", raisedAt=1)
    await store.write([AlertRaiseOp(alert)])
    assert await store.head_offset() == 3
    await store.close()
    with pytest.raises(StoreError):
        await store.head_offset()
    again = SQLiteStore(path)
    await again.open()
    try:
        assert await again.head_offset() == 3
        with sqlite3.connect(path) as conn:
            [(stored,)] = conn.execute('SELECT MAX("offset") FROM alerts').fetchall()
        assert stored == 3
    finally:
        await again.close()


async def test_credentials_never_reach_the_file_in_clear(store):
    token, _ = await store.add_token("acc-1", label="vps-3")
    key, _ = await store.add_api_key("admin")
    assert await store.token_account(token) == "acc-1"
    raw = Path(store.path).read_bytes() + Path(store.path + "-wal").read_bytes()
    assert token.encode() not in raw and key.encode() not in raw


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
        ("dynamodb://bad/prefix", "TABLE_PREFIX"),
        ("dynamodb://tw?regoin=us-east-1", "unknown option"),
        ("postgresql:///test", "USER@HOST"),
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


async def test_a_repeat_the_first_try_did_not_look_up_is_caught_and_its_group_run_again(tmp_path):
    """The first try of a group skips the look-ups that only matter for repeats (a reused message id,
    a second OPEN): the unique indexes refuse those, and the group runs again looking them up."""
    url = f"sqlite:///{tmp_path}/t.db"
    s = make_store(url)
    await s.open()
    await s.write([ReconcileOp("a", "OPEN", pos(5), 10, False), op(1)])
    await s.close()
    s = make_store(url)  # a restart: nothing is cached, so the first try assumes position 5 is new
    await s.open()
    try:
        results = await asyncio.gather(
            s.submit(op(2, pid=20)),
            s.submit(op(3, pid=5)),  # OPEN of a position the reconciler recorded: fills it in
            s.submit(op(4, msg_id="m1")),  # a new seq under a used id: refused as a conflict
            s.submit(op(5, pid=21)),
        )
        assert [r.status for r in results] == ["stored", "stored", "conflict", "stored"]
        assert s.reruns >= 1
        assert results[1].events[0].source == "ea" and results[1].events[0].msgId == "m3"
        events = (await s.events(EventQuery())).items
        opens_of_5 = [e for e in events if e.positionId == 5 and e.event == "OPEN"]
        assert len(opens_of_5) == 1 and opens_of_5[0].msgId == "m3"
        offsets = [e.offset for e in events]
        assert len(offsets) == len(set(offsets))
        assert await s.acked_seq("a") == 5
    finally:
        await s.close()


async def test_the_writer_remembers_open_positions_only(store):
    """A soak found RSS climbing ~4 MiB a minute: every position ever closed was kept in the look-up cache."""
    await store.write([op(2 * n + 1, "OPEN", pid=n) for n in range(50)])
    await store.write([op(100 + n, "CLOSE", pid=n) for n in range(47)])
    assert len(store._positions) == 3
    [again] = await store.write([op(500, "CLOSE", pid=1, msg_id="other")])  # a repeat: looked up, not cached
    assert again.status == "stored" and again.events == [] and "already recorded" in again.detail


async def test_memory_bytes_is_the_heap_of_the_sqlite_library_python_runs(tmp_path):
    """The metric behind the soak's RSS question: it must read the SQLite copy the store uses (a page
    cache filling raises it, closing the connections gives it back), not some other copy that stays 0."""
    store = SQLiteStore(str(tmp_path / "mem.db"))
    await store.open()
    opened = store.memory_bytes()
    assert opened is not None and opened > 0
    await store.write([op(seq, account=f"a{seq % 50}") for seq in range(1, 3001)])
    for _ in range(2):  # both reader threads read every page
        assert len((await store.events(EventQuery(limit=5000))).items) == 3000
    filled = store.memory_bytes()
    assert filled > opened + 256 * 1024  # a few hundred pages cached in each connection
    fds = len(os.listdir("/proc/self/fd"))
    await store.close()
    # close() closes the readers' connections too, not the next garbage collection.
    assert filled - store.memory_bytes() > 0.9 * (filled - opened) and len(os.listdir("/proc/self/fd")) < fds


async def test_a_commit_and_then_the_cache_reload_failing_leave_no_stale_cache(tmp_path):
    """A failed group's caches are reloaded from the database; when that read failed too (a failing disk),
    the caches kept what the rolled-back transaction had put in them: the EA's resend of the lost message was
    refused as seq_not_increasing (and acked: lost), and a later CLOSE found an OPEN that was never stored."""
    import sqlite3

    from tradewire.ingest import protocol as p
    from tradewire.model import Position
    from tradewire.store.base import DurableStream, EAPositionOp
    from tradewire.store.sqlite import SQLiteStore

    fail = {"commit": False, "reload": False}

    class FailingOnce(sqlite3.Connection):
        def execute(self, sql, *args):
            if fail["commit"] and sql == "COMMIT":
                fail["commit"] = False
                raise sqlite3.OperationalError("disk I/O error")
            if fail["reload"] and sql.startswith("SELECT MAX(m)"):
                fail["reload"] = False
                raise sqlite3.OperationalError("disk I/O error")
            return super().execute(sql, *args)

    def op(seq: int, event: str, pid: int) -> EAPositionOp:
        pos = Position(id=pid, symbol="EURUSD", side="buy", volume=1.0, openPrice=1.0, openTime=1)
        msg = p.PositionMsg(seq=seq, id=f"m{seq}", event=event, ts=seq, position=pos)
        return EAPositionOp("a", msg, False, DurableStream())

    store = SQLiteStore(str(tmp_path / "t.db"))

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False, factory=FailingOnce)
        conn.execute("PRAGMA journal_mode = WAL")
        return conn

    store._connect = connect  # type: ignore[method-assign]
    await store.open()
    try:
        assert (await store.submit(op(10, "OPEN", 1))).status == "stored"
        fail.update(commit=True, reload=True)
        with pytest.raises(StoreError):
            await store.submit(op(11, "OPEN", 7))
        assert await store.acked_seq("a") == 10
        assert (await store.submit(op(11, "OPEN", 7))).status == "stored"  # the resend
        closed = await store.submit(op(12, "CLOSE", 7))
        assert closed.status == "stored" and [e.event for e in closed.events] == ["CLOSE"]  # its OPEN is stored
    finally:
        await store.close()
