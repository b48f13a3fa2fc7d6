"""A stand-in for the `MetaTrader5` package: same function names, same named-tuple fields.

The real package exists for Windows only and talks to a running terminal, so the agent is tested
(and can be tried on any OS) against this: a small in-memory terminal whose state a test changes
with `open`, `modify`, `close`, `partial_close` and `quote`; and the ways a real terminal misleads:
`broker_connected = False` (its link to the trade server down: no positions listed), a closing deal that
reaches the history late (`close(..., deal_later=True)`, then `deliver_deals()`), and `switch_account`
(File > Login to another account). Times are reported the way the package
reports them, in the broker's server time (UTC + `tz_offset_sec`).

    fake = FakeMT5(login=5123456)
    pid = fake.open("EURUSD", "buy", 0.1, 1.085)
    await run_agent(url, token, mt5=fake)
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, NamedTuple

# Constants, as the package defines them.
POSITION_TYPE_BUY, POSITION_TYPE_SELL = 0, 1
DEAL_TYPE_BUY, DEAL_TYPE_SELL = 0, 1
DEAL_ENTRY_IN, DEAL_ENTRY_OUT, DEAL_ENTRY_INOUT, DEAL_ENTRY_OUT_BY = 0, 1, 2, 3
DEAL_REASON_CLIENT, DEAL_REASON_MOBILE, DEAL_REASON_WEB, DEAL_REASON_EXPERT = 0, 1, 2, 3
DEAL_REASON_SL, DEAL_REASON_TP, DEAL_REASON_SO = 4, 5, 6
ACCOUNT_STOPOUT_MODE_PERCENT, ACCOUNT_STOPOUT_MODE_MONEY = 0, 1
ACCOUNT_MARGIN_MODE_RETAIL_HEDGING = 2
RES_S_OK, RES_E_FAIL, RES_E_INVALID_PARAMS = 1, -1, -2


class AccountInfo(NamedTuple):
    login: int
    trade_mode: int
    leverage: int
    limit_orders: int
    margin_so_mode: int
    trade_allowed: bool
    trade_expert: bool
    margin_mode: int
    currency_digits: int
    fifo_close: bool
    balance: float
    credit: float
    profit: float
    equity: float
    margin: float
    margin_free: float
    margin_level: float
    margin_so_call: float
    margin_so_so: float
    margin_initial: float
    margin_maintenance: float
    assets: float
    liabilities: float
    commission_blocked: float
    name: str
    server: str
    currency: str
    company: str


class TradePosition(NamedTuple):
    ticket: int
    time: int
    time_msc: int
    time_update: int
    time_update_msc: int
    type: int
    magic: int
    identifier: int
    reason: int
    volume: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    swap: float
    profit: float
    symbol: str
    comment: str
    external_id: str


class TradeDeal(NamedTuple):
    ticket: int
    order: int
    time: int
    time_msc: int
    type: int
    entry: int
    magic: int
    position_id: int
    reason: int
    volume: float
    price: float
    commission: float
    swap: float
    profit: float
    fee: float
    symbol: str
    comment: str
    external_id: str


class TerminalInfo(NamedTuple):  # the fields the agent reads, of the package's many
    connected: bool
    trade_allowed: bool
    name: str
    path: str


class Tick(NamedTuple):
    time: int
    bid: float
    ask: float
    last: float
    volume: int
    time_msc: int
    flags: int
    volume_real: float


class FakeMT5:
    """An in-memory terminal. Thread-safe, so a test may change it while the agent polls."""

    def __init__(
        self,
        *,
        login: int = 5123456,
        server: str = "ICMarketsSC-Demo",
        company: str = "Raw Trading Ltd",
        currency: str = "USD",
        leverage: int = 500,
        balance: float = 10_000.0,
        tz_offset_sec: int = 7200,
        margin_per_lot: float = 200.0,
    ) -> None:
        self.login, self.server, self.company, self.currency = login, server, company, currency
        self.leverage = leverage
        self.balance = balance
        self.tz_offset_sec = tz_offset_sec
        self.margin_per_lot = margin_per_lot
        self.connected = False  # initialised: the package talks to the terminal
        self.broker_connected = True  # the terminal's own link to the trade server
        self.late_deals: list[TradeDeal] = []
        self._away: tuple[int, str, dict[int, TradePosition]] | None = None  # see switch_account
        self.initialize_args: dict[str, Any] | None = None
        self.fail_initialize: tuple[int, str] | None = None
        self.initialize_delay_s = 0.0  # a real initialize can wait out a minute's IPC timeout
        self.quotes: dict[str, tuple[float, float]] = {}
        self.frozen: dict[str, int] = {}  # symbol -> broker ms of a quote that stopped moving (see quote)
        self.selected: set[str] = set()
        self.positions: dict[int, TradePosition] = {}
        self.deals: list[TradeDeal] = []
        self._tickets = itertools.count(400_000_001)
        self._lock = threading.RLock()
        self._error: tuple[int, str] = (RES_S_OK, "Success")

    # --- broker time ------------------------------------------------------------------------
    def broker_ms(self) -> int:
        return int(time.time() * 1000) + self.tz_offset_sec * 1000

    # --- the package's API ------------------------------------------------------------------
    def initialize(self, path: str | None = None, **kwargs: Any) -> bool:
        self.initialize_args = {"path": path, **kwargs}
        if self.initialize_delay_s:
            time.sleep(self.initialize_delay_s)
        if self.fail_initialize is not None:
            self._error = self.fail_initialize
            return False
        self.connected = True
        return True

    def shutdown(self) -> None:
        self.connected = False

    def terminal_info(self) -> TerminalInfo | None:
        if not self.connected:
            self._error = (RES_E_FAIL, "not initialized")
            return None
        return TerminalInfo(self.broker_connected, True, "MetaTrader 5", "C:\\Program Files\\MetaTrader 5")

    def last_error(self) -> tuple[int, str]:
        return self._error

    def version(self) -> tuple[int, int, str]:
        return (500, 4000, "01 Jan 2025")

    def account_info(self) -> AccountInfo | None:
        if not self.connected:
            self._error = (RES_E_FAIL, "not initialized")
            return None
        with self._lock:
            floating = sum(p.profit + p.swap for p in self.positions.values())
            margin = round(sum(p.volume for p in self.positions.values()) * self.margin_per_lot, 2)
            equity = round(self.balance + floating, 2)
            return AccountInfo(
                login=self.login,
                trade_mode=0,
                leverage=self.leverage,
                limit_orders=200,
                margin_so_mode=ACCOUNT_STOPOUT_MODE_PERCENT,
                trade_allowed=True,
                trade_expert=True,
                margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
                currency_digits=2,
                fifo_close=False,
                balance=self.balance,
                credit=0.0,
                profit=round(floating, 2),
                equity=equity,
                margin=margin,
                margin_free=round(equity - margin, 2),
                margin_level=round(equity / margin * 100, 2) if margin else 0.0,  # terminals say 0, not null
                margin_so_call=100.0,
                margin_so_so=50.0,
                margin_initial=0.0,
                margin_maintenance=0.0,
                assets=0.0,
                liabilities=0.0,
                commission_blocked=0.0,
                name="Test Trader",
                server=self.server,
                currency=self.currency,
                company=self.company,
            )

    def positions_get(
        self, symbol: str | None = None, group: str | None = None, ticket: int | None = None
    ) -> tuple[TradePosition, ...] | None:
        if not self.connected:
            self._error = (RES_E_FAIL, "not initialized")
            return None
        if not self.broker_connected:
            return ()  # what a terminal cut off from (or still synchronising with) its trade server may list
        with self._lock:
            found = tuple(
                p
                for p in self.positions.values()
                if (symbol is None or p.symbol == symbol) and (ticket is None or p.ticket == ticket)
            )
        return found

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        if symbol not in self.quotes:
            self._error = (RES_E_INVALID_PARAMS, f"unknown symbol {symbol}")
            return False
        (self.selected.add if enable else self.selected.discard)(symbol)
        return True

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        quote = self.quotes.get(symbol)
        if quote is None or not self.connected:
            return None
        now = self.frozen.get(symbol) or self.broker_ms()
        return Tick(now // 1000, quote[0], quote[1], 0.0, 0, now, 6, 0.0)

    def history_deals_get(self, *args: Any, **kwargs: Any) -> tuple[TradeDeal, ...] | None:
        """By `position=` or `ticket=`, or every deal in (date_from, date_to): datetimes or seconds, taken
        as broker time, as the deals' own `time` is."""
        if not self.connected:
            return None
        position = kwargs.get("position")
        ticket = kwargs.get("ticket")
        span = None
        if len(args) >= 2:
            span = tuple(a.timestamp() if hasattr(a, "timestamp") else float(a) for a in args[:2])
        with self._lock:
            return tuple(
                d
                for d in self.deals
                if (position is None or d.position_id == position)
                and (ticket is None or d.ticket == ticket)
                and (span is None or span[0] <= d.time <= span[1])
            )

    # --- what a test does to the terminal ---------------------------------------------------
    def quote(self, symbol: str, bid: float, ask: float, *, age_s: float | None = None) -> None:
        """A price; with `age_s`, one that stopped moving that long ago (a shut market, a quiet symbol)."""
        with self._lock:
            self.quotes[symbol] = (bid, ask)
            if age_s is None:
                self.frozen.pop(symbol, None)
            else:
                self.frozen[symbol] = self.broker_ms() - int(age_s * 1000)

    def open(
        self,
        symbol: str,
        side: str,
        volume: float,
        price: float,
        *,
        sl: float = 0.0,
        tp: float = 0.0,
        magic: int = 0,
        comment: str = "",
        commission: float = 0.0,
    ) -> int:
        """A market fill: one IN deal and a new position. Returns the POSITION_IDENTIFIER."""
        with self._lock:
            ticket = next(self._tickets)
            now = self.broker_ms()
            kind = POSITION_TYPE_BUY if side == "buy" else POSITION_TYPE_SELL
            self.positions[ticket] = TradePosition(
                ticket=ticket,
                time=now // 1000,
                time_msc=now,
                time_update=now // 1000,
                time_update_msc=now,
                type=kind,
                magic=magic,
                identifier=ticket,
                reason=0,
                volume=volume,
                price_open=price,
                sl=sl,
                tp=tp,
                price_current=price,
                swap=0.0,
                profit=0.0,
                symbol=symbol,
                comment=comment,
                external_id="",
            )
            self._deal(ticket, kind, DEAL_ENTRY_IN, DEAL_REASON_CLIENT, volume, price, commission, 0.0, symbol, magic)
            self.quotes.setdefault(symbol, (price, price))
            return ticket

    def modify(self, position_id: int, *, sl: float | None = None, tp: float | None = None) -> None:
        with self._lock:
            p = self.positions[position_id]
            now = self.broker_ms()
            self.positions[position_id] = p._replace(
                sl=p.sl if sl is None else sl,
                tp=p.tp if tp is None else tp,
                time_update=now // 1000,
                time_update_msc=now,
            )

    def mark(self, position_id: int, price: float, profit: float) -> None:
        """A price move: the position's current price and floating profit."""
        with self._lock:
            self.positions[position_id] = self.positions[position_id]._replace(price_current=price, profit=profit)

    def partial_close(self, position_id: int, volume: float, price: float, profit: float) -> None:
        with self._lock:
            p = self.positions[position_id]
            self._exit_deal(p, volume, price, profit, DEAL_REASON_CLIENT)
            self.positions[position_id] = p._replace(volume=round(p.volume - volume, 8))
            self.balance = round(self.balance + profit, 2)

    def close(
        self,
        position_id: int,
        price: float,
        profit: float,
        reason: int = DEAL_REASON_CLIENT,
        *,
        deal_later: bool = False,
    ) -> None:
        """The position goes, an OUT deal with its price, profit and reason is added to history (with
        `deal_later`, only at `deliver_deals`: a real terminal's history can lag its position list)."""
        with self._lock:
            p = self.positions.pop(position_id)
            self._exit_deal(p, p.volume, price, profit, reason)
            if deal_later:
                self.late_deals.append(self.deals.pop())
            self.balance = round(self.balance + profit + p.swap, 2)

    def deliver_deals(self) -> None:
        """The late closing deals reach the history."""
        with self._lock:
            self.deals += self.late_deals
            self.late_deals = []

    def switch_account(self, login: int, server: str | None = None) -> dict[int, TradePosition]:
        """File > Login to another account: its own (here: no) positions. Returns the ones left behind;
        `restore_account` logs back in to them."""
        with self._lock:
            left = self.positions
            self._away = (self.login, self.server, left)
            self.login, self.server, self.positions = login, server or self.server, {}
            return left

    def restore_account(self) -> None:
        assert self._away is not None, "switch_account first"
        with self._lock:
            self.login, self.server, self.positions = self._away
            self._away = None

    def _exit_deal(self, p: TradePosition, volume: float, price: float, profit: float, reason: int) -> None:
        kind = DEAL_TYPE_SELL if p.type == POSITION_TYPE_BUY else DEAL_TYPE_BUY
        self._deal(p.identifier, kind, DEAL_ENTRY_OUT, reason, volume, price, 0.0, profit, p.symbol, p.magic)

    def _deal(
        self,
        position_id: int,
        kind: int,
        entry: int,
        reason: int,
        volume: float,
        price: float,
        commission: float,
        profit: float,
        symbol: str,
        magic: int,
    ) -> None:
        ticket = next(self._tickets)
        now = self.broker_ms()
        self.deals.append(
            TradeDeal(
                ticket=ticket,
                order=ticket,
                time=now // 1000,
                time_msc=now,
                type=kind,
                entry=entry,
                magic=magic,
                position_id=position_id,
                reason=reason,
                volume=volume,
                price=price,
                commission=commission,
                swap=0.0,
                profit=profit,
                fee=0.0,
                symbol=symbol,
                comment="",
                external_id="",
            )
        )
