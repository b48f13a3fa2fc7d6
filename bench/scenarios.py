"""The scenarios: each starts its own server process, its load processes, and measures one window.

Timing: after every load process reports `ready` (everything connected), the parent sends one schedule of
absolute CLOCK_MONOTONIC instants: warm-up until t0, measurement window [t0, t1), stop shortly after. The
parent reads the server's CPU time (/proc/PID/stat), its metrics and the machine's busy time at t0 and t1;
the load processes count only what happens inside [t0, t1) and report their own CPU time in it.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import load
from bench.server import LIFTED_CONNECT_RATE, ServerProcess, issue_credentials, machine_busy_seconds
from tradewire.config import LimitSettings


# --- sizes ------------------------------------------------------------------------------------------
@dataclass
class Profile:
    name: str
    warmup_s: float
    window_s: float
    ingest_eas: int = 20
    ingest_per_frame: int = 20  # messages per EA frame
    fanout_subs: int = 100
    fanout_symbols: int = 500
    fanout_ticks_per_frame: int = 20  # the publisher floods: frames of 20 ticks, as fast as the server reads
    overload_subs: int = 100
    overload_symbols: int = 10  # hot symbols: what a slow subscriber has pending is replaced, not queued
    overload_throttled: float = 0.25  # share of subscribers that read slowly (fall behind)
    latency_rate: int = 20_000
    latency_subs: int = 20
    latency_symbols: int = 200
    latency_probes: int = 20  # symbols whose ticks are timed by the subscribers (10 %)
    latency_eas: int = 4
    durable_eas: int = 32
    durable_window: int = 8  # position events in flight per EA (256 in all)
    conn_eas: int = 10_000
    conn_subs: int = 1_000
    sub_procs: int = 2  # load processes the subscribers are spread over
    # 7: the latency load (latency_rate, latency_eas, latency_probes) to `slow_subs` healthy subscribers, plus
    # durable events, clean and with slow consumers next to it
    slow_subs: int = 20
    slow_stalled: int = 20  # never read: half on /trading/events/* (durable), half on /trading/prices/*
    slow_trickle: int = 10  # read one byte a second: half on /trading/* (durable too), half on /trading/prices/*
    slow_storm: int = 10  # clients connecting, subscribing to /trading/*, leaving, in a loop
    slow_storm_rate: float = 100.0  # their connects per second in all
    # Subscribers that stay, as many as the storm's connected on average (10 clients, each subscribed for
    # 10-50 ms of every 100 ms, ~3.5 measured): the `steady` variant, the storm's load without its reconnects.
    slow_steady: int = 3
    # Dashboards that all reconnect in the same instant, every period (after a network blip, or a durable stream
    # that closed them 4008 together): each herd is `slow_herd` simultaneous /trading/* subscribes with snapshots.
    slow_herd: int = 10
    slow_herd_period_s: float = 0.5
    slow_durable_eas: int = 4
    # Position events/s in all. Sparse durable events cost the server far more CPU each than a flood (a commit
    # of one or two events each): 500/s took ~0.35 of a core here, which leaves the latency load no room.
    slow_durable_rate: int = 100
    # Updates/s of scenario 7's latency load; 0: latency_rate. Lower where the machine is slow, so that the clean
    # load leaves the server the headroom the comparison needs (at 0.8 of a core, +4 % of CPU is +20 % of p99).
    slow_rate: int = 0
    slow_backlog_bytes: int = 64 * 1024  # [realtime] max_backlog_bytes: past it, a subscriber is closed (4008)
    slow_flush_interval_ms: float = 0.0  # [realtime] flush_interval_ms of the server, the same in every variant
    slow_rounds: int = 1  # each variant this many times, interleaved; the round with the median p99 is shown
    # Of the healthy subscribers, this many are timed, in a load process of their own that runs first on the
    # load core (real-time priority where allowed): they stand for dashboards on machines of their own, so
    # that the latency is the server's and not the load core's queue. The rest are counted, not timed.
    slow_timed_subs: int = 2
    slow_variants: tuple[str, ...] = ()  # a subset to run (clean always runs); empty: all of them
    # > 0: storm and herd clients act only in alternate blocks of this many seconds (see `on_blocks`)
    slow_blocks_s: float = 0.0


# Scenario 7's storm clients, each with a key of its own: 100 connects/s over 50 keys is 2/s a key, under the
# hub's default connect rate (5/s a credential), so the plain storm is never refused; storm-limited uses one.
STORM_KEYS = 50


QUICK = Profile(
    name="quick",
    warmup_s=1.0,
    window_s=3.0,
    fanout_subs=100,
    overload_subs=100,
    # 10k EAs + 1k subscribers connect fine here, but take ~30 s of a quick run's two minutes on a shared
    # 2-core machine: quick mode uses half (5k + 500), which gives the same per-connection slope.
    conn_eas=5_000,
    conn_subs=500,
    slow_durable_rate=200,  # a stalled durable backlog (64 KiB + the kernel's buffers) then fills within the window
)
FULL = Profile(
    name="full",
    warmup_s=2.0,
    window_s=10.0,
    ingest_eas=50,
    fanout_subs=200,
    overload_subs=200,
    conn_eas=10_000,
    conn_subs=1_000,
    slow_rounds=3,
)


# --- load processes ---------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Workers:
    """Load processes (multiprocessing, spawn), each pinned to the load CPUs."""

    def __init__(self, cpus: list[int] | None) -> None:
        self.ctx = mp.get_context("spawn")
        self.cpus = cpus
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []

    def spawn(self, role: str, params: dict) -> int:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=load.worker_main, args=(role, params, child, self.cpus), name=f"bench-{role}", daemon=True
        )
        proc.start()
        child.close()
        self.procs.append(proc)
        self.conns.append(parent)
        return len(self.conns) - 1

    def expect(self, tag: str, timeout: float, which: list[int] | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        for i in range(len(self.conns)) if which is None else which:
            conn = self.conns[i]
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise WorkerError(f"load process {self.procs[i].name} did not report {tag!r} within {timeout:.0f}s")
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise WorkerError(f"load process {self.procs[i].name} died (exit {self.procs[i].exitcode})") from None
            if kind == "error":
                raise WorkerError(payload)
            if kind != tag:
                raise WorkerError(f"load process {self.procs[i].name}: expected {tag!r}, got {kind!r}")
            out.append(payload)
        return out

    def send(self, msg: tuple, which: list[int] | None = None) -> None:
        for i in range(len(self.conns)) if which is None else which:
            with contextlib.suppress(OSError):
                self.conns[i].send(msg)

    def close(self) -> None:
        self.send(("exit", None))
        for proc in self.procs:
            proc.join(10)
        for proc in self.procs:
            if proc.is_alive():  # ours, by object: never a broad kill
                proc.terminate()
                proc.join(5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- measurement ------------------------------------------------------------------------------------------
@dataclass
class Sample:
    wall: float  # at the instant (t0 or t1)
    cpu: float
    busy: float
    runq: float
    metrics: dict[str, float] = field(default_factory=dict)
    # Right after the metrics came back: a server with a backlog answers a scrape late, and its counters are
    # read when it answers, so counter-based rates pair them with the CPU time and clock read after it.
    wall_m: float = 0.0
    cpu_m: float = 0.0


def sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def schedule(warmup: float, window: float, tail: float = 0.3) -> dict:
    now = time.perf_counter()
    t0 = now + warmup
    return {"start": now, "t0": t0, "t1": t0 + window, "stop": t0 + window + tail}


def take_sample(srv: ServerProcess, key: str | None) -> tuple[Sample, Future | None]:
    """CPU time and clocks at this instant; the metrics scrape runs in a thread, since a busy server may answer
    it late (the baseline's loop can starve it for seconds) and the next instant must still be read on time."""
    s = Sample(
        wall=time.perf_counter(), cpu=srv.cpu_seconds(), busy=machine_busy_seconds(), runq=srv.runq_wait_seconds()
    )
    if not key:
        return s, None

    def scrape() -> None:
        with contextlib.suppress(OSError, ValueError):
            s.metrics = srv.metrics(key, timeout=30)
        s.wall_m, s.cpu_m = time.perf_counter(), srv.cpu_seconds()

    return s, _SCRAPER.submit(scrape)


_SCRAPER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrape")


PROFILE: dict[str, Any] = {"dir": None, "label": "", "with": "py-spy", "n": 0}  # set by run.py --profile DIR


def measure(srv: ServerProcess, sched: dict, key: str | None) -> tuple[Sample, Sample]:
    sleep_until(sched["t0"])
    spy = start_profile(srv, sched["t1"] - sched["t0"])
    a, fa = take_sample(srv, key)
    sleep_until(sched["t1"])
    b, fb = take_sample(srv, key)
    for f in (fa, fb):
        if f is not None:
            with contextlib.suppress(TimeoutError):
                f.result(timeout=40)
    if spy is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(10)
    return a, b


def start_profile(srv: ServerProcess, seconds: float) -> subprocess.Popen | None:
    """Record the server for the window (--profile), without pausing it: py-spy's collapsed Python stacks,
    or (--profiler perf) `perf record` of the whole process, kernel and native code included: where
    uvloop, the sockets and the TCP stack spend what py-spy can only show as the event loop's own time."""
    folder = PROFILE["dir"]
    if not folder:
        return None
    duration = str(max(1, int(seconds)))
    name = f"{PROFILE['label'] or srv.name}-{srv.kind}"
    Path(folder).mkdir(parents=True, exist_ok=True)
    if PROFILE["with"] == "perf":
        PROFILE["n"] += 1  # one file per window: every round's, to be reported together
        out = Path(folder) / f"{name}.{PROFILE['n']}.perf.data"
        argv = ["perf", "record", "-q", "-F", "499", "-g", "-p", str(srv.pid), "-o", str(out), "--", "sleep", duration]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    argv = [spy, "record", "--nonblocking", "--format", "raw", "-r", "200", "-d", duration]
    argv += ["-o", str(Path(folder) / f"{name}.txt"), "--pid", str(srv.pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(raw: Path, n: int = 12) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) from py-spy's collapsed stacks, by self time."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        total += c
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    if not total:
        return []
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:n]
    return [(f, round(c / total, 4), round(incl[f] / total, 4)) for f, c in ranked]


def delta(a: Sample, b: Sample, name: str) -> float:
    return b.metrics.get(name, 0.0) - a.metrics.get(name, 0.0)


def window_stats(a: Sample, b: Sample, results: list[dict], by_metrics: bool = False) -> dict:
    """The window's wall and server CPU seconds: between the instants t0 and t1 (what the load processes
    count), or `by_metrics`, between the two scrapes' answers (what the server's counters count)."""
    wall = (b.wall_m - a.wall_m) if by_metrics else (b.wall - a.wall)
    cpu = (b.cpu_m - a.cpu_m) if by_metrics else (b.cpu - a.cpu)
    load_cpu = sum(r.get("cpu_s", 0.0) for r in results)
    other = max(0.0, (b.busy - a.busy) - cpu - load_cpu)
    return {
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu, 3),
        "server_cores": round(cpu / wall, 3) if wall else None,
        "load_cores": round(load_cpu / wall, 3) if wall else None,
        "other_cores": round(other / wall, 3) if wall else None,  # everything else on the machine: noise
        # Share of the window the server (any thread) was runnable but waiting for a CPU, and the same for the
        # load processes: high values mean other processes, not the code under test, set the pace.
        "server_cpu_wait": round((b.runq - a.runq) / wall, 3) if wall else None,
        "load_cpu_wait": round(sum(r.get("runq_s", 0.0) for r in results) / wall, 3) if wall else None,
    }


