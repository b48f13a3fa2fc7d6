#!/usr/bin/env python3
"""Dashboard frame rate under a large fleet (a benchmark, not a test).

Starts a hub in its own process, a load generator in another (N accounts, each its own EA token and
WebSocket, as the protocol requires: a token writes only its account, so no multiplexing), opens the
dashboard in headless Chromium and measures, over --seconds:

  * frames per second and frame-time percentiles, counted with requestAnimationFrame;
  * long tasks (> 50 ms main-thread work) from a PerformanceObserver;
  * updates applied by the page per second and renders per second (the page renders once per frame);
  * delivery lag from the EA's timestamp to the page applying the update;
  * CPU used by the hub, the generator and the whole machine.

Then it measures the same page idle (generator stopped) as the baseline. Prints a table and writes
bench/results/dashboard_fps.json.

    .venv/bin/python bench/dashboard_fps.py                      # 1,000 accounts x 10 updates/s, 20 s
    .venv/bin/python bench/dashboard_fps.py --accounts 200 --rate 5 --view positions
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard_fps.json"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30", "GER40", "AUDUSD", "USDCHF"]
CONNECT_BATCH = 100  # WebSockets opened at once while ramping up

# `--no-deflate`: the hub with permessage-deflate refused on its WebSockets, to measure what that costs.
# aiohttp compresses frames over 16 KiB chunk by chunk in its thread pool, and browsers always offer
# the extension, so a large batch frame to a dashboard waits for many thread-pool round trips.
HUB_WITHOUT_DEFLATE = """
import functools, sys
from aiohttp import web
original = web.WebSocketResponse.__init__
@functools.wraps(original)
def without_deflate(self, *args, **kwargs):
    kwargs["compress"] = False
    original(self, *args, **kwargs)
web.WebSocketResponse.__init__ = without_deflate
from tradewire.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Injected into the page: count animation frames and long tasks, and sample delivery lag.
PROBE_JS = """
() => {
  const probe = { frames: [], longTasks: [], lags: [], t0: performance.now(), running: true };
  const store = window.tradewire.store;
  probe.messages0 = store.stats.messages;
  probe.renders0 = store.stats.renders;
  probe.renderMs0 = store.stats.renderMs;
  store.stats.renderMsMax = 0;
  const tick = (t) => { if (!probe.running) return; probe.frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  probe.observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) probe.longTasks.push(e.duration);
  });
  probe.observer.observe({ type: 'longtask' });
  const apply = store.applyAccount.bind(store);
  let n = 0;
  store.applyAccount = (summary, fromRest) => {
    if (!fromRest && summary.state && (n++ % 50 === 0)) probe.lags.push(Date.now() - summary.state.ts);
    return apply(summary, fromRest);
  };
  // Time spent handling WebSocket frames (JSON parsing and store updates), and their count and size.
  const client = window.tradewire.client;
  const onFrame = client._onFrame.bind(client);
  probe.wsFrames = 0; probe.wsBytes = 0; probe.wsMs = 0;
  client._onFrame = (text) => {
    const started = performance.now();
    onFrame(text);
    probe.wsMs += performance.now() - started;
    probe.wsFrames += 1;
    probe.wsBytes += text.length;
  };
  probe.restore = () => { store.applyAccount = apply; client._onFrame = onFrame; };
  window.__probe = probe;
}
"""
COLLECT_JS = """
() => {
  const p = window.__probe;
  p.running = false;
  p.observer.disconnect();
  p.restore();
  const store = window.tradewire.store;
  return {
    elapsedMs: performance.now() - p.t0,
    frames: p.frames,
    longTasks: p.longTasks,
    lags: p.lags,
    wsFrames: p.wsFrames,
    wsBytes: p.wsBytes,
    wsMs: p.wsMs,
    messages: store.stats.messages - p.messages0,
    renders: store.stats.renders - p.renders0,
    renderMs: store.stats.renderMs - p.renderMs0,
    renderMsMax: store.stats.renderMsMax,
    rows: document.querySelectorAll('[data-testid="fleet-row"], [data-testid="position-row"]').length,
    accounts: store.accounts.size,
  };
}
"""


