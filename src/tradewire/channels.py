"""Channel paths: names of the `trading` namespace (DESIGN.md §6), validation and wildcard matching.

A path is 1-5 segments of `[A-Za-z0-9-]` (each 1-50 characters, not starting or ending with '-'),
with or without a leading or trailing '/'. A subscription may end in `/*`, which matches every
deeper level below its prefix (`/trading/*` matches `/trading/prices/EURUSD`), as AppSync Events does.
Paths are normalised to a leading '/' and no trailing '/'.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

NAMESPACE = "trading"
MAX_SEGMENTS = 5
_SEGMENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?")  # fullmatch (not `$`: "\n")
_NOT_SLUG = re.compile(r"[^A-Za-z0-9]+")
_PLAIN_SYMBOL = re.compile(r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*")  # fullmatch: these slugs hold no "--"


class ChannelError(ValueError):
    pass


def normalise(path: str, *, wildcard: bool = False) -> str:
    """A valid channel path in canonical form, or ChannelError saying what is wrong."""
    if not isinstance(path, str) or not path.strip("/"):
        raise ChannelError("channel path is empty")
    inner = path[1:] if path.startswith("/") else path  # at most one '/' each side, as AppSync takes
    inner = inner[:-1] if inner.endswith("/") else inner
    segments = inner.split("/")
    is_wild = segments[-1] == "*"
    if is_wild:
        if not wildcard:
            raise ChannelError(f"channel {path!r}: a wildcard is only allowed when subscribing")
        segments = segments[:-1]
        if not segments:
            raise ChannelError(f"channel {path!r}: a wildcard needs a namespace before it")
    if len(segments) + is_wild > MAX_SEGMENTS:  # the wildcard counts (AppSync's rule: it could match nothing)
        raise ChannelError(f"channel {path!r}: at most {MAX_SEGMENTS} segments, the wildcard included")
    for seg in segments:
        if not _SEGMENT.fullmatch(seg):
            raise ChannelError(
                f"channel {path!r}: segment {seg!r} must be 1-50 characters of A-Z, a-z, 0-9 and '-' "
                "(not starting or ending with '-')"
            )
    return "/" + "/".join(segments) + ("/*" if is_wild else "")


def namespace(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


@lru_cache(maxsize=65536)  # channel names repeat: build their patterns once, not per publication
def prefixes(channel: str) -> tuple[str, ...]:
    """The wildcard patterns that match a channel: /a/b/c -> ['/a/*', '/a/b/*']."""
    segments = channel.strip("/").split("/")
    return tuple("/" + "/".join(segments[:k]) + "/*" for k in range(1, len(segments)))


def matches(pattern: str, channel: str) -> bool:
    if pattern.endswith("/*"):
        return channel.startswith(pattern[:-1])
    return pattern == channel


@lru_cache(maxsize=65536)
def symbol_slug(symbol: str) -> str:
    """A symbol as a channel segment, one per symbol. Letters and digits with single dots between them read as
    they are, the dots as '-' (EURUSD.m -> EURUSD-m). Any other symbol (EURUSD#, #US30, XAU_USD, EURUSD-m,
    longer than 50) gets its readable part, '--' and a hash of the whole (EURUSD# -> EURUSD--1e4a7c): with
    every other character as '-', EURUSD, EURUSD# and #EURUSD shared one channel, its latest value and its
    snapshot, and quotes of different instruments came mixed on it."""
    if len(symbol) <= 50 and _PLAIN_SYMBOL.fullmatch(symbol):
        return symbol.replace(".", "-")
    digest = hashlib.blake2s(symbol.encode(), digest_size=3).hexdigest()
    return f"{(_NOT_SLUG.sub('-', symbol).strip('-')[:42].rstrip('-') or 'symbol')}--{digest}"


def accounts(account: str) -> str:
    return f"/{NAMESPACE}/accounts/{account}"


def positions(account: str) -> str:
    return f"/{NAMESPACE}/positions/{account}"


@lru_cache(maxsize=65536)
def prices(symbol: str) -> str:
    return f"/{NAMESPACE}/prices/{symbol_slug(symbol)}"


def exposure() -> str:
    return f"/{NAMESPACE}/exposure"


def events(account: str) -> str:
    return f"/{NAMESPACE}/events/{account}"


def alerts(account: str) -> str:
    return f"/{NAMESPACE}/alerts/{account}"


DURABLE_KINDS = ("events", "alerts")


def is_durable(channel: str) -> bool:
    parts = channel.strip("/").split("/")
    return len(parts) >= 2 and parts[0] == NAMESPACE and parts[1] in DURABLE_KINDS


def durable_scope(pattern: str) -> list[tuple[str, str | None]]:
    """Which durable histories a subscription covers: [(kind, account or None for all)]."""
    parts = pattern.strip("/").split("/")
    if parts[0] != NAMESPACE:
        return []
    if parts[1:] == ["*"]:
        return [(kind, None) for kind in DURABLE_KINDS]
    if len(parts) == 3 and parts[1] in DURABLE_KINDS:
        return [(parts[1], None if parts[2] == "*" else parts[2])]
    return []
