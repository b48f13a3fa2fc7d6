"""A simulated MetaTrader account, pure logic (no I/O, no clock): positions, money, trading, seq and outbox.

It produces EA protocol v1 frames as plain dicts (DESIGN.md §4). Durable messages (position OPEN /
CLOSE / MODIFY) get the next `seq`, a unique id, and stay in the outbox until a cumulative `ack`
covers them, exactly as a real EA must keep them across reconnects.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tradewire.sim.market import MAJORS, SYMBOLS, Market, Quote, spec_for

Side = Literal["buy", "sell"]
CloseReason = Literal["client", "sl", "tp", "stopout"]

DEFAULT_SYSTEM_MAGIC = 7001
MANUAL_MAGICS = (0, 0, 0, 12345, 20240)  # 0 = placed by hand; others: the trader's own EAs
EA_NAME = "TradewireSim"
EA_VERSION = "1.0"
MARGIN_CALL_LEVEL = 100.0
STOP_OUT_LEVEL = 50.0
MAX_POSITIONS = 12
MAX_STEP_S = 10.0  # after a long pause, act as if a few seconds passed, not a burst of everything

# Behaviour, as rates per second (turned into probabilities for each step's elapsed time).
OPEN_RATE_FILLING = 0.5  # while below the account's usual number of positions
OPEN_RATE = 0.02
CLOSE_RATE = 1 / 90  # per position
MODIFY_RATE = 1 / 60  # per position
STRESS_RATE = 1 / 900  # an oversized trade that pushes the margin level toward margin call
SYSTEM_SHARE = 0.3  # share of new positions placed by the hedge system (system magic number)


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    broker: str
    server: str
    suffix: str  # appended to every symbol this broker quotes
    tz_offset_sec: int  # broker server time - UTC


BROKERS = (
    BrokerProfile("IC Markets", "ICMarketsSC-Live07", "", 10800),
    BrokerProfile("Pepperstone", "Pepperstone-Edge05", "", 10800),
    BrokerProfile("FP Markets", "FPMarkets-Live", ".r", 10800),
    BrokerProfile("Exness", "Exness-MT5Real8", ".m", 0),
    BrokerProfile("Tickmill", "Tickmill-Live", ".m", 10800),
    BrokerProfile("OANDA", "OANDA-v20 Live-1", "", 0),
)


@dataclass(slots=True)
class SimPosition:
    id: int
    symbol: str
    side: Side
    volume: float
    open_price: float
    open_time: int
    sl: float = 0.0  # 0 = none, as terminals report it
    tp: float = 0.0
    magic: int = 0
    comment: str = ""
    commission: float = 0.0
    swap: float = 0.0
    price: float = 0.0
    profit: float = 0.0

    def wire(self) -> dict[str, Any]:
        """The protocol's Position object."""
        return {
            "id": self.id,
            "ticket": self.id,
            "symbol": self.symbol,
            "side": self.side,
            "volume": self.volume,
            "openPrice": self.open_price,
            "price": self.price,
            "sl": self.sl,
            "tp": self.tp,
            "profit": self.profit,
            "swap": self.swap,
            "commission": self.commission,
            "magic": self.magic,
            "comment": self.comment,
            "openTime": self.open_time,
        }


def margin_level_of(equity: float, margin: float) -> float | None:
    """Equity over margin in percent; None without margin in use (MT5 reports 0, the hub takes null)."""
    return equity / margin * 100 if margin > 0 else None


def lots(volume: float) -> float:
    """Round down to the 0.01-lot step; never below the minimum lot."""
    return max(0.01, math.floor(volume * 100 + 1e-9) / 100)