# --- helpers --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium_pids(since: float) -> list[int]:
    """Processes of the Chromium this run started (by path and start time): the browser, renderer, GPU, ..."""
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            started = boot + int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19]) / tick
        except (OSError, IndexError, ValueError):
            continue
        if "chrom" in os.path.basename(cmdline) and started >= since - 1:
            pids.append(int(entry.name))
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def hub_counters(url: str, key: str) -> dict[str, float]:
    """The hub's Prometheus counters (tradewire_*_total), by name."""
    request = urllib.request.Request(f"{url}/api/v1/metrics", headers={"x-api-key": key})
    with urllib.request.urlopen(request, timeout=5) as res:
        text = res.read().decode()
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.endswith("_total") and "{" not in name:
            counters[name] = float(value)
    return counters


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as res:
                if res.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def prepare_store(url: str, accounts: int) -> tuple[str, list[tuple[str, str]]]:
    from tradewire.store import make_store

    store = make_store(url)
    await store.open()
    try:
        key, _ = await store.add_api_key("read", "bench")
        ids = [f"bench-{i:04d}" for i in range(1, accounts + 1)]
        tokens = await asyncio.gather(*(store.add_token(account, "bench") for account in ids))
        return key, [(account, token) for account, (token, _) in zip(ids, tokens, strict=True)]
    finally:
        await store.close()


# --- the load generator (runs as its own process: `--generate`) -----------------------------------
async def generate(url: str, tokens_file: str, rate: float) -> None:
    import aiohttp

    pairs = [line.split() for line in Path(tokens_file).read_text().splitlines() if line.strip()]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stats = {"sent": 0, "connected": 0, "failed": 0}
    ws_url = url.replace("http", "ws", 1) + "/ea/v1"
    interval = 1 / rate

    async def account(index: int, account_id: str, token: str, session: aiohttp.ClientSession) -> None:
        rng = random.Random(index)
        try:
            ws = await session.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"}, heartbeat=None)
        except aiohttp.ClientError:
            stats["failed"] += 1
            return
        hello = {
            "type": "hello",
            "platform": "MT5" if index % 5 else "MT4",
            "login": 7_000_000 + index,
            "server": f"Bench-Live{index % 7:02d}",
            "broker": "Bench Broker",
            "currency": "USD",
            "leverage": 500,
            "ea": {"name": "BenchEA", "version": "1.0"},
        }
        await ws.send_str(json.dumps(hello))
        await ws.receive(timeout=30)  # welcome
        balance = rng.choice([1_000.0, 5_000.0, 10_000.0, 50_000.0])
        positions = [
            {
                "id": index * 10 + k,
                "symbol": rng.choice(SYMBOLS),
                "side": rng.choice(["buy", "sell"]),
                "volume": round(rng.uniform(0.01, 2.0), 2),
                "openPrice": 1.1,
                "openTime": int(time.time() * 1000),
                "price": 1.1,
                "profit": 0.0,
                "magic": 7001 if k == 0 and index % 4 == 0 else 0,
            }
            for k in range(2)
        ]
        await ws.send_str(json.dumps({"type": "positions", "ts": int(time.time() * 1000), "positions": positions}))
        stats["connected"] += 1
        loop = asyncio.get_running_loop()
        due = loop.time() + rng.random() * interval  # spread the fleet over the interval
        floating = 0.0
        sent = 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            floating += rng.gauss(0, balance * 0.0005)
            margin = balance * 0.05
            equity = round(balance + floating, 2)
            frame = {
                "type": "account",
                "ts": int(time.time() * 1000),
                "balance": balance,
                "equity": equity,
                "margin": margin,
                "freeMargin": round(equity - margin, 2),
                "marginLevel": round(equity / margin * 100, 2),
                "marginCallLevel": 100.0,
                "stopOutLevel": 50.0,
            }
            try:
                await ws.send_str(json.dumps(frame))
                sent += 1
                if sent % max(1, int(rate * 5)) == 0:  # a positions snapshot every ~5 s, as EAs do
                    for p in positions:
                        p["profit"] = round(rng.gauss(0, 20), 2)
                    msg = {"type": "positions", "ts": frame["ts"], "positions": positions}
                    await ws.send_str(json.dumps(msg))
            except ConnectionError:
                break
            stats["sent"] += 1
        await ws.close()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for start in range(0, len(pairs), CONNECT_BATCH):
            batch = [
                asyncio.create_task(account(start + i, a, t, session))
                for i, (a, t) in enumerate(pairs[start : start + CONNECT_BATCH])
            ]
            tasks += batch
            while stats["connected"] + stats["failed"] < min(len(pairs), start + CONNECT_BATCH):
                await asyncio.sleep(0.05)
        print(json.dumps({"ready": stats["connected"], "failed": stats["failed"]}), flush=True)
        began, sent0 = time.monotonic(), stats["sent"]
        await stop.wait()
        elapsed = time.monotonic() - began
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"sent": stats["sent"] - sent0, "seconds": elapsed}), flush=True)


