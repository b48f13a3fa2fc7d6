"""Store engines for the contract suite: each one real (a SQLite file, a PostgreSQL schema, DynamoDB
tables on a DynamoDB-compatible server run as a process of its own)."""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tradewire.store import make_store
from tradewire.store.base import Store

PG_URL = os.environ.get("TRADEWIRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRADEWIRE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def drop_pg_schema(schema: str) -> None:
    """Drop a test's PostgreSQL schema, whatever it holds."""
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


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


def skip_or_fail(message: str) -> None:
    if os.environ.get("TRADEWIRE_REQUIRE_SERVICES"):
        pytest.fail(f"{message} and TRADEWIRE_REQUIRE_SERVICES is set")
    pytest.skip(message)


# --- DynamoDB: moto's server mode, started once per test session ----------------------------------
DYNAMODB_URL = os.environ.get("TRADEWIRE_TEST_DYNAMODB")  # an endpoint already running, e.g. DynamoDB Local
DYNAMODB_SERVER = Path(__file__).with_name("dynamodb_server.py")


class DynamoServer:
    """tests/dynamodb_server.py as a subprocess on a free port; it exits when its stdin closes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = DYNAMODB_URL
        self.error: str | None = None

    def start(self) -> str | None:
        if self.endpoint or self.error:
            return self.endpoint
        with tempfile.TemporaryFile() as log:  # the child keeps its own descriptor of it
            self.proc = subprocess.Popen(
                [sys.executable, str(DYNAMODB_SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
            atexit.register(self.stop)
            line = b""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                if select.select([self.proc.stdout], [], [], 0.2)[0]:
                    line = self.proc.stdout.readline()  # type: ignore[union-attr]
                    break
            if line.startswith(b"PORT "):
                port = int(line.split()[1])
                if wait_port("127.0.0.1", port, 10):
                    self.endpoint = f"http://127.0.0.1:{port}"
                    return self.endpoint
            self.stop()
            log.seek(0)
            detail = log.read().decode(errors="replace").strip().splitlines()[-3:]
        self.error = f"the DynamoDB test server (moto) did not start: {' | '.join(detail) or 'no output'}"
        return None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service_up(host, port):
            return True
        time.sleep(0.05)
    return False


DYNAMO = DynamoServer()


def need_aiobotocore() -> None:
    try:
        import aiobotocore  # noqa: F401
    except ImportError:
        skip_or_fail("aiobotocore is not installed (pip install -e '.[test]')")


def need_dynamodb() -> str:
    """The endpoint of the session's DynamoDB-compatible server, started on first use; skip or fail without."""
    need_aiobotocore()
    endpoint = DYNAMO.start()
    if endpoint is None:
        skip_or_fail(DYNAMO.error or "no DynamoDB test server")
    return endpoint  # type: ignore[return-value]


@pytest.fixture(scope="session")
def dynamodb_endpoint():
    """For tests that want the server itself: started once, stopped at the end of the session."""
    yield need_dynamodb()
    DYNAMO.stop()


ENGINES = ["sqlite", "postgresql", "dynamodb"]


class StoreFactory:
    """Opens stores of one engine on the same location, so a test can reopen ('restart') it."""

    def __init__(self, engine: str, tmp_path) -> None:
        self.engine = engine
        self.schema = "tw_" + uuid.uuid4().hex[:12]  # the PostgreSQL schema, or the DynamoDB table prefix
        if engine == "sqlite":
            self.url = f"sqlite:///{tmp_path}/contract.db"
        elif engine == "postgresql":
            self.url = f"{PG_URL}?schema={self.schema}"
        else:
            self.url = f"dynamodb://{self.schema}?region=us-east-1&endpoint={need_dynamodb()}"
        self.opened: list[Store] = []

    async def open(self) -> Store:
        if self.engine == "dynamodb":
            from tradewire.store.dynamodb import DynamoStore

            store: Store = DynamoStore(self.url)
        else:
            store = make_store(self.url)
        await store.open()
        self.opened.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self.opened:
            await store.close()
        if self.engine == "postgresql":
            await drop_pg_schema(self.schema)
        if self.engine == "dynamodb":
            await drop_dynamodb_tables(self.url)


async def drop_dynamodb_tables(url: str) -> None:
    from aiobotocore.session import get_session

    from tradewire.store.dynamodb import split_url

    prefix, region, endpoint = split_url(url)
    async with get_session().create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    ) as client:
        for name in (await client.list_tables(ExclusiveStartTableName=prefix + "-", Limit=100))["TableNames"]:
            if name.startswith(prefix + "-"):
                await client.delete_table(TableName=name)


async def factory_for(engine: str, tmp_path) -> AsyncIterator[StoreFactory]:
    if engine == "postgresql":
        need_service("PostgreSQL", "127.0.0.1", 5432)
    factory = StoreFactory(engine, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


Factory = Callable[[], StoreFactory]