class SimAccount:
    def __init__(
        self,
        account_id: str,
        market: Market,
        *,
        seed: int = 1,
        platform: Literal["MT4", "MT5"] = "MT5",
        system_magics: Iterable[int] = (),
        first_ticket: int | None = None,
    ) -> None:
        self.id = account_id
        self.market = market
        self.rng = random.Random(f"{seed}:{account_id}")
        self.platform = platform
        self.system_magics = tuple(system_magics) or (DEFAULT_SYSTEM_MAGIC,)
        self.profile = self.rng.choice(BROKERS)
        self.login = self.rng.randint(500_000, 9_999_999) if platform == "MT4" else self.rng.randint(10**7, 10**8 - 1)
        self.currency = "USD"
        self.leverage = self.rng.choice((100, 200, 300, 500))
        self.initial_balance = float(self.rng.choice((1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000)))
        self.balance = self.initial_balance
        watch = self.rng.sample(MAJORS, self.rng.randint(2, 4)) + self.rng.sample(
            [s for s in SYMBOLS if s not in MAJORS], self.rng.randint(1, 2)
        )
        self.symbols = [s + self.profile.suffix for s in watch]
        self.target_positions = self.rng.randint(2, 6)
        self.positions: dict[int, SimPosition] = {}
        self.seq = 0
        self.outbox: dict[int, dict[str, Any]] = {}  # seq -> frame, in seq order
        self._next_ticket = first_ticket if first_ticket is not None else self.rng.randint(10**8, 9 * 10**8)
        self._last_ms: int | None = None
        self._stress: tuple[int, int] | None = None  # (position id, close at ms)
        # Scenario hooks (sim/scenarios.py): a scripted account only follows the market (no trading, no stops,
        # no broker stop-out: the script does those); a frozen symbol keeps its quote and sends no ticks.
        self.scripted = False
        self.frozen: dict[str, Quote] = {}
        self._frozen_told: set[str] = set()  # frozen symbols whose frozen quote went out once

    def quote(self, symbol: str) -> Quote:
        """The price this account's terminal sees: the market's, unless the scenario froze its feed."""
        frozen = self.frozen.get(symbol)
        return frozen if frozen is not None else self.market.quote(symbol)

    # --- money --------------------------------------------------------------------------------
    def mark(self) -> None:
        """Revalue every position at the current price (buys close at bid, sells at ask)."""
        for pos in self.positions.values():
            quote = self.quote(pos.symbol)
            pos.price = quote.bid if pos.side == "buy" else quote.ask
            pos.profit = round(self.market.profit_usd(pos.symbol, pos.side, pos.volume, pos.open_price, pos.price), 2)

    @property
    def floating(self) -> float:
        return sum(p.profit + p.swap + p.commission for p in self.positions.values())

    @property
    def equity(self) -> float:
        return self.balance + self.floating

    @property
    def margin(self) -> float:
        return sum(
            self.market.margin_usd(p.symbol, p.volume, self.leverage, self._frozen_mid(p.symbol))
            for p in self.positions.values()
        )

    def _frozen_mid(self, symbol: str) -> float | None:
        frozen = self.frozen.get(symbol)
        return frozen.mid if frozen is not None else None

    @property
    def free_margin(self) -> float:
        return self.equity - self.margin

    @property
    def margin_level(self) -> float | None:
        return margin_level_of(self.equity, self.margin)

    # --- behaviour ----------------------------------------------------------------------------
    def step(self, now_ms: int) -> list[dict[str, Any]]:
        """Advance to `now_ms`: move prices, hit stops, trade now and then. Returns new durable frames."""
        dt = 0.0 if self._last_ms is None else min(MAX_STEP_S, max(0.0, (now_ms - self._last_ms) / 1000))
        self._last_ms = now_ms
        self.market.advance(now_ms)
        self.mark()
        if self.scripted:
            return []
        events = self._hit_stops(now_ms) + self._stop_out(now_ms)
        if dt > 0:
            events += self._trade(now_ms, dt)
        return events

    def _chance(self, rate_per_s: float, dt: float) -> bool:
        return self.rng.random() < 1 - math.exp(-rate_per_s * dt)

    def _hit_stops(self, now_ms: int) -> list[dict[str, Any]]:
        hits = []
        for pos in list(self.positions.values()):
            if pos.sl and (pos.price <= pos.sl if pos.side == "buy" else pos.price >= pos.sl):
                hits.append(self.close_position(pos.id, now_ms, "sl"))
            elif pos.tp and (pos.price >= pos.tp if pos.side == "buy" else pos.price <= pos.tp):
                hits.append(self.close_position(pos.id, now_ms, "tp"))
        return hits

    def _stop_out(self, now_ms: int) -> list[dict[str, Any]]:
        """The broker closes the biggest loser while the margin level is at or below stop-out."""
        closed = []
        while self.positions and (level := self.margin_level) is not None and level <= STOP_OUT_LEVEL:
            worst = min(self.positions.values(), key=lambda p: p.profit)
            closed.append(self.close_position(worst.id, now_ms, "stopout"))
        return closed

    def _trade(self, now_ms: int, dt: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._stress is not None and (self._stress[0] not in self.positions or now_ms >= self._stress[1]):
            if self._stress[0] in self.positions:
                events.append(self.close_position(self._stress[0], now_ms, "client"))
            self._stress = None
        elif self._stress is None and self._chance(STRESS_RATE, dt):
            event = self.open_stress_position(now_ms, self.rng.uniform(85, 160))
            if event is not None:
                events.append(event)
        filling = len(self.positions) < self.target_positions
        if len(self.positions) < MAX_POSITIONS and self._chance(OPEN_RATE_FILLING if filling else OPEN_RATE, dt):
            events.append(self.open_position(now_ms))
        for pos in list(self.positions.values()):
            if self._stress is not None and pos.id == self._stress[0]:
                continue
            if self._chance(CLOSE_RATE, dt):
                events.append(self.close_position(pos.id, now_ms, "client"))
            elif self._chance(MODIFY_RATE, dt):
                events.append(self.modify_position(pos.id, now_ms))
        if self.balance < 0.3 * self.initial_balance:
            self.balance += self.initial_balance  # the trader tops the account up
        return events

    # --- trades (public so that tests and scenarios can script them) ------------------------
    def open_position(
        self,
        now_ms: int,
        symbol: str | None = None,
        side: Side | None = None,
        volume: float | None = None,
        magic: int | None = None,
        stops: bool | None = None,
    ) -> dict[str, Any]:
        symbol = symbol or self.rng.choice(self.symbols)
        side = side or self.rng.choice(("buy", "sell"))
        if magic is None:
            system = self.rng.random() < SYSTEM_SHARE
            magic = self.rng.choice(self.system_magics) if system else self.rng.choice(MANUAL_MAGICS)
        if volume is None:
            # Size by the margin it uses: a few percent of equity per trade.
            per_lot = self.market.margin_usd(symbol, 1.0, self.leverage)
            volume = min(50.0, lots(self.rng.uniform(0.003, 0.025) * max(self.equity, 0.0) / per_lot))
        quote = self.quote(symbol)
        spec = spec_for(symbol)
        price = quote.ask if side == "buy" else quote.bid
        pos = SimPosition(
            id=self._take_ticket(),
            symbol=symbol,
            side=side,
            volume=volume,
            open_price=price,
            open_time=now_ms,
            magic=magic,
            comment="hedge" if magic in self.system_magics else "",
            commission=0.0 if spec.contract == 1 else -round(7.0 * volume, 2),  # $3.50 per lot per side
        )
        if stops if stops is not None else self.rng.random() < 0.6:
            pos.sl, pos.tp = self._stops_around(pos.symbol, pos.side, price)
        self.positions[pos.id] = pos
        self.mark()
        return self._durable("OPEN", pos, now_ms)

    def open_stress_position(self, now_ms: int, target_level: float) -> dict[str, Any] | None:
        """An oversized trade sized so the margin level lands near `target_level` percent."""
        symbol = self.rng.choice(self.symbols)
        extra = self.equity / (target_level / 100) - self.margin
        volume = extra / self.market.margin_usd(symbol, 1.0, self.leverage)
        if volume < 0.01 or len(self.positions) >= MAX_POSITIONS:
            return None
        event = self.open_position(now_ms, symbol, volume=min(100.0, lots(volume)), stops=False)
        self._stress = (event["position"]["id"], now_ms + int(self.rng.uniform(5, 25) * 1000))
        return event

    def close_position(self, position_id: int, now_ms: int, reason: CloseReason) -> dict[str, Any]:
        pos = self.positions.pop(position_id)
        quote = self.quote(pos.symbol)
        pos.price = quote.bid if pos.side == "buy" else quote.ask
        pos.profit = round(self.market.profit_usd(pos.symbol, pos.side, pos.volume, pos.open_price, pos.price), 2)
        self.balance = round(self.balance + pos.profit + pos.swap + pos.commission, 2)  # realised
        return self._durable("CLOSE", pos, now_ms, closePrice=pos.price, profit=pos.profit, reason=reason)

    def modify_position(self, position_id: int, now_ms: int) -> dict[str, Any]:
        """Move SL/TP around the current price, as a trader or a trailing stop does."""
        pos = self.positions[position_id]
        pos.sl, pos.tp = self._stops_around(pos.symbol, pos.side, pos.price or pos.open_price)
        return self._durable("MODIFY", pos, now_ms)

    def _stops_around(self, symbol: str, side: Side, price: float) -> tuple[float, float]:
        spec = spec_for(symbol)
        distance = price * spec.daily_vol * self.rng.uniform(0.1, 0.4)
        reward = distance * self.rng.uniform(1.0, 2.0)
        sign = 1 if side == "buy" else -1
        return round(price - sign * distance, spec.digits), round(price + sign * reward, spec.digits)

    def _take_ticket(self) -> int:
        self._next_ticket += 1
        return self._next_ticket

    # --- seq and outbox -----------------------------------------------------------------------
    def _durable(self, event: str, pos: SimPosition, now_ms: int, **extra: Any) -> dict[str, Any]:
        self.seq += 1
        frame = {
            "type": "position",
            "account": self.id,
            "seq": self.seq,
            "id": f"{event.lower()}-{pos.id}-{self.seq}",
            "event": event,
            "ts": now_ms,
            "position": pos.wire(),
            **extra,
        }
        self.outbox[self.seq] = frame
        return frame

    def error_event(
        self, now_ms: int, code: str, message: str, severity: Literal["HIGH", "CRITICAL"] = "HIGH"
    ) -> dict[str, Any]:
        """A durable EA `error` message (the hub raises SYSTEM_ERROR); kept in the outbox until acked."""
        self.seq += 1
        frame = {
            "type": "error",
            "account": self.id,
            "seq": self.seq,
            "id": f"error-{self.seq}",
            "code": code,
            "message": message,
            "severity": severity,
            "ts": now_ms,
        }
        self.outbox[self.seq] = frame
        return frame

    def ack(self, seq: int) -> int:
        """Cumulative ack: drop every outbox entry with seq <= `seq`. Returns how many were dropped."""
        dropped = 0
        while self.outbox:
            first = next(iter(self.outbox))
            if first > seq:
                break
            del self.outbox[first]
            dropped += 1
        return dropped

    def on_welcome(self, acked_seq: int) -> list[dict[str, Any]]:
        """Apply the server's `ackedSeq`; return what must be resent.

        A fresh simulator against a store that already holds this account's events must continue
        above the stored seq (a real EA keeps its seq across restarts).
        """
        self.ack(acked_seq)
        self.seq = max(self.seq, acked_seq)
        return self.pending()

    def pending(self) -> list[dict[str, Any]]:
        return list(self.outbox.values())

    def unanswered(self, sent: int) -> bool:
        """Whether a durable message sent up to `sent` still waits for its ack."""
        return bool(self.outbox) and next(iter(self.outbox)) <= sent

    def after(self, sent: int) -> list[dict[str, Any]]:
        """The outbox's messages above `sent`, in seq order: not sent on this connection yet."""
        return [msg for seq, msg in self.outbox.items() if seq > sent]

    # --- volatile frames ----------------------------------------------------------------------
    def hello_frame(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "account": self.id,
            "platform": self.platform,
            "login": self.login,
            "server": self.profile.server,
            "broker": self.profile.broker,
            "currency": self.currency,
            "leverage": self.leverage,
            "ea": {"name": EA_NAME, "version": EA_VERSION},
            "tzOffsetSec": self.profile.tz_offset_sec,
            "lastSeq": self.seq,
        }

    def account_frame(self, now_ms: int) -> dict[str, Any]:
        equity, margin = self.equity, self.margin  # each a sum over the positions: once, not once a field
        level = margin_level_of(equity, margin)
        return {
            "type": "account",
            "account": self.id,
            "ts": now_ms,
            "balance": round(self.balance, 2),
            "equity": round(equity, 2),
            "margin": round(margin, 2),
            "freeMargin": round(equity - margin, 2),
            "marginLevel": round(level, 2) if level is not None else None,
            "marginCallLevel": MARGIN_CALL_LEVEL,
            "stopOutLevel": STOP_OUT_LEVEL,
            "marginMode": "percent",
        }

    def positions_frame(self, now_ms: int) -> dict[str, Any]:
        return {
            "type": "positions",
            "account": self.id,
            "ts": now_ms,
            "positions": [p.wire() for p in self.positions.values()],
        }

    def ticks_frame(self, now_ms: int) -> dict[str, Any]:
        ticks = []
        for symbol in self.symbols:
            if symbol in self.frozen:
                if symbol in self._frozen_told:
                    continue  # a frozen feed: no new tick, as an EA that sends ticks on change
                # Its last quote goes out once: a symbol the hub never saw quoted is not judged stale at all (a
                # held symbol not streamed until the scenario picked it never raised STALE_DATA).
                self._frozen_told.add(symbol)
                quote = self.frozen[symbol]
                ticks.append({"symbol": symbol, "bid": quote.bid, "ask": quote.ask, "ts": now_ms})
                continue
            quote = self.market.quote(symbol)
            ticks.append({"symbol": symbol, "bid": quote.bid, "ask": quote.ask, "ts": now_ms})
        return {"type": "ticks", "account": self.id, "ticks": ticks}

    def heartbeat_frame(self, now_ms: int) -> dict[str, Any]:
        return {"type": "heartbeat", "account": self.id, "ts": now_ms}
