"""Alert rules, pure: thresholds, hysteresis, null margin, money mode, grace period, flapping, stale data."""

import calendar

import msgspec
import pytest

from tradewire.alerts import (
    CONNECTION_LOST,
    MARGIN_CALL,
    STALE_DATA,
    STOP_OUT,
    AlertRules,
    Raise,
    Resolve,
    levels_for,
    market_open,
)
from tradewire.config import AlertLevels, AlertSettings, MarketHours
from tradewire.model import AccountState, Alert, Position
from tradewire.state import AccountView


def state(level=None, *, equity=1000.0, margin=None, free=None, mode="percent", mc=None, so=None):
    margin = margin if margin is not None else (equity / level * 100 if level else 0.0)
    return AccountState(
        ts=0,
        balance=1000.0,
        equity=equity,
        margin=margin,
        freeMargin=free if free is not None else equity - margin,
        marginLevel=level,
        marginCallLevel=mc,
        stopOutLevel=so,
        marginMode=mode,
    )


def types(transitions, kind=Raise):
    return [t.type for t in transitions if isinstance(t, kind)]


def test_margin_call_then_stop_out_then_recovery_with_hysteresis():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    assert rules.margin("a", state(150), "MT5", 1) == []
    assert types(rules.margin("a", state(100), "MT5", 2)) == [MARGIN_CALL]  # at the level counts
    assert types(rules.margin("a", state(49), "MT5", 3)) == [STOP_OUT]  # margin call already open: not again
    assert rules.margin("a", state(55), "MT5", 4) == []  # above 50 but not above 50 + 10
    assert types(rules.margin("a", state(61), "MT5", 5), Resolve) == [STOP_OUT]
    assert rules.margin("a", state(105), "MT5", 6) == []  # inside the hysteresis band of the margin call
    assert types(rules.margin("a", state(111), "MT5", 7), Resolve) == [MARGIN_CALL]


def test_flapping_around_the_threshold_raises_once():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    raised = []
    for n, level in enumerate([99, 101, 99.5, 100.5, 98, 109, 100, 102]):
        raised += types(rules.margin("a", state(level), "MT5", n))
    assert raised == [MARGIN_CALL]


def test_null_margin_level_never_alerts_and_ends_an_episode():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    assert rules.margin("a", state(None), "MT5", 1) == []
    rules.margin("a", state(80), "MT5", 2)
    assert types(rules.margin("a", state(None), "MT5", 3), Resolve) == [MARGIN_CALL]


def test_levels_from_the_ea_then_per_account_overrides():
    rules = AlertRules(AlertSettings(accounts={"b": AlertLevels(margin_call_level=200)}), heartbeat_s=10)
    assert types(rules.margin("a", state(140, mc=150), "MT5", 1)) == [MARGIN_CALL]  # the broker's 150 %
    assert rules.margin("c", state(140, mc=0), "MT5", 1) == []  # 0 from the EA: the default 100 %
    assert types(rules.margin("b", state(190, mc=150), "MT5", 1)) == [MARGIN_CALL]  # configured 200 % wins
    assert levels_for(rules.settings, "b").margin_call_level == 200
    assert levels_for(rules.settings, "b").stop_out_level == 50


def test_money_mode_compares_equity_on_mt5_and_free_margin_on_mt4():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    # MT5: equity 900 against a 1000 money margin-call level, 500 stop-out
    assert types(rules.margin("a", state(equity=900, margin=300, mode="money", mc=1000, so=500), "MT5", 1)) == [
        MARGIN_CALL
    ]
    # resolves only above 1000 * 1.10
    assert rules.margin("a", state(equity=1050, margin=300, mode="money", mc=1000, so=500), "MT5", 2) == []
    assert types(rules.margin("a", state(equity=1101, margin=300, mode="money", mc=1000, so=500), "MT5", 3), Resolve)
    # MT4: free margin 400 is below the 500 stop-out level even though equity is 2000
    got = rules.margin("m4", state(equity=2000, margin=1600, free=400, mode="money", mc=1000, so=500), "MT4", 1)
    assert set(types(got)) == {MARGIN_CALL, STOP_OUT}
    assert "free margin" in got[0].message


