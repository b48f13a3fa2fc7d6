"""CPU per subscribe to /trading/*, snapshot included: what each client of a reconnect storm costs the hub.

    .venv/bin/python -m bench.subscribe_cost [--accounts 10,100,550,2000] [--out bench/results/subscribe_cost.json]

In process, no sockets: a real Gateway and MemoryBroker holding the latest account, positions and price
values of a fleet; each round subscribes one connection to /trading/* (authorisation, snapshot, the
subscribe_success reply) and renders what the flush would write, then unsubscribes. The baseline, in the
same run, is the per-value path the gateway used before (a snapshot matched channel by channel, each value
encoded again and pushed one by one): it skips the reply and the authorisation, so it flatters itself.
CPU time (`time.process_time`), best of three repeats. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from tradewire.broker.base import Publication
from tradewire.broker.memory import MemoryBroker
from tradewire.channels import matches
from tradewire.config import RealtimeSettings
from tradewire.realtime import protocol as rp
from tradewire.realtime.gateway import Connection, Gateway, Subscription

PATTERN = "/trading/*"


class _NoSocket:
    """Enough of a WebSocketResponse for a Connection that never writes (its flush finds no transport)."""

    _req = None
    closed = False


class _Store:
    async def head_offset(self) -> int:
        return 0


async def _role_of(key: str) -> str:
    return "read"


def fleet(broker: MemoryBroker, accounts: int, symbols: int = 28) -> int:
    state = {"balance": 10_000.0, "equity": 10_012.5, "margin": 200.0, "freeMargin": 9_800.0, "marginLevel": 5006.25}
    for i in range(accounts):
        acc = f"acc-{i}"
        summary = {"id": acc, "status": "live", "asOf": 1, "state": state, "positions": 3, "lastSeen": 1}
        broker.publish(Publication.of(f"/trading/accounts/{acc}", summary, True))
        positions = [{"id": j, "symbol": "EURUSD", "side": "buy", "volume": 0.1, "openPrice": 1.1} for j in range(3)]
        broker.publish(Publication.of(f"/trading/positions/{acc}", {"account": acc, "positions": positions}, True))
    for s in range(symbols):
        broker.publish(Publication.of(f"/trading/prices/S{s}", {"symbol": f"S{s}", "bid": 1.1, "ask": 1.1002}, True))
    return 2 * accounts + symbols


async def _tradewire(conn: Connection, msg: rp.Subscribe) -> int:
    await conn._subscribe(msg)
    payload, _count = conn.outbox.take_batch()
    conn._unsubscribe(rp.Unsubscribe(id=msg.id))
    conn.outbox.take_batch()  # the unsubscribe_success
    return len(payload)


async def _per_value(conn: Connection, msg: rp.Subscribe) -> int:
    broker = conn.gateway.broker
    sub = Subscription(conn, msg.id, PATTERN)
    snapshot = [pub for channel, pub in broker._latest.items() if matches(PATTERN, channel)]
    for pub in snapshot:
        conn.push(sub, pub, rp.event_literal(pub.data))
    payload, _count = conn.outbox.take_batch()
    conn.outbox.forget(msg.id)
    return len(payload)


async def measure(accounts: int, rounds: int) -> dict:
    broker = MemoryBroker()
    gateway = Gateway(RealtimeSettings(), broker, _Store(), _role_of)  # type: ignore[arg-type]
    await gateway.start()
    channels = fleet(broker, accounts)
    conn = Connection(gateway, _NoSocket(), "key")  # type: ignore[arg-type]
    conn.batch = True
    msg = rp.Subscribe(id="s", channel=PATTERN)
    out: dict = {"accounts": accounts, "channels": channels}
    for name, path in (("tradewire", _tradewire), ("per_value", _per_value)):
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for _ in range(rounds):
                size = await path(conn, msg)
            best = min(best, (time.process_time() - started) / rounds)
        out[name] = {"us_per_subscribe": round(best * 1e6, 1), "snapshot_bytes": size}
    await gateway.stop()
    out["speedup"] = round(out["per_value"]["us_per_subscribe"] / out["tradewire"]["us_per_subscribe"], 2)
    return out


def comma_ints(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    """A flag's comma-separated integers, or the parser's error naming the flag."""
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        parser.error(f"{flag}: comma-separated integers, not {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", default="10,100,550,2000", help="fleet sizes, comma-separated")
    parser.add_argument("--out", default="bench/results/subscribe_cost.json")
    args = parser.parse_args()
    sizes = comma_ints(parser, "--accounts", args.accounts)
    results = [asyncio.run(measure(n, max(20, 200_000 // (2 * n + 28)))) for n in sizes]
    print(f"{'accounts':>8} {'channels':>8} {'snapshot':>10} {'tradewire':>12} {'per value':>12} {'x':>6}")
    for r in results:
        tw, pv = r["tradewire"], r["per_value"]
        print(
            f"{r['accounts']:>8} {r['channels']:>8} {tw['snapshot_bytes'] / 1024:>7.0f} KiB "
            f"{tw['us_per_subscribe']:>9.0f} us {pv['us_per_subscribe']:>9.0f} us {r['speedup']:>6.2f}"
        )
    print("CPU per subscribe to /trading/* (snapshot rendered as the flush would write it), best of 3.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
