"""A bounded queue whose producers take turns: what one of them floods it with delays and pushes out its own
items, not the others'; and whose urgent items go first and are dropped last.

The webhook notifier queues one delivery per alert transition, and a webhook takes them one at a time. In one
FIFO, an EA that reports errors in a loop (each one a SYSTEM_ERROR alert) would put thousands of deliveries
ahead of another account's MARGIN_CALL, and once the queue was full it would push that one out. Here items
wait per key (the account), the consumer takes one key's oldest item at a time, round robin over the keys
with something queued, and a full queue drops the oldest item of the key that holds the most.

Items put as `urgent` (the notifier's: an episode raised, which an account can have only a few of at once)
wait in a lane of their own, served before the other lane and dropped only when the other lane is empty: an
account's own error loop can no longer push out its STOP_OUT, nor a fleet-wide reconnect wave delay it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Lane(Generic[T]):
    """Items by key, keys in turn order (served from the front; a key with items left moves to the back)."""

    __slots__ = ("by_key", "longest", "size")

    def __init__(self) -> None:
        self.by_key: dict[str, deque[T]] = {}
        self.size = 0
        # The key holding the most (give or take the one a drop took), kept as items are put, so that a drop in
        # a flood does not scan every key: a key only grows by a put, so one that outgrows it is seen then.
        # None (at first, or once a get took from it): the next drop scans.
        self.longest: str | None = None

    def put(self, key: str, item: T) -> None:
        items = self.by_key.setdefault(key, deque())
        items.append(item)
        self.size += 1
        if self.longest is not None and len(items) > len(self.by_key[self.longest]):
            self.longest = key

    def pop(self) -> T:
        key = next(iter(self.by_key))
        items = self.by_key.pop(key)
        item = items.popleft()
        if items:
            self.by_key[key] = items  # to the back: every other key with items goes first
        if key == self.longest:
            self.longest = None
        self.size -= 1
        return item

    def drop(self) -> T:
        """The oldest item of the key holding the most."""
        key = self.longest
        if key is None:
            key = self.longest = max(self.by_key, key=lambda k: len(self.by_key[k]))
        items = self.by_key[key]
        item = items.popleft()
        if not items:
            del self.by_key[key]
            self.longest = None
        self.size -= 1
        return item


class FairQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._urgent: _Lane[T] = _Lane()
        self._normal: _Lane[T] = _Lane()
        self._unfinished = 0  # queued or being handled: join() waits for 0
        self._nonempty = asyncio.Event()
        self._finished = asyncio.Event()
        self._finished.set()

    def qsize(self) -> int:
        return self._urgent.size + self._normal.size

    def empty(self) -> bool:
        return not self.qsize()

    def put(self, key: str, item: T, *, urgent: bool = False) -> T | None:
        """Queue `item` behind `key`'s earlier ones (in its lane). When that makes the queue too long, the
        oldest item of the key with the most queued is dropped and returned (the one flooding the queue, not a
        neighbour), from the other lane unless it is empty."""
        (self._urgent if urgent else self._normal).put(key, item)
        self._unfinished += 1
        self._finished.clear()
        self._nonempty.set()
        if self.qsize() <= self.maxsize:
            return None
        dropped = (self._normal if self._normal.size else self._urgent).drop()
        self._done()
        return dropped

    async def get(self) -> T:
        """The oldest item of the key whose turn it is, urgent ones first; waits while the queue is empty."""
        while self.empty():
            self._nonempty.clear()
            await self._nonempty.wait()
        return (self._urgent if self._urgent.size else self._normal).pop()

    def waiting(self, key: str) -> Iterable[T]:
        """`key`'s items in the ordinary lane (not urgent), oldest first."""
        return self._normal.by_key.get(key, ())

    def items(self) -> list[T]:
        """Everything queued, urgent first (what a shutdown leaves behind)."""
        return [item for lane in (self._urgent, self._normal) for items in lane.by_key.values() for item in items]

    def task_done(self) -> None:
        """An item taken with get() has been handled."""
        self._done()

    async def join(self) -> None:
        """Wait until every item put has been dropped, cleared or taken and handled."""
        await self._finished.wait()

    def clear(self) -> int:
        """Forget everything queued; returns how many items that was."""
        count = self.qsize()
        self._urgent, self._normal = _Lane(), _Lane()
        for _ in range(count):
            self._done()
        return count

    def _done(self) -> None:
        self._unfinished -= 1
        if self._unfinished <= 0:
            self._unfinished = 0
            self._finished.set()
