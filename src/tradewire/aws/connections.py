"""Replies to an EA over the API Gateway `@connections` management API, behind a small interface.

`PostToConnection` sends one frame to a connection, `DeleteConnection` closes it. Tests plug in
`RecordingConnections`; on AWS `ApiGatewayConnections` calls the management API (SigV4 through
aiobotocore, permission `execute-api:ManageConnections`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)


class Connections(Protocol):
    async def post(self, connection_id: str, data: bytes) -> bool:
        """Send one frame; False when the connection is gone (410 GoneException)."""
        ...

    async def delete(self, connection_id: str) -> None: ...

    async def close(self) -> None: ...


class RecordingConnections:
    """Keeps every call: what a test checks the EA would have received."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.deleted: list[str] = []
        self.gone: set[str] = set()

    async def post(self, connection_id: str, data: bytes) -> bool:
        if connection_id in self.gone:
            return False
        self.posts.append((connection_id, data))
        return True

    async def delete(self, connection_id: str) -> None:
        self.deleted.append(connection_id)

    async def close(self) -> None:
        pass

    def sent(self, connection_id: str | None = None) -> list[dict]:
        import json

        return [json.loads(data) for cid, data in self.posts if connection_id in (None, cid)]


def management_endpoint(request_context: dict[str, Any]) -> str:
    """`https://{domainName}/{stage}` of the API the event came through (the management API's base URL)."""
    domain = request_context.get("domainName", "")
    stage = request_context.get("stage", "")
    return f"https://{domain}/{stage}"


class ApiGatewayConnections:
    """The real `@connections` API. One client per endpoint, opened on first use."""

    def __init__(self, endpoint: str, region: str | None = None) -> None:
        self.endpoint = endpoint
        self.region = region
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def _open(self) -> Any:
        if self._client is None:
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "apigatewaymanagementapi", endpoint_url=self.endpoint, region_name=self.region
                )
            )
        return self._client

    async def post(self, connection_id: str, data: bytes) -> bool:
        client = await self._open()
        try:
            await client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "GoneException":
                return False
            raise
        return True

    async def delete(self, connection_id: str) -> None:
        client = await self._open()
        with contextlib.suppress(ClientError, BotoCoreError):
            await client.delete_connection(ConnectionId=connection_id)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._client = None
