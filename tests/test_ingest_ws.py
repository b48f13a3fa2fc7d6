"""EA ingest over a real WebSocket against a real hub and a real SQLite file."""

import asyncio
import json

import aiohttp
import pytest

from tradewire.app import Server
from tradewire.store.base import StoreError

from conftest import make_settings
from helpers import (
    EA,
    Subscriber,
    account_state,
    db_rows,
    hello,
    issue_key,
    issue_token,
    position,
    position_event,
    running,
    sqlite_locked,
)


async def stored_ids(server, account="acc-1"):
    return sorted(r[0] for r in db_rows(server, "SELECT msg_id FROM ea_inbox WHERE account = ?", account))


async def connect(http, server, account="acc-1"):
    ea = await EA.connect(http, server, await issue_token(server, account))
    await ea.greet()
    return ea


# --- durability -------------------------------------------------------------------------------
async def test_an_ack_never_precedes_the_commit(server, http):
    ea = await connect(http, server)
    # Another process holds the database's write lock: the hub cannot commit.
    with sqlite_locked(server.store.path):
        await ea.send(position_event(1))
        with pytest.raises(asyncio.TimeoutError):
            await ea.wait_ack(1, timeout=0.8)
        assert db_rows(server, "SELECT COUNT(*) FROM ea_inbox") == [(0,)]
    ack = await ea.wait_ack(1)
    assert ack["seq"] == 1
    # The moment the ack is seen, another connection already sees the committed row.
    assert db_rows(server, "SELECT msg_id FROM ea_inbox") == [("open-1001-1",)]


async def test_a_session_holds_a_bounded_number_of_unacked_messages_and_loses_none(server, http):
    """While commits wait (here a lock held from outside; in the field, an EA that never reads its acks,
    which stalls the ack loop on its socket) the session read on, queueing every message it was sent."""
    from tradewire.ingest.ws import MAX_UNACKED

    ea = await connect(http, server)
    session = server.hub.sessions["acc-1"]
    peak = 0
    with sqlite_locked(server.store.path):
        for start in range(1, 8001, 500):  # 8,000 messages sent at once, acks unread
            await ea.send([position_event(s, "OPEN", pid=s) for s in range(start, start + 500)])
        for _ in range(100):  # 1 s of the lock: the session reads what it may meanwhile
            peak = max(peak, session._unacked())
            await asyncio.sleep(0.01)
    assert MAX_UNACKED <= peak <= MAX_UNACKED + 500  # it stopped reading at the bound (plus the frame it read)
    await ea.wait_ack(8000, timeout=30)
    assert len(await stored_ids(server)) == 8000


async def test_acks_are_cumulative_and_in_order(server, http):
    ea = await connect(http, server)
    await ea.send([position_event(s, "OPEN", pid=s) for s in range(1, 21)])
    acks = []
    while not acks or acks[-1] < 20:
        acks.append((await ea.expect("ack"))["seq"])
    assert acks == sorted(acks) and acks[-1] == 20
    assert len(await stored_ids(server)) == 20


async def test_resend_after_reconnect_stores_nothing_twice_and_is_acked_again(server, http):
    token = await issue_token(server, "acc-1")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    await ea.send([position_event(1), position_event(2, "MODIFY"), position_event(3, "CLOSE")])
    await ea.wait_ack(3)
    await ea.close()

    ea = await EA.connect(http, server, token)
    welcome = await ea.greet()
    assert welcome["ackedSeq"] == 3
    # An EA that lost the ack resends everything it had: each is taken as a duplicate.
    await ea.send([position_event(1), position_event(2, "MODIFY"), position_event(3, "CLOSE"), position_event(4)])
    assert (await ea.wait_ack(4))["seq"] == 4
    assert not [m for m in ea.inbox if m["type"] == "error"]
    assert await stored_ids(server) == ["close-1001-3", "modify-1001-2", "open-1001-1", "open-1001-4"]
    assert db_rows(server, "SELECT COUNT(*) FROM position_events WHERE event = 'OPEN' AND position_id = 1001") == [(1,)]


async def test_unacked_message_sent_just_before_a_drop_is_stored_once(server, http):
    token = await issue_token(server, "acc-1")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    await ea.send(position_event(1))
    await ea.ws.close()  # gone before reading the ack
    ea = await EA.connect(http, server, token)
    welcome = await ea.greet()
    if welcome["ackedSeq"] < 1:
        await ea.send(position_event(1))
        await ea.wait_ack(1)
    await ea.send(position_event(1))  # resent anyway: must not be stored twice
    await ea.wait_ack(1)
    assert await stored_ids(server) == ["open-1001-1"]


