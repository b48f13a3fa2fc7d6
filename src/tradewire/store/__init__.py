"""Durable storage: the Store interface and its engines, chosen by URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tradewire.store.base import Store, StoreError

__all__ = ["Store", "StoreError", "open_store", "parse_store_url"]


def parse_store_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a store URL into (engine, location, options); raise ValueError naming what is wrong."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "sqlite":
        # sqlite:///relative/or/./path.db  and  sqlite:////absolute/path.db
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc:
            raise ValueError(f"store URL {url!r}: write sqlite:///PATH (three slashes), not sqlite://{parts.netloc}")
        if not path or path == ":memory:":
            raise ValueError(f"store URL {url!r}: SQLite needs a file path, e.g. sqlite:///./tradewire.db")
        unknown = set(options) - {"synchronous", "busy_timeout_ms"}
        if unknown:
            raise ValueError(f"store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
        return "sqlite", path, options
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.hostname and not options.get("host"):
            raise ValueError(f"store URL {url!r}: write postgresql://USER@HOST:PORT/DATABASE")
        return "postgresql", url, options
    if parts.scheme == "dynamodb":
        raise ValueError(f"store URL {url!r}: the dynamodb store is not available in this version yet")
    raise ValueError(
        f"store URL {url!r}: unknown scheme {parts.scheme!r}; expected sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def make_store(url: str) -> Store:
    engine, location, options = parse_store_url(url)
    if engine == "postgresql":
        try:
            from tradewire.store.postgres import PostgresStore
        except ImportError:
            raise ValueError("the PostgreSQL store needs asyncpg: pip install 'tradewire[postgres]'") from None

        return PostgresStore(location)
    from tradewire.store.sqlite import SQLiteStore

    try:
        timeout = int(options.get("busy_timeout_ms", "5000"))
    except ValueError:
        raise ValueError(f"store URL {url!r}: busy_timeout_ms must be a whole number of milliseconds") from None
    return SQLiteStore(location, synchronous=options.get("synchronous", "FULL"), busy_timeout_ms=timeout)


async def open_store(url: str) -> Store:
    store = make_store(url)
    await store.open()
    return store
