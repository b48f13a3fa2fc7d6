"""`POST /event`: AppSync Events HTTP publish, and CORS for browser clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from tradewire import channels
from tradewire.appkeys import GATEWAY, HUB
from tradewire.realtime import protocol as rp
from tradewire.store.base import StoreError

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "x-api-key, authorization, x-amz-user-agent, x-amz-date, content-type",
    "Access-Control-Expose-Headers": "x-amzn-ErrorType",
    "Access-Control-Max-Age": "600",
}
CORS_PATHS = ("/event", "/api/")


class PublishBody(msgspec.Struct):
    channel: str
    events: list[str]


_body = msgspec.json.Decoder(PublishBody)
_encode = msgspec.json.encode


def aws_error(status: int, error_type: str, message: str) -> web.Response:
    # `errors` as AppSync answers; top-level `code`/`message` because that is where the Amplify
    # client reads an HTTP error's message from (else it reports "Unknown error").
    body = _encode({"errors": [{"errorType": error_type, "message": message}], "code": error_type, "message": message})
    return web.Response(
        status=status, body=body, content_type="application/json", headers={"x-amzn-ErrorType": error_type}
    )


async def post_event(request: web.Request) -> web.Response:
    hub, gateway = request.app[HUB], request.app[GATEWAY]
    key = request.headers.get("x-api-key")
    try:
        role = await hub.api_role(key) if key else None
    except StoreError as exc:
        return aws_error(503, "ServiceUnavailable", f"could not check the API key (the store is unavailable): {exc}")
    if role is None:
        return aws_error(401, rp.UNAUTHORIZED, "missing API key (x-api-key)" if not key else "invalid API key")
    try:
        # AppSync takes 1.2 MB per publish (5 events of 240 KB); JSON-escaped that is up to the WebSocket's
        # frame limit, not the EA frame limit the application's default applies.
        raw = await request.clone(client_max_size=rp.MAX_PUBLISH_BYTES).read()
    except web.HTTPRequestEntityTooLarge:
        return aws_error(413, rp.BAD_REQUEST, f"body exceeds the {rp.MAX_PUBLISH_BYTES}-byte limit")
    try:
        body = _body.decode(raw)
    except msgspec.DecodeError as exc:
        return aws_error(400, rp.BAD_REQUEST, f"body must be {{channel, events: [JSON strings]}}: {exc}")
    except rp.UNDECODABLE as exc:
        return aws_error(400, rp.BAD_REQUEST, f"body is not valid JSON: {rp.undecodable(exc)}")
    try:
        channel = channels.normalise(body.channel)
    except channels.ChannelError as exc:
        return aws_error(400, rp.BAD_REQUEST, str(exc))
    denied = gateway.check_publish(channel, role)
    if denied is not None:
        return aws_error(403 if denied[0] == rp.UNAUTHORIZED else 400, *denied)
    problem = rp.validate_events(body.events)
    if problem is not None:
        return aws_error(400, rp.BAD_REQUEST, problem)
    successful = await gateway.publish_events(channel, body.events)
    return web.Response(body=_encode({"successful": successful, "failed": []}), content_type="application/json")


@web.middleware
async def cors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    if not request.path.startswith(CORS_PATHS):
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response
