"""`tradewire simulate` (a fleet against a running hub) and `tradewire demo` (hub and fleet in one process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.text import Text

from tradewire.cli import CliError
from tradewire.config import Settings
from tradewire.model import ACCOUNT_ID_RULE, is_account_id
from tradewire.redact import redact_url
from tradewire.sim.account import DEFAULT_SYSTEM_MAGIC
from tradewire.sim.fleet import FleetStats, run_fleet, ws_url
from tradewire.store import make_store

NO_TOKENS = (
    "simulate needs an EA token for every account: pass --issue-tokens to issue them in the hub's store "
    "(give the hub's --store URL), or --tokens FILE with one 'account token' line per account"
)


def fleet_ids(count: int) -> list[str]:
    return [f"sim-{i:03d}" for i in range(1, count + 1)]


# --- tokens -------------------------------------------------------------------------------------
def read_tokens(path: str) -> list[tuple[str, str]]:
    """Lines of 'account token'; blank lines and '#' comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read --tokens file {path}: {exc.strerror or exc}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2 or not is_account_id(parts[0]):
            raise CliError(f"{path}:{number}: expected 'account token', the account id {ACCOUNT_ID_RULE}")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise CliError(f"--tokens file {path} holds no 'account token' lines")
    return pairs


async def issue_tokens(settings: Settings, accounts: list[str]) -> list[tuple[str, str]]:
    store = make_store(settings.store.url)
    await store.open()
    try:
        return [(account, (await store.add_token(account, "simulate"))[0]) for account in accounts]
    finally:
        await store.close()


async def fleet_tokens(args: argparse.Namespace, settings: Settings) -> list[tuple[str, str]]:
    if args.tokens and args.issue_tokens:
        raise CliError("pass either --tokens FILE or --issue-tokens, not both")
    if args.tokens:
        return read_tokens(args.tokens)[: args.accounts]  # the file names the fleet; --accounts caps it
    if args.issue_tokens:
        return await issue_tokens(settings, fleet_ids(args.accounts))
    raise CliError(NO_TOKENS)


