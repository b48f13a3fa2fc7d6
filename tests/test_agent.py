"""`tradewire agent` over real sockets against a real hub, driven by a stand-in for the MetaTrader5 package.

The stand-in (`tradewire.agent.fake.FakeMT5`) has the package's function names and named-tuple fields;
each test changes its state as a trader or the broker would and checks what the hub's store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tradewire.agent import AgentError, TokenRefused, core, run_agent
from tradewire.agent.cli import main as agent_main
from tradewire.agent.fake import DEAL_REASON_SL, DEAL_REASON_TP, FakeMT5
from tradewire.app import Server
from tradewire.store.base import AlertQuery, EventQuery

from conftest import make_settings
from helpers import EA, issue_token, position_event, until

ACCOUNT = "acc-agent-1"
FAST = {"interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.3, "close_grace": 0.5, "tz_probe": 0.05}


# --- harness ------------------------------------------------------------------------------------
class Running:
    """An agent task with its stop switch, captured frames and outbox file."""

    def __init__(self, task: asyncio.Task, stop: asyncio.Event, frames: list[str], outbox: Path) -> None:
        self.task, self.stop, self.frames, self.outbox = task, stop, frames, outbox

    def pending(self) -> list[dict]:
        try:
            return json.loads(self.outbox.read_bytes())["pending"]
        except (FileNotFoundError, ValueError):
            return []

    async def halt(self) -> Any:
        self.stop.set()
        return await asyncio.wait_for(self.task, 10)


def start(url: str, token: str, fake: FakeMT5, outbox: Path, **kw: Any) -> Running:
    stop = asyncio.Event()
    frames: list[str] = []
    options = {**FAST, **kw}
    task = asyncio.create_task(
        run_agent(url, token, mt5=fake, outbox=outbox, stop=stop, on_frame=frames.append, **options)
    )
    return Running(task, stop, frames, outbox)


async def events(store_server: Server, account: str = ACCOUNT) -> list:
    page = await store_server.store.events(EventQuery(account=account, limit=1000))
    return sorted(page.items, key=lambda e: e.offset)


def kinds(evs: list, pid: int) -> list[tuple[str, str]]:
    return [(e.event, e.source) for e in evs if e.positionId == pid]


def terminal() -> FakeMT5:
    fake = FakeMT5(tz_offset_sec=10800)
    fake.quote("EURUSD", 1.08500, 1.08512)
    fake.quote("XAUUSD", 2381.15, 2381.45)
    return fake


# --- open, modify, partial close, close ---------------------------------------------------------
async def test_open_modify_partial_close_and_close_are_stored_with_details(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json", symbols=["EURUSD", "XAUUSD"])
    try:
        opened_at = int(time.time() * 1000)
        pid = fake.open("EURUSD", "buy", 0.3, 1.08512, magic=7001, comment='hedge "A"', commission=-2.1)

        async def opened():
            return [e for e in await events(server) if e.positionId == pid and e.event == "OPEN"]

        (open_event,) = await until(opened, what="OPEN")
        assert open_event.source == "ea" and open_event.system  # 7001 is a system magic in conftest
        pos = open_event.position
        assert (pos.symbol, pos.side, pos.volume, pos.openPrice, pos.magic) == ("EURUSD", "buy", 0.3, 1.08512, 7001)
        assert pos.comment == 'hedge "A"' and pos.commission == -2.1 and pos.ticket == pid
        # The package reports broker time (UTC+3 here): the hub gets UTC.
        assert abs(pos.openTime - opened_at) < 2000

        fake.modify(pid, sl=1.08, tp=1.095)

        async def modified():
            return [e for e in await events(server) if e.positionId == pid and e.event == "MODIFY"]

        (modify,) = await until(modified, what="MODIFY")
        assert (modify.position.sl, modify.position.tp) == (1.08, 1.095)

        fake.partial_close(pid, 0.1, 1.08601, 8.9)
        partial = await until(
            lambda: _where(server, pid, lambda e: e.event == "MODIFY" and e.position.volume == 0.2), what="partial"
        )
        assert partial[0].reason == "partial"

        fake.close(pid, price=1.08650, profit=27.6, reason=DEAL_REASON_TP)
        (close,) = await stored(server, pid, "CLOSE", "CLOSE")
        assert close.source == "ea"
        assert close.closePrice == 1.0865 and close.reason == "tp"
        assert close.profit == pytest.approx(36.5)  # both exit deals: 8.9 + 27.6
        assert close.position.price == 1.0865

        await until(lambda: _async(not agent.pending()), what="outbox drained by acks")
        assert kinds(await events(server), pid) == [("OPEN", "ea"), ("MODIFY", "ea"), ("MODIFY", "ea"), ("CLOSE", "ea")]
        view = server.hub.state.accounts[ACCOUNT]
        assert view.info.platform == "agent" and view.info.login == fake.login and view.info.tzOffsetSec == 10800
        assert view.state is not None and view.state.marginLevel is None  # margin 0: null, not the terminal's 0
        assert server.hub.state.prices["XAUUSD"].bid == 2381.15
    finally:
        await agent.halt()


def sent_events(agent: Running) -> set[tuple[str, int]]:
    """(event, position id) of every durable message the agent has put on the wire."""
    out = set()
    for frame in agent.frames:
        data = json.loads(frame)
        for msg in data if isinstance(data, list) else [data]:
            if msg["type"] == "position":
                out.add((msg["event"], msg["position"]["id"]))
    return out


async def _where(server, pid, pred) -> list:
    return [e for e in await events(server) if e.positionId == pid and pred(e)]


async def stored(server, pid: int, event: str, what: str) -> list:
    """Wait until the hub's store holds `event` for position `pid`; its records of that event."""
    return await until(lambda: _where(server, pid, lambda e: e.event == event), what=what)


async def _async(value):
    return value


# --- a terminal that misleads ---------------------------------------------------------------------
async def _system_errors(server, code: str) -> list:
    alerts = await server.store.alerts(AlertQuery(account=ACCOUNT, limit=100))
    return [a for a in alerts if a.type == "SYSTEM_ERROR" and code in a.message]