# --- reconcile ----------------------------------------------------------------------------------
async def test_snapshots_reconcile_missing_open_and_close_and_ea_events_fill_in(server, http):
    ea = await connect(http, server)
    await ea.send({"type": "positions", "ts": 10, "positions": [position(1), position(2, symbol="GBPUSD")]})
    await ea.send({"type": "positions", "ts": 20, "positions": [position(2, symbol="GBPUSD")]})
    await ea.send(position_event(1, "CLOSE", pid=1, closePrice=1.09, profit=12.5, reason="tp"))
    await ea.wait_ack(1)
    await asyncio.sleep(0.1)
    rows = db_rows(server, "SELECT position_id, event, source FROM position_events ORDER BY position_id, event")
    assert rows == [(1, "CLOSE", "ea"), (1, "OPEN", "reconcile"), (2, "OPEN", "reconcile")]
    [(body,)] = db_rows(server, "SELECT body FROM position_events WHERE position_id = 1 AND event = 'CLOSE'")
    assert json.loads(body)["profit"] == 12.5  # the EA's details replaced the reconciled guess


async def until_rows(server, sql: str, want: list, timeout: float = 5.0) -> list:
    for _ in range(int(timeout / 0.05)):
        rows = db_rows(server, sql)
        if rows == want:
            break
        await asyncio.sleep(0.05)
    return rows


async def test_a_snapshot_close_the_store_refused_is_recorded_by_the_next_snapshot(tmp_path, http):
    """A CLOSE found by a snapshot left the live view at once; when its write failed (a lock, a failover), no
    later snapshot showed it again, and the store kept the position open for good, without a word."""
    settings = make_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=100"
    srv = Server(settings)
    await srv.start()
    try:
        watcher = await Subscriber.connect(http, srv, await issue_key(srv))
        await watcher.subscribe("a", "/trading/alerts/*")
        ea = await connect(http, srv)
        await ea.send(position_event(1, pid=1, position=position(1)))
        await ea.wait_ack(1)
        with sqlite_locked(srv.store.path):
            await ea.send({"type": "positions", "ts": 10, "positions": []})  # closed: its write fails
            told = await watcher.event(type="SYSTEM_ERROR")  # and the operator is told, live
        assert told["severity"] == "CRITICAL" and "the store refused a write" in told["message"]
        assert db_rows(srv, "SELECT event FROM position_events WHERE position_id = 1") == [("OPEN",)]
        await ea.send({"type": "positions", "ts": 20, "positions": []})  # the next snapshot: recorded now
        sql = "SELECT event, source FROM position_events WHERE position_id = 1 ORDER BY event"
        assert await until_rows(srv, sql, [("CLOSE", "reconcile"), ("OPEN", "ea")]) == [
            ("CLOSE", "reconcile"),
            ("OPEN", "ea"),
        ]
    finally:
        await srv.stop()


async def test_a_position_message_the_store_refused_leaves_the_live_view_as_it_was(server, http):
    """A refused OPEN or CLOSE (a seq not above the stored ones: a lost outbox, two EAs on one token) changed
    the live view all the same; the view then agreed with the snapshots, so none repaired the record."""
    ea = await connect(http, server)
    await ea.send(position_event(5, pid=1, position=position(1)))
    await ea.send({"type": "positions", "ts": 10, "positions": [position(1)]})
    await ea.wait_ack(5)
    await ea.send(position_event(3, "CLOSE", pid=1, position=position(1)))  # refused: seq 3 is not above 5
    await ea.send(position_event(4, pid=2, position=position(2)))  # refused too
    for _ in range(100):
        if sum(m["type"] == "error" for m in ea.inbox) >= 2:
            break
        await ea.recv(1)
    assert [m["code"] for m in ea.inbox if m["type"] == "error"] == ["seq_not_increasing"] * 2
    assert set(server.hub.state.accounts["acc-1"].positions) == {1}
    await ea.send({"type": "positions", "ts": 20, "positions": [position(2)]})  # the truth: 1 closed, 2 open
    sql = "SELECT position_id, event FROM position_events ORDER BY position_id, event"
    want = [(1, "CLOSE"), (1, "OPEN"), (2, "OPEN")]
    assert await until_rows(server, sql, want) == want


