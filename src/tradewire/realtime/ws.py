"""`GET /event/realtime`: the AppSync Events WebSocket endpoint."""

from __future__ import annotations

from aiohttp import web

from tradewire.appkeys import GATEWAY, HUB
from tradewire.ingest.ws import admit, connect_refused
from tradewire.realtime import protocol as rp
from tradewire.realtime.gateway import Connection
from tradewire.redact import install_secret_filter
from tradewire.store.base import StoreError

# aiohttp picks a subprotocol from the first Sec-WebSocket-Protocol line only and, finding none of its own
# there, warns quoting what was offered: the `header-…` auth subprotocol, an API key in base64.
install_secret_filter("aiohttp.websocket")


def _offered_subprotocols(request: web.Request) -> list[str]:
    offered: list[str] = []
    for header in request.headers.getall("Sec-WebSocket-Protocol", []):
        offered.extend(p.strip() for p in header.split(",") if p.strip())
    return offered


async def realtime_websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    # Checks, then the upgrade: one connection's per loop turn, however many arrive together (turns.py).
    await request.app[GATEWAY].turns.take()
    refused = admit(hub, request)
    if refused is not None:
        return refused
    try:
        return await _realtime_websocket(request)
    finally:
        hub.caps.release(request.remote or "?")


async def _realtime_websocket(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    # Auth arrives base64url-encoded in a `header-…` subprotocol (browsers, Amplify JS) or as plain
    # headers on the upgrade (the Swift SDK, scripts).
    auth = rp.auth_from_subprotocols(_offered_subprotocols(request)) or {}
    key = rp.api_key_of(auth) or request.headers.get("x-api-key")
    hub = request.app[HUB]
    # Only a valid key has a rate of its own: a wrong one is refused after the upgrade, as AppSync does.
    try:
        known = bool(key) and await hub.api_role(key) is not None
    except StoreError as exc:  # answered before the upgrade: a 503 the client retries, not a 500
        return web.json_response(
            {"error": f"could not check the API key (the store is unavailable): {exc}"}, status=503
        )
    if key and known and (refused := connect_refused(hub, "key:" + key, "this API key")):
        return refused
    # No permessage-deflate: browsers always offer it, and aiohttp compresses a frame over 16 KiB in its thread
    # pool chunk by chunk, so a dashboard's batch frames waited on dozens of round trips each (bench/dashboard_fps.py).
    ws = web.WebSocketResponse(
        protocols=[rp.SUBPROTOCOL], max_msg_size=rp.MAX_PUBLISH_BYTES, autoping=True, compress=False
    )
    await ws.prepare(request)
    await Connection(gateway, ws, key).run()
    return ws
