"""The fleet's I/O: each simulated account is one coroutine speaking EA protocol v1 over a real socket.

About four in five accounts are MT5 EAs on a WebSocket (`GET /ea/v1`); the rest are MT4 EAs posting
batches (`POST /ea/v1/batch`), since MQL4 has only WebRequest. All the trading behaviour lives in
`SimAccount`; this module only moves its frames and applies what the hub answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from tradewire.ea_url import ea_ws_url as ws_url
from tradewire.model import now_ms
from tradewire.sim.account import SimAccount
from tradewire.sim.market import Market
from tradewire.sim.scenarios import FIRE_AFTER_S, Scenario, make_scenario

log = logging.getLogger(__name__)

MT4_EVERY = 5  # one account in five (the 2nd, 7th, ...) is an MT4 terminal on HTTP
DISCONNECT_RATE = 1 / 600  # per second per account: now and then, so most accounts stay live
DROP_PAUSE_S = (1.0, 5.0)
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0
SNAPSHOT_EVERY_S = 3.0
PLAIN_SLEEP_S = 1.0  # waits up to this long are not cut short by a stop (see _Fleet.wait_stop)
WELCOME_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0  # how long accounts get to close their sockets once stopped
STATS_EVERY_S = 0.5
CLOSE_POLICY = 1008  # the hub's close code for a bad or revoked token

Frame = dict[str, Any]
_encode = msgspec.json.encode


@dataclass(slots=True)
class FleetStats:
    accounts: int = 0
    live: int = 0  # accounts connected and greeted right now
    messages: int = 0  # protocol messages sent (volatile and durable, resends included)
    frames: int = 0  # WebSocket frames / HTTP posts
    durable_sent: int = 0  # new durable messages sent (first time)
    durable_resent: int = 0  # unacked ones sent again after a reconnect or a failed post
    durable_acked: int = 0  # outbox entries dropped by acks (or by a welcome's ackedSeq)
    unacked: int = 0  # outbox entries left when the fleet stopped
    errors: int = 0  # `error` replies from the hub
    reconnects: int = 0
    refused: int = 0  # accounts whose token the hub refused: they stop
    elapsed: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.messages / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.accounts} accounts, {self.messages} messages ({rate:.0f}/s) in {self.elapsed:.1f}s, "
            f"durable {self.durable_acked}/{self.durable_sent} acked "
            f"({self.durable_resent} resent, {self.unacked} unacked), "
            f"{self.errors} errors, {self.reconnects} reconnects"
        )
        return text + (f", {self.refused} refused" if self.refused else "")


def announce_scenario(line: str) -> None:
    """Where the fleet says, once, what a `--scenario` did: stderr, above the live status line."""
    print(line, file=sys.stderr, flush=True)


class TokenRefused(Exception):
    """The hub refused the account's token: retrying cannot help."""


class _Fleet:
    def __init__(
        self,
        url: str,
        rate: float,
        stop: asyncio.Event,
        session: aiohttp.ClientSession,
        on_scenario: Callable[[str], None] = announce_scenario,
    ) -> None:
        self.url = url.rstrip("/")
        self.interval = 1 / rate
        self.stop = stop
        self.session = session
        self.on_scenario = on_scenario
        self.stats = FleetStats()

    async def wait_stop(self, delay: float) -> bool:
        """Sleep `delay` seconds unless stopped first; True when stopped.

        A short wait (every account's step) is a plain sleep, and a stop is seen when it ends: waiting
        on the event as well costs a task and a timer each time, which at 10 steps a second for
        hundreds of accounts was a fifth of the simulator's CPU."""
        if self.stop.is_set():
            return True
        if delay <= PLAIN_SLEEP_S:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        return self.stop.is_set()

    def on_welcome(self, sim: SimAccount, welcome: Frame) -> list[Frame]:
        """Drop what the hub already holds (its acks may have been lost with the connection); resend the rest."""
        before = len(sim.outbox)
        resend = sim.on_welcome(int(welcome["ackedSeq"]))
        self.stats.durable_acked += before - len(resend)
        self.stats.durable_resent += len(resend)
        return resend

    def on_reply(self, sim: SimAccount, msg: Frame) -> None:
        """Apply one server -> EA message (ack / error) seen on an open connection."""
        kind = msg.get("type")
        if kind == "ack":
            self.stats.durable_acked += sim.ack(int(msg["seq"]))
        elif kind == "error":
            self.count_error(sim, msg)

    def count_error(self, sim: SimAccount, error: Frame) -> None:
        self.stats.errors += 1
        code = str(error.get("code"))
        self.stats.error_codes[code] = self.stats.error_codes.get(code, 0) + 1
        log.debug("account %s: hub error %s: %s (ref %s)", sim.id, code, error.get("message"), error.get("ref"))


