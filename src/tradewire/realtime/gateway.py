"""The realtime gateway: subscriptions, fan-out to connections, snapshot and history on subscribe.

Per publication the work that does not depend on the subscriber (the event's JSON string literal,
the list of matching subscriptions) is done once; per subscriber a latest-wins delivery is one dict
assignment. Once per event-loop turn (or at most once per `flush_interval_ms`) every connection with
something pending gets it in one write; a connection whose peer is behind is skipped until its transport
drains, its latest-wins values conflating meanwhile, so a slow subscriber only ever delays itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from itertools import repeat
from typing import Any

from aiohttp import WSMsgType, web

from tradewire import channels
from tradewire.broker.base import Broker, Publication
from tradewire.config import RealtimeSettings
from tradewire.limits import TokenBucket
from tradewire.model import Role
from tradewire.realtime import protocol as rp
from tradewire.realtime import wire
from tradewire.realtime.late import LateArrivals
from tradewire.realtime.outbox import Outbox
from tradewire.realtime.parking import MissedValues
from tradewire.realtime.turns import Turns
from tradewire.realtime.wire import DirectWriter
from tradewire.store.base import Store, StoreError

log = logging.getLogger(__name__)

CLOSE_SLOW = 4008  # publications missed (a backlog over its bound, a backplane gap): catch up with `since`
CLOSE_UNAUTHORIZED = 4401
# A subscribe's snapshot and history cost the hub by their size (/trading/* at 2,000 accounts: 1.1 MiB, ~7 ms of
# the loop): past the first this many bytes, each as many more counts as one more message against the
# connection's `messages_per_s`, so a client re-subscribing to something big in a loop slows only itself.
SNAPSHOT_BYTES_PER_MESSAGE = 32 * 1024

RoleOf = Callable[[str], Awaitable[Role | None]]


REPLAY_DEDUPE_S = 10.0  # how long after its replay a subscription drops the live copies of replayed offsets


def _forget_replayed(sub: Subscription) -> None:
    sub.replayed = None


def literal_of(pub: Publication) -> bytes:
    """A publication's `event` field as JSON, encoded on first use and kept with it."""
    literal = pub.literal
    if literal is None:
        literal = pub.literal = rp.event_literal(pub.data)
    return literal


class Subscription:
    __slots__ = ("buffer", "conn", "id", "id_bytes", "key", "pattern", "pending", "replayed")

    def __init__(self, conn: Connection, sub_id: str, pattern: str, key: str | None = None) -> None:
        self.conn = conn
        self.id = sub_id
        self.id_bytes = sub_id.encode()
        self.pattern = pattern
        self.key = key  # the API key that allowed it: a revoked key ends it (Gateway._recheck_keys)
        # While it loads its snapshot/history (in the index's `loading`), live publications wait here.
        self.buffer: list[tuple[Publication, bytes]] = []
        self.pending = conn.outbox.slot(sub_id)  # latest-wins literals waiting to be written, by channel
        # Offsets its `since` replay held, for a few seconds after it: the live copy of one may come later (its
        # node's publish still on the backplane when the history was read) and is not sent twice.
        self.replayed: set[int] | None = None


class Group:
    """The ready subscriptions of one pattern, in the shapes the fan-out uses.

    Changed in place as subscriptions come and go, so every cached route that holds it stays right:
    a subscriber joining `/trading/*` costs O(subscribers of `/trading/*`), not a rebuild of every route.
    """

    __slots__ = ("conns", "members", "parked", "pendings", "size", "subs")

    def __init__(self) -> None:
        self.members: dict[Subscription, None] = {}
        self.subs: tuple[Subscription, ...] = ()  # every member: stream data goes to parked ones too
        self.size = 0
        # Latest-wins values go only to members whose connection is not parked (see parking.py).
        self.pendings: tuple[dict[str, bytes], ...] = ()  # where latest-wins values wait, per subscription
        self.conns: frozenset[Connection] = frozenset()  # the connections to flush after a delivery
        self.parked = 0  # members left out of `pendings`: each publication is one value they miss

    def add(self, sub: Subscription) -> None:
        self.members[sub] = None
        self.refresh()

    def discard(self, sub: Subscription) -> bool:
        if self.members.pop(sub, False) is None:
            self.refresh()
            return True
        return False

    def refresh(self) -> None:
        """Rebuild the shapes from the members (one joined or left, or a connection parked or resumed)."""
        self.subs = tuple(self.members)
        self.size = len(self.subs)
        awake = [s for s in self.subs if s.conn.parked_at is None]
        self.pendings = tuple(s.pending for s in awake)
        self.conns = frozenset(s.conn for s in awake)
        self.parked = self.size - len(awake)