async def test_a_modify_or_open_after_the_close_neither_extends_the_history_nor_reopens_it(server, http):
    """An EA's backlog sent after the snapshot that closed a position: its MODIFY was stored after the CLOSE,
    and the MODIFY (or a late OPEN) put the closed position back in the live view and on the dashboard."""
    ea = await connect(http, server)
    await ea.send(position_event(1, pid=1, position=position(1)))
    await ea.send(position_event(2, "CLOSE", pid=1, position=position(1)))
    await ea.send(position_event(3, "MODIFY", pid=1, position=position(1, sl=1.07)))
    await ea.wait_ack(3)
    await ea.send({"type": "positions", "ts": 10, "positions": [position(2)]})  # 2 reconciled open ...
    await ea.send({"type": "positions", "ts": 20, "positions": []})  # ... and closed
    await asyncio.sleep(0.3)
    await ea.send(position_event(4, pid=2, position=position(2, comment="late")))  # the EA's own OPEN, late
    await ea.wait_ack(4)
    assert not [m for m in ea.inbox if m["type"] == "error"]  # taken: acked, nothing to resend
    rows = db_rows(server, "SELECT position_id, event, source FROM position_events ORDER BY position_id, event")
    assert rows == [(1, "CLOSE", "ea"), (1, "OPEN", "ea"), (2, "CLOSE", "reconcile"), (2, "OPEN", "ea")]
    assert server.hub.state.accounts["acc-1"].positions == {}


async def test_a_snapshot_that_comes_late_closes_nothing(server, http):
    """A snapshot taken before the last one applied (an MT4 POST retried and overtaken) recorded a CLOSE, for
    good, of a position opened in between."""
    ea = await connect(http, server)
    await ea.send({"type": "positions", "ts": 2_000, "positions": [position(7)]})
    await ea.send({"type": "positions", "ts": 1_000, "positions": []})  # the older one, late
    await ea.send(position_event(1, pid=8, position=position(8)))
    await ea.wait_ack(1)
    await asyncio.sleep(0.2)
    assert db_rows(server, "SELECT position_id, event FROM position_events ORDER BY position_id") == [
        (7, "OPEN"),
        (8, "OPEN"),
    ]
    assert set(server.hub.state.accounts["acc-1"].positions) == {7, 8}


async def test_a_restart_does_not_forget_what_is_open(tmp_path, http):
    settings = make_settings(tmp_path)
    srv = Server(settings)
    await srv.start()
    token = await issue_token(srv, "acc-1")
    ea = await EA.connect(http, srv, token)
    await ea.greet()
    await ea.send(position_event(1, pid=1))
    await ea.wait_ack(1)
    await ea.close()
    await srv.stop()

    srv = Server(settings)  # same store file, fresh memory
    await srv.start()
    try:
        ea = await EA.connect(http, srv, token)
        await ea.greet()
        await ea.send({"type": "positions", "ts": 5, "positions": []})  # position 1 closed while we were down
        sql = "SELECT position_id, event, source FROM position_events ORDER BY event"
        want = [(1, "CLOSE", "reconcile"), (1, "OPEN", "ea")]
        assert await until_rows(srv, sql, want) == want  # the reconcile write is not acked: wait for it
    finally:
        await srv.stop()


async def test_system_magic_trades_are_recorded(server, http):
    ea = await connect(http, server)
    await ea.send(position_event(1, pid=5, position=position(5, magic=7001)))
    await ea.send(position_event(2, pid=6, position=position(6, magic=1)))
    await ea.wait_ack(2)
    assert db_rows(server, "SELECT account, position_id FROM system_trades") == [("acc-1", 5)]


# --- bad input ------------------------------------------------------------------------------------
async def still_works(ea, seq, server):
    """After a bad input the session carries on: a valid durable message is stored and acked."""
    await ea.send(position_event(seq, pid=9000 + seq))
    await ea.wait_ack(seq)
    assert f"open-{9000 + seq}-{seq}" in await stored_ids(server)