@dataclass(slots=True)
class _Link:
    """Per-account connection bookkeeping that outlives one connection."""

    sim: SimAccount
    token: str
    rng: random.Random
    failures: int = 0
    scenario: Scenario | None = None  # `--scenario`: scripts this account to raise one alert type


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Jittered exponential back-off: 0.5 s, 1 s, 2 s, ... capped, each drawn from its upper half."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, failures - 1))
    return rng.uniform(ceiling / 2, ceiling)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the loop every connection runs ---------------------------------------------------------------
Send = Callable[[list[Frame], list[Frame]], Awaitable[None]]


async def _pump(fleet: _Fleet, link: _Link, send: Send, alive: Callable[[], bool], heartbeat_s: float) -> str:
    """Send updates at the fleet's rate until stopped ("stopped"), dropped on purpose ("dropped"), closed, or
    left for good by a disconnect scenario ("gone")."""
    loop = asyncio.get_running_loop()
    sim = link.sim
    last_snapshot = last_heartbeat = loop.time()
    drop_chance = 1 - math.exp(-DISCONNECT_RATE * fleet.interval)
    while True:
        if await fleet.wait_stop(fleet.interval):
            return "stopped"
        if not alive():
            return "closed"
        now, t = now_ms(), loop.time()
        durable = sim.step(now)
        if link.scenario is not None:
            action = link.scenario.tick(sim, now)
            durable += action.durable
            if action.note:
                fleet.on_scenario(f"simulate: scenario {link.scenario.name}: account {sim.id} {action.note}")
            if action.leave:
                fleet.stats.durable_sent += len(durable)  # stays in the outbox, unacked
                return "gone"
        volatile = [sim.ticks_frame(now), sim.account_frame(now)]
        if t - last_snapshot >= SNAPSHOT_EVERY_S:
            volatile.append(sim.positions_frame(now))
            last_snapshot = t
        if t - last_heartbeat >= heartbeat_s:
            volatile.append(sim.heartbeat_frame(now))
            last_heartbeat = t
        fleet.stats.durable_sent += len(durable)  # counted before sending: a failed send resends them later
        await send(durable, volatile)
        if link.rng.random() < drop_chance:
            return "dropped"


# --- MT5: WebSocket -----------------------------------------------------------------------------
async def _ws_send(fleet: _Fleet, ws: aiohttp.ClientWebSocketResponse, frames: list[Frame]) -> None:
    await ws.send_str(_encode(frames).decode())
    fleet.stats.frames += 1
    fleet.stats.messages += len(frames)


