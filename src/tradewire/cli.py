"""Command line: serve | token | key | simulate | demo | watch | cost | agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import sys
from collections.abc import Coroutine
from typing import Any

from tradewire.config import ConfigError, Settings, load_settings
from tradewire.logs import setup_logging
from tradewire.model import ACCOUNT_ID_RULE, is_account_id
from tradewire.redact import redact_url
from tradewire.store import make_store, parse_store_url
from tradewire.store.base import StoreError

MAX_LABEL_CHARS = 128

log = logging.getLogger("tradewire")


class CliError(Exception):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (TRADEWIRE_<SECTION>_<KEY> env overrides it)")
    p.add_argument("--store", metavar="URL", help="store URL (default sqlite:///./tradewire.db, env TRADEWIRE_STORE)")


def _add_scenario(p: argparse.ArgumentParser) -> None:
    """The simulated fleet's scripted alert: `simulate` and `demo` both run a fleet."""
    p.add_argument(
        "--scenario",
        choices=["margin-call", "stop-out", "disconnect", "error", "stale"],
        help="a few seconds in, make one account raise that alert type: margin-call (margin level held at 80%%), "
        "stop-out (level under 50%% and a stop-out CLOSE), disconnect (leaves for good), error (an EA error "
        "message), stale (its prices freeze)",
    )
    p.add_argument(
        "--scenario-account",
        type=_account_id,
        metavar="ACCOUNT",
        help="the account --scenario scripts (default: the first)",
    )


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0..65535")
    return port


