"""Monthly cost model: AppSync Events, API Gateway WebSocket + Lambda + DynamoDB, and self-hosted tradewire.

Pure arithmetic over a dated price table (`PRICES`); every price can be overridden. What counts as an
AppSync Events "operation" is not fully documented (shared/research/appsync-events.md §6.2): this model
counts one operation per published event and one per delivered event, each up to 5 KB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

DAYS_PER_MONTH = 30
HOURS_PER_MONTH = 730  # what AWS bills an always-on instance for


@dataclass(frozen=True)
class Prices:
    """us-east-1 list prices, USD. `source` says where each came from and how sure it is."""

    as_of: str = "2026-11"
    appsync_per_million_operations: float = 1.00
    appsync_per_million_connection_minutes: float = 0.08
    apigw_per_million_messages: float = 1.00  # first billion; metered in 32 KB increments
    apigw_per_million_connection_minutes: float = 0.25
    lambda_per_million_requests: float = 0.20
    lambda_per_gb_second: float = 0.0000166667
    dynamodb_per_million_writes: float = 0.625  # on-demand write request units (1 KB each)
    dynamodb_per_million_reads: float = 0.125
    instance_per_hour: float = 0.0850  # a 2-vCPU general-purpose on-demand instance, e.g. m7g.large
    source: dict = field(
        default_factory=lambda: {
            "appsync_per_million_operations": "AWS price list: '$1 per million Event API operations' (confirmed)",
            "appsync_per_million_connection_minutes": "third-party summaries, not confirmed on an AWS page",
            "apigw_per_million_messages": "AWS API Gateway pricing page (WebSocket, first 1 billion)",
            "apigw_per_million_connection_minutes": "AWS API Gateway pricing page (WebSocket)",
            "lambda_per_million_requests": "AWS Lambda pricing page (x86, first tier)",
            "lambda_per_gb_second": "AWS Lambda pricing page (x86, first tier)",
            "dynamodb_per_million_writes": "AWS DynamoDB on-demand pricing after the Nov 2024 reduction; check",
            "dynamodb_per_million_reads": "AWS DynamoDB on-demand pricing after the Nov 2024 reduction; check",
            "instance_per_hour": "assumption: a 2-vCPU on-demand instance; override with --instance-per-hour",
        }
    )


PRICES = Prices()


@dataclass(frozen=True)
class Load:
    accounts: int
    updates_per_sec: float  # per account: ticks, account state, positions
    dashboards: int
    hours_per_day: float = 24.0  # how long dashboards are open (EAs stay connected around the clock)
    durable_per_account_per_day: float = 50.0  # position events and alerts (stored, not streamed only)
    lambda_ms: float = 20.0
    lambda_mb: int = 128
    updates_per_core_s: float = 40_000.0  # what one tradewire core ingests and fans out (bench/)
    headroom: float = 2.0  # provision for twice the steady load

    @property
    def updates_per_month(self) -> float:
        return self.accounts * self.updates_per_sec * 3600 * 24 * DAYS_PER_MONTH

    @property
    def dashboard_seconds_per_month(self) -> float:
        return self.dashboards * 3600 * self.hours_per_day * DAYS_PER_MONTH


def appsync_events(load: Load, p: Prices = PRICES) -> dict:
    """The brief's Option 1/2 delivery leg: every update published once, delivered to every open dashboard."""
    published = load.updates_per_month
    share_open = load.hours_per_day / 24
    delivered = published * load.dashboards * share_open
    minutes = load.dashboard_seconds_per_month / 60
    ops_cost = (published + delivered) / 1e6 * p.appsync_per_million_operations
    conn_cost = minutes / 1e6 * p.appsync_per_million_connection_minutes
    return {"operations": published + delivered, "connection_minutes": minutes, "usd": ops_cost + conn_cost}


def apigw_lambda_dynamodb(load: Load, p: Prices = PRICES) -> dict:
    """EAs on API Gateway WebSocket, a Lambda per message, DynamoDB for state (Lambda keeps no memory, so
    every latest-wins update is a state write) and durable events."""
    messages = load.updates_per_month
    ea_minutes = load.accounts * 60 * 24 * DAYS_PER_MONTH
    durable = load.accounts * load.durable_per_account_per_day * DAYS_PER_MONTH
    apigw = messages / 1e6 * p.apigw_per_million_messages + ea_minutes / 1e6 * p.apigw_per_million_connection_minutes
    gb_seconds = messages * load.lambda_ms / 1000 * load.lambda_mb / 1024
    lam = messages / 1e6 * p.lambda_per_million_requests + gb_seconds * p.lambda_per_gb_second
    # One write unit per update: the account item, compressed, is under 1 KB for a typical account
    # (aws/state.py; ~4 KB of JSON, 5 units, uncompressed). Event + idempotency item per durable one.
    writes = messages + 2 * durable
    ddb = writes / 1e6 * p.dynamodb_per_million_writes + messages / 1e6 * p.dynamodb_per_million_reads
    return {
        "messages": messages,
        "usd": apigw + lam + ddb,
        "parts": {"api_gateway": apigw, "lambda": lam, "dynamodb": ddb},
    }


def self_hosted(load: Load, p: Prices = PRICES) -> dict:
    """tradewire on instances sized from the measured per-core rate (2 vCPU each), SQLite on one node or
    PostgreSQL + Redis when more than one is needed (counted as one more instance each)."""
    rate = load.accounts * load.updates_per_sec * (1 + load.dashboards) * load.headroom
    nodes = max(1, math.ceil(rate / (load.updates_per_core_s * 2)))
    instances = nodes + (2 if nodes > 1 else 0)
    return {"nodes": nodes, "instances": instances, "usd": instances * HOURS_PER_MONTH * p.instance_per_hour}


def estimate(load: Load, p: Prices = PRICES) -> dict:
    appsync = appsync_events(load, p)
    serverless = apigw_lambda_dynamodb(load, p)
    return {
        "load": asdict(load) | {"updates_per_month": load.updates_per_month},
        "prices_as_of": p.as_of,
        "appsync_events": appsync,
        "apigw_lambda_dynamodb": serverless,
        "serverless_total_usd": appsync["usd"] + serverless["usd"],
        "self_hosted": self_hosted(load, p),
    }


def brief_check(p: Prices = PRICES) -> dict:
    """The brief's own line: 'message $0.25 per million messages; 1M messages a month: ~$250'."""
    brief_rate = 0.25
    return {
        "brief_says_usd": 250.0,
        "at_the_briefs_own_rate_usd": 1_000_000 / 1e6 * brief_rate,  # $0.25: the ~$250 is off by 1000x
        "at_the_listed_rate_usd": 1_000_000 / 1e6 * p.appsync_per_million_operations,  # $1.00 per million ops
        "note": "1M x $0.25/M is $0.25, not $250; and AppSync Events lists $1.00 per million operations, "
        "with each delivery to a subscriber an operation too, so fan-out multiplies it",
    }


def with_overrides(p: Prices, **overrides: float | None) -> Prices:
    return replace(p, **{k: v for k, v in overrides.items() if v is not None})
