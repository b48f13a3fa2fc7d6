"""Soak: the hub in its own process under a simulated fleet for a while, watched from outside.

    python -m tests.reliability.soak --minutes 60 --accounts 200 --rate 10

Every few seconds it prints (and at the end writes as JSON) the server's RSS and how much of it is
SQLite's heap (from the hub's metrics), open file descriptors, the fleet's message rate and the
delivery latency (tick time at the EA -> receipt by a subscriber on /trading/prices/*), p50 / p99.
Nothing here asserts speed; the short test checks resources stay bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    latencies: list[float] = []
    samples: list[dict] = []
    stats = FleetStats()
    stop = asyncio.Event()

    async def subscriber(http: aiohttp.ClientSession) -> None:
        url = server.url.replace("http", "ws", 1) + "/event/realtime"
        async with http.ws_connect(url, protocols=["aws-appsync-event-ws", auth_subprotocol(key)]) as ws:
            await ws.send_json({"type": "connection_init", "payload": {"batch": True}})
            await ws.send_json({"type": "subscribe", "id": "p", "channel": "/trading/prices/*"})
            async for msg in ws:
                now = time.time() * 1000
                frame = json.loads(msg.data)
                for item in frame.get("items", [frame]):
                    if item.get("type") == "data":
                        latencies.append(now - json.loads(item["event"])["ts"])

    def on_stats(s: FleetStats) -> None:
        nonlocal stats
        stats = s

    async with aiohttp.ClientSession() as http:
        sub = asyncio.create_task(subscriber(http))
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
            window, latencies[:] = latencies[:], []
            sample = {
                "t": round(time.monotonic() - started, 1),
                "rss_mib": round(rss_kib(server.proc.pid) / 1024, 1),
                # SQLite's own heap (page caches): the part of RSS that grows with the database, then stops.
                "sqlite_mib": round(
                    (await metric(http, server.url, key, "tradewire_sqlite_memory_bytes") or 0) / 2**20, 1
                ),
                "fds": open_fds(server.proc.pid),
                "msgs_per_s": round((stats.messages - last_messages) / sample_s),
                "p50_ms": round(percentile(window, 0.5), 2),
                "p99_ms": round(percentile(window, 0.99), 2),
                "live": stats.live,
            }
            last_messages = stats.messages
            samples.append(sample)
            out(json.dumps(sample))
        await runner
        sub.cancel()
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
