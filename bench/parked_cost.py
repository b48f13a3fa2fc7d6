"""CPU per latest-wins publication next to subscribers that stopped reading, parked and not.

    .venv/bin/python -m bench.parked_cost [--stalled 10,100] [--out bench/results/parked_cost.json]

In process, no sockets: a real Gateway with 20 healthy subscriptions to /trading/*, publications on 200
price channels (each a new Publication, encoded once as in the hub), and a flush every 20 publications
that renders the healthy connections' batches as the write would. Three variants in the same run:
*clean* (nothing else), *stalled* (N more subscriptions to /trading/prices/* whose connections take no
writes and are not parked: every publication is stored into each one's pending values, what the gateway
did before parking), *parked* (the same N, parked: each publication is noted once for all of them).
CPU time (`time.process_time`), best of three repeats. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from bench.subscribe_cost import _NoSocket, _role_of, _Store, comma_ints
from tradewire.broker.base import Publication
from tradewire.broker.memory import MemoryBroker
from tradewire.config import RealtimeSettings
from tradewire.realtime import wire
from tradewire.realtime.gateway import Connection, Gateway, Subscription

HEALTHY = 20
SYMBOLS = 200
PER_FLUSH = 20  # publications between two flushes: ~1,000 loop turns a second at 20k ticks/s


def subscribe(gateway: Gateway, pattern: str) -> Connection:
    conn = Connection(gateway, _NoSocket(), "key")  # type: ignore[arg-type]
    conn.batch = True
    sub = Subscription(conn, "s", pattern)
    conn.subs["s"] = sub
    gateway.index.add(sub)
    gateway.index.ready(sub)
    return conn


def run(variant: str, stalled: int, publications: int) -> float:
    """Seconds of CPU per publication, best of three."""
    gateway = Gateway(RealtimeSettings(), MemoryBroker(), _Store(), _role_of)  # type: ignore[arg-type]
    healthy = [subscribe(gateway, "/trading/*") for _ in range(HEALTHY)]
    if variant != "clean":
        for _ in range(stalled):
            conn = subscribe(gateway, "/trading/prices/*")
            if variant == "parked":
                gateway.park(conn)
    data = [json.dumps({"symbol": f"S{s}", "bid": 1.1, "ask": 1.1002, "ts": 0}).encode() for s in range(SYMBOLS)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for n in range(publications):
            gateway.deliver(Publication(f"/trading/prices/S{n % SYMBOLS}", data[n % SYMBOLS], latest=True))
            if n % PER_FLUSH == PER_FLUSH - 1:
                if gateway._flush_handle is not None:
                    gateway._flush_handle.cancel()
                gateway._flush()  # what the loop would run: every dirty connection's flush() is called
                for conn in healthy:  # and what the healthy ones' writes would carry
                    payload, _count = conn.outbox.take_batch()
                    wire.text_frame(payload)
        best = min(best, (time.process_time() - started) / publications)
    return best


async def measure(stalled: int, publications: int) -> dict:
    out: dict = {"healthy": HEALTHY, "stalled_subscriptions": stalled, "symbols": SYMBOLS}
    for variant in ("clean", "stalled", "parked"):
        out[variant] = {"us_per_publication": round(run(variant, stalled, publications) * 1e6, 3)}
    clean = out["clean"]["us_per_publication"]
    for variant in ("stalled", "parked"):
        out[variant]["vs_clean"] = round(out[variant]["us_per_publication"] / clean, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", default="10,100", help="stalled subscriptions, comma-separated")
    parser.add_argument("--publications", type=int, default=100_000)
    parser.add_argument("--out", default="bench/results/parked_cost.json")
    args = parser.parse_args()
    sizes = comma_ints(parser, "--stalled", args.stalled)
    if args.publications < PER_FLUSH:
        parser.error(f"--publications: at least {PER_FLUSH}")
    results = [asyncio.run(measure(n, args.publications)) for n in sizes]
    print(f"{'stalled':>7} {'clean':>10} {'stalled (not parked)':>22} {'parked':>18}")
    for r in results:
        c, s, p = r["clean"], r["stalled"], r["parked"]
        print(
            f"{r['stalled_subscriptions']:>7} {c['us_per_publication']:>7.2f} us "
            f"{s['us_per_publication']:>10.2f} us x{s['vs_clean']:<6} "
            f"{p['us_per_publication']:>8.2f} us x{p['vs_clean']}"
        )
    print(f"CPU per publication, {HEALTHY} healthy subscribers on /trading/*, a flush every {PER_FLUSH}; best of 3.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
