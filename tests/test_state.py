"""Live cache: snapshot diffing, price hygiene, connection status, exposure."""

import msgspec

from tradewire.model import AccountInfo, Position, Tick
from tradewire.state import LiveState


def pos(pid, symbol="EURUSD", side="buy", volume=0.1, profit=0.0):
    return Position(id=pid, symbol=symbol, side=side, volume=volume, openPrice=1.1, openTime=1, profit=profit)


def test_first_snapshot_with_no_knowledge_opens_everything_and_closes_nothing():
    s = LiveState()
    rec = s.apply_snapshot("a", [pos(1), pos(2)], 1)
    assert [p.id for p in rec.opened] == [1, 2] and rec.closed == []


def test_snapshot_diff_against_seeded_store_state():
    s = LiveState()
    s.seed_positions("a", [pos(1), pos(2)])  # what the store says is open after a restart
    rec = s.apply_snapshot("a", [pos(2), pos(3)], 1)
    assert [p.id for p in rec.opened] == [3]
    assert [p.id for p in rec.closed] == [1]
    assert s.apply_snapshot("a", [pos(2), pos(3)], 2).opened == []


def test_position_events_keep_the_cache_in_step_so_snapshots_do_not_reconcile_them():
    s = LiveState()
    s.seed_positions("a", [])
    s.apply_position_event("a", "OPEN", pos(7), 1)
    rec = s.apply_snapshot("a", [pos(7)], 2)
    assert rec.opened == [] and rec.closed == []
    s.apply_position_event("a", "CLOSE", pos(7), 3)
    assert s.apply_snapshot("a", [], 4).closed == []


def test_seeding_never_overwrites_live_knowledge():
    s = LiveState()
    s.apply_snapshot("a", [pos(1)], 1)
    s.seed_positions("a", [])
    assert list(s.account("a").positions) == [1]


def test_zero_or_negative_prices_are_not_prices_and_old_ticks_do_not_win():
    s = LiveState()
    accepted = s.apply_ticks(
        [
            Tick(symbol="EURUSD", bid=1.1, ask=1.1001, ts=10),
            Tick(symbol="GBPUSD", bid=0, ask=0, ts=10),
            Tick(symbol="EURUSD", bid=1.2, ask=1.2001, ts=5),
        ]
    )
    assert [t.symbol for t in accepted.accepted] == ["EURUSD"] and accepted.refused == []
    assert s.prices["EURUSD"].bid == 1.1 and "GBPUSD" not in s.prices


def test_a_terminal_whose_clock_runs_ahead_does_not_hold_a_symbols_price_for_everyone():
    s, now, year = LiveState(), 1_700_000_000_000, 365 * 86_400_000
    assert s.apply_ticks([Tick(symbol="EURUSD", bid=1.1, ask=1.1001, ts=now + year)], now, "ahead").accepted
    # another terminal's tick a second later, by its own (right) clock, is the price again
    assert s.apply_ticks([Tick(symbol="EURUSD", bid=1.2, ask=1.2001, ts=now + 1_000)], now + 1_000, "right").accepted
    assert s.prices["EURUSD"].bid == 1.2
    # within CLOCK_AHEAD_MS a tick's own ts still orders: an older one does not win over a newer
    assert s.apply_ticks([Tick(symbol="EURUSD", bid=1.3, ask=1.3001, ts=now + 1_800)], now + 1_100, "a").accepted
    assert not s.apply_ticks([Tick(symbol="EURUSD", bid=1.4, ask=1.4001, ts=now + 1_500)], now + 1_200, "b").accepted
    assert s.prices["EURUSD"].bid == 1.3