async def _ws_next(ws: aiohttp.ClientWebSocketResponse) -> Frame | None:
    """The next JSON object from the hub; None once the socket is closed."""
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return msgspec.json.decode(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return None
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise ConnectionError(f"websocket error: {ws.exception()}")


def _closed_error(ws: aiohttp.ClientWebSocketResponse, when: str) -> Exception:
    code = ws.close_code
    if code == CLOSE_POLICY:
        return TokenRefused(f"the hub refused the token (close {code})")
    return ConnectionError(f"hub closed the connection {when} (close code {code})")


async def _ws_welcome(fleet: _Fleet, link: _Link, ws: aiohttp.ClientWebSocketResponse) -> Frame:
    async with asyncio.timeout(WELCOME_TIMEOUT_S):
        while (msg := await _ws_next(ws)) is not None:
            if msg.get("type") == "welcome":
                return msg
            fleet.on_reply(link.sim, msg)
    raise _closed_error(ws, "before welcome")


async def _ws_reader(fleet: _Fleet, link: _Link, ws: aiohttp.ClientWebSocketResponse) -> None:
    while (msg := await _ws_next(ws)) is not None:
        fleet.on_reply(link.sim, msg)


async def _ws_connection(fleet: _Fleet, link: _Link) -> str:
    sim = link.sim
    async with fleet.session.ws_connect(ws_url(fleet.url), headers=_auth(link.token), heartbeat=None) as ws:
        await _ws_send(fleet, ws, [sim.hello_frame()])
        welcome = await _ws_welcome(fleet, link, ws)
        link.failures = 0
        resend = fleet.on_welcome(sim, welcome)
        now = now_ms()
        sim.mark()  # fresh prices in the first snapshot; trading starts in the pump
        await _ws_send(fleet, ws, [*resend, sim.positions_frame(now), sim.account_frame(now)])
        sent = resend[-1]["seq"] if resend else sim.seq  # the highest durable seq sent on this connection
        reader = asyncio.create_task(_ws_reader(fleet, link, ws), name=f"sim-read-{sim.id}")

        async def send(durable: list[Frame], volatile: list[Frame]) -> None:
            # One durable frame at a time, as the EA protocol asks (README, "Durability rules"): the new
            # messages (already in the outbox) go once the last durable frame is answered.
            nonlocal sent
            waiting = sim.unanswered(sent)
            durable = [] if waiting else sim.after(sent)
            if durable:
                sent = durable[-1]["seq"]
            await _ws_send(fleet, ws, durable + volatile)

        fleet.stats.live += 1
        try:
            outcome = await _pump(fleet, link, send, lambda: not reader.done(), float(welcome.get("heartbeatSec", 10)))
        finally:
            fleet.stats.live -= 1
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await ws.close(code=1000)
        if outcome == "closed":
            raise _closed_error(ws, "")
        return outcome


# --- MT4: HTTP batches --------------------------------------------------------------------------
async def _post(fleet: _Fleet, link: _Link, body: Frame) -> Frame:
    url = fleet.url + "/ea/v1/batch"
    headers = {**_auth(link.token), "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with fleet.session.post(url, data=_encode(body), headers=headers, timeout=timeout) as resp:
        fleet.stats.frames += 1
        fleet.stats.messages += len(body.get("messages", [])) + ("hello" in body)
        raw = await resp.read()
        if resp.status == 401:
            raise TokenRefused(f"the hub refused the token (HTTP 401: {raw[:200]!r})")
        if resp.status != 200:
            raise ConnectionError(f"HTTP {resp.status}: {raw[:200]!r}")
    answer = msgspec.json.decode(raw)
    for error in answer.get("errors", []):
        fleet.count_error(link.sim, error)
    fleet.stats.durable_acked += link.sim.ack(int(answer["ackedSeq"]))
    return answer


async def _http_connection(fleet: _Fleet, link: _Link) -> str:
    sim = link.sim
    loop = asyncio.get_running_loop()
    welcome = await _post(fleet, link, {"hello": sim.hello_frame(), "messages": []})
    link.failures = 0
    resend = fleet.on_welcome(sim, welcome)
    heartbeat_s = float(welcome.get("heartbeatSec", 10))
    now = now_ms()
    sim.mark()  # fresh prices in the first snapshot; trading starts in the pump
    await _post(fleet, link, {"messages": [*resend, sim.positions_frame(now), sim.account_frame(now)]})
    last_ok = loop.time()

    async def send(durable: list[Frame], volatile: list[Frame]) -> None:
        nonlocal last_ok
        # Every unacked durable message rides along: an answer means all of them committed.
        pending = sim.pending()
        fleet.stats.durable_resent += len(pending) - len(durable)
        body: Frame = {"messages": pending + volatile}
        if loop.time() - last_ok >= heartbeat_s:
            body["hello"] = sim.hello_frame()  # the hub forgets an HTTP session after 3 quiet heartbeats
        answer = await _post(fleet, link, body)
        last_ok = loop.time()
        if any(e.get("code") == "hello_required" for e in answer.get("errors", [])):
            last_ok = -math.inf

    fleet.stats.live += 1
    try:
        return await _pump(fleet, link, send, lambda: True, heartbeat_s)
    finally:
        fleet.stats.live -= 1


# --- one account, reconnecting ------------------------------------------------------------------
async def _run_account(fleet: _Fleet, link: _Link) -> None:
    connect = _http_connection if link.sim.platform == "MT4" else _ws_connection
    while not fleet.stop.is_set():
        try:
            outcome = await connect(fleet, link)
        except TokenRefused as exc:
            log.warning("account %s: %s; stopping this account", link.sim.id, exc)
            fleet.stats.refused += 1
            return
        except Exception as exc:
            link.failures += 1
            expected = isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)
            log.log(
                logging.DEBUG if expected else logging.WARNING,
                "account %s: connection failed (%s): %s",
                link.sim.id,
                type(exc).__name__,
                exc,
                exc_info=not expected,
            )
            delay = backoff_delay(link.failures, link.rng)
        else:
            if outcome in ("stopped", "gone"):
                return
            delay = link.rng.uniform(*DROP_PAUSE_S)  # a deliberate drop, as a flaky client PC does
        if await fleet.wait_stop(delay):
            return
        fleet.stats.reconnects += 1


async def _report(fleet: _Fleet, started: float, on_stats: Callable[[FleetStats], None]) -> None:
    while not await fleet.wait_stop(STATS_EVERY_S):
        fleet.stats.elapsed = time.monotonic() - started
        on_stats(fleet.stats)


async def _stop_after(stop: asyncio.Event, external: asyncio.Event | None, duration: float | None) -> None:
    waiter = external.wait() if external is not None else asyncio.Event().wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiter, duration)
    stop.set()


