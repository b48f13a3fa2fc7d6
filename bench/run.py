"""tradewire benchmark suite. See bench/README.md.

    python -m bench.run [--quick] [--only SCENARIO[,SCENARIO...]] [--out bench/results/latest.json]

Scenarios: ingest, fanout, latency, durable, connections, slow; `baseline` runs only the baseline's side of
fanout and latency. Prints a table and writes the full figures as JSON. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SCENARIOS = ("ingest", "fanout", "latency", "durable", "connections", "slow")
# scenario 7's variants
SLOW_VARIANTS = (
    "clean",
    "clean-again",
    "stalled",
    "trickle",
    "trickle-durable",
    "trickle-latest",
    "trickle-unread",
    "storm",
    "steady",
    "storm-limited",
    "herd",
    "all",
)
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="tradewire benchmark suite")
    parser.add_argument("--quick", action="store_true", help="CI-sized run, under two minutes")
    parser.add_argument(
        "--only",
        metavar="SCENARIO",
        help=f"comma-separated subset of {', '.join(SCENARIOS)}, baseline (baseline's fanout and latency only)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline runs (no ratios)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to separate cores")
    parser.add_argument("--out", default="bench/results/latest.json", help="JSON output (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' work directories (logs, databases)")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the server with py-spy (pip install py-spy) during every window: DIR/<run>-<server>.txt "
        "(collapsed stacks), and print its top functions. Sampling costs CPU: figures of a profiled run are off.",
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "perf"),
        default="py-spy",
        help="with --profile: perf records kernel and native code too (DIR/<run>-<server>.<window>.perf.data; "
        "read them with perf report -i)",
    )
    parser.add_argument(
        "--slow-rounds",
        type=int,
        metavar="N",
        help="rounds of each scenario 7 variant (full mode 3, quick 1): more, where the rounds' spread hides +10 %%",
    )
    parser.add_argument(
        "--slow-subs",
        type=int,
        metavar="N",
        help="healthy subscribers of scenario 7 (default 20): fewer, to compare where the server has headroom "
        "(the clean load then takes less of its core)",
    )
    parser.add_argument(
        "--slow-variants",
        metavar="NAMES",
        help="comma-separated scenario 7 variants to run (clean always runs, as the reference): "
        "clean-again, stalled, trickle, trickle-durable, trickle-latest, trickle-unread, storm, steady, "
        "storm-limited, herd, all (full mode)",
    )
    parser.add_argument(
        "--slow-blocks",
        type=float,
        metavar="S",
        help="scenario 7: storm and herd clients act only in alternate blocks of S seconds of the window (in random "
        "order per pair), and every variant's probes are split by the block they were sent in: the on/off ratio "
        "compares neighbouring seconds, which the machine's drift over a round does not reach",
    )
    parser.add_argument(
        "--slow-rate",
        type=int,
        metavar="N",
        help="scenario 7: updates/s of the latency load (default 20000): lower on a slow machine, so that the clean "
        "load leaves the server headroom (the table's 'Server cores' of clean: ~0.45 is what earlier runs had)",
    )
    parser.add_argument(
        "--slow-backlog",
        type=int,
        metavar="KIB",
        help="scenario 7: the server's [realtime] max_backlog_bytes in KiB (default 64, so that durable slow readers "
        "are closed 4008 within the window; the hub's own default is 4096)",
    )
    parser.add_argument(
        "--slow-against",
        metavar="REV",
        help="scenario 7 as an A/B: every round also runs the server of git commit REV (its src/, exported), in "
        "alternating order; its variants are named <variant>@REV (bench.slow_stats compares the two)",
    )
    args = parser.parse_args(argv)
    if args.slow_rate is not None and not 100 <= args.slow_rate <= 1_000_000:
        parser.error(f"--slow-rate takes 100 to 1000000 updates/s, not {args.slow_rate}")
    if args.slow_backlog is not None and not 1 <= args.slow_backlog <= 1024 * 1024:
        parser.error(f"--slow-backlog takes 1 to 1048576 KiB, not {args.slow_backlog}")
    if args.slow_blocks is not None and not 0.1 <= args.slow_blocks <= 10:
        parser.error(f"--slow-blocks takes 0.1 to 10 seconds, not {args.slow_blocks}")
    if args.slow_rounds is not None and args.slow_rounds < 1:
        parser.error(f"--slow-rounds must be at least 1, not {args.slow_rounds}")
    if args.slow_subs is not None and args.slow_subs < 2:
        parser.error(f"--slow-subs must be at least 2 (two of them time the probes), not {args.slow_subs}")
    args.slow_variant_set = tuple(v.strip() for v in (args.slow_variants or "").split(",") if v.strip())
    unknown_variants = set(args.slow_variant_set) - set(SLOW_VARIANTS)
    if unknown_variants:
        names = ", ".join(sorted(unknown_variants))
        parser.error(f"unknown scenario 7 variant(s): {names}; choose from {', '.join(SLOW_VARIANTS)}")
    only = {s.strip() for s in (args.only or "").split(",") if s.strip()}
    unknown = only - set(SCENARIOS) - {"baseline"}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}, baseline")
    args.only_set = only
    return args


# --- machine and run details ---------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind


def machine(server_cpus: list[int] | None, load_cpus: list[int] | None, workdir: Path) -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines() if "model name" in ln), "")
    mem = next((ln.split()[1] for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal")), "0")
    versions = {}
    for pkg in ("aiohttp", "msgspec", "uvloop", "starlette", "uvicorn", "websockets", "httptools"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "tree_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "server_cpus": server_cpus,
        "load_cpus": load_cpus,
        "store_filesystem": _fs_type(workdir),
        "loadavg_at_start": _read("/proc/loadavg").split()[:3],
    }


# --- the table ----------------------------------------------------------------------------------------
def k(x: float | None) -> str:
    if x is None:
        return "—"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2f}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "—"


def ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}"


def lat(d: dict | None) -> str:
    if not d or not d.get("n"):
        return "—"
    return " / ".join(ms(d[q]) for q in ("p50", "p99", "p99.9"))


def cores(win: dict) -> str:
    return f"{win['server_cores']:.2f}"


def noise(win: dict) -> dict:
    """The noise columns: cores used by the load / by everything else, and the CPU wait of server / load."""
    return {
        "others": f"{win['load_cores']:.2f} / {win['other_cores']:.2f}",
        "wait": f"{100 * win.get('server_cpu_wait', 0):.0f}% / {100 * win.get('load_cpu_wait', 0):.0f}%",
    }


def rows(results: dict) -> list[dict]:
    out: list[dict] = []

    def row(scenario: str, variant: str, **kw: Any) -> None:
        base = {"scenario": scenario, "variant": variant, "rate": "—", "per_cpu": "—", "cores": "—"}
        base.update(vs_baseline="—", others="—", wait="—", latency="—", notes="")
        out.append({**base, **kw})

    def failed(scenario: str, res: dict) -> bool:
        if "error" in res:
            row(scenario, "FAILED", notes=res["error"][:200])
            return True
        return False

    ing = results.get("ingest")
    if ing and not failed("1 ingest", ing):
        row(
            "1 ingest",
            "tradewire",
            rate=f"{k(ing['updates_per_s'])} upd/s",
            per_cpu=f"{k(ing['updates_per_cpu_s'])} upd",
            cores=cores(ing["window"]),
            notes=f"{ing['params']['eas']} EAs x {ing['params']['messages_per_frame']} msgs/frame; "
            f"errors {ing['errors']:.0f}",
            **noise(ing["window"]),
        )

    fan = results.get("fanout")
    if fan and not failed("2 fan-out", fan):
        base = fan.get("baseline", {}).get("deliveries_per_cpu_s")
        for variant in ("tradewire", "tradewire+batch", "baseline"):
            r = fan.get(variant)
            if not r or failed("2 fan-out", r):
                continue
            extra = (
                f"; {r['frames_per_write']} frames/write" if "frames_per_write" in r and variant != "baseline" else ""
            )
            row(
                "2 fan-out",
                variant,
                rate=f"{k(r['deliveries_per_s'])} dlv/s",
                per_cpu=f"{k(r['deliveries_per_cpu_s'])} dlv",
                cores=cores(r["window"]),
                vs_baseline=ratio(r["deliveries_per_cpu_s"], base) if variant != "baseline" else "1.0x",
                notes=f"{r['params']['subscribers']} subs on /trading/*, each got "
                f"{k(r['received_per_subscriber_per_s'])} upd/s{extra}",
                **noise(r["window"]),
            )
        r = fan.get("overload")
        if r and not failed("2 fan-out", r):
            slow, fast = r.get("received_per_slow_subscriber_per_s"), r.get("received_per_fast_subscriber_per_s")
            row(
                "2 fan-out",
                "overload+batch",
                rate=f"{k(r.get('written_per_s'))} written/s",
                per_cpu=f"{k(r.get('queued_per_cpu_s'))} queued",
                cores=cores(r["window"]),
                notes=f"{r['params']['symbols']} hot symbols, {r['params']['throttled_subscribers']}/"
                f"{r['params']['subscribers']} subs slow: {pct(r.get('not_written_share'))} of queued never written "
                f"(conflated; server counter {pct(r.get('conflated_share'))}); each slow sub got {k(slow)}/s, "
                f"fast {k(fast)}/s; {r.get('frames_per_write', '—')} frames/write",
                **noise(r["window"]),
            )

    latr = results.get("latency")
    if latr and not failed("3 latency", latr):
        base = latr.get("baseline", {}).get("deliveries_per_cpu_s")
        for variant in ("tradewire+batch", "tradewire", "baseline"):
            r = latr.get(variant)
            if not r or failed("3 latency", r):
                continue
            share = r["delivered_share"] or 0
            state = "kept up" if share >= 0.95 else "NOT keeping up (latency = queueing)"
            row(
                "3 latency",
                variant,
                rate=f"{k(r['updates_per_s'])} upd/s",
                per_cpu=f"{k(r['deliveries_per_cpu_s'])} dlv",
                cores=cores(r["window"]),
                vs_baseline=ratio(r["deliveries_per_cpu_s"], base) if variant != "baseline" else "1.0x",
                latency=lat(r.get("latency_ms")),
                notes=f"{r['params']['subscribers']} subs; delivered {pct(share)}, {state}; "
                f"{r.get('latency_ms', {}).get('n', 0)} timed",
                **noise(r["window"]),
            )

    dur = results.get("durable")
    if dur and not failed("4 durable", dur):
        for sync in ("FULL", "NORMAL"):
            r = dur.get(sync)
            if not r or failed("4 durable", r):
                continue
            row(
                "4 durable",
                f"sqlite {sync}",
                rate=f"{k(r['events_per_s'])} ev/s",
                per_cpu=f"{k(r['events_per_cpu_s'])} ev",
                cores=cores(r["window"]),
                latency=lat(r["ack_latency_ms"]),
                notes=f"{r['params']['in_flight']} in flight; {r['operations_per_commit']} ops/commit; "
                f"errors {r['errors']}",
                **noise(r["window"]),
            )

    con = results.get("connections")
    if con and not failed("5 connections", con):
        row(
            "5 connections",
            "idle EA",
            rate=f"{con['connected_eas']} conns",
            per_cpu=f"{k(con['ea_connects_per_cpu_s'])} hello",
            notes=f"{con['kib_per_ea']} KiB RSS each; {con['kib_per_connection']} KiB/conn overall; "
            f"failed {con['failed']}",
        )
        row(
            "5 connections",
            "idle subscriber",
            rate=f"{con['connected_subscribers']} conns",
            notes=f"{con['kib_per_subscriber']} KiB RSS each",
        )
    slow = results.get("slow")
    if slow and not failed("7 slow", slow):
        for variant, r in slow.items():
            if not isinstance(r, dict) or failed("7 slow", r):
                continue
            row("7 slow", variant, **slow_row(r), **noise(r["window"]))
    return out


def slow_row(r: dict) -> dict:
    """A slow-consumer variant: healthy latency against the clean run's, server memory, slow connections closed."""
    vs, srv, rss, cl = r.get("vs_clean", {}), r["server"], r["rss_kib"], r.get("slow_clients") or {}
    ratios = "/".join(f"{vs[q]:.2f}" for q in ("p50", "p99", "p99.9")) if vs else "—"
    mib = "→".join(f"{rss[at] / 1024:.1f}" for at in ("t0", "t1"))
    kinds = ("stalled", "trickle", "storm", "steady")
    misbehaving = ", ".join(f"{r['params'][kind]} {kind}" for kind in kinds if r["params"][kind]) or "nothing slow"
    prm = r["params"]
    notes = f"{prm['subscribers']} healthy subs + {misbehaving}; {prm.get('timed_subscribers', prm['subscribers'])} "
    notes += f"timed ({prm.get('timed_priority') or 'normal'} priority), {pct(r['timed_share'])} of probes; "
    notes += f"p50/p99/p99.9 x{ratios} of clean on the same server; server CPU x{vs.get('server_cpu', 0):.2f}, "
    notes += f"per healthy delivery x{vs.get('cpu_per_delivery', 0):.2f}; "
    notes += f"RSS {mib} MiB (peak {rss['peak'] / 1024:.1f}); closed 4008: {srv['closed_slow_window']:.0f} in window "
    notes += f"({srv['closed_slow_total']:.0f} in all)"
    fan = srv.get("fanout_latency_ms", {})
    if fan.get("n"):
        notes += f"; queued→written in the server p50/p99 ≤ {ms(fan['p50_le'])}/{ms(fan['p99_le'])} ms"
    if cl.get("storm_cycles"):
        notes += f"; storm {k(cl['storm_cycles'] / r['window']['wall_s'])} connects/s, subscribed in "
        notes += f"{cl['storm_subscribe_ms_p50']}/{cl['storm_subscribe_ms_p99']} ms p50/p99, "
        notes += f"{cl['storm_connected_mean']} connected on average"
        rate, burst = r["params"]["connect_rate"]
        notes += f", over {r['params']['storm_keys']} key(s); the hub's connect rate ({rate:g}/s per key after "
        notes += f"{burst}) refused {k(cl['storm_refused'] / r['window']['wall_s'])} connects/s"
    if r.get("vs_steady"):
        vs_steady = r["vs_steady"]
        notes += f"; p50/p99 x{vs_steady['p50']:.2f}/{vs_steady['p99']:.2f} of steady (the same load, staying)"
    if cl.get("lost_total") is not None and (r["params"]["stalled"] or r["params"]["trickle"]):
        notes += f"; clients saw {cl['lost_total']} drops (in the window: {cl['lost_in_window'] or 'none'})"
    windows = r.get("mark_windows_pooled") or r.get("mark_windows") or {}
    for name, w in windows.items():
        if w.get("on_vs_off"):
            notes += f"; p50/p99 of probes within {w['window_ms']:g} ms after a slow client's {name} "
            notes += (
                f"({pct(w['share'])} of them) x{w['on_vs_off']['p50']:.2f}/{w['on_vs_off']['p99']:.2f} of the others'"
            )
    if cl.get("errors"):
        notes += f"; client errors {cl['errors']}: {cl['error_sample'][:1]}"
    if r.get("rounds") and r.get("vs_clean_pooled"):
        pooled = r["vs_clean_pooled"]
        notes += f"; all {len(r['rounds'])} rounds pooled: p50/p99/p99.9 x{pooled['p50']:.2f}/{pooled['p99']:.2f}/"
        notes += f"{pooled['p99.9']:.2f} of clean's ({ms(r['latency_pooled_ms']['p99'])} ms p99)"
    if r.get("vs_clean_rounds") and len(r["vs_clean_rounds"]) > 1:
        paired = "/".join(f"{x:.2f}" for x in r["vs_clean_rounds"])
        notes += f"; p99 against the same server's clean, round by round: x{paired}"
    if r.get("rounds"):
        p99s = "/".join("FAILED" if "error" in x else ms(x["latency_ms"].get("p99", 0.0)) for x in r["rounds"])
        notes += f"; median of {len(r['rounds'])} rounds (p99 of each: {p99s} ms)"
    return {
        "rate": f"{k(r['updates_per_s'])} upd/s",
        "per_cpu": f"{k(r['deliveries_per_cpu_s'])} dlv",
        "cores": cores(r["window"]),
        "vs_baseline": f"p99 {vs['p99']:.2f}x" if vs else "—",
        "latency": lat(r.get("latency_ms")),
        "notes": notes,
    }


