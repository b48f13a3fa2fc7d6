"""Channel names of the `trading` namespace (DESIGN.md §6)."""

from __future__ import annotations

import re

NAMESPACE = "trading"
_NOT_SLUG = re.compile(r"[^A-Za-z0-9]+")


def symbol_slug(symbol: str) -> str:
    """A symbol as a channel segment: every run of other characters becomes '-' (EURUSD.m -> EURUSD-m)."""
    return _NOT_SLUG.sub("-", symbol).strip("-")[:50] or "unknown"


def accounts(account: str) -> str:
    return f"/{NAMESPACE}/accounts/{account}"


def positions(account: str) -> str:
    return f"/{NAMESPACE}/positions/{account}"


def prices(symbol: str) -> str:
    return f"/{NAMESPACE}/prices/{symbol_slug(symbol)}"


def exposure() -> str:
    return f"/{NAMESPACE}/exposure"


def events(account: str) -> str:
    return f"/{NAMESPACE}/events/{account}"


def alerts(account: str) -> str:
    return f"/{NAMESPACE}/alerts/{account}"