async def run_fleet(
    url: str,
    accounts: list[tuple[str, str]],
    *,
    rate: float,
    duration: float | None,
    seed: int,
    stop: asyncio.Event | None,
    system_magics: Iterable[int],
    on_stats: Callable[[FleetStats], None] | None = None,
    scenario: str | None = None,
    scenario_account: str | None = None,
    scenario_after_s: float = FIRE_AFTER_S,
    on_scenario: Callable[[str], None] = announce_scenario,
) -> FleetStats:
    """Run one coroutine per (account id, EA token) until `stop` is set or `duration` seconds pass.

    `scenario` (sim/scenarios.py) scripts `scenario_account` (default: the first account) to raise one alert
    type, `scenario_after_s` seconds after the start; `on_scenario` gets the one line saying what it did.
    """
    ws_url(url)  # a bad URL fails here, once, instead of in every account
    if scenario is not None:
        scenario_account = scenario_account or (accounts[0][0] if accounts else None)
        if scenario_account not in {account for account, _ in accounts}:
            raise ValueError(f"scenario account {scenario_account!r} is not in the simulated fleet")
    market = Market(seed)
    magics = tuple(system_magics)
    first_ticket = int(time.time() * 100)  # above any id a previous run stored for these accounts
    internal = asyncio.Event()
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)  # each WebSocket holds a connection: no pool cap
    async with aiohttp.ClientSession(connector=connector) as session:
        fleet = _Fleet(url, rate, internal, session, on_scenario)
        fleet.stats.accounts = len(accounts)
        links = [
            _Link(
                SimAccount(
                    account,
                    market,
                    seed=seed,
                    platform="MT4" if i % MT4_EVERY == 1 else "MT5",
                    system_magics=magics,
                    first_ticket=first_ticket,
                ),
                token,
                random.Random(f"{seed}:{account}:link"),
            )
            for i, (account, token) in enumerate(accounts)
        ]
        if scenario is not None:
            target = next(link for link in links if link.sim.id == scenario_account)
            others = {symbol for link in links if link is not target for symbol in link.sim.symbols}
            fire_at = now_ms() + int(scenario_after_s * 1000)
            target.scenario = make_scenario(scenario, target.sim.id, fire_at, avoid_symbols=others)
        stopper = asyncio.create_task(_stop_after(internal, stop, duration))
        reporter = asyncio.create_task(_report(fleet, started, on_stats)) if on_stats else None
        tasks = [asyncio.create_task(_run_account(fleet, link), name=f"sim-{link.sim.id}") for link in links]
        await asyncio.wait(
            [stopper, asyncio.gather(*tasks, return_exceptions=True)], return_when=asyncio.FIRST_COMPLETED
        )
        internal.set()
        await _finish(tasks)
        for task in (stopper, reporter):
            if task is not None:
                task.cancel()
    fleet.stats.elapsed = time.monotonic() - started
    fleet.stats.unacked = sum(len(link.sim.outbox) for link in links)
    if on_stats:
        on_stats(fleet.stats)
    return fleet.stats


async def _finish(tasks: list[asyncio.Task]) -> None:
    """Give every account a moment to close its socket with 1000, then cancel what is left."""
    _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in pending:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            log.warning("simulated account failed: %r", result)