# --- terminal -----------------------------------------------------------------------------------
class StatusLine:
    """A one-line live status on stderr (rich), fed by the fleet's stats callback."""

    def __init__(self, enabled: bool) -> None:
        self.console = Console(stderr=True)
        self.live = Live(Text("starting fleet..."), console=self.console, refresh_per_second=4, transient=True)
        self.enabled = enabled
        self._last = (time.monotonic(), 0)

    def __enter__(self) -> StatusLine:
        if self.enabled:
            self.live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self.live.stop()

    def update(self, stats: FleetStats) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        then, sent = self._last
        rate = (stats.messages - sent) / (now - then) if now > then else 0.0
        self._last = (now, stats.messages)
        line = (
            f"{stats.live}/{stats.accounts} accounts live | {rate:,.0f} msg/s | "
            f"durable {stats.durable_acked:,}/{stats.durable_sent:,} acked | {stats.errors} errors | "
            f"{stats.reconnects} reconnects | {stats.elapsed:,.0f}s"
        )
        self.live.update(Text(line + (f" | {stats.refused} refused" if stats.refused else "")))


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM end the run cleanly (sockets closed, summary printed) instead of a traceback."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# --- simulate -----------------------------------------------------------------------------------
async def check_hub(url: str) -> None:
    """Fail fast with a clear message when the hub is not there, rather than 20 accounts retrying."""
    try:
        ws_url(url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url.rstrip("/") + "/api/v1/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CliError(f"cannot reach the hub at {url}: {exc or type(exc).__name__}") from None


def scenario_account(args: argparse.Namespace, tokens: list[tuple[str, str]]) -> str | None:
    """The account `--scenario` scripts: `--scenario-account`, which must be in the fleet, or the first one."""
    chosen = getattr(args, "scenario_account", None)
    if not getattr(args, "scenario", None):
        if chosen:
            raise CliError("--scenario-account needs --scenario")
        return None
    fleet = [account for account, _ in tokens]
    if chosen is None:
        return fleet[0]
    if chosen not in fleet:
        raise CliError(f"--scenario-account {chosen} is not in the simulated fleet ({fleet[0]} .. {fleet[-1]})")
    return chosen


async def simulate(args: argparse.Namespace, settings: Settings) -> int:
    tokens = await fleet_tokens(args, settings)
    target = scenario_account(args, tokens)
    await check_hub(args.url)
    stop = asyncio.Event()
    with stop_on_signals(stop), StatusLine(enabled=not args.quiet) as status:
        stats = await run_fleet(
            args.url,
            tokens,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed,
            stop=stop,
            system_magics=settings.system.magic_numbers,
            on_stats=status.update,
            scenario=getattr(args, "scenario", None),
            scenario_account=target,
        )
    print(f"simulate: {stats.summary()}", flush=True)
    if stats.refused == len(tokens):
        print(
            "tradewire: error: the hub refused every token; issue them in the store the hub uses (--store)",
            file=sys.stderr,
        )
        return 1
    return 0


# --- demo ---------------------------------------------------------------------------------------
def banner(url: str, key: str, settings: Settings, accounts: int, duration: float | None) -> str:
    until = f"for {duration:g}s" if duration else "until Ctrl-C"
    api = f"{url}/api/v1"
    store_url, magics = redact_url(settings.store.url), settings.system.magic_numbers  # never print a password
    return "\n".join(
        [
            f"tradewire demo: hub on {url} (store {store_url}), {accounts} simulated EAs {until}",
            f"  EA ingest     {ws_url(url)}  |  POST {url}/ea/v1/batch",
            f"  REST API      {api}/accounts  {api}/positions  {api}/prices  {api}/exposure",
            f"                {api}/events  {api}/system-trades  {api}/alerts",
            f"  system magic  {', '.join(map(str, magics))} (trades with it are recorded as system trades)",
            f"  admin API key {key}",
            f"  dashboard     {url}/#key={key}",
            f"  try           curl -H 'x-api-key: {key}' {api}/accounts",
            "  (the demo's key and EA tokens are revoked when it stops)",
        ]
    )


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    from tradewire.app import Server

    if not settings.system.magic_numbers:
        # Let the demo show system trades: the hub must know the magic number the fleet's hedge trades use.
        settings.system.magic_numbers = [DEFAULT_SYSTEM_MAGIC]
    server = Server(settings)
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"{exc} (is another hub running? pick another port with --port)") from None
    issued_keys: list[str] = []
    issued_tokens: list[str] = []
    try:
        key, key_info = await server.store.add_api_key("admin", "demo")
        issued_keys.append(key_info.keyId)
        tokens = []
        for account in fleet_ids(args.accounts):
            token, token_info = await server.store.add_token(account, "demo")
            issued_tokens.append(token_info.tokenId)
            tokens.append((account, token))
        print(banner(server.url, key, settings, len(tokens), args.duration), flush=True)
        stop = asyncio.Event()
        status = StatusLine(enabled=Console(stderr=True).is_terminal)
        with stop_on_signals(stop), status:
            stats = await run_fleet(
                server.url,
                tokens,
                rate=args.rate,
                duration=args.duration,
                seed=getattr(args, "seed", 1),
                stop=stop,
                system_magics=settings.system.magic_numbers,
                on_stats=status.update,
                scenario=args.scenario,
                scenario_account=scenario_account(args, tokens),
            )
        print(f"demo: {stats.summary()}", flush=True)
    finally:
        # The demo's store is the default one `serve` uses too: its admin key (printed, in the dashboard
        # link) and the fleet's tokens must not outlive it there as live credentials.
        for revoke, ids in ((server.store.revoke_api_key, issued_keys), (server.store.revoke_token, issued_tokens)):
            for credential_id in ids:
                with contextlib.suppress(Exception):  # each apart: one failing leaves the others to go
                    await revoke(credential_id)
        await server.stop()
    return 0