def print_table(table: list[dict], meta: dict, elapsed: float) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        for r in table:
            print(" | ".join(str(v) for v in r.values()))
        return
    t = Table(
        title=f"tradewire bench ({meta['profile']}) · {meta['machine']['cpu']} · {meta['machine']['cores']} cores · "
        f"{elapsed:.0f}s",
        caption="Per server CPU-s: counts per second of the server's own CPU time (/proc/PID/stat). Load / other: "
        "cores used by the load processes / by everything else on the machine in the window. CPU wait: "
        "thread-seconds per second runnable but waiting for a CPU (/proc/*/task/*/schedstat). See bench/README.md.",
    )
    for col, opts in (
        ("Scenario", {}),
        ("Variant", {}),
        ("Rate (wall)", {"justify": "right"}),
        ("Per server CPU-s", {"justify": "right"}),
        ("Server cores", {"justify": "right"}),
        ("vs baseline", {"justify": "right"}),
        ("Load/other cores", {"justify": "right"}),
        ("CPU wait srv/load", {"justify": "right"}),
        ("p50/p99/p99.9 ms", {"justify": "right"}),
        ("Notes", {"overflow": "fold"}),
    ):
        t.add_column(col, **opts)
    keys = ("scenario", "variant", "rate", "per_cpu", "cores", "vs_baseline", "others", "wait", "latency", "notes")
    for r in table:
        t.add_row(*(r[key] for key in keys))
    Console(width=max(200, int(os.environ.get("COLUMNS", "0") or 0))).print(t)


