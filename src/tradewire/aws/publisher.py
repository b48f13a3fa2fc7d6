"""Publish to AppSync Events over its HTTP endpoint: `POST /event` `{channel, events: [JSON strings]}`.

Auth: the function's IAM role, each POST signed with SigV4 for service `appsync` (botocore's signer; the
credentials are the Lambda's own). The deployment (deploy/aws/template.yaml) lets only IAM publish, so the
API key that dashboards subscribe with cannot write to `trading`. An API key (`x-api-key`, env
`TRADEWIRE_APPSYNC_API_KEY`) is used instead where one is given: a stand-in hub in tests, or an API whose
publish mode is API_KEY.

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

    def __init__(
        self,
        url: str,
        api_key: str = "",
        namespace: str = channels.NAMESPACE,
        timeout_s: float = 5.0,
        *,
        region: str = "",
        credentials: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/event"):
            self.url += "/event"
        self.api_key = api_key
        self.region = region
        self._credentials = credentials  # botocore credentials; None: the environment's (the Lambda role)
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
        body = _encode({"channel": channel, "events": events})
        async with self._session.post(self.url, data=body, headers=self._headers(body)) as r:
            body = await r.read()
            if r.status >= 300:
                raise PublishError(f"POST {self.url} {channel}: HTTP {r.status} {body[:300]!r}")
            failed = msgspec.json.decode(body).get("failed") if body else None
            if failed:
                raise PublishError(f"POST {self.url} {channel}: {len(failed)} event(s) failed: {failed[:1]}")

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            return {**headers, "x-api-key": self.api_key}
        if self._credentials is None:
            import botocore.session  # only where IAM signs: tests and stand-ins use a key

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise PublishError("no API key and no AWS credentials to sign the publish with")
        return sigv4_headers(self.url, body, headers, self._credentials, self.region)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def sigv4_headers(url: str, body: bytes, headers: dict[str, str], credentials: Any, region: str) -> dict[str, str]:
    """`headers` plus the SigV4 ones (Authorization, X-Amz-Date, X-Amz-Security-Token with temporary
    credentials) for `POST url` with `body`, service `appsync`."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    if not region:
        raise PublishError("signing a publish needs the API's region (AWS_REGION)")
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    frozen = credentials.get_frozen_credentials() if hasattr(credentials, "get_frozen_credentials") else credentials
    SigV4Auth(frozen, "appsync", region).add_auth(request)
    return dict(request.headers.items())
