"""Load generators. Each runs in its own process (multiprocessing, spawn), pinned to the load CPUs.

A worker is given a role and its parameters; it connects everything (`setup`), reports `ready` with what
it set up, waits for `start` with a schedule of absolute `time.perf_counter()` instants (CLOCK_MONOTONIC:
one clock for every process on the machine), runs until `stop`, and reports `done` with its counts.
Everything a worker counts is counted inside the measurement window [t0, t1) only, the same window the
parent uses for the server's CPU time, and the worker's own CPU time in that window is reported too, so
that a run where the load generators, not the server, were the bottleneck shows it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import random
import re
import resource
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from bench.wsclient import (
    WS,
    Refused,
    auth_subprotocol,
    client_frame,
    connect,
    json_frame,
    raw_subscriber,
    tcp_established,
)

STAMP_OFFSET_US = 1_000_000  # probe prices are µs since the run's base instant, plus this (a price must be > 0)
PROBE_PREFIX = "PRB"
# A probe tick inside a data frame's `event` string: {\"symbol\":\"PRB7\",\"bid\":1234567.0,...}. The optional
# spaces are the baseline's (stdlib json); the trailing comma makes sure the number is complete.
PROBE_RE = re.compile(rb'\\"' + PROBE_PREFIX.encode() + rb'\d+\\", ?\\"bid\\": ?(\d+(?:\.\d+)?),')
PROBE_TAIL = 96
FLOOD_BUFFER = 64 * 1024  # client send buffer and write high-water of EAs that send as fast as they can
MARK_POLL_S = 0.01  # how often SlowConsumers looks for dropped slow subscribers, to time the drop
SLOW_RCVBUF = 4096  # a slow subscriber: a small socket buffer, one read per throttle_s: it falls behind
DATA_MARK = b'"data"'  # one per data frame, batched or not, for both servers (escaped inside events: \"data\")


def hello(login: int) -> dict:
    return {
        "type": "hello",
        "platform": "MT5",
        "login": login,
        "server": "Bench-Live01",
        "broker": "Bench Broker",
        "currency": "USD",
        "leverage": 500,
        "ea": {"name": "TradewireBench", "version": "1.0"},
        "tzOffsetSec": 0,
    }


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def now_us() -> int:
    return time.perf_counter_ns() // 1000


async def sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def gather_limited(coros: list, limit: int) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


def split_ok(results: list) -> tuple[list, list[str]]:
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return ok, errors


async def until_stop(coros: list, s: dict, conns: list[WS], default: Any = 0) -> list:
    """Run senders until the stop instant, then reset their connections: a sender blocked on a full socket
    returns at once, and the server is not left reading a backlog after the run."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    await asyncio.wait(tasks, timeout=max(0.0, s["stop"] - time.perf_counter()) + 0.05)
    for ws in conns:
        ws.abort()
    for ws in conns:
        ws.resume_writing()  # wake senders waiting for a drain that will never come
    done, _ = await asyncio.wait(tasks, timeout=2)
    return [t.result() if t in done and not t.exception() else default for t in tasks]


class Role:
    def __init__(self, p: dict) -> None:
        self.p = p
        self.host: str = p["host"]
        self.port: int = p["port"]
        self.conns: list[WS] = []

    async def setup(self) -> dict:
        return {}

    async def run(self, s: dict) -> dict:
        await sleep_until(s["stop"])
        return {}

    def close(self) -> None:
        for ws in self.conns:
            ws.close()

    async def ea(self, token: str, login: int, high_water: int = 256 * 1024, sndbuf: int | None = None) -> WS:
        headers = {"Authorization": f"Bearer {token}"}
        ws = await connect(self.host, self.port, "/ea/v1", headers=headers, write_high_water=high_water, sndbuf=sndbuf)
        ws.send(hello(login))
        await ws.expect("welcome", timeout=60)
        return ws

    async def subscriber(self, key: str, sub_id: str, channel: str, batch: bool, rcvbuf: int | None = None) -> WS:
        protocols = ["aws-appsync-event-ws", auth_subprotocol(key, self.host)]
        ws = await connect(self.host, self.port, "/event/realtime", protocols=protocols, rcvbuf=rcvbuf)
        ws.send({"type": "connection_init", **({"payload": {"batch": True}} if batch else {})})
        await ws.expect("connection_ack", timeout=30)
        ws.send(
            {
                "type": "subscribe",
                "id": sub_id,
                "channel": channel,
                "authorization": {"x-api-key": key, "host": self.host},
            }
        )
        await ws.expect("subscribe_success", timeout=30)
        return ws


# --- 1. ingest ------------------------------------------------------------------------------------
FX = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "NZDUSD", "USDCAD", "EURGBP", "EURJPY", "GBPJPY"]
SYMBOLS = FX + [f"{a}{b}.m" for a in ("XAU", "XAG", "EUR", "GBP") for b in ("USD", "EUR", "JPY", "AUD", "CHF")]


