"""Store engines for the contract suite: each one real (a SQLite file, a PostgreSQL schema)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tradewire.store import make_store
from tradewire.store.base import Store

PG_URL = os.environ.get("TRADEWIRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRADEWIRE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip when a backend's service is absent, unless CI requires every backend to run."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("TRADEWIRE_REQUIRE_SERVICES"):
        pytest.fail(f"{message} and TRADEWIRE_REQUIRE_SERVICES is set (.ci/run starts it)")
    pytest.skip(message)


ENGINES = ["sqlite", "postgresql"]


class StoreFactory:
    """Opens stores of one engine on the same location, so a test can reopen ('restart') it."""

    def __init__(self, engine: str, tmp_path) -> None:
        self.engine = engine
        self.schema = "tw_" + uuid.uuid4().hex[:12]
        self.url = f"sqlite:///{tmp_path}/contract.db" if engine == "sqlite" else f"{PG_URL}?schema={self.schema}"
        self.opened: list[Store] = []

    async def open(self) -> Store:
        store = make_store(self.url)
        await store.open()
        self.opened.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self.opened:
            await store.close()
        if self.engine == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()


async def factory_for(engine: str, tmp_path) -> AsyncIterator[StoreFactory]:
    if engine == "postgresql":
        need_service("PostgreSQL", "127.0.0.1", 5432)
    factory = StoreFactory(engine, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


Factory = Callable[[], StoreFactory]