@pytest.mark.parametrize(
    ("frame", "code", "needle"),
    [
        ('{"type": "account", "ts": 1, ', "bad_json", "JSON"),
        (json.dumps(account_state(balance="ten")), "invalid_message", "$.balance"),
        (json.dumps({"type": "ticks"}), "invalid_message", "ticks"),
        (json.dumps({"type": "orders"}), "unknown_type", "'orders'"),
        (json.dumps(account_state(account="acc-2")), "wrong_account", "acc-2"),
        (json.dumps(position_event(5, account="acc-2")), "wrong_account", "acc-2"),
    ],
)
async def test_bad_frames_get_a_named_error_and_the_session_carries_on(server, http, frame, code, needle):
    ea = await connect(http, server)
    await ea.send(frame)
    err = await ea.expect("error")
    assert err["code"] == code and needle in err["message"]
    await still_works(ea, 1, server)
    assert db_rows(server, "SELECT COUNT(*) FROM position_events WHERE account = 'acc-2'") == [(0,)]


async def test_message_before_hello_is_refused_then_hello_works(server, http):
    ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
    await ea.send(position_event(1))
    err = await ea.expect("error")
    assert err["code"] == "hello_required" and err["ref"] == "open-1001-1"
    assert await stored_ids(server) == []
    await ea.greet()
    await still_works(ea, 1, server)


async def test_a_second_hello_on_one_session_does_not_keep_the_account_live_after_it_ends(server, http):
    """Each hello counted a session and the session's end uncounted one: an EA that said hello again on the
    same connection (to refresh its broker offset, say) left its account "live" for good, never lost."""
    ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
    await ea.greet()
    await ea.greet()
    await ea.ws.close()
    view = server.hub.state.accounts["acc-1"]
    for _ in range(100):
        if view.sessions == 0:
            break
        await asyncio.sleep(0.02)
    assert view.sessions == 0 and view.status(server.hub.clock(), server.hub.state.http_live_ms) == "lost"


async def test_a_hello_from_another_login_is_refused_and_knocks_nobody_off(server, http):
    """A terminal switched to another login with the EA attached (or a second terminal on the token): its
    hello is refused, closed 4003; and the account's own session, connected meanwhile, is left alone (the
    newer session used to replace it at the upgrade, before its hello was read)."""
    token = await issue_token(server, "acc-1")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    switched = await EA.connect(http, server, token)
    await switched.send(hello(login=999001))
    err = await switched.expect("error")
    assert err["code"] == "login_changed" and err["ref"] == "hello" and "5123456" in err["message"]
    msg = await switched.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003
    view = server.hub.state.accounts["acc-1"]
    assert view.info.login == 5123456 and view.sessions == 1
    await still_works(ea, 1, server)  # not replaced: its frames are still taken and acked


async def test_duplicate_id_with_another_seq_is_refused_and_acked(server, http):
    ea = await connect(http, server)
    await ea.send(position_event(1, msg_id="dup"))
    await ea.wait_ack(1)
    await ea.send(position_event(2, "MODIFY", msg_id="dup"))
    err = await ea.expect("error")
    assert err["code"] == "duplicate_id" and err["ref"] == "dup" and "seq 1" in err["message"]
    assert (await ea.wait_ack(2))["seq"] == 2  # done with: the EA must not resend it
    assert db_rows(server, "SELECT COUNT(*) FROM position_events") == [(1,)]
    await still_works(ea, 3, server)


async def test_seq_going_backwards_is_refused(server, http):
    ea = await connect(http, server)
    await ea.send(position_event(5))
    await ea.wait_ack(5)
    await ea.send(position_event(3, pid=77))
    err = await ea.expect("error")
    assert err["code"] == "seq_not_increasing" and "seq 3" in err["message"] and "5" in err["message"]
    assert db_rows(server, "SELECT COUNT(*) FROM position_events WHERE position_id = 77") == [(0,)]
    await still_works(ea, 6, server)


async def test_bad_message_inside_a_batch_loses_nothing_else(server, http):
    ea = await connect(http, server)
    await ea.send([position_event(1, pid=1), {"type": "position", "seq": 2}, position_event(3, pid=3)])
    err = await ea.expect("error")
    assert err["index"] == 1 and err["code"] == "invalid_message"
    await ea.wait_ack(3)
    assert await stored_ids(server) == ["open-1-1", "open-3-3"]


def ticks(*quotes: tuple[str, float]) -> dict:
    return {"type": "ticks", "ticks": [{"symbol": s, "bid": bid, "ask": bid + 0.0002, "ts": 1} for s, bid in quotes]}


