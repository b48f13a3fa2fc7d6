"""Exactly-once rules for durable writes, as pure functions (sans-I/O).

A store fetches the few `Facts` an operation needs inside its transaction, asks `plan()` what to
write, and executes the `Plan`. Every engine therefore shares one definition of:
- an EA message id is stored once per account; a resend (same id, same seq) is a duplicate;
- a new durable message must carry a seq above every seq already stored for the account;
- each position has one OPEN and at most one CLOSE however it was learned (EA or reconcile);
  an EA-reported event fills in the details of a reconciled one;
- a CLOSE or MODIFY for a position with no OPEN on record implies that OPEN (source reconcile);
- a MODIFY of a position with a CLOSE on record is taken and not stored (an EA's backlog sent after the
  snapshot that closed it): the history does not go on after the CLOSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from tradewire.model import Alert, Position, PositionEvent, SystemTrade, new_alert, not_ahead
from tradewire.store.base import AlertAckOp, AlertResolveOp, EAErrorOp, EAPositionOp, ReconcileOp, WriteOp, WriteStatus


@dataclass(slots=True)
class Facts:
    inbox_seq: int | None = None  # seq stored under this EA message id, if any
    max_seq: int = 0  # highest seq stored for the account
    open_event: PositionEvent | None = None
    close_event: PositionEvent | None = None


@dataclass(slots=True)
class Plan:
    status: WriteStatus
    detail: str = ""
    inbox: tuple[str, int, str] | None = None  # (msg id, seq, kind) to record
    inserts: list[PositionEvent] = field(default_factory=list)
    updates: list[PositionEvent] = field(default_factory=list)  # replace the OPEN/CLOSE row of the same key
    system_trade: SystemTrade | None = None
    alert: Alert | None = None


def needs_position_facts(op: WriteOp) -> int | None:
    """The position id whose OPEN/CLOSE rows the plan needs, if any."""
    return (
        op.position.id if isinstance(op, ReconcileOp) else op.msg.position.id if isinstance(op, EAPositionOp) else None
    )


def is_open(op: WriteOp) -> bool:
    """An OPEN (EA or reconciled): the one position event whose plan needs no facts when none exist."""
    return (isinstance(op, EAPositionOp) and op.msg.event == "OPEN") or (
        isinstance(op, ReconcileOp) and op.event == "OPEN"
    )


def plan(op: WriteOp, facts: Facts, now: int) -> Plan:
    if isinstance(op, ReconcileOp):
        return _plan_reconcile(op, facts, now)
    refusal = _check_ea_message(op, facts)
    if refusal is not None:
        return refusal
    if isinstance(op, EAErrorOp):
        return _plan_error(op, now)
    return _plan_position(op, facts, now)


def _check_ea_message(op: EAPositionOp | EAErrorOp, facts: Facts) -> Plan | None:
    msg = op.msg
    if facts.inbox_seq is not None:
        if facts.inbox_seq == msg.seq:
            return Plan("duplicate", f"id {msg.id!r} already stored")
        return Plan(
            "conflict",
            f"id {msg.id!r} was already stored with seq {facts.inbox_seq}, not {msg.seq}; nothing stored",
        )
    if msg.seq <= facts.max_seq:
        return Plan(
            "seq_not_increasing",
            f"seq {msg.seq} is not above {facts.max_seq}, the highest seq already stored for this account",
        )
    return None


def _plan_error(op: EAErrorOp, now: int) -> Plan:
    msg = op.msg
    alert = new_alert(
        "SYSTEM_ERROR",
        msg.severity,
        op.account,
        f"EA error {msg.code}: {msg.message}",
        not_ahead(msg.ts or now, now),  # the alerts list is newest first: an EA's clock must not put its own first
        {"code": msg.code, "eaMessageId": msg.id, "seq": msg.seq},
    )
    return Plan("stored", inbox=(msg.id, msg.seq, "error"), alert=alert)


def _plan_position(op: EAPositionOp, facts: Facts, now: int) -> Plan:
    msg = op.msg
    result = Plan("stored", inbox=(msg.id, msg.seq, "position"))
    event = PositionEvent(
        account=op.account,
        positionId=msg.position.id,
        event=msg.event,
        ts=msg.ts,
        source="ea",
        position=msg.position,
        seq=msg.seq,
        msgId=msg.id,
        closePrice=msg.closePrice,
        profit=msg.profit,
        reason=msg.reason,
        system=op.system,
        recordedAt=now,
    )
    if msg.event == "MODIFY" and facts.close_event is not None:
        result.detail = f"position {msg.position.id} is closed: its MODIFY is not recorded"
        return result
    existing = facts.open_event if msg.event == "OPEN" else facts.close_event if msg.event == "CLOSE" else None
    if existing is not None:
        if existing.msgId is not None:
            # The EA reported this OPEN/CLOSE before under another id (e.g. it lost its outbox):
            # the position's one record stands; the message is taken, nothing new is stored.
            result.detail = f"{msg.event} of position {msg.position.id} already recorded"
            return result
        result.updates.append(event)  # fill in the details of the reconciled record
    else:
        result.inserts.append(event)
    if msg.event != "OPEN" and facts.open_event is None:
        result.inserts.insert(0, _implied_open(op.account, msg.position, op.system, now))
    if op.system and facts.open_event is None:
        result.system_trade = _system_trade(op.account, msg.position)
    return result


def _plan_reconcile(op: ReconcileOp, facts: Facts, now: int) -> Plan:
    existing = facts.open_event if op.event == "OPEN" else facts.close_event
    if existing is not None:
        return Plan("ignored", f"{op.event} of position {op.position.id} already recorded")
    result = Plan("stored")
    if op.event == "CLOSE" and facts.open_event is None:
        result.inserts.append(_implied_open(op.account, op.position, op.system, now))
    # An OPEN is dated when the position opened, as an implied one is: at the snapshot's time, a new account's
    # week-old positions were all "opened today" in /events?from&to.
    ts = op.position.openTime if op.event == "OPEN" and op.position.openTime > 0 else op.ts
    result.inserts.append(
        PositionEvent(
            account=op.account,
            positionId=op.position.id,
            event=op.event,
            ts=ts,
            source="reconcile",
            position=op.position,
            system=op.system,
            recordedAt=now,
        )
    )
    if op.system and facts.open_event is None:
        result.system_trade = _system_trade(op.account, op.position)
    return result


def _implied_open(account: str, position: Position, system: bool, now: int) -> PositionEvent:
    return PositionEvent(
        account=account,
        positionId=position.id,
        event="OPEN",
        ts=position.openTime,
        source="reconcile",
        position=position,
        system=system,
        recordedAt=now,
    )


def _system_trade(account: str, position: Position) -> SystemTrade:
    return SystemTrade(
        account=account,
        positionId=position.id,
        ticket=position.ticket if position.ticket is not None else position.id,
        symbol=position.symbol,
        side=position.side,
        volume=position.volume,
        magic=position.magic,
        executedAt=position.openTime,
    )


def change_alert(op: AlertResolveOp | AlertAckOp, current: Alert | None) -> tuple[WriteStatus, str, Alert | None]:
    """What resolving or acknowledging does: (status, detail, the alert to store or to report).

    `current` is the open alert of that (account, type) for a resolve, the alert with that id for an
    acknowledgement. Acknowledging a SYSTEM_ERROR also resolves it: an error has no recovery to wait for.
    """
    if current is None:
        missing = (
            f"no open {op.type} for {op.account}" if isinstance(op, AlertResolveOp) else f"no alert {op.alert_id!r}"
        )
        return "not_found", missing, None
    alert = msgspec.structs.replace(current)
    if isinstance(op, AlertResolveOp):
        alert.resolvedAt = op.at
        alert.data = {**(alert.data or {}), "resolution": op.message}
        return "stored", "", alert
    if current.ackedAt is not None:
        return "ignored", "already acknowledged", current
    alert.ackedAt, alert.ackedBy = op.at, op.by
    if alert.type == "SYSTEM_ERROR" and alert.resolvedAt is None:
        alert.resolvedAt = op.at
    return "stored", "", alert