def ingest_frames(variants: int, per_frame: int) -> tuple[list[bytes], int]:
    """Pre-built EA frames: arrays of `per_frame` messages, mostly single-tick `ticks`, some `account`, and one
    `positions` (three open positions) per frame. Prices differ between variants so that nothing can be
    short-cut as unchanged; tick `ts` is the same everywhere so that none is dropped as older."""
    ts = int(time.time() * 1000)
    frames = []
    for v in range(variants):
        msgs: list[dict] = []
        for k in range(per_frame):
            if k == per_frame - 1:
                msgs.append(
                    {
                        "type": "positions",
                        "ts": ts,
                        "positions": [
                            {
                                "id": pid,
                                "ticket": pid,
                                "symbol": FX[pid],
                                "side": "buy" if pid % 2 else "sell",
                                "volume": 0.1 * pid,
                                "openPrice": 1.1,
                                "price": 1.1 + v * 1e-5,
                                "profit": round(v * 0.1 - pid, 2),
                                "openTime": ts - 60_000,
                            }
                            for pid in (1, 2, 3)
                        ],
                    }
                )
            elif k % 5 == 4:
                equity = 10_000.0 + v + k
                msgs.append(
                    {
                        "type": "account",
                        "ts": ts,
                        "balance": 10_000.0,
                        "equity": equity,
                        "margin": 200.0,
                        "freeMargin": equity - 200.0,
                        "marginLevel": equity / 2.0,
                        "marginCallLevel": 100.0,
                        "stopOutLevel": 50.0,
                    }
                )
            else:
                bid = round(1.1 + (v * per_frame + k) * 1e-5, 5)
                sym = SYMBOLS[(v * per_frame + k) % len(SYMBOLS)]
                msgs.append({"type": "ticks", "ticks": [{"symbol": sym, "bid": bid, "ask": bid + 0.0002, "ts": ts}]})
        frames.append(json_frame(msgs))
    return frames, per_frame


class Ingest(Role):
    """K EAs, each writing pre-built frames as fast as its socket takes them."""

    async def setup(self) -> dict:
        self.frames, self.per_frame = ingest_frames(64, self.p["per_frame"])
        results = await gather_limited(
            [self.ea(t, 1000 + i, FLOOD_BUFFER, FLOOD_BUFFER) for i, t in enumerate(self.p["tokens"])], 50
        )
        self.conns, errors = split_ok(results)
        if errors:
            raise ConnectionError(f"{len(errors)} EA(s) could not connect: {errors[0]}")
        self.errors = 0
        for ws in self.conns:
            ws.on_message = self._on_message
        return {"eas": len(self.conns), "frame_bytes": len(self.frames[0])}

    def _on_message(self, payload: bytes) -> None:
        if b'"error"' in payload:
            self.errors += 1

    async def run(self, s: dict) -> dict:
        counts = await until_stop([self._pump(ws, i, s) for i, ws in enumerate(self.conns)], s, self.conns)
        frames = sum(counts)
        return {"frames_sent": frames, "messages_sent": frames * self.per_frame, "error_replies": self.errors}

    async def _pump(self, ws: WS, offset: int, s: dict) -> int:
        frames, n = self.frames, len(self.frames)
        t0, t1, stop = s["t0"], s["t1"], s["stop"]
        i, sent = offset, 0
        clock = time.perf_counter
        while not ws.is_closed:
            now = clock()
            if now >= stop:
                break
            ws.write(frames[i % n])
            i += 1
            if t0 <= now < t1:
                sent += 1
            if ws.paused:
                await ws.drain()
            elif i % 16 == 0:
                await asyncio.sleep(0)
        return sent