def test_stop_out_close_raises_once():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    [t] = rules.stop_out_close("a", 7, "EURUSD", 1)
    assert t.type == STOP_OUT and t.severity == "CRITICAL" and "7" in t.message
    assert rules.stop_out_close("a", 8, "EURUSD", 2) == []


def test_a_stop_out_close_just_after_its_episode_ended_is_the_same_stop_out():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    rules.margin("a", state(45), "MT5", 1_000)
    assert STOP_OUT in types(rules.margin("a", state(130), "MT5", 2_000), Resolve)
    assert rules.stop_out_close("a", 7, "EURUSD", 2_500) == []  # the liquidation's own CLOSE, reported late
    assert types(rules.stop_out_close("a", 8, "EURUSD", 2_000 + 5 * 60_000)) == [STOP_OUT]  # a new one


def view(**kw):
    v = AccountView("a", ever_connected=True)
    for k, value in kw.items():
        setattr(v, k, value)
    return v


def test_connection_lost_only_after_the_grace_period():
    rules = AlertRules(AlertSettings(connection_lost_after_s=15), heartbeat_s=10)
    rules.session_ended("a", 1_000)
    accounts = {"a": view(sessions=0, last_seen=1_000)}
    assert rules.check(15_999, accounts) == []
    [t] = rules.check(16_000, accounts)
    assert t.type == CONNECTION_LOST and t.severity == "HIGH"
    assert rules.check(20_000, accounts) == []  # once per episode
    assert types(rules.session_started("a", 21_000), Resolve) == [CONNECTION_LOST]


def test_quick_reconnect_inside_the_grace_period_raises_nothing():
    rules = AlertRules(AlertSettings(connection_lost_after_s=15), heartbeat_s=10)
    rules.session_ended("a", 1_000)
    assert rules.session_started("a", 5_000) == []
    assert rules.check(60_000, {"a": view(sessions=1, last_seen=59_000)}) == []


def test_silence_for_three_heartbeats_while_connected():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    accounts = {"a": view(sessions=1, last_seen=0, connected_at=0)}
    assert rules.check(30_000, accounts) == []
    assert types(rules.check(30_001, accounts)) == [CONNECTION_LOST]
    assert types(rules.seen("a", 31_000), Resolve) == [CONNECTION_LOST]


def test_per_account_grace_override():
    rules = AlertRules(AlertSettings(accounts={"a": AlertLevels(connection_lost_after_s=60)}), heartbeat_s=10)
    rules.session_ended("a", 0)
    assert rules.check(59_000, {}) == []
    assert types(rules.check(60_000, {})) == [CONNECTION_LOST]


def test_open_episodes_survive_a_restart():
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    rules.load([Alert(id="x", type=MARGIN_CALL, severity="HIGH", account="a", message="", raisedAt=1)])
    assert rules.margin("a", state(90), "MT5", 2) == []  # already open: not raised again
    assert types(rules.margin("a", state(200), "MT5", 3), Resolve) == [MARGIN_CALL]


def utc(y, mo, d, h, mi=0):
    return calendar.timegm((y, mo, d, h, mi, 0)) * 1000


def test_market_hours_weekly_window_and_daily_break():
    fx = MarketHours()  # Sunday 22:00 to Friday 22:00 UTC
    assert not market_open(fx, utc(2026, 11, 22, 21, 59))  # Sunday before the open
    assert market_open(fx, utc(2026, 11, 22, 22, 0))
    assert market_open(fx, utc(2026, 11, 25, 12))  # Wednesday
    assert not market_open(fx, utc(2026, 11, 27, 22, 0))  # Friday close
    assert not market_open(fx, utc(2026, 11, 28, 12))  # Saturday
    index = MarketHours(open="23:00", close="21:00", daily_break=["21:00", "22:00"])
    assert not market_open(index, utc(2026, 11, 25, 21, 30))  # daily break
    assert market_open(index, utc(2026, 11, 25, 22, 30))
    overnight = MarketHours(daily_break=["23:55", "00:05"])  # a break over midnight (it was never one)
    assert not market_open(overnight, utc(2026, 11, 25, 23, 58)) and not market_open(overnight, utc(2026, 11, 26, 0, 2))
    assert market_open(overnight, utc(2026, 11, 25, 23, 50)) and market_open(overnight, utc(2026, 11, 26, 0, 5))


