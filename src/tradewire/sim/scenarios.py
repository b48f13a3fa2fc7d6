"""Alert scenarios for the fleet simulator, pure logic (no I/O, no clock): make one account raise one alert type.

`tradewire simulate --scenario NAME` attaches one `Scenario` to one account. The fleet calls `tick()` after
every `SimAccount.step()` of that account with the current time; the scenario fires once `fire_at_ms` has
passed, then holds the account in its state for the rest of the run. What each one does, and which of the
hub's rules (DESIGN.md §7) it trips:

- margin-call: an oversized trade, then the margin level held at 80 %: MARGIN_CALL, never STOP_OUT.
- stop-out: an oversized trade and a loss that takes the margin level to 40 %, then (next update) the broker's
  stop-out closes the worst position (a durable CLOSE with reason `stopout`) and the level is held at 55 %,
  above stop-out but inside the hub's default hysteresis band, so the episode stays open: STOP_OUT.
- disconnect: the account closes its connection and never comes back: CONNECTION_LOST after the grace period
  (an MT4 account on HTTP just stops posting: CONNECTION_LOST after 3 quiet heartbeats).
- error: one durable EA `error` message (TRADE_DISABLED, CRITICAL): SYSTEM_ERROR.
- stale: the feed of every symbol the account holds freezes (no more ticks for them; positions keep their last
  price) while heartbeats and account state go on: STALE_DATA once the hub's `stale_after_s` passes while the
  market is open. The hub keeps one price per symbol name for the whole fleet, so a symbol that another
  account quotes keeps moving there; the scenario therefore makes sure the account holds a symbol nobody else
  in the fleet quotes (`avoid_symbols`), opening a small position in one if it must.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tradewire.sim.account import MARGIN_CALL_LEVEL, STOP_OUT_LEVEL, SimAccount, lots
from tradewire.sim.market import SUFFIXES, SYMBOLS

Frame = dict[str, Any]

SCENARIOS = ("margin-call", "stop-out", "disconnect", "error", "stale")
FIRE_AFTER_S = 2.0  # how long after the fleet starts a scenario fires (at the account's next update after it)
STRESS_LEVEL = 85.0  # margin level the oversized trade lands at, before the market turns against it
MARGIN_CALL_HOLD = 80.0  # under margin call (100 %), well above stop-out (50 %)
STOP_OUT_CRASH = 40.0  # under stop-out: what the broker's stop-out reacts to
STOP_OUT_HOLD = 55.0  # after the stop-out close: above 50 %, below 50 % + the hub's default 10-point hysteresis
MAX_LOTS = 500.0
ERROR_CODE = "TRADE_DISABLED"
ERROR_MESSAGE = "AutoTrading is disabled in the terminal: the EA cannot place or close orders"


@dataclass(slots=True)
class Action:
    """What the fleet must do after one tick of the scenario."""

    durable: list[Frame] = field(default_factory=list)  # new durable frames, already in the account's outbox
    leave: bool = False  # close the connection and stay away for the rest of the run
    note: str | None = None  # one line for the operator: the scenario just fired


def hold_margin_level(sim: SimAccount, level: float) -> None:
    """Move the account's money so that equity / margin lands on `level` percent (no-op without margin)."""
    margin = sim.margin
    if margin > 0:
        sim.balance = round(level / 100 * margin - sim.floating, 2)


def open_oversized(sim: SimAccount, now_ms: int, target_level: float) -> Frame:
    """A manual trade sized so that the margin level lands near `target_level` percent."""
    symbol = sim.rng.choice(sim.symbols)
    side = sim.rng.choice(("buy", "sell"))
    extra = sim.equity / (target_level / 100) - sim.margin
    volume = lots(min(MAX_LOTS, max(0.0, extra) / sim.market.margin_usd(symbol, 1.0, sim.leverage)))
    return sim.open_position(now_ms, symbol, side, volume=volume, magic=0, stops=False)


def _describe(frame: Frame) -> str:
    pos = frame["position"]
    return f"{pos['volume']:g} lots {pos['side']} {pos['symbol']} (position {pos['id']})"


class Scenario:
    name = ""

    def __init__(self, account: str, fire_at_ms: int) -> None:
        self.account = account
        self.fire_at_ms = fire_at_ms
        self.fired_at: int | None = None

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    def tick(self, sim: SimAccount, now_ms: int) -> Action:
        if sim.id != self.account:
            return Action()
        if self.fired_at is None:
            if now_ms < self.fire_at_ms:
                return Action()
            self.fired_at = now_ms
            return self.fire(sim, now_ms)
        return self.hold(sim, now_ms)

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        raise NotImplementedError

    def hold(self, sim: SimAccount, now_ms: int) -> Action:
        return Action()


