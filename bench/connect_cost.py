"""Server CPU per subscriber connect, over real sockets, step by step: what a reconnect herd costs the hub's loop.

    .venv/bin/python -m bench.connect_cost [--connects 1000] [--rounds 5] [--symbols 200] [--accounts 8]
                                           [--kinds http,sub-all,...] [--against REV]
                                           [--out bench/results/connect_cost.json] [--profile DIR]

A tradewire server (its own process, on one core) holds the latest values of a small fleet (`--accounts` EAs'
account and positions, `--symbols` prices: 216 values by default, as in scenario 7). A client on the other
core then connects `--connects` times in a row, one connection at a time, each doing one more step than the
previous kind, and closing:

    http         a new TCP connection and one `GET /api/v1/healthz`: the baseline, in the same run
    upgrade      the WebSocket upgrade (API key in the `header-` subprotocol), then close
    init         + `connection_init` and its `connection_ack`
    sub-one      + subscribe to one price channel and read its snapshot (one value)
    sub-prices   subscribe to /trading/prices/* instead (`--symbols` values)
    sub-all      subscribe to /trading/* instead, the dashboard's subscription (every value)
    sub-all-reset  the same, but leave by resetting the connection, without a close frame

The figure is the server process's CPU time (utime + stime, /proc) over the kind's connects, per connect,
in µs; each kind runs once per round, the order rotating, and the table shows the median over rounds. The
difference between two rows is what that step costs. Asserts nothing.

`--against REV`: the server of git commit REV (its `src/`, exported) runs next to this tree's, on the same
core, interleaved kind by kind; the table adds this tree's figure over REV's. Two servers of the same commit
differed by up to 10 % over 2 rounds: use several rounds.

`--profile DIR`: after the rounds, run `sub-all` again under py-spy (1000 Hz, native frames off) and write
its collapsed stacks to DIR/connect_cost.folded, with the top functions by own time (and their inclusive share) printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import hello
from bench.scenarios import top_functions
from bench.server import ServerProcess, issue_credentials
from bench.wsclient import WS, auth_subprotocol, connect

KINDS = ("http", "upgrade", "init", "sub-one", "sub-prices", "sub-all", "sub-all-reset")
SERVER_CPU, CLIENT_CPU = 0, 1


async def populate(srv: ServerProcess, tokens: list[str], symbols: int) -> None:
    """Every account's state and positions, and one tick per symbol, through the EA WebSocket."""
    ts = int(time.time() * 1000)
    for i, token in enumerate(tokens):
        ws = await connect(srv.host, srv.port, "/ea/v1", headers={"Authorization": f"Bearer {token}"})
        ws.send(hello(70_000 + i))
        await ws.expect("welcome")
        msgs: list[dict] = [
            {"type": "account", "ts": ts, "balance": 10_000.0, "equity": 10_012.5, "margin": 200.0,
             "freeMargin": 9_812.5, "marginLevel": 5006.25, "marginCallLevel": 100.0, "stopOutLevel": 50.0},
            {"type": "positions", "ts": ts, "positions": [
                {"id": p, "ticket": p, "symbol": "EURUSD", "side": "buy", "volume": 0.1, "openPrice": 1.1,
                 "price": 1.1001, "profit": 1.0, "openTime": ts - 60_000} for p in (1, 2, 3)]},
        ]  # fmt: skip
        if i == 0:  # one EA quotes every symbol, in frames of 50 ticks
            names = [f"CC{s:03d}" for s in range(symbols)]
            for start in range(0, symbols, 50):
                ticks = [{"symbol": n, "bid": 1.1, "ask": 1.1002, "ts": ts} for n in names[start : start + 50]]
                msgs.append({"type": "ticks", "ticks": ticks})
        ws.send(msgs)
        await asyncio.sleep(0.2)
        ws.close()


