"""Soak: the hub in its own process under a simulated fleet for a while, watched from outside.

    python -m tests.reliability.soak --minutes 60 --accounts 200 --rate 10

Every few seconds it prints (and at the end writes as JSON) the server's RSS and how much of it is
SQLite's heap (from the hub's metrics), open file descriptors, the fleet's message rate and the
delivery latency (tick time at the EA -> receipt by a subscriber on /trading/prices/*), p50 / p99.
The subscriber runs in a process of its own: in the fleet's (a core's worth of work at 10k messages/s)
it timed its own wait for that process's event loop. Nothing here asserts speed; the short test checks
resources stay bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tradewire.sim.fleet import FleetStats, run_fleet
from tradewire.store.sqlite import SQLiteStore

from helpers import ServeProcess, auth_subprotocol


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def metric(http: aiohttp.ClientSession, url: str, key: str, name: str) -> float | None:
    """One value from the hub's Prometheus page (None if it is not there)."""
    async with http.get(url + "/api/v1/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split(" ")[1])
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _timed_subscriber(ws_url: str, key: str, conn: multiprocessing.connection.Connection) -> None:
    """Child process: subscribe to every price and time each tick; each request on `conn` is answered with
    (p50, p99) in ms of what arrived since the last one."""
    asyncio.run(_time_ticks(ws_url, key, conn))


async def _time_ticks(ws_url: str, key: str, conn: multiprocessing.connection.Connection) -> None:
    latencies: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def answer() -> None:
        try:
            conn.recv()
        except EOFError:  # the soak has ended
            loop.remove_reader(conn.fileno())
            done.set()
            return
        window, latencies[:] = latencies[:], []
        conn.send((percentile(window, 0.5), percentile(window, 0.99)))

    loop.add_reader(conn.fileno(), answer)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, protocols=["aws-appsync-event-ws", auth_subprotocol(key)]) as ws,
    ):
        await ws.send_json({"type": "connection_init", "payload": {"batch": True}})
        await ws.send_json({"type": "subscribe", "id": "p", "channel": "/trading/prices/*"})
        reader = asyncio.ensure_future(_read_ticks(ws, latencies))
        await done.wait()
        reader.cancel()


# A tick's time inside a data frame's event (a JSON string in JSON, so its quotes are escaped). Found by a
# regular expression rather than two json.loads a tick: on this 2-core machine every core is already spoken for.
_TICK_TS = re.compile(r'\\"ts\\": ?(\d+)')


async def _read_ticks(ws: aiohttp.ClientWebSocketResponse, latencies: list[float]) -> None:
    async for msg in ws:
        now = time.time() * 1000
        latencies.extend([now - int(ts) for ts in _TICK_TS.findall(msg.data)])


async def soak(seconds: float, accounts: int, rate: float, sample_s: float = 5.0, out=print) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="tradewire-soak-"))
    db = workdir / "soak.db"
    store = SQLiteStore(str(db))
    await store.open()
    fleet = [(f"soak-{n:04d}", (await store.add_token(f"soak-{n:04d}"))[0]) for n in range(accounts)]
    key, _ = await store.add_api_key("read")
    await store.close()
    server = await ServeProcess.start(
        "--store", f"sqlite:///{db}", env={"TRADEWIRE_LIMITS_MAX_CONNECTIONS_PER_IP": str(accounts + 100)}
    )
    samples: list[dict] = []
    stats = FleetStats()
    stop = asyncio.Event()
    spawn = multiprocessing.get_context("spawn")
    timer, child_end = spawn.Pipe()
    ws_url = server.url.replace("http", "ws", 1) + "/event/realtime"
    timing = spawn.Process(target=_timed_subscriber, args=(ws_url, key, child_end), daemon=True)
    timing.start()
    child_end.close()

    def ask_latency() -> tuple[float, float]:
        timer.send("sample")
        if not timer.poll(30):
            raise TimeoutError("the timing subscriber did not answer in 30 s")
        return timer.recv()  # EOFError if it died: the soak fails rather than report no latency

    def on_stats(s: FleetStats) -> None:
        nonlocal stats
        stats = s

    try:
        async with aiohttp.ClientSession() as http:
            runner = asyncio.create_task(
                run_fleet(
                    server.url,
                    fleet,
                    rate=rate,
                    duration=seconds,
                    seed=1,
                    stop=stop,
                    system_magics=[7001],
                    on_stats=on_stats,
                )
            )
            started, last_messages = time.monotonic(), 0
            while not runner.done():
                await asyncio.sleep(sample_s)
                p50, p99 = await asyncio.to_thread(ask_latency)
                sample = {
                    "t": round(time.monotonic() - started, 1),
                    "rss_mib": round(rss_kib(server.proc.pid) / 1024, 1),
                    # SQLite's own heap (page caches): the part of RSS that grows with the database, then stops.
                    "sqlite_mib": round(
                        (await metric(http, server.url, key, "tradewire_sqlite_memory_bytes") or 0) / 2**20, 1
                    ),
                    "fds": open_fds(server.proc.pid),
                    "msgs_per_s": round((stats.messages - last_messages) / sample_s),
                    "p50_ms": round(p50, 2),
                    "p99_ms": round(p99, 2),
                    "live": stats.live,
                }
                last_messages = stats.messages
                samples.append(sample)
                out(json.dumps(sample))
            await runner
    finally:
        timer.close()  # the subscriber's cue to leave
        await asyncio.to_thread(timing.join, 10)
        if timing.is_alive():
            timing.kill()
        await server.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10, help="updates per second per account")
    parser.add_argument("--out", default="bench/results/soak.json")
    args = parser.parse_args()
    samples = asyncio.run(soak(args.minutes * 60, args.accounts, args.rate))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
