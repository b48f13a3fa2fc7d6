"""What only the DynamoDB engine has: races between nodes settled by conditional writes, transactions
DynamoDB refuses, its URL. The Store contract itself runs in test_store_contract.py."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from test_store_contract import op, pos
from tradewire.model import Alert
from tradewire.store.base import AlertQuery, AlertRaiseOp, EventQuery, ReconcileOp, StoreError

from stores import factory_for, need_aiobotocore


@pytest.fixture
async def factory(tmp_path):
    async for f in factory_for("dynamodb", tmp_path):
        yield f


def alert(n: int, type_: str = "MARGIN_CALL") -> Alert:
    return Alert(id=f"al-{n}", type=type_, severity="HIGH", account="a", message="m", raisedAt=n)


def let_other_node_win(store, other_writes):
    """Make `store`'s next transaction run only after `other_writes()` has committed on another node:
    `store` planned from facts that are stale by the time it writes."""
    original = store._client.transact_write_items
    calls = 0

    async def transact_write_items(**kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            await other_writes()
        return await original(**kwargs)

    store._client.transact_write_items = transact_write_items


@pytest.mark.parametrize(
    ("theirs", "ours", "expected"),
    [
        ([op(1)], op(1), "duplicate"),  # the same EA message reached both nodes
        ([op(1)], op(7, msg_id="m1"), "conflict"),
        ([op(5)], op(3, msg_id="fresh"), "seq_not_increasing"),
        ([ReconcileOp("a", "OPEN", pos(9), 1, False)], ReconcileOp("a", "OPEN", pos(9), 2, False), "ignored"),
        ([AlertRaiseOp(alert(1))], AlertRaiseOp(alert(2)), "ignored"),  # one open episode per (account, type)
    ],
)
async def test_a_race_lost_to_another_node_is_planned_again(factory, theirs, ours, expected):
    node_a, node_b = await factory.open(), await factory.open()

    async def b_writes_first():
        assert [r.status for r in await node_b.write(theirs)] == ["stored"] * len(theirs)

    let_other_node_win(node_a, b_writes_first)
    [result] = await node_a.write([ours])
    assert result.status == expected
    assert node_a.replans == 1  # its transaction was cancelled by a condition, then planned from fresh facts
    opens = [e for e in (await node_a.events(EventQuery())).items if e.event == "OPEN"]
    assert len(opens) == len({e.positionId for e in opens})
    assert len(await node_a.open_alerts()) == sum(isinstance(o, AlertRaiseOp) for o in theirs)


async def test_two_nodes_storing_the_same_stream_store_each_message_once(factory):
    node_a, node_b = await factory.open(), await factory.open()
    stream = [op(seq, pid=seq % 5, event="OPEN" if seq <= 5 else "MODIFY") for seq in range(1, 61)]
    results = await asyncio.gather(*(node.submit(o) for o in stream for node in (node_a, node_b)))
    stored = [r.events[-1].msgId for r in results if r.status == "stored" and r.events]
    assert len(stored) == len(set(stored))  # never stored twice, whichever node won
    events = (await node_b.events(EventQuery(limit=1000))).items
    assert sorted(e.msgId for e in events) == sorted(stored)
    assert {r.status for r in results} <= {"stored", "duplicate", "seq_not_increasing"}
    assert await node_a.acked_seq("a") == max(e.seq for e in events)
    assert len([e for e in events if e.event == "OPEN"]) == len({e.positionId for e in events if e.event == "OPEN"})


async def test_an_operation_dynamodb_refuses_fails_alone(factory):
    store = await factory.open()
    huge = Alert(id="huge", type="X", severity="HIGH", account="a", message="m" * 500_000, raisedAt=1)
    first, refused, last = await asyncio.gather(
        store.submit(op(1)), store.submit(AlertRaiseOp(huge)), store.submit(op(2)), return_exceptions=True
    )
    assert isinstance(refused, StoreError)  # an item over DynamoDB's 400 KB
    assert first.status == last.status == "stored"
    assert [e.seq for e in (await store.events(EventQuery())).items] == [2, 1]


async def test_a_throttled_revoke_is_tried_again_not_reported_as_no_such_token(factory):
    """A throttled table cancels the transaction with ThrottlingError: taken for "revoked by someone else",
    the CLI said "no active token with id" and the leaked token went on working."""
    from botocore.exceptions import ClientError

    store = await factory.open()
    _, info = await store.add_token("acc-1")
    original, calls = store._client.transact_write_items, []

    async def throttled_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "throttled"},
                    "CancellationReasons": [{"Code": "ThrottlingError"}, {"Code": "None"}],
                },
                "TransactWriteItems",
            )
        return await original(**kwargs)

    store._client.transact_write_items = throttled_once
    assert await store.revoke_token(info.tokenId) is True and len(calls) == 2
    [listed] = await store.list_tokens("acc-1")
    assert listed.revokedAt is not None
    assert await store.revoke_token(info.tokenId) is False  # now truly revoked already


async def test_large_batches_are_split_into_transactions_of_at_most_100_items(factory):
    store = await factory.open()
    sizes = []
    original = store._client.transact_write_items

    async def counting(**kwargs):
        sizes.append(len(kwargs["TransactItems"]))
        return await original(**kwargs)

    store._client.transact_write_items = counting
    ops = [op(i, "CLOSE", account=f"acc-{i % 3}", system=True) for i in range(1, 121)]  # 5 items each + account
    results = await asyncio.gather(*(store.submit(o) for o in ops))
    assert [len(r.events) for r in results] == [2] * 120  # the implied OPEN and the CLOSE
    assert max(sizes) <= 100 and len(sizes) < 120 / 4
    assert len((await store.system_trades(EventQuery(limit=500))).items) == 120


async def test_history_and_queries_over_every_account(factory):
    store = await factory.open()
    await store.write([op(1, account="a"), op(1, account="b", pid=7), op(2, "CLOSE", account="a", pid=1)])
    await store.write([AlertRaiseOp(alert(5)), AlertRaiseOp(msgspec.structs.replace(alert(6), account="b"))])
    rows = await store.history("events", None, 0, 100)
    assert [ch for ch, _, _ in rows] == ["/trading/events/a", "/trading/events/b", "/trading/events/a"]
    assert [off for _, off, _ in rows] == sorted(off for _, off, _ in rows)
    assert len(await store.history("events", None, rows[0][1], 1)) == 1
    assert [a.account for a in await store.alerts(AlertQuery())] == ["b", "a"]  # newest raised first
    assert [a.account for a in await store.alerts(AlertQuery(state="open", until=6))] == ["a"]
    page = await store.events(EventQuery(type="CLOSE"))
    assert [(e.account, e.positionId) for e in page.items] == [("a", 1)]
    assert await store.open_positions("a") == []
    assert [p.id for p in await store.open_positions("b")] == [7]


def test_url():
    need_aiobotocore()
    from tradewire.store.dynamodb import split_url

    assert split_url("dynamodb://tw_prod?region=eu-west-1&endpoint=http://127.0.0.1:8000") == (
        "tw_prod",
        "eu-west-1",
        "http://127.0.0.1:8000",
    )
    assert split_url("dynamodb://Tw.Prod?region=us-east-2")[0] == "Tw.Prod"  # table names are case-sensitive
    with pytest.raises(ValueError, match="table prefix"):
        split_url("dynamodb://bad/prefix!")
    with pytest.raises(ValueError, match="unknown option"):
        split_url("dynamodb://tw?regoin=us-east-1")


async def test_an_alerts_window_that_cannot_hold_anything_is_empty_not_refused(factory):
    """`from` past the cursor's time (a client narrowing `from` but keeping its cursor) made a key condition
    BETWEEN lo AND hi with lo > hi, which DynamoDB refuses (ValidationException: a 503 to the client, which
    retries it); the other engines answer []. The local server accepts it, so it is refused here as AWS does."""
    from botocore.exceptions import ClientError

    store = await factory.open()
    await store.submit(AlertRaiseOp(alert(5_000)))
    original = store._client.query

    async def like_dynamodb(**kwargs):
        values = kwargs.get("ExpressionAttributeValues", {})
        if "BETWEEN" in kwargs.get("KeyConditionExpression", "") and values[":lo"]["S"] > values[":hi"]["S"]:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "Invalid KeyConditionExpression"}},
                              "Query")  # fmt: skip
        return await original(**kwargs)

    store._client.query = like_dynamodb
    assert await store.alerts(AlertQuery(since=6_000, before=(5_000, 3))) == []
    assert [a.id for a in await store.alerts(AlertQuery(since=4_000, before=(6_000, 9)))] == ["al-5000"]