async def test_a_terminal_logged_in_to_another_account_is_not_read_as_this_one(server, tmp_path):
    """File > Login to another account: its positions are not this account's. Read as if they were, every
    open position here closed for good (a detail-less CLOSE) and the other's opened under this token."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json")
    try:
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a")
        fake.switch_account(999_001, "Other-Demo")
        b = fake.open("XAUUSD", "sell", 0.2, 2381.15)  # the other account's position
        (alert,) = await until(lambda: _system_errors(server, "999001"), what="the operator told")
        assert "account_switched" in alert.message or "switched" in alert.message
        await asyncio.sleep(0.5)  # ten polls and more: nothing of the other account goes out
        assert ("CLOSE", a) not in sent_events(agent) and ("OPEN", b) not in sent_events(agent)
        fake.restore_account()
        fake.close(a, 1.086, 8.8)
        (close,) = await stored(server, a, "CLOSE", "the real CLOSE of a")
        assert close.closePrice == 1.086 and close.profit == pytest.approx(8.8)
        assert not await _where(server, b, lambda e: True)
    finally:
        await agent.halt()


def test_initialising_the_terminal_again_onto_another_account_is_refused():
    from tradewire.agent.runner import Agent, AgentConfig

    fake = terminal()
    agent = Agent(AgentConfig(url="http://hub", token="t"), fake)
    agent.initialize()
    fake.switch_account(999_001)
    with pytest.raises(AgentError, match="999001"):
        agent.initialize()  # what the agent does after the terminal fell silent: not onto another account


async def test_a_terminal_cut_off_from_its_trade_server_closes_nothing(server, tmp_path):
    """Disconnected (or still synchronising after a restart) a terminal may list no positions: that is
    not "every position closed". Back online, positions are compared again after a settling time."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json", settle=0.3)
    try:
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a")
        fake.broker_connected = False  # positions_get now lists nothing
        await asyncio.sleep(1.0)  # twice the close grace: a CLOSE would have gone by now
        assert ("CLOSE", a) not in sent_events(agent)
        fake.broker_connected = True
        fake.close(a, 1.086, 8.8, reason=DEAL_REASON_SL)
        (close,) = await stored(server, a, "CLOSE", "the real CLOSE")
        assert close.reason == "sl" and close.closePrice == 1.086
    finally:
        await agent.halt()


async def test_an_earlier_partial_close_is_not_taken_for_the_close(server, tmp_path):
    """The history can lag the position list: a position gone whose final deal is not in yet must wait for
    it, not take the earlier partial close's price, profit and reason (and lose a stop-out's)."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json", close_grace=3.0)
    try:
        pid = fake.open("EURUSD", "buy", 1.0, 1.1)
        await stored(server, pid, "OPEN", "OPEN")
        fake.partial_close(pid, 0.4, 1.11, 40.0)
        await stored(server, pid, "MODIFY", "the partial's MODIFY")
        fake.close(pid, 1.05, -300.0, reason=6, deal_later=True)  # DEAL_REASON_SO, its deal not in yet
        await asyncio.sleep(0.5)
        assert ("CLOSE", pid) not in sent_events(agent)  # waiting for the final deal
        fake.deliver_deals()
        (close,) = await stored(server, pid, "CLOSE", "CLOSE")
        assert (close.closePrice, close.reason) == (1.05, "stopout") and close.profit == pytest.approx(-260.0)
    finally:
        await agent.halt()


async def test_a_close_whose_deal_never_comes_tells_the_operator(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json", close_grace=0.3)
    try:
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, pid, "OPEN", "OPEN")
        fake.close(pid, 1.086, 8.8, deal_later=True)  # and never delivered
        (close,) = await stored(server, pid, "CLOSE", "CLOSE")
        assert close.closePrice is None
        (alert,) = await until(lambda: _system_errors(server, f"position {pid}"), what="SYSTEM_ERROR")
        assert "close_details_missing" in alert.message or "closing deal" in alert.message
    finally:
        await agent.halt()


async def test_a_poll_that_raises_does_not_stop_the_agent_reading_the_terminal(server, tmp_path, monkeypatch):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    real = fake.positions_get
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("IPC hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(fake, "positions_get", flaky)
    agent = start(server.url, token, fake, tmp_path / "outbox.json")
    try:
        await until(lambda: _async(calls["n"] > 3), what="polled past the failure")
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, pid, "OPEN", "OPEN after the failure")
    finally:
        await agent.halt()


async def test_initialising_a_silent_terminal_again_does_not_stall_the_agent(server, tmp_path):
    """MetaTrader5.initialize can block for a minute: run on the event loop, it stopped the heartbeats and
    acks (the hub then raised CONNECTION_LOST for a link that was fine) every tenth failed poll."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json", settle=0.2)
    try:
        await until(lambda: _async(agent.frames), what="connected")
        fake.initialize_delay_s = 1.0
        fake.fail_initialize = (-10005, "IPC timeout")
        fake.initialize_args = None  # set again only by the agent's initialising it anew
        fake.connected = False  # the terminal went silent: every poll fails, initialize is tried again
        gaps, last = [], time.monotonic()
        for _ in range(150):  # 1.5 s: more than ten polls, so an initialize runs
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert fake.initialize_args is not None and max(gaps) < 0.5
        fake.fail_initialize, fake.initialize_delay_s = None, 0.0
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)  # once initialised again, it reads on
        await stored(server, pid, "OPEN", "OPEN after the outage")
    finally:
        await agent.halt()


def welcomed(agent: Running) -> bool:
    """The agent has had its welcome: it sends its positions snapshot right after (the hello goes before)."""
    return any('"type":"positions"' in frame for frame in agent.frames)


