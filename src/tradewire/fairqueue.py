"""A bounded queue whose producers take turns: what one of them floods it with delays and pushes out its own
items, not the others'.

The webhook notifier queues one delivery per alert transition, and a webhook takes them one at a time. In one
FIFO, an EA that reports errors in a loop (each one a SYSTEM_ERROR alert) would put thousands of deliveries
ahead of another account's MARGIN_CALL, and once the queue was full it would push that one out. Here items
wait per key (the account), the consumer takes one key's oldest item at a time, round robin over the keys
with something queued, and a full queue drops the oldest item of the key that holds the most.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        # Keys in turn order: a key is served from the front and, if it still has items, moves to the back.
        self._by_key: dict[str, deque[T]] = {}
        self._size = 0
        self._unfinished = 0  # queued or being handled: join() waits for 0
        self._nonempty = asyncio.Event()
        self._finished = asyncio.Event()
        self._finished.set()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return not self._size

    def put(self, key: str, item: T) -> T | None:
        """Queue `item` behind `key`'s earlier ones. When that makes the queue too long, the oldest item of
        the key with the most queued is dropped and returned (the one flooding the queue, not a neighbour)."""
        self._by_key.setdefault(key, deque()).append(item)
        self._size += 1
        self._unfinished += 1
        self._finished.clear()
        self._nonempty.set()
        if self._size <= self.maxsize:
            return None
        longest = max(self._by_key, key=lambda k: len(self._by_key[k]))
        dropped = self._by_key[longest].popleft()
        if not self._by_key[longest]:
            del self._by_key[longest]
        self._size -= 1
        self._done()
        return dropped

    async def get(self) -> T:
        """The oldest item of the key whose turn it is; waits while the queue is empty."""
        while not self._size:
            self._nonempty.clear()
            await self._nonempty.wait()
        key = next(iter(self._by_key))
        items = self._by_key.pop(key)
        item = items.popleft()
        if items:
            self._by_key[key] = items  # to the back: every other key with items goes first
        self._size -= 1
        return item

    def task_done(self) -> None:
        """An item taken with get() has been handled."""
        self._done()

    async def join(self) -> None:
        """Wait until every item put has been dropped, cleared or taken and handled."""
        await self._finished.wait()

    def clear(self) -> int:
        """Forget everything queued; returns how many items that was."""
        count = self._size
        self._by_key.clear()
        self._size = 0
        for _ in range(count):
            self._done()
        return count

    def _done(self) -> None:
        self._unfinished -= 1
        if self._unfinished <= 0:
            self._unfinished = 0
            self._finished.set()
