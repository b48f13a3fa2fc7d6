"""`tradewire simulate --scenario`: the scenario logic on a simulated account, then each scenario against a real hub.

Against the hub, every test runs a small fleet with one scenario and polls the REST API until the scenario's
alert shows up, while the fleet still runs (a fleet that stops closes its sockets, which would itself raise
CONNECTION_LOST after the short grace period used here).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import pytest

from tradewire.app import Server
from tradewire.cli import build_parser, main
from tradewire.config import MarketHours
from tradewire.ingest.protocol import ErrorMsg, ErrorReply, decode_frame
from tradewire.sim import account as sim_account
from tradewire.sim import fleet
from tradewire.sim.account import SimAccount
from tradewire.sim.fleet import run_fleet
from tradewire.sim.market import Market
from tradewire.sim.scenarios import (
    MARGIN_CALL_HOLD,
    SCENARIOS,
    STOP_OUT_CRASH,
    STOP_OUT_HOLD,
    Stale,
    make_scenario,
)

from conftest import make_settings
from helpers import issue_key, issue_token

T0 = 1_700_000_000_000
STEP_MS = 500


def sim(account_id: str = "sim-001", seed: int = 2) -> SimAccount:
    market = Market(seed)
    market.advance(T0)
    account = SimAccount(account_id, market, seed=seed)
    account.step(T0)
    return account


def level(account: SimAccount, now: int) -> float:
    return account.account_frame(now)["marginLevel"]


# --- the scenarios' logic, no hub ---------------------------------------------------------------
def test_scenario_names_are_the_cli_choices():
    for name in SCENARIOS:
        args = build_parser().parse_args(["simulate", "--url", "http://127.0.0.1:9", "--scenario", name])
        assert (args.scenario, args.scenario_account) == (name, None)
    with pytest.raises(ValueError, match="margin-call, stop-out, disconnect, error, stale"):
        make_scenario("bogus", "sim-001", T0)


def test_nothing_happens_before_the_scenario_fires_nor_to_another_account():
    account = sim()
    scenario = make_scenario("error", account.id, T0 + 2000)
    assert scenario.tick(account, T0 + 1999).durable == [] and not scenario.fired
    assert scenario.tick(sim("sim-002"), T0 + 5000).durable == [] and not scenario.fired
    action = scenario.tick(account, T0 + 2000)
    assert scenario.fired and action.note and len(action.durable) == 1
    assert scenario.tick(account, T0 + 2500).durable == []  # fires once


def test_margin_call_holds_the_level_between_stop_out_and_margin_call():
    account = sim()
    scenario = make_scenario("margin-call", account.id, T0)
    action = scenario.tick(account, T0)
    [opened] = action.durable
    assert opened["event"] == "OPEN" and opened["position"]["sl"] == 0
    assert "margin level held at 80 %" in (action.note or "")
    for step in range(1, 240):  # two simulated minutes of a moving market
        now = T0 + step * STEP_MS
        assert account.step(now) == []  # scripted: no trades, no stops, no broker stop-out
        assert scenario.tick(account, now).durable == []
        assert level(account, now) == pytest.approx(MARGIN_CALL_HOLD, abs=0.05)
    assert opened["position"]["id"] in account.positions


def test_stop_out_goes_under_stop_out_then_closes_the_worst_position_with_reason_stopout():
    account = sim()
    scenario = make_scenario("stop-out", account.id, T0)
    fired = scenario.tick(account, T0)
    assert [f["event"] for f in fired.durable] in (["OPEN"], ["OPEN", "OPEN"])
    assert fired.note is None  # said once the stop-out has happened
    assert level(account, T0) == pytest.approx(STOP_OUT_CRASH, abs=0.05)
    now = T0 + STEP_MS
    account.step(now)
    worst = min(account.positions.values(), key=lambda p: p.profit).id
    action = scenario.tick(account, now)
    [closed] = action.durable
    assert closed["event"] == "CLOSE" and closed["reason"] == "stopout" and closed["position"]["id"] == worst
    assert "stop-out closed" in (action.note or "")
    assert account.positions, "something must be left, or the margin level would be None"
    for step in range(2, 60):
        now = T0 + step * STEP_MS
        assert account.step(now) == [] and scenario.tick(account, now).durable == []
        assert level(account, now) == pytest.approx(STOP_OUT_HOLD, abs=0.05)


def test_disconnect_leaves_and_error_is_a_durable_protocol_error():
    assert make_scenario("disconnect", "sim-001", T0).tick(sim(), T0).leave

    account = sim()
    action = make_scenario("error", account.id, T0).tick(account, T0)
    [frame] = action.durable
    [msg] = decode_frame(json.dumps(frame))
    assert isinstance(msg, ErrorMsg) and not isinstance(msg, ErrorReply)
    assert (msg.code, msg.severity, msg.seq) == ("TRADE_DISABLED", "CRITICAL", account.seq)
    assert account.pending() == [frame]  # kept until the hub acks it, like any durable message
    account.ack(frame["seq"])
    assert account.pending() == []


def test_stale_freezes_a_held_symbol_nobody_else_quotes():
    account = sim()
    others = set(account.symbols)  # the rest of the fleet quotes every symbol this account watches
    scenario = make_scenario("stale", account.id, T0, avoid_symbols=others)
    assert isinstance(scenario, Stale)
    action = scenario.tick(account, T0)
    held = {p.symbol for p in account.positions.values()}
    own = held - others
    assert len(own) == 1 and set(account.frozen) == held
    assert any(f["event"] == "OPEN" and f["position"]["symbol"] in own for f in action.durable)
    prices = {p.id: p.price for p in account.positions.values()}
    first = {t["symbol"]: t["bid"] for t in account.ticks_frame(T0)["ticks"] if t["symbol"] in held}
    assert first == {s: q.bid for s, q in account.frozen.items()}  # the frozen quote once: the hub must know it
    for step in range(1, 40):
        now = T0 + step * STEP_MS
        assert account.step(now) == [] and scenario.tick(account, now).durable == []
        ticked = {t["symbol"] for t in account.ticks_frame(now)["ticks"]}
        assert ticked and not ticked & held  # no ticks for what it holds; the rest still streams
        assert {p.id: p.price for p in account.positions.values()} == prices  # valued at the frozen quotes
    assert account.market.quote(next(iter(own))) != account.frozen[next(iter(own))]  # the market moved on


# --- against a real hub -------------------------------------------------------------------------
def fast_settings(tmp_path):
    s = make_settings(tmp_path)  # heartbeat 1 s: CONNECTION_LOST by silence after 3 s
    s.alerts.connection_lost_after_s = 1.0
    s.alerts.stale_after_s = 1.0
    s.alerts.check_interval_s = 0.1
    always = MarketHours(open_day=0, open="00:00", close_day=0, close="00:00")  # open all week
    s.alerts.market_hours = {"fx": always, "metal": always, "index": always}
    return s


@pytest.fixture
async def hub(tmp_path, monkeypatch):
    # Nothing random that raises alerts by itself: no connection drops, no stress trades on other accounts.
    monkeypatch.setattr(fleet, "DISCONNECT_RATE", 0.0)
    monkeypatch.setattr(sim_account, "STRESS_RATE", 0.0)
    srv = Server(fast_settings(tmp_path))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def read_key(hub):
    return await issue_key(hub, "read")


SLACK_MS = 200  # the account's last update before the scenario fired may precede `fires_at` by an interval (0.1 s)


class Fleet:
    """A fleet running in the background with one scenario; stopped (and its stats kept) on exit."""

    AFTER_S = 0.3

    def __init__(self, hub: Server, scenario: str, account: str | None = None, size: int = 3) -> None:
        self.hub, self.scenario, self.account, self.size = hub, scenario, account, size
        self.lines: list[str] = []
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Fleet:
        tokens = [(a, await issue_token(self.hub, a)) for a in (f"sim-{i:03d}" for i in range(1, self.size + 1))]
        self.fires_at = int(time.time() * 1000) + self.AFTER_S * 1000
        self.task = asyncio.create_task(
            run_fleet(
                self.hub.url,
                tokens,
                rate=10,
                duration=20,
                seed=3,
                stop=self.stop,
                system_magics=self.hub.settings.system.magic_numbers,
                scenario=self.scenario,
                scenario_account=self.account,
                scenario_after_s=self.AFTER_S,
                on_scenario=self.lines.append,
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.stats = await self.task


async def alerts(hub: Server, key: str, **query: str) -> list[dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{hub.url}/api/v1/alerts", params=query, headers={"x-api-key": key}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return (await resp.json())["items"]


async def wait_alert(hub: Server, key: str, type_: str, account: str, timeout: float = 6.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await alerts(hub, key, type=type_, account=account)
        if found:
            [alert] = found
            return alert
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {type_} for {account} within {timeout} s; alerts: {await alerts(hub, key)}")


async def raised(hub: Server, key: str) -> set[tuple[str, str]]:
    return {(a["account"], a["type"]) for a in await alerts(hub, key)}


async def test_margin_call_scenario_raises_and_holds_margin_call_only(hub, read_key):
    async with Fleet(hub, "margin-call") as run:
        alert = await wait_alert(hub, read_key, "MARGIN_CALL", "sim-001")
        assert alert["raisedAt"] >= run.fires_at and alert["data"]["value"] == pytest.approx(80, abs=1)
        await asyncio.sleep(1.0)  # held: still open a while later, never a stop-out
        [still] = await alerts(hub, read_key, type="MARGIN_CALL", account="sim-001", state="open")
        assert still["id"] == alert["id"]
        assert await alerts(hub, read_key, type="STOP_OUT") == []
        assert await raised(hub, read_key) == {("sim-001", "MARGIN_CALL")}
    assert len(run.lines) == 1 and run.lines[0].startswith("simulate: scenario margin-call: account sim-001 opened ")
    assert run.stats.errors == 0


async def test_stop_out_scenario_raises_stop_out_and_sends_a_stopout_close(hub, read_key):
    async with Fleet(hub, "stop-out") as run:
        alert = await wait_alert(hub, read_key, "STOP_OUT", "sim-001")
        assert alert["severity"] == "CRITICAL" and alert["raisedAt"] >= run.fires_at
        assert alert["data"]["value"] == pytest.approx(40, abs=1)  # by level first: the hub saw 40 %
        closes: list[dict] = []
        for _ in range(50):  # the scenario's line says it sent the CLOSE: stored a moment later
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{hub.url}/api/v1/events",
                    params={"account": "sim-001", "type": "CLOSE"},
                    headers={"x-api-key": read_key},
                ) as resp,
            ):
                closes = (await resp.json())["items"]
            if run.lines and closes:
                break
            await asyncio.sleep(0.1)
        assert [e["reason"] for e in closes] == ["stopout"]
        await asyncio.sleep(0.5)  # held at 55 %: the episode stays open
        assert await alerts(hub, read_key, type="STOP_OUT", account="sim-001", state="open")
        assert await raised(hub, read_key) == {("sim-001", "STOP_OUT"), ("sim-001", "MARGIN_CALL")}
    [line] = run.lines
    assert "account sim-001" in line and "stop-out closed" in line and f"position {closes[0]['positionId']}" in line


async def test_disconnect_scenario_raises_connection_lost_and_stays_away(hub, read_key):
    async with Fleet(hub, "disconnect") as run:
        alert = await wait_alert(hub, read_key, "CONNECTION_LOST", "sim-001")
        assert alert["raisedAt"] >= run.fires_at + 1000  # the hub's grace period
        assert "no EA connection" in alert["message"]
        await asyncio.sleep(0.5)
        assert await alerts(hub, read_key, type="CONNECTION_LOST", state="open")  # no reconnect
        assert await raised(hub, read_key) == {("sim-001", "CONNECTION_LOST")}
    assert run.lines == [
        "simulate: scenario disconnect: account sim-001 closed its WebSocket and stays away for the rest of the run"
    ]
    assert run.stats.reconnects == 0


async def test_disconnect_scenario_on_an_mt4_account_goes_silent(hub, read_key):
    async with Fleet(hub, "disconnect", account="sim-002") as run:  # the 2nd account is MT4, on HTTP
        alert = await wait_alert(hub, read_key, "CONNECTION_LOST", "sim-002")
        assert "3 heartbeats" in alert["message"]
        assert alert["raisedAt"] >= run.fires_at - SLACK_MS + 3000  # 3 heartbeats after its last post
        # With these short timings (stale after 1 s, silence after 3 heartbeats = 3 s), the hub may call the
        # silent account's prices stale before it calls it lost; nothing else may raise anything.
        assert await raised(hub, read_key) - {("sim-002", "STALE_DATA")} == {("sim-002", "CONNECTION_LOST")}
    assert "account sim-002 stopped posting (MT4 on HTTP)" in run.lines[0]


@pytest.mark.parametrize("account", [None, "sim-002"], ids=["mt5-ws", "mt4-http"])
async def test_error_scenario_raises_one_system_error(hub, read_key, account):
    async with Fleet(hub, "error", account=account) as run:
        target = account or "sim-001"
        alert = await wait_alert(hub, read_key, "SYSTEM_ERROR", target)
        assert alert["severity"] == "CRITICAL" and "TRADE_DISABLED" in alert["message"]
        assert alert["raisedAt"] >= run.fires_at
        assert await raised(hub, read_key) == {(target, "SYSTEM_ERROR")}
    assert run.stats.errors == 0 and run.stats.unacked == 0  # acked like any durable message
    assert run.lines[0].startswith(f"simulate: scenario error: account {target} sent a durable EA error TRADE_DISABLED")


async def test_stale_scenario_raises_stale_data(hub, read_key):
    async with Fleet(hub, "stale") as run:
        alert = await wait_alert(hub, read_key, "STALE_DATA", "sim-001")
        assert alert["raisedAt"] >= run.fires_at - SLACK_MS + 1000  # stale_after_s after the last tick
        [line] = run.lines
        assert all(f"{symbol} " in line for symbol in alert["data"]["symbols"])  # what it froze
        assert await raised(hub, read_key) == {("sim-001", "STALE_DATA")}  # still connected, others fine
    assert run.stats.errors == 0


# --- command line -------------------------------------------------------------------------------
def test_unknown_scenario_is_rejected_naming_the_choices():
    cmd = [sys.executable, "-m", "tradewire.cli", "simulate", "--url", "http://127.0.0.1:9", "--scenario", "bogus"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr and "bogus" in done.stderr
    assert all(name in done.stderr for name in SCENARIOS), done.stderr


def test_scenario_account_must_be_in_the_fleet(tmp_path, capsys):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("sim-001 twe_a\nsim-002 twe_b\n")
    base = ["simulate", "--url", "http://127.0.0.1:9", "--tokens", str(tokens)]
    assert main([*base, "--scenario", "error", "--scenario-account", "sim-009"]) == 2
    assert "--scenario-account sim-009 is not in the simulated fleet (sim-001 .. sim-002)" in capsys.readouterr().err
    assert main([*base, "--scenario-account", "sim-001"]) == 2
    assert "--scenario-account needs --scenario" in capsys.readouterr().err