def pos(symbol):
    return Position(id=hash(symbol) & 0xFFFF, symbol=symbol, side="buy", volume=1, openPrice=1, openTime=0)


def test_stale_prices_for_traded_symbols_while_the_market_is_open():
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    wednesday = utc(2026, 11, 25, 12)
    positions = {1: pos("EURUSD"), 2: pos("US30.cash")}
    a = view(sessions=1, connected_at=wednesday - 600_000, last_seen=wednesday, positions=positions)
    a.quotes = {"EURUSD": (1.1, 1.1001), "US30.cash": (44_000.0, 44_001.0)}  # the symbols its EA streams
    accounts = {"a": a}
    a.price_changed = {"EURUSD": wednesday - 1_000, "US30.cash": wednesday - 1_000}
    assert rules.check(wednesday, accounts) == []
    a.price_changed = {"EURUSD": wednesday - 121_000, "US30.cash": wednesday - 1_000}
    [t] = rules.check(wednesday, accounts)
    assert t.type == STALE_DATA and t.data["symbols"] == ["EURUSD"]
    a.price_changed = {"EURUSD": wednesday - 1_000, "US30.cash": wednesday - 1_000}
    assert types(rules.check(wednesday + 1, accounts), Resolve) == [STALE_DATA]


def test_no_stale_alert_when_the_market_is_closed_or_no_positions():
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    saturday = utc(2026, 11, 28, 12)
    accounts = {"a": view(sessions=1, connected_at=0, last_seen=saturday, positions={1: pos("EURUSD")})}
    assert rules.check(saturday, accounts) == []
    wednesday = utc(2026, 11, 25, 12)
    idle = {"a": view(sessions=1, connected_at=0, last_seen=wednesday, positions={})}
    assert rules.check(wednesday, idle) == []


def test_a_symbol_the_ea_does_not_stream_is_not_judged_stale():
    """EAs stream their chart's symbol by default: a position in another one was stale 120 s after connect,
    and stayed so for as long as the EA was connected."""
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    wednesday = utc(2026, 11, 25, 12)
    a = view(sessions=1, connected_at=wednesday - 600_000, last_seen=wednesday)
    a.positions = {1: pos("EURUSD"), 2: pos("GBPUSD")}
    a.quotes, a.price_changed = {"EURUSD": (1.1, 1.1001)}, {"EURUSD": wednesday - 1_000}
    assert rules.check(wednesday, {"a": a}) == []


def test_staleness_counts_from_the_market_open_and_a_close_resolves_nothing():
    """The clock did not restart when a market opened: a metal's last price before the daily break was
    'stale' the minute it reopened; and a close resolved the episode ("prices moving again")."""
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    before_break = utc(2026, 11, 25, 21, 59)  # metals pause 22:00-23:00 UTC in winter (17:00 New York)
    a = view(sessions=1, connected_at=utc(2026, 11, 25, 12), positions={1: pos("XAUUSD")})
    a.quotes, a.price_changed = {"XAUUSD": (2380.0, 2380.3)}, {"XAUUSD": before_break}
    reopened = utc(2026, 11, 25, 23, 1)
    a.last_seen = reopened
    assert rules.check(reopened, {"a": a}) == []  # a minute into the open: not stale yet
    later = reopened + 120_000
    a.last_seen = later
    assert types(rules.check(later, {"a": a})) == [STALE_DATA]  # two minutes of an open market: stale
    friday_close = utc(2026, 11, 27, 22, 30)
    a.last_seen = friday_close
    assert rules.check(friday_close, {"a": a}) == []  # shut: not judged, the episode left as it is


