"""Alert rules (DESIGN.md §7) as pure logic over observations. No I/O and no clock of its own.

The hub feeds observations in (an account update, a session starting or ending, a stop-out close,
a periodic check) and gets `Raise` / `Resolve` transitions back, which it persists, publishes and
notifies. Each (account, type) has at most one open episode: a transition is produced only when an
episode starts or ends, so flapping around a threshold cannot produce a stream of alerts.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import get_args

from tradewire.config import AlertSettings, AlertType, MarketHours
from tradewire.model import AccountState, Alert
from tradewire.state import AccountView

MARGIN_CALL = "MARGIN_CALL"
STOP_OUT = "STOP_OUT"
CONNECTION_LOST = "CONNECTION_LOST"
SYSTEM_ERROR = "SYSTEM_ERROR"
STALE_DATA = "STALE_DATA"
ALERT_TYPES: tuple[str, ...] = get_args(AlertType)  # the config's names for them are the only list
EPISODIC = (MARGIN_CALL, STOP_OUT, CONNECTION_LOST, STALE_DATA)  # SYSTEM_ERROR: one alert per error
STOP_OUT_CLOSE_LATE_MS = 5 * 60_000  # a stop-out CLOSE this long after its STOP_OUT ended belongs to it


@dataclass(frozen=True, slots=True)
class Levels:
    margin_call_level: float
    stop_out_level: float
    hysteresis_pct: float
    connection_lost_after_s: float
    stale_after_s: float


@dataclass(frozen=True, slots=True)
class Raise:
    type: str
    severity: str
    account: str
    message: str
    at: int
    data: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolve:
    type: str
    account: str
    message: str
    at: int


Transition = Raise | Resolve


def is_stop_out_close(msg: object) -> bool:
    """An EA's CLOSE of a position the broker liquidated (reason `stopout`)."""
    return getattr(msg, "event", None) == "CLOSE" and (getattr(msg, "reason", None) or "").lower() == "stopout"


def levels_for(settings: AlertSettings, account: str) -> Levels:
    override = settings.accounts.get(account)

    def pick(name: str) -> float:
        value = getattr(override, name, None) if override is not None else None
        return value if value is not None else getattr(settings, name)

    return Levels(*(pick(name) for name in Levels.__slots__))  # type: ignore[arg-type]


# --- market hours -------------------------------------------------------------------------------
def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _wall_clock(hours: MarketHours, now_ms: int) -> tuple[int, int]:
    """(minute of the week, minute of the day) at `now_ms` on the market's own clock (its `tz`)."""
    local = datetime.fromtimestamp(now_ms / 1000, _zone(hours.tz))
    minute_of_day = local.hour * 60 + local.minute
    return local.weekday() * 1440 + minute_of_day, minute_of_day


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def market_open(hours: MarketHours, now_ms: int) -> bool:
    """Whether a symbol class trades at `now_ms` (UTC ms): a weekly window plus an optional daily break,
    on the market's own clock."""
    return market_opened_at(hours, now_ms) is not None


def market_opened_at(hours: MarketHours, now_ms: int) -> int | None:
    """When the current trading stretch began (UTC ms; 0 for a market open all week without a break): the
    weekly open or the end of the daily break, whichever came last. None while the market is shut. Prices
    cannot move while it is, so staleness counts from here. (Counted back on the market's clock: its
    daylight-saving changes fall on weekends, when it is shut.)"""
    week_minute, minute_of_day = _wall_clock(hours, now_ms)
    minute_start = now_ms - now_ms % 60_000
    start = hours.open_day * 1440 + _minutes(hours.open)
    end = hours.close_day * 1440 + _minutes(hours.close)
    opened = 0
    if start != end:  # the same open and close: around the clock (e.g. crypto)
        # The window may wrap over the week's end (Sunday evening to Friday evening).
        in_week = (start <= week_minute < end) if start < end else (week_minute >= start or week_minute < end)
        if not in_week:
            return None
        opened = minute_start - ((week_minute - start) % 10_080) * 60_000
    if hours.daily_break:
        b0, b1 = (_minutes(x) for x in hours.daily_break)
        if (b0 <= minute_of_day < b1) if b0 < b1 else (minute_of_day >= b0 or minute_of_day < b1):  # over midnight
            return None
        opened = max(opened, minute_start - ((minute_of_day - b1) % 1440) * 60_000)
    return opened


@lru_cache(maxsize=4096)
def _symbol_class(symbol: str, patterns: tuple[tuple[str, str], ...]) -> str:
    for name, pattern in patterns:
        if re.search(pattern, symbol, re.IGNORECASE):  # brokers spell them xauusd, GOLD, #US30 ...
            return name
    return "fx"


