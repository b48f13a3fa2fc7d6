"""The server under test, in its own process: start it, read its CPU time and memory from /proc, scrape it, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"listening on (\S+)")

# The hub's own limits, told through its config file: per-account message rate, connections per address and
# connects per credential are policies with production defaults (2,000 messages/s per account, 1,000
# connections per address, 5 connects/s per key after 100) that a benchmark from one address, with one key
# for thousands of subscribers, must lift; the code paths that enforce them still run. Scenario 7 puts the
# connect rate back to show what it does to a reconnect storm.
BENCH_CONFIG = """\
[limits]
max_connections = {max_connections}
max_connections_per_ip = {max_connections}
ea_messages_per_s = 1e9
ea_burst = 1000000000
connects_per_s = {connects_per_s}
connect_burst = {connect_burst}
"""
LIFTED_CONNECT_RATE = (1e9, 1_000_000_000)


def _child_setup(cpus: list[int] | None) -> Callable[[], None]:
    def setup() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class ServerProcess:
    """`kind` is "tradewire" (`tradewire serve`) or "baseline" (bench/baseline/app.py)."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        store_url: str,
        *,
        cpus: list[int] | None = None,
        max_connections: int = 50_000,
        name: str = "",
        extra_config: str = "",
        connect_rate: tuple[float, int] = LIFTED_CONNECT_RATE,
        src: Path | None = None,
    ) -> None:
        self.kind = kind
        self.workdir = workdir
        self.store_url = store_url
        self.cpus = cpus
        self.max_connections = max_connections
        self.extra_config = extra_config  # more TOML sections for tradewire's config file
        self.connect_rate = connect_rate  # [limits] connects_per_s, connect_burst
        self.src = src  # another tradewire source tree to run (an A/B against an earlier commit), else this one
        self.keys: list[str] = []  # read keys issued for it, when the bench issued them
        self.name = name or kind
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.log_path = workdir / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if self.kind == "tradewire":
            config = self.workdir / f"{self.name}.toml"
            rate, burst = self.connect_rate
            limits = BENCH_CONFIG.format(max_connections=self.max_connections, connects_per_s=rate, connect_burst=burst)
            config.write_text(limits + self.extra_config)
            argv = [sys.executable, "-m", "tradewire.cli", "serve", "--config", str(config)]
            argv += ["--host", self.host, "--port", "0", "--store", self.store_url]
        else:
            argv = [sys.executable, "-m", "bench.baseline.app", "--host", self.host, "--port", "0"]
            argv += ["--store", self.store_url]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parent.parent)
        if self.src is not None:  # ahead of the editable install's path entry: its `tradewire` is imported
            root = str(self.src) + os.pathsep + root
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_child_setup(self.cpus),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = LISTENING.search(text)
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {text[-2000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not report `listening on` within {timeout:.0f}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread), from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def runq_wait_seconds(self) -> float:
        """Time the server's threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat): how
        much other processes on the machine held it back."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def metrics(self, key: str, timeout: float = 10.0) -> dict[str, float]:
        """The server's Prometheus counters and gauges (unlabelled samples only), histogram buckets (keyed
        `name_bucket{le="0.001"}`: cumulative counts), labelled histograms' sums and counts (keyed
        `name_sum{generation="2"}`) and labelled counters (`python_gc_collections_total{generation="0"}`)."""
        req = urllib.request.Request(self.url + "/api/v1/metrics", headers={"x-api-key": key})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            labelled_kept = '_bucket{le="' in line or line.partition("{")[0].endswith(("_sum", "_count", "_total"))
            if "{" in line and not labelled_kept:
                continue
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; idle and iowait excluded), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def issue_credentials(store_url: str, accounts: list[str], read_keys: int = 1) -> tuple[list[str], list[str]]:
    """EA tokens (one per account) and read API keys, through tradewire's own store API.

    The same as `tradewire token issue --account ID` / `tradewire key issue --role read` in a loop, but
    in one process: the store's group commit turns 10,000 of them into a handful of transactions."""
    from tradewire.store import make_store

    async def issue() -> tuple[list[str], list[str]]:
        store = make_store(store_url)
        await store.open()
        try:
            tokens = await asyncio.gather(*(store.add_token(a, "bench") for a in accounts))
            keys = await asyncio.gather(*(store.add_api_key("read", "bench") for _ in range(read_keys)))
        finally:
            await store.close()
        return [t for t, _ in tokens], [k for k, _ in keys]

    return asyncio.run(issue())