def test_market_opened_at_is_the_weekly_open_or_the_end_of_the_break():
    from tradewire.alerts import market_opened_at

    metal = MarketHours(open="23:00", close="21:00", daily_break=["21:00", "22:00"])
    assert market_opened_at(metal, utc(2026, 11, 25, 22, 1)) == utc(2026, 11, 25, 22)  # after the break
    assert market_opened_at(metal, utc(2026, 11, 23, 12)) == utc(2026, 11, 22, 23)  # Monday: Sunday's open
    all_week = MarketHours(open_day=0, open="00:00", close_day=0, close="00:00")
    assert market_opened_at(all_week, utc(2026, 11, 25, 12)) == 0


@pytest.mark.parametrize("symbol", ["XAUUSD", "XAUUSD.r"])
@pytest.mark.parametrize("in_break", [utc(2026, 11, 25, 22, 30), utc(2026, 7, 1, 21, 30)])  # 17:30 in New York
def test_metals_follow_their_own_hours_on_new_york_time(symbol, in_break):
    """The break is 17:00-18:00 New York time: 22:00-23:00 UTC in winter, 21:00-22:00 in summer. Kept in UTC,
    it was an hour off half the year, and a metal's quiet hour was called stale every weekday."""
    rules = AlertRules(AlertSettings(stale_after_s=1), heartbeat_s=10)
    a = view(sessions=1, connected_at=in_break - 600_000, last_seen=in_break, positions={1: pos(symbol)})
    a.quotes, a.price_changed = {symbol: (2380.0, 2380.3)}, {symbol: in_break - 600_000}
    assert rules.check(in_break, {"a": a}) == []
    a.last_seen = in_break + 3_600_000
    assert types(rules.check(in_break + 3_600_000, {"a": a})) == [STALE_DATA]  # an hour later it trades


def test_fx_closes_at_five_in_new_york_all_year():
    fx = AlertSettings().market_hours["fx"]
    assert not market_open(fx, utc(2026, 7, 3, 21, 30))  # a summer Friday: closed since 21:00 UTC
    assert market_open(fx, utc(2026, 11, 27, 21, 30))  # a winter Friday: open until 22:00 UTC
    assert market_open(fx, utc(2026, 7, 5, 21, 30)) and not market_open(fx, utc(2026, 11, 29, 21, 30))  # Sundays
    with pytest.raises(ValueError, match="tz"):
        MarketHours(tz="Mars/Olympus_Mons")


def test_staleness_is_judged_on_the_accounts_own_feed():
    """Another broker's EURUSD moving says nothing about this terminal's prices."""
    from tradewire.model import Tick
    from tradewire.state import LiveState

    state = LiveState()
    state.apply_ticks([Tick(symbol="EURUSD", bid=1.1, ask=1.2, ts=1)], now=1_000, account="frozen")
    state.apply_ticks([Tick(symbol="EURUSD", bid=1.1, ask=1.2, ts=2)], now=200_000, account="frozen")  # same quote
    state.apply_ticks([Tick(symbol="EURUSD", bid=1.3, ask=1.4, ts=3)], now=200_000, account="lively")
    assert state.account("frozen").price_changed == {"EURUSD": 1_000}
    assert state.account("lively").price_changed == {"EURUSD": 200_000}


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [("GOLD", "metal"), ("xauusd", "metal"), ("#US30", "index"), ("US100", "index"), ("USOIL", "energy"),
     ("BTCUSD", "crypto"), ("EURUSD", "fx"), ("US30.cash", "index")],
)  # fmt: skip
def test_common_broker_names_fall_in_their_class(symbol, kind):
    """GOLD, xauusd, #US30 ... were all "fx": stale in every metals break, crypto never judged at weekends."""
    from tradewire.alerts import _symbol_class

    assert _symbol_class(symbol, tuple(AlertSettings().symbol_classes.items())) == kind


