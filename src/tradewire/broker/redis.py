"""Redis broker: the scale-out backplane. Every node publishes here and every node delivers from here.

- Publications go out on one Redis channel, `{prefix}:pub`, as compact msgpack; a node's own
  publications come back to it the same way, so every node sees one order.
- Latest-wins values are kept in the hash `{prefix}:latest` (field = channel), so a node can serve the
  snapshot of an account whose EA is connected to another node.
- Publishing is non-blocking for the caller: publications queued in one event-loop turn are sent in
  one pipeline (HSET + PUBLISH each), in order, by a single flusher.
- Presence: each node keeps the set of accounts whose EA sessions it holds in `{prefix}:node:{id}`
  with a short TTL it keeps refreshing, and the time each account was last live in `{prefix}:seen`.
  A node that dies stops refreshing, so its accounts stop counting as live everywhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis

from tradewire.broker.base import Deliver, Publication
from tradewire.redact import redact_url

log = logging.getLogger(__name__)

PRESENCE_TTL_S = 10
PRESENCE_REFRESH_S = 3
# Durable publications a failed pipeline could not send, kept to send again once Redis is back: the other
# nodes' subscribers get nothing of them otherwise (only this node knows of the gap, and a `since` resume
# from a higher offset seen elsewhere would skip them). Past this many, the oldest are lost (and counted).
MAX_UNSENT = 10_000
_wire = msgspec.msgpack.Encoder()
_unwire = msgspec.msgpack.Decoder(tuple[str, bytes, bool, int | None])


def split_url(url: str) -> tuple[str, str]:
    """The redis-py URL and the key prefix (`?prefix=`, default `tw`), so several hubs can share a Redis."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", ["tw"])[-1]
    rest = "&".join(f"{k}={v[-1]}" for k, v in query.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), prefix