async def test_symbols_past_the_accounts_limit_are_refused_by_name_and_nothing_else_is(tmp_path, http):
    settings = make_settings(tmp_path)
    settings.limits.max_symbols_per_account = 2
    async with running(settings) as srv:
        sub = await Subscriber.connect(http, srv, await issue_key(srv))
        await sub.subscribe("p", "/trading/prices/*")
        ea = await connect(http, srv)
        await ea.send(ticks(("AAA", 1.0), ("BBB", 2.0)))
        # one message over the limit, next to a message that moves a known symbol: only the first is refused
        await ea.send([ticks(("CCC", 3.0), ("AAA", 1.5)), ticks(("BBB", 2.5)), position_event(1)])
        err = await ea.expect("error")
        assert (err["code"], err["ref"], err["index"]) == ("too_many_symbols", "ticks", 0)
        assert "'CCC'" in err["message"] and "max_symbols_per_account" in err["message"]
        await ea.wait_ack(1)
        for symbol, bid in [("AAA", 1.0), ("BBB", 2.0), ("AAA", 1.5), ("BBB", 2.5)]:
            assert (await sub.event(symbol=symbol, bid=bid))["symbol"] == symbol
        assert set(srv.hub.state.prices) == {"AAA", "BBB"}
        assert not [e for e in sub.inbox if e["type"] == "data" and "CCC" in e["event"]]
        # another account is not held to this one's symbols
        other = await connect(http, srv, "acc-2")
        await other.send(ticks(("CCC", 3.0)))
        assert (await sub.event(symbol="CCC"))["bid"] == 3.0
        assert not [m for m in other.inbox if m["type"] == "error"]


async def test_oversize_frame_closes_with_1009(tmp_path, http):
    srv = Server(make_settings(tmp_path, max_frame_bytes=4096))
    await srv.start()
    try:
        ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
        await ea.greet()
        await ea.send(json.dumps({"type": "heartbeat", "ts": 1, "pad": "x" * 5000}))
        msg = await ea.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
    finally:
        await srv.stop()


@pytest.mark.parametrize("token", [None, "twe_nope_nope", "revoked"])
async def test_bad_missing_or_revoked_token_closes_with_1008(server, http, token):
    if token == "revoked":
        token, info = await server.store.add_token("acc-1")
        await server.store.revoke_token(info.tokenId)
    ea = await EA.connect(http, server, token)
    msg = await ea.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert "token" in msg.extra


async def test_a_new_session_for_the_same_account_replaces_the_old(server, http):
    token = await issue_token(server, "acc-1")
    old = await EA.connect(http, server, token)
    await old.greet()
    new = await EA.connect(http, server, token)
    await new.greet()
    msg = await old.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4000
    await still_works(new, 1, server)


async def expect_store_down(ea, ref: str, seq: int, err: dict | None = None) -> None:
    """What an EA is told when message `seq` fails to commit: store_unavailable naming it (`err`, if the test
    already waited for it), close 1011, and no ack that would cover it."""
    err = err or await ea.expect("error")
    assert err["code"] == "store_unavailable" and err["ref"] == ref
    msg = await ea.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
    assert not [m for m in ea.inbox if m["type"] == "ack" and m["seq"] >= seq]


async def test_store_failure_acks_nothing_and_closes_1011_then_resend_is_stored(tmp_path, http):
    settings = make_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=200"
    async with running(settings) as srv:
        token = await issue_token(srv, "acc-1")
        ea = await EA.connect(http, srv, token)
        await ea.greet()
        with sqlite_locked(srv.store.path):
            await ea.send(position_event(1))
            await expect_store_down(ea, "open-1001-1", 1)
        ea = await EA.connect(http, srv, token)
        assert (await ea.greet())["ackedSeq"] == 0
        await ea.send(position_event(1))
        await ea.wait_ack(1)
        assert db_rows(srv, "SELECT msg_id FROM ea_inbox") == [("open-1001-1",)]