def histogram_window(a: Sample, b: Sample, name: str, scale: float = 1e3) -> dict:
    """Observations of a server histogram inside the window, and the bucket bounds that hold its p50 and
    p99 (an upper bound: the buckets are coarse), times `scale` (seconds to ms by default)."""
    prefix = name + '_bucket{le="'
    buckets = sorted(
        (float(key[len(prefix) : -2]), b.metrics[key] - a.metrics.get(key, 0.0))
        for key in b.metrics
        if key.startswith(prefix)
    )
    n = buckets[-1][1] if buckets else 0.0
    if not n:
        return {"n": 0}
    out: dict[str, float] = {"n": n}
    for q, label in ((0.5, "p50_le"), (0.99, "p99_le")):
        out[label] = next(le for le, count in buckets if count >= q * n) * scale
    return out


def per(n: float, d: float) -> float | None:
    return round(n / d, 1) if d > 0 else None


def percentiles(samples: list[float], scale: float = 1.0) -> dict:
    if not samples:
        return {"n": 0}
    xs = sorted(samples)

    def q(p: float) -> float:  # nearest rank
        return round(xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))] * scale, 3)

    return {"n": len(xs), "p50": q(0.50), "p99": q(0.99), "p99.9": q(0.999), "max": round(xs[-1] * scale, 3)}


