"""The agent's I/O: poll the terminal through the MetaTrader5 package, stream protocol v1 over a WebSocket.

Two loops share one `Outbox`:

* the poller reads the terminal every `interval` seconds whether or not the hub is reachable, diffs
  the positions into durable OPEN / MODIFY / CLOSE messages, writes the outbox file, and keeps the
  latest account state, positions and ticks for the sender;
* the connection loop dials the hub (`GET /ea/v1`, bearer token), says hello, applies the welcome's
  `ackedSeq`, resends what is unacked, sends a full snapshot, then streams. It alone writes to the
  socket, so durable messages go out in seq order. Acks trim the outbox file. A dropped connection
  is redialled with jittered exponential back-off; a refused token (close 1008, HTTP 401/403)
  stops the agent, since retrying cannot help.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tradewire.agent import core
from tradewire.agent.filelock import FileLock, LockHeld
from tradewire.ea_url import ea_ws_url
from tradewire.model import now_ms

log = logging.getLogger("tradewire.agent")

MISSING_PACKAGE = (
    "the MetaTrader5 package is not installed. It is published for Windows only, where the MetaTrader 5 "
    "terminal runs: on that PC run `pip install MetaTrader5` (or `pip install tradewire[agent]`) and start "
    "the agent there"
)
CLOSE_POLICY = 1008
WELCOME_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
SNAPSHOT_EVERY_S = 5.0
CLOSE_GRACE_S = 3.0  # how long a vanished position waits for its exit deal to reach the history
REINIT_AFTER = 10  # failed polls in a row before the terminal connection is initialised again
IPC_FAILURES = -10000  # MetaTrader5.last_error() codes at or below: the terminal not answering (RES_E_INTERNAL_FAIL*)
START_WAIT_S = 300.0  # at start, how long a terminal not ready (not started, not logged in) is waited for
MAX_BATCH = 100  # durable messages per frame: a long outage's backlog stays far below the hub's frame limit
# API Gateway (the AWS deployment) refuses a frame over 32 KB (close 1009): frames to it are cut below that.
API_GATEWAY_FRAME_BYTES = 32 * 1024 - 256
ACK_TIMEOUT_S = 30.0  # a durable frame unanswered this long: reconnect, and the welcome says what was stored
# After the terminal's link to the trade server comes back (or the agent initialised it again), its position
# list and history are still loading: an empty list then is not "every position closed".
SETTLE_S = 5.0
TZ_CHECK_S = 30.0  # how often a known broker offset is checked against moving quotes (daylight saving)
TZ_SYMBOLS = 8  # quotes read per check at most
TZ_PROBE_S = 1.5  # at start, with no offset known: two looks this far apart, to see a quote move
HISTORY_MARGIN_S = 86400  # the history scan's window reaches this far past the last scan, either side
HISTORY_SCAN_S = 5.0  # how often the deal history is scanned for trades no poll saw
HEALTHY_SESSION_S = 60.0  # a session this long (or one ack) resets the back-off: a hub closing at once does not
REPLACED_DELAY_S = 30.0  # closed 4000 (another session for the account took over): do not take it back at once
# Errors that refuse a durable message for good: resent, it would be refused again and hold up the rest.
REFUSED_FOR_GOOD = frozenset({"invalid_message", "unknown_type", "wrong_account"})


class AgentError(Exception):
    """The agent cannot run; `exit_code` is what the command exits with."""

    exit_code = 2


class TerminalNotReady(AgentError):
    """The terminal is not there yet (not started, still logging in, its IPC timing out): worth waiting for,
    unlike a refused login or a wrong path. The agent started with Windows may come up before it."""


class TokenRefused(AgentError):
    exit_code = 3


def load_mt5() -> Any:
    """Import the MetaTrader5 package, or fail with what to do about it."""
    try:
        return importlib.import_module("MetaTrader5")
    except ImportError:
        raise AgentError(MISSING_PACKAGE) from None


def ws_url(url: str) -> str:
    """The hub's EA WebSocket endpoint (see ea_url.py), or AgentError."""
    try:
        return ea_ws_url(url)
    except ValueError as exc:
        raise AgentError(str(exc)) from None