# --- the measurement ---------------------------------------------------------------------------------
def summarise(sample: dict) -> dict:
    frames = sample["frames"]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    seconds = sample["elapsedMs"] / 1000
    return {
        "seconds": round(seconds, 1),
        "fps": round(len(frames) / seconds, 1) if seconds else 0.0,
        "frame_ms_p50": round(percentile(gaps, 50), 1),
        "frame_ms_p95": round(percentile(gaps, 95), 1),
        "frame_ms_p99": round(percentile(gaps, 99), 1),
        "frame_ms_max": round(max(gaps), 1) if gaps else None,
        "frames_over_50ms": sum(1 for g in gaps if g > 50),
        "long_tasks": len(sample["longTasks"]),
        "long_task_ms_total": round(sum(sample["longTasks"]), 1),
        "long_task_ms_max": round(max(sample["longTasks"]), 1) if sample["longTasks"] else 0.0,
        "updates_applied_per_s": round(sample["messages"] / seconds) if seconds else 0,
        "renders_per_s": round(sample["renders"] / seconds, 1) if seconds else 0.0,
        "render_ms_mean": round(sample["renderMs"] / sample["renders"], 2) if sample["renders"] else None,
        "render_ms_max": round(sample["renderMsMax"], 1),
        "ws_frames_per_s": round(sample["wsFrames"] / seconds, 1) if seconds else 0.0,
        "ws_kb_per_s": round(sample["wsBytes"] / 1024 / seconds) if seconds else 0,
        "ws_handling_ms_per_s": round(sample["wsMs"] / seconds, 1) if seconds else 0.0,
        "lag_ms_p50": round(percentile(sample["lags"], 50)) if sample["lags"] else None,
        "lag_ms_p95": round(percentile(sample["lags"], 95)) if sample["lags"] else None,
        "rows_in_dom": sample["rows"],
        "accounts_known": sample["accounts"],
    }


CDP_TIMES = {  # Chromium's main-thread time split (Performance.getMetrics), seconds
    "TaskDuration": "main_thread_busy_pct",
    "ScriptDuration": "script_pct",
    "RecalcStyleDuration": "style_pct",
    "LayoutDuration": "layout_pct",
}