async def test_a_trade_opened_and_closed_between_two_polls_is_reported(server, tmp_path):
    """Snapshots only show what is open at each look: a hedge trade opened and closed within a poll (or while
    the agent was stopped) left no OPEN and no CLOSE, and no system trade. The deal history has it."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    old = fake.open("EURUSD", "buy", 0.1, 1.08)  # history from before the agent: not replayed
    fake.close(old, 1.081, 1.0)
    outbox = tmp_path / "outbox.json"
    agent = start(server.url, token, fake, outbox, interval=0.5)
    try:
        await until(lambda: _async(welcomed(agent)), what="welcome")
        await asyncio.sleep(0.6)  # a poll has marked where history stands
        pid = fake.open("XAUUSD", "sell", 0.5, 2381.15, magic=7001, comment="hedge", commission=-3.5)
        fake.close(pid, 2380.05, 55.0, reason=DEAL_REASON_TP)  # within the same poll interval
        (close,) = await stored(server, pid, "CLOSE", "CLOSE")
        (opened,) = await _where(server, pid, lambda e: e.event == "OPEN")
        assert opened.system and opened.position.magic == 7001 and opened.position.openPrice == 2381.15
        assert (opened.position.symbol, opened.position.side, opened.position.volume) == ("XAUUSD", "sell", 0.5)
        assert (close.closePrice, close.profit, close.reason) == (2380.05, 55.0, "tp")
    finally:
        await agent.halt()
    while_stopped = fake.open("EURUSD", "sell", 0.2, 1.09)
    fake.close(while_stopped, 1.0895, 10.0)
    agent = start(server.url, token, fake, outbox, interval=0.5)
    try:
        await stored(server, while_stopped, "CLOSE", "CLOSE after restart")
        await asyncio.sleep(1.2)  # more polls: reported once
        assert kinds(await events(server), while_stopped) == [("OPEN", "ea"), ("CLOSE", "ea")]
        assert kinds(await events(server), pid) == [("OPEN", "ea"), ("CLOSE", "ea")]
        assert not await _where(server, old, lambda e: True)
    finally:
        await agent.halt()


def hellos(agent: Running) -> int:
    return sum('"type":"hello"' in frame for frame in agent.frames)


async def test_two_agents_on_one_account_do_not_take_it_from_each_other_in_a_loop(server, tmp_path, monkeypatch):
    """Closed 4000 (replaced by a newer session) an agent waits before it dials again: back at once, the
    two would knock each other off about once a second for as long as both run."""
    monkeypatch.setattr("tradewire.agent.runner.REPLACED_DELAY_S", 2.0)
    token = await issue_token(server, ACCOUNT)
    first = start(server.url, token, terminal(), tmp_path / "a.json", backoff_cap=5.0)
    try:
        await until(lambda: _async(hellos(first) == 1), what="the first agent connected")
        second = start(server.url, token, terminal(), tmp_path / "b.json", backoff_cap=5.0)
        try:
            await until(lambda: _async(hellos(second) == 1), what="the second agent connected")
            await asyncio.sleep(1.2)
            assert (hellos(first), hellos(second)) == (1, 1)  # the replaced one is still waiting
        finally:
            await second.halt()
    finally:
        await first.halt()


async def test_a_second_agent_on_the_same_outbox_file_is_refused_by_name(server, tmp_path):
    """Two agents writing one outbox file each wrote its own view over the other's; a restart then read
    whichever saved last. The second now stops at once, naming the file and the first's process."""
    token = await issue_token(server, ACCOUNT)
    outbox = tmp_path / "shared.json"
    first = start(server.url, token, terminal(), outbox)
    try:
        await until(lambda: _async(hellos(first) == 1), what="the first agent connected")
        with pytest.raises(AgentError, match="another agent is running on the outbox file") as info:
            await run_agent(server.url, token, mt5=terminal(), outbox=outbox, **FAST)
        assert str(outbox) in str(info.value) and f"process {os.getpid()}" in str(info.value)
        assert info.value.exit_code == 2
        assert hellos(first) == 1  # the first was not disturbed
    finally:
        await first.halt()
    again = start(server.url, token, terminal(), outbox)  # the lock went with the first agent
    try:
        await until(lambda: _async(hellos(again) == 1), what="an agent after the first stopped")
    finally:
        await again.halt()


