"""The live cache: latest account state, open positions, prices and connection status. Pure, no I/O.

Everything here is volatile (latest wins, never written to disk). What it does decide is which
position OPEN / CLOSE events a snapshot implies, so that the caller can record them durably.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import msgspec

from tradewire.model import AccountInfo, AccountState, ConnectionStatus, Position, Tick, not_ahead

Transport = Literal["ws", "http"]
SERIES_BUCKET_MS = 60_000  # one equity/balance point a minute ...
SERIES_POINTS = 24 * 60  # ... for 24 hours
VOLUME_DIGITS = 8  # sums of lots rounded off float noise only: brokers trade steps of 0.001 lots (and less)
CLOSED_REMEMBERED = 1_000  # per account: the newest positions known closed, so that a late OPEN or MODIFY of
# one (an EA's backlog sent after the snapshot that closed it) does not show it open again
SNAPSHOT_REORDER_MS = 60_000  # a snapshot older than the last one applied by less than this came late: ignored


class EquitySeries:
    """One (ts, equity, balance) point per bucket, the last SERIES_POINTS of them, in flat arrays.

    24 bytes a point: a day is 35 KB per account (at most 25 % more between trims). A deque of tuples
    took ~150 bytes a point (tracemalloc: 221 KiB per account-day), so 24 h of a 10,000-account fleet
    would have held 2 GB. Appending is amortised O(1): the oldest quarter is cut off in one move.
    """

    __slots__ = ("balance", "equity", "ts")
    TRIM_AT = SERIES_POINTS + SERIES_POINTS // 4

    def __init__(self) -> None:
        self.ts = array("q")
        self.equity = array("d")
        self.balance = array("d")

    def add(self, bucket: int, equity: float, balance: float) -> None:
        ts = self.ts
        if ts and ts[-1] == bucket:  # the bucket keeps its latest value
            self.equity[-1], self.balance[-1] = equity, balance
            return
        if len(ts) >= self.TRIM_AT:
            cut = len(ts) - SERIES_POINTS + 1
            del ts[:cut], self.equity[:cut], self.balance[:cut]
        ts.append(bucket)
        self.equity.append(equity)
        self.balance.append(balance)

    def __len__(self) -> int:
        return min(len(self.ts), SERIES_POINTS)

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        start = len(self.ts) - len(self)
        return zip(self.ts[start:], self.equity[start:], self.balance[start:], strict=True)


@dataclass(slots=True)
class AccountView:
    id: str
    info: AccountInfo | None = None
    state: AccountState | None = None
    positions: dict[int, Position] = field(default_factory=dict)
    positions_known: bool = False  # seeded from the store or from a snapshot: diffs are meaningful
    # Open positions left out of `positions` (the account was at its limit), at most as many again: known,
    # so that a snapshot without one records its CLOSE. Not kept in the AWS account item.
    left_out: dict[int, Position] = field(default_factory=dict)
    closed: dict[int, None] = field(default_factory=dict)  # ids with a CLOSE on record, oldest first (bounded)
    snapshot_ts: int = 0  # the EA's clock: the newest positions snapshot applied
    sessions: int = 0  # open WebSocket sessions for this account
    transport: Transport | None = None
    connected_at: int | None = None
    last_seen: int = 0  # server clock, ms: any message
    updated_at: int = 0  # server clock, ms: account or positions changed
    ever_connected: bool = False
    # Recent past for charts, volatile as the brief wants: one (ts, equity, balance) point per bucket.
    # Empty until the first account update (idle EAs are many).
    equity_series: EquitySeries | tuple[()] = ()
    # This account's own feed: when each symbol's bid/ask last moved in ITS ticks. Another broker's
    # EURUSD moving says nothing about whether this terminal still gets prices.
    quotes: dict[str, tuple[float, float]] = field(default_factory=dict)
    price_changed: dict[str, int] = field(default_factory=dict)
    # Symbols whose quote has not changed since this process first saw it: a first tick is no sign that the
    # feed moves (after a restart a frozen symbol's first tick resolved its STALE_DATA as "moving again").
    unmoved: set[str] = field(default_factory=set)

    def status(self, now: int, http_live_ms: int) -> ConnectionStatus:
        if self.sessions > 0:
            return "live"
        if self.transport == "http" and now - self.last_seen <= http_live_ms:
            return "live"
        return "lost" if self.ever_connected else "never"


@dataclass(slots=True)
class Reconciliation:
    """Position changes a snapshot revealed that no durable event had told us about."""

    opened: list[Position]
    closed: list[Position]
    refused: int = 0  # > 0: a snapshot of this many positions, over the account's limit, was not applied
    late: bool = False  # taken before the last one applied (a retried POST overtaken): not applied


class AccountSummary(msgspec.Struct, omit_defaults=True):
    """What the REST API and the accounts channel show for one account."""

    id: str
    status: ConnectionStatus
    # Server time (ms) this summary was made, so when its status was judged. A reader holding two
    # summaries of an account keeps the later one: a REST answer made before a disconnect must not
    # overwrite the channel's 'lost', which changes neither lastSeen nor updatedAt.
    asOf: int
    info: AccountInfo | None = None
    state: AccountState | None = None
    positions: int = 0
    floatingProfit: float = 0.0
    connectedAt: int | None = None
    lastSeen: int | None = None
    updatedAt: int | None = None


class ExposureRow(msgspec.Struct):
    symbol: str
    buyVolume: float
    sellVolume: float
    netVolume: float
    profit: float
    positions: int
    accounts: int


MAX_SYMBOLS_PER_ACCOUNT = 1_000
# Every change to an account's open positions republishes its whole list (/trading/positions/{account}):
# 1,000 positions are ~1 ms to encode and ~250 KiB to each subscriber, 10,000 are 15 ms of the event loop.
MAX_POSITIONS_PER_ACCOUNT = 1_000


class AppliedTicks(NamedTuple):
    accepted: list[Tick]  # the ticks that moved a price: to publish
    refused: list[str]  # symbols over the account's limit, in the order they came


def price_order(tick: Tick, now: int) -> int:
    """What orders the shared price of a symbol: the tick's ts, not ahead of the hub's clock (`not_ahead`)."""
    return not_ahead(tick.ts, now)


class LiveState:
    def __init__(
        self,
        http_live_ms: int = 30_000,
        max_symbols_per_account: int = MAX_SYMBOLS_PER_ACCOUNT,
        max_positions_per_account: int = MAX_POSITIONS_PER_ACCOUNT,
    ) -> None:
        self.accounts: dict[str, AccountView] = {}
        self.prices: dict[str, Tick] = {}
        self._price_order: dict[str, int] = {}  # symbol -> price_order() of its price
        self.http_live_ms = http_live_ms
        # Each symbol an EA streams is kept for good (its price, its channel's latest value): without a
        # bound, one buggy or hostile EA could grow the hub's memory with made-up symbols.
        self.max_symbols_per_account = max_symbols_per_account
        # The live view of an account's open positions is bounded too: what one EA reports must not make
        # every publication of its list cost the hub's loop and every dashboard more without limit. Past it
        # the durable record is still complete (events are stored and acked as ever); only the live list,
        # and what is derived from it, leaves the extra positions out.
        self.max_positions_per_account = max_positions_per_account

    def account(self, account_id: str) -> AccountView:
        view = self.accounts.get(account_id)
        if view is None:
            view = self.accounts[account_id] = AccountView(account_id)
        return view

    # --- connection lifecycle ---------------------------------------------------------------
    def on_hello(
        self, account_id: str, info: AccountInfo, transport: Transport, now: int, *, new_session: bool = True
    ) -> AccountView:
        """`new_session`: the first hello of a WebSocket session (a session ends once, so counts once: a
        second hello on the same one left the account counted live for good)."""
        view = self.account(account_id)
        view.info = info
        if transport == "ws" and new_session:
            view.sessions += 1
        if view.connected_at is None or view.status(now, self.http_live_ms) != "live":
            view.connected_at = now
        view.transport = transport
        view.ever_connected = True
        view.last_seen = now
        return view

    def on_session_end(self, account_id: str, now: int) -> AccountView:
        view = self.account(account_id)
        view.sessions = max(0, view.sessions - 1)
        if view.sessions == 0:
            view.connected_at = None
        return view

    def touch(self, account_id: str, now: int) -> None:
        view = self.account(account_id)
        if view.transport == "http" and view.sessions == 0 and now - view.last_seen > self.http_live_ms:
            # An MT4 EA back from a silence is connected anew: its connectedAt, and the price clocks that count
            # from it, start again (else a false STALE_DATA at every return from an outage).
            view.connected_at = now
        view.last_seen = now

    # --- volatile data ------------------------------------------------------------------------
    def apply_account(self, account_id: str, state: AccountState, now: int) -> AccountView:
        view = self.account(account_id)
        view.state = state
        view.updated_at = now
        series = view.equity_series
        if not series:
            series = view.equity_series = EquitySeries()
        series.add(now - now % SERIES_BUCKET_MS, state.equity, state.balance)
        return view

    def seed_positions(self, account_id: str, positions: list[Position]) -> int:
        """Load what the store knows is open, so the first snapshot after a restart is diffed correctly.
        Returns how many were left out: the store holds every OPEN, those that came past the account's
        limit too, and the live view takes no more after a restart than it did before."""
        view = self.account(account_id)
        if view.positions_known:
            return 0
        limit = self.max_positions_per_account
        kept = positions[:limit]
        view.positions = {p.id: p for p in kept}
        view.left_out = {p.id: p for p in positions[limit : 2 * limit]}
        view.positions_known = True
        return len(positions) - len(kept)

    def apply_snapshot(self, account_id: str, positions: list[Position], now: int, ts: int = 0) -> Reconciliation:
        """Take an EA's full open set, taken at `ts` (the EA's clock), and say what it reveals. A set over the
        account's limit is not applied at all: cut to the limit, it would make the positions left out look
        closed. Nor is one taken shortly before the last one applied: a late snapshot (an MT4 POST retried and
        overtaken) recorded a CLOSE, for good, of a position opened since. (Much older, it is the EA's clock
        set back: applied.)"""
        view = self.account(account_id)
        incoming = {p.id: p for p in positions}
        if len(incoming) > self.max_positions_per_account:
            return Reconciliation([], [], refused=len(incoming))
        if view.snapshot_ts - SNAPSHOT_REORDER_MS < ts < view.snapshot_ts:
            return Reconciliation([], [], late=True)
        view.snapshot_ts = max(view.snapshot_ts, ts)
        if view.positions_known:
            opened = [p for pid, p in incoming.items() if pid not in view.positions and pid not in view.left_out]
            closed = [p for pid, p in (view.positions | view.left_out).items() if pid not in incoming]
        else:  # nothing to compare with: every position is news, none can be known closed
            opened, closed = list(incoming.values()), []
        view.positions = incoming
        view.left_out = {}  # the whole open set, within the limit: nothing is left out any more
        view.positions_known = True
        view.updated_at = now
        return Reconciliation(opened, closed)

    def apply_committed_event(
        self, account_id: str, event: str, position: Position, status: str, recorded: bool, now: int
    ) -> bool | None:
        """An EA's OPEN, MODIFY or CLOSE once the store has taken it (`status`, `recorded`: whether it wrote
        anything): as `apply_position_event`, and None when it changes nothing. Refused (a seq not above the
        stored ones, a reused id), it changed the view all the same before, and since the view then agreed with
        the EA's snapshots, none would ever repair the record."""
        if status != "stored" or (event != "CLOSE" and not recorded):
            return None  # refused, a resend, or taken with nothing recorded (a MODIFY after the CLOSE)
        return self.apply_position_event(account_id, event, position, now)

    def reconciled(self, account_id: str, event: str, position: Position, stored: bool) -> None:
        """A snapshot's OPEN or CLOSE was stored, or could not be. Stored, a CLOSE is on record (see
        `note_closed`). Not: the view took it already, so no later snapshot would tell it again and it was lost
        for good (the store kept a closed position open); the view is put back as it was, so the next snapshot
        reveals it again and the write is tried again."""
        if stored:
            if event == "CLOSE":
                self.note_closed(account_id, position.id)
            return
        view = self.account(account_id)
        if event == "CLOSE":
            if position.id not in view.closed and position.id not in view.left_out:
                view.positions.setdefault(position.id, position)
        else:
            view.positions.pop(position.id, None)

    def note_closed(self, account_id: str, position_id: int) -> None:
        """A CLOSE of the position is on record: a later OPEN or MODIFY of it must not show it open again."""
        closed = self.account(account_id).closed
        closed.pop(position_id, None)
        closed[position_id] = None
        if len(closed) > CLOSED_REMEMBERED:
            del closed[next(iter(closed))]

    def apply_position_event(self, account_id: str, event: str, position: Position, now: int) -> bool | None:
        """Apply an OPEN, MODIFY or CLOSE to the live view. False when it was left out: a position the
        view does not hold yet, on an account that already holds its limit of open positions. None when
        there was nothing to apply: an OPEN or MODIFY of a position known closed."""
        view = self.account(account_id)
        if event == "CLOSE":
            view.positions.pop(position.id, None)
            view.left_out.pop(position.id, None)
            self.note_closed(account_id, position.id)
        elif position.id in view.closed:
            return None
        elif position.id in view.positions or len(view.positions) < self.max_positions_per_account:
            view.positions[position.id] = position
            view.left_out.pop(position.id, None)
        else:
            if position.id in view.left_out or len(view.left_out) < self.max_positions_per_account:
                view.left_out[position.id] = position  # known, for the next snapshot to close it if need be
            return False
        view.updated_at = now
        return True

    def apply_ticks(self, ticks: list[Tick], now: int = 0, account: str | None = None) -> AppliedTicks:
        """Keep the newest valid price per symbol; say which ticks changed something, and which symbols
        were refused because the account already streams `max_symbols_per_account` others.

        Terminals send bid/ask 0 while disconnected from their broker: those are not prices.
        """
        accepted: list[Tick] = []
        refused: list[str] = []
        view = self.account(account) if account is not None else None
        for tick in ticks:
            if tick.bid <= 0 or tick.ask <= 0:
                continue
            if view is not None:
                quote = (tick.bid, tick.ask)
                known = view.quotes.get(tick.symbol)
                if known != quote:
                    if known is None:
                        if len(view.quotes) >= self.max_symbols_per_account:
                            refused.append(tick.symbol)
                            continue
                        view.unmoved.add(tick.symbol)
                    else:
                        view.unmoved.discard(tick.symbol)
                    view.quotes[tick.symbol] = quote
                    view.price_changed[tick.symbol] = now
            order = price_order(tick, now)
            if order < self._price_order.get(tick.symbol, -1):
                continue
            self._price_order[tick.symbol] = order
            self.prices[tick.symbol] = tick
            accepted.append(tick)
        return AppliedTicks(accepted, refused)

    def load_price(self, tick: Tick, order: int) -> None:
        """A symbol's shared price as stored elsewhere (the AWS live table), with its `price_order`."""
        self.prices[tick.symbol] = tick
        self._price_order[tick.symbol] = order

    # --- views --------------------------------------------------------------------------------
    def summary(self, account_id: str, now: int) -> AccountSummary:
        """What the account looks like now; a read, not creating a view for an account never seen (listing
        the accounts made every token-only one live state: in /equity, in the metrics, revoked ones too)."""
        view = self.accounts.get(account_id) or AccountView(account_id)
        return AccountSummary(
            id=view.id,
            status=view.status(now, self.http_live_ms),
            asOf=now,
            info=view.info,
            state=view.state,
            positions=len(view.positions),
            floatingProfit=round(sum(p.profit + p.swap + p.commission for p in view.positions.values()), 2),
            connectedAt=view.connected_at,
            lastSeen=view.last_seen or None,
            updatedAt=view.updated_at or None,
        )

    def open_positions(
        self,
        account: str | None = None,
        symbol: str | None = None,
        *,
        after: tuple[str, int] | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict], tuple[str, int] | None]:
        """Open positions by account then id, from just after `after`, at most `limit`; and where the next page
        starts (None: this was the last). Paged: the whole fleet's in one answer (200 accounts at their limit,
        200,000 positions) was 46 MB built on the event loop, holding every EA's acks for a third of a second."""
        if account:
            ids = [account] if account in self.accounts else []
        else:
            ids = sorted(a for a in self.accounts if after is None or a >= after[0])
        rows: list[dict] = []
        for account_id in ids:
            view = self.accounts[account_id]
            for pid in sorted(view.positions):
                if after is not None and (account_id, pid) <= after:
                    continue
                p = view.positions[pid]
                if symbol is not None and p.symbol != symbol:
                    continue
                if limit is not None and len(rows) == limit:
                    last = rows[-1]
                    return rows, (last["account"], last["id"])
                rows.append({"account": account_id, **msgspec.structs.asdict(p)})
        return rows, None

    def exposure(self) -> list[ExposureRow]:
        """Net volume and floating P/L per symbol across all accounts."""
        rows: dict[str, list] = {}
        for view in self.accounts.values():
            for p in view.positions.values():
                row = rows.setdefault(p.symbol, [0.0, 0.0, 0.0, 0, set()])
                row[0 if p.side == "buy" else 1] += p.volume
                row[2] += p.profit + p.swap + p.commission
                row[3] += 1
                row[4].add(view.id)
        return [
            ExposureRow(
                symbol=sym,
                buyVolume=round(buy, VOLUME_DIGITS),
                sellVolume=round(sell, VOLUME_DIGITS),
                netVolume=round(buy - sell, VOLUME_DIGITS),
                profit=round(profit, 2),
                positions=count,
                accounts=len(accts),
            )
            for sym, (buy, sell, profit, count, accts) in sorted(rows.items())
        ]