async def test_a_message_sent_after_one_whose_commit_failed_is_not_stored_past_it(tmp_path, http):
    """seq 2's group fails (the database is locked) and seq 3's group, next, would commit once the lock is
    gone: the welcome's ackedSeq would then be 3, and the EA would drop seq 2 for good. Seq 3 fails too."""
    settings = make_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=300"
    async with running(settings) as srv:
        token = await issue_token(srv, "acc-1")
        ea = await EA.connect(http, srv, token)
        await ea.greet()
        await ea.send(position_event(1, pid=1000))
        await ea.wait_ack(1)  # and with it whatever the hello queued before it (presence, alerts)
        with sqlite_locked(srv.store.path):
            await ea.send(position_event(2))  # its group waits for the lock, and fails at 300 ms
            await asyncio.sleep(0.1)
            await ea.send(position_event(3, pid=1002))  # the next group: it would get the lock at the release
            failed = await ea.expect("error")  # seq 2 failed while locked: released at once
        await expect_store_down(ea, "open-1001-2", 2, failed)
        ea = await EA.connect(http, srv, token)
        assert (await ea.greet())["ackedSeq"] == 1  # nothing past seq 2: the EA resends both
        await ea.send([position_event(2), position_event(3, pid=1002)])
        await ea.wait_ack(3)
        assert await stored_ids(srv) == ["open-1000-1", "open-1001-2", "open-1002-3"]


async def test_welcome_reports_the_highest_durable_seq(server, http):
    ea = await connect(http, server)
    await ea.send([position_event(s, pid=s) for s in (1, 2, 7)])
    await ea.wait_ack(7)
    await ea.close()
    ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
    welcome = await ea.greet(lastSeq=7)
    assert welcome["ackedSeq"] == 7 and welcome["heartbeatSec"] == 1 and welcome["sessionId"]


async def test_hello_for_another_account_is_refused(server, http):
    ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
    await ea.send(hello(account="acc-2"))
    err = await ea.expect("error")
    assert err["code"] == "wrong_account"


async def test_positions_past_the_accounts_limit_are_stored_but_left_out_of_the_live_list(tmp_path, http):
    """One EA's open positions cannot grow what every publication of its list costs without bound: past
    `max_positions_per_account` an OPEN is still stored and acked, but the live list leaves it out, and a
    snapshot over the limit is refused by name rather than cut (which would make positions look closed)."""
    settings = make_settings(tmp_path)
    settings.limits.max_positions_per_account = 2
    async with running(settings) as srv:
        key = await issue_key(srv)
        sub = await Subscriber.connect(http, srv, key)
        await sub.subscribe("pos", "/trading/positions/acc-1")
        ea = await connect(http, srv)

        async def live_ids() -> set[int]:
            async with http.get(srv.url + "/api/v1/positions?account=acc-1", headers={"x-api-key": key}) as r:
                return {p["id"] for p in (await r.json())["items"]}

        await ea.send([position_event(seq, pid=seq) for seq in (1, 2, 3)])
        await ea.wait_ack(3)
        assert db_rows(srv, "SELECT position_id FROM position_events WHERE event = 'OPEN' ORDER BY 1") == [
            (1,),
            (2,),
            (3,),
        ]
        assert await live_ids() == {1, 2}
        assert [p["id"] for p in (await sub.event(account="acc-1"))["positions"]] == [1, 2]

        await ea.send({"type": "positions", "ts": 1, "positions": [position(1), position(2), position(3)]})
        err = await ea.expect("error")
        assert (err["code"], err["ref"]) == ("too_many_positions", "positions")
        assert "3 open positions" in err["message"] and "max_positions_per_account (2)" in err["message"]
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
            assert "tradewire_ea_positions_left_out_total 2.0" in await r.text()

        # a close makes room; nothing about the limit touched the durable record or the session
        await ea.send([position_event(4, "CLOSE", pid=1), position_event(5, pid=4)])
        await ea.wait_ack(5)
        assert await live_ids() == {2, 4}
        assert not [e for e in sub.inbox if e["type"] == "data" and '"id":3' in e["event"].replace(" ", "")]
        await ea.close()
    # restarted, the hub seeds the live list from the store, which holds 2, 3 and 4 open: still two of them
    async with running(settings) as srv:
        ea = await connect(http, srv)
        key = await issue_key(srv)
        ids = await live_ids()
        assert len(ids) == 2 and ids < {2, 3, 4}
        async with http.get(srv.url + "/api/v1/metrics", headers={"x-api-key": key}) as r:
            assert "tradewire_ea_positions_left_out_total 1.0" in await r.text()