# --- durability -----------------------------------------------------------------------------------
async def test_hub_down_events_wait_in_the_outbox_file_and_are_stored_once_after_restart(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json")
    restarted: Server | None = None
    try:
        a = fake.open("EURUSD", "sell", 1.0, 1.085, sl=1.09)
        await stored(server, a, "OPEN", "OPEN a")
        await until(lambda: _async(not agent.pending()), what="OPEN a acked")

        port = server.port
        await server.stop()  # the hub goes away with the agent connected

        fake.modify(a, sl=1.088)
        await until(lambda: _async(len(agent.pending()) == 1), what="MODIFY a in the outbox")
        b = fake.open("XAUUSD", "buy", 0.05, 2381.45)
        await until(lambda: _async(len(agent.pending()) == 2), what="OPEN b in the outbox")
        fake.close(a, price=1.0842, profit=80.0, reason=DEAL_REASON_SL)
        await until(lambda: _async(len(agent.pending()) == 3), what="CLOSE a in the outbox")
        assert [m["event"] for m in agent.pending()] == ["MODIFY", "OPEN", "CLOSE"]

        restarted = Server(make_settings(tmp_path, port=port))  # same database file, same port
        await restarted.start()
        await until(lambda: _async(not agent.pending()), what="outbox resent and acked")
        evs = await events(restarted)
        assert kinds(evs, a) == [("OPEN", "ea"), ("MODIFY", "ea"), ("CLOSE", "ea")]
        assert kinds(evs, b) == [("OPEN", "ea")]
        close = next(e for e in evs if e.positionId == a and e.event == "CLOSE")
        assert (close.closePrice, close.profit, close.reason) == (1.0842, 80.0, "sl")
    finally:
        await agent.halt()
        if restarted is not None:
            await restarted.stop()


class Proxy:
    """A TCP proxy between agent and hub that can lose traffic either way and cut every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_down = False  # hub -> agent bytes are discarded (acks lost)
        self.drop_up = False  # agent -> hub bytes are discarded (messages lost in flight)
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.refusing = False  # new connections are closed at once (the hub is down)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, lambda: self.drop_up),
            self._pipe(up_reader, writer, lambda: self.drop_down),
            return_exceptions=True,
        )

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, dropping) -> None:
        try:
            while data := await src.read(65536):
                if not dropping():
                    dst.write(data)
                    await dst.drain()
        finally:
            dst.close()

    def cut(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def through_proxy(server, tmp_path: Path, **kw: Any):
    """An agent on a terminal, connected to the hub through a `Proxy`: (proxy, terminal, agent)."""
    token = await issue_token(server, ACCOUNT)
    proxy = Proxy(server.port)
    url = await proxy.start()
    fake = terminal()
    agent = start(url, token, fake, tmp_path / "outbox.json", **kw)
    try:
        yield proxy, fake, agent
    finally:
        await agent.halt()
        await proxy.close()


async def test_dropped_connection_lost_acks_and_lost_frames_nothing_lost_nothing_twice(server, tmp_path):
    async with through_proxy(server, tmp_path) as (proxy, fake, agent):
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a stored")
        await until(lambda: _async(not agent.pending()), what="OPEN a acked")

        # 1. The hub stores and acks, the ack never arrives; the connection then drops. Meanwhile the next
        #    durable message waits: one durable frame at a time (an ack is cumulative; see Outbox.next_frame).
        proxy.drop_down = True
        b = fake.open("EURUSD", "sell", 0.2, 1.085)
        await stored(server, b, "OPEN", "OPEN b stored")
        fake.modify(b, tp=1.07)
        await until(lambda: _async(len(agent.pending()) == 2), what="MODIFY b in the outbox")
        await asyncio.sleep(0.3)
        assert ("MODIFY", b) not in sent_events(agent)  # held while OPEN b is unanswered
        assert [m["event"] for m in agent.pending()] == ["OPEN", "MODIFY"]  # unacked as far as the agent knows
        proxy.cut()
        proxy.drop_down = False
        await until(lambda: _async(not agent.pending()), what="welcome's ackedSeq covers OPEN b, MODIFY b sent")
        assert await _where(server, b, lambda e: e.event == "MODIFY")

        # 2. Frames are lost in flight: the hub never sees them; the agent resends after reconnecting.
        connections = proxy.accepted
        proxy.drop_up = proxy.drop_down = True
        fake.close(a, price=1.0861, profit=9.8)
        c = fake.open("XAUUSD", "buy", 0.01, 2381.45)
        await until(lambda: _async(("CLOSE", a) in sent_events(agent)), what="CLOSE a sent into the void")
        await until(lambda: _async(sorted(m["event"] for m in agent.pending()) == ["CLOSE", "OPEN"]), what="OPEN c")
        assert not await _where(server, a, lambda e: e.event == "CLOSE" and e.source == "ea")
        proxy.cut()
        proxy.drop_up = proxy.drop_down = False
        await until(lambda: _async(not agent.pending()), what="resent and acked")
        assert proxy.accepted > connections

        evs = await events(server)
        assert kinds(evs, a) == [("OPEN", "ea"), ("CLOSE", "ea")]
        assert kinds(evs, b) == [("OPEN", "ea"), ("MODIFY", "ea")]
        assert kinds(evs, c) == [("OPEN", "ea")]
        close = next(e for e in evs if e.positionId == a and e.event == "CLOSE")
        assert (close.closePrice, close.profit) == (1.0861, 9.8)


async def test_an_outbox_file_that_cannot_be_written_does_not_end_every_session_at_its_welcome(
    server, tmp_path, monkeypatch
):
    """The save right after a welcome was outside any guard: with the disk full, every reconnect was hello,
    welcome, close, and nothing got through (the hub raised CONNECTION_LOST) until the disk was freed."""
    async with through_proxy(server, tmp_path) as (proxy, fake, agent):
        await until(lambda: _async(welcomed(agent)), what="welcome")

        def refuse(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("tradewire.agent.runner.os.replace", refuse)
        connections = proxy.accepted
        proxy.cut()
        await until(lambda: _async(proxy.accepted > connections), what="a reconnect")
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a stored over the new session")


async def test_a_backlog_is_not_overtaken_by_a_snapshot_that_no_longer_lists_its_position(
    server, tmp_path, monkeypatch
):
    """Back from an outage the agent resends its backlog a frame at a time, and sent a snapshot with the first:
    taken after the position closed, it had the hub record a reconciled CLOSE, and the position's MODIFYs in
    the later frames were then not stored (a MODIFY after a CLOSE)."""
    monkeypatch.setattr("tradewire.agent.runner.MAX_BATCH", 3)  # a backlog of several frames
    async with through_proxy(server, tmp_path) as (proxy, fake, agent):
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a stored")
        await until(lambda: _async(not agent.pending()), what="OPEN a acked")
        proxy.refusing = True
        proxy.cut()  # the hub is away
        for step in range(8):
            fake.modify(a, sl=1.08 + step / 10_000)
            await until(lambda n=step: _async(len(agent.pending()) == n + 1), what=f"MODIFY {step} in the outbox")
        fake.close(a, price=1.0861, profit=9.8)
        await until(lambda: _async(len(agent.pending()) == 9), what="CLOSE a in the outbox")
        proxy.refusing = False
        await until(lambda: _async(not agent.pending()), what="the backlog acked", timeout=15)
        evs = await events(server)
        assert kinds(evs, a) == [("OPEN", "ea")] + [("MODIFY", "ea")] * 8 + [("CLOSE", "ea")]


async def test_messages_renumbered_at_a_welcome_go_out_only_once_their_numbers_are_on_disk(
    server, http, tmp_path, monkeypatch
):
    """A fresh outbox's messages are renumbered above the hub's seq. Sent under the new numbers while the file
    could not be written, then lost with the process, they went out again at the next start under newer ones,
    new ids that the hub stored a second time. The session now ends until the numbers are saved."""
    token = await issue_token(server, ACCOUNT)
    earlier = await EA.connect(http, server, token)
    await earlier.greet()
    await earlier.send([position_event(seq, pid=9000 + seq) for seq in range(1, 6)])  # an earlier life: seq 5
    await earlier.wait_ack(5)
    await earlier.close()
    async with through_proxy(server, tmp_path) as (proxy, fake, agent):
        proxy.refusing = True
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await until(lambda: _async([m["seq"] for m in agent.pending()] == [1]), what="OPEN a in a fresh outbox")
        real_replace = os.replace

        def refuse(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("tradewire.agent.runner.os.replace", refuse)
        proxy.refusing = False
        await until(lambda: _async(proxy.accepted >= 3), what="sessions welcomed and ended")
        assert not await _where(server, a, lambda e: True)  # nothing went out under the unsaved numbers
        monkeypatch.setattr("tradewire.agent.runner.os.replace", real_replace)
        await stored(server, a, "OPEN", "OPEN a, once its new seq is saved")
        assert [m["seq"] for m in agent.pending()] == [] and agent.outbox.exists()


async def test_an_ack_that_never_comes_makes_the_agent_reconnect_and_nothing_is_lost(server, tmp_path):
    """On AWS a frame's Lambda call can die before it answers: the agent must not wait for ever, nor send
    past the unanswered frame (a later ack would cover it); it reconnects, and the welcome settles it."""
    async with through_proxy(server, tmp_path, ack_timeout=0.6) as (proxy, fake, agent):
        await until(lambda: _async(proxy.accepted == 1 and welcomed(agent)), what="connected")
        proxy.drop_down = True  # the hub stores OPEN a; its ack is lost; the connection stays up
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, a, "OPEN", "OPEN a stored")
        proxy.drop_down = False
        fake.modify(a, sl=1.08)
        await until(lambda: _async(not agent.pending()), what="both acked after a reconnect")
        assert proxy.accepted >= 2  # the agent dropped the silent connection itself
        evs = await events(server)
        assert kinds(evs, a) == [("OPEN", "ea"), ("MODIFY", "ea")]


async def test_a_message_refused_for_good_is_dropped_and_does_not_hold_up_the_next(server, tmp_path, caplog):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    agent = start(server.url, token, fake, tmp_path / "outbox.json")
    try:
        await until(lambda: _async(agent.frames), what="connected")
        bad = fake.open("", "buy", 0.1, 1.0)  # a symbol the hub refuses: invalid_message, every time
        await until(lambda: _async(("OPEN", bad) in sent_events(agent)), what="the bad OPEN sent")
        good = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, good, "OPEN", "the next OPEN stored")
        await until(lambda: _async(not agent.pending()), what="outbox empty")
        assert not await _where(server, bad, lambda e: True)
        assert any(f"open-{bad}-" in r.getMessage() and "for good" in r.getMessage() for r in caplog.records)
    finally:
        await agent.halt()


async def test_restart_with_a_lost_outbox_file_stores_nothing_twice_and_loses_nothing(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    outbox = tmp_path / "outbox.json"
    agent = start(server.url, token, fake, outbox)
    a = fake.open("EURUSD", "buy", 0.1, 1.08512)
    b = fake.open("XAUUSD", "sell", 0.02, 2381.15)
    await stored(server, b, "OPEN", "OPEN b")
    fake.modify(a, sl=1.08)
    await stored(server, a, "MODIFY", "MODIFY a")
    await until(lambda: _async(not agent.pending()), what="acked")
    await agent.halt()
    acked = await server.store.acked_seq(ACCOUNT)
    assert acked == 3

    outbox.unlink()  # the PC lost the file; meanwhile a trade happens
    c = fake.open("EURUSD", "sell", 0.5, 1.085)
    agent = start(server.url, token, fake, outbox)
    try:
        await stored(server, c, "OPEN", "OPEN c")
        await until(lambda: _async(not agent.pending()), what="acked")
        evs = await events(server)
        assert kinds(evs, a) == [("OPEN", "ea"), ("MODIFY", "ea")]
        assert kinds(evs, b) == [("OPEN", "ea")]
        assert kinds(evs, c) == [("OPEN", "ea")]
        # The fresh outbox's provisional seqs were moved above the hub's: none was refused or dropped.
        assert await server.store.acked_seq(ACCOUNT) == acked + 3
        assert json.loads(outbox.read_bytes())["seq"] == acked + 3
    finally:
        await agent.halt()


async def test_a_large_backlog_goes_out_in_bounded_frames(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    ids = [fake.open("EURUSD", "buy", 0.01, 1.085 + i / 100_000) for i in range(250)]
    agent = start(server.url, token, fake, tmp_path / "outbox.json")
    try:
        await until(lambda: _async(len(sent_events(agent)) == 250 and not agent.pending()), what="250 OPENs acked")
        assert max(len(json.loads(f)) if f.startswith("[") else 1 for f in agent.frames) <= 100
        opened = {e.positionId for e in await events(server) if e.event == "OPEN" and e.source == "ea"}
        assert opened == set(ids)
    finally:
        await agent.halt()


# --- credentials and installation ---------------------------------------------------------------
async def test_bad_token_fails_clearly(server, tmp_path):
    with pytest.raises(TokenRefused, match=r"refused the token .*1008.*tradewire token issue"):
        await asyncio.wait_for(run_agent(server.url, "twe_nope_nope", mt5=terminal(), outbox=tmp_path / "o.json"), 10)


async def test_bad_token_exits_3_with_a_message(server, tmp_path, capsys):
    argv = ["--url", server.url, "--token", "twe_wrong", "--outbox", str(tmp_path / "o.json"), "--log-level", "error"]
    code = await asyncio.to_thread(agent_main, argv, mt5=terminal())
    assert code == 3
    assert "refused the token" in capsys.readouterr().err


def test_missing_metatrader5_package_exits_2_with_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "MetaTrader5", None)  # import fails as on Linux
    code = agent_main(["--url", "http://127.0.0.1:1", "--token", "twe_x", "--outbox", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "MetaTrader5 package is not installed" in err and "pip install MetaTrader5" in err and "Windows" in err


async def test_terminal_that_cannot_initialize_exits_2(tmp_path):
    fake = terminal()
    fake.fail_initialize = (-6, "Terminal: Authorization failed")
    with pytest.raises(AgentError, match="Authorization failed") as info:
        await run_agent("http://127.0.0.1:1", "twe_x", mt5=fake, outbox=tmp_path / "o.json", login=1, server="S")
    assert info.value.exit_code == 2 and fake.initialize_args == {"path": None, "login": 1, "server": "S"}


async def test_a_terminal_not_ready_at_start_is_waited_for(server, tmp_path):
    """Started with Windows, the agent may come up before the terminal has logged in: it exited (code 2),
    where the EAs wait. It now tries again with back-off for a while; a refused login still ends it at once."""
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    fake.fail_initialize = (-10003, "IPC initialize failed")
    agent = start(server.url, token, fake, tmp_path / "outbox.json", start_wait=30.0)
    try:
        await until(lambda: _async(fake.initialize_args is not None), what="a first attempt")
        await asyncio.sleep(0.3)
        assert not agent.task.done()  # waiting, not exited
        fake.fail_initialize = None  # the terminal is up
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await stored(server, pid, "OPEN", "OPEN once it is up")
    finally:
        await agent.halt()
    gone = terminal()
    gone.fail_initialize = (-10003, "IPC initialize failed")
    with pytest.raises(AgentError, match="IPC initialize failed"):  # not for ever: start_wait
        await run_agent(server.url, token, mt5=gone, outbox=tmp_path / "o2.json", start_wait=0.3, **FAST)


def test_bad_url_is_refused_before_anything_runs(capsys):
    assert agent_main(["--url", "ftp://hub", "--token", "t"], mt5=terminal()) == 2
    assert "must start with http://" in capsys.readouterr().err


# --- the pure core ------------------------------------------------------------------------------
def _pos(pid: int = 1, **kw: Any) -> dict:
    base = {"id": pid, "symbol": "EURUSD", "side": "buy", "volume": 0.3, "openPrice": 1.1, "sl": 0.0, "tp": 0.0}
    return {**base, "price": 1.1, "profit": 0.0, **kw}


def test_diff_positions_classifies_changes():
    known = {1: _pos(1), 2: _pos(2), 3: _pos(3), 4: _pos(4)}
    current = {1: _pos(1, price=1.2, profit=5.0), 2: _pos(2, sl=1.0), 3: _pos(3, volume=0.1), 5: _pos(5)}
    changes = {(c.event, c.position["id"], c.reason) for c in core.diff_positions(known, current)}
    assert changes == {("MODIFY", 2, None), ("MODIFY", 3, "partial"), ("CLOSE", 4, None), ("OPEN", 5, None)}
    assert core.diff_positions({1: _pos(1)}, {1: _pos(1, side="sell")})[0].reason == "reversal"


def test_outbox_acks_renumbers_and_round_trips():
    box = core.Outbox()
    for pid in (10, 11, 12):
        box.add(core.Change("OPEN", _pos(pid)), 1000)
    assert [m["id"] for m in box.pending.values()] == ["open-10-1", "open-11-2", "open-12-3"]
    # A fresh outbox's first welcome: the hub already holds seq 40 from an earlier life.
    resend = box.on_welcome(40)
    assert [m["seq"] for m in resend] == [41, 42, 43] and resend[0]["id"] == "open-10-41" and box.seq == 43
    assert box.ack(42) == 2 and list(box.pending) == [43]
    again = core.Outbox.loads(box.dumps())
    assert (again.seq, list(again.pending), again.synced) == (43, [43], True)
    assert again.on_welcome(43) == [] and again.seq == 43  # synced: a cumulative ack, no renumbering
    with pytest.raises(ValueError, match="outbox"):
        core.Outbox.loads(b'{"version": 99}')


def test_an_error_message_renumbered_at_a_welcome_keeps_its_kind_of_id():
    """A fresh outbox holding an error (account_switched, close_details_missing) for an account the hub knows:
    the renumbering read the error's event and position, raised KeyError, and the agent died at every start."""
    box = core.Outbox()
    box.add_error("account_switched", "logged in to another account", 1000)
    box.add(core.Change("OPEN", _pos(10)), 1000)
    assert [(m["seq"], m["id"]) for m in box.on_welcome(500)] == [(501, "error-501"), (502, "open-10-502")]


def test_a_message_never_sent_is_renumbered_when_the_hub_acked_its_seq_already():
    """The file's last save failed (a locked file) while the hub stored and acked seq 11; then a crash. The file
    says seq 10: the restart's first poll found the position closed and gave its CLOSE seq 11, and the welcome's
    ackedSeq 11 dropped it as acked, unsent. A message read from the file may have been sent: acked as before."""
    box = core.Outbox(seq=10, synced=True)
    box.pending = {10: {**core.Outbox().add(core.Change("OPEN", _pos(4)), 1000), "seq": 10, "id": "open-4-10"}}
    close = box.add(core.Change("CLOSE", _pos(5)), 1000)
    assert close["seq"] == 11
    resend = box.on_welcome(11)
    assert [(m["seq"], m["id"]) for m in resend] == [(12, "close-5-12")] and box.seq == 12
    assert [m["seq"] for m in box.next_frame(11, limit=10)] == [12]
    assert box.on_welcome(12) == []  # sent now: a cumulative ack covers it


def test_outbox_sends_one_durable_frame_at_a_time_and_drops_a_refused_message():
    box = core.Outbox()
    for pid in range(10, 15):
        box.add(core.Change("OPEN", _pos(pid)), 1000)
    first = box.next_frame(0, limit=2)
    assert [m["seq"] for m in first] == [1, 2]
    assert box.unanswered(2) and box.next_frame(2, limit=2) == []  # held until 1 and 2 are answered
    box.ack(1)
    assert box.next_frame(2, limit=2) == []  # 2 is still unanswered
    assert box.refuse("open-11-2")["seq"] == 2 and box.refuse("open-11-2") is None
    assert not box.unanswered(2) and [m["seq"] for m in box.next_frame(2, limit=2)] == [3, 4]


def test_close_details_wait_for_the_deals_to_net_to_zero():
    fake = FakeMT5(tz_offset_sec=0)
    consts = core.Constants.from_module(fake)
    pid = fake.open("EURUSD", "sell", 1.0, 1.1)
    fake.partial_close(pid, 0.4, 1.09, 40.0)
    assert core.close_details(fake.deals, pid, 0, consts) is None  # 0.6 still open
    partial = core.close_details(fake.deals, pid, 0, consts, settled=False)  # the best there is, if it must
    assert partial is not None and partial.close_price == 1.09
    fake.close(pid, 1.08, 120.0)
    details = core.close_details(fake.deals, pid, 0, consts)
    assert details is not None and (details.close_price, details.profit) == (1.08, 160.0)


def test_close_details_sum_partial_exits_and_map_the_reason():
    fake = FakeMT5(tz_offset_sec=0)
    pid = fake.open("EURUSD", "buy", 1.0, 1.1, commission=-7.0)
    fake.partial_close(pid, 0.4, 1.11, 40.0)
    fake.close(pid, 1.12, 120.0, reason=6)  # DEAL_REASON_SO
    details = core.close_details(fake.deals, pid, 0, core.Constants.from_module(fake))
    assert details is not None
    assert (details.close_price, details.profit, details.reason, details.commission) == (1.12, 160.0, "stopout", -7.0)
    assert core.close_details(fake.deals, 999, 0) is None


def test_the_broker_clock_believes_only_quotes_seen_moving():
    """A quote that stopped an hour ago is within two minutes of a quarter hour, so it "looked fresh" and gave
    UTC+2 for a UTC+3 broker: every time the agent reported was an hour off, for as long as it ran."""
    utc = 1_700_000_000.0

    def quote(at: float, offset: int = 10800, age_s: float = 0.0) -> int:  # broker ms of a quote seen at `at`
        return int((at + offset - age_s) * 1000)

    clock = core.BrokerClock()
    assert clock.observe("XAUUSD", quote(utc, age_s=3600), utc) and (clock.offset, clock.source) == (7200, "guess")
    assert not clock.observe("XAUUSD", quote(utc, age_s=3600), utc + 5)  # not moving: still only a guess
    clock.observe("EURUSD", quote(utc), utc)
    assert clock.source == "guess"  # first look at EURUSD: not yet seen moving
    assert clock.observe("EURUSD", quote(utc + 5), utc + 5) and (clock.offset, clock.source) == (10800, "live")
    # Daylight saving: the reading that straddles the jump back is not believed (the quote went backwards);
    # the next moving one that disagrees is held, and believed when a later look agrees (not another symbol
    # of the same look).
    assert not clock.observe("EURUSD", quote(utc + 10, 7200), utc + 10) and clock.pending is None
    clock.observe("GBPUSD", quote(utc + 12, 7200), utc + 12)
    assert not clock.observe("EURUSD", quote(utc + 20, 7200), utc + 20) and clock.pending == (7200, utc + 20)
    assert not clock.observe("GBPUSD", quote(utc + 20.5, 7200), utc + 20.5) and clock.offset == 10800
    assert clock.observe("EURUSD", quote(utc + 30, 7200), utc + 30) and clock.offset == 7200
    # A quote that first reads 0 (just selected) and then a stale time has changed, not moved: no offset.
    fresh = core.BrokerClock()
    assert not fresh.observe("XAUUSD", 0, utc) and fresh.source == "none"
    fresh.observe("XAUUSD", quote(utc + 1, age_s=3600), utc + 1)
    assert fresh.source == "guess"  # only a guess, replaced by the first quote seen moving
    fresh.observe("EURUSD", quote(utc + 2), utc + 2)
    assert fresh.observe("EURUSD", quote(utc + 3), utc + 3) and (fresh.offset, fresh.source) == (10800, "live")
    fixed = core.BrokerClock(3600, "fixed")
    fixed.observe("EURUSD", quote(utc), utc)
    assert not fixed.observe("EURUSD", quote(utc + 1), utc + 1) and fixed.offset == 3600


async def test_a_stale_quote_at_start_does_not_set_the_broker_offset(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = FakeMT5(tz_offset_sec=10800)
    fake.quote("XAUUSD", 2381.15, 2381.45, age_s=3600)  # metals in their daily break: an hour old
    fake.quote("EURUSD", 1.085, 1.0851)
    outbox = tmp_path / "outbox.json"
    agent = start(server.url, token, fake, outbox, symbols=["XAUUSD", "EURUSD"], tz_probe=0.2)
    try:
        await until(lambda: _async(welcomed(agent)), what="welcome")
        assert server.hub.state.accounts[ACCOUNT].info.tzOffsetSec == 10800
        await until(lambda: _async(json.loads(outbox.read_bytes()).get("tzOffsetSec") == 10800), what="saved")
    finally:
        await agent.halt()
    # Restarted while every quote is stale (the weekend): the saved offset, not a guess from a stale quote.
    fake.quote("EURUSD", 1.085, 1.0851, age_s=2 * 3600 - 30)
    agent = start(server.url, token, fake, outbox, symbols=["XAUUSD", "EURUSD"], tz_probe=0.2)
    try:
        pid = fake.open("USDJPY", "buy", 0.1, 150.0)
        (opened,) = await stored(server, pid, "OPEN", "OPEN")
        assert abs(opened.position.openTime - time.time() * 1000) < 5000
    finally:
        await agent.halt()


async def test_without_symbols_the_start_reads_the_offset_from_the_open_positions_quotes(server, tmp_path):
    token = await issue_token(server, ACCOUNT)
    fake = FakeMT5(tz_offset_sec=10800)
    gold = fake.open("XAUUSD", "buy", 0.1, 2381.15)
    fake.quote("XAUUSD", 2381.15, 2381.45, age_s=3600)  # its market in a break: an hour-old quote
    euro = fake.open("EURUSD", "sell", 0.2, 1.085)  # moving
    agent = start(server.url, token, fake, tmp_path / "outbox.json", tz_probe=0.2)  # no --symbols
    try:
        await stored(server, euro, "OPEN", "OPENs")
        for pid in (gold, euro):
            (opened,) = await _where(server, pid, lambda e: e.event == "OPEN")
            assert abs(opened.position.openTime - time.time() * 1000) < 5000, pid
    finally:
        await agent.halt()


async def test_an_outbox_file_that_stays_unwritable_does_not_stop_the_agent_reading(server, tmp_path, monkeypatch):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    outbox = tmp_path / "outbox.json"
    agent = start(server.url, token, fake, outbox)
    try:
        await until(lambda: _async(welcomed(agent)), what="welcome")

        def refuse(src, dst):
            raise PermissionError(13, "Access is denied")

        monkeypatch.setattr("tradewire.agent.runner.os.replace", refuse)
        a = fake.open("EURUSD", "buy", 0.1, 1.08512)  # its save fails, and every one after
        b = fake.open("EURUSD", "sell", 0.1, 1.08512)
        for pid in (a, b):  # the terminal is still read, and the hub still told
            await stored(server, pid, "OPEN", f"OPEN {pid}")
    finally:
        await agent.halt()


def test_tz_offset_detection_needs_a_fresh_quote():
    now = 1_700_000_000.0
    assert core.detect_tz_offset(now + 10800 + 1.5, now) == 10800
    assert core.detect_tz_offset(now - 3600 * 5.5, now) == -19800
    assert core.detect_tz_offset(now - 2 * 86400, now) is None  # weekend: the last quote is days old
    assert core.detect_tz_offset(now + 10800 + 400, now) is None


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch):
    """The command configures the root logger; under pytest that would outlive the test."""
    monkeypatch.setattr("tradewire.agent.cli.setup_logging", lambda *a, **k: None)


async def test_an_outbox_save_that_failed_is_tried_again_without_waiting_for_a_change(server, tmp_path, monkeypatch):
    token = await issue_token(server, ACCOUNT)
    fake = terminal()
    outbox = tmp_path / "outbox.json"
    real_replace, failures = __import__("os").replace, []

    def held_once(src, dst):  # Windows: an antivirus holding the file for a moment
        if not failures and str(dst) == str(outbox):
            failures.append(dst)
            raise PermissionError(13, "The process cannot access the file")
        return real_replace(src, dst)

    # The hub is away: no ack comes to trigger a save of its own.
    agent = start(server.url.rsplit(":", 1)[0] + ":9", token, fake, outbox)
    try:
        await until(lambda: _async(outbox.exists()), what="started")
        monkeypatch.setattr("tradewire.agent.runner.os.replace", held_once)
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await until(lambda: _async(bool(failures)), what="a save failed")

        def saved_known() -> bool:
            return any(p["id"] == pid for p in json.loads(outbox.read_bytes())["known"])

        await until(lambda: _async(saved_known()), what="saved again without a new change")
    finally:
        await agent.halt()


def test_frames_are_cut_by_count_and_by_bytes_in_order():
    messages = [{"type": "position", "seq": n, "pad": "x" * 300} for n in range(1, 251)]
    frames = core.pack_frames(messages, 100, 32 * 1024 - 256)
    assert [m for _, chunk in frames for m in chunk] == messages  # all of them, in order
    assert all(len(text) <= 32 * 1024 - 256 and json.loads(text) == chunk for text, chunk in frames)
    assert len(frames) == 3 and len(frames[0][1]) < 100  # the bytes cut first
    assert [len(chunk) for _, chunk in core.pack_frames(messages, 100)] == [100, 100, 50]
    (one,) = core.pack_frames(messages[:1], 100, 10)  # alone over the limit: still its own frame
    assert json.loads(one[0]) == messages[0]


async def test_frames_to_api_gateway_stay_under_its_32_kb():
    """API Gateway closes a connection sent a frame over 32 KB (1009): a backlog of ~90 durable messages or a
    snapshot of ~130 positions was refused, again at every reconnect, and nothing got through for good."""
    from tradewire.agent.runner import Agent, AgentConfig

    agent = Agent(AgentConfig(url="wss://a1b2.execute-api.eu-west-1.amazonaws.com/prod", token="t"), terminal())
    assert agent.url.endswith("/prod") and agent.max_frame_bytes is not None
    box = agent.outbox
    for pid in range(1, 101):
        box.add(core.Change("OPEN", _pos(pid, comment="c" * 200)), 1000)
    durable = box.next_frame(0, 100, agent.max_frame_bytes)
    assert 10 < len(durable) < 100 and durable == list(box.pending.values())[: len(durable)]

    class Socket:  # what the agent writes, as a WebSocket would take it
        def __init__(self) -> None:
            self.frames: list[str] = []

        async def send_str(self, text: str) -> None:
            self.frames.append(text)

    snapshot = core.positions_message([_pos(pid, comment="c" * 200) for pid in range(300)], 1)
    ws = Socket()
    await agent._send(ws, [*durable, {"type": "heartbeat", "ts": 1}, snapshot])  # type: ignore[arg-type]
    assert all(len(f.encode()) <= 32 * 1024 for f in ws.frames)
    sent = [m for f in ws.frames for m in (json.loads(f) if f.startswith("[") else [json.loads(f)])]
    assert [m["type"] for m in sent] == ["position"] * len(durable) + ["heartbeat"]  # the snapshot left out
    local = Agent(AgentConfig(url="https://hub.example.com", token="t"), terminal())
    assert local.max_frame_bytes is None  # the hub's own limit is 1 MiB: frames of 100 as ever
