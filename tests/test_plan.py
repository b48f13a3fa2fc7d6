"""Exactly-once rules for durable writes (pure): one OPEN, at most one CLOSE, ids stored once."""

from tradewire.ingest.protocol import ErrorMsg, PositionMsg
from tradewire.model import Position, PositionEvent
from tradewire.store.base import EAErrorOp, EAPositionOp, ReconcileOp
from tradewire.store.plan import Facts, plan

POS = Position(id=9, symbol="XAUUSD", side="sell", volume=0.2, openPrice=2400.5, openTime=100, magic=7001)


def ea(event, seq=5, msg_id="m5", system=False, **kw):
    return EAPositionOp("a", PositionMsg(seq=seq, id=msg_id, event=event, ts=200, position=POS, **kw), system)


def recorded(event, source="reconcile", msg_id=None):
    return PositionEvent(account="a", positionId=9, event=event, ts=1, source=source, position=POS, msgId=msg_id)


def test_new_open_is_inserted_with_its_inbox_entry():
    p = plan(ea("OPEN"), Facts(), now=1)
    assert p.status == "stored" and p.inbox == ("m5", 5, "position")
    assert [(e.event, e.source) for e in p.inserts] == [("OPEN", "ea")]


def test_resend_with_same_id_and_seq_is_a_duplicate_and_writes_nothing():
    p = plan(ea("OPEN"), Facts(inbox_seq=5, max_seq=5), now=1)
    assert p.status == "duplicate" and p.inbox is None and not p.inserts and not p.updates


def test_same_id_with_another_seq_is_a_conflict():
    p = plan(ea("OPEN", seq=8), Facts(inbox_seq=5, max_seq=5), now=1)
    assert p.status == "conflict" and "seq 5" in p.detail and not p.inserts


def test_new_id_with_a_seq_that_goes_backwards_is_refused():
    p = plan(ea("OPEN", seq=3, msg_id="new"), Facts(max_seq=7), now=1)
    assert p.status == "seq_not_increasing" and "3" in p.detail and "7" in p.detail
    assert p.inbox is None and not p.inserts


def test_ea_open_fills_in_a_reconciled_open():
    p = plan(ea("OPEN"), Facts(open_event=recorded("OPEN")), now=1)
    assert p.status == "stored" and not p.inserts
    [upd] = p.updates
    assert upd.source == "ea" and upd.msgId == "m5" and upd.event == "OPEN"


def test_a_second_ea_open_under_another_id_stores_no_second_open():
    p = plan(ea("OPEN", seq=6, msg_id="m6"), Facts(max_seq=5, open_event=recorded("OPEN", "ea", "m5")), now=1)
    assert p.status == "stored" and not p.inserts and not p.updates
    assert p.inbox == ("m6", 6, "position")  # the id is still remembered: its resend is a duplicate


def test_close_without_any_open_on_record_implies_the_open():
    p = plan(ea("CLOSE", closePrice=2390.0, profit=20.0, reason="tp"), Facts(), now=1)
    assert [(e.event, e.source) for e in p.inserts] == [("OPEN", "reconcile"), ("CLOSE", "ea")]
    assert p.inserts[0].ts == POS.openTime
    assert p.inserts[1].profit == 20.0


def test_modify_is_appended_each_time():
    p = plan(ea("MODIFY"), Facts(open_event=recorded("OPEN", "ea", "m1")), now=1)
    assert [e.event for e in p.inserts] == ["MODIFY"]


def test_reconcile_is_ignored_when_the_event_is_on_record():
    assert plan(ReconcileOp("a", "OPEN", POS, 1, False), Facts(open_event=recorded("OPEN")), 1).status == "ignored"
    assert plan(ReconcileOp("a", "CLOSE", POS, 1, False), Facts(close_event=recorded("CLOSE")), 1).status == "ignored"


def test_reconcile_close_without_open_records_both():
    p = plan(ReconcileOp("a", "CLOSE", POS, 50, False), Facts(), 1)
    assert [(e.event, e.source) for e in p.inserts] == [("OPEN", "reconcile"), ("CLOSE", "reconcile")]


def test_system_trade_recorded_once_with_the_first_open():
    assert plan(ea("OPEN", system=True), Facts(), 1).system_trade.magic == 7001
    assert plan(ea("MODIFY", system=True), Facts(open_event=recorded("OPEN")), 1).system_trade is None
    assert plan(ReconcileOp("a", "OPEN", POS, 1, True), Facts(), 1).system_trade.positionId == 9
    assert plan(ea("OPEN", system=False), Facts(), 1).system_trade is None


def test_ea_error_becomes_a_system_error_alert():
    op = EAErrorOp("a", ErrorMsg(seq=2, id="e2", code="TRADE_DISABLED", message="trading off", severity="CRITICAL"))
    p = plan(op, Facts(), now=77)
    assert p.status == "stored" and p.inbox == ("e2", 2, "error")
    assert p.alert.type == "SYSTEM_ERROR" and p.alert.severity == "CRITICAL" and "TRADE_DISABLED" in p.alert.message
    assert p.alert.raisedAt == 77


def test_an_ea_errors_alert_is_not_dated_ahead_of_the_hubs_clock():
    """The alerts list is newest first: errors dated in the year 2100 would have stood above every other
    account's alerts for good (and filled the dashboard's page of them)."""
    now = 1_732_184_100_000
    dated = {"late": now - 60_000, "future": 4_102_444_800_000}
    for name, ts in dated.items():
        op = EAErrorOp("a", ErrorMsg(seq=2, id=f"e-{name}", code="X", message="x", ts=ts))
        raised = plan(op, Facts(), now=now).alert.raisedAt
        assert raised == (ts if name == "late" else now + 1_000)


def test_a_modify_of_a_closed_position_is_taken_and_not_stored():
    """An EA's backlog after the snapshot that closed the position: the history does not go on past the CLOSE;
    the message is taken (its id and seq recorded, so a resend is a duplicate), nothing else."""
    p = plan(ea("MODIFY"), Facts(open_event=recorded("OPEN"), close_event=recorded("CLOSE")), now=1)
    assert p.status == "stored" and p.inbox == ("m5", 5, "position")
    assert not p.inserts and not p.updates and "closed" in p.detail


def test_a_reconciled_open_is_dated_when_the_position_opened():
    """Dated at the snapshot, a new account's week-old positions were all "opened today" in /events?from&to."""
    [opened] = plan(ReconcileOp("a", "OPEN", POS, 5_000, False), Facts(), now=9).inserts
    assert opened.ts == POS.openTime == 100
    [closed] = plan(ReconcileOp("a", "CLOSE", POS, 5_000, False), Facts(open_event=recorded("OPEN")), now=9).inserts
    assert closed.ts == 5_000  # a CLOSE found by a snapshot: when it was found
