"""The Broker interface: how publications reach every node, and where latest values live.

A node publishes; the broker delivers every publication to every node's `deliver` callback
(in-process for the memory broker, across processes for Redis) and keeps the latest value of each
latest-wins channel so that any node can serve a snapshot. Durable history is not the broker's job:
it comes from the Store, by offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec


class Publication:
    """One message on a channel.

    `data` is the event as JSON: what a subscriber receives as the `event` string. A publication made
    from a value (`Publication.of`) encodes it on first use, so a tick that nobody subscribes to and
    no snapshot asks for costs no encoding; values are never mutated after publishing (the live
    state replaces its records), so encoding later gives the same bytes. A hand-written slots class,
    not a frozen dataclass: one is made per tick, and a frozen dataclass costs ~7x more to build.
    """

    __slots__ = ("_data", "_value", "channel", "latest", "literal", "offset")

    def __init__(self, channel: str, data: bytes, latest: bool, offset: int | None = None) -> None:
        self.channel = channel
        self._data: bytes | None = data
        self._value: Any = None
        self.latest = latest  # latest-wins: may be conflated for a slow subscriber, kept for snapshots
        self.offset = offset  # durable channels: the store offset, for `since`
        # The gateway's encoding of `data` as a JSON string (the `event` field), kept with the value: a
        # latest value is then encoded once, not again for every snapshot that includes it.
        self.literal: bytes | None = None

    @classmethod
    def of(cls, channel: str, value: Any, latest: bool, offset: int | None = None) -> Publication:
        pub = cls.__new__(cls)
        pub.channel, pub._data, pub._value, pub.latest, pub.offset = channel, None, value, latest, offset
        pub.literal = None
        return pub

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            data = self._data = _encode(self._value)
            self._value = None
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Publication):
            return NotImplemented
        return (self.channel, self.data, self.latest, self.offset) == (
            other.channel,
            other.data,
            other.latest,
            other.offset,
        )

    def _key(self) -> tuple:
        return (self.channel, self.data, self.latest, self.offset)

    __hash__ = None  # type: ignore[assignment]  # mutable (lazily encoded): not a dict key

    def __repr__(self) -> str:
        return f"Publication({self.channel!r}, {self.data!r}, latest={self.latest}, offset={self.offset})"


_encode = msgspec.json.Encoder().encode
Deliver = Callable[[Publication], None]


class Broker(Protocol):
    async def start(self, deliver: Deliver) -> None: ...
    async def stop(self) -> None: ...
    def publish(self, pub: Publication) -> None: ...
    async def snapshot(self, pattern: str) -> list[Publication]: ...
    def problem(self) -> str | None: ...  # why this node cannot fan out right now (readyz), or None
    async def forget(self, channels: list[str]) -> None: ...  # drop their latest values (a retired account's)

    # EA session presence across nodes, so CONNECTION_LOST is raised once and not for an EA that
    # simply reconnected to another node (the memory broker has one node: it knows nothing more).
    def session_started(self, account: str) -> None: ...
    def session_ended(self, account: str) -> None: ...
    async def live_accounts(self) -> set[str]: ...  # with a session on another node
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

    async def snapshot(self, pattern: str) -> list[Publication]:
        return []
