"""Publish to AppSync Events over its HTTP endpoint: `POST /event` `{channel, events: [JSON strings]}`.

Auth is the API key (`x-api-key`, env `TRADEWIRE_APPSYNC_API_KEY`). TODO: SigV4 (IAM auth) for
deployments that disable API keys — sign the POST with botocore's SigV4Auth for service `appsync`.

The channels are DESIGN §6's; the namespace is `TRADEWIRE_APPSYNC_NAMESPACE` (default `trading`), so a
stand-in hub in tests can take them in a namespace it lets clients publish to. AppSync takes at most
5 events per request: publications are grouped per channel, in order, 5 at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import msgspec

from tradewire import channels

log = logging.getLogger(__name__)
MAX_EVENTS_PER_REQUEST = 5
_encode = msgspec.json.Encoder().encode


class PublishError(Exception):
    pass


def in_namespace(channel: str, namespace: str) -> str:
    """A DESIGN §6 channel (`/trading/...`) moved into another namespace."""
    if namespace == channels.NAMESPACE:
        return channel
    head = f"/{channels.NAMESPACE}/"
    return f"/{namespace}/{channel[len(head) :]}" if channel.startswith(head) else channel


class EventPublisher:
    """Collects publications during one invocation; `flush()` sends them."""

    def __init__(self, url: str, api_key: str, namespace: str = channels.NAMESPACE, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/event"):
            self.url += "/event"
        self.api_key = api_key
        self.namespace = namespace
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.pending: list[tuple[str, bytes]] = []
        self.sent = 0
        self._session: aiohttp.ClientSession | None = None

    def publish(self, channel: str, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else _encode(payload)
        self.pending.append((in_namespace(channel, self.namespace), data))

    async def flush(self) -> None:
        """Send everything pending; PublishError if AppSync refused any of it (the rest is still sent)."""
        pending, self.pending = self.pending, []
        by_channel: dict[str, list[str]] = {}
        for channel, data in pending:
            by_channel.setdefault(channel, []).append(data.decode())
        requests = [
            (channel, events[i : i + MAX_EVENTS_PER_REQUEST])
            for channel, events in by_channel.items()
            for i in range(0, len(events), MAX_EVENTS_PER_REQUEST)
        ]
        if not requests:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        results = await asyncio.gather(*(self._post(c, e) for c, e in requests), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.sent += sum(len(e) for (_, e), r in zip(requests, results, strict=True) if r is None)
        if failures:
            raise PublishError(f"{len(failures)} of {len(requests)} publish request(s) failed: {failures[0]}")

    async def _post(self, channel: str, events: list[str]) -> None:
        assert self._session is not None
        headers = {"x-api-key": self.api_key, "content-type": "application/json"}
        async with self._session.post(
            self.url, data=_encode({"channel": channel, "events": events}), headers=headers
        ) as r:
            body = await r.read()
            if r.status >= 300:
                raise PublishError(f"POST {self.url} {channel}: HTTP {r.status} {body[:300]!r}")
            failed = msgspec.json.decode(body).get("failed") if body else None
            if failed:
                raise PublishError(f"POST {self.url} {channel}: {len(failed)} event(s) failed: {failed[:1]}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
