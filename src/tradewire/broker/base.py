"""The Broker interface: how publications reach every node, and where latest values live.

A node publishes; the broker delivers every publication to every node's `deliver` callback
(in-process for the memory broker, across processes for Redis) and keeps the latest value of each
latest-wins channel so that any node can serve a snapshot. Durable history is not the broker's job:
it comes from the Store, by offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class Publication:
    channel: str
    data: bytes  # the event as JSON: what a subscriber receives as the `event` string
    latest: bool  # latest-wins: may be conflated for a slow subscriber, kept for snapshots
    offset: int | None = None  # durable channels: the store offset, for `since`


Deliver = Callable[[Publication], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    async def stop(self) -> None: ...
    def publish(self, pub: Publication) -> None: ...
    async def snapshot(self, pattern: str) -> list[Publication]: ...

    # EA session presence across nodes, so CONNECTION_LOST is raised once and not for an EA that
    # simply reconnected to another node (the memory broker has one node: it knows nothing more).
    def session_started(self, account: str) -> None: ...
    def session_ended(self, account: str) -> None: ...
    async def live_accounts(self) -> set[str]: ...
    async def last_seen(self) -> dict[str, int]: ...


class NoPresence:
    """One node: nothing beyond what that node's hub sees itself."""

    def session_started(self, account: str) -> None:
        pass

    def session_ended(self, account: str) -> None:
        pass

    async def live_accounts(self) -> set[str]:
        return set()

    async def last_seen(self) -> dict[str, int]:
        return {}