class AlertRules:
    def __init__(self, settings: AlertSettings, heartbeat_s: float) -> None:
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self.open: set[tuple[str, str]] = set()  # (account, type) of open episodes
        self.ended: dict[str, int] = {}  # account -> when its last session ended (ms), while none is open
        self._patterns = tuple(settings.symbol_classes.items())
        self._levels: dict[str, Levels] = {}
        self._stop_out_ended: dict[str, int] = {}  # account -> when its last STOP_OUT episode was resolved
        self._markets: dict[str, int | None] = {}  # this check's market state by symbol class (see _market)

    def levels(self, account: str) -> Levels:
        levels = self._levels.get(account)
        if levels is None:  # settings do not change while running: resolve each account's levels once
            levels = self._levels[account] = levels_for(self.settings, account)
        return levels

    def load(self, open_alerts: Iterable[Alert]) -> None:
        """Adopt the episodes that were open before a restart: they stay open, they are not raised again."""
        for alert in open_alerts:
            if alert.type in EPISODIC and alert.resolvedAt is None:
                self.open.add((alert.account, alert.type))

    def load_episodes(self, account: str, types: Iterable[str]) -> None:
        """Take an account's open episodes, by type, as the store has them (the AWS handlers read only these,
        not the alerts; a node reads them again when the account's EA says hello to it): what another node
        raised or resolved meanwhile is known here from now on."""
        self.open.difference_update({(account, t) for t in EPISODIC})
        self.open.update((account, t) for t in types if t in EPISODIC)

    def _raise(
        self, out: list[Transition], account: str, type_: str, severity: str, message: str, at: int, **data: object
    ) -> None:
        if (account, type_) not in self.open:
            self.open.add((account, type_))
            out.append(Raise(type_, severity, account, message, at, dict(data)))

    def _resolve(self, out: list[Transition], account: str, type_: str, message: str, at: int) -> None:
        if (account, type_) in self.open:
            self.open.discard((account, type_))
            out.append(Resolve(type_, account, message, at))
            if type_ == STOP_OUT:
                self._stop_out_ended[account] = at

    # --- margin ---------------------------------------------------------------------------------
    def margin(self, account: str, state: AccountState, platform: str | None, now: int) -> list[Transition]:
        """MARGIN_CALL and STOP_OUT from an account update.

        Percent mode compares the margin level (equity / margin * 100) with the levels in percent;
        hysteresis is in percentage points. Money mode compares money as the broker does: equity on
        MT5, free margin on MT4 (AccountStopoutMode 1); hysteresis is a percentage of the level, or of the
        margin in use where that is more (a level of 0 would have none). A level configured for the account
        is in percent whatever the broker's mode: that check compares the margin level.
        A level of None (no margin used) is no risk: it never alerts, and it ends open episodes.
        """
        out: list[Transition] = []
        lv = self.levels(account)
        override = self.settings.accounts.get(account)
        # Money mode compares amounts of money with the account's own levels, which only its EA knows: a
        # percent default stands for none. Without them, the margin level in percent is what there is.
        money_mode = (
            state.marginMode == "money" and state.marginCallLevel is not None and state.stopOutLevel is not None
        )
        amount: float | None = state.freeMargin if platform == "MT4" else state.equity
        if state.margin <= 0:
            amount = None
        checks = (
            (MARGIN_CALL, "HIGH", *_threshold(override, "margin_call_level", state.marginCallLevel,
                                              lv.margin_call_level, money_mode)),
            (STOP_OUT, "CRITICAL", *_threshold(override, "stop_out_level", state.stopOutLevel,
                                               lv.stop_out_level, money_mode)),
        )  # fmt: skip
        for type_, severity, threshold, money in checks:
            value = amount if money else state.marginLevel
            if value is None:
                self._resolve(out, account, type_, "no margin in use", now)
                continue
            unit = "" if money else "%"
            shown = f"{'free margin' if money and platform == 'MT4' else 'equity' if money else 'margin level'}"
            if value <= threshold:
                self._raise(
                    out,
                    account,
                    type_,
                    severity,
                    f"{shown} {value:.2f}{unit} at or below {threshold:g}{unit}",
                    now,
                    value=value,
                    threshold=threshold,
                    mode="money" if money else "percent",
                )
            else:
                band = lv.hysteresis_pct / 100
                clear = threshold + max(threshold, state.margin) * band if money else threshold + lv.hysteresis_pct
                if value > clear:
                    self._resolve(out, account, type_, f"{shown} {value:.2f}{unit} back above {clear:g}{unit}", now)
        return out

    def stop_out_ended(self, account: str, at: int) -> None:
        """When the account's last STOP_OUT episode ended, as the store has it (the AWS handlers keep no rules
        between calls: see stop_out_close)."""
        self._stop_out_ended[account] = max(at, self._stop_out_ended.get(account, at))

    def stop_out_close(self, account: str, position_id: int, symbol: str, now: int) -> list[Transition]:
        """A CLOSE with reason stopout: the broker is already liquidating. Unless a STOP_OUT episode ended
        within STOP_OUT_CLOSE_LATE_MS: the liquidation lifts the level, the account update saying so ends the
        episode, and the CLOSE that reports the liquidation often comes after it. It is the same stop-out."""
        out: list[Transition] = []
        if now - self._stop_out_ended.get(account, -STOP_OUT_CLOSE_LATE_MS) < STOP_OUT_CLOSE_LATE_MS:
            return out
        self._raise(
            out,
            account,
            STOP_OUT,
            "CRITICAL",
            f"position {position_id} ({symbol}) closed by stop-out",
            now,
            positionId=position_id,
            symbol=symbol,
        )
        return out

    # --- connection -----------------------------------------------------------------------------
    def session_started(self, account: str, now: int) -> list[Transition]:
        self.ended.pop(account, None)
        out: list[Transition] = []
        self._resolve(out, account, CONNECTION_LOST, "EA connected again", now)
        return out

    def session_ended(self, account: str, now: int) -> None:
        self.ended[account] = now

    def seen(self, account: str, now: int) -> list[Transition]:
        """Any message from the account ends a silence episode."""
        if (account, CONNECTION_LOST) not in self.open or account in self.ended:
            return []
        out: list[Transition] = []
        self._resolve(out, account, CONNECTION_LOST, "EA messages arriving again", now)
        return out

    # --- periodic -------------------------------------------------------------------------------
    def _market(self, kind: str, now: int) -> int | None:
        """When the class's market last opened (0: always open), None while it is shut; once per class per
        check (`_markets`), not per account and symbol."""
        if kind not in self._markets:
            hours = self.settings.market_hours.get(kind)
            self._markets[kind] = 0 if hours is None else market_opened_at(hours, now)
        return self._markets[kind]

    def check(self, now: int, accounts: Mapping[str, AccountView]) -> list[Transition]:
        self._markets = {}
        out: list[Transition] = []
        for account, ended_at in self.ended.items():
            grace = self.levels(account).connection_lost_after_s * 1000
            if now - ended_at >= grace:
                self._raise(
                    out,
                    account,
                    CONNECTION_LOST,
                    "HIGH",
                    f"no EA connection for {(now - ended_at) / 1000:.0f} s",
                    now,
                    since=ended_at,
                )
        silence = 3 * self.heartbeat_s * 1000
        for account, view in accounts.items():
            if account in self.ended or not view.ever_connected:
                continue
            if view.sessions == 0 and view.transport != "http":
                continue
            if now - view.last_seen > silence:
                self._raise(
                    out,
                    account,
                    CONNECTION_LOST,
                    "HIGH",
                    f"no message from the EA for {(now - view.last_seen) / 1000:.0f} s (3 heartbeats)",
                    now,
                    since=view.last_seen,
                )
            else:
                self._check_stale(out, account, view, now)
        return out

    def _check_stale(self, out: list[Transition], account: str, view: AccountView, now: int) -> None:
        """Prices as this account's own terminal sends them: another broker's moving quote proves nothing.

        Only symbols it streams: an EA sends ticks for the symbols it is set to (by default its chart's),
        and a position in another one would be stale from the start, for as long as the EA is connected.
        While a symbol's market is shut it is not judged at all (neither stale nor moving again), and its
        clock starts again when the market opens: no price moves over a weekend or a daily break.

        An episode is resolved only by prices seen moving: not by a reconnect or a market open restarting the
        clocks, nor by a restart that forgot the quotes (each resolved it, and it was raised again minutes
        later, two episodes and two notifications for one frozen feed). A symbol not seen moving since then is
        not judged until it moves or its clock runs out.
        """
        limit = self.levels(account).stale_after_s * 1000
        since_connect = view.connected_at or view.last_seen
        held = sorted({p.symbol for p in view.positions.values()})
        if held and not view.quotes:
            return  # nothing heard since a restart: nothing can be judged yet
        stale = []
        shut = judged = unsure = 0
        for symbol in held:
            if symbol not in view.quotes:
                continue  # not streamed by its EA: never judged
            opened = self._market(_symbol_class(symbol, self._patterns), now)
            if opened is None:
                shut += 1
                continue
            judged += 1
            moved = view.price_changed.get(symbol, 0)
            since = max(since_connect, opened)
            if now - max(moved, since) > limit:
                stale.append(symbol)
            elif moved < since or symbol in view.unmoved:
                unsure += 1  # within its clock, not seen moving since the connect or the open
        if not stale and (unsure or (shut and not judged)):
            return  # cannot be judged now: neither raised nor resolved
        if stale:
            self._raise(
                out,
                account,
                STALE_DATA,
                "HIGH",
                f"no price change for {', '.join(stale)} in {limit / 1000:.0f} s while the market is open",
                now,
                symbols=stale,
            )
        else:
            self._resolve(out, account, STALE_DATA, "prices moving again", now)


def _threshold(
    override: object, name: str, from_ea: float | None, default: float, money: bool = False
) -> tuple[float, bool]:
    """(the level, whether it is money). Per-account configuration wins, then what the EA reports, then the
    default. Configuration is in percent, whatever the broker's mode (compared as money, 150 % read as 150 of
    the account's currency, and the margin call came only after the stop-out). In percent mode an EA's 0 means
    the broker sets none; in money mode it is an amount like any other, and the default does not apply."""
    configured = getattr(override, name, None) if override is not None else None
    if configured is not None:
        return configured, False
    if money and from_ea is not None:
        return from_ea, True
    return (from_ea if from_ea else default), False
