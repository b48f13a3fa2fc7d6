"""The Store contract, run against every engine (SQLite, PostgreSQL): the same tests, as centrifuge does."""

import asyncio

import pytest

from tradewire.ingest.protocol import ErrorMsg, PositionMsg
from tradewire.model import Alert, Position
from tradewire.store.base import (
    AlertAckOp,
    AlertQuery,
    AlertRaiseOp,
    AlertResolveOp,
    DurableStream,
    EAErrorOp,
    EAPositionOp,
    EventQuery,
    PresenceOp,
    ReconcileOp,
    StoreError,
)

from stores import ENGINES, factory_for


def pos(pid, magic=0):
    return Position(id=pid, symbol="EURUSD", side="buy", volume=0.1, openPrice=1.1, openTime=pid, magic=magic)


def op(seq, event="OPEN", pid=None, account="a", msg_id=None, system=False, stream=None):
    pid = pid if pid is not None else seq
    msg = PositionMsg(seq=seq, id=msg_id or f"m{seq}", event=event, ts=1000 + seq, position=pos(pid))
    return EAPositionOp(account, msg, system, stream)


@pytest.fixture(params=ENGINES)
async def factory(request, tmp_path):
    async for f in factory_for(request.param, tmp_path):
        yield f


@pytest.fixture
async def store(factory):
    return await factory.open()


async def test_each_message_id_is_stored_once(store):
    results = await store.write([op(1), op(1), op(2)])
    assert [r.status for r in results] == ["stored", "duplicate", "stored"]
    page = await store.events(EventQuery())
    assert sorted(e.msgId for e in page.items) == ["m1", "m2"]
    assert await store.acked_seq("a") == 2


async def test_an_operation_that_raises_fails_alone_on_every_engine(store):
    """One operation raising something that is not a database error (a bug, a record that cannot be read)
    failed every operation of its PostgreSQL group, and closed their EAs 1011; SQLite failed it alone."""
    from tradewire.store.base import DurableStream, StoreError

    broken = EAPositionOp("a", None, False, DurableStream())  # type: ignore[arg-type]
    results = await asyncio.gather(
        store.submit(broken), store.submit(op(1, account="b", stream=DurableStream())), return_exceptions=True
    )
    assert isinstance(results[0], StoreError) and results[1].status == "stored"


async def test_idempotency_survives_a_restart(factory):
    s = await factory.open()
    await s.write([op(1), op(2)])
    await s.close()
    factory.opened.remove(s)
    s = await factory.open()
    assert [r.status for r in await s.write([op(2), op(3)])] == ["duplicate", "stored"]
    assert [r.status for r in await s.write([op(2, msg_id="fresh")])] == ["seq_not_increasing"]
    assert [r.status for r in await s.write([op(9, msg_id="m2")])] == ["conflict"]
    assert await s.acked_seq("a") == 3


async def test_after_a_message_fails_the_later_ones_of_its_session_are_not_tried(store):
    """Committed past a failed seq, a later one would be the account's highest: the next welcome's ackedSeq
    would cover the failed one, and the EA drop it for good. So they fail too, in the same group or later."""
    stream = DurableStream()
    broken = EAPositionOp("a", None, False, stream)  # type: ignore[arg-type]  # one the engine cannot apply
    first = await asyncio.gather(store.submit(broken), store.submit(op(2, stream=stream)), return_exceptions=True)
    assert [type(r) for r in first] == [StoreError, StoreError], first
    with pytest.raises(StoreError, match="earlier durable message"):
        await store.submit(op(3, stream=stream))  # a later group: still not tried
    assert await store.acked_seq("a") == 0 and not (await store.events(EventQuery())).items
    # the EA reconnects (a new stream) and resends them all; another session never was affected
    resent = [op(2, stream=(again := DurableStream())), op(3, stream=again)]
    assert [r.status for r in await store.write(resent)] == ["stored", "stored"]
    assert (await store.submit(op(1, account="b", stream=DurableStream()))).status == "stored"


async def test_accounts_are_independent(store):
    results = await store.write([op(5, account="a"), op(1, account="b", pid=99)])
    assert [r.status for r in results] == ["stored", "stored"]


async def test_group_commit_puts_many_concurrent_operations_in_few_transactions(store):
    commits_before = store.commits
    results = await asyncio.gather(*(store.submit(op(i, account=f"acc-{i % 7}")) for i in range(1, 401)))
    assert all(r.status == "stored" for r in results)
    assert store.commits - commits_before < 400 / 4  # batched, not one commit per message
    assert len((await store.events(EventQuery(limit=1000))).items) == 400


async def test_reconcile_then_ea_report_is_one_record(store):
    await store.write([ReconcileOp("a", "OPEN", pos(5), 10, False)])
    [r] = await store.write([op(1, pid=5)])
    assert r.status == "stored" and r.events[0].source == "ea"
    opens = [e for e in (await store.events(EventQuery(type="OPEN"))).items if e.positionId == 5]
    assert len(opens) == 1 and opens[0].msgId == "m1"
    assert (await store.write([ReconcileOp("a", "OPEN", pos(5), 11, False)]))[0].status == "ignored"


async def test_open_positions_come_in_the_same_order_on_every_engine(store):
    """By their OPEN record's offset, as DynamoDB lists them. With no order, SQLite gave its row order, and
    past `max_positions_per_account` a restart kept a different set of positions on each engine."""
    await store.write([ReconcileOp("a", "OPEN", pos(1), 10, False)])
    await store.write([op(1, pid=2)])
    await store.write([op(2, pid=1)])  # the EA fills in the reconciled OPEN: its record is the newest now
    assert [p.id for p in await store.open_positions("a")] == [2, 1]