async def _http(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/v1/healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise ConnectionError(f"health check answered {head[:40]!r}")
    await reader.read()
    writer.close()


async def one_connect(kind: str, host: str, port: int, key: str, values: dict[str, int]) -> None:
    if kind == "http":
        return await _http(host, port)
    protocols = ["aws-appsync-event-ws", auth_subprotocol(key, host)]
    ws: WS = await connect(host, port, "/event/realtime", protocols=protocols)
    try:
        if kind == "upgrade":
            return None
        ws.send({"type": "connection_init"})
        await ws.expect("connection_ack")
        if kind == "init":
            return None
        channel = {"sub-one": "/trading/prices/CC000", "sub-prices": "/trading/prices/*"}.get(kind, "/trading/*")
        ws.send(
            {"type": "subscribe", "id": "s1", "channel": channel, "authorization": {"x-api-key": key, "host": host}}
        )
        await ws.expect("subscribe_success")
        want = values.get(kind)
        got = 0
        while want is None or got < want:  # the snapshot: its values arrive right behind subscribe_success
            try:
                msg = await ws.recv(timeout=0.2 if want is None else 10)
            except TimeoutError:
                break  # first connect of the kind: it learns how many values the snapshot holds
            got += msg.get("type") == "data"
        values.setdefault(kind, got)
        return None
    finally:
        if kind.endswith("-reset"):
            ws.abort()
        else:
            ws.close()
        await ws.closed


async def run_kind(kind: str, srv: ServerProcess, key: str, connects: int, values: dict[str, int]) -> dict:
    await one_connect(kind, srv.host, srv.port, key, values)  # warm-up, and the snapshot's size
    await asyncio.sleep(0.3)  # let the server finish with the previous kind's connections
    cpu0, wall0 = srv.cpu_seconds(), time.perf_counter()
    for _ in range(connects):
        await one_connect(kind, srv.host, srv.port, key, values)
    await asyncio.sleep(0.3)  # its last close, handled
    cpu, wall = srv.cpu_seconds() - cpu0, time.perf_counter() - wall0 - 0.3
    return {"server_us": cpu / connects * 1e6, "wall_us": wall / connects * 1e6, "values": values.get(kind, 0)}


def profile(srv: ServerProcess, key: str, connects: int, values: dict[str, int], out_dir: Path) -> list:
    """`sub-all` under py-spy: its collapsed stacks, and the top functions (scenarios.top_functions)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folded = out_dir / "connect_cost.folded"
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(srv.pid), "--rate", "1000", "--format", "raw", "--output", str(folded)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    asyncio.run(run_kind("sub-all", srv, key, connects, values))
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT, not SIGTERM
    spy.wait(60)
    return top_functions(folded, 25)


def source_of(rev: str, into: Path) -> Path:
    """The `src/` tree of commit `rev`, exported into `into` (git archive: no worktree left behind)."""
    into.mkdir()
    archive = subprocess.run(["git", "archive", rev, "src"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--against {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def measure(args: argparse.Namespace, kinds: tuple[str, ...], work: Path) -> tuple[dict, list | None]:
    """Every kind, round after round, against this tree's server and (`--against`) the other's, interleaved."""
    trees: dict[str, Path | None] = {"this": None}
    if args.against:
        trees[args.against] = source_of(args.against, work / "against")
    servers: dict[str, ServerProcess] = {}
    keys: dict[str, str] = {}
    rounds: dict[str, dict[str, list[dict]]] = {name: {k: [] for k in kinds} for name in trees}
    values: dict[str, int] = {}
    spy = None
    try:
        for name, src in trees.items():
            store = f"sqlite:///{work}/{len(servers)}.db"
            tokens, read_keys = issue_credentials(store, [f"bench-cc-{i}" for i in range(args.accounts)])
            srv = servers[name] = ServerProcess(
                "tradewire", work, store, cpus=[SERVER_CPU], name=f"s{len(servers)}", src=src
            )
            srv.start()
            keys[name] = read_keys[0]
            asyncio.run(populate(srv, tokens, args.symbols))
        names = list(trees)
        for r in range(args.rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    run = run_kind(kind, servers[name], keys[name], args.connects, values)
                    rounds[name][kind].append(asyncio.run(run))
        if args.profile:
            spy = profile(servers["this"], keys["this"], args.connects, values, args.profile)
    finally:
        for srv in servers.values():
            srv.stop()
    return rounds, spy


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for kind, results in runs.items():
        server = [x["server_us"] for x in results]
        out[kind] = {
            "server_us": statistics.median(server),
            "server_us_rounds": [round(x, 1) for x in server],
            "wall_us": statistics.median(x["wall_us"] for x in results),
            "values": results[-1]["values"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connects", type=int, default=1000, help="connects per kind and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--symbols", type=int, default=200, help="price values in the snapshot")
    ap.add_argument("--accounts", type=int, default=8, help="EAs: two values each (account, positions)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"a subset of {','.join(KINDS)}")
    ap.add_argument("--against", metavar="REV", help="also run the server of this git commit, interleaved: an A/B")
    ap.add_argument("--out", type=Path, default=Path("bench/results/connect_cost.json"))
    ap.add_argument("--profile", type=Path, help="also profile sub-all with py-spy; stacks written here")
    args = ap.parse_args()
    for name in ("connects", "rounds", "symbols", "accounts"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        ap.error(f"--kinds: comma-separated, of {', '.join(KINDS)}; not {args.kinds!r}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, [CLIENT_CPU % os.cpu_count()])
    with tempfile.TemporaryDirectory(prefix="tw-connect-") as tmp:
        rounds, spy = measure(args, kinds, Path(tmp))
    rows = {name: summarise(runs) for name, runs in rounds.items()}
    this = rows["this"]
    against = rows.get(args.against) if args.against else None
    vs = f"  {'vs ' + args.against[:10]:>14}" if against else ""
    print(f"{'kind':<12} {'values':>6} {'server µs/connect':>18} {'step':>8} {'client wall µs':>15}{vs}   rounds")
    previous = None
    for kind, row in this.items():
        step = "" if previous is None else f"{row['server_us'] - this[previous]['server_us']:+8.0f}"
        ratio = ""
        if against:
            ratio = f"  {row['server_us'] / against[kind]['server_us']:>9.2f} ({against[kind]['server_us']:.0f})"
        print(
            f"{kind:<12} {row['values']:>6} {row['server_us']:>18.0f} {step:>8} {row['wall_us']:>15.0f}{ratio}   "
            + " ".join(f"{x:.0f}" for x in row["server_us_rounds"])
        )
        previous = kind
    if spy is not None:
        print("\npy-spy, sub-all: self% incl% function")
        for func, own, incl in spy:
            print(f"  {100 * own:5.1f} {100 * incl:5.1f}  {func}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "servers": rows, "profile": spy}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