def test_an_account_streams_at_most_its_limit_of_symbols_and_keeps_those_moving():
    s = LiveState(max_symbols_per_account=2)
    first = [Tick(symbol=sym, bid=1.0, ask=1.1, ts=1) for sym in ("AAA", "BBB")]
    assert [t.symbol for t in s.apply_ticks(first, 10, "a").accepted] == ["AAA", "BBB"]
    more = [Tick(symbol="CCC", bid=1.0, ask=1.1, ts=2), Tick(symbol="AAA", bid=2.0, ask=2.1, ts=2)]
    applied = s.apply_ticks(more, 20, "a")
    # the third symbol is refused and goes nowhere; a known one still moves in the same message
    assert [t.symbol for t in applied.accepted] == ["AAA"] and applied.refused == ["CCC"]
    assert "CCC" not in s.prices and set(s.account("a").quotes) == {"AAA", "BBB"}
    assert s.prices["AAA"].bid == 2.0
    # the limit is per account: another one may stream the refused symbol
    assert [t.symbol for t in s.apply_ticks(more[:1], 30, "b").accepted] == ["CCC"]
    assert s.apply_ticks(more[:1], 40, "a").refused == ["CCC"]


def test_an_accounts_live_positions_stop_at_its_limit_and_a_snapshot_over_it_is_not_applied():
    s = LiveState(max_positions_per_account=2)
    s.seed_positions("a", [])  # as the hub does at hello: the store knows of nothing open
    one, two, three = pos(1), pos(2), pos(3)
    assert s.apply_position_event("a", "OPEN", one, 10) and s.apply_position_event("a", "OPEN", two, 10)
    assert not s.apply_position_event("a", "OPEN", three, 20)  # left out: the view holds its limit
    assert not s.apply_position_event("a", "MODIFY", three, 20)  # a MODIFY does not bring it in either
    assert set(s.account("a").positions) == {1, 2} and s.account("a").updated_at == 10
    assert s.apply_position_event("a", "MODIFY", msgspec.structs.replace(one, sl=1.0), 30)  # a known one moves
    assert s.account("a").positions[1].sl == 1.0
    assert s.apply_position_event("b", "OPEN", three, 30)  # the limit is per account
    # a snapshot over the limit is not applied at all: cut to the limit, it would make a position look closed
    rec = s.apply_snapshot("a", [one, two, three], 40)
    assert (rec.opened, rec.closed, rec.refused) == ([], [], 3) and set(s.account("a").positions) == {1, 2}
    assert s.apply_position_event("a", "CLOSE", one, 50)  # a close always applies, and makes room
    assert s.apply_position_event("a", "OPEN", three, 60) and set(s.account("a").positions) == {2, 3}
    rec = s.apply_snapshot("a", [two], 70)  # within the limit: applied and reconciled as ever
    assert (rec.opened, [p.id for p in rec.closed], rec.refused) == ([], [3], 0)
    # after a restart the store holds every OPEN, those past the limit too: the view takes no more than before
    assert LiveState(max_positions_per_account=2).seed_positions("a", [one, two, three]) == 1
    restarted = LiveState(max_positions_per_account=2)
    restarted.seed_positions("a", [one, two, three])
    assert set(restarted.account("a").positions) == {1, 2}


def test_connection_status_follows_sessions():
    s = LiveState(http_live_ms=3000)
    info = AccountInfo(platform="MT5", login=1, server="s", currency="USD", leverage=100)
    assert s.summary("a", 0).status == "never"
    s.on_hello("a", info, "ws", 1000)
    assert s.summary("a", 1000).status == "live"
    s.on_session_end("a", 2000)
    assert s.summary("a", 2000).status == "lost"
    s.on_hello("b", info, "http", 1000)
    assert s.summary("b", 3999).status == "live"
    assert s.summary("b", 4001).status == "lost"  # MT4: no POST for 3 heartbeats


def test_two_sessions_one_ends_account_stays_live():
    s = LiveState()
    info = AccountInfo(platform="MT5", login=1, server="s", currency="USD", leverage=100)
    s.on_hello("a", info, "ws", 1)
    s.on_hello("a", info, "ws", 2)
    s.on_session_end("a", 3)
    assert s.summary("a", 3).status == "live"


def test_exposure_nets_volume_and_sums_profit_across_accounts():
    s = LiveState()
    s.apply_snapshot("a", [pos(1, volume=1.0, profit=10), pos(2, "XAUUSD", volume=0.5)], 1)
    s.apply_snapshot("b", [pos(3, side="sell", volume=0.4, profit=-4)], 1)
    rows = {r.symbol: msgspec.structs.asdict(r) for r in s.exposure()}
    assert rows["EURUSD"] == {
        "symbol": "EURUSD",
        "buyVolume": 1.0,
        "sellVolume": 0.4,
        "netVolume": 0.6,
        "profit": 6.0,
        "positions": 2,
        "accounts": 2,
    }
    assert rows["XAUUSD"]["netVolume"] == 0.5


