"""`tradewire agent`: stream an MT5 terminal to a hub with the official MetaTrader5 package.

`main(argv)` runs it on its own; `add_arguments` + `run_from_args` let the `tradewire` command
register it as a sub-command. Exit codes: 0 stopped by Ctrl-C, 2 cannot run (MetaTrader5 package
missing, terminal not reachable, bad arguments), 3 the hub refused the token.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from typing import Any

from tradewire.agent.runner import AgentError, load_mt5, run_agent, ws_url
from tradewire.logs import setup_logging

TOKEN_ENV = "TRADEWIRE_EA_TOKEN"
PASSWORD_ENV = "TRADEWIRE_MT5_PASSWORD"


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):  # nan slips past `<= 0`; an infinite --interval never polls again
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be above 0")
    return number


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="hub base URL, e.g. https://hub.example.com (or its wss:// URL)")
    p.add_argument("--token", help=f"the account's EA token (default: env {TOKEN_ENV})")
    p.add_argument("--terminal-path", metavar="P", help="terminal64.exe to attach to (default: the running one)")
    p.add_argument("--login", type=int, metavar="L", help="log the terminal in to this account")
    p.add_argument("--password", metavar="P", help=f"account password (default: env {PASSWORD_ENV})")
    p.add_argument("--server", metavar="S", help="trade server of --login, e.g. ICMarketsSC-Live07")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="S", help="poll every S seconds (1)")
    p.add_argument(
        "--symbols", nargs="*", default=[], metavar="SYMBOL", help="stream ticks for these symbols (space or comma)"
    )
    p.add_argument("--outbox", metavar="FILE", help="outbox file (default ~/.tradewire/agent-<login>.json)")
    p.add_argument("--tz-offset-sec", type=int, metavar="N", help="broker time - UTC in seconds (default: detect)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradewire agent",
        description="Stream a MetaTrader 5 terminal to a tradewire hub (EA protocol v1) with the MetaTrader5 package.",
    )
    add_arguments(parser)
    return parser


def _symbols(values: list[str]) -> tuple[str, ...]:
    return tuple(s for v in values for s in (part.strip() for part in v.split(",")) if s)


def run_from_args(args: argparse.Namespace, *, mt5: Any = None) -> int:
    """Run the agent until Ctrl-C. `mt5` replaces the MetaTrader5 module (tests, dry runs)."""
    setup_logging("text", args.log_level)
    token = args.token or os.environ.get(TOKEN_ENV, "")
    try:
        ws_url(args.url)
        if not token:
            raise AgentError(
                f"an EA token is needed: --token TOKEN or env {TOKEN_ENV} (issue one on the hub with "
                "`tradewire token issue --account ID`)"
            )
        module = mt5 if mt5 is not None else load_mt5()  # before any I/O: a missing package fails at once
        asyncio.run(
            run_agent(
                args.url,
                token,
                mt5=module,
                terminal_path=args.terminal_path,
                login=args.login,
                password=args.password or os.environ.get(PASSWORD_ENV) or None,
                server=args.server,
                interval=args.interval,
                symbols=_symbols(args.symbols),
                outbox=args.outbox,
                tz_offset_sec=args.tz_offset_sec,
            )
        )
    except AgentError as exc:
        print(f"tradewire agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None, *, mt5: Any = None) -> int:
    return run_from_args(build_parser().parse_args(argv), mt5=mt5)


if __name__ == "__main__":
    sys.exit(main())