async def test_close_without_open_implies_it(store):
    [r] = await store.write([op(1, "CLOSE", pid=8)])
    assert [(e.event, e.source) for e in r.events] == [("OPEN", "reconcile"), ("CLOSE", "ea")]


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
    assert (await store.events(EventQuery(account="nobody"))).items == []


async def test_system_trades_recorded_once(store):
    await store.write([op(1, pid=5, system=True), op(2, "MODIFY", pid=5, system=True)])
    await store.write([ReconcileOp("a", "OPEN", pos(5, 7001), 1, True)])
    trades = (await store.system_trades(EventQuery())).items
    assert [(t.account, t.positionId) for t in trades] == [("a", 5)]


async def test_offsets_increase_and_history_replays_after_one(store):
    results = await store.write([op(1), op(2), op(3)])
    offsets = [r.events[0].offset for r in results]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert await store.head_offset() == offsets[-1]
    rows = await store.history("events", "a", offsets[0], 100)
    assert [off for _, off, _ in rows] == offsets[1:]
    assert all(channel == "/trading/events/a" for channel, _, _ in rows)
    assert await store.history("events", "b", 0, 100) == []


async def test_alert_episode_raised_once_resolved_acknowledged(store):
    def alert(n):
        return Alert(id=f"al-{n}", type="MARGIN_CALL", severity="HIGH", account="a", message="m", raisedAt=n)

    assert (await store.write([AlertRaiseOp(alert(1))]))[0].status == "stored"
    assert (await store.write([AlertRaiseOp(alert(2))]))[0].status == "ignored"  # one open episode
    assert [a.id for a in await store.open_alerts()] == ["al-1"]
    [ack] = await store.write([AlertAckOp("al-1", "key:x", 5)])
    assert ack.alerts[0].ackedBy == "key:x" and ack.alerts[0].resolvedAt is None
    assert (await store.write([AlertAckOp("al-1", "key:y", 6)]))[0].status == "ignored"
    [res] = await store.write([AlertResolveOp("a", "MARGIN_CALL", 9, "back up")])
    assert res.alerts[0].resolvedAt == 9 and res.alerts[0].data["resolution"] == "back up"
    assert (await store.write([AlertResolveOp("a", "MARGIN_CALL", 10)]))[0].status == "not_found"
    assert (await store.write([AlertRaiseOp(alert(3))]))[0].status == "stored"  # a new episode
    assert [a.id for a in await store.alerts(AlertQuery(state="resolved"))] == ["al-1"]
    assert (await store.write([AlertAckOp("nope", "k", 1)]))[0].status == "not_found"
    assert "MARGIN_CALL" in await store.open_episodes("a")  # al-3's episode: what a node reads at a hello
    await store.write([AlertResolveOp("a", "MARGIN_CALL", 12)])
    assert "MARGIN_CALL" not in await store.open_episodes("a") and await store.open_episodes("b") == []


async def test_ea_errors_are_system_errors_each_stored_once(store):
    msg = ErrorMsg(seq=1, id="e1", code="X", message="boom")
    first, again = await store.write([EAErrorOp("a", msg), EAErrorOp("a", msg)])
    assert first.status == "stored" and again.status == "duplicate"
    [alert] = await store.alerts(AlertQuery(type="SYSTEM_ERROR"))
    [acked] = (await store.write([AlertAckOp(alert.id, "key:k", 3)]))[0].alerts
    assert acked.resolvedAt == 3  # acknowledging an EA error ends it


async def test_alerts_page_through_ties_once_each(store):
    """Paging by `to` skipped alerts raised in the same millisecond as the last of a page (a restart's lost
    connections): the (raisedAt, offset) cursor takes each once, in order."""
    for n, ts in enumerate((50, 50, 40, 50, 30), start=1):
        await store.write([EAErrorOp("a", ErrorMsg(seq=n, id=f"e{n}", code="X", message="m", ts=ts))])
    seen, before = [], None
    while True:
        page = await store.alerts(AlertQuery(limit=2, before=before))
        seen += page
        if len(page) < 2:
            break
        before = (page[-1].raisedAt, page[-1].offset)
    assert sorted(a.data["eaMessageId"] for a in seen) == [f"e{n}" for n in range(1, 6)] and len(seen) == 5
    assert [a.raisedAt for a in seen] == [50, 50, 50, 40, 30]


async def test_presence_and_credentials(store):
    await store.write([PresenceOp("a", 1), PresenceOp("a", 2), PresenceOp("b", 3)])
    assert await store.present_accounts() == ["a", "b"]
    token, info = await store.add_token("acc-1", label="vps-3")
    key, kinfo = await store.add_api_key("admin")
    assert await store.token_account(token) == "acc-1" and await store.token_account(token + "x") is None
    assert await store.api_key_role(key) == "admin"
    assert await store.known_accounts() == ["acc-1"]
    assert await store.revoke_token(info.tokenId) and not await store.revoke_token(info.tokenId)
    assert await store.token_account(token) is None
    assert [t.revokedAt is not None for t in await store.list_tokens("acc-1")] == [True]
    assert await store.revoke_api_key(kinfo.keyId) and await store.api_key_role(key) is None
    assert [k.keyId for k in await store.list_api_keys()] == [kinfo.keyId]