def _positive(kind: type, *, zero: bool = False) -> Any:
    """A flag's number, above 0 (or at least 0 with `zero`): argparse names the flag when it is not."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None
        if not math.isfinite(number):  # nan slips past every comparison; inf overflows what it is used for
            raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
        if number < 0 or (number == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{value} must be {'0 or more' if zero else 'above 0'}")
        return number

    return parse


def _account_id(value: str) -> str:
    if not is_account_id(value):
        raise argparse.ArgumentTypeError(f"{value!r}: an account id is {ACCOUNT_ID_RULE}")
    return value


def _label(value: str) -> str:
    # Shown in `list`, one tab-separated line per credential: a newline or tab would forge rows.
    if len(value) > MAX_LABEL_CHARS or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"a label is at most {MAX_LABEL_CHARS} printable characters (no tabs or newlines)"
        )
    return value


def _credential_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8}", value):
        # Never echoed: it may be the secret itself, pasted where its id belongs.
        raise argparse.ArgumentTypeError("give the credential's id (8 hex digits, as `list` shows), not its secret")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradewire", description="Real-time hub for MetaTrader 4/5 fleets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the hub")
    _add_common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="listen port (default 8080; 0 picks a free one)")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve https/wss directly")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.add_argument("--broker", metavar="URL", help="memory:// (default) or redis://HOST:PORT/DB for several nodes")

    token = sub.add_parser("token", help="EA tokens: each writes one account; stored hashed")
    tsub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    t_issue = tsub.add_parser("issue", help="issue a token for an account and print it (only it) on stdout")
    t_issue.add_argument("--account", required=True, type=_account_id)
    t_issue.add_argument("--label", default="", type=_label)
    t_list = tsub.add_parser("list", help="list tokens (ids, never secrets)")
    t_list.add_argument("--account", type=_account_id)
    t_revoke = tsub.add_parser("revoke", help="revoke a token by its id (see list)")
    t_revoke.add_argument("token_id", type=_credential_id)
    for p in (t_issue, t_list, t_revoke):
        _add_common(p)

    key = sub.add_parser("key", help="API keys for subscribers and the REST API")
    ksub = key.add_subparsers(dest="action", required=True, metavar="ACTION")
    k_issue = ksub.add_parser("issue", help="issue an API key and print it (only it) on stdout")
    k_issue.add_argument("--role", required=True, choices=["read", "admin"])
    k_issue.add_argument("--label", default="", type=_label)
    k_list = ksub.add_parser("list", help="list API keys (ids, never secrets)")
    k_revoke = ksub.add_parser("revoke", help="revoke an API key by its id (see list)")
    k_revoke.add_argument("key_id", type=_credential_id)
    for p in (k_issue, k_list, k_revoke):
        _add_common(p)

    sim = sub.add_parser("simulate", help="run a simulated fleet of EAs against a hub")
    _add_common(sim)
    sim.add_argument("--url", required=True, help="hub base URL, e.g. http://127.0.0.1:8080")
    sim.add_argument("--accounts", type=_positive(int), default=20)
    sim.add_argument("--duration", type=_positive(float), help="seconds to run (default: until Ctrl-C)")
    sim.add_argument("--rate", type=_positive(float), default=2.0, help="updates per second per account")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--issue-tokens", action="store_true", help="issue the fleet's EA tokens in --store")
    sim.add_argument("--tokens", metavar="FILE", help="file of 'account token' lines to use instead")
    sim.add_argument("--quiet", action="store_true", help="no live status line")
    _add_scenario(sim)

    demo = sub.add_parser("demo", help="serve on embedded defaults with a simulated fleet")
    _add_common(demo)
    demo.add_argument("--port", type=_port, help="default: [server] port (8080)")
    demo.add_argument("--accounts", type=_positive(int), default=20)
    demo.add_argument("--rate", type=_positive(float), default=2.0)
    demo.add_argument("--duration", type=_positive(float), help="seconds to run (default: until Ctrl-C)")
    _add_scenario(demo)

    cost = sub.add_parser("cost", help="monthly cost: AppSync Events, API Gateway+Lambda+DynamoDB, self-hosted")
    cost.add_argument("--accounts", type=_positive(int), required=True)
    cost.add_argument("--updates-per-sec", type=_positive(float), required=True, help="per account")
    cost.add_argument(
        "--dashboards", type=_positive(int, zero=True), default=1, help="subscribers receiving everything"
    )
    cost.add_argument("--hours-per-day", type=_positive(float), default=24.0, help="hours dashboards are open")
    cost.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name in (
        "appsync-per-million-operations",
        "appsync-per-million-connection-minutes",
        "apigw-per-million-messages",
        "apigw-per-million-connection-minutes",
        "lambda-per-million-requests",
        "lambda-per-gb-second",
        "dynamodb-per-million-writes",
        "dynamodb-per-million-reads",
        "instance-per-hour",
    ):
        cost.add_argument(f"--{name}", type=_positive(float), metavar="USD", help="override the listed price")

    watch = sub.add_parser("watch", help="print a channel's realtime events, one line each")
    watch.add_argument("channel", help="channel path, e.g. /trading/events/acc-1 or /trading/*")
    watch.add_argument("--url", default="http://127.0.0.1:8080", help="hub base URL (default http://127.0.0.1:8080)")
    watch.add_argument("--key", help="API key, read or admin (default: env TRADEWIRE_API_KEY)")
    watch.add_argument("--since", type=int, metavar="N", help="durable channels: first replay what came after offset N")

    from tradewire.agent.cli import add_arguments as add_agent_arguments

    agent = sub.add_parser("agent", help="stream an MT5 terminal to a hub with the MetaTrader5 package (Windows)")
    add_agent_arguments(agent)
    return parser


def _settings(args: argparse.Namespace, **server: Any) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"server": server}
    if getattr(args, "store", None):
        overrides["store"] = {"url": args.store}
    if getattr(args, "broker", None):
        overrides["broker"] = {"url": args.broker}
    return load_settings(getattr(args, "config", None), overrides=overrides)


def demo_settings(args: argparse.Namespace) -> Settings:
    """The demo's settings: its --port only when given (else the file's, the environment's, or 8080)."""
    return _settings(args, **({"port": args.port} if args.port is not None else {}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, CliError, StoreError, ValueError, OSError) as exc:
        print(f"tradewire: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        settings = _settings(
            args,
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            log_format=args.log_format,
        )
        setup_logging(settings.server.log_format, settings.server.log_level)
        from tradewire.app import Server

        _run(Server(settings).serve_until_signalled())
        return 0
    if args.command in ("token", "key"):
        settings = _settings(args)
        return _run(_credentials(args, settings))
    if args.command == "simulate":
        settings = _settings(args)
        setup_logging(settings.server.log_format, "warning")
        from tradewire.sim.cli import simulate

        return _run(simulate(args, settings))
    if args.command == "demo":
        settings = demo_settings(args)
        setup_logging(settings.server.log_format, "warning")
        from tradewire.sim.cli import demo

        return _run(demo(args, settings))
    if args.command == "watch":
        return _watch(args)
    if args.command == "agent":
        from tradewire.agent.cli import run_from_args

        return run_from_args(args)
    if args.command == "cost":
        from tradewire.cost_report import report

        return report(args)
    raise CliError(f"unknown command {args.command}")


def _watch(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("TRADEWIRE_API_KEY")
    if not key:
        raise CliError("watch needs an API key: --key KEY or the TRADEWIRE_API_KEY environment variable")
    from tradewire.watch import watch

    try:
        return _run(watch(args.url, args.channel, key, since=args.since))
    except KeyboardInterrupt:
        return 0


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _sqlite_missing(url: str) -> str | None:
    """The file of a SQLite store URL when it does not exist (opening it would create an empty store)."""
    engine, location, _ = parse_store_url(url)
    if engine != "sqlite":
        return None
    return None if os.path.exists(location) else os.path.abspath(location)


async def _credentials(args: argparse.Namespace, settings: Settings) -> int:
    missing = _sqlite_missing(settings.store.url)
    if missing and args.action != "issue":
        # Listing or revoking in a store that is not there: the hub uses another one (--store, the config
        # or TRADEWIRE_STORE_URL; a relative path is the working directory's). Not created empty.
        raise CliError(f"no store at {missing}: point --store (or the config) at the hub's store")
    store = make_store(settings.store.url)
    await store.open()
    try:
        if args.command == "token":
            if args.action == "issue":
                token, info = await store.add_token(args.account, args.label)
                print(token)
                others = [t.tokenId for t in await store.list_tokens(args.account) if not t.revokedAt]
                others.remove(info.tokenId)
                _say_where(settings, missing)
                if others:
                    print(
                        f"note: account {args.account} has {len(others)} other active token(s) "
                        f"({', '.join(others)}); they go on writing it until `tradewire token revoke ID`",
                        file=sys.stderr,
                    )
            elif args.action == "list":
                for t in await store.list_tokens(args.account):
                    print(f"{t.tokenId}\t{t.account}\t{_state(t.revokedAt)}\t{t.label}")
            elif not await store.revoke_token(args.token_id):
                raise CliError(f"no active token with id {args.token_id!r}")
        else:
            if args.action == "issue":
                key, _ = await store.add_api_key(args.role, args.label)
                print(key)
                _say_where(settings, missing)
            elif args.action == "list":
                for k in await store.list_api_keys():
                    print(f"{k.keyId}\t{k.role}\t{_state(k.revokedAt)}\t{k.label}")
            elif not await store.revoke_api_key(args.key_id):
                raise CliError(f"no active API key with id {args.key_id!r}")
    finally:
        await store.close()
    return 0


def _say_where(settings: Settings, created: str | None) -> None:
    """On stderr (stdout holds only the secret): which store it went to, so that one issued in another
    working directory's ./tradewire.db than the hub's is seen at once, not as a refused token later."""
    where = f"{created} (a new store)" if created else redact_url(settings.store.url)
    print(f"issued in {where}", file=sys.stderr)


def _state(revoked_at: int | None) -> str:
    return "revoked" if revoked_at else "active"


if __name__ == "__main__":
    sys.exit(main())