Route = tuple[Group, ...]  # the groups whose pattern matches a channel: the exact one, then /a/*, /a/b/*, ...


class SubscriptionIndex:
    """Exact channels and `/prefix/*` patterns, one `Group` each, looked up by dict: O(depth) per channel.

    `route(channel)` is what the fan-out uses, cached per channel. A cached route holds groups, which
    change in place, so it is dropped only when a group of a pattern that matches its channel appears or
    goes (the first subscription of a pattern, or the last). A subscription loading its snapshot or
    history is not in a group yet: it waits in `loading`, buffering what is published meanwhile.
    """

    MAX_ROUTES = 100_000  # bounded: a flood of distinct channels cannot grow the cache without limit

    def __init__(self) -> None:
        self._groups: dict[str, Group] = {}
        self._routes: dict[str, Route] = {}
        self.loading: dict[Subscription, None] = {}

    def add(self, sub: Subscription) -> None:
        """A new subscription: it buffers live publications until `ready`."""
        self.loading[sub] = None

    def ready(self, sub: Subscription) -> None:
        """Its snapshot and history are queued: from now on publications go to it directly."""
        if self.loading.pop(sub, False) is None:
            group = self._groups.get(sub.pattern)
            if group is None:
                group = self._groups[sub.pattern] = Group()
                self._forget_routes(sub.pattern)
            group.add(sub)

    def remove(self, sub: Subscription) -> None:
        if self.loading.pop(sub, False) is None:
            return
        group = self._groups.get(sub.pattern)
        if group is not None and group.discard(sub) and not group.members:
            del self._groups[sub.pattern]
            self._forget_routes(sub.pattern)

    def refresh(self, subs: Iterable[Subscription]) -> None:
        """Their connection parked or resumed: each group one of them is ready in rebuilds, once."""
        groups = self._groups
        for group in {g for s in subs if (g := groups.get(s.pattern)) is not None and s in g.members}:
            group.refresh()

    def _forget_routes(self, pattern: str) -> None:
        """The routes of the channels `pattern` matches: rebuilt lazily, each on its next publication."""
        if pattern.endswith("/*"):
            prefix = pattern[:-1]
            for channel in [c for c in self._routes if c.startswith(prefix)]:
                del self._routes[channel]
        else:
            self._routes.pop(pattern, None)

    def route(self, channel: str) -> Route:
        route = self._routes.get(channel)
        if route is None:
            if len(self._routes) >= self.MAX_ROUTES:
                self._routes = {}
            groups = self._groups
            route = tuple(groups[p] for p in (channel, *channels.prefixes(channel)) if p in groups)
            self._routes[channel] = route
        return route

    def __len__(self) -> int:
        return sum(len(g.members) for g in self._groups.values()) + len(self.loading)