# --- 2/3. publishers and subscribers ----------------------------------------------------------------
class Publisher(Role):
    """EAs sending `ticks` at a fixed total rate (or, with rate None, as fast as the server takes them).

    Every tick's bid is the send instant in µs (see STAMP_OFFSET_US), so a subscriber can tell the latency
    of any tick it receives. Each EA has its own symbols, so that no tick is dropped as older than another
    EA's tick of the same symbol."""

    async def setup(self) -> dict:
        # Unpaced: a small client-side buffer, so that what the EA wrote is close to what the server has read.
        high_water = 256 * 1024 if self.p["rate"] else 16 * 1024
        results = await gather_limited([self.ea(t, 2000 + i, high_water) for i, t in enumerate(self.p["tokens"])], 50)
        self.conns, errors = split_ok(results)
        if errors:
            raise ConnectionError(f"{len(errors)} publisher EA(s) could not connect: {errors[0]}")
        return {"eas": len(self.conns)}

    async def run(self, s: dict) -> dict:
        n = len(self.conns)
        symbols = self.p["symbols"]
        rate = self.p["rate"]
        tasks = [
            self._paced(ws, symbols[i::n], rate / n, s) if rate else self._flood(ws, symbols[i::n], s)
            for i, ws in enumerate(self.conns)
        ]
        counts = await until_stop(tasks, s, self.conns, (0, 0))
        return {"ticks_sent": sum(c[0] for c in counts), "frames_sent": sum(c[1] for c in counts)}

    def _frame(self, symbols: list[str], start: int, count: int) -> bytes:
        stamp = now_us() - self.p["base_us"] + STAMP_OFFSET_US
        ms = int(time.time() * 1000)
        ns = len(symbols)
        ticks = ",".join(
            f'{{"symbol":"{symbols[(start + k) % ns]}","bid":{stamp}.0,"ask":{stamp + 1}.0,"ts":{ms}}}'
            for k in range(count)
        )
        return client_frame(('{"type":"ticks","ticks":[' + ticks + "]}").encode())

    async def _paced(self, ws: WS, symbols: list[str], rate: float, s: dict) -> tuple[int, int]:
        t0, t1, stop = s["t0"], s["t1"], s["stop"]
        start = time.perf_counter()
        sent = window_ticks = window_frames = 0
        while not ws.is_closed:
            now = time.perf_counter()
            if now >= stop:
                break
            due = min(int((now - start) * rate) - sent, 5000)
            if due > 0:
                ws.write(self._frame(symbols, sent, due))
                sent += due
                if t0 <= now < t1:
                    window_ticks += due
                    window_frames += 1
                if ws.paused:
                    await ws.drain()
            await asyncio.sleep(0.001)  # uvloop timers have 1 ms resolution: less would spin
        return window_ticks, window_frames

    async def _flood(self, ws: WS, symbols: list[str], s: dict) -> tuple[int, int]:
        """`ticks_per_frame` ticks (at most one per symbol) per frame, as fast as the server reads them."""
        t0, t1, stop = s["t0"], s["t1"], s["stop"]
        per = min(self.p.get("ticks_per_frame") or len(symbols), len(symbols))
        sent = window_ticks = window_frames = 0
        while not ws.is_closed:
            now = time.perf_counter()
            if now >= stop:
                break
            ws.write(self._frame(symbols, sent, per))
            sent += per
            if t0 <= now < t1:
                window_ticks += per
                window_frames += 1
            if ws.paused:
                await ws.drain()
            elif sent % (per * 8) == 0:
                await asyncio.sleep(0)
        return window_ticks, window_frames


class Tally:
    """Counts data frames in a subscriber's raw byte stream and, optionally, the latency of probe ticks."""

    __slots__ = (
        "base", "bytes", "count", "lat", "probe", "sent", "t0", "t1", "tail", "tail_p", "throttle_s", "total", "ws"
    )  # fmt: skip

    def __init__(self, ws: WS, probe: bool, throttle_s: float, base_us: int) -> None:
        self.ws = ws
        self.base = STAMP_OFFSET_US - base_us
        self.probe = probe
        self.throttle_s = throttle_s
        self.t0 = self.t1 = float("inf")
        self.tail = b""
        self.tail_p = b""
        self.count = self.total = self.bytes = 0
        self.lat: list[float] = []
        self.sent: list[float] = []  # each timed probe's send time (perf_counter seconds), with `lat`

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.tail + data
        n = buf.count(DATA_MARK)
        self.tail = buf[-(len(DATA_MARK) - 1) :]
        self.total += n
        if self.t0 <= now < self.t1:
            self.count += n
            self.bytes += len(data)
            if self.probe:
                at = now_us() + self.base
                pbuf = self.tail_p + data
                last = 0
                lat, sent, base = self.lat, self.sent, self.base
                for m in PROBE_RE.finditer(pbuf):
                    stamp = float(m.group(1))
                    lat.append(at - stamp)
                    sent.append((stamp - base) / 1e6)
                    last = m.end()
                self.tail_p = pbuf[max(last, len(pbuf) - PROBE_TAIL) :]
        else:
            self.tail_p = b""
        if self.throttle_s:
            # A subscriber that falls behind: read one chunk, then nothing for a while.
            transport = self.ws.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
                self.ws.loop.call_later(self.throttle_s, _resume, transport)


