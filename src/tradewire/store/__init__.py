"""Durable storage: the Store interface and its engines, chosen by URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tradewire.redact import redact_url
from tradewire.store.base import Store, StoreError
from tradewire.store.dynamodb_url import split_url as split_dynamodb_url

__all__ = ["Store", "StoreError", "open_store", "parse_store_url"]


def parse_store_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a store URL into (engine, location, options); raise ValueError naming what is wrong."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "sqlite":
        # sqlite:///relative/or/./path.db  and  sqlite:////absolute/path.db
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc:
            raise ValueError(
                f"store URL {redact_url(url)!r}: write sqlite:///PATH (three slashes), not sqlite://{parts.netloc}"
            )
        if not path or path == ":memory:":
            raise ValueError(f"store URL {redact_url(url)!r}: SQLite needs a file path, e.g. sqlite:///./tradewire.db")
        unknown = set(options) - {"synchronous", "busy_timeout_ms"}
        if unknown:
            raise ValueError(f"store URL {redact_url(url)!r}: unknown option(s) {', '.join(sorted(unknown))}")
        return "sqlite", path, options
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.hostname and not options.get("host"):
            raise ValueError(f"store URL {redact_url(url)!r}: write postgresql://USER@HOST:PORT/DATABASE")
        return "postgresql", url, options
    if parts.scheme == "dynamodb":
        # dynamodb://TABLE_PREFIX?region=REGION&endpoint=URL (tables PREFIX-state, -events, -alerts, -trades)
        split_dynamodb_url(url)  # ValueError naming what is wrong
        return "dynamodb", url, options
    raise ValueError(
        f"store URL {redact_url(url)!r}: unknown scheme {parts.scheme!r}; expected sqlite:///PATH, postgresql://USER@HOST/DB"
        " or dynamodb://TABLE_PREFIX?region=REGION"
    )


def make_store(url: str) -> Store:
    engine, location, options = parse_store_url(url)
    if engine == "postgresql":
        try:
            from tradewire.store.postgres import PostgresStore
        except ImportError:
            raise ValueError("the PostgreSQL store needs asyncpg: pip install 'tradewire[postgres]'") from None

        return PostgresStore(location)
    if engine == "dynamodb":
        try:
            from tradewire.store.dynamodb import DynamoStore
        except ImportError:
            raise ValueError("the DynamoDB store needs aiobotocore: pip install 'tradewire[dynamodb]'") from None

        return DynamoStore(location)
    from tradewire.store.sqlite import SQLiteStore

    try:
        timeout = int(options.get("busy_timeout_ms", "5000"))
    except ValueError:
        raise ValueError(
            f"store URL {redact_url(url)!r}: busy_timeout_ms must be a whole number of milliseconds"
        ) from None
    return SQLiteStore(location, synchronous=options.get("synchronous", "FULL"), busy_timeout_ms=timeout)


async def open_store(url: str) -> Store:
    store = make_store(url)
    await store.open()
    return store