def cdp_metrics(cdp) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure(page, seconds: float, pids: dict[str, int], browser_since: float, hub: tuple[str, str], cdp) -> dict:
    counters0 = hub_counters(*hub)
    cdp0 = cdp_metrics(cdp)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    browser_pids = chromium_pids(browser_since)
    browser0 = sum(cpu_seconds(pid) for pid in browser_pids)
    busy0, total0 = machine_busy()
    page.evaluate(PROBE_JS)
    time.sleep(seconds)
    sample = page.evaluate(COLLECT_JS)
    busy1, total1 = machine_busy()
    result = summarise(sample)
    elapsed = sample["elapsedMs"] / 1000
    for name, pid in pids.items():
        result[f"cpu_{name}_pct"] = round((cpu_seconds(pid) - cpu0[name]) / elapsed * 100)
    cdp1 = cdp_metrics(cdp)
    for name, label in CDP_TIMES.items():
        result[label] = round((cdp1.get(name, 0) - cdp0.get(name, 0)) / elapsed * 100, 1)
    result["js_heap_mb"] = round(cdp1.get("JSHeapUsedSize", 0) / 2**20, 1)
    counters1 = hub_counters(*hub)
    for name, label in (
        ("tradewire_ea_messages_total", "hub_ea_messages_per_s"),
        ("tradewire_realtime_frames_out_total", "hub_frames_out_per_s"),
        ("tradewire_realtime_conflated_total", "hub_conflated_per_s"),
    ):
        result[label] = round((counters1.get(name, 0) - counters0.get(name, 0)) / elapsed)
    result["cpu_chromium_pct"] = round((sum(cpu_seconds(pid) for pid in browser_pids) - browser0) / elapsed * 100)
    result["cpu_machine_pct"] = round((busy1 - busy0) / max(1, total1 - total0) * 100 * os.cpu_count())
    return result


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        sys.exit("needs Chromium: apt-get install -y chromium (and .venv/bin/pip install playwright)")
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    store_url = f"sqlite:///{tmp}/hub.db"
    print(f"issuing {args.accounts} EA tokens ...", flush=True)
    key, tokens = asyncio.run(prepare_store(store_url, args.accounts))
    tokens_file = tmp / "tokens.txt"
    tokens_file.write_text("".join(f"{a} {t}\n" for a, t in tokens))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every simulated EA comes from 127.0.0.1: lift the per-address connection cap (the section is ignored by
    # a hub that has no connection caps).
    env = {**os.environ, "TRADEWIRE_SERVER_LOG_LEVEL": "warning", "TRADEWIRE_LIMITS_MAX_CONNECTIONS_PER_IP": "100000"}
    entry = ["-c", HUB_WITHOUT_DEFLATE] if args.no_deflate else ["-m", "tradewire.cli"]
    hub = subprocess.Popen(
        [sys.executable, *entry, "serve", "--port", str(port), "--store", store_url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "hub.log", "w"),  # noqa: SIM115 - lives as long as the process
    )
    gen = None
    try:
        wait_http(f"{url}/api/v1/healthz")
        print(f"hub on {url}; connecting {args.accounts} EAs ...", flush=True)
        gen = subprocess.Popen(
            [sys.executable, __file__, "--generate", url, str(tokens_file), str(args.rate)],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(gen.stdout.readline())
        print(f"generator: {ready['ready']} EAs connected ({ready['failed']} failed)", flush=True)
        with sync_playwright() as pw:
            browser_since = time.time()
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(f"{url}/#key={key}")
            # Polled from here: `wait_for_function` evaluates its string in the page, which the page's
            # Content-Security-Policy refuses (no eval).
            shown = f"!!window.tradewire && window.tradewire.store.accounts.size >= {args.accounts}"
            deadline = time.monotonic() + 60
            while not page.evaluate(shown) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not page.evaluate(shown):
                state = page.evaluate(
                    "() => window.tradewire && ({conn: tradewire.store.conn, accounts: tradewire.store.accounts.size,"
                    " stats: tradewire.store.stats, notice: tradewire.store.notice})"
                )
                sys.exit(f"the page did not show every account: {state}; hub log: {tmp / 'hub.log'}")
            page.evaluate(f"location.hash = '#/{args.view}'")
            print(f"page shows {args.accounts} accounts; warming up {args.warmup:g}s ...", flush=True)
            time.sleep(args.warmup)
            pids = {"hub": hub.pid, "generator": gen.pid}
            loaded = measure(page, args.seconds, pids, browser_since, (url, key), cdp)
            if args.screenshot:
                page.screenshot(path=args.screenshot)
            gen.send_signal(signal.SIGTERM)
            sent = json.loads(gen.stdout.readline())
            gen.wait(30)
            time.sleep(1.0)
            idle = measure(page, args.idle_seconds, {"hub": hub.pid}, browser_since, (url, key), cdp)
            browser.close()
        offered = sent["sent"] / sent["seconds"] if sent["seconds"] else 0.0
        return {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "chromium": chromium},
            "accounts": args.accounts,
            "rate_per_account": args.rate,
            "view": args.view,
            "hub_websocket_deflate": not args.no_deflate,
            "offered_updates_per_s": round(offered),
            "loaded": loaded,
            "idle": idle,
        }
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        hub.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            hub.wait(30)
        if hub.poll() is None:
            hub.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def print_table(result: dict) -> None:
    rows = [
        ("frames per second", "fps"),
        ("frame time p50 (ms)", "frame_ms_p50"),
        ("frame time p95 (ms)", "frame_ms_p95"),
        ("frame time p99 (ms)", "frame_ms_p99"),
        ("frame time max (ms)", "frame_ms_max"),
        ("frames over 50 ms", "frames_over_50ms"),
        ("long tasks (count)", "long_tasks"),
        ("long tasks (total ms)", "long_task_ms_total"),
        ("updates applied /s", "updates_applied_per_s"),
        ("renders /s", "renders_per_s"),
        ("render time mean (ms)", "render_ms_mean"),
        ("render time max (ms)", "render_ms_max"),
        ("main thread busy %", "main_thread_busy_pct"),
        ("  of which script %", "script_pct"),
        ("  of which style %", "style_pct"),
        ("  of which layout %", "layout_pct"),
        ("JS heap (MB)", "js_heap_mb"),
        ("WebSocket frames /s", "ws_frames_per_s"),
        ("WebSocket KiB /s", "ws_kb_per_s"),
        ("frame handling (ms per s)", "ws_handling_ms_per_s"),
        ("EA -> page lag p50 (ms)", "lag_ms_p50"),
        ("EA -> page lag p95 (ms)", "lag_ms_p95"),
        ("table rows in the DOM", "rows_in_dom"),
        ("hub: EA messages in /s", "hub_ea_messages_per_s"),
        ("hub: data frames out /s", "hub_frames_out_per_s"),
        ("hub: values conflated /s", "hub_conflated_per_s"),
        ("hub CPU %", "cpu_hub_pct"),
        ("generator CPU %", "cpu_generator_pct"),
        ("Chromium CPU % (all processes)", "cpu_chromium_pct"),
        ("machine CPU % (all cores)", "cpu_machine_pct"),
    ]
    print()
    print(
        f"dashboard ({result['view']}) with {result['accounts']} accounts x {result['rate_per_account']:g} "
        f"updates/s (offered {result['offered_updates_per_s']}/s), {result['machine']['cpus']} CPUs, "
        f"hub WebSocket deflate {'on' if result['hub_websocket_deflate'] else 'off'}"
    )
    print(f"{'':28}{'under load':>14}{'idle':>10}")
    for label, key in rows:
        loaded, idle = result["loaded"].get(key), result["idle"].get(key)
        print(f"{label:28}{'' if loaded is None else loaded:>14}{'' if idle is None else idle:>10}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(generate(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="updates per second per account")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement under load")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--view", default="fleet", choices=["fleet", "positions", "prices", "exposure", "alerts"])
    parser.add_argument("--screenshot", help="PNG of the page under load")
    parser.add_argument("--no-deflate", action="store_true", help="run the hub with WebSocket compression off")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and hub log")
    args = parser.parse_args()
    result = run(args)
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