def _resume(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.resume_reading()


class Subscribers(Role):
    async def setup(self) -> dict:
        p = self.p
        throttled = p.get("throttled", 0)
        results = await gather_limited(
            [
                self.subscriber(
                    p["key"], f"s{p['first'] + i}", p["channel"], p["batch"], SLOW_RCVBUF if i < throttled else None
                )
                for i in range(p["count"])
            ],
            50,
        )
        self.conns, errors = split_ok(results)
        if errors:
            raise ConnectionError(f"{len(errors)} subscriber(s) could not connect: {errors[0]}")
        self.tallies = []
        for i, ws in enumerate(self.conns):
            throttle = p["throttle_s"] if i < throttled else 0.0
            tally = Tally(ws, p.get("probe", False), throttle, p["base_us"])
            self.tallies.append(tally)
            ws.scan(tally.feed)
        return {"subscribers": len(self.conns)}

    async def run(self, s: dict) -> dict:
        for t in self.tallies:
            t.t0, t.t1 = s["t0"], s["t1"]
        await sleep_until(s["stop"] + self.p.get("drain_s", 0.3))
        throttled = self.p.get("throttled", 0)
        lat: list[float] = []
        sent: list[float] = []
        for t in self.tallies:
            lat.extend(t.lat)
            sent.extend(t.sent)
        return {
            "received": sum(t.count for t in self.tallies),
            "received_throttled": sum(t.count for t in self.tallies[:throttled]),
            "received_total": sum(t.total for t in self.tallies),
            "bytes": sum(t.bytes for t in self.tallies),
            "closed": sum(1 for ws in self.conns if ws.is_closed),
            "latency_us": lat,
            "latency_sent_s": sent,
        }


# --- 4. durable -------------------------------------------------------------------------------------
POSITION_TEMPLATE = (
    '{{"type":"position","seq":{seq},"id":"{kind}-{pid}","event":"{event}","ts":{ts},{extra}'
    '"position":{{"id":{pid},"ticket":{pid},"symbol":"EURUSD","side":"buy","volume":0.1,"openPrice":1.08512,'
    '"price":1.0853,"sl":0.0,"tp":0.0,"profit":1.8,"swap":0.0,"commission":-0.7,"magic":0,"comment":"bench",'
    '"openTime":{ts}}}}}'
)


def position_frame(seq: int) -> bytes:
    """Odd seq: OPEN of position (seq+1)//2; even seq: its CLOSE. The open set stays at most one position."""
    pid = (seq + 1) // 2
    ts = int(time.time() * 1000)
    if seq % 2:
        text = POSITION_TEMPLATE.format(seq=seq, kind="o", pid=pid, event="OPEN", ts=ts, extra="")
    else:
        extra = '"closePrice":1.0853,"profit":1.8,"reason":"tp",'
        text = POSITION_TEMPLATE.format(seq=seq, kind="c", pid=pid, event="CLOSE", ts=ts, extra=extra)
    return client_frame(text.encode())


class DurableEA:
    def __init__(self, ws: WS, window: int, s: dict, first_seq: int) -> None:
        self.ws = ws
        self.window = window
        self.t0, self.t1 = s["t0"], s["t1"]
        self.next_seq = first_seq
        self.inflight: deque[tuple[int, float]] = deque()
        self.space = asyncio.Event()
        self.acked = 0
        self.lat: list[float] = []
        self.errors: list[str] = []
        ws.on_message = self.on_message

    def on_message(self, payload: bytes) -> None:
        now = time.perf_counter()
        msg = json.loads(payload)
        if msg.get("type") == "ack":
            seq = msg["seq"]
            inflight = self.inflight
            in_window = self.t0 <= now < self.t1
            while inflight and inflight[0][0] <= seq:
                _, sent = inflight.popleft()
                if in_window:
                    self.acked += 1
                    self.lat.append(now - sent)
            self.space.set()
        elif msg.get("type") == "error" and len(self.errors) < 1000:
            self.errors.append(f"{msg.get('code')}: {msg.get('message')}")

    def send_next(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.inflight.append((seq, time.perf_counter()))
        self.ws.write(position_frame(seq))

    async def run(self, stop: float) -> None:
        ws = self.ws
        while not ws.is_closed and time.perf_counter() < stop:
            while len(self.inflight) < self.window:
                self.send_next()
            self.space.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.space.wait(), max(0.01, stop - time.perf_counter()))
        # Let what is in flight be acked, so that the server is not left with work after the run.
        deadline = time.perf_counter() + 2
        while self.inflight and not ws.is_closed and time.perf_counter() < deadline:
            self.space.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.space.wait(), 0.5)