def test_money_mode_uses_the_accounts_own_levels_and_never_the_percent_defaults():
    """An MT4 money-mode account reporting levels of 0 had the percent defaults (100, 50) applied as money:
    a margin call with 50 of free margin and the margin level at 150 %."""
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    money = AccountState(
        ts=1, balance=150, equity=150, margin=100, freeMargin=50, marginLevel=150.0,
        marginCallLevel=0, stopOutLevel=0, marginMode="money",
    )  # fmt: skip
    assert rules.margin("m4", money, "MT4", 1) == []
    unknown = msgspec.structs.replace(money, marginCallLevel=None, stopOutLevel=None, marginLevel=90.0)
    assert types(rules.margin("m5", unknown, "MT5", 1)) == [MARGIN_CALL]  # no levels: the margin level in %


def test_a_stale_episode_resolves_when_its_last_position_closes():
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    wednesday = utc(2026, 11, 25, 12)
    a = view(sessions=1, connected_at=wednesday - 600_000, last_seen=wednesday, positions={1: pos("EURUSD")})
    a.quotes, a.price_changed = {"EURUSD": (1.1, 1.1001)}, {"EURUSD": wednesday - 300_000}
    assert types(rules.check(wednesday, {"a": a})) == [STALE_DATA]
    a.positions = {}
    assert types(rules.check(wednesday + 1_000, {"a": a}), Resolve) == [STALE_DATA]


def test_a_config_that_sets_some_market_hours_keeps_the_others():
    """Setting [alerts.market_hours.fx] replaced every class's hours: metals and indices were then judged
    around the clock, stale every weekend."""
    settings = AlertSettings(market_hours={"fx": MarketHours()})
    assert {"fx", "metal", "index", "energy", "crypto"} <= set(settings.market_hours)
    assert settings.market_hours["fx"] == MarketHours()  # the one it set, as it set it


def test_a_level_configured_for_a_money_mode_account_is_compared_in_percent():
    """The README's `[alerts.accounts.X] margin_call_level = 150` on a money-mode broker was compared as money:
    equity 1,500 against "150" never raised, and the margin call came only after the stop-out."""
    settings = AlertSettings(accounts={"x": AlertLevels(margin_call_level=150)})
    rules = AlertRules(settings, heartbeat_s=10)
    s = state(140.0, equity=1500, margin=1500 / 1.4, mode="money", mc=2000, so=1000)
    [raised] = rules.margin("x", s, "MT5", 1)
    assert (raised.type, raised.data["threshold"], raised.data["mode"]) == (MARGIN_CALL, 150, "percent")
    assert "margin level 140.00% at or below 150%" in raised.message
    # the stop-out, not configured, is still the broker's money level: equity 900 is below 1,000
    got = rules.margin("x", state(90.0, equity=900, margin=1000, mode="money", mc=2000, so=1000), "MT5", 2)
    [stop] = [t for t in got if isinstance(t, Raise)]
    assert (stop.type, stop.data["threshold"], stop.data["mode"]) == (STOP_OUT, 1000, "money")


def test_a_money_level_of_zero_still_has_hysteresis():
    """An MT4 stop-out at 0 of free margin had no band (0 x 1.1 = 0): free margin going -5 / +5 raised and
    resolved on every update. The band is now a share of the margin in use where the level is smaller."""
    rules = AlertRules(AlertSettings(), heartbeat_s=10)
    raised = 0
    for n, free in enumerate([-5, 5, -5, 5, -5, 5, 60, 120], start=1):
        s = state(equity=1000 + free, margin=1000, free=free, mode="money", mc=0, so=0)
        got = rules.margin("m4", s, "MT4", n)
        raised += len(types(got))
        if free == 120:  # past 10 % of the 1,000 in use: over
            assert set(types(got, Resolve)) == {MARGIN_CALL, STOP_OUT}
        else:
            assert types(got, Resolve) == []
    assert raised == 2  # one margin call and one stop-out, not one of each per dip


def _stale_rules_and_account(now):
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    a = view(sessions=1, connected_at=now - 600_000, last_seen=now, positions={1: pos("EURUSD")})
    a.quotes, a.price_changed = {"EURUSD": (1.1, 1.1001)}, {"EURUSD": now - 300_000}
    assert types(rules.check(now, {"a": a})) == [STALE_DATA]
    return rules, a