class RedisBroker:
    def __init__(self, url: str, *, node_id: str | None = None) -> None:
        self.url, self.prefix = split_url(url)
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._redis: aioredis.Redis | None = None
        self._pubsub = None
        self._deliver: Deliver | None = None
        self._pending: list[Publication] = []
        self._flushing: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None
        self._presence: asyncio.Task | None = None
        self._sessions: dict[str, int] = {}  # accounts whose EA sessions this node holds
        self._ended: set[str] = set()  # accounts whose last session here ended since the last sync
        self._presence_dirty = False
        self._syncing: asyncio.Future | None = None
        self.published = 0
        self.delivered = 0
        self.skipped = 0  # backplane messages that could not be read
        self.lost = 0  # publications that could not be sent
        self._unsent: collections.deque[Publication] = collections.deque()  # durable ones, to send again
        self.dropped = 0  # durable publications lost for good: past MAX_UNSENT during an outage
        # Called once the backplane works again after publications were lost or may have been missed:
        # its owner publishes its latest values again and has subscribers catch up (see app.py).
        self.on_gap: Callable[[], None] | None = None
        self._gap = False
        self._gap_ended_at = 0.0
        self._reading = True  # false from a dropped subscription until it is subscribed again
        self._confirmations = 0

    @property
    def _pub_channel(self) -> str:
        return f"{self.prefix}:pub"

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._redis = aioredis.from_url(self.url)
        try:
            await self._redis.ping()
        except (OSError, aioredis.RedisError) as exc:
            raise ConnectionError(f"cannot reach Redis at {redact_url(self.url)}: {exc}") from None
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self._pub_channel)
        self._reader = asyncio.create_task(self._read_loop(), name="tradewire-redis-reader")
        self._presence = asyncio.create_task(self._presence_loop(), name="tradewire-redis-presence")

    async def stop(self) -> None:
        for pending in (self._flushing, self._syncing):
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
        for task in (self._reader, self._presence):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.delete(self._node_key)  # a clean stop: our sessions are gone now
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
            await self._redis.aclose()
            self._redis = None

    # --- publishing -----------------------------------------------------------------------------
    def publish(self, pub: Publication) -> None:
        self.published += 1
        self._pending.append(pub)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # gather what the rest of this loop turn publishes
        while self._pending and self._redis is not None:
            batch, self._pending = self._pending, []
            pipe = self._redis.pipeline(transaction=False)
            for pub in batch:
                payload = _wire.encode((pub.channel, pub.data, pub.latest, pub.offset))
                if pub.latest:
                    pipe.hset(f"{self.prefix}:latest", pub.channel, payload)
                pipe.publish(self._pub_channel, payload)
            try:
                await pipe.execute()
            except (OSError, aioredis.RedisError) as exc:
                self.lost += len(batch)
                self._keep_unsent(batch)
                self._gap_began(f"publish failed: {exc}")
            else:
                self._gap_may_end()

    def _keep_unsent(self, batch: list[Publication]) -> None:
        """Keep a failed batch's durable publications for when Redis is back (its latest-wins ones are sent
        again by the gap's republish, newest values only)."""
        self._unsent.extend(pub for pub in batch if not pub.latest)
        over = len(self._unsent) - MAX_UNSENT
        if over > 0:
            for _ in range(over):
                self._unsent.popleft()
            if self.dropped == 0:
                log.error("redis backplane down too long: durable publications are being lost for other nodes")
            self.dropped += over

    def _send_unsent(self) -> None:
        """Redis is back: what failed goes out again, before anything newer."""
        if self._unsent:
            log.warning("redis backplane back: sending %d durable publication(s) again", len(self._unsent))
            self._pending[:0] = self._unsent
            self._unsent.clear()
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.ensure_future(self._flush())

    def problem(self) -> str | None:
        if not self._reading:
            return "the Redis backplane subscription is down: publications from other nodes are missed"
        if self._gap:
            return "the Redis backplane is unavailable: publications are lost"
        return None

    def _gap_began(self, why: str) -> None:
        if not self._gap:  # said once per outage, not per batch: under load that is hundreds a second
            log.error("redis backplane unavailable (%s): publications are lost until it is back", why)
        self._gap = True

    def _gap_may_end(self) -> None:
        if self._gap and self._reading:
            self._send_unsent()
            self._gap = False
            self._gap_ended_at = time.monotonic()
            log.warning("redis backplane back (%d publication(s) lost so far): subscribers catch up", self.lost)
            if self.on_gap is not None:
                self.on_gap()

    async def _read_loop(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") == "subscribe":
                        self._subscribed()
                        continue
                    if message.get("type") != "message":
                        continue
                    try:
                        channel, data, latest, offset = _unwire.decode(message["data"])
                    except (msgspec.DecodeError, TypeError, ValueError) as exc:
                        # One bad message (a stray PUBLISH on the prefix, a node of another version): skipped,
                        # not taken for a lost subscription (a gap closes every subscriber 4008).
                        self.skipped += 1
                        if self.skipped == 1 or self.skipped % 1000 == 0:
                            log.warning("redis: %d message(s) on %s not understood, skipped: %s",
                                        self.skipped, self._pub_channel, exc)  # fmt: skip
                        continue
                    self.delivered += 1
                    if self._deliver is not None:
                        try:
                            self._deliver(Publication(channel, data, latest, offset))
                        except Exception:  # delivering it failed here: the next ones are still delivered
                            log.exception("redis: delivering a publication on %s failed", channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection dropped: resubscribe and carry on
                if self._reading:
                    log.warning("redis subscription lost (%s); resubscribing", exc)
                self._reading = False
                self._gap_began(f"subscription lost: {exc}")  # what was published meanwhile is missed
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(self._pub_channel)  # confirmed by a "subscribe" message

    def _subscribed(self) -> None:
        """A subscription confirmed. Any after the first is a resubscription: redis-py reconnects and
        resubscribes by itself inside `listen()` after a short outage, raising nothing, and what was
        published meanwhile was missed (and a Redis restarted without its data lost the latest values)."""
        self._confirmations += 1
        if self._confirmations > 1 and time.monotonic() - self._gap_ended_at > 2.0:  # not our own resubscribe
            self._gap_began("resubscribed after a dropped connection")
        self._reading = True
        self._gap_may_end()

    async def forget(self, channels: list[str]) -> None:
        """Drop these channels' latest values: nothing else ever does (the hash keeps them across restarts)."""
        if channels and self._redis is not None:
            await self._redis.hdel(f"{self.prefix}:latest", *channels)

    async def snapshot(self, pattern: str) -> list[Publication]:
        assert self._redis is not None
        key = f"{self.prefix}:latest"
        if pattern.endswith("/*"):
            values = [v async for _, v in self._redis.hscan_iter(key, match=pattern[:-1] + "*", count=1000)]
        else:
            value = await self._redis.hget(key, pattern)
            values = [value] if value is not None else []
        found = []
        for value in values:
            try:
                found.append(Publication(*_unwire.decode(value)))
            except (msgspec.DecodeError, TypeError, ValueError):
                # One unreadable value (a node of another version, a stray HSET) is skipped, as the read loop
                # skips such a message: raised, it failed every wildcard subscribe for as long as it stayed.
                self.skipped += 1
        return found

    # --- presence ---------------------------------------------------------------------------------
    @property
    def _node_key(self) -> str:
        return f"{self.prefix}:node:{self.node_id}"

    def session_started(self, account: str) -> None:
        self._sessions[account] = self._sessions.get(account, 0) + 1
        self._schedule_sync()

    def session_ended(self, account: str) -> None:
        count = self._sessions.get(account, 0) - 1
        if count > 0:
            self._sessions[account] = count
        else:
            self._sessions.pop(account, None)
            self._ended.add(account)
        self._schedule_sync()

    def _schedule_sync(self) -> None:
        """One sync task at a time, re-run while there are changes: writes to Redis stay in order."""
        self._presence_dirty = True
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.ensure_future(self._sync_until_clean())

    async def _sync_until_clean(self) -> None:
        while self._presence_dirty:
            self._presence_dirty = False
            await self._sync_presence()

    async def _sync_presence(self) -> None:
        if self._redis is None:
            return
        now = int(time.time() * 1000)
        ended, self._ended = self._ended, set()
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._node_key)
        if self._sessions:
            pipe.sadd(self._node_key, *self._sessions)
            pipe.expire(self._node_key, PRESENCE_TTL_S)
        seen = dict.fromkeys([*self._sessions, *ended], now)
        if seen:
            pipe.hset(f"{self.prefix}:seen", mapping=seen)
        with contextlib.suppress(OSError, aioredis.RedisError):
            await pipe.execute()

    async def _presence_loop(self) -> None:
        while True:
            self._schedule_sync()  # refresh the TTL: a node that dies stops doing this
            await asyncio.sleep(PRESENCE_REFRESH_S)

    async def live_accounts(self) -> set[str]:
        """Accounts with an EA session on any *other* node that is alive. Not this node's own: it knows them
        first-hand, and counted here they hid its own silent EAs ("live elsewhere") from the silence check."""
        assert self._redis is not None
        live: set[str] = set()
        own = self._node_key.encode()
        async for key in self._redis.scan_iter(match=f"{self.prefix}:node:*", count=100):
            if key != own:
                live.update(m.decode() for m in await self._redis.smembers(key))
        return live

    async def last_seen(self) -> dict[str, int]:
        """When each account last had a session anywhere (ms)."""
        assert self._redis is not None
        raw = await self._redis.hgetall(f"{self.prefix}:seen")
        return {k.decode(): int(v) for k, v in raw.items()}
