"""In-process broker: the embedded default. Delivery is a direct call; latest values live in a dict."""

from __future__ import annotations

from tradewire.broker.base import Deliver, NoPresence, Publication


class MemoryBroker(NoPresence):  # one node: the hub's own view of sessions is the whole truth
    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._latest: dict[str, Publication] = {}
        self.published = 0

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def problem(self) -> str | None:
        return None  # in the process: up while the process is

    async def stop(self) -> None:
        self._deliver = None

    def publish(self, pub: Publication) -> None:
        self.published += 1
        if pub.latest:
            self._latest[pub.channel] = pub
        if self._deliver is not None:
            self._deliver(pub)

    async def forget(self, channels: list[str]) -> None:
        for channel in channels:
            self._latest.pop(channel, None)

    async def snapshot(self, pattern: str) -> list[Publication]:
        if not pattern.endswith("/*"):
            pub = self._latest.get(pattern)
            return [pub] if pub is not None else []
        prefix = pattern[:-1]  # what matches() tests, without a call per channel (every value, per subscribe)
        return [pub for channel, pub in self._latest.items() if channel.startswith(prefix)]