class Durable(Role):
    """EAs each keeping `window` position events in flight (an outbox waiting for acks)."""

    async def setup(self) -> dict:
        self.welcomes: list[int] = []
        results = await gather_limited([self._ea(t, 3000 + i) for i, t in enumerate(self.p["tokens"])], 50)
        ok, errors = split_ok(results)
        if errors:
            raise ConnectionError(f"{len(errors)} EA(s) could not connect: {errors[0]}")
        self.conns = [ws for ws, _ in ok]
        self.first = [acked + 1 for _, acked in ok]
        return {"eas": len(self.conns)}

    async def _ea(self, token: str, login: int) -> tuple[WS, int]:
        ws = await connect(self.host, self.port, "/ea/v1", headers={"Authorization": f"Bearer {token}"})
        ws.send(hello(login))
        welcome = await ws.expect("welcome", timeout=60)
        return ws, int(welcome.get("ackedSeq", 0))

    async def run(self, s: dict) -> dict:
        eas = [DurableEA(ws, self.p["window"], s, first) for ws, first in zip(self.conns, self.first, strict=True)]
        await asyncio.gather(*(ea.run(s["stop"]) for ea in eas))
        lat: list[float] = []
        errors: list[str] = []
        for ea in eas:
            lat.extend(ea.lat)
            errors.extend(ea.errors)
        return {
            "acked": sum(ea.acked for ea in eas),
            "latency_us": [x * 1e6 for x in lat],
            "errors": len(errors),
            "error_sample": errors[:3],
            "unacked_at_end": sum(len(ea.inflight) for ea in eas),
        }


# --- 5. idle connections ------------------------------------------------------------------------------
class IdleEAs(Role):
    """EAs that say hello and then only heartbeat (every heartbeatSec, spread out), as an idle terminal does."""

    async def setup(self) -> dict:
        first = self.p.get("first_login", 100_000)
        results = await gather_limited(
            [self.ea(t, first + i) for i, t in enumerate(self.p["tokens"])], self.p.get("concurrency", 64)
        )
        self.conns, errors = split_ok(results)
        self._beat = asyncio.ensure_future(self._heartbeats())
        return {"connected": len(self.conns), "failed": len(errors), "error_sample": errors[:3]}

    async def _heartbeats(self) -> None:
        period = self.p.get("heartbeat_s", 10.0)
        conns = list(self.conns)
        random.shuffle(conns)
        while True:
            started = time.perf_counter()
            for i, ws in enumerate(conns):
                await sleep_until(started + period * i / max(1, len(conns)))
                ws.send({"type": "heartbeat", "ts": int(time.time() * 1000)})
            await sleep_until(started + period)

    async def run(self, s: dict) -> dict:
        await sleep_until(s["stop"])
        self._beat.cancel()
        return {"still_open": sum(1 for ws in self.conns if not ws.is_closed)}


class IdleSubscribers(Role):
    async def setup(self) -> dict:
        p = self.p
        results = await gather_limited(
            [self.subscriber(p["key"], f"i{i}", p["channel"], p.get("batch", False)) for i in range(p["count"])],
            p.get("concurrency", 64),
        )
        self.conns, errors = split_ok(results)
        for ws in self.conns:
            ws.scan(lambda data: None)
        return {"connected": len(self.conns), "failed": len(errors), "error_sample": errors[:3]}

    async def run(self, s: dict) -> dict:
        await sleep_until(s["stop"])
        return {"still_open": sum(1 for ws in self.conns if not ws.is_closed)}


# --- 7. slow consumers ---------------------------------------------------------------------------------
class PacedDurable(Durable):
    """EAs sending position events at a fixed total rate, whatever the acks: durable load that flows to
    /trading/events/* as a stream (never conflated), so that a subscriber not reading it builds a backlog."""

    async def run(self, s: dict) -> dict:
        rate = self.p["rate"] / max(1, len(self.conns))
        eas = [DurableEA(ws, 0, s, first) for ws, first in zip(self.conns, self.first, strict=True)]
        await asyncio.gather(*(self._paced(ea, rate, s["stop"]) for ea in eas))
        await asyncio.sleep(0.3)  # the last acks
        return {
            "acked": sum(ea.acked for ea in eas),
            "errors": sum(len(ea.errors) for ea in eas),
            "ack_latency_us": [x * 1e6 for ea in eas for x in ea.lat],
        }

    async def _paced(self, ea: DurableEA, rate: float, stop: float) -> None:
        start, sent = time.perf_counter(), 0
        while not ea.ws.is_closed and (now := time.perf_counter()) < stop:
            for _ in range(int((now - start) * rate) - sent):
                ea.send_next()
                sent += 1
            await asyncio.sleep(0.005)


HERD_STAY_S = 0.02  # how long a herd member stays subscribed


def in_blocks(t: float, blocks: list[tuple[float, float]]) -> bool:
    """Whether instant `t` falls in one of `blocks`: (start, end) intervals, in time order."""
    i = bisect.bisect_right(blocks, (t, math.inf)) - 1
    return i >= 0 and t < blocks[i][1]


def on_now(s: dict) -> bool:
    """Whether the storm and herd act now: always, unless the schedule has on-blocks (--slow-blocks)."""
    blocks = s.get("on_blocks")
    return blocks is None or in_blocks(time.perf_counter(), blocks)


