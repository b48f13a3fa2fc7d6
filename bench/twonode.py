"""Two hub nodes on Redis + PostgreSQL: what the backplane costs.

    python -m bench.twonode [--quick] [--rate 5000] [--seconds 10]

One EA on node A publishes ticks at a fixed rate; a subscriber on A (local) and one on B (everything
through Redis) receive them. Each tick's bid is a sequence number, so receipt is matched to the exact
send time (one process, one clock). Prints a table and writes bench/results/twonode.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tradewire.store.postgres import PostgresStore

from helpers import auth_subprotocol, hello

PG = os.environ.get("TRADEWIRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TRADEWIRE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def serve(store: str, broker: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tradewire.cli",
        "serve",
        "--port",
        "0",
        "--store",
        store,
        "--broker",
        broker,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TRADEWIRE_LIMITS_EA_MESSAGES_PER_S": "1000000", "TRADEWIRE_LIMITS_EA_BURST": "1000000"},
    )
    while True:
        line = (await proc.stderr.readline()).decode()
        if not line:
            raise RuntimeError("a node exited before listening")
        found = re.search(r"listening on (\S+)", line)
        if found:
            return proc, found.group(1)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else float("nan")


async def run(rate: float, seconds: float) -> dict:
    tag = uuid.uuid4().hex[:8]
    store_url, broker_url = f"{PG}?schema=bench_{tag}", f"{REDIS}?prefix=bench{tag}"
    store = PostgresStore(store_url)
    await store.open()
    token, _ = await store.add_token("bench-ea")
    key, _ = await store.add_api_key("read")
    await store.close()
    (proc_a, url_a), (proc_b, url_b) = await serve(store_url, broker_url), await serve(store_url, broker_url)
    sent_at: dict[int, float] = {}
    warmup = int(rate * 0.5)
    latency: dict[str, list[float]] = {"local (node A)": [], "remote (node B, via Redis)": []}
    try:
        async with aiohttp.ClientSession() as http:

            async def subscriber(url: str, name: str) -> None:
                ws = await http.ws_connect(
                    url.replace("http", "ws", 1) + "/event/realtime",
                    max_msg_size=0,
                    protocols=["aws-appsync-event-ws", auth_subprotocol(key)],
                )
                await ws.send_json({"type": "connection_init", "payload": {"batch": True}})
                await ws.send_json({"type": "subscribe", "id": "p", "channel": "/trading/prices/*"})
                async for msg in ws:
                    now = time.perf_counter()
                    frame = json.loads(msg.data)
                    for item in frame.get("items", [frame]):
                        if item.get("type") == "data":
                            n = int(json.loads(item["event"])["bid"])
                            if n in sent_at and n > warmup:  # the first half second warms connections up
                                latency[name].append((now - sent_at[n]) * 1000)

            subs = [
                asyncio.create_task(subscriber(url_a, "local (node A)")),
                asyncio.create_task(subscriber(url_b, "remote (node B, via Redis)")),
            ]
            await asyncio.sleep(1.0)
            ea = await http.ws_connect(
                url_a.replace("http", "ws", 1) + "/ea/v1", headers={"Authorization": f"Bearer {token}"}
            )
            await ea.send_json(hello())
            await ea.receive()
            cpu0 = (cpu_s(proc_a.pid), cpu_s(proc_b.pid))
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                batch = []
                for _ in range(50):  # 50 ticks a frame, each its own symbol and sequence number
                    n += 1
                    batch.append({"symbol": f"S{n % 500}", "bid": n, "ask": n + 1, "ts": int(time.time() * 1000)})
                    sent_at[n] = time.perf_counter()
                await ea.send_str(json.dumps({"type": "ticks", "ticks": batch}))
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            await asyncio.sleep(1.0)
            cpu1 = (cpu_s(proc_a.pid), cpu_s(proc_b.pid))
            for task in subs:
                task.cancel()
    finally:
        for proc in (proc_a, proc_b):
            proc.terminate()
            await proc.wait()
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP SCHEMA IF EXISTS "bench_{tag}" CASCADE')
        await conn.close()
    rows = {
        name: {
            "received": len(v),
            "per_s": round(len(v) / seconds),
            "p50_ms": pct(v, 0.5),
            "p99_ms": pct(v, 0.99),
            "p999_ms": pct(v, 0.999),
        }
        for name, v in latency.items()
    }
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": n,
        "subscribers": rows,
        "cpu_s": {"node_a": round(cpu1[0] - cpu0[0], 2), "node_b": round(cpu1[1] - cpu0[1], 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    result = asyncio.run(run(args.rate, args.seconds or (5 if args.quick else 20)))
    print(
        f"two nodes, {result['rate']:.0f} ticks/s for {result['seconds']:.0f} s ({result['sent']} sent); "
        f"server CPU-s: A {result['cpu_s']['node_a']}, B {result['cpu_s']['node_b']}"
    )
    print(f"{'subscriber':30} {'received':>9} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
    for name, r in result["subscribers"].items():
        print(f"{name:30} {r['received']:>9} {r['per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['p999_ms']:>9}")
    out = Path("bench/results/twonode.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
