"""Crash: a hub under durable load is SIGKILLed at random moments and restarted. At the end every event
an EA saw acked is stored exactly once, and every event is eventually stored (EAs resend until acked)."""

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3

import aiohttp

from tradewire.store.sqlite import SQLiteStore

from helpers import ServeProcess, hello, position_event

KILLS = int(os.environ.get("TRADEWIRE_CRASH_KILLS", "3"))


class OutboxEA:
    """An EA that keeps every durable message until an ack covers it, and resends after welcome."""

    def __init__(self, token: str, account: str) -> None:
        self.token, self.account = token, account
        self.seq = 0
        self.outbox: dict[int, dict] = {}
        self.acked_ever: set[str] = set()  # message ids this EA saw acked
        self.sent_ids: set[str] = set()

    def new_event(self) -> None:
        self.seq += 1
        msg = position_event(self.seq, pid=self.seq, msg_id=f"{self.account}-{self.seq}")
        self.outbox[self.seq] = msg
        self.sent_ids.add(msg["id"])

    def ack(self, upto: int) -> None:
        for seq in [s for s in self.outbox if s <= upto]:
            self.acked_ever.add(self.outbox.pop(seq)["id"])

    async def session(self, http: aiohttp.ClientSession, url: str, produce: asyncio.Event) -> None:
        ws = await http.ws_connect(
            url.replace("http", "ws", 1) + "/ea/v1", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            await ws.send_str(json.dumps(hello()))
            welcome = json.loads((await ws.receive(timeout=5)).data)
            self.ack(welcome["ackedSeq"])
            if self.outbox:
                await ws.send_str(json.dumps([self.outbox[s] for s in sorted(self.outbox)]))
            reader = asyncio.create_task(self._read(ws))
            while not reader.done():
                if produce.is_set():
                    self.new_event()
                    await ws.send_str(json.dumps(self.outbox[self.seq]))
                await asyncio.sleep(0.005)
            await reader
        finally:
            await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data["type"] == "ack":
                self.ack(data["seq"])


async def run_ea(ea: OutboxEA, http, urls: list[str], produce: asyncio.Event, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError, json.JSONDecodeError, TypeError, KeyError):
            await ea.session(http, urls[-1], produce)  # the hub went away mid-session: reconnect
        await asyncio.sleep(0.05)


async def test_sigkill_at_random_moments_loses_nothing_and_stores_nothing_twice(tmp_path, http):
    rng = random.Random(7)
    db = str(tmp_path / "crash.db")
    store = SQLiteStore(db)
    await store.open()
    eas = [OutboxEA((await store.add_token(f"acc-{n}"))[0], f"acc-{n}") for n in range(3)]
    await store.close()

    server = await ServeProcess.start("--store", f"sqlite:///{db}")
    urls = [server.url]
    produce, stop = asyncio.Event(), asyncio.Event()
    produce.set()
    tasks = [asyncio.create_task(run_ea(ea, http, urls, produce, stop)) for ea in eas]
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            server.proc.send_signal(signal.SIGKILL)  # no drain, no fsync courtesy: whatever was in flight
            await server.proc.wait()
            server = await ServeProcess.start("--store", f"sqlite:///{db}")
            urls.append(server.url)
        produce.clear()  # stop making new events; let the outboxes drain
        async with asyncio.timeout(30):
            while any(ea.outbox for ea in eas):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop(signal.SIGTERM)

    conn = sqlite3.connect(db)
    stored = [r[0] for r in conn.execute("SELECT msg_id FROM ea_inbox")]
    events = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT account || ':' || position_id) FROM position_events"
    ).fetchone()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    sent = set().union(*(ea.sent_ids for ea in eas))
    acked = set().union(*(ea.acked_ever for ea in eas))
    assert len(stored) == len(set(stored))  # nothing twice
    assert acked <= set(stored)  # every ack was true
    assert set(stored) == sent  # every event got there in the end
    assert events[0] == events[1] == len(sent)  # one OPEN per position
    assert len(sent) > 50
