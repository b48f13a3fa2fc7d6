"""The agent's logic, sans-I/O: MetaTrader5 records in, protocol v1 messages out.

Everything here is a pure function of its arguments (or of an `Outbox`'s own state): the runner in
`runner.py` reads the terminal, the clock, the socket and the outbox file, and hands the values in.

* `position_wire`, `account_message`, `hello_message`, `tick_entry`: the package's named tuples
  (`TradePosition`, `AccountInfo`, `Tick`) as the protocol's objects. The package reports times in
  the broker's server time; they are turned into UTC milliseconds with the broker's offset.
* `diff_positions`: two snapshots (position id -> Position) into OPEN / MODIFY / CLOSE changes.
* `close_details`: a closed position's close price, profit and reason from its deals.
* `Outbox`: `seq`, every durable message not yet acked, and the last seen positions, with the
  protocol's rules: cumulative acks, resend after `welcome`, seq kept above the hub's `ackedSeq`.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

Wire = dict[str, Any]
_frame_encoder = msgspec.json.Encoder()
Event = Literal["OPEN", "MODIFY", "CLOSE"]

EA_NAME = "tradewire-agent"
OUTBOX_VERSION = 1

# Values of the MetaTrader5 package's constants (the MQL5 enums). `Constants.from_module` reads
# them from the real module where it defines them; these are only the fallbacks.
POSITION_TYPE_BUY = 0
DEAL_TYPE_BUY = 0
DEAL_ENTRY_IN, DEAL_ENTRY_OUT, DEAL_ENTRY_INOUT, DEAL_ENTRY_OUT_BY = 0, 1, 2, 3
ACCOUNT_STOPOUT_MODE_PERCENT = 0
_REASON_NAMES = {
    "DEAL_REASON_CLIENT": ("client", 0),
    "DEAL_REASON_MOBILE": ("mobile", 1),
    "DEAL_REASON_WEB": ("web", 2),
    "DEAL_REASON_EXPERT": ("expert", 3),
    "DEAL_REASON_SL": ("sl", 4),
    "DEAL_REASON_TP": ("tp", 5),
    "DEAL_REASON_SO": ("stopout", 6),
    "DEAL_REASON_ROLLOVER": ("rollover", 7),
    "DEAL_REASON_VMARGIN": ("vmargin", 8),
    "DEAL_REASON_SPLIT": ("split", 9),
}

# A change in any of these is a MODIFY; price, profit and swap move with every tick and are not.
TRACKED = ("side", "volume", "openPrice", "sl", "tp")
MAX_TZ_OFFSET_S = 14 * 3600


@dataclass(frozen=True, slots=True)
class Constants:
    position_type_buy: int = POSITION_TYPE_BUY
    deal_type_buy: int = DEAL_TYPE_BUY
    exit_entries: frozenset[int] = frozenset({DEAL_ENTRY_OUT, DEAL_ENTRY_INOUT, DEAL_ENTRY_OUT_BY})
    stopout_mode_percent: int = ACCOUNT_STOPOUT_MODE_PERCENT
    reasons: Mapping[int, str] = field(default_factory=lambda: {v: name for name, v in _REASON_NAMES.values()})

    @classmethod
    def from_module(cls, mt5: Any) -> Constants:
        def get(name: str, default: int) -> int:
            value = getattr(mt5, name, default)
            return value if isinstance(value, int) else default

        return cls(
            position_type_buy=get("POSITION_TYPE_BUY", POSITION_TYPE_BUY),
            deal_type_buy=get("DEAL_TYPE_BUY", DEAL_TYPE_BUY),
            exit_entries=frozenset(
                {
                    get("DEAL_ENTRY_OUT", DEAL_ENTRY_OUT),
                    get("DEAL_ENTRY_INOUT", DEAL_ENTRY_INOUT),
                    get("DEAL_ENTRY_OUT_BY", DEAL_ENTRY_OUT_BY),
                }
            ),
            stopout_mode_percent=get("ACCOUNT_STOPOUT_MODE_PERCENT", ACCOUNT_STOPOUT_MODE_PERCENT),
            reasons={get(const, value): name for const, (name, value) in _REASON_NAMES.items()},
        )


# --- time ---------------------------------------------------------------------------------------
def broker_ms_to_utc(broker_ms: int | float, tz_offset_sec: int) -> int:
    """A broker-time millisecond stamp (what the package reports) as UTC milliseconds."""
    return max(0, int(broker_ms) - tz_offset_sec * 1000)


def detect_tz_offset(broker_seconds: float, utc_seconds: float) -> int | None:
    """The broker's offset from UTC, from a fresh quote's broker time and the UTC clock.

    Offsets are whole quarter hours; a quote more than two minutes off a quarter hour is stale
    (market closed, symbol not quoting) and tells nothing: None.
    """
    diff = broker_seconds - utc_seconds
    offset = round(diff / 900) * 900
    if abs(offset) > MAX_TZ_OFFSET_S or abs(diff - offset) > 120:
        return None
    return int(offset)


@dataclass(slots=True)
class BrokerClock:
    """The broker's offset from UTC, as quotes show it. A quote's broker time is compared with the UTC clock
    (see `detect_tz_offset`), but a quote that stopped moving (market shut, a daily break, a quiet symbol)
    whose age happens to be near a whole quarter hour gives a wrong offset that looks right: only a quote
    seen moving since the last look is believed. A wrong offset shifts every time the agent reports.

    `source`: "fixed" (--tz-offset-sec: never changed), "saved" (the outbox file's, from an earlier run),
    "live" (from a moving quote), "guess" (from a quote not yet seen moving: used until a live one comes), or
    "none" (UTC, nothing better known). A live reading replaces a guess at once; once known, an offset changes
    (daylight saving) only when two live readings in a row say so.
    """

    offset: int = 0
    source: str = "none"
    # symbol -> (broker ms of its quote, UTC seconds) at the last look
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)
    # a different offset a live reading gave, and when: believed if a later look (not another symbol of the
    # same look) agrees
    pending: tuple[int, float] | None = None

    def observe(self, symbol: str, broker_ms: int, utc_seconds: float) -> bool:
        """Take one quote in; True when the offset changed."""
        last = self.seen.get(symbol)
        self.seen[symbol] = (broker_ms, utc_seconds)
        offset = detect_tz_offset(broker_ms / 1000, utc_seconds)
        if offset is None or self.source == "fixed" or broker_ms <= 0:
            return False
        if not self._moving(broker_ms, utc_seconds, last):
            if self.source != "none":
                return False
            self.offset, self.source = offset, "guess"
            return True
        if self.source in ("none", "guess") or offset == self.offset:
            changed = offset != self.offset
            self.offset, self.source, self.pending = offset, "live", None
            return changed
        if self.pending is not None and self.pending[0] == offset and utc_seconds - self.pending[1] >= 1.0:
            self.offset, self.source, self.pending = offset, "live", None
            return True
        if self.pending is None or self.pending[0] != offset:
            self.pending = (offset, utc_seconds)  # a live quote disagrees once: wait for a later look to agree
        return False

    @staticmethod
    def _moving(broker_ms: int, utc_seconds: float, last: tuple[int, float] | None) -> bool:
        """The quote moved forward since the last look, by no more than the time that passed (a few seconds'
        slack): a quote that first reads 0 (just selected) and then a stale time has changed, not moved; and
        the reading that straddles a daylight-saving jump is not believed (the next ones are)."""
        if last is None:
            return False
        advanced_ms = broker_ms - last[0]
        return 0 < advanced_ms <= (utc_seconds - last[1]) * 1000 + 5000


# --- records -> protocol objects -----------------------------------------------------------------
def _num(value: Any) -> float:
    return float(value or 0.0)


def position_wire(p: Any, tz_offset_sec: int, commission: float = 0.0, consts: Constants = Constants()) -> Wire:
    """A `TradePosition` as the protocol's Position, keyed by its POSITION_IDENTIFIER."""
    return {
        "id": int(p.identifier),
        "ticket": int(p.ticket),
        "symbol": str(p.symbol),
        "side": "buy" if int(p.type) == consts.position_type_buy else "sell",
        "volume": _num(p.volume),
        "openPrice": _num(p.price_open),
        "price": _num(p.price_current),
        "sl": _num(p.sl),
        "tp": _num(p.tp),
        "profit": _num(p.profit),
        "swap": _num(p.swap),
        "commission": round(commission, 8),
        "magic": int(p.magic),
        "comment": str(p.comment or "")[:256],
        "openTime": broker_ms_to_utc(p.time_msc or int(p.time) * 1000, tz_offset_sec),
    }


def account_message(info: Any, ts: int, consts: Constants = Constants()) -> Wire:
    """An `AccountInfo` as an `account` message; margin level is null while no margin is used."""
    margin = _num(info.margin)
    return {
        "type": "account",
        "ts": ts,
        "balance": _num(info.balance),
        "equity": _num(info.equity),
        "margin": margin,
        "freeMargin": _num(info.margin_free),
        "marginLevel": _num(info.margin_level) if margin > 0 else None,
        "marginCallLevel": _num(info.margin_so_call),
        "stopOutLevel": _num(info.margin_so_so),
        "marginMode": "percent" if int(info.margin_so_mode) == consts.stopout_mode_percent else "money",
    }


def hello_message(info: Any, tz_offset_sec: int, last_seq: int, version: str) -> Wire:
    return {
        "type": "hello",
        "platform": "agent",
        "login": int(info.login),
        "server": str(info.server)[:128],
        "broker": str(info.company or "")[:128],
        "currency": str(info.currency)[:16],
        "leverage": int(info.leverage),
        "ea": {"name": EA_NAME, "version": version},
        "tzOffsetSec": tz_offset_sec,
        "lastSeq": last_seq,
    }


def tick_entry(symbol: str, tick: Any, tz_offset_sec: int) -> Wire | None:
    """A `Tick` as a ticks entry; None for a missing quote or a 0 price (terminal offline)."""
    if tick is None or _num(tick.bid) <= 0 or _num(tick.ask) <= 0:
        return None
    ts = broker_ms_to_utc(tick.time_msc or int(tick.time) * 1000, tz_offset_sec)
    return {"symbol": symbol, "bid": _num(tick.bid), "ask": _num(tick.ask), "ts": ts}


def positions_message(positions: Iterable[Wire], ts: int) -> Wire:
    return {"type": "positions", "ts": ts, "positions": list(positions)}


def ticks_message(ticks: list[Wire]) -> Wire:
    return {"type": "ticks", "ticks": ticks}


def heartbeat_message(ts: int) -> Wire:
    return {"type": "heartbeat", "ts": ts}


# --- snapshot diffing ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    event: Event
    position: Wire
    reason: str | None = None


def diff_positions(known: Mapping[int, Wire], current: Mapping[int, Wire]) -> list[Change]:
    """What happened between two snapshots: OPEN for a new id, MODIFY for a tracked field that
    changed (a smaller volume is a partial close), CLOSE for an id that is gone. CLOSEs carry the
    last known state; the caller fills in the close details from the deals."""
    changes: list[Change] = []
    for pid, pos in current.items():
        before = known.get(pid)
        if before is None:
            changes.append(Change("OPEN", pos))
        elif any(before.get(k) != pos.get(k) for k in TRACKED):
            changes.append(Change("MODIFY", pos, _modify_reason(before, pos)))
    changes.extend(Change("CLOSE", pos) for pid, pos in known.items() if pid not in current)
    return changes


def _modify_reason(before: Wire, after: Wire) -> str | None:
    if before.get("side") != after.get("side"):
        return "reversal"  # netting account: an opposite deal larger than the position
    if after.get("volume", 0) < before.get("volume", 0):
        return "partial"
    if after.get("volume", 0) > before.get("volume", 0):
        return "add"
    return None  # SL/TP edit


@dataclass(frozen=True, slots=True)
class CloseDetails:
    close_price: float
    profit: float
    reason: str
    ts: int  # UTC ms of the last exit deal
    commission: float
    swap: float


def close_details(
    deals: Iterable[Any] | None,
    position_id: int,
    tz_offset_sec: int,
    consts: Constants = Constants(),
    *,
    settled: bool = True,
) -> CloseDetails | None:
    """Close price, realised profit and reason of a closed position from its `TradeDeal`s.

    Profit is the sum of every exit deal's profit (partial closes included), the close price and
    reason are the last exit deal's. None while the history holds no exit deal for it yet, and (with
    `settled`) while its deals do not net to zero volume: an earlier partial close's exit deal is in the
    history before the final one is, and its price and reason are not the close's.
    """
    mine = [d for d in deals or () if int(d.position_id) == position_id]
    exits = [d for d in mine if int(d.entry) in consts.exit_entries]
    if not exits or (settled and not _nets_to_zero(mine, consts)):
        return None
    last = max(exits, key=lambda d: (int(d.time_msc or int(d.time) * 1000), int(d.ticket)))
    return CloseDetails(
        close_price=_num(last.price),
        profit=round(sum(_num(d.profit) for d in exits), 8),
        reason=consts.reasons.get(int(last.reason), "other"),
        ts=broker_ms_to_utc(last.time_msc or int(last.time) * 1000, tz_offset_sec),
        commission=round(sum(_num(d.commission) + _num(getattr(d, "fee", 0.0)) for d in mine), 8),
        swap=round(sum(_num(d.swap) for d in mine), 8),
    )


def _nets_to_zero(deals: list[Any], consts: Constants) -> bool:
    """A position's deals, buys counted up and sells down, cancel out: it was closed in full. This holds for
    entries, exits, close-by and (netting) reversals alike, whatever their entry kind."""
    net = sum(_num(d.volume) if int(d.type) == consts.deal_type_buy else -_num(d.volume) for d in deals)
    return abs(net) < 1e-6


def missed_positions(
    deals: Iterable[Any] | None,
    after_ticket: int,
    seen: Container[int],
    consts: Constants,
    closed: Container[int] = (),
    unsettled: Iterable[int] = (),
) -> tuple[list[int], list[int]]:
    """Positions opened and closed between two looks at the terminal (within a poll, or while the agent was
    stopped): ids with a deal newer than `after_ticket` (or among `unsettled`) that neither `seen` (the
    positions the snapshots showed) nor `closed` (reported already) holds. Returns (those whose deals net
    to zero, oldest first: closed in full; the others: to look at again, their closing deal may be late)."""
    mine: dict[int, list[Any]] = {}
    fresh: set[int] = set(unsettled)
    for d in deals or ():
        pid = int(d.position_id)
        if not pid or pid in seen or pid in closed:
            continue  # balance and credit deals have no position; a seen one the snapshots report
        mine.setdefault(pid, []).append(d)
        if int(d.ticket) > after_ticket:
            fresh.add(pid)
    missed, pending = [], []
    for pid in fresh:
        if pid not in mine:
            continue
        if _nets_to_zero(mine[pid], consts) and _entry_deal(mine[pid], consts) is not None:
            missed.append(pid)
        else:
            pending.append(pid)
    missed.sort(key=lambda pid: min(int(d.ticket) for d in mine[pid]))
    return missed, pending


def _entry_deal(deals: list[Any], consts: Constants) -> Any | None:
    entries = [d for d in deals if int(d.entry) not in consts.exit_entries]
    return min(entries, key=lambda d: int(d.ticket)) if entries else None


def position_from_deals(
    deals: Iterable[Any], position_id: int, tz_offset_sec: int, consts: Constants = Constants()
) -> Wire | None:
    """The Position an OPEN reports for a position never seen open: from its entry deal (SL and TP unknown)."""
    mine = [d for d in deals if int(d.position_id) == position_id]
    entry = _entry_deal(mine, consts)
    if entry is None:
        return None
    opened = broker_ms_to_utc(entry.time_msc or int(entry.time) * 1000, tz_offset_sec)
    return {
        "id": position_id,
        "ticket": position_id,
        "symbol": str(entry.symbol),
        "side": "buy" if int(entry.type) == consts.deal_type_buy else "sell",
        "volume": _num(entry.volume),
        "openPrice": _num(entry.price),
        "price": _num(entry.price),
        "sl": 0.0,
        "tp": 0.0,
        "profit": 0.0,
        "swap": 0.0,
        "commission": round(_num(entry.commission) + _num(getattr(entry, "fee", 0.0)), 8),
        "magic": int(entry.magic),
        "comment": str(entry.comment or "")[:256],
        "openTime": opened,
    }


def closed_position(last_seen: Wire, details: CloseDetails | None) -> Wire:
    """The Position a CLOSE carries: its last seen state, valued at the close when the deals say how."""
    if details is None:
        return dict(last_seen)
    return {
        **last_seen,
        "price": details.close_price,
        "profit": details.profit,
        "commission": details.commission,
        "swap": details.swap,
    }


def commission_of(deals: Iterable[Any] | None, position_id: int) -> float:
    """Commission and fees paid so far on a position (MT5 keeps them on deals, not positions)."""
    total = sum(_num(d.commission) + _num(getattr(d, "fee", 0.0)) for d in deals or () if d.position_id == position_id)
    return round(total, 8)


# --- frames -----------------------------------------------------------------------------------------
Frame = tuple[bytes, list[Wire]]  # a frame's JSON, and the messages in it


def pack_frames(messages: list[Wire], max_messages: int, max_bytes: int | None = None) -> list[Frame]:
    """Messages into frames, in order: (the frame's JSON, its messages). A frame holds one message alone, or an
    array of at most `max_messages`, and (with `max_bytes`) at most that many bytes unless one message alone
    is larger (it goes alone: the caller decides whether to send it)."""
    frames: list[Frame] = []
    batch: list[tuple[bytes, Wire]] = []
    size = 1  # the array's brackets, and its commas, counted as each message joins

    def close() -> None:
        if batch:
            encoded = [e for e, _ in batch]
            text = encoded[0] if len(encoded) == 1 else b"[" + b",".join(encoded) + b"]"
            frames.append((text, [m for _, m in batch]))

    for msg in messages:
        encoded = _frame_encoder.encode(msg)
        full = len(batch) >= max_messages or (max_bytes is not None and size + len(encoded) + 1 > max_bytes)
        if batch and full:
            close()
            batch, size = [], 1
        batch.append((encoded, msg))
        size += len(encoded) + 1
    close()
    return frames


# --- the outbox -----------------------------------------------------------------------------------
def message_id(event: str, position_id: int, seq: int) -> str:
    """Unique per account: the seq makes it so. Same rule as the MQL EAs."""
    return f"{event.lower()}-{position_id}-{seq}"


def renumbered(msg: Wire, seq: int) -> Wire:
    """`msg` under another seq, and the id that goes with it (an error message has no position)."""
    if msg.get("type") == "error":
        return {**msg, "seq": seq, "id": f"error-{seq}"}
    return {**msg, "seq": seq, "id": message_id(msg["event"], msg["position"]["id"], seq)}


@dataclass
class Outbox:
    """Durable state the agent keeps across restarts: `seq`, every unacked durable message (by seq,
    ascending) and the positions last seen (so that a restart diffs against what was reported).

    `synced` turns true at the first welcome. Until then nothing was ever sent, so the seqs given
    out are provisional: a fresh outbox (first run, or its file lost) cannot know the hub's seq.
    """

    seq: int = 0
    pending: dict[int, Wire] = field(default_factory=dict)
    known: dict[int, Wire] = field(default_factory=dict)
    synced: bool = False
    tz: int | None = None  # the broker's UTC offset last read from a moving quote: a restart's first guess
    # The newest deal ticket the history scan has looked at: a position with a newer deal that the snapshots
    # never showed was opened and closed between two looks (missed_positions). None: not scanned yet.
    deal_ticket: int | None = None
    deal_scanned_at: float | None = None  # when it last scanned (UTC seconds): where the next scan starts
    # Seqs given out by this process and not handed to a connection yet (not saved: a message read from the
    # file may have been sent before a crash). The hub cannot hold one of these, whatever its ackedSeq says.
    unsent: set[int] = field(default_factory=set)

    def add(self, change: Change, ts: int, details: CloseDetails | None = None) -> Wire:
        """Turn a change into a durable `position` message with the next seq, kept until acked."""
        self.seq += 1
        msg: Wire = {
            "type": "position",
            "seq": self.seq,
            "id": message_id(change.event, change.position["id"], self.seq),
            "event": change.event,
            "ts": ts,
            "position": change.position,
        }
        if details is not None:
            msg["ts"] = details.ts or ts
            msg["closePrice"] = details.close_price
            msg["profit"] = details.profit
            msg["reason"] = details.reason
        elif change.reason is not None:
            msg["reason"] = change.reason
        self.pending[self.seq] = msg
        self.unsent.add(self.seq)
        return msg

    def add_error(self, code: str, message: str, ts: int, severity: str = "HIGH") -> Wire:
        """A durable `error` message (the hub raises SYSTEM_ERROR for it), like the MQL EAs' EmitError."""
        self.seq += 1
        msg: Wire = {
            "type": "error",
            "seq": self.seq,
            "id": f"error-{self.seq}",
            "code": code,
            "message": message[:2000],
            "ts": ts,
            "severity": severity,
        }
        self.pending[self.seq] = msg
        self.unsent.add(self.seq)
        return msg

    def ack(self, seq: int) -> int:
        """Cumulative ack: drop every pending message with seq <= `seq`; how many were dropped."""
        done = [s for s in self.pending if s <= seq]
        for s in done:
            del self.pending[s]
            self.unsent.discard(s)
        return len(done)

    def on_welcome(self, acked_seq: int) -> list[Wire]:
        """Apply the hub's `ackedSeq` and return what must be resent, in seq order.

        Pending messages are renumbered above `ackedSeq` when they were never sent (a fresh outbox's
        first welcome) or when the hub is ahead of us (it holds messages of an earlier life of this
        account's outbox): numbered as they are, the hub would take them for acked ones, or refuse
        them as `seq_not_increasing`, and they would be lost. Otherwise acks are cumulative, except for
        messages this process made and never sent: an ackedSeq that covers one means its seq was given
        out before (the file's last save failed, then a crash: the hub acked seqs the file never held), and
        they move above it with whatever follows them.
        """
        renumber = acked_seq > self.seq or (not self.synced and acked_seq > 0)
        self.synced = True
        if not renumber:
            for seq in [s for s in self.pending if s <= acked_seq and s not in self.unsent]:
                del self.pending[seq]  # acked
            renumber = any(s <= acked_seq for s in self.pending)
        if renumber:
            moved: dict[int, Wire] = {}
            seq = acked_seq
            for msg in self.pending.values():
                seq += 1
                moved[seq] = renumbered(msg, seq)
            self.pending = moved
            self.unsent = set(moved)
            self.seq = max(self.seq, seq)
        return list(self.pending.values())

    def after(self, seq: int) -> list[Wire]:
        """Pending messages above `seq`, ascending: what a connection has not sent yet."""
        return [msg for s, msg in self.pending.items() if s > seq]

    def unanswered(self, sent: int) -> bool:
        """Whether a message this connection sent (seq <= `sent`) still waits for its ack."""
        return bool(self.pending) and next(iter(self.pending)) <= sent

    def next_frame(self, sent: int, limit: int, max_bytes: int | None = None) -> list[Wire]:
        """The next durable frame for a connection that has sent up to `sent`: nothing while an earlier
        one is unanswered. One frame at a time because an ack is cumulative: were two in flight, and the
        hub ran them out of order (API Gateway runs a connection's frames as concurrent Lambda calls),
        the later one's ack would cover the earlier one before it was stored, or at all. With `max_bytes`
        (API Gateway's frame limit), as many as fit in that many bytes (always one at least)."""
        if self.unanswered(sent):
            return []
        messages = self.after(sent)[:limit]
        if max_bytes is not None and messages:
            messages = messages[: len(pack_frames(messages, limit, max_bytes)[0][1])]
        self.unsent.difference_update(msg["seq"] for msg in messages)
        return messages

    def refuse(self, msg_id: str) -> Wire | None:
        """Drop a pending message the hub refused for good (an error naming its id); None if not pending.
        It would be refused again on every resend, holding up every message after it."""
        for seq, msg in self.pending.items():
            if msg.get("id") == msg_id:
                del self.pending[seq]
                self.unsent.discard(seq)
                return msg
        return None

    # --- persistence format (the runner does the file I/O) ----------------------------------
    def dumps(self) -> bytes:
        data = {
            "version": OUTBOX_VERSION,
            "seq": self.seq,
            "synced": self.synced,
            "pending": list(self.pending.values()),
            "known": list(self.known.values()),
            "tzOffsetSec": self.tz,
            "dealTicket": self.deal_ticket,
            "dealScannedAt": self.deal_scanned_at,
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> Outbox:
        """Parse an outbox file; ValueError naming the problem when it is not one."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != OUTBOX_VERSION:
            raise ValueError(f"not a version {OUTBOX_VERSION} tradewire agent outbox")
        try:
            seq = int(data["seq"])
            synced = bool(data.get("synced", False))
            pending = {int(m["seq"]): m for m in data["pending"]}
            known = {int(p["id"]): p for p in data["known"]}
            tz = data.get("tzOffsetSec")
            tz = int(tz) if tz is not None and abs(int(tz)) <= MAX_TZ_OFFSET_S else None
            deal_ticket = data.get("dealTicket")
            deal_ticket = int(deal_ticket) if deal_ticket is not None else None
            scanned_at = data.get("dealScannedAt")
            scanned_at = float(scanned_at) if scanned_at is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed outbox: {exc!r}") from None
        if pending and max(pending) > seq:
            seq = max(pending)
        return cls(
            seq=seq,
            pending=dict(sorted(pending.items())),
            known=known,
            synced=synced,
            tz=tz,
            deal_ticket=deal_ticket,
            deal_scanned_at=scanned_at,
        )
