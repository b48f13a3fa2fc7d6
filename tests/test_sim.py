"""Fleet simulator: market and account logic directly, then a real fleet against a real hub."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from tradewire.cli import build_parser, main
from tradewire.ingest.protocol import ErrorReply, decode_frame
from tradewire.sim import account as account_module
from tradewire.sim import fleet
from tradewire.sim.account import DEFAULT_SYSTEM_MAGIC, SimAccount
from tradewire.sim.cli import read_tokens, simulate
from tradewire.sim.fleet import backoff_delay, run_fleet, ws_url
from tradewire.sim.market import MAJORS, SYMBOLS, Market, spec_for
from tradewire.store.base import EventQuery

from helpers import http_server, issue_key, issue_token

T0 = 1_700_000_000_000


def decodes(frame: dict) -> list:
    msgs = decode_frame(json.dumps(frame))
    assert msgs, frame
    assert not any(isinstance(m, ErrorReply) for m in msgs), (msgs, frame)
    return msgs


def new_account(**kw) -> SimAccount:
    market = kw.pop("market", None) or Market(1)
    market.advance(T0)
    account = SimAccount(kw.pop("account_id", "sim-001"), market, **kw)
    account.step(T0)
    return account


# --- market -------------------------------------------------------------------------------------
def test_symbol_set_is_realistic():
    assert set(MAJORS) | {"XAUUSD", "US30", "NAS100", "GER40"} == set(SYMBOLS)
    assert spec_for("EURUSD").digits == 5 and spec_for("USDJPY").digits == 3 and spec_for("XAUUSD").digits == 2
    assert spec_for("EURUSD").contract == 100_000 and spec_for("XAUUSD").contract == 100
    suffixed = spec_for("XAUUSD.r")
    assert suffixed.name == "XAUUSD.r" and suffixed.digits == 2 and suffixed.contract == 100
    with pytest.raises(KeyError, match="unknown symbol"):
        spec_for("DOGEUSD")


def test_quotes_have_a_spread_and_the_symbols_digits():
    market = Market(3)
    for _ in range(50):
        market.step(1.0)
        for name in [*SYMBOLS, "EURUSD.m", "XAUUSD.r"]:
            spec, quote = spec_for(name), market.quote(name)
            assert 0 < quote.bid < quote.ask
            assert round(quote.bid, spec.digits) == quote.bid and round(quote.ask, spec.digits) == quote.ask
            assert quote.ask - quote.bid <= 5 * spec.spread_pips * spec.pip
            assert abs(quote.mid / spec.start - 1) < 0.05  # a walk, not a drift away
    assert market.quote("EURUSD.m") == market.quote("EURUSD")  # same market, broker's name


def test_walk_is_seeded():
    a, b, c = Market(7), Market(7), Market(8)
    for m in (a, b, c):
        m.step(5.0)
    assert a.quote("GBPUSD") == b.quote("GBPUSD") != c.quote("GBPUSD")


def test_a_quote_read_again_follows_every_move_of_the_price():
    # Quotes are kept between moves (a fleet of accounts shares one market): a step or a pinned price
    # must show in the next quote of every spelling of the symbol.
    market = Market(5, start_ms=T0)
    before = market.quote("EURUSD"), market.quote("EURUSD.m")
    market.advance(T0 + 60_000)
    after = market.quote("EURUSD"), market.quote("EURUSD.m")
    assert after[0] != before[0] and after[1] != before[1]
    market.set_mid("EURUSD", 1.2)
    assert market.quote("EURUSD").mid == pytest.approx(1.2, abs=1e-3)
    assert market.quote("EURUSD.m").mid == pytest.approx(1.2, abs=1e-3)


def test_profit_in_usd_for_each_kind_of_symbol():
    market = Market(1)
    market.set_mid("EURUSD", 1.10)
    market.set_mid("USDJPY", 150.0)
    assert market.profit_usd("EURUSD", "buy", 1.0, 1.0850, 1.0860) == pytest.approx(100.0)
    assert market.profit_usd("EURUSD.m", "sell", 1.0, 1.0850, 1.0860) == pytest.approx(-100.0)
    assert market.profit_usd("EURUSD", "sell", 0.5, 1.0860, 1.0850) == pytest.approx(50.0)
    # Quote currency JPY: the P/L is in yen, divided by USDJPY.
    assert market.profit_usd("USDJPY", "buy", 1.0, 150.00, 150.10) == pytest.approx(10_000 / 150, rel=1e-3)
    assert market.profit_usd("XAUUSD", "buy", 1.0, 2350.0, 2351.0) == pytest.approx(100.0)
    assert market.profit_usd("US30", "sell", 2.0, 39000.0, 38990.0) == pytest.approx(20.0)
    # GER40 is quoted in EUR: 10 points x 1 lot = 10 EUR = 11 USD at 1.10.
    assert market.profit_usd("GER40", "buy", 1.0, 18200.0, 18210.0) == pytest.approx(11.0)


def test_margin_in_usd():
    market = Market(1)
    market.set_mid("EURUSD", 1.10)
    market.set_mid("USDJPY", 150.0)
    assert market.margin_usd("EURUSD", 1.0, 100) == pytest.approx(1100.0)
    assert market.margin_usd("USDJPY", 1.0, 100) == pytest.approx(1000.0)  # USD base: the notional itself
    assert market.margin_usd("XAUUSD", 1.0, 100, price=2000.0) == pytest.approx(2000.0)
    assert market.margin_usd("GER40", 1.0, 10, price=18000.0) == pytest.approx(1980.0)


# --- account ------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_position_profit_sign_and_magnitude(side):
    account = new_account()
    account.market.set_mid("EURUSD", 1.08500)
    account.open_position(T0, "EURUSD", side, volume=1.0, magic=0, stops=False)
    (pos,) = account.positions.values()
    account.market.set_mid("EURUSD", 1.08600)  # +10 pips
    account.mark()
    quote = account.market.quote("EURUSD")
    direction = 1 if side == "buy" else -1
    assert pos.price == (quote.bid if side == "buy" else quote.ask)  # closing side of the book
    assert pos.profit == pytest.approx((pos.price - pos.open_price) * direction * 100_000, abs=0.01)
    # 10 pips on 1 lot is $100, less the spread paid once (about a pip, $10).
    assert pos.profit == pytest.approx(100.0 * direction - 10.0, abs=15.0)


def test_margin_level_follows_equity_and_margin():
    account = new_account()
    state = account.account_frame(T0)
    assert state["margin"] == 0 and state["marginLevel"] is None
    assert state["equity"] == state["balance"] == state["freeMargin"]
    account.open_position(T0, "EURUSD", "buy", volume=1.0, magic=0, stops=False)
    before = account.account_frame(T0)
    assert before["margin"] > 0
    assert before["marginLevel"] == pytest.approx(before["equity"] / before["margin"] * 100, rel=1e-3)
    assert before["freeMargin"] == pytest.approx(before["equity"] - before["margin"], abs=0.02)
    account.market.set_mid("EURUSD", account.market.mid("EURUSD") - 0.0050)  # 50 pips against it
    account.mark()
    after = account.account_frame(T0)
    assert after["equity"] < before["equity"] - 400
    assert after["marginLevel"] < before["marginLevel"]
    assert after["marginLevel"] == pytest.approx(after["equity"] / after["margin"] * 100, rel=1e-3)


def test_close_realises_profit_into_balance_and_frees_margin():
    account = new_account()
    balance = account.balance
    opened = account.open_position(T0, "XAUUSD", "sell", volume=0.5, magic=0, stops=False)
    pid = opened["position"]["id"]
    commission = opened["position"]["commission"]
    assert commission < 0
    account.market.set_mid("XAUUSD", account.market.mid("XAUUSD") - 5.0)
    closed = account.close_position(pid, T0 + 1000, "client")
    assert closed["event"] == "CLOSE" and closed["reason"] == "client"
    assert closed["closePrice"] == account.market.quote("XAUUSD").ask
    assert closed["profit"] > 0
    assert account.balance == pytest.approx(balance + closed["profit"] + commission, abs=0.01)
    assert account.margin == 0 and account.account_frame(T0)["marginLevel"] is None


def test_stop_loss_and_stop_out_close_with_their_reason():
    account = new_account()
    account.open_position(T0, "EURUSD", "buy", volume=0.1, magic=0, stops=True)
    (pos,) = account.positions.values()
    account.market.set_mid("EURUSD", pos.sl - 0.0010)
    events = account.step(T0 + 1)
    assert [(e["event"], e["reason"]) for e in events if e["event"] == "CLOSE"] == [("CLOSE", "sl")]

    account = new_account(account_id="sim-002")
    event = account.open_stress_position(T0, target_level=120)
    assert event is not None and 100 < account.margin_level < 140
    pid = event["position"]["id"]
    side = event["position"]["side"]
    symbol = event["position"]["symbol"]
    mid = account.market.mid(symbol)
    account.market.set_mid(symbol, mid * (0.9 if side == "buy" else 1.1))  # a crash against it
    events = account.step(T0 + 1)
    assert any(e["event"] == "CLOSE" and e["reason"] == "stopout" and e["position"]["id"] == pid for e in events)


def test_outbox_drops_on_cumulative_ack_and_keeps_the_rest():
    account = new_account()
    for _ in range(5):
        account.open_position(T0, magic=0)
    assert list(account.outbox) == [1, 2, 3, 4, 5]
    assert account.ack(3) == 3
    assert list(account.outbox) == [4, 5]
    assert account.ack(2) == 0  # an old ack changes nothing
    assert [f["seq"] for f in account.pending()] == [4, 5]
    assert account.on_welcome(4) == [account.outbox[5]]
    assert account.ack(99) == 1 and account.outbox == {}


def test_welcome_from_a_store_with_history_lifts_seq():
    account = new_account()
    assert account.on_welcome(41) == []
    assert account.open_position(T0, magic=0)["seq"] == 42
    assert account.hello_frame()["lastSeq"] == 42


def test_a_long_run_has_increasing_seq_unique_ids_and_valid_frames():
    market = Market(5)
    accounts = [new_account(account_id=f"sim-{i:03d}", market=market, seed=5, system_magics=[9001]) for i in range(6)]
    durable: list[dict] = []
    for step in range(1, 1200):
        now = T0 + step * 500
        for account in accounts:
            durable += account.step(now)
            if step % 97 == 0:
                for frame in (
                    account.account_frame(now),
                    account.positions_frame(now),
                    account.ticks_frame(now),
                    account.heartbeat_frame(now),
                    account.hello_frame(),
                ):
                    decodes(frame)
    assert len(durable) > 100
    decodes(durable)  # also as one array frame, as the fleet batches them
    for frame in durable:
        (msg,) = decodes(frame)
        assert msg.ts >= T0 and msg.account is not None
    for account in accounts:
        seqs = [f["seq"] for f in durable if f["account"] == account.id]
        assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert len({(f["account"], f["id"]) for f in durable}) == len(durable)
    kinds = Counter(f["event"] for f in durable)
    reasons = Counter(f["reason"] for f in durable if f["event"] == "CLOSE")
    assert kinds["OPEN"] and kinds["CLOSE"] and kinds["MODIFY"] and reasons["client"]
    magics = {f["position"]["magic"] for f in durable}
    assert 9001 in magics and DEFAULT_SYSTEM_MAGIC not in magics
    suffixed = {s for a in accounts for s in a.symbols if "." in s}
    assert all(s.split(".")[0] in SYMBOLS for s in suffixed)


def test_default_system_magic_when_none_configured():
    account = new_account(system_magics=[])
    magics = {account.open_position(T0)["position"]["magic"] for _ in range(40)}
    assert DEFAULT_SYSTEM_MAGIC in magics


def test_backoff_is_jittered_exponential_and_capped():
    import random

    rng = random.Random(1)
    assert 0.25 <= backoff_delay(1, rng) <= 0.5
    assert 2.0 <= backoff_delay(4, rng) <= 4.0
    assert all(5.0 <= backoff_delay(n, rng) <= 10.0 for n in range(6, 40))
    assert ws_url("https://hub.example:8443/") == "wss://hub.example:8443/ea/v1"
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ea/v1"
    assert ws_url("https://hub.example/tw/") == "wss://hub.example/tw/ea/v1"  # a hub behind a path prefix
    # The AWS deployment's EaWebSocketUrl: API Gateway has no paths below the stage, /ea/v1 there is a 403.
    aws = "wss://a1b2c3.execute-api.eu-west-1.amazonaws.com/prod"
    assert ws_url(aws) == ws_url(aws + "/") == aws
    assert ws_url("wss://hub.example/ea/v1") == "wss://hub.example/ea/v1"


# --- command line -------------------------------------------------------------------------------
def test_simulate_without_tokens_says_how_to_get_them(capsys):
    assert main(["simulate", "--url", "http://127.0.0.1:9", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "--issue-tokens" in err and "--tokens FILE" in err and err.startswith("tradewire: error:")


def test_tokens_file_is_parsed_and_checked(tmp_path):
    good = tmp_path / "tokens.txt"
    good.write_text("# fleet\nsim-001 twe_a\n\nsim-002   twe_b\n")
    assert read_tokens(str(good)) == [("sim-001", "twe_a"), ("sim-002", "twe_b")]
    bad = tmp_path / "bad.txt"
    bad.write_text("sim-001\n")
    assert main(["simulate", "--url", "http://127.0.0.1:9", "--tokens", str(bad)]) == 2


# --- against a real hub -------------------------------------------------------------------------
@pytest.mark.parametrize("flaky", [False, True], ids=["steady", "flaky"])
async def test_fleet_streams_to_a_real_hub(server, monkeypatch, flaky):
    if flaky:  # drop connections about once a second: reconnects and resends must not duplicate anything
        monkeypatch.setattr(fleet, "DISCONNECT_RATE", 1.0)
        monkeypatch.setattr(fleet, "DROP_PAUSE_S", (0.05, 0.2))
    accounts = [f"sim-{i:03d}" for i in range(1, 5)]
    tokens = [(a, await issue_token(server, a)) for a in accounts]
    stats = await run_fleet(
        server.url,
        tokens,
        rate=25,
        duration=3.0,
        seed=11,
        stop=None,
        system_magics=server.settings.system.magic_numbers,
    )
    assert stats.refused == 0 and stats.errors == 0, stats
    assert (stats.reconnects > 2) == flaky, stats
    assert stats.durable_acked + stats.unacked == stats.durable_sent, stats
    assert stats.messages > 4 * 3 * 20 and stats.durable_sent > 0 and stats.durable_acked > 0

    key = await issue_key(server, "read")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/v1/accounts", headers={"x-api-key": key}) as resp,
    ):
        assert resp.status == 200
        items = {a["id"]: a for a in (await resp.json())["items"]}
    assert set(items) == set(accounts)
    for account in items.values():
        assert account["state"]["balance"] > 0 and account["info"]["currency"] == "USD"
    assert Counter(a["info"]["platform"] for a in items.values()) == {"MT5": 3, "MT4": 1}

    events = (await server.store.events(EventQuery(limit=1000))).items
    from_ea = [e for e in events if e.source == "ea"]
    assert from_ea, events
    keys = [(e.account, e.msgId) for e in from_ea]
    assert len(keys) == len(set(keys))
    opens = [(e.account, e.positionId) for e in events if e.event == "OPEN"]
    assert len(opens) == len(set(opens))


async def test_fleet_keeps_one_durable_frame_in_flight(monkeypatch):
    """Against a hub that does not answer, the simulated EA sends one durable frame and holds the rest;
    the ack releases them. Two in flight are unsafe where frames can run out of order (README)."""
    monkeypatch.setattr(fleet, "DISCONNECT_RATE", 0.0)
    monkeypatch.setattr(account_module, "OPEN_RATE", 50.0)  # an account that opens a position every tick
    monkeypatch.setattr(account_module, "OPEN_RATE_FILLING", 50.0)
    durable_frames: list[list[int]] = []
    sockets: list[web.WebSocketResponse] = []

    async def hub(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.append(ws)
        await ws.receive()  # hello
        await ws.send_json({"type": "welcome", "sessionId": "s", "ackedSeq": 0, "heartbeatSec": 10, "serverTime": 0})
        async for msg in ws:
            frame = json.loads(msg.data)
            seqs = [m["seq"] for m in (frame if isinstance(frame, list) else [frame]) if "seq" in m]
            if seqs:
                durable_frames.append(seqs)
        return ws

    async def frames(n: int) -> None:
        for _ in range(200):
            if len(durable_frames) >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{n} durable frame(s) expected, got {durable_frames}")

    async with http_server("GET", "/ea/v1", hub) as url:
        stop = asyncio.Event()
        run = asyncio.create_task(
            run_fleet(url, [("sim-001", "t")], rate=25, duration=None, seed=3, stop=stop, system_magics=())
        )
        try:
            await frames(1)
            await asyncio.sleep(0.5)  # a dozen more ticks, each opening a position
            assert len(durable_frames) == 1, durable_frames  # unanswered: the rest wait
            await sockets[0].send_json({"type": "ack", "seq": durable_frames[0][-1]})
            await frames(2)
        finally:
            stop.set()
            await run
    first, second = durable_frames[0], durable_frames[1]
    assert second[0] == first[-1] + 1 and len(second) > 1  # what waited goes out together, in order


async def test_simulate_command_with_a_tokens_file(server, tmp_path, capsys):
    lines = [f"sim-{i:03d} {await issue_token(server, f'sim-{i:03d}')}" for i in range(1, 3)]
    path = tmp_path / "tokens.txt"
    path.write_text("\n".join(lines) + "\n")
    args = build_parser().parse_args(
        ["simulate", "--url", server.url, "--tokens", str(path), "--duration", "1.5", "--rate", "10", "--quiet"]
    )
    assert await simulate(args, server.settings) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulate: 2 accounts") and "0 errors" in out