class Gateway:
    def __init__(
        self, settings: RealtimeSettings, broker: Broker, store: Store, role_of: RoleOf, recheck_s: float = 5.0
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.role_of = role_of
        self.index = SubscriptionIndex()
        self.connections: set[Connection] = set()
        self.stats = {
            "connections_total": 0,
            "deliveries": 0,
            "frames_out": 0,
            "writes": 0,
            "messages_in": 0,
            "conflated": 0,
            "closed_slow": 0,
            "closed_stalled": 0,
            "throttled": 0,
        }
        self._ka_task: asyncio.Task | None = None
        self._recheck_s = recheck_s  # how often the keys of open subscriptions are checked again (auth_cache_s)
        self._recheck_task: asyncio.Task | None = None
        self.on_flush: Callable[[float], None] | None = None  # seconds from first queued frame to its write
        self._dirty: set[Connection] = set()  # connections with something to write at the next flush
        self._flush_handle: asyncio.Handle | None = None
        self._dirty_since = 0.0
        # > 0: at most one flush per interval (fewer, larger writes under load), and what comes after a
        # quiet interval is written on the next loop turn, not an interval later; 0: every loop turn.
        self._flush_s = settings.flush_interval_ms / 1000
        self._last_flush = -math.inf
        self.missed = MissedValues()  # what parked connections miss while they do not read
        self.late = LateArrivals()  # durable publications that arrived after a higher offset
        self.turns = Turns()  # upgrades and subscribes, one per loop turn (see turns.py)

    async def start(self) -> None:
        await self.broker.start(self.deliver)
        self._ka_task = asyncio.create_task(self._keepalive())
        if self._recheck_s > 0:
            self._recheck_task = asyncio.create_task(self._recheck_keys())

    async def stop(self) -> None:
        for task in (self._ka_task, self._recheck_task):
            if task is not None:
                task.cancel()
        # Together: a parked connection's close waits up to 5 s on a peer that does not read, and one after the
        # other a few of them outlasted a supervisor's grace (the store was then never closed).
        await asyncio.gather(
            *(conn.close(1001, "server shutting down") for conn in list(self.connections)), return_exceptions=True
        )
        await self.broker.stop()

    @property
    def publish_namespaces(self) -> set[str]:
        return set(self.settings.publish_namespaces)

    def deliver(self, pub: Publication) -> None:
        """Called by the broker for every publication: route it to matching subscriptions.

        A latest-wins delivery is one dict assignment into each ready subscription's pending values,
        and their connections are marked for the next flush. Frames are built and written there,
        once per connection, for what survived. A parked connection (not reading) is left out: the
        value is noted once in `missed` (if one of its subscriptions matches the channel), and it takes
        what it missed when it resumes.
        """
        if pub.offset is not None:
            self.late.note(pub.offset, pub)
        index = self.index
        route = index.route(pub.channel)
        if not route:
            if index.loading:
                self._buffer_for_loading(pub, None)
            return
        literal = pub.literal
        if literal is None:  # inlined literal_of(): this runs for every publication
            literal = pub.literal = rp.event_literal(pub.data)
        stats = self.stats
        if pub.latest:
            channel = pub.channel
            dirty = self._dirty
            missed = False
            for group in route:  # usually one: a channel rarely has subscribers under several patterns
                pendings = group.pendings
                stats["deliveries"] += group.size
                if group.parked:
                    # A parked member's previous value counts as replaced: it will be written at most the
                    # newest (an overcount of at most one per channel it missed, at its resume).
                    stats["conflated"] += group.parked
                    missed = True
                    if not pendings:
                        continue
                # The hottest loop of the hub, so it runs in C: count the values about to be replaced
                # (conflation), store the new one in every ready subscription, mark their connections.
                conflated = sum(map(operator.contains, pendings, repeat(channel)))
                if conflated:
                    stats["conflated"] += conflated
                deque(map(operator.setitem, pendings, repeat(channel), repeat(literal)), maxlen=0)
                dirty |= group.conns
            if missed:  # only channels a parked subscription matches: nobody else will ask for them
                self.missed.note(channel, literal)
            if self._flush_handle is None:
                self._schedule_flush()
        else:
            for group in route:
                stats["deliveries"] += len(group.subs)
                for sub in group.subs:
                    sub.conn.push(sub, pub, literal)
        if index.loading:
            self._buffer_for_loading(pub, literal)

    def _buffer_for_loading(self, pub: Publication, literal: bytes | None) -> None:
        """Publications for subscriptions still loading their snapshot/history: kept, in order, for them."""
        for sub in self.index.loading:
            if channels.matches(sub.pattern, pub.channel):
                if literal is None:
                    literal = literal_of(pub)
                sub.buffer.append((pub, literal))
                self.stats["deliveries"] += 1

    def mark_dirty(self, conn: Connection) -> None:
        """Something is queued for `conn`: write it at the next flush."""
        self._dirty.add(conn)
        if self._flush_handle is None:
            self._schedule_flush()

    def park(self, conn: Connection) -> None:
        """`conn` stopped taking writes: its subscriptions stop taking latest-wins values one by one."""
        if conn.parked_at is not None:
            return
        conn.parked_at = self.missed.park()
        conn.parked_since = time.monotonic()
        self.index.refresh(conn.subs.values())

    def unpark(self, conn: Connection, *, resumed: bool) -> None:
        """`conn` parked and now takes writes again (`resumed`), or went away. A resumed connection's
        subscriptions get the newest value of every channel published while it was parked: what
        conflation would have left them."""
        mark, conn.parked_at = conn.parked_at, None
        if mark is None:
            return
        if resumed:
            for sub in conn.subs.values():
                if sub not in self.index.loading:  # a loading one buffers every publication anyway
                    sub.pending.update(self.missed.since(mark, sub.pattern))
            self.index.refresh(conn.subs.values())
        self.missed.unpark()

    def _schedule_flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._dirty_since = now = time.perf_counter()
        wait = self._last_flush + self._flush_s - now
        if wait > 0:
            self._flush_handle = loop.call_later(wait, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what is pending for every marked connection: one write each, whatever was queued."""
        self._flush_handle = None
        self._last_flush = time.perf_counter()
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # one broken connection must not stop the others' writes
                log.exception("flush to a subscriber failed")
                conn.abort()
        if self.on_flush is not None and dirty:
            self.on_flush(time.perf_counter() - self._dirty_since)

    async def _keepalive(self) -> None:
        ka_s, stall = self.settings.ka_interval_s, self.settings.stall_close_s
        tick = min(ka_s, stall / 4) if stall else ka_s  # a stall is seen within a quarter of its bound
        last_ka = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            ka = now - last_ka >= ka_s - tick / 2
            if ka:
                last_ka = now
            for conn in list(self.connections):
                if conn.parked_at is None:  # a parked one reads none of them: it gets the next after it drains
                    if ka:
                        if not conn.acked:
                            # No connection_init (the Swift SDK sends none): acked unasked, as AppSync does, so
                            # that it learns connectionTimeoutMs; never a ka before the ack.
                            conn.acked = True
                            conn.reply(rp.connection_ack(self.settings.connection_timeout_ms))
                        conn.reply(rp.KA)
                elif (
                    stall
                    and now - conn.parked_since >= stall
                    and conn.close_soon(CLOSE_SLOW, f"slow consumer: took nothing for {stall:g} s", abort=True)
                ):
                    self.stats["closed_stalled"] += 1
                    log.warning("closing a subscriber that took nothing for %g s", stall)

    async def _recheck_keys(self) -> None:
        """A key revoked while its subscriptions are open stops them within `recheck_s` (plus the auth
        cache's own seconds): their connections are closed 4401. Every key in use is asked again (cached:
        a store read per key per auth_cache_s at most); a store that cannot answer is asked next time."""
        while True:
            await asyncio.sleep(self._recheck_s)
            keys = {sub.key for conn in self.connections for sub in conn.subs.values() if sub.key}
            revoked = set()
            for key in keys:
                try:
                    if await self.role_of(key) is None:
                        revoked.add(key)
                except Exception as exc:  # the store is down: nothing is known to be revoked
                    log.warning("rechecking subscriber keys: %s", exc)
                    break
            for conn in [c for c in self.connections if any(s.key in revoked for s in c.subs.values())]:
                log.info("closing a subscriber connection: its API key was revoked")
                conn.close_soon(CLOSE_UNAUTHORIZED, "API key revoked")

    def resync(self) -> None:
        """Publications were missed (the backplane was down): every subscriber connection is closed 4008, to
        come back with `since` for durable channels and a fresh snapshot for the others. Left open, it would
        miss events and alerts for good, and keep values no longer current, without a word."""
        for conn in list(self.connections):
            conn.close_soon(CLOSE_SLOW, "publications were missed (the backplane was down); resubscribe with since")
        if self.connections:
            log.warning("closed %d subscriber connection(s) to catch up after a backplane gap", len(self.connections))

    def known_namespace(self, ns: str) -> bool:
        return ns == channels.NAMESPACE or ns in self.publish_namespaces

    async def publish_events(self, channel: str, events: list[str]) -> list[dict]:
        """Client publications (admin keys, custom namespaces): never stored, never conflated."""
        successful = []
        for index, event in enumerate(events):
            self.broker.publish(Publication(channel, event.encode(), latest=False))
            successful.append({"identifier": str(uuid.uuid4()), "index": index})
        return successful

    def check_publish(self, channel: str, role: Role | None) -> tuple[str, str] | None:
        """(errorType, message) if this publish is not allowed, else None."""
        if role is None:
            return rp.UNAUTHORIZED, "missing or invalid API key"
        if role != "admin":
            return rp.UNAUTHORIZED, "publishing needs an admin API key"
        ns = channels.namespace(channel)
        if ns == channels.NAMESPACE:
            return rp.UNAUTHORIZED, f"the {ns} namespace is written by the server only"
        if ns not in self.publish_namespaces:
            return rp.BAD_REQUEST, f"namespace {ns!r} does not exist; publishable: {sorted(self.publish_namespaces)}"
        return None


class Connection:
    def __init__(self, gateway: Gateway, ws: web.WebSocketResponse, key: str | None) -> None:
        self.gateway = gateway
        self.ws = ws
        self.key = key  # the API key given at connect, used where a message carries none
        self.batch = False
        self.subs: dict[str, Subscription] = {}
        self.outbox = Outbox(gateway.settings.max_backlog_bytes)
        self.wire = DirectWriter(ws)
        self._drainer: asyncio.Task | None = None  # set while the transport is paused: wait, then flush
        self.parked_at: int | None = None  # parked (see parking.py): its mark in the gateway's missed values
        self.parked_since = 0.0  # monotonic, while parked: a connection parked too long is closed (stall_close_s)
        self.acked = False  # connection_ack sent: keep-alives come after it, never before
        # Every message costs the hub something (a subscribe with its snapshot up to a millisecond): one
        # connection subscribing and unsubscribing in a loop is held to a rate, as reconnecting is.
        self._rate = TokenBucket(gateway.settings.messages_per_s, gateway.settings.messages_burst)
        self._closing = False
        self._closer: asyncio.Future | None = None

    # --- outbound -----------------------------------------------------------------------------
    def reply(self, frame: bytes) -> None:
        if not self._closing:
            self.outbox.reply(frame)
            self.gateway.mark_dirty(self)

    def push(self, sub: Subscription, pub: Publication, literal: bytes) -> None:
        """Queue one publication for one subscription (the gateway's loop inlines the latest-wins case)."""
        if self._closing or self._closer is not None:
            return
        if pub.latest:
            if self.outbox.put_latest(sub.id, pub.channel, literal):
                self.gateway.stats["conflated"] += 1
        elif sub.replayed is not None and pub.offset in sub.replayed:
            sub.replayed.discard(pub.offset)  # sent by the replay already
            return
        elif not self.outbox.put_stream(sub.id, rp.data_frame(sub.id_bytes, literal, pub.offset)):
            self._close_slow()
            return
        self.gateway.mark_dirty(self)

    def _close_slow(self) -> None:
        self.gateway.stats["closed_slow"] += 1
        limit = self.gateway.settings.max_backlog_bytes
        log.warning("closing a slow subscriber: backlog over %d bytes", limit)
        self.close_soon(CLOSE_SLOW, f"slow consumer: backlog over {limit} bytes; resubscribe with since", abort=True)

    def close_soon(self, code: int, reason: str, *, abort: bool = False) -> bool:
        """Close from code that cannot wait for it (the fan-out, a periodic check); nothing more is written.
        False if it was closing already."""
        if self._closer is not None or self._closing:
            return False
        self._closer = asyncio.ensure_future(self.close(code, reason, abort=abort))
        return True

    def flush(self) -> None:
        """Write everything pending in one write, unless the peer is behind (then wait for it to drain)."""
        if self._closing or self._closer is not None or self._drainer is not None:
            return
        if not self.wire.writable:
            if self.wire.open:  # paused: park until the peer catches up; then it gets the newest values
                self._drainer = asyncio.ensure_future(self._await_drain())
                self.gateway.park(self)
            return
        stats = self.gateway.stats
        if self.batch:
            payload, count = self.outbox.take_batch()
            if not count:
                return
            data = wire.text_frame(payload)
        else:
            frames, _latest = self.outbox.take()
            count = len(frames)
            if not count:
                return
            data = wire.text_frames(frames)
        stats["frames_out"] += count
        stats["writes"] += 1
        self.wire.write(data)

    async def _await_drain(self) -> None:
        try:
            await self.wire.drained()
        except (ConnectionError, RuntimeError):
            return  # connection lost: nothing more to write (run() unparks it when it ends)
        finally:
            self._drainer = None
        if not self._closing:
            self.gateway.unpark(self, resumed=True)
        if self.outbox:
            self.gateway.mark_dirty(self)

    def abort(self) -> None:
        self._closing = True
        self.wire.abort()

    async def close(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Close with a code. `abort`: the peer is known not to be reading, so wait only briefly.

        A peer that does not take the close frame in time has its TCP connection dropped: a graceful
        close would wait forever to flush to it.
        """
        if self._closing:
            return
        self._closing = True
        closed = False
        if abort:
            # aiohttp closes the transport itself when its close times out, before `finally` runs: the
            # reset must be armed first, or the peer that does not read is never told.
            self.wire.reset_on_close()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 1 if abort else 5)
            closed = True
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we were cancelled, not just the shared drain future
        finally:
            if not closed:
                self.wire.abort()

    # --- inbound ------------------------------------------------------------------------------
    async def run(self) -> None:
        gw = self.gateway
        gw.connections.add(self)
        gw.stats["connections_total"] += 1
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                gw.stats["messages_in"] += 1
                delay = self._rate.take()
                if delay:  # past the rate this message waits, and TCP holds the rest: nobody else's do
                    gw.stats["throttled"] += 1
                    await asyncio.sleep(delay)
                await self.handle(msg.data)
                if self._closing:
                    break
                if self._drainer is not None:
                    # Parked: it reads nothing of ours, so nothing more of its is read until it does (TCP
                    # holds what it sends). Else each message it sends queues a reply it never reads.
                    await asyncio.wait([self._drainer])
                    if self._closing:
                        break
        finally:
            self._closing = True
            gw.unpark(self, resumed=False)
            for sub in self.subs.values():
                gw.index.remove(sub)
            self.subs.clear()
            gw.connections.discard(self)

    async def handle(self, data: str | bytes) -> None:
        msg = rp.decode(data)
        try:
            await self._dispatch(msg)
        except StoreError as exc:
            # An API key could not be looked up: the store, not the client, failed. Answered as such (and
            # retried by the client), instead of the connection dropped with the exception.
            log.warning("realtime %s: could not check its API key: %s", type(msg).__name__, exc)
            reason = f"could not check the API key (the store is unavailable): {exc}"[: rp.MAX_ERROR_MESSAGE]
            if isinstance(msg, rp.Subscribe):
                self.reply(rp.error_frame("subscribe_error", msg.id, "SubscriptionProcessingError", reason))
            elif isinstance(msg, rp.Publish):
                self.reply(rp.error_frame("publish_error", msg.id, "MessageProcessingError", reason))
            else:
                with contextlib.suppress(ConnectionError):
                    await self.ws.send_frame(rp.connection_error("ServiceUnavailable", 503, reason), WSMsgType.TEXT)
                await self.close(1011, "the store is unavailable")

    async def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, rp.ProtocolError):
            self.reply(msg.encode())
        elif isinstance(msg, rp.ConnectionInit):
            await self._connection_init(msg)
        elif isinstance(msg, rp.Subscribe):
            await self._subscribe(msg)
        elif isinstance(msg, rp.Unsubscribe):
            self._unsubscribe(msg)
        elif isinstance(msg, rp.Publish):
            await self._publish(msg)

    async def _connection_init(self, msg: rp.ConnectionInit) -> None:
        if self.key is not None and await self.gateway.role_of(self.key) is None:
            # Written directly, not queued: it must reach the client before the close, whatever the flush tick.
            with contextlib.suppress(ConnectionError):
                await self.ws.send_frame(rp.connection_error(rp.UNAUTHORIZED, 401, "invalid API key"), WSMsgType.TEXT)
            await self.close(CLOSE_UNAUTHORIZED, "invalid API key")
            return
        if isinstance(msg.payload, dict) and msg.payload.get("batch") is True:
            self.batch = True
        self.acked = True
        self.reply(rp.connection_ack(self.gateway.settings.connection_timeout_ms))

    def _key(self, authorization: dict[str, Any] | None) -> str | None:
        """The API key a message acts with: its own `authorization`, else the one given at connect. A message
        whose authorization names a key that is no key (a number, "") acts with none: it fell back on the
        connection's, and the client's bug showed only on AWS, which checks what the message carries."""
        if rp.names_api_key(authorization):
            return rp.api_key_of(authorization) or None
        return self.key

    async def _role(self, authorization: dict[str, Any] | None) -> Role | None:
        key = self._key(authorization)
        return await self.gateway.role_of(key) if key else None

    async def _subscribe(self, msg: rp.Subscribe) -> None:
        gw = self.gateway

        def refuse(error_type: str, message: str) -> None:
            self.reply(rp.error_frame("subscribe_error", msg.id, error_type, message))

        if await self._role(msg.authorization) is None:
            return refuse(rp.UNAUTHORIZED, "subscribing needs a valid API key (x-api-key)")
        try:
            pattern = channels.normalise(msg.channel, wildcard=True)
        except channels.ChannelError as exc:
            return refuse(rp.BAD_REQUEST, str(exc))
        if not gw.known_namespace(channels.namespace(pattern)):
            return refuse(rp.BAD_REQUEST, f"namespace {channels.namespace(pattern)!r} does not exist")
        if msg.id in self.subs:
            return refuse(rp.BAD_REQUEST, f"subscription id {msg.id!r} is already in use on this connection")
        if len(self.subs) >= gw.settings.max_subscriptions:
            return refuse(rp.LIMIT_EXCEEDED, f"at most {gw.settings.max_subscriptions} subscriptions per connection")
        await gw.turns.take()  # the snapshot: one subscriber's per loop turn
        if self._closing:
            return None
        sub = Subscription(self, msg.id, pattern, self._key(msg.authorization))
        self.subs[msg.id] = sub
        gw.index.add(sub)  # live publications are buffered for it from now on: nothing falls in a gap
        try:
            snapshot = await gw.broker.snapshot(pattern)
            head = await gw.store.head_offset() if channels.durable_scope(pattern) else None
            recovered, history = await self._history(pattern, msg.since, head)
        except Exception as exc:
            log.exception("subscribe %s failed", pattern)
            gw.index.remove(sub)
            del self.subs[msg.id]
            self.outbox.forget(msg.id)
            return refuse("SubscriptionProcessingError", f"could not load the current state: {exc}")
        if self.subs.get(msg.id) is not sub:  # unsubscribed while we were loading
            return None
        self.reply(rp.subscribe_success(msg.id, recovered, head))
        size = 0
        if snapshot and not (self._closing or self._closer is not None):
            # Latest values, each encoded once for all the snapshots that include it, go into the
            # subscription's pending values in one update: a dashboard reconnecting to /trading/* gets
            # hundreds, and a push each was the biggest part of what a reconnect storm costs the hub.
            literals = [literal_of(pub) for pub in snapshot]
            sub.pending.update(zip([pub.channel for pub in snapshot], literals, strict=True))
            size = sum(map(len, literals))
            gw.mark_dirty(self)
        replayed = set()
        for pub in history:
            literal = literal_of(pub)
            size += len(literal)
            self.push(sub, pub, literal)
            replayed.add(pub.offset)
        if size >= SNAPSHOT_BYTES_PER_MESSAGE:
            self._rate.take(size // SNAPSHOT_BYTES_PER_MESSAGE)  # the next message waits for it, if need be
        buffered = set()
        for pub, literal in sub.buffer:
            # Skipped only if the history had it: an offset below the history's highest may have been
            # committed after the history was read (another node's, taken earlier and committed later).
            if pub.offset is not None and pub.offset in replayed:
                buffered.add(pub.offset)
                continue
            self.push(sub, pub, literal)
        sub.buffer = []
        if replayed:
            # The history may hold offsets whose live publication has not arrived yet (committed by another
            # node, its publish still on the backplane): dropped when they come, for the next few seconds.
            sub.replayed = replayed - buffered
            asyncio.get_running_loop().call_later(REPLAY_DEDUPE_S, _forget_replayed, sub)
        gw.index.ready(sub)  # its routes take it in directly from now on
        return None

    async def _history(
        self, pattern: str, since: int | None, head: int | None
    ) -> tuple[bool | None, list[Publication]]:
        """(recovered, the publications after `since`). None: nothing to recover (no `since`, or a channel
        without history, where "recovered" would promise what was missed). False: not recovered (more than
        `history_limit`, or a `since` past this store's head: an offset from another or a reset store, which
        kept would skip every event up to it); the client then reloads and takes subscribe_success's offset."""
        if since is None or head is None:
            return None, []
        if since > head:
            return False, []
        limit = self.gateway.settings.history_limit
        # Lower offsets that reached this node after `since` had: the subscriber may have gone before them.
        items = self.gateway.late.missable(since, pattern)
        for kind, account in channels.durable_scope(pattern):
            rows = await self.gateway.store.history(kind, account, since, limit + 1)
            items.extend(Publication(ch, data, latest=False, offset=off) for ch, off, data in rows)
        if len(items) > limit:
            return False, []
        items.sort(key=lambda p: p.offset or 0)
        return True, items

    def _unsubscribe(self, msg: rp.Unsubscribe) -> None:
        sub = self.subs.pop(msg.id, None)
        if sub is None:
            self.reply(
                rp.error_frame("unsubscribe_error", msg.id, rp.UNKNOWN_OPERATION, f"Unknown operation id {msg.id}")
            )
            return
        self.gateway.index.remove(sub)
        self.outbox.forget(msg.id)
        self.reply(rp.unsubscribe_success(msg.id))

    async def _publish(self, msg: rp.Publish) -> None:
        def refuse(error_type: str, message: str) -> None:
            self.reply(rp.error_frame("publish_error", msg.id, error_type, message))

        try:
            channel = channels.normalise(msg.channel)
        except channels.ChannelError as exc:
            return refuse(rp.BAD_REQUEST, str(exc))
        denied = self.gateway.check_publish(channel, await self._role(msg.authorization))
        if denied is not None:
            return refuse(*denied)
        problem = rp.validate_events(msg.events)
        if problem is not None:
            return refuse(rp.BAD_REQUEST, problem)
        successful = await self.gateway.publish_events(channel, msg.events)
        self.reply(rp.publish_success(msg.id, successful, []))
        return None