async def test_a_big_frame_takes_turns_with_the_rest_of_the_hub(server, http):
    """A frame of a thousand ticks is applied a slice at a time, the loop writing to subscribers in between:
    applied in one go, it held every delivery and every other EA until its end (a 1 MiB frame: ~10,000
    messages). Seen from a subscriber of a symbol the frame moves 1,000 times: values from the middle of the
    frame arrive, where one write after the whole frame would hold the last only."""
    sub = await Subscriber.connect(http, server, await issue_key(server))
    await sub.subscribe("p", "/trading/prices/EURUSD")
    ea = await connect(http, server)
    frame = [ticks(("EURUSD", 1.0 + n / 10_000)) for n in range(1, 1001)]
    await ea.send(frame)
    last = await sub.event(symbol="EURUSD", bid=1.1)  # the frame's last value
    seen = [json.loads(m["event"])["bid"] for m in sub.inbox if m["type"] == "data"]
    assert last["bid"] == 1.1 and len(set(seen)) >= 1000 // 128, seen


async def test_a_fleet_reconnecting_at_once_is_taken_in_turn_and_whole(server, http):
    """After a restart every EA comes back at once. Their upgrades take turns with every other set-up on the
    loop (realtime/turns.py, whose order test_realtime_turns.py checks): each is still welcomed and acked."""
    tokens = [await issue_token(server, f"acc-{i}") for i in range(30)]

    async def ea(i: int) -> int:
        client = await EA.connect(http, server, tokens[i])
        await client.greet()
        await client.send(position_event(1, pid=i + 1))
        ack = await client.wait_ack(1)
        await client.close()
        return ack["seq"]

    assert await asyncio.gather(*(ea(i) for i in range(30))) == [1] * 30
    assert [await stored_ids(server, f"acc-{i}") for i in range(30)] == [[f"open-{i + 1}-1"] for i in range(30)]


async def test_an_over_long_comment_is_cut_not_the_trade_refused(server, http):
    """Terminals allow 31 characters of comment; another client may send more. The position event is a
    durable record: it is stored and acked with its comment cut to 256 characters, never refused for it."""
    ea = await connect(http, server)
    await ea.send(position_event(1, position=position(1001, comment="x" * 300)))
    await ea.wait_ack(1)
    assert not [m for m in ea.inbox if m["type"] == "error"]
    (body,) = db_rows(server, "SELECT body FROM position_events WHERE position_id = 1001")[0]
    assert json.loads(body)["position"]["comment"] == "x" * 256


async def test_a_store_that_cannot_be_read_at_connect_or_hello_closes_1011_and_the_ea_comes_back(
    server, http, monkeypatch
):
    """The token lookup and the hello's reads (acked seq, open positions) fail as a commit can: the EA is
    closed 1011 (hello: with store_unavailable first), it retries, nothing is lost; not a traceback and 1001."""

    async def down(*_args):
        raise StoreError("injected: the store cannot be read")

    token = await issue_token(server, "acc-1")
    with monkeypatch.context() as patch:
        patch.setattr(server.store, "token_account", down)
        ea = await EA.connect(http, server, token)
        msg = await ea.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
    with monkeypatch.context() as patch:
        patch.setattr(server.store, "acked_seq", down)
        ea = await EA.connect(http, server, token)
        await ea.send(hello())
        err = await ea.expect("error")
        assert err["code"] == "store_unavailable" and err["ref"] == "hello"
        msg = await ea.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
    ea = await EA.connect(http, server, token)
    await ea.greet()
    await still_works(ea, 1, server)


async def test_a_drain_acks_all_of_a_big_frame_it_began_during(tmp_path, http):
    """A big frame is applied over several loop turns: a drain that began between two of them acked only
    what was queued by then, and closed 1001 with the rest committed but never acked."""
    srv = Server(make_settings(tmp_path))
    await srv.start()
    stopped = False
    try:
        token = await issue_token(srv, "acc-1")
        ea = await EA.connect(http, srv, token)
        await ea.greet()
        before = srv.hub.counters["messages"]
        await ea.send([position_event(s, pid=10_000 + s) for s in range(1, 1001)])
        while srv.hub.counters["messages"] == before:  # the frame is being applied, 128 messages a turn
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(srv.stop())
        acks = []
        while True:
            msg = await ea.ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if (data := json.loads(msg.data))["type"] == "ack":
                acks.append(data["seq"])
        await stopping
        stopped = True
        assert msg.data == 1001 and acks and acks[-1] == 1000, (msg, acks[-3:])
    finally:
        if not stopped:
            await srv.stop()