def test_equity_series_keeps_one_point_per_minute_bounded():
    from tradewire.model import AccountState
    from tradewire.state import SERIES_POINTS, EquitySeries

    s = LiveState()

    def st(equity):
        return AccountState(ts=0, balance=100.0, equity=equity, margin=0, freeMargin=equity, marginLevel=None)

    s.apply_account("a", st(1), 60_000)
    s.apply_account("a", st(2), 119_999)  # same minute: replaces
    s.apply_account("a", st(3), 120_000)
    assert list(s.account("a").equity_series) == [(60_000, 2, 100.0), (120_000, 3, 100.0)]
    # Over several trims: always the newest SERIES_POINTS minutes, in order, each bucket's last value.
    for minute in range(3 * SERIES_POINTS + 7):
        s.apply_account("a", st(minute - 1), 180_000 + minute * 60_000)
        s.apply_account("a", st(minute), 180_000 + minute * 60_000 + 59_999)
        series = s.account("a").equity_series
        assert len(series) == min(SERIES_POINTS, minute + 3)
    points = list(series)
    last = 3 * SERIES_POINTS + 6
    assert len(points) == SERIES_POINTS
    assert points[-1] == (180_000 + last * 60_000, last, 100.0)
    assert [p[0] for p in points] == [180_000 + m * 60_000 for m in range(last - SERIES_POINTS + 1, last + 1)]
    assert [p[1] for p in points] == list(range(last - SERIES_POINTS + 1, last + 1))
    # Flat arrays, trimmed by a quarter: the memory held stays bounded whatever the uptime.
    assert len(series.ts) <= EquitySeries.TRIM_AT and series.ts.itemsize == 8


def test_a_position_left_out_over_the_limit_is_still_reconciled_by_a_snapshot():
    """Left out of the live list, not forgotten: a snapshot without it records its CLOSE (it closed while the EA
    was away), one that lists it does not record it opened again; after a restart too."""
    s = LiveState(max_positions_per_account=2)
    s.seed_positions("a", [])
    for pid in (1, 2, 3):
        s.apply_position_event("a", "OPEN", pos(pid), 10)
    assert set(s.account("a").positions) == {1, 2}  # 3 is left out
    rec = s.apply_snapshot("a", [pos(1), pos(3)], 20)  # 2 closed while away; 3 still open
    assert ([p.id for p in rec.opened], [p.id for p in rec.closed]) == ([], [2])
    assert set(s.account("a").positions) == {1, 3}
    for pid in (4, 5):
        s.apply_position_event("a", "OPEN", pos(pid), 30)  # both left out: the list holds 1 and 3
    rec = s.apply_snapshot("a", [pos(1), pos(5)], 40)  # 3 and 4 closed while away
    assert ([p.id for p in rec.opened], sorted(p.id for p in rec.closed)) == ([], [3, 4])
    restarted = LiveState(max_positions_per_account=2)
    restarted.seed_positions("a", [pos(1), pos(5), pos(6)])  # what the store holds open
    rec = restarted.apply_snapshot("a", [pos(1), pos(5)], 50)
    assert ([p.id for p in rec.opened], [p.id for p in rec.closed]) == ([], [6])


def test_exposure_keeps_volume_steps_of_a_thousandth_of_a_lot():
    """Rounded to 2 decimals, three 0.001-lot buys netted to 0.0: shown hedged while they were not."""
    s = LiveState()
    s.apply_snapshot("a", [pos(n, "BTCUSD", volume=0.001) for n in (1, 2, 3)], 1)
    s.apply_snapshot("b", [pos(4, "EURUSD", volume=0.1), pos(5, "EURUSD", volume=0.2)], 1)
    rows = {r.symbol: r for r in s.exposure()}
    assert rows["BTCUSD"].netVolume == 0.003 and rows["BTCUSD"].buyVolume == 0.003
    assert rows["EURUSD"].netVolume == 0.3  # and float noise (0.1 + 0.2) still rounded off
