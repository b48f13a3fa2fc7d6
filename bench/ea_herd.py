"""How long the hub's event loop is held while a fleet of EAs connects at once, as after a restart.

    .venv/bin/python -m bench.ea_herd [--eas 200] [--herds 5] [--out bench/results/ea_herd.json]

A real hub runs in this process, so that a task on its own loop can time every loop turn (a `sleep(0)` loop:
each gap is one turn of the loop, whatever ran in it). The EAs run in a second process: `--herds` times, all
`--eas` of them open a WebSocket at once, send hello, wait for welcome and close. Tokens are issued and
cached first, as on a hub that has seen its fleet before (after a restart the first lookups go to the store
in a thread, which breaks a set-up in two anyway). Printed: the loop's turns during the herds, the 99th and
99.9th percentile gap and the longest, and how many set-ups waited for a turn (realtime/turns.py).

To compare two commits, run it in a worktree of each, alternating, several times: on a shared 2-core machine
single runs differ by 2x at the longest gap. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tradewire.app import Server
from tradewire.config import load_settings

# The EAs' side, in a process of its own: the hub's loop must not also be theirs.
CLIENT = r"""
import asyncio, json, sys, aiohttp
HELLO = json.dumps({"type": "hello", "platform": "MT5", "login": 1, "server": "s", "broker": "b", "currency": "USD",
                    "leverage": 100, "ea": "bench", "tzOffsetSec": 0, "lastSeq": 0})
async def main(url, tokens, herds):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one(token):
            ws = await s.ws_connect(url, headers={"Authorization": "Bearer " + token})
            await ws.send_str(HELLO)
            await ws.receive()
            return ws
        for _ in range(herds):
            print("ready", flush=True)
            sys.stdin.readline()
            conns = await asyncio.gather(*(one(t) for t in tokens))
            await asyncio.gather(*(c.close() for c in conns))
            print("done", flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])))
"""


async def time_turns(gaps: list[float], over: asyncio.Event) -> None:
    """Append the length of every turn of this loop to `gaps` until `over` is set."""
    last = time.perf_counter()
    while not over.is_set():
        await asyncio.sleep(0)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def measure(eas: int, herds: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        settings = load_settings(
            env={},
            overrides={
                "server": {"port": 0, "auth_cache_s": 3600},
                "store": {"url": f"sqlite:///{work}/hub.db"},
                "limits": {"connects_per_s": 1e6},  # a herd, not a storm: every connect goes in
            },
        )
        hub = Server(settings)
        await hub.start()
        try:
            tokens = []
            for i in range(eas):
                token, _ = await hub.store.add_token(f"herd-{i}")
                await hub.hub.ea_account(token)  # cached, as for a fleet the hub has seen
                tokens.append(token)
            url = hub.url.replace("http", "ws", 1) + "/ea/v1"
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT, url, ",".join(tokens), str(herds),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert client.stdin is not None and client.stdout is not None
            gaps: list[float] = []
            waited = hub.gateway.turns.waited
            for _ in range(herds):
                await client.stdout.readline()  # ready
                over = asyncio.Event()
                task = asyncio.create_task(time_turns(gaps, over))
                client.stdin.write(b"\n")
                await client.stdin.drain()
                await client.stdout.readline()  # done
                over.set()
                await task
            await client.wait()
            waited = hub.gateway.turns.waited - waited
        finally:
            await hub.stop()
    gaps.sort()
    return {
        "eas": eas,
        "herds": herds,
        "loop_turns": len(gaps),
        "gap_ms_p99": round(gaps[int(len(gaps) * 0.99)] * 1e3, 3),
        "gap_ms_p999": round(gaps[int(len(gaps) * 0.999)] * 1e3, 3),
        "gap_ms_max": round(gaps[-1] * 1e3, 2),
        "setups_waited": waited,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eas", type=int, default=200, help="EAs in each herd (default 200)")
    parser.add_argument("--herds", type=int, default=5, help="herds in the run (default 5)")
    parser.add_argument("--out", default="bench/results/ea_herd.json")
    args = parser.parse_args(argv)
    if args.eas < 1 or args.herds < 1:
        parser.error("--eas and --herds must be at least 1")
    result = asyncio.run(measure(args.eas, args.herds))
    print(
        f"{result['eas']} EAs x {result['herds']} herds: {result['loop_turns']} loop turns; gap p99 "
        f"{result['gap_ms_p99']} ms, p99.9 {result['gap_ms_p999']} ms, longest {result['gap_ms_max']} ms; "
        f"set-ups that waited a turn: {result['setups_waited']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