async def until_on(s: dict) -> bool:
    """Wait for the next on-block if outside one; False when there is none left."""
    blocks = s.get("on_blocks")
    if blocks is None or on_now(s):
        return True
    upcoming = [a for a, _ in blocks if a > time.perf_counter()]
    if not upcoming:
        await sleep_until(s["stop"])
        return False
    await sleep_until(upcoming[0])
    return True


def _ignore(data: bytes) -> None:
    pass


class SlowConsumers(Role):
    """Subscribers that misbehave, next to healthy ones:

    - `stalled`: subscribe, then never read again (a bare socket with a 4 KiB receive buffer). Half are on
      /trading/events/* (durable: the backlog grows until the server closes them with 4008), half on
      /trading/prices/* (latest-wins: conflated, never closed).
    - `trickle`: read one byte a second; half on /trading/* (durable events too: closed with 4008), half on
      /trading/prices/* (latest-wins only: they stay, trickling, for the whole run). `trickle_on` "durable" or
      "latest" puts them all on one of the two, to tell the halves' costs apart. `trickle_reads` False: the same
      clients on the same channels, polled at the same pace, that never read (trickle's layout, stalled's reading).
    - `storm`: connect, connection_init (batching on, as the healthy ones), subscribe to /trading/* (and
      get its snapshot), stay 10-50 ms, leave (half with a close frame, half by resetting the connection),
      again, in a loop, `storm_rate` connects a second in all. While connected, a storm client is one more
      subscriber of everything.
    - `herd`: dashboards that all reconnect in the same instant: every `herd_period_s`, each of `herd` clients
      subscribes to /trading/* (with its snapshot), all at once, stays 20 ms and leaves.
    - `steady`: not slow at all. Subscribers to /trading/* like the storm's, that connect once and stay: as
      many as the storm has connected on average (`storm_connected_mean`), they are the storm's load
      without its reconnects, so the two runs' difference is what the reconnecting itself costs others.

    A stalled or trickling subscriber that the server drops reconnects after `reconnect_s` ± half of it,
    at random, as a client told 4008 would (without `since`: this measures the server, not a catch-up).
    The jitter is what real clients do (Amplify retries with jittered back-off) and what keeps these
    variants about the slow reader: the durable ones all fill their backlog in the same instant, and
    with a fixed delay they came back as a herd of simultaneous `/trading/*` subscribes, the storm's
    subject, which stalled the hub's loop for ~4 ms each time (bench/RESULTS.md, eighth session)."""

    async def setup(self) -> dict:
        p = self.p
        self.slots: list[tuple[str, str]] = [
            ("stalled", "/trading/events/*" if i % 2 == 0 else "/trading/prices/*") for i in range(p.get("stalled", 0))
        ]
        trickle_on = {
            "both": ("/trading/*", "/trading/prices/*"),
            "durable": ("/trading/*",),
            "latest": ("/trading/prices/*",),
        }
        on = trickle_on[p.get("trickle_on", "both")]
        self.slots += [("trickle", on[i % len(on)]) for i in range(p.get("trickle", 0))]
        results = await gather_limited([self._open(i) for i in range(len(self.slots))], 50)
        self.socks, errors = split_ok(results)
        if errors:
            raise ConnectionError(f"{len(errors)} slow subscriber(s) could not connect: {errors[0]}")
        self.lost: dict[str, int] = {}  # in the window, by kind and channel
        self.lost_total = self.reconnects = self.errors = 0
        self.storm_cycles = 0
        self.storm_subscribe_s: list[float] = []
        self.storm_connected_s = 0.0  # storm clients' subscribed time inside the window, summed
        self.storm_refused = 0  # connects the hub refused (429) inside the window
        self.herd_cycles = 0
        self.herd_subscribe_s: list[float] = []  # a herd member's connect to subscribe_success, in the window
        self.error_sample: list[str] = []
        # When a stalled or trickling subscriber was seen dropped (polled every MARK_POLL_S) and when it began
        # to reconnect: what the healthy probes sent around those instants went through (`mark_windows`).
        self.marks: dict[str, list[float]] = {"dropped": [], "reconnect": []}
        steady = [self.subscriber(p["key"], f"steady{i}", "/trading/*", True) for i in range(p.get("steady", 0))]
        self.steady = await asyncio.gather(*steady)
        for ws in self.steady:
            ws.scan(_ignore)
        return {"slow_subscribers": len(self.socks), "storm_clients": p.get("storm", 0), "steady": len(self.steady)}

    async def _open(self, i: int) -> Any:
        kind, channel = self.slots[i]
        return await raw_subscriber(self.host, self.port, self.p["key"], f"{kind}{i}", channel, SLOW_RCVBUF)

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_sample) < 3:
            self.error_sample.append(f"{type(exc).__name__}: {exc}")

    async def run(self, s: dict) -> dict:
        tasks = [self._slow(i, sock, s) for i, sock in enumerate(self.socks)]
        if self.socks:
            tasks.append(self._watch(s))
        tasks += [self._storm(i, s) for i in range(self.p.get("storm", 0))]
        tasks += [self._herd(i, s) for i in range(self.p.get("herd", 0))]
        await asyncio.gather(*tasks)
        lat, herd = sorted(self.storm_subscribe_s), sorted(self.herd_subscribe_s)
        return {
            "lost_in_window": self.lost,
            "lost_total": self.lost_total,
            "reconnects": self.reconnects,
            "still_open": sum(1 for sock in self.socks if sock is not None and tcp_established(sock)),
            "storm_cycles": self.storm_cycles,
            "storm_refused": self.storm_refused,
            "storm_connected_mean": round(self.storm_connected_s / (s["t1"] - s["t0"]), 2),
            "storm_subscribe_ms_p50": round(lat[len(lat) // 2] * 1e3, 2) if lat else None,
            "storm_subscribe_ms_p99": round(lat[int(len(lat) * 0.99)] * 1e3, 2) if lat else None,
            "herd_cycles": self.herd_cycles,
            "herd_subscribe_ms_p50": round(herd[len(herd) // 2] * 1e3, 2) if herd else None,
            "herd_subscribe_ms_max": round(herd[-1] * 1e3, 2) if herd else None,
            "errors": self.errors,
            "error_sample": self.error_sample,
            "_marks": self.marks,
        }

    async def _slow(self, i: int, sock: Any, s: dict) -> None:
        kind, channel = self.slots[i]
        poll = 1.0 if kind == "trickle" else 0.2
        rng = random.Random(i)
        while time.perf_counter() < s["stop"]:
            if sock is None:
                self.marks["reconnect"].append(time.perf_counter())
                try:
                    sock = self.socks[i] = await self._open(i)
                    self.reconnects += 1
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self._error(exc)
                    await asyncio.sleep(self.p.get("reconnect_s", 0.2) * rng.uniform(0.5, 1.5))
                    continue
            await asyncio.sleep(poll)
            if kind == "trickle" and self.p.get("trickle_reads", True):
                with contextlib.suppress(OSError):  # BlockingIOError: nothing there; a reset shows below
                    sock.recv(1)
            if not tcp_established(sock):
                sock.close()
                sock = self.socks[i] = None
                self.lost_total += 1
                if s["t0"] <= time.perf_counter() < s["t1"]:
                    name = f"{kind} {channel}"
                    self.lost[name] = self.lost.get(name, 0) + 1
                await asyncio.sleep(self.p.get("reconnect_s", 0.2) * rng.uniform(0.5, 1.5))

    async def _watch(self, s: dict) -> None:
        """Note when each slow subscriber's connection is found dropped, to within MARK_POLL_S (their own
        loops look once a second, as a slow reader would, and must not change pace to be timed)."""
        seen: set[Any] = set()  # the sockets themselves: an id() could be reused by a reconnect's socket
        while time.perf_counter() < s["stop"]:
            await asyncio.sleep(MARK_POLL_S)
            for sock in self.socks:
                if sock is None or sock in seen:
                    continue
                with contextlib.suppress(OSError):
                    if not tcp_established(sock):
                        seen.add(sock)
                        self.marks["dropped"].append(time.perf_counter())

    async def _storm(self, i: int, s: dict) -> None:
        rng, keys = random.Random(i), self.p.get("storm_keys") or [self.p["key"]]
        n, period = 0, self.p["storm"] / self.p["storm_rate"]
        await asyncio.sleep(rng.uniform(0, period))
        started = time.perf_counter()
        while started < s["stop"]:
            if not on_now(s):  # --slow-blocks: wait for the next on-block, then spread out again as at the start
                if not await until_on(s):
                    return
                await asyncio.sleep(rng.uniform(0, period))
                started = time.perf_counter()
            try:
                # Connects go round the keys (client i's n-th uses key n * clients + i): each key as often.
                key = keys[(n * self.p["storm"] + i) % len(keys)]
                ws = await self.subscriber(key, f"storm{n}", "/trading/*", True)
            except Refused:  # the hub's connect rate: the storm carries on at its pace, as a stubborn client would
                if s["t0"] <= started < s["t1"]:
                    self.storm_refused += 1
                started = max(started + period, time.perf_counter())
                await sleep_until(started)
                continue
            except (OSError, ConnectionError, TimeoutError) as exc:
                self._error(exc)
                await asyncio.sleep(0.1)
                started = time.perf_counter()
                continue
            n += 1
            subscribed = time.perf_counter()
            ws.scan(_ignore)  # its snapshot and live data are not looked at
            await asyncio.sleep(rng.uniform(0.01, 0.05))
            if rng.random() < 0.5:
                ws.close()
            else:
                ws.abort()  # gone without a goodbye
            left = time.perf_counter()
            self.storm_connected_s += max(0.0, min(left, s["t1"]) - max(subscribed, s["t0"]))
            if s["t0"] <= started < s["t1"]:
                self.storm_cycles += 1
                self.storm_subscribe_s.append(subscribed - started)
            started = max(started + period, time.perf_counter())  # paced; never catching up in a burst
            await sleep_until(started)

    async def _herd(self, i: int, s: dict) -> None:
        """Connect and subscribe together with the rest of the herd, stay a moment, leave; again each period.
        They leave soon to keep the variant about arriving together; even so, ten more subscribers for 20 ms
        is most of what a herd costs the others (bench/RESULTS.md, ninth session)."""
        keys, period = self.p.get("storm_keys") or [self.p["key"]], self.p["herd_period_s"]
        tick = math.ceil(time.perf_counter() / period)  # every member goes on the same instants
        while tick * period < s["stop"]:
            await sleep_until(tick * period)
            if not on_now(s):  # --slow-blocks: a herd only in on-blocks
                tick += 1
                continue
            started = time.perf_counter()
            key = keys[(tick * self.p["herd"] + i) % len(keys)]  # round the keys: none passes the connect rate
            try:  # upgrade, connection_init and subscribe in one write, as a client with its key at hand sends them
                sock = await raw_subscriber(self.host, self.port, key, f"herd{i}", "/trading/*", rcvbuf=0)
            except (OSError, ConnectionError, TimeoutError) as exc:
                self._error(exc)
            else:
                if s["t0"] <= started < s["t1"]:
                    self.herd_cycles += 1
                    self.herd_subscribe_s.append(time.perf_counter() - started)
                await asyncio.sleep(HERD_STAY_S)
                sock.close()  # with its snapshot unread: a reset
            tick += 1

    def close(self) -> None:
        for sock in self.socks:
            if sock is not None:
                sock.close()
        for ws in self.steady:
            ws.close()


ROLES: dict[str, type[Role]] = {
    "ingest": Ingest,
    "publisher": Publisher,
    "subscribers": Subscribers,
    "durable": Durable,
    "idle_eas": IdleEAs,
    "idle_subscribers": IdleSubscribers,
    "paced_durable": PacedDurable,
    "slow_consumers": SlowConsumers,
}


# --- process plumbing -----------------------------------------------------------------------------------
class Control:
    """Commands from the parent, read by a thread so that the pipe stays blocking (an event loop's add_reader
    would make it non-blocking, and a large `done` message would then fail half-way through)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        threading.Thread(target=self._reader, name="control", daemon=True).start()

    def _reader(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                msg = ("exit", None)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)
            if msg[0] == "exit":
                return


async def _worker(role: str, params: dict, conn: Connection) -> None:
    control = Control(conn)
    r = ROLES[role](params)
    try:
        info = await r.setup()
        info["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        info["priority"] = PRIORITY["got"]
        conn.send(("ready", info))
        cmd, sched = await control.queue.get()
        if cmd != "start":
            return
        cpu = asyncio.ensure_future(_window_cpu(sched))
        result = await r.run(sched)
        result["cpu_s"], result["runq_s"] = await cpu
        conn.send(("done", result))
    finally:
        r.close()
        await asyncio.sleep(0.05)


def runq_wait() -> float:
    """Seconds this process's threads were runnable but waiting for a CPU (/proc/self/task/*/schedstat)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    return total / 1e9


async def _window_cpu(s: dict) -> tuple[float, float]:
    await sleep_until(s["t0"])
    c0, w0 = time.process_time(), runq_wait()
    await sleep_until(s["t1"])
    return time.process_time() - c0, runq_wait() - w0


PRIORITY = {"got": "normal"}


def foreground() -> str:
    """Let this process run as soon as it has something to read: the timed subscribers of scenario 7 stand
    for dashboards on machines of their own, which do not wait for the load generator's other processes to
    give up the shared core. Real-time FIFO where allowed (root or CAP_SYS_NICE), else nice -10 where
    allowed, else as it was; which one it got is reported with the results. A FIFO process that spun would
    starve the core, so only processes that wait on sockets or timers between bursts of work get this."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "fifo"
    except (PermissionError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except (PermissionError, OSError):
        return "normal"


def worker_main(role: str, params: dict, conn: Connection, cpus: list[int] | None) -> None:
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if params.get("background"):
            # Clients that stand for other machines (the misbehaving ones of scenario 7): on the shared load
            # core they run only when the measuring clients do not need it, so that their own CPU does not
            # show up as the healthy subscribers' latency. They still get the core's idle time.
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        if params.get("foreground"):
            PRIORITY["got"] = foreground()
        raise_nofile()
        try:
            import uvloop

            uvloop.run(_worker(role, params, conn))
        except ImportError:
            asyncio.run(_worker(role, params, conn))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{role}: {traceback.format_exc()}"))