# --- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import scenarios as sc

    profile = sc.QUICK if args.quick else sc.FULL
    if args.slow_rounds:
        profile = dataclasses.replace(profile, slow_rounds=args.slow_rounds)
    if args.slow_subs:
        profile = dataclasses.replace(profile, slow_subs=args.slow_subs)
    if args.slow_rate:
        profile = dataclasses.replace(profile, slow_rate=args.slow_rate)
    if args.slow_backlog:
        profile = dataclasses.replace(profile, slow_backlog_bytes=args.slow_backlog * 1024)
    if args.slow_variant_set:
        profile = dataclasses.replace(profile, slow_variants=args.slow_variant_set)
    if args.slow_blocks:
        profile = dataclasses.replace(profile, slow_blocks_s=args.slow_blocks)
    server_cpus, load_cpus = sc.cpu_split(not args.no_pin)
    if load_cpus:
        # This process scrapes metrics and samples the server's RSS during every window: on the load's CPUs
        # it takes nothing from the server's core.
        os.sched_setaffinity(0, load_cpus)
    root = sc.make_root()
    bench = sc.Bench(profile, root, server_cpus, load_cpus, src=sc.freeze_src(root))
    if args.slow_against:
        from bench.connect_cost import source_of

        bench.against = (args.slow_against, source_of(args.slow_against, root / "against"))
    meta = {
        "profile": profile.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": sc.asdict(profile),
        "machine": machine(server_cpus, load_cpus, root),
        "split": f"server pinned to CPU {server_cpus}, load processes to CPU(s) {load_cpus}"
        if server_cpus
        else "no pinning",
    }
    only = args.only_set
    baseline_only = only == {"baseline"}
    with_baseline = not args.no_baseline
    selected = [s for s in SCENARIOS if not only or s in only or (baseline_only and s in ("fanout", "latency"))]
    print(f"tradewire bench: {profile.name}, {meta['split']}, scenarios: {', '.join(selected)}", flush=True)

    if args.profile:
        sc.PROFILE["dir"] = args.profile
        sc.PROFILE["with"] = args.profiler
    started = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        for i, name in enumerate(selected, 1):
            print(f"[{i}/{len(selected)}] {name} ...", flush=True)
            if name == "ingest":
                results[name] = sc.run_scenario(name, bench.ingest)
            elif name == "fanout":
                results[name] = sc.run_scenario(name, bench.fanout, not baseline_only, with_baseline)
            elif name == "latency":
                results[name] = sc.run_scenario(name, bench.latency, not baseline_only, with_baseline)
            elif name == "durable":
                results[name] = sc.run_scenario(name, bench.durable)
            elif name == "connections":
                results[name] = sc.run_scenario(name, bench.connections)
            elif name == "slow":
                results[name] = sc.run_scenario(name, bench.slow)
            print(f"    {name}: {results[name]['elapsed_s']}s", flush=True)
    finally:
        if not args.keep:
            sc.remove_root(root)
        else:
            print(f"work directories kept in {root}")
    elapsed = time.perf_counter() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["machine"]["loadavg_at_end"] = _read("/proc/loadavg").split()[:3]
    # Every server ran a copy of src/ taken at the start (freeze_src): `commit` and `tree_dirty` describe it.
    # A commit made during the run changed nothing the servers ran; said, as the JSON is read later.
    ran = meta["machine"]
    ran["commit_at_end"] = _git("rev-parse", "--short", "HEAD")
    if ran["commit_at_end"] != ran["commit"]:
        print(
            f"note: HEAD moved during the run ({ran['commit']} -> {ran['commit_at_end']}); every server ran "
            f"src/ as it was at the start"
        )
    table = rows(results)
    print_table(table, meta, elapsed)
    others = [r["window"]["other_cores"] for s in results.values() for r in _windows(s)]
    if others:
        print(
            f"Other processes on this machine used {sum(others) / len(others):.2f} cores on average during the "
            f"windows (max {max(others):.2f}): figures from a shared machine are noisy."
        )
    if args.profile:
        print_profiles(Path(args.profile))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_profiles(folder: Path) -> None:
    from bench.scenarios import top_functions

    for raw in sorted(folder.glob("*.txt")):
        top = top_functions(raw)
        if not top:
            continue
        print(f"\npy-spy {raw.name}: self% incl% function")
        for func, own, incl in top:
            print(f"  {100 * own:5.1f} {100 * incl:5.1f}  {func}")


def _windows(res: dict) -> list[dict]:
    """Every measured run inside a scenario's result (they nest one level for variants)."""
    if "window" in res:
        return [res]
    return [v for v in res.values() if isinstance(v, dict) and "window" in v]


if __name__ == "__main__":
    sys.exit(main())
