"""A simulated market, pure logic (no I/O, no clock): symbols, a seeded random walk, P/L and margin in USD.

Broker-suffixed symbols (`EURUSD.m`, `XAUUSD.r`) share the price of their canonical symbol: brokers
quote the same market under different names, and the hub must treat them as distinct symbols.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    name: str
    base: str  # what one unit of the contract is (a currency, XAU, or an index)
    quote: str  # the currency the price, and so the P/L, is in
    start: float
    digits: int
    pip: float
    contract: float  # units per 1.0 lot
    spread_pips: float  # typical spread
    daily_vol: float  # typical daily move as a fraction of price

    @property
    def point(self) -> float:
        return 10.0**-self.digits


SYMBOLS: dict[str, SymbolSpec] = {
    s.name: s
    for s in (
        SymbolSpec("EURUSD", "EUR", "USD", 1.08500, 5, 0.0001, 100_000, 0.8, 0.005),
        SymbolSpec("GBPUSD", "GBP", "USD", 1.27000, 5, 0.0001, 100_000, 1.2, 0.006),
        SymbolSpec("USDJPY", "USD", "JPY", 150.500, 3, 0.01, 100_000, 1.0, 0.006),
        SymbolSpec("AUDUSD", "AUD", "USD", 0.65500, 5, 0.0001, 100_000, 1.0, 0.007),
        SymbolSpec("USDCHF", "USD", "CHF", 0.88000, 5, 0.0001, 100_000, 1.5, 0.005),
        SymbolSpec("USDCAD", "USD", "CAD", 1.35500, 5, 0.0001, 100_000, 1.5, 0.005),
        SymbolSpec("NZDUSD", "NZD", "USD", 0.61000, 5, 0.0001, 100_000, 1.8, 0.007),
        SymbolSpec("XAUUSD", "XAU", "USD", 2350.00, 2, 0.1, 100, 2.5, 0.010),
        SymbolSpec("US30", "US30", "USD", 39000.0, 1, 1.0, 1, 2.0, 0.009),
        SymbolSpec("NAS100", "NAS100", "USD", 18000.0, 1, 1.0, 1, 1.5, 0.012),
        SymbolSpec("GER40", "GER40", "EUR", 18200.0, 1, 1.0, 1, 1.2, 0.010),
    )
}
MAJORS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "USDCAD", "NZDUSD")
SUFFIXES = ("", ".m", ".r")

SECONDS_PER_DAY = 86_400.0
MEAN_REVERSION_PER_S = 1 / 3600  # pulls prices back over ~an hour so long runs stay plausible


def canonical(symbol: str) -> str:
    """`EURUSD.m` -> `EURUSD`."""
    return symbol.split(".", 1)[0]


@functools.lru_cache(maxsize=1024)
def spec_for(symbol: str) -> SymbolSpec:
    base = SYMBOLS.get(canonical(symbol))
    if base is None:
        raise KeyError(f"unknown symbol {symbol!r}; known: {', '.join(SYMBOLS)}")
    return base if base.name == symbol else replace(base, name=symbol)


@dataclass(frozen=True, slots=True)
class Quote:
    bid: float
    ask: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


class Market:
    """Prices of every canonical symbol, moved by a seeded mean-reverting random walk in log price.

    `speed` scales volatility so a demo shows visible moves in seconds rather than hours.
    """

    def __init__(self, seed: int = 1, *, speed: float = 5.0, start_ms: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.speed = speed
        self._mid = {name: spec.start for name, spec in SYMBOLS.items()}
        self._spread_factor = {name: 1.0 for name in SYMBOLS}
        self._last_ms = start_ms
        # Quotes by symbol as asked (suffixes included) until the prices move: a fleet shares one market,
        # and hundreds of accounts read the same quotes between two steps.
        self._quotes: dict[str, Quote] = {}

    # --- moving the market ------------------------------------------------------------------
    def advance(self, now_ms: int) -> None:
        """Step the walk up to `now_ms`; many callers may share one market, each call adds the elapsed time."""
        if self._last_ms is None:
            self._last_ms = now_ms
            return
        dt = (now_ms - self._last_ms) / 1000
        if dt > 0:
            self._last_ms = now_ms
            self.step(min(dt, 60.0))  # after a long pause, don't jump a whole day's moves at once

    def step(self, dt_s: float) -> None:
        self._quotes.clear()
        for name, spec in SYMBOLS.items():
            sigma = spec.daily_vol / math.sqrt(SECONDS_PER_DAY) * self.speed
            drift = -MEAN_REVERSION_PER_S * math.log(self._mid[name] / spec.start) * dt_s
            self._mid[name] *= math.exp(drift + sigma * math.sqrt(dt_s) * self.rng.gauss(0.0, 1.0))
            # Spreads breathe: mostly near typical, now and then a wider moment.
            widen = 2.5 if self.rng.random() < 0.02 else 1.0
            self._spread_factor[name] = self.rng.uniform(0.8, 1.4) * widen

    def set_mid(self, symbol: str, mid: float) -> None:
        """Pin a price (tests, scenario scripts)."""
        self._mid[canonical(symbol)] = mid
        self._quotes.clear()

    # --- reading it ---------------------------------------------------------------------------
    def mid(self, symbol: str) -> float:
        spec_for(symbol)  # unknown symbols fail with a clear message, not a bare KeyError
        return self._mid[canonical(symbol)]

    def quote(self, symbol: str) -> Quote:
        quote = self._quotes.get(symbol)
        if quote is None:
            spec = spec_for(symbol)
            name = canonical(symbol)
            spread = max(spec.point, spec.spread_pips * spec.pip * self._spread_factor[name])
            bid = round(self._mid[name] - spread / 2, spec.digits)
            ask = round(max(bid + spec.point, bid + spread), spec.digits)
            quote = self._quotes[symbol] = Quote(bid, ask)
        return quote

    def to_usd(self, amount: float, currency: str) -> float:
        """Convert with the current mid of `{ccy}USD` or `USD{ccy}`; the simulated world has one of each."""
        if currency == "USD":
            return amount
        if f"{currency}USD" in self._mid:
            return amount * self._mid[f"{currency}USD"]
        if f"USD{currency}" in self._mid:
            return amount / self._mid[f"USD{currency}"]
        raise KeyError(f"no USD rate for {currency}")

    def profit_usd(self, symbol: str, side: str, volume: float, open_price: float, price: float) -> float:
        """Floating P/L: points moved x lots x contract size, in the quote currency, then in USD."""
        spec = spec_for(symbol)
        direction = 1.0 if side == "buy" else -1.0
        return self.to_usd((price - open_price) * direction * volume * spec.contract, spec.quote)

    def margin_usd(self, symbol: str, volume: float, leverage: int, price: float | None = None) -> float:
        """Notional in USD over leverage (MT5's Forex/CFD-leverage calculation modes)."""
        spec = spec_for(symbol)
        notional = volume * spec.contract * (price if price is not None else self.mid(symbol))
        return self.to_usd(notional, spec.quote) / max(1, leverage)