class MarginCall(Scenario):
    name = "margin-call"

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        sim.scripted = True
        opened = open_oversized(sim, now_ms, STRESS_LEVEL)
        hold_margin_level(sim, MARGIN_CALL_HOLD)
        return Action(
            [opened],
            note=f"opened {_describe(opened)}; margin level held at {MARGIN_CALL_HOLD:g} % "
            f"(margin call {MARGIN_CALL_LEVEL:g} %, stop-out {STOP_OUT_LEVEL:g} %)",
        )

    def hold(self, sim: SimAccount, now_ms: int) -> Action:
        hold_margin_level(sim, MARGIN_CALL_HOLD)
        return Action()


class StopOut(Scenario):
    name = "stop-out"

    def __init__(self, account: str, fire_at_ms: int) -> None:
        super().__init__(account, fire_at_ms)
        self.opened: Frame | None = None
        self.closed: Frame | None = None

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        sim.scripted = True
        durable = []
        if not sim.positions:  # something must be left once the broker has closed the worst position
            durable.append(sim.open_position(now_ms, magic=0, stops=False))
        self.opened = open_oversized(sim, now_ms, STRESS_LEVEL)
        durable.append(self.opened)
        hold_margin_level(sim, STOP_OUT_CRASH)  # the market turns: this update reports the level under stop-out
        return Action(durable)

    def hold(self, sim: SimAccount, now_ms: int) -> Action:
        if self.closed is not None:
            hold_margin_level(sim, STOP_OUT_HOLD)
            return Action()
        if not sim.positions:
            return Action()
        worst = min(sim.positions.values(), key=lambda p: p.profit)
        self.closed = sim.close_position(worst.id, now_ms, "stopout")
        hold_margin_level(sim, STOP_OUT_HOLD)
        assert self.opened is not None
        return Action(
            [self.closed],
            note=f"opened {_describe(self.opened)}, margin level driven to {STOP_OUT_CRASH:g} % "
            f"(stop-out {STOP_OUT_LEVEL:g} %); stop-out closed {_describe(self.closed)} "
            f"at {self.closed['profit']:.2f}; margin level now held at {STOP_OUT_HOLD:g} %",
        )


class Disconnect(Scenario):
    name = "disconnect"

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        how = "stopped posting (MT4 on HTTP)" if sim.platform == "MT4" else "closed its WebSocket"
        return Action(leave=True, note=f"{how} and stays away for the rest of the run")


class EAError(Scenario):
    name = "error"

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        frame = sim.error_event(now_ms, ERROR_CODE, ERROR_MESSAGE, "CRITICAL")
        return Action([frame], note=f"sent a durable EA error {ERROR_CODE} (CRITICAL, seq {frame['seq']})")


class Stale(Scenario):
    name = "stale"

    def __init__(self, account: str, fire_at_ms: int, avoid_symbols: Iterable[str] = ()) -> None:
        super().__init__(account, fire_at_ms)
        self.avoid = set(avoid_symbols)

    def own_symbol(self, sim: SimAccount) -> str | None:
        """A symbol nobody else in the fleet quotes, preferring what the account holds, then what it watches."""
        held = sorted({p.symbol for p in sim.positions.values()})
        suffixes = [sim.profile.suffix] + [s for s in SUFFIXES if s != sim.profile.suffix]
        streamed = [s for s in held if s in sim.symbols]  # the hub has its quotes, and its clock, already
        candidates = [*streamed, *held, *sim.symbols, *(name + suffix for suffix in suffixes for name in SYMBOLS)]
        return next((s for s in candidates if s not in self.avoid), None)

    def fire(self, sim: SimAccount, now_ms: int) -> Action:
        sim.scripted = True
        durable = []
        symbol = self.own_symbol(sim)
        warning = ""
        if symbol is None:
            symbol = sim.symbols[0]
            warning = f"; every symbol is quoted by another account, so the hub may still see {symbol} move"
        if symbol not in sim.symbols:
            sim.symbols.append(symbol)
        if symbol not in {p.symbol for p in sim.positions.values()}:
            durable.append(sim.open_position(now_ms, symbol, magic=0, stops=False))
        for held in sorted({p.symbol for p in sim.positions.values()}):
            sim.frozen[held] = sim.market.quote(held)
        sim.mark()
        frozen = ", ".join(f"{s} {q.bid}/{q.ask}" for s, q in sim.frozen.items())
        opened = f"opened {_describe(durable[0])}; " if durable else ""
        return Action(
            durable,
            note=f"{opened}froze the feed of {frozen} (no more ticks; heartbeats and account state go on){warning}",
        )


KINDS: dict[str, type[Scenario]] = {
    "margin-call": MarginCall,
    "stop-out": StopOut,
    "disconnect": Disconnect,
    "error": EAError,
    "stale": Stale,
}


def make_scenario(name: str, account: str, fire_at_ms: int, *, avoid_symbols: Iterable[str] = ()) -> Scenario:
    """The scenario called `name` (one of SCENARIOS) for `account`, firing at `fire_at_ms` (ms since the epoch).

    `avoid_symbols`: what the rest of the fleet quotes (only the stale scenario needs it).
    """
    if name not in KINDS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if name == "stale":
        return Stale(account, fire_at_ms, avoid_symbols)
    return KINDS[name](account, fire_at_ms)
