"""The PostgreSQL store when its server goes silent: a TCP proxy in front of the real one that stops passing
anything on, as a failover can leave an old address (packets dropped, no reset)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from test_store_contract import op
from tradewire.store.base import StoreError
from tradewire.store.postgres import PostgresStore, command_timeout

from stores import PG_URL, drop_pg_schema, need_service


class SilentProxy:
    """Forwards to PostgreSQL until `silent`; then holds every byte either way, and the connections open."""

    def __init__(self) -> None:
        self.silent = False
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            while self.silent:
                await asyncio.sleep(0.05)
            dst.write(data)
            await dst.drain()

    async def close(self) -> None:
        self.silent = False
        for w in self.writers:
            w.close()
        self.server.close()


def test_the_timeout_option_is_read_and_checked():
    assert command_timeout("postgresql://h/db") == 30.0
    assert command_timeout("postgresql://h/db?schema=x&timeout_s=2.5") == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="timeout_s"):
            command_timeout(f"postgresql://h/db?timeout_s={bad}")


async def test_a_silent_server_fails_commits_within_the_timeout_and_the_store_recovers():
    """No statement timeout: a silent server held the writer, every commit and every ack behind it, until
    the kernel gave up on the connection (a quarter of an hour)."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    proxy = SilentProxy()
    port = await proxy.start()
    schema = f"silent_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/test?schema={schema}&timeout_s=1")
    await store.open()
    try:
        assert (await store.submit(op(1))).status == "stored"
        proxy.silent = True
        started = time.monotonic()
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.submit(op(2)), 20)
        assert time.monotonic() - started < 10
        proxy.silent = False
        for _ in range(50):  # the server speaks again: the store takes writes again (op 2, resent, too)
            with contextlib.suppress(StoreError):
                if (await asyncio.wait_for(store.submit(op(2)), 10)).status == "stored":
                    break
            await asyncio.sleep(0.2)
        assert await store.acked_seq("a") == 2
    finally:
        await proxy.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.close(), 10)
        await drop_pg_schema(schema)


async def test_two_nodes_commit_offsets_in_the_order_they_drew_them():
    """Offsets come from one sequence, drawn inside each node's transaction: node A drew 10, node B drew
    11 and committed first, and a subscriber that had seen 11 resumed past 10 for good. Each write group
    now holds a lock across nodes: B's commit waits for A's."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"order_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}?schema={schema}"
    a, b = PostgresStore(url), PostgresStore(url)
    await a.open()
    await b.open()
    try:
        apply = a._apply_isolated

        async def slow_apply(conn, op_):  # node A is slow between drawing its offset and committing
            result = await apply(conn, op_)
            await asyncio.sleep(1.0)
            return result

        a._apply_isolated = slow_apply  # type: ignore[method-assign]
        first = asyncio.ensure_future(a.submit(op(1, account="x")))
        await asyncio.sleep(0.3)  # A has drawn its offset and holds its transaction open
        second = await b.submit(op(1, account="y"))
        assert first.done()  # B's commit waited for A's
        offsets = [(await first).events[0].offset, second.events[0].offset]
        assert offsets == sorted(offsets)
    finally:
        await a.close()
        await b.close()
        await drop_pg_schema(schema)


async def test_a_role_that_may_not_create_the_tables_gets_a_clear_error_not_a_traceback():
    """A least-privilege role (PostgreSQL 15+ gives none CREATE on `public`): setting up the tables raised
    asyncpg's own error out of the CLI and `serve` as a traceback."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    role, schema = "tw_nocreate_" + uuid.uuid4().hex[:8], "tw_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(PG_URL)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')  # usage, not create
        url = PG_URL.replace("postgres@", f"{role}@", 1) + f"?schema={schema}"
        store = PostgresStore(url)
        with pytest.raises(StoreError, match="cannot set up the tradewire tables"):
            await store.open()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