def test_a_stale_episode_is_not_resolved_by_a_restart_that_forgot_the_quotes():
    """After a restart the quotes are gone: nothing was judged, so the first check resolved the episode as
    "prices moving again", and it was raised again two minutes later with the same frozen price."""
    from tradewire.model import Tick
    from tradewire.state import LiveState

    wednesday = utc(2026, 11, 25, 12)
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    rules.load([Alert(id="s", type=STALE_DATA, severity="HIGH", account="a", message="m", raisedAt=wednesday - 1)])
    state = LiveState()
    a = state.account("a")
    a.sessions, a.ever_connected, a.connected_at, a.positions = 1, True, wednesday, {1: pos("EURUSD")}
    a.last_seen = wednesday + 1_000
    assert rules.check(wednesday + 1_000, {"a": a}) == []  # no quote yet: not judged
    state.apply_ticks([Tick(symbol="EURUSD", bid=1.1, ask=1.1001, ts=1)], now=wednesday + 2_000, account="a")
    a.last_seen = wednesday + 3_000
    assert rules.check(wednesday + 3_000, {"a": a}) == []  # its first quote since the restart: not a move
    state.apply_ticks([Tick(symbol="EURUSD", bid=1.2, ask=1.2001, ts=2)], now=wednesday + 4_000, account="a")
    a.last_seen = wednesday + 5_000
    assert types(rules.check(wednesday + 5_000, {"a": a}), Resolve) == [STALE_DATA]  # moving: resolved


def test_a_reconnect_restarts_the_clock_but_does_not_resolve_a_frozen_feed():
    wednesday = utc(2026, 11, 25, 12)
    rules, a = _stale_rules_and_account(wednesday)
    a.connected_at = a.last_seen = wednesday + 10_000  # the EA reconnects: the price has not moved
    assert rules.check(wednesday + 10_000, {"a": a}) == []
    a.last_seen = wednesday + 200_000
    assert rules.check(wednesday + 200_000, {"a": a}) == []  # still frozen: the same episode, not a second
    a.price_changed["EURUSD"] = a.last_seen = wednesday + 210_000
    assert types(rules.check(wednesday + 210_000, {"a": a}), Resolve) == [STALE_DATA]


def test_a_stale_symbol_moving_again_resolves_while_another_held_symbols_market_is_shut():
    """BTCUSD trades all week; EURUSD's market shut at the weekend held the BTCUSD episode open until Sunday's
    FX open, 34 hours after BTCUSD moved again."""
    saturday = utc(2026, 11, 28, 12)
    rules = AlertRules(AlertSettings(stale_after_s=120), heartbeat_s=10)
    a = view(sessions=1, connected_at=saturday - 600_000, last_seen=saturday)
    a.positions = {1: pos("BTCUSD"), 2: pos("EURUSD")}
    a.quotes = {"BTCUSD": (90_000.0, 90_010.0), "EURUSD": (1.1, 1.1001)}
    a.price_changed = {"BTCUSD": saturday - 300_000, "EURUSD": saturday - 86_400_000}
    [raised] = rules.check(saturday, {"a": a})
    assert raised.type == STALE_DATA and raised.data["symbols"] == ["BTCUSD"]
    a.price_changed["BTCUSD"] = a.last_seen = saturday + 60_000
    assert types(rules.check(saturday + 60_000, {"a": a}), Resolve) == [STALE_DATA]


def test_an_mt4_ea_back_from_a_silence_is_connected_anew():
    """An MT4 EA's connectedAt (and the price clock counting from it) was its very first connection: back after
    an hour away, its frozen-looking quotes were STALE_DATA at once."""
    from tradewire.model import AccountInfo
    from tradewire.state import LiveState

    state = LiveState(http_live_ms=30_000)
    info = AccountInfo(platform="MT4", login=1, server="s", currency="USD", leverage=100)
    state.on_hello("m4", info, "http", 1_000)
    state.touch("m4", 20_000)
    assert state.accounts["m4"].connected_at == 1_000  # live all along
    state.touch("m4", 3_620_000)  # an hour of silence, then a POST
    state.on_hello("m4", info, "http", 3_620_000)
    assert state.accounts["m4"].connected_at == 3_620_000
