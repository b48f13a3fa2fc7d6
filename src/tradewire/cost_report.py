"""`tradewire cost`: the cost model as a table (rich) or JSON."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from tradewire import cost

PRICE_FIELDS = [f for f in cost.Prices.__dataclass_fields__ if f not in ("as_of", "source")]


def report(args: argparse.Namespace) -> int:
    overrides = {f: getattr(args, f, None) for f in PRICE_FIELDS}
    prices = cost.with_overrides(cost.PRICES, **overrides)
    load = cost.Load(args.accounts, args.updates_per_sec, args.dashboards, args.hours_per_day)
    overridden = {f for f, v in overrides.items() if v is not None}
    result = cost.estimate(load, prices) | {
        "brief_check": cost.brief_check(prices),
        "prices": _prices(prices, overridden),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"Monthly cost, USD (prices as of {prices.as_of}, us-east-1)")
    table.add_column("architecture")
    table.add_column("what is metered")
    table.add_column("USD / month", justify="right")
    a, s, h = result["appsync_events"], result["apigw_lambda_dynamodb"], result["self_hosted"]
    table.add_row(
        "AppSync Events (delivery)",
        f"{a['operations']:,.0f} operations, {a['connection_minutes']:,.0f} connection-minutes",
        f"{a['usd']:,.2f}",
    )
    for part, usd in s["parts"].items():
        table.add_row(f"  {part.replace('_', ' ')}", f"{s['messages']:,.0f} EA messages", f"{usd:,.2f}")
    table.add_row("Serverless total", "", f"{result['serverless_total_usd']:,.2f}")
    table.add_row("Self-hosted tradewire", f"{h['nodes']} node(s), {h['instances']} instance(s)", f"{h['usd']:,.2f}")
    console = Console()
    console.print(table)
    b = result["brief_check"]
    console.print(
        f"The brief: 1M messages ~${b['brief_says_usd']:.0f}; at its own $0.25/M that is "
        f"${b['at_the_briefs_own_rate_usd']:.2f}, at the listed $1/M ${b['at_the_listed_rate_usd']:.2f}."
    )
    return 0


def _prices(p: cost.Prices, overridden: set[str]) -> dict:
    return {
        f: {"usd": getattr(p, f), "source": "--" + f.replace("_", "-") if f in overridden else p.source[f]}
        for f in PRICE_FIELDS
    }