def split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# --- the bench ----------------------------------------------------------------------------------------
class Bench:
    def __init__(
        self,
        profile: Profile,
        root: Path,
        server_cpus: list[int] | None,
        load_cpus: list[int] | None,
        src: Path | None = None,
    ):
        self.p = profile
        self.root = root
        self.src = src  # the source tree every tradewire server of the run imports (see freeze_src)
        # Scenario 7 A/B: (label, src/ of an earlier commit) whose server runs every round too, interleaved.
        self.against: tuple[str, Path] | None = None
        self.server_cpus = server_cpus
        self.load_cpus = load_cpus
        self._n = 0

    @contextlib.contextmanager
    def server(
        self,
        kind: str,
        accounts: list[str],
        *,
        store_options: str = "",
        max_connections: int = 50_000,
        config: str = "",
        read_keys: int = 1,
        connect_rate: tuple[float, int] = LIFTED_CONNECT_RATE,
    ) -> Iterator[tuple[ServerProcess, list[str], str]]:
        """A server and its credentials: a token per account, and the first read key (all in `srv.keys`)."""
        self._n += 1
        workdir = self.root / f"{self._n:02d}-{kind}"
        workdir.mkdir(parents=True)
        store_url = f"sqlite:///{workdir / 'tradewire.db'}{store_options}"
        tokens, keys = issue_credentials(store_url, accounts, read_keys)
        srv = ServerProcess(
            kind,
            workdir,
            store_url,
            cpus=self.server_cpus,
            max_connections=max_connections,
            extra_config=config,
            connect_rate=connect_rate,
            src=self.src if kind == "tradewire" else None,
        )
        srv.keys = keys
        srv.start()
        try:
            yield srv, tokens, keys[0]
        finally:
            code = srv.stop()
            if code not in (0, None, -15):
                print(f"  note: {kind} server exited with {code}; log: {srv.log_path}")

    def addr(self, srv: ServerProcess) -> dict:
        return {"host": srv.host, "port": srv.port}

    # 1 ---------------------------------------------------------------------------------------------
    def ingest(self) -> dict:
        p = self.p
        PROFILE["label"] = "ingest"
        accounts = [f"bench-ingest-{i}" for i in range(p.ingest_eas)]
        with self.server("tradewire", accounts) as (srv, tokens, key), Workers(self.load_cpus) as w:
            w.spawn("ingest", {**self.addr(srv), "tokens": tokens, "per_frame": p.ingest_per_frame})
            (info,) = w.expect("ready", 120)
            sched = schedule(p.warmup_s, p.window_s)
            w.send(("start", sched))
            a, b = measure(srv, sched, key)
            (res,) = w.expect("done", 60)
        win = window_stats(a, b, [res], by_metrics=True)
        applied = delta(a, b, "tradewire_ea_messages_total") - delta(a, b, "tradewire_ea_errors_total")
        return {
            "params": {"eas": p.ingest_eas, "messages_per_frame": p.ingest_per_frame, **info},
            "window": win,
            "updates_applied": applied,
            "updates_per_s": per(applied, win["wall_s"]),
            "updates_per_cpu_s": per(applied, win["server_cpu_s"]),
            "frames_applied": delta(a, b, "tradewire_ea_frames_total"),
            "errors": delta(a, b, "tradewire_ea_errors_total"),
            "throttled": delta(a, b, "tradewire_ea_throttled_total"),
            "client_messages_sent": res["messages_sent"],
        }

    # 2, 3, 6 --------------------------------------------------------------------------------------------
    def fanout_run(
        self,
        kind: str,
        *,
        batch: bool,
        rate: int | None,
        symbols: int,
        subs: int,
        publishers: int = 1,
        throttled: float = 0.0,
        probes: int = 0,
        ticks_per_frame: int | None = None,
        label: str = "",
    ) -> dict:
        p = self.p
        PROFILE["label"] = label
        names = [f"{load.PROBE_PREFIX}{i}" for i in range(probes)] + [f"SYM{i}" for i in range(symbols - probes)]
        accounts = [f"bench-pub-{i}" for i in range(publishers)]
        with self.server(kind, accounts) as (srv, tokens, key), Workers(self.load_cpus) as w:
            base_us = time.perf_counter_ns() // 1000
            first = 0
            n_throttled = round(subs * throttled)
            for count in split(subs, p.sub_procs):
                share = round(n_throttled * count / subs)
                w.spawn(
                    "subscribers",
                    {
                        **self.addr(srv),
                        "key": key,
                        "count": count,
                        "first": first,
                        "channel": "/trading/*",
                        "batch": batch,
                        "probe": probes > 0,
                        "base_us": base_us,
                        "throttled": share,
                        "throttle_s": 0.5,
                    },
                )
                first += count
            pub = {
                "tokens": tokens,
                "rate": rate,
                "symbols": names,
                "base_us": base_us,
                "ticks_per_frame": ticks_per_frame,
            }
            w.spawn("publisher", {**self.addr(srv), **pub})
            w.expect("ready", 120)
            sched = schedule(p.warmup_s, p.window_s)
            w.send(("start", sched))
            a, b = measure(srv, sched, key)
            results = w.expect("done", 60)
        win = window_stats(a, b, results)
        win_m = window_stats(a, b, results, by_metrics=True)
        pub, subs_res = results[-1], results[:-1]
        received = sum(r["received"] for r in subs_res)
        srv_m = {
            name: delta(a, b, f"tradewire_realtime_{name}_total")
            for name in ("deliveries", "frames_out", "writes", "conflated", "closed_slow")
        }
        # What the EAs sent in the window. A flooding EA's socket buffers are kept small (load.FLOOD_BUFFER),
        # so that this is close to what the server read in it.
        sent = pub["ticks_sent"]
        out: dict[str, Any] = {
            "params": {
                "server": kind,
                "batch": batch,
                "rate": rate or "unpaced",
                "ticks_per_frame": ticks_per_frame,
                "symbols": symbols,
                "subscribers": subs,
                "publishers": publishers,
                "throttled_subscribers": n_throttled,
            },
            "window": win,
            "updates_sent": sent,
            "updates_per_s": per(sent, win["wall_s"]),
            "deliveries": received,
            "deliveries_per_s": per(received, win["wall_s"]),
            "deliveries_per_cpu_s": per(received, win["server_cpu_s"]),
            "received_per_subscriber_per_s": per(received / subs, win["wall_s"]),
            "delivered_share": round(received / (sent * subs), 4) if sent else None,
            "subscribers_closed": sum(r["closed"] for r in subs_res),
            "server": srv_m,
            "server_window": {k: win_m[k] for k in ("wall_s", "server_cpu_s")},
        }
        if srv_m["writes"]:
            out["frames_per_write"] = round(srv_m["frames_out"] / srv_m["writes"], 2)
        if srv_m["deliveries"]:
            out["conflated_share"] = round(srv_m["conflated"] / srv_m["deliveries"], 4)
            out["queued_per_cpu_s"] = per(srv_m["deliveries"], win_m["server_cpu_s"])
            out["written_per_s"] = per(srv_m["frames_out"], win_m["wall_s"])
            out["written_per_cpu_s"] = per(srv_m["frames_out"], win_m["server_cpu_s"])
            # Queued but never written: replaced by a newer value (conflated), or still pending at t1. The
            # server's own `conflated` counter lags: it is credited only when a blocked writer runs again.
            out["not_written_share"] = round(1 - srv_m["frames_out"] / srv_m["deliveries"], 4)
        if n_throttled:
            slow = sum(r["received_throttled"] for r in subs_res)
            out["received_per_slow_subscriber_per_s"] = per(slow / n_throttled, win["wall_s"])
            out["received_per_fast_subscriber_per_s"] = per((received - slow) / (subs - n_throttled), win["wall_s"])
        if probes:
            lat: list[float] = []
            for r in subs_res:
                lat.extend(r["latency_us"])
            out["latency_ms"] = percentiles(lat, 1e-3)
        return out

    def fanout(self, tradewire: bool = True, baseline: bool = True) -> dict:
        p = self.p
        common = {
            "rate": None,
            "symbols": p.fanout_symbols,
            "subs": p.fanout_subs,
            "ticks_per_frame": p.fanout_ticks_per_frame,
        }
        out: dict[str, dict] = {}
        if tradewire:
            out["tradewire"] = run_scenario(
                "fanout", self.fanout_run, "tradewire", batch=False, label="fanout", **common
            )
            out["tradewire+batch"] = run_scenario(
                "fanout", self.fanout_run, "tradewire", batch=True, label="fanout-batch", **common
            )
            out["overload"] = run_scenario(
                "overload",
                self.fanout_run,
                "tradewire",
                batch=True,
                rate=None,
                symbols=p.overload_symbols,
                subs=p.overload_subs,
                throttled=p.overload_throttled,
                label="overload",
            )
        if baseline:
            out["baseline"] = run_scenario("fanout", self.fanout_run, "baseline", batch=False, label="fanout", **common)
        return out

    def latency(self, tradewire: bool = True, baseline: bool = True) -> dict:
        p = self.p
        common = {
            "rate": p.latency_rate,
            "symbols": p.latency_symbols,
            "subs": p.latency_subs,
            "publishers": p.latency_eas,
            "probes": p.latency_probes,
        }
        out: dict[str, dict] = {}
        if tradewire:
            out["tradewire+batch"] = run_scenario(
                "latency", self.fanout_run, "tradewire", batch=True, label="latency-batch", **common
            )
            if p.name == "full":
                out["tradewire"] = run_scenario(
                    "latency", self.fanout_run, "tradewire", batch=False, label="latency", **common
                )
        if baseline:
            out["baseline"] = run_scenario(
                "latency", self.fanout_run, "baseline", batch=False, label="latency", **common
            )
        return out

    # 4 -----------------------------------------------------------------------------------------------
    def durable(self) -> dict:
        return {sync: run_scenario("durable", self.durable_run, sync) for sync in ("FULL", "NORMAL")}

    def durable_run(self, sync: str) -> dict:
        p = self.p
        PROFILE["label"] = f"durable-{sync}"
        accounts = [f"bench-durable-{i}" for i in range(p.durable_eas)]
        options = f"?synchronous={sync}"
        with (
            self.server("tradewire", accounts, store_options=options) as (srv, tokens, key),
            Workers(self.load_cpus) as w,
        ):
            w.spawn("durable", {**self.addr(srv), "tokens": tokens, "window": p.durable_window})
            w.expect("ready", 120)
            sched = schedule(p.warmup_s, p.window_s)
            w.send(("start", sched))
            a, b = measure(srv, sched, key)
            (res,) = w.expect("done", 60)
        win = window_stats(a, b, [res])
        commits = delta(a, b, "tradewire_store_commits_total")
        ops = delta(a, b, "tradewire_store_operations_total")
        return {
            "params": {
                "synchronous": sync,
                "eas": p.durable_eas,
                "window_per_ea": p.durable_window,
                "in_flight": p.durable_eas * p.durable_window,
            },
            "window": win,
            "acked": res["acked"],
            "events_per_s": per(res["acked"], win["wall_s"]),
            "events_per_cpu_s": per(res["acked"], win["server_cpu_s"]),
            "ack_latency_ms": percentiles(res["latency_us"], 1e-3),
            "commits": commits,
            "operations_per_commit": round(ops / commits, 1) if commits else None,
            "errors": res["errors"],
            "error_sample": res["error_sample"],
        }

    # 5 -----------------------------------------------------------------------------------------------
    def connections(self) -> dict:
        p = self.p
        warm_eas, warm_subs = 20, 10
        accounts = [f"bench-idle-{i}" for i in range(warm_eas + p.conn_eas)]
        limit = warm_eas + warm_subs + p.conn_eas + p.conn_subs + 100
        with (
            self.server("tradewire", accounts, max_connections=limit) as (srv, tokens, key),
            Workers(self.load_cpus) as w,
        ):
            rss_empty = srv.rss_kib()
            # Warm-up: the first connections pay for lazily built structures and imports; measure after.
            warm = [
                w.spawn("idle_eas", {**self.addr(srv), "tokens": tokens[:warm_eas], "first_login": 1}),
                w.spawn(
                    "idle_subscribers",
                    {**self.addr(srv), "key": key, "count": warm_subs, "channel": "/trading/events/*"},
                ),
            ]
            w.expect("ready", 60, warm)
            time.sleep(0.5)
            rss0, cpu0, t0 = srv.rss_kib(), srv.cpu_seconds(), time.perf_counter()
            eas = []
            first = warm_eas
            for count in split(p.conn_eas, 2):
                eas.append(
                    w.spawn(
                        "idle_eas",
                        {**self.addr(srv), "tokens": tokens[first : first + count], "first_login": 10 + first},
                    )
                )
                first += count
            ea_info = w.expect("ready", 600, eas)
            connect_s, cpu1 = time.perf_counter() - t0, srv.cpu_seconds()
            time.sleep(1.0)
            rss1 = srv.rss_kib()
            subs = [
                w.spawn(
                    "idle_subscribers",
                    {**self.addr(srv), "key": key, "count": p.conn_subs, "channel": "/trading/events/*"},
                )
            ]
            sub_info = w.expect("ready", 300, subs)
            time.sleep(1.0)
            rss2 = srv.rss_kib()
            gauges = srv.metrics(key)
            w.send(("start", {"start": 0, "t0": 0, "t1": 0, "stop": time.perf_counter()}))
            w.expect("done", 60)
        n_ea = sum(i["connected"] for i in ea_info)
        n_sub = sum(i["connected"] for i in sub_info)
        failed = sum(i["failed"] for i in ea_info + sub_info)
        samples = [s for i in ea_info + sub_info for s in i["error_sample"]]
        return {
            "params": {"eas": p.conn_eas, "subscribers": p.conn_subs, "nofile_load": ea_info[0]["nofile"]},
            "connected_eas": n_ea,
            "connected_subscribers": n_sub,
            "failed": failed,
            "error_sample": samples[:3],
            "server_sessions": gauges.get("tradewire_ea_sessions"),
            "server_subscriber_connections": gauges.get("tradewire_subscriber_connections"),
            "rss_kib": {"empty": rss_empty, "warm": rss0, "with_eas": rss1, "with_subscribers": rss2},
            "kib_per_ea": round((rss1 - rss0) / n_ea, 2) if n_ea else None,
            "kib_per_subscriber": round((rss2 - rss1) / n_sub, 2) if n_sub else None,
            "kib_per_connection": round((rss2 - rss0) / (n_ea + n_sub), 2) if n_ea + n_sub else None,
            "ea_connect_s": round(connect_s, 2),
            "ea_connects_per_cpu_s": per(n_ea, cpu1 - cpu0),
        }

    # 7 -----------------------------------------------------------------------------------------------
    def slow(self) -> dict:
        """The latency load with durable events flowing, clean and next to each kind of slow consumer; each
        variant's healthy latency against the clean run's (the +10 % criterion of the reliability suite).

        A round is one server, on the hub's default settings, that runs every variant in turn, each with
        fresh load processes: the same server process for all of them, because two server processes given
        the same load here differ by ±10-20 % in CPU (0.47-0.76 of a core over 12 clean runs), more than
        the effect measured. Each variant is compared with the clean phase of its own server, and the
        median of those ratios over the rounds is the headline. The order rotates from round to round, so
        that what a server accumulates (stored events, connections gone) falls on every variant alike."""
        p = self.p
        variants: dict[str, dict[str, Any]] = {
            "clean": {},
            # The clean load again, on the same server: what the comparison resolves (an A/A test).
            "clean-again": {},
            "stalled": {"stalled": p.slow_stalled},
            "trickle": {"trickle": p.slow_trickle},
            # Its two halves apart, each with half of its clients: /trading/* (durable too, closed 4008, back
            # with a snapshot), and /trading/prices/* (latest-wins only: parked for good).
            "trickle-durable": {"trickle": p.slow_trickle // 2, "trickle_on": "durable"},
            "trickle-latest": {"trickle": p.slow_trickle // 2, "trickle_on": "latest"},
            # Trickle's clients, channels and pace, never reading: what is left of trickle when its reads are not.
            "trickle-unread": {"trickle": p.slow_trickle, "trickle_reads": False},
            # The storm spread over STORM_KEYS keys: no key passes the hub's connect rate, every connect goes in.
            "storm": {"storm": p.slow_storm},
            "steady": {"steady": p.slow_steady},
            # The same storm with one key: what the hub's connect rate per credential does to it.
            "storm-limited": {"storm": p.slow_storm, "limited": True},
            "herd": {"herd": p.slow_herd},
        }
        if p.name == "full":
            variants["all"] = {"stalled": p.slow_stalled, "trickle": p.slow_trickle, "storm": p.slow_storm}
        if p.slow_variants:  # the reference always runs: every ratio is against it
            variants = {name: kw for name, kw in variants.items() if name == "clean" or name in p.slow_variants}
        names = list(variants)
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        samples: dict[str, list[float]] = {name: [] for name in names}
        sent: dict[str, list[float]] = {name: [] for name in names}  # each sample's send time
        blocks: dict[str, list[tuple[float, float]]] = {name: [] for name in names}  # every round's on-blocks
        marks: dict[str, dict[str, list[float]]] = {name: {} for name in names}  # slow clients' drops, reconnects
        # An A/B (`against`): each round runs a server of each tree, in alternating order; the other tree's
        # variants are named `<variant>@<label>` and compared with its own server's clean phase.
        trees: list[tuple[str, Path | None]] = [("", self.src)]
        if self.against:
            label, src = self.against
            trees.append((f"@{label}", src))
            for suffix, _ in trees[1:]:
                for name in names:
                    for d in (rounds, samples, sent, blocks, marks):
                        d[name + suffix] = [] if d is not marks else {}
        for i in range(p.slow_rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for suffix, src in trees[i % len(trees) :] + trees[: i % len(trees)]:
                self.src = src
                phases = run_scenario("slow", self.slow_round, {name: variants[name] for name in order})
                self._slow_collect(phases, names, suffix, rounds, samples, sent, blocks, marks)
        self.src = trees[0][1]
        out = {name: median_round(rs) for name, rs in rounds.items()}
        for name, r in out.items():
            # Every round's samples in one distribution: a stall that sets one round's p99 weighs as one round's
            # share of the pool, where the median round can only take one round's figure or another's.
            r["latency_pooled_ms"] = percentiles(samples[name], 1e-3)
            if p.slow_blocks_s and "error" not in r:
                r["blocks_pooled"] = split_by_blocks(samples[name], sent[name], blocks[name])
            if marks[name].get("reconnect"):
                r["mark_windows_pooled"] = mark_windows(samples[name], sent[name], marks[name])
            if "herd_window" in r:  # over every round's probes: a round has only ~20 herds
                r["herd_window_pooled"] = herd_window(samples[name], sent[name], p.slow_herd_period_s)
        for name, r in out.items():
            clean_name = "clean" + name[name.index("@") :] if "@" in name else "clean"  # its own tree's server
            clean = out[clean_name]
            if "error" in r or "error" in clean or not clean["latency_ms"].get("n") or not r["latency_ms"].get("n"):
                continue
            pairs = [
                (v, c) for v, c in zip(rounds[name], rounds[clean_name], strict=True) if measured(v) and measured(c)
            ]
            # Against the clean phase of the same server, round by round: the median of those ratios.
            r["vs_clean"] = {
                q: round(statistics.median(v["latency_ms"][q] / c["latency_ms"][q] for v, c in pairs), 3)
                for q in ("p50", "p99", "p99.9")
            }
            r["vs_clean"]["server_cpu"] = round(
                statistics.median(v["window"]["server_cpu_s"] / c["window"]["server_cpu_s"] for v, c in pairs), 3
            )
            # Server CPU per healthy delivery: what the slow consumers take, robust to how much CPU the server
            # got. A lower bound once the server falls behind (batches grow, and a write carries more frames).
            r["vs_clean"]["cpu_per_delivery"] = round(
                statistics.median(c["deliveries_per_cpu_s"] / v["deliveries_per_cpu_s"] for v, c in pairs), 3
            )
            r["vs_clean_rounds"] = [round(v["latency_ms"]["p99"] / c["latency_ms"]["p99"], 3) for v, c in pairs]
            r["vs_clean_rounds_p50"] = [round(v["latency_ms"]["p50"] / c["latency_ms"]["p50"], 3) for v, c in pairs]
            # What else each round saw, in the same order: a round's p99 set by a collection or by a busy load
            # core can be told from one set by the server's own work.
            r["rounds_gc1"] = [v["server"]["gc"]["gen1"]["n"] for v, _ in pairs]
            r["rounds_load_cpu_wait"] = [v["window"].get("load_cpu_wait") for v, _ in pairs]
            pooled, clean_pooled = r["latency_pooled_ms"], clean["latency_pooled_ms"]
            r["vs_clean_pooled"] = {q: round(pooled[q] / clean_pooled[q], 3) for q in ("p50", "p99", "p99.9")}
        storm, steady = out.get("storm", {}), out.get("steady", {})
        if "vs_clean" in storm and "vs_clean" in steady:  # what the reconnecting costs, apart from the load
            storm["vs_steady"] = {q: round(storm["latency_ms"][q] / steady["latency_ms"][q], 3) for q in ("p50", "p99")}
        return out

    @staticmethod
    def _slow_collect(
        phases: dict[str, dict],
        names: list[str],
        suffix: str,
        rounds: dict[str, list[dict]],
        samples: dict[str, list[float]],
        sent: dict[str, list[float]],
        blocks: dict[str, list[tuple[float, float]]],
        marks: dict[str, dict[str, list[float]]],
    ) -> None:
        """One round's phases into the run's lists, under `<variant><suffix>`."""
        for variant in names:
            name = variant + suffix
            result = phases.get(variant) or {"error": phases.get("error", "not run")}
            samples[name] += result.pop("_latency_us", [])
            sent[name] += result.pop("_latency_sent_s", [])
            blocks[name] += result.pop("_on_blocks", [])  # rounds follow each other: still in time order
            for kind, times in result.pop("_marks", {}).items():
                marks[name].setdefault(kind, []).extend(times)
            rounds[name].append(result)

    def slow_round(self, variants: dict[str, dict[str, Any]]) -> dict[str, dict]:
        """One server, every variant in turn against it (see `slow`)."""
        p = self.p
        accounts = [f"bench-pub-{i}" for i in range(p.latency_eas)]
        accounts += [f"bench-durable-{i}" for i in range(p.slow_durable_eas)]
        config = f"\n[realtime]\nmax_backlog_bytes = {p.slow_backlog_bytes}\n"
        config += f"flush_interval_ms = {p.slow_flush_interval_ms}\n"
        defaults = LimitSettings()
        connect_rate = (defaults.connects_per_s, defaults.connect_burst)
        # Keys: the healthy subscribers', the slow and steady clients', then the storm's (each client its own
        # credential, as separate scripts would have), so that the hub's connect rate counts each apart.
        read_keys = 2 + STORM_KEYS
        with self.server("tradewire", accounts, config=config, read_keys=read_keys, connect_rate=connect_rate) as (
            srv,
            tokens,
            _,
        ):
            out = {}
            for name, kw in variants.items():
                out[name] = run_scenario("slow", self.slow_phase, srv, tokens, name, **kw)
                if not srv.alive():
                    break  # the server died: later phases would only say so again
            return out

    def slow_phase(
        self,
        srv: ServerProcess,
        tokens: list[str],
        variant: str,
        stalled: int = 0,
        trickle: int = 0,
        storm: int = 0,
        steady: int = 0,
        limited: bool = False,
        herd: int = 0,
        trickle_on: str = "both",
        trickle_reads: bool = True,
    ) -> dict:
        p = self.p
        PROFILE["label"] = f"slow-{variant}"
        symbols = [f"{load.PROBE_PREFIX}{i}" for i in range(p.latency_probes)]
        symbols += [f"SYM{i}" for i in range(p.latency_symbols - p.latency_probes)]
        misbehaving = {"stalled": stalled, "trickle": trickle, "storm": storm, "steady": steady, "herd": herd}
        key, slow_key = srv.keys[0], srv.keys[1]
        storm_keys = (srv.keys[2:3] if limited else srv.keys[2:]) if storm or herd else []
        with Workers(self.load_cpus) as w:
            start = srv.metrics(key)
            rss_empty = srv.rss_kib()
            base_us = time.perf_counter_ns() // 1000
            healthy = {"key": key, "channel": "/trading/*", "batch": True, "base_us": base_us}
            timed = min(p.slow_timed_subs, p.slow_subs)
            parts = [timed, *split(p.slow_subs - timed, p.sub_procs)]
            for i, count in enumerate(parts):
                role = {"probe": True, "foreground": True} if i == 0 else {"probe": False}
                w.spawn("subscribers", {**self.addr(srv), **healthy, **role, "count": count, "first": sum(parts[:i])})
            rate = p.slow_rate or p.latency_rate
            pub = {"tokens": tokens[: p.latency_eas], "rate": rate, "symbols": symbols, "base_us": base_us}
            w.spawn("publisher", {**self.addr(srv), **pub, "foreground": True})
            durable = {"tokens": tokens[p.latency_eas :], "rate": p.slow_durable_rate}
            w.spawn("paced_durable", {**self.addr(srv), **durable})
            if any(misbehaving.values()):
                slow = {"key": slow_key, "storm_keys": storm_keys, "storm_rate": p.slow_storm_rate, "background": True}
                slow["herd_period_s"] = p.slow_herd_period_s
                slow |= misbehaving
                slow["trickle_on"] = trickle_on
                slow["trickle_reads"] = trickle_reads
                w.spawn("slow_consumers", {**self.addr(srv), **slow})
            ready = w.expect("ready", 120)
            rss_ready = srv.rss_kib()
            sched = schedule(p.warmup_s, p.window_s)
            if p.slow_blocks_s:
                sched["on_blocks"] = on_blocks(sched["t0"], sched["t1"], p.slow_blocks_s, random.Random())
            w.send(("start", sched))
            rss = _RSS.submit(rss_over, srv, sched["t0"], sched["t1"])
            a, b = measure(srv, sched, key)
            results = w.expect("done", 60)
            rss_after = srv.rss_kib()
            end = srv.metrics(key)
        win = window_stats(a, b, results)
        subs_res, (pub_res, dur_res), slow_res = results[: len(parts)], results[len(parts) : len(parts) + 2], {}
        if len(results) > len(parts) + 2:
            slow_res = results[-1]
        phase_marks = slow_res.pop("_marks", {})
        received = sum(r["received"] for r in subs_res)
        lat = [x for r in subs_res for x in r["latency_us"]]
        sent = [x for r in subs_res for x in r.pop("latency_sent_s")]
        # Probe ticks are `latency_probes` of `latency_symbols`, sent round-robin: what every timed subscriber sees.
        expected = pub_res["ticks_sent"] * p.latency_probes / p.latency_symbols * timed
        closed_total = end.get("tradewire_realtime_closed_slow_total", 0.0)
        return {
            "params": {
                "variant": variant,
                **misbehaving,
                **({"trickle_on": trickle_on, "trickle_reads": trickle_reads} if trickle else {}),
                "rate": rate,
                "symbols": p.latency_symbols,
                "subscribers": p.slow_subs,
                "timed_subscribers": timed,
                "timed_priority": ready[0].get("priority"),
                "durable_rate": p.slow_durable_rate,
                "storm_rate": p.slow_storm_rate if storm else 0,
                "storm_keys": len(storm_keys),
                "herd_period_s": p.slow_herd_period_s if herd else 0,
                "max_backlog_bytes": p.slow_backlog_bytes,
                "flush_interval_ms": p.slow_flush_interval_ms,
                "connect_rate": list(srv.connect_rate),
            },
            "window": win,
            "updates_sent": pub_res["ticks_sent"],
            "updates_per_s": per(pub_res["ticks_sent"], win["wall_s"]),
            # EA frames: the server's cost goes with them (a read, a parse, a flush to every subscriber) more
            # than with the ticks they carry.
            "frames_per_s": per(pub_res["frames_sent"], win["wall_s"]),
            "deliveries": received,
            "deliveries_per_cpu_s": per(received, win["server_cpu_s"]),
            "latency_ms": percentiles(lat, 1e-3),
            "_latency_us": lat,  # taken out by `slow`, which pools the rounds' samples
            "_latency_sent_s": sent,
            "timed_share": round(len(lat) / expected, 4) if expected else None,
            "healthy_closed": sum(r["closed"] for r in subs_res),
            "durable_acked_per_s": per(dur_res["acked"], win["wall_s"]),
            "durable_ack_ms": percentiles(dur_res["ack_latency_us"], 1e-3),
            # RSS when this phase's clients connected (earlier phases' included), over the window, after.
            "rss_kib": {"empty": rss_empty, "ready": rss_ready, **rss.result(timeout=30), "after": rss_after},
            "server": {
                "closed_slow_window": delta(a, b, "tradewire_realtime_closed_slow_total"),
                "closed_slow_total": closed_total - start.get("tradewire_realtime_closed_slow_total", 0.0),
                "conflated_window": delta(a, b, "tradewire_realtime_conflated_total"),
                "subscriber_connections_t1": b.metrics.get("tradewire_subscriber_connections"),
                "parked_t1": b.metrics.get("tradewire_subscriber_connections_parked"),
                # Collections of the older generations in the window, and how long they held the loop in all;
                # generation 0's count (each is short, but many say the window kept making tracked objects).
                "gc": {
                    f"gen{g}": {
                        "n": delta(a, b, f'tradewire_gc_pause_seconds_count{{generation="{g}"}}'),
                        "ms": round(delta(a, b, f'tradewire_gc_pause_seconds_sum{{generation="{g}"}}') * 1e3, 2),
                    }
                    for g in (1, 2)
                }
                | {"gen0": {"n": delta(a, b, 'python_gc_collections_total{generation="0"}')}},
                # Queued to written, inside the server: what the subscribers' own scheduling does not touch.
                "fanout_latency_ms": histogram_window(a, b, "tradewire_fanout_latency_seconds"),
            },
            "slow_clients": slow_res,
            **({"herd_window": herd_window(lat, sent, p.slow_herd_period_s)} if herd else {}),
            **({"blocks": split_by_blocks(lat, sent, sched["on_blocks"])} if p.slow_blocks_s else {}),
            **({"mark_windows": mark_windows(lat, sent, phase_marks)} if phase_marks.get("reconnect") else {}),
            "_on_blocks": sched.get("on_blocks", []),
            "_marks": phase_marks,
        }


def on_blocks(t0: float, t1: float, block_s: float, rng: random.Random) -> list[tuple[float, float]]:
    """The window cut into blocks of `block_s`, taken in pairs, one of each pair "on" at random: the intervals
    in which scenario 7's storm and herd clients act. Comparing a phase's probes sent in on-blocks with those
    sent in off-blocks compares neighbouring seconds, so the machine's drift over a round cancels out; the
    random order keeps anything periodic from lining up with the blocks."""
    blocks = []
    start = t0
    while start + 2 * block_s <= t1 + 1e-9:
        first = rng.random() < 0.5
        on = start if first else start + block_s
        blocks.append((on, on + block_s))
        start += 2 * block_s
    return blocks


def split_by_blocks(lat_us: list[float], sent_s: list[float], blocks: list[tuple[float, float]]) -> dict:
    """Probe latency in on-blocks and in off-blocks, and their ratio."""
    on = [x for x, t in zip(lat_us, sent_s, strict=True) if load.in_blocks(t, blocks)]
    off = [x for x, t in zip(lat_us, sent_s, strict=True) if not load.in_blocks(t, blocks)]
    out = {"on_ms": percentiles(on, 1e-3), "off_ms": percentiles(off, 1e-3)}
    if on and off:
        out["on_vs_off"] = {q: round(out["on_ms"][q] / out["off_ms"][q], 3) for q in ("p50", "p99", "p99.9")}
    return out


HERD_WINDOW_S = 0.02  # a herd's set-up, from its instant: ~5-15 ms measured (herd_subscribe_ms)


def herd_window(lat_us: list[float], sent_s: list[float], period: float) -> dict:
    """The healthy latency of probes sent within HERD_WINDOW_S of a herd's instant, and of the others: what
    the herd's set-up itself does, apart from the rest of the window."""
    near = [x for x, t in zip(lat_us, sent_s, strict=True) if t % period < HERD_WINDOW_S]
    far = [x for x, t in zip(lat_us, sent_s, strict=True) if t % period >= HERD_WINDOW_S]
    # p99 by when in the period a probe was sent, 10 ms bins over the first 100 ms (the rest in the last)
    bins: list[list[float]] = [[] for _ in range(11)]
    for x, t in zip(lat_us, sent_s, strict=True):
        bins[min(10, int(t % period * 100))].append(x)
    p99_by_10ms = [percentiles(b, 1e-3).get("p99") for b in bins]
    return {"near_ms": percentiles(near, 1e-3), "far_ms": percentiles(far, 1e-3), "p99_ms_by_10ms": p99_by_10ms}


# What a slow subscriber's drop and return might cost the others, looked for where it would show: the probes sent
# within MARK_WINDOW_S after each of these instants (the server decides a 4008 close one second before the reset
# its client sees: `Connection.close(abort=True)` waits that long for the close frame to go out).
MARK_WINDOW_S = 0.05
MARK_OFFSETS = {"overflow": ("dropped", -1.0), "reset": ("dropped", -load.MARK_POLL_S), "reconnect": ("reconnect", 0.0)}


def mark_windows(lat_us: list[float], sent_s: list[float], marks: dict[str, list[float]]) -> dict:
    """Probe latency within MARK_WINDOW_S after each kind of slow-client instant, against the rest; and the share of
    probes the windows hold (the most they can move the whole window's p99 by)."""
    out = {}
    for name, (kind, offset) in MARK_OFFSETS.items():
        starts = sorted(t + offset for t in marks.get(kind, []))
        merged: list[tuple[float, float]] = []
        for t in starts:  # overlapping windows as one: in_blocks needs disjoint intervals in order
            if merged and t <= merged[-1][1]:
                merged[-1] = (merged[-1][0], t + MARK_WINDOW_S)
            else:
                merged.append((t, t + MARK_WINDOW_S))
        split = split_by_blocks(lat_us, sent_s, merged)
        near = split["on_ms"].get("n", 0)
        out[name] = {
            "marks": len(starts),
            "window_ms": MARK_WINDOW_S * 1e3,
            "share": round(near / len(lat_us), 4) if lat_us else None,
            **split,
        }
    return out


def measured(result: dict) -> bool:
    """A phase that ran and timed something."""
    return "error" not in result and bool(result.get("latency_ms", {}).get("n"))


def median_round(rounds: list[dict]) -> dict:
    """The round with the median healthy p99 (its figures belong together), and every round's headline."""
    ok = sorted((r for r in rounds if "error" not in r), key=lambda r: r["latency_ms"].get("p99", math.inf))
    if not ok:
        return rounds[0]
    if len(rounds) == 1:
        return ok[0]
    keep = ("latency_ms", "timed_share", "window", "rss_kib", "server")
    return {**ok[(len(ok) - 1) // 2], "rounds": [{k: r[k] for k in keep} if "error" not in r else r for r in rounds]}


_RSS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rss")


def rss_over(srv: ServerProcess, t0: float, t1: float, every: float = 0.1) -> dict:
    """The server's VmRSS at t0, its peak over [t0, t1] (sampled every 0.1 s), at t1, and once a second, in KiB."""
    sleep_until(t0)
    first = peak = last = srv.rss_kib()
    series, n = [first], 0
    while time.perf_counter() < t1:
        time.sleep(every)
        last = srv.rss_kib()
        peak = max(peak, last)
        n += 1
        if n % round(1 / every) == 0:
            series.append(last)
    return {"t0": first, "peak": peak, "t1": last, "per_s": series}


def run_scenario(name: str, fn: Any, *args: Any, **kw: Any) -> dict:
    started = time.perf_counter()
    try:
        result = fn(*args, **kw)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def make_root() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="tradewire-bench-"))


def freeze_src(root: Path) -> Path:
    """A copy of this tree's `src/` as it is now, for every server of the run to import: a commit or an
    edit during a long run (an hour and more) must not change the server of its later rounds."""
    dest = root / "src"
    shutil.copytree(
        Path(__file__).resolve().parent.parent / "src",
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    return dest


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def cpu_split(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


__all__ = ["FULL", "QUICK", "Bench", "Profile", "asdict", "cpu_split", "make_root", "remove_root", "run_scenario"]