def backoff_delay(failures: int, rng: random.Random, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """1 s, 2 s, 4 s, ... capped at 60 s, each drawn from the upper half so that a fleet spreads out."""
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return rng.uniform(ceiling / 2, ceiling)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tradewire")
    except Exception:
        return "0"


@dataclass(slots=True)
class AgentConfig:
    url: str
    token: str
    interval: float = 1.0
    symbols: tuple[str, ...] = ()
    outbox: Path | None = None
    terminal_path: str | None = None
    login: int | None = None
    password: str | None = None
    server: str | None = None
    tz_offset_sec: int | None = None  # None: detect from quotes
    snapshot_every: float = SNAPSHOT_EVERY_S
    close_grace: float = CLOSE_GRACE_S
    backoff_base: float = BACKOFF_BASE_S
    backoff_cap: float = BACKOFF_CAP_S
    ack_timeout: float = ACK_TIMEOUT_S
    settle: float = SETTLE_S
    tz_probe: float = TZ_PROBE_S
    start_wait: float = START_WAIT_S


class Replaced(ConnectionError):
    """The hub closed this session 4000: a newer one for the same account (another agent or EA) took over."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        mt5: Any,
        *,
        stop: asyncio.Event | None = None,
        on_frame: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.mt5 = mt5
        self.consts = core.Constants.from_module(mt5)
        self.url = ws_url(config.url)
        self.max_frame_bytes = API_GATEWAY_FRAME_BYTES if ".execute-api." in self.url.split("/")[2] else None
        self._too_big_said = False
        self.stop = stop or asyncio.Event()
        self.on_frame = on_frame
        self.rng = rng or random.Random()
        self.outbox = core.Outbox()
        self.path: Path | None = None
        self._lock: FileLock | None = None
        self.clock = (
            core.BrokerClock(config.tz_offset_sec, "fixed") if config.tz_offset_sec is not None else core.BrokerClock()
        )
        self._tz_checked = -TZ_CHECK_S  # monotonic
        self._tz_warned = False
        self.info: Any = None
        # (login, server) the agent started with: its token, outbox and known positions are this account's.
        self.identity: tuple[int, str] | None = None
        self._foreign: tuple[int, str] | None = None  # the other account the terminal is logged in to, if so
        self._offline = False  # the terminal's link to the trade server is down
        self._settle_until = 0.0  # monotonic: positions are not compared before it (see SETTLE_S)
        self.positions: dict[int, core.Wire] = {}  # the terminal's open set at the last poll
        self.ticks: list[core.Wire] = []
        self.account: core.Wire | None = None
        self.connected = False
        self._wake = asyncio.Event()
        self._commission: dict[int, float] = {}
        self._gone_since: dict[int, float] = {}
        # Positions this run reported closed: a late closing deal must not have the history scan report them
        # opened and closed again (bounded: the oldest are forgotten).
        self._closed: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._history_scanned = -HISTORY_SCAN_S  # monotonic
        # Positions a scan saw a new deal of, not yet closed in full (their closing deal may come later with a
        # lower ticket than one already scanned): looked at again by each scan, for an hour.
        self._unsettled: dict[int, float] = {}
        self._poll_failures = 0
        self._reinit_due = False
        self._unsaved = False  # the outbox file is behind the outbox: its last save failed
        self._renumbered_unsaved = False  # ... and a welcome renumbered messages since it last succeeded
        self._last_save_error = ""
        self._mt5_busy: asyncio.Future[None] | None = None  # a MetaTrader5 call running in a thread
        self._failures = 0  # connection attempts since the last welcome
        self._last_poll_error = ""
        self.stats = {"polls": 0, "durable": 0, "acked": 0, "refused": 0, "resent": 0, "connects": 0}

    # --- terminal ---------------------------------------------------------------------------
    def initialize(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.config.login is not None:
            kwargs["login"] = self.config.login
        if self.config.password:
            kwargs["password"] = self.config.password
        if self.config.server:
            kwargs["server"] = self.config.server
        ok = (
            self.mt5.initialize(self.config.terminal_path, **kwargs)
            if self.config.terminal_path
            else self.mt5.initialize(**kwargs)
        )
        if not ok:
            error = self.mt5.last_error()
            code = error[0] if isinstance(error, tuple) and error and isinstance(error[0], int) else 0
            why = (
                f"MetaTrader5.initialize failed: {error}. Is the MT5 terminal installed, and are "
                "--terminal-path / --login / --password / --server right?"
            )
            # The package's internal failures (-10000 and below: IPC send, receive, init, connect, timeout)
            # are a terminal not (yet) answering; the others (authorization failed, not found, ...) are not.
            raise TerminalNotReady(why) if code <= IPC_FAILURES else AgentError(why)
        info = self.mt5.account_info()
        if info is None:
            raise TerminalNotReady(
                f"the terminal reports no account: {self.mt5.last_error()}. Log in to an account first"
            )
        identity = (int(info.login), str(info.server))
        if self.identity is None:
            self.identity = identity
        elif identity != self.identity:
            raise AgentError(f"the terminal is logged in to account {identity[0]} on {identity[1]}, not {self._who()}")
        else:
            # Initialised again after the terminal went silent: its lists are loading again.
            self._settle_until = time.monotonic() + self.config.settle
        self.info = info
        for symbol in self.config.symbols:
            if not self.mt5.symbol_select(symbol, True):
                log.warning("symbol %s cannot be selected in Market Watch: no ticks for it", symbol)
        log.info(
            "terminal: account %s on %s (%s, %s, 1:%s)",
            info.login,
            info.server,
            info.company,
            info.currency,
            info.leverage,
        )

    def load_outbox(self) -> None:
        """Read the outbox file (or start one) and make sure it can be written: before anything is sent."""
        login = int(self.info.login)
        self.path = self.config.outbox or Path.home() / ".tradewire" / f"agent-{login}.json"
        lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        try:
            lock.acquire()
        except LockHeld as exc:
            raise AgentError(
                f"another agent is running on the outbox file {self.path} ({exc}): stop it, or give this one "
                "its own with --outbox"
            ) from None
        except OSError as exc:
            raise AgentError(f"cannot lock the outbox file {self.path}: {exc}") from None
        self._lock = lock
        self._read_outbox()
        if self.outbox.tz is not None and self.clock.source == "none":
            self.clock.offset, self.clock.source = self.outbox.tz, "saved"
        try:
            self.save_outbox()
        except OSError as exc:
            raise AgentError(f"cannot write the outbox file {self.path}: {exc}") from None

    def _read_outbox(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            log.info("outbox %s: new", self.path)
            return
        except OSError as exc:
            raise AgentError(f"cannot read the outbox file {self.path}: {exc}") from None
        try:
            self.outbox = core.Outbox.loads(raw)
        except ValueError as exc:
            broken = self.path.with_name(self.path.name + ".broken")
            log.error("outbox %s is unreadable (%s): moved aside to %s, starting afresh", self.path, exc, broken)
            with contextlib.suppress(OSError):
                os.replace(self.path, broken)
            return
        self._log_outbox()

    def _log_outbox(self) -> None:
        log.info(
            "outbox %s: seq %d, %d unacked, %d known positions",
            self.path,
            self.outbox.seq,
            len(self.outbox.pending),
            len(self.outbox.known),
        )

    def save_outbox(self) -> None:
        """Write the outbox atomically: a crash leaves the old file or the new one, never half of one. One that
        failed (an antivirus or a backup holding the file on Windows) is tried again at every poll: else the
        file kept old known positions until the next change, and a crash then resent acked MODIFYs anew."""
        assert self.path is not None
        self._unsaved = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(self.outbox.dumps())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._unsaved = self._renumbered_unsaved = False

    @property
    def tz(self) -> int:
        """The broker's offset from UTC in seconds: the package reports broker time."""
        return self.clock.offset

    def _detect_tz(self, extra: list[str] | None = None, *, force: bool = False) -> None:
        """Read quotes into the broker clock: every poll until an offset is read from a moving quote, then
        every TZ_CHECK_S (daylight saving moves it twice a year, and a connection can last weeks)."""
        clock = self.clock
        settled = clock.source in ("fixed", "live")
        if clock.source == "fixed" or (settled and not force and time.monotonic() - self._tz_checked < TZ_CHECK_S):
            return
        self._tz_checked = time.monotonic()
        symbols = list(self.config.symbols) + sorted({p["symbol"] for p in self.positions.values()}) + (extra or [])
        for symbol in list(dict.fromkeys(symbols))[:TZ_SYMBOLS]:
            tick = self.mt5.symbol_info_tick(symbol)
            if tick is None:
                continue
            if clock.observe(symbol, int(tick.time_msc or tick.time * 1000), time.time()):
                how = "a quote not yet seen moving: a guess" if clock.source == "guess" else "moving quotes"
                log.info("broker time is UTC%+g h (from %s %s)", clock.offset / 3600, symbol, how)
            if clock.source == "live" and self.outbox.tz != clock.offset:
                self.outbox.tz = clock.offset  # the next restart's first guess
                self._outbox_changed()
        if clock.source in ("none", "guess") and symbols and not self._tz_warned:
            self._tz_warned = True
            log.warning(
                "broker time offset not read from a moving quote yet (%s): taking it as UTC%+g h until one "
                "moves; --tz-offset-sec fixes it",
                ", ".join(symbols[:TZ_SYMBOLS]),
                clock.offset / 3600,
            )

    def _who(self) -> str:
        assert self.identity is not None
        return f"account {self.identity[0]} on {self.identity[1]}"

    def _same_account(self, info: Any) -> bool:
        """Whether the terminal is still logged in to the agent's account. Logged in to another (File >
        Login), its positions are not this account's: read as this account's they would close every one of
        them for good and open the other's under this token. The agent reads nothing until it is back."""
        identity = (int(info.login), str(info.server))
        if identity == self.identity:
            if self._foreign is not None:
                log.warning("the terminal is back on %s: reading it again", self._who())
                self._foreign = None
                self._settle_until = time.monotonic() + self.config.settle
            return True
        if identity != self._foreign:
            self._foreign = identity
            why = (
                f"the terminal switched to account {identity[0]} on {identity[1]}; the agent streams "
                f"{self._who()} and reads nothing until the terminal is logged in to it again"
            )
            log.error("%s", why)
            self._durable_error("account_switched", why)
        return False

    def _terminal_connected(self) -> bool:
        """Whether the terminal is connected to the trade server and its lists have had time to load. A
        disconnected or still synchronising terminal may list no positions: that is not "all closed"."""
        terminal_info = getattr(self.mt5, "terminal_info", None)
        if terminal_info is None:  # a stand-in without it
            return True
        ti = terminal_info()
        if ti is None or not getattr(ti, "connected", False):
            if not self._offline:
                self._offline = True
                log.warning("the terminal is not connected to the trade server: positions are not compared")
            return False
        if self._offline:
            self._offline = False
            self._settle_until = time.monotonic() + self.config.settle
            log.info("the terminal is connected again: comparing positions in %g s", self.config.settle)
        return time.monotonic() >= self._settle_until

    def _durable_error(self, code: str, message: str) -> None:
        """An `error` message to the hub (a SYSTEM_ERROR alert there): what the operator must hear of."""
        self.outbox.add_error(code, message, now_ms())
        self.stats["durable"] += 1
        self._outbox_changed()

    def poll(self) -> list[core.Wire]:
        """Read the terminal once: new durable messages go to the outbox (and its file); the latest
        volatile state is kept for the sender. Returns the new durable messages."""
        info = self.mt5.account_info()
        raw_positions = self.mt5.positions_get()
        if info is None or raw_positions is None:
            # An error, not an empty account: never read it as "every position closed".
            self._poll_failed(f"terminal did not answer: {self.mt5.last_error()}")
            return []
        self._poll_failures = 0
        if not self._same_account(info) or not self._terminal_connected():
            return []
        self.info = info
        self.stats["polls"] += 1
        now = now_ms()
        self._detect_tz([str(p.symbol) for p in raw_positions])
        current: dict[int, core.Wire] = {}
        for p in raw_positions:
            pid = int(p.identifier)
            self._gone_since.pop(pid, None)  # listed again: a later close waits its grace afresh
            if pid not in self._commission:
                deals = self.mt5.history_deals_get(position=pid)
                commission = core.commission_of(deals, pid)
                if deals is None:
                    current[pid] = core.position_wire(p, self.tz, commission, self.consts)
                    continue  # the history did not answer: not 0 for good, asked again next poll
                self._commission[pid] = commission
            current[pid] = core.position_wire(p, self.tz, self._commission[pid], self.consts)
        self.positions = current

        durable: list[core.Wire] = []
        known = dict(self.outbox.known)
        for change in core.diff_positions(self.outbox.known, current):
            pid = change.position["id"]
            if change.event == "CLOSE":
                deals = self.mt5.history_deals_get(position=pid)
                if deals is None:
                    continue  # the history did not answer: that is not "no exit deal", look again
                details = core.close_details(deals, pid, self.tz, self.consts)
                if details is None:
                    first = self._gone_since.setdefault(pid, time.monotonic())
                    if time.monotonic() - first < self.config.close_grace:
                        continue  # the final exit deal is not in the history yet: keep it known, look again
                    # The best the history has (an earlier partial close's deals, or none at all).
                    details = core.close_details(deals, pid, self.tz, self.consts, settled=False)
                    why = (
                        f"position {pid} {change.position['symbol']} closed but its closing deal is not in the "
                        f"terminal's history after {self.config.close_grace:g} s: its CLOSE has no close price, "
                        "profit or reason"
                    )
                    if details is not None:
                        why = why.replace("has no close price, profit or reason", "has an earlier exit's figures")
                    log.warning("%s", why)
                    self._durable_error("close_details_missing", why)
                self._gone_since.pop(pid, None)
                self._commission.pop(pid, None)
                known.pop(pid, None)
                msg = self.outbox.add(
                    core.Change("CLOSE", core.closed_position(change.position, details)), now, details
                )
            else:
                known[pid] = change.position
                # An OPEN happened when the position opened (maybe before the agent started).
                ts = change.position["openTime"] if change.event == "OPEN" and change.position["openTime"] else now
                msg = self.outbox.add(change, ts)
            durable.append(msg)
            log.info(
                "%s position %s %s %s %s (seq %d)",
                msg["event"],
                pid,
                change.position["symbol"],
                change.position["side"],
                change.position["volume"],
                msg["seq"],
            )
        for pid, pos in current.items():
            known[pid] = pos  # latest prices, so that a CLOSE without deals still carries them
        for msg in durable:
            if msg.get("event") == "CLOSE":
                self._remember_closed(msg["position"]["id"])
        if time.monotonic() - self._history_scanned >= HISTORY_SCAN_S:
            self._history_scanned = time.monotonic()
            durable += self._scan_history(set(self.outbox.known) | set(current), now)
        structural = set(known) != set(self.outbox.known)
        self.outbox.known = known
        if durable or structural:
            self.stats["durable"] += len(durable)
            self.save_outbox()

        self.account = core.account_message(info, now, self.consts)
        ticks = []
        for symbol in self.config.symbols:
            entry = core.tick_entry(symbol, self.mt5.symbol_info_tick(symbol), self.tz)
            if entry is not None:
                ticks.append(entry)
        self.ticks = ticks
        self._wake.set()
        return durable

    async def _initialize_at_start(self) -> None:
        """Initialise the terminal, waiting (with back-off, up to `start_wait`) while it is not ready."""
        deadline = time.monotonic() + self.config.start_wait
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.initialize)  # it can block for a minute: heartbeats are not up yet,
                return  # but stop (Ctrl-C) must still be heard
            except TerminalNotReady as exc:
                attempt += 1
                if time.monotonic() >= deadline or self.stop.is_set():
                    raise
                delay = min(
                    backoff_delay(attempt, self.rng, self.config.backoff_base, 30.0), deadline - time.monotonic()
                )
                log.warning("%s; trying again in %.0f s", exc, max(delay, 0.0))
                if await self._sleep(max(delay, 0.0)):
                    raise

    def _remember_closed(self, pid: int) -> None:
        self._closed[pid] = None
        while len(self._closed) > 10_000:
            self._closed.popitem(last=False)

    def _scan_history(self, seen: set[int], now: int) -> list[core.Wire]:
        """Positions opened and closed between two polls (or while the agent was stopped) never show in a
        snapshot: found in the deal history, each is reported as an OPEN and a CLOSE. The first scan only
        marks where history stands (what came before the agent is not replayed)."""
        box = self.outbox
        since = box.deal_scanned_at if box.deal_scanned_at is not None else time.time()
        # Broker time, as the deals' is, with a margin either side: how the package reads these dates is not
        # pinned down (local, UTC or broker time), and a day or two either way costs a few more deals.
        window = (
            datetime.fromtimestamp(since + self.tz - HISTORY_MARGIN_S, UTC),
            datetime.fromtimestamp(time.time() + self.tz + HISTORY_MARGIN_S, UTC),
        )
        deals = self.mt5.history_deals_get(*window)
        if deals is None:
            return []  # the history did not answer: scanned again next poll, from the same point
        newest = max((int(d.ticket) for d in deals), default=0)
        if box.deal_ticket is None:
            box.deal_ticket, box.deal_scanned_at = newest, time.time()
            return []
        out: list[core.Wire] = []
        closed = self._closed.keys()
        missed, unsettled = core.missed_positions(deals, box.deal_ticket, seen, self.consts, closed, self._unsettled)
        horizon = time.monotonic() - 3600
        self._unsettled = {pid: self._unsettled.get(pid, time.monotonic()) for pid in unsettled}
        self._unsettled = {pid: at for pid, at in self._unsettled.items() if at > horizon}
        for pid in missed:
            position = core.position_from_deals(deals, pid, self.tz, self.consts)
            details = core.close_details(deals, pid, self.tz, self.consts)
            if position is None or details is None:
                continue
            opened = box.add(core.Change("OPEN", position), position["openTime"] or now)
            closed = box.add(core.Change("CLOSE", core.closed_position(position, details)), now, details)
            self._remember_closed(pid)
            out += [opened, closed]
            log.info(
                "position %s %s %s %s opened and closed between two polls: OPEN and CLOSE (seq %d, %d)",
                pid, position["symbol"], position["side"], position["volume"], opened["seq"], closed["seq"],
            )  # fmt: skip
        box.deal_ticket, box.deal_scanned_at = max(box.deal_ticket, newest), time.time()
        return out

    def _poll_failed(self, why: str) -> None:
        self._poll_failures += 1
        if why != self._last_poll_error:
            log.warning("%s", why)
            self._last_poll_error = why
        if self._poll_failures % REINIT_AFTER == 0:
            self._reinit_due = True  # by the poll loop, off the event loop (see _reinitialize)

    def _reinitialize(self) -> None:
        """Initialise the terminal connection again. It can block for a minute (the package's IPC timeout, or
        a terminal it starts), so the poll loop runs it in a thread: the hub connection's heartbeats and acks
        go on meanwhile. No other MetaTrader5 call runs then: the poll loop alone makes them, and it waits."""
        log.warning("terminal silent for %d polls: initialising the connection again", self._poll_failures)
        with contextlib.suppress(Exception):
            self.mt5.shutdown()
        try:
            self.initialize()
        except AgentError as exc:
            log.warning("%s", exc)
        except Exception as exc:  # whatever the package raises: the poll loop must go on
            log.warning("initialising the terminal again failed: %s: %s", type(exc).__name__, exc)

    def _poll_once(self) -> None:
        if self._unsaved:  # apart from the poll: a file that stays unwritable must not stop the reading
            try:
                self.save_outbox()
            except OSError as exc:
                if str(exc) != self._last_save_error:
                    self._last_save_error = str(exc)
                    log.error("cannot write the outbox file %s: %s (tried again every poll)", self.path, exc)
        try:
            self.poll()
        except OSError as exc:
            log.error("cannot write the outbox file %s: %s", self.path, exc)
        except Exception as exc:  # the poller must not die while the connection streams stale state
            log.exception("reading the terminal failed")
            self._poll_failed(f"reading the terminal failed: {type(exc).__name__}: {exc}")

    async def _poll_loop(self) -> None:
        while not self.stop.is_set():
            self._poll_once()
            if self._reinit_due:
                self._reinit_due = False
                self._mt5_busy = asyncio.ensure_future(asyncio.to_thread(self._reinitialize))
                await asyncio.shield(self._mt5_busy)  # cancelled (stopping): run() waits for the thread
            await self._sleep(self.config.interval)

    async def _sleep(self, delay: float) -> bool:
        """Sleep unless stopped first; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)
        return self.stop.is_set()

    # --- hub ------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._initialize_at_start()
        try:
            self.load_outbox()
            if self.clock.source == "none":
                # Nothing known: two looks at the quotes (of the symbols streamed and those of open positions),
                # to see one move, before the first positions are read (their open times are turned into UTC).
                held = [str(p.symbol) for p in self.mt5.positions_get() or ()]
                self._detect_tz(held, force=True)
                await self._sleep(self.config.tz_probe)
                self._detect_tz(held, force=True)
            self._poll_once()
            poller = asyncio.create_task(self._poll_loop(), name="agent-poll")
            try:
                await self._connection_loop()
            finally:
                self.stop.set()
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        finally:
            if self._mt5_busy is not None and not self._mt5_busy.done():
                await asyncio.wait([self._mt5_busy])  # the package is not thread-safe: never two calls at once
            with contextlib.suppress(Exception):
                self.mt5.shutdown()
            if self._lock is not None:
                self._lock.release()

    async def _connection_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.stop.is_set():
                try:
                    await self._connection(session)
                except TokenRefused:
                    raise
                except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                    self._failures += 1
                    delay = backoff_delay(self._failures, self.rng, self.config.backoff_base, self.config.backoff_cap)
                    if isinstance(exc, Replaced):  # two of us on one account would take it from each other
                        delay = max(delay, min(REPLACED_DELAY_S, self.config.backoff_cap))
                    log.warning("hub %s: %s; retrying in %.1f s", self.url, str(exc) or type(exc).__name__, delay)
                    if await self._sleep(delay):
                        return

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, messages: list[core.Wire]) -> None:
        """Send messages in seq order, at most MAX_BATCH to a frame (one object alone, else an array), and
        to API Gateway at most its frame size. A volatile message alone over that (a positions snapshot of
        more than ~130 positions) is not sent: API Gateway would close the connection for it, again at every
        reconnect, and nothing durable would get through; the durable events keep the hub's list."""
        for frame, chunk in core.pack_frames(messages, MAX_BATCH, self.max_frame_bytes):
            if self.max_frame_bytes is not None and len(frame) > self.max_frame_bytes and "seq" not in chunk[0]:
                if not self._too_big_said:
                    self._too_big_said = True
                    log.warning(
                        "a %s message of %d bytes is over API Gateway's 32 KB frame: not sent (the hub keeps "
                        "positions from the trade events)",
                        chunk[0].get("type"),
                        len(frame),
                    )
                continue
            text = frame.decode()
            if self.on_frame is not None:
                self.on_frame(text)
            await ws.send_str(text)

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        """One connection: returns when stopped or when the hub closes it; raises on errors."""
        headers = {"Authorization": f"Bearer {self.config.token}"}
        try:
            ws = await session.ws_connect(self.url, headers=headers, heartbeat=20.0, max_msg_size=4 * 1024 * 1024)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise TokenRefused(f"the hub refused the token (HTTP {exc.status})") from None
            raise
        async with ws:
            await self._session(ws)

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = core.hello_message(self.info, self.tz, self.outbox.seq, _version())
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await self._send(ws, [hello])  # if the hub already closed (bad token), its close code says why
        welcome = await self._welcome(ws)
        self.stats["connects"] += 1
        # Apply the welcome and take the resend list in one step: whatever the poller adds from now
        # on is above `sent` and goes out in the loop below, in seq order.
        before = set(self.outbox.pending)
        acked_seq = int(welcome["ackedSeq"])
        resend = self.outbox.on_welcome(acked_seq)
        # One durable frame at a time (see Outbox.next_frame): `sent` is the highest seq sent on this
        # connection, and the resend goes out frame by frame like anything added later.
        sent = resend[0]["seq"] - 1 if resend else self.outbox.seq
        if any(msg["seq"] not in before for msg in resend):
            log.info("outbox: %d message(s) renumbered above the hub's seq %d", len(resend), acked_seq)
            self._renumbered_unsaved = True
        if self._renumbered_unsaved:
            # Sent under new seqs and then lost with the file, they would be sent again under newer ones at the
            # next start, and stored twice: the new numbers must be on disk first (an error ends the session).
            self.save_outbox()
        else:
            # Otherwise a file that cannot be written (a full disk, a locked file) must not end every session
            # here: the poll loop tries again, and a seq the hub acked that the file never held is renumbered.
            self._outbox_changed()
        self.stats["resent"] += len(resend)
        log.info(
            "connected to %s: ackedSeq %s, %d acked while away, resending %d",
            self.url,
            welcome["ackedSeq"],
            max(0, len(before) - len(resend)),
            len(resend),
        )
        heartbeat_s = max(1.0, float(welcome.get("heartbeatSec", 10)))
        loop = asyncio.get_running_loop()
        now = now_ms()
        durable = self.outbox.next_frame(sent, MAX_BATCH, self.max_frame_bytes)
        if durable:
            sent = durable[-1]["seq"]
        snapshot = self._snapshot(sent, now)
        await self._send(ws, [*durable, *self._volatile(), *snapshot])
        last_snapshot = last_heartbeat = sent_at = welcomed_at = loop.time()
        if not snapshot:
            last_snapshot = -math.inf  # due as soon as the backlog is out
        self.connected = True
        reader = asyncio.create_task(self._reader(ws), name="agent-read")
        try:
            while not self.stop.is_set() and not reader.done():
                timeout = heartbeat_s
                if self.outbox.unanswered(sent):  # wake in time to notice a missing ack
                    timeout = min(timeout, max(0.01, sent_at + self.config.ack_timeout - loop.time()))
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.stop.wait())]
                await asyncio.wait([*waiters, reader], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                # Cleared after the wait, not before it: an ack that came in while the last frame was
                # being sent must still wake this loop, or the next durable frame waits a heartbeat.
                self._wake.clear()
                if self.stop.is_set() or reader.done():
                    break
                t = loop.time()
                if t - welcomed_at >= HEALTHY_SESSION_S:
                    self._failures = 0  # a session that lasted: the next failure starts the back-off afresh
                if self.outbox.unanswered(sent) and t - sent_at >= self.config.ack_timeout:
                    raise ConnectionError(
                        f"no ack for seq {next(iter(self.outbox.pending))} within {self.config.ack_timeout:g} s"
                    )
                messages = self.outbox.next_frame(sent, MAX_BATCH, self.max_frame_bytes)
                if messages:
                    sent, sent_at = messages[-1]["seq"], t
                messages += self._volatile()
                if t - last_snapshot >= max(self.config.snapshot_every, self.config.interval):
                    snapshot = self._snapshot(sent, now_ms())
                    if snapshot:
                        messages += snapshot
                        last_snapshot = t
                if t - last_heartbeat >= heartbeat_s:
                    messages.append(core.heartbeat_message(now_ms()))
                    last_heartbeat = t
                await self._send(ws, messages)
        finally:
            self.connected = False
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self.stop.is_set():
            await ws.close(code=1000, message=b"agent stopping")
            return
        self._raise_for_close(ws, "")

    def _snapshot(self, sent: int, now: int) -> list[core.Wire]:
        """The positions snapshot, unless a durable message made before it is not sent yet (a backlog going out
        a frame at a time, or messages queued behind an unanswered frame): arriving first, a snapshot without a
        position has the hub record its CLOSE, and the position's MODIFYs still to come are not stored.
        Through API Gateway a connection's frames run as concurrent Lambda calls: there it also waits for the
        frame in flight to be answered."""
        if self.outbox.after(sent) or (self.max_frame_bytes is not None and self.outbox.unanswered(sent)):
            return []
        return [core.positions_message(self.positions.values(), now)]

    def _volatile(self) -> list[core.Wire]:
        out: list[core.Wire] = []
        if self.account is not None:
            out.append(self.account)
            self.account = None
        if self.ticks:
            out.append(core.ticks_message(self.ticks))
            self.ticks = []
        return out

    async def _welcome(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        async with asyncio.timeout(WELCOME_TIMEOUT_S):
            while (msg := await self._next(ws)) is not None:
                if msg.get("type") == "welcome":
                    return msg
                self._on_reply(msg)
        self._raise_for_close(ws, " before welcome")
        raise AssertionError("unreachable")

    def _raise_for_close(self, ws: aiohttp.ClientWebSocketResponse, when: str) -> None:
        code = ws.close_code
        if code == CLOSE_POLICY:
            raise TokenRefused(
                "the hub refused the token (WebSocket close 1008: invalid or revoked token). Issue one with "
                "`tradewire token issue --account ID` and pass it with --token"
            )
        if code == 4000:
            raise Replaced(
                f"the hub closed the connection{when} (close code 4000): replaced by a newer session for the same "
                "account (is another EA or agent running?)"
            )
        raise ConnectionError(f"the hub closed the connection{when} (close code {code})")

    async def _next(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    data = msgspec.json.decode(msg.data)
                except msgspec.DecodeError:
                    log.warning("hub sent a frame that is not JSON: %.200r", msg.data)
                    continue
                if isinstance(data, dict):
                    return data
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return None
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"websocket error: {ws.exception()}")

    async def _reader(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (msg := await self._next(ws)) is not None:
            self._on_reply(msg)

    def _on_reply(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ack":
            self._failures = 0  # the hub stores what we send: the next failure starts the back-off afresh
            dropped = self.outbox.ack(int(msg.get("seq", 0)))
            if dropped:
                self.stats["acked"] += dropped
                self._outbox_changed()
        elif kind == "error":
            ref, code = msg.get("ref"), msg.get("code")
            refused = self.outbox.refuse(ref) if code in REFUSED_FOR_GOOD and isinstance(ref, str) else None
            if refused is not None:
                log.error("hub refused %s for good, dropped from the outbox: %s: %s", ref, code, msg.get("message"))
                self.stats["refused"] += 1
                self._outbox_changed()
            else:
                log.warning("hub refused %s: %s: %s", ref or "a message", code, msg.get("message"))

    def _outbox_changed(self) -> None:
        self._wake.set()  # the next durable frame may go now
        try:
            self.save_outbox()
        except OSError as exc:
            log.error("cannot write the outbox file %s: %s", self.path, exc)


async def run_agent(
    url: str,
    token: str,
    *,
    mt5: Any = None,
    terminal_path: str | None = None,
    login: int | None = None,
    password: str | None = None,
    server: str | None = None,
    interval: float = 1.0,
    symbols: tuple[str, ...] | list[str] = (),
    outbox: str | Path | None = None,
    tz_offset_sec: int | None = None,
    stop: asyncio.Event | None = None,
    on_frame: Callable[[str], None] | None = None,
    snapshot_every: float = SNAPSHOT_EVERY_S,
    backoff_base: float = BACKOFF_BASE_S,
    backoff_cap: float = BACKOFF_CAP_S,
    close_grace: float = CLOSE_GRACE_S,
    ack_timeout: float = ACK_TIMEOUT_S,
    settle: float = SETTLE_S,
    tz_probe: float = TZ_PROBE_S,
    start_wait: float = START_WAIT_S,
) -> Agent:
    """Stream one MT5 terminal to a hub until `stop` is set. Raises AgentError (TokenRefused for a
    refused token) when it cannot run. `mt5` is the MetaTrader5 module, or a stand-in for it."""
    if not token:
        raise AgentError("an EA token is needed: --token TOKEN (issue one with `tradewire token issue --account ID`)")
    if interval <= 0:
        raise AgentError("--interval must be above 0")
    config = AgentConfig(
        url=url,
        token=token,
        interval=interval,
        symbols=tuple(symbols),
        outbox=Path(outbox) if outbox is not None else None,
        terminal_path=terminal_path,
        login=login,
        password=password,
        server=server,
        tz_offset_sec=tz_offset_sec,
        snapshot_every=snapshot_every,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
        close_grace=close_grace,
        ack_timeout=ack_timeout,
        settle=settle,
        tz_probe=tz_probe,
        start_wait=start_wait,
    )
    agent = Agent(config, mt5 if mt5 is not None else load_mt5(), stop=stop, on_frame=on_frame)
    await agent.run()
    return agent
