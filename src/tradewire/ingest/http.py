"""EA ingest over HTTP: `POST /ea/v1/batch` for MT4, whose MQL has no sockets (WebRequest only).

Body `{"hello": {...}, "messages": [...]}`; the answer comes after every durable message in the
body has committed: `{"ackedSeq": N, "errors": [...]}`. Each POST counts as a heartbeat. A store
failure answers 503 and acks nothing, so the EA posts the same messages again later.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from aiohttp import web

from tradewire.appkeys import HUB
from tradewire.hub import Hub, LoginChanged
from tradewire.ingest import protocol as p
from tradewire.ingest.session import Durable, Greet, Reply, SessionCore, Step, Volatile
from tradewire.ingest.ws import bearer_token
from tradewire.limits import retry_after
from tradewire.store.base import DurableStream, StoreError

log = logging.getLogger(__name__)


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    hello: msgspec.Raw = msgspec.Raw(b"null")  # decoded on its own so that MT4 may omit its "type"
    messages: list[msgspec.Raw] = []


_body_decoder = msgspec.json.Decoder(BatchBody)
_hello_decoder = msgspec.json.Decoder(p.Hello)
_encoder = msgspec.json.Encoder()


class BadBody(ValueError):
    """A batch body refused as a whole (400): `code` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_body(raw: bytes) -> tuple[p.Hello | None, list[p.ClientMsg | p.ErrorReply]]:
    """The body's hello (None when omitted) and its messages, a bad one as an ErrorReply in its place."""
    try:
        body = _body_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadBody(p.INVALID_MESSAGE, f"body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadBody(p.BAD_JSON, f"body: {exc}") from None
    except p.UNDECODABLE as exc:
        raise BadBody(p.BAD_JSON, f"body: {p.undecodable(exc)}") from None
    if bytes(body.hello) == b"null":
        return None, p.decode_items(body.messages)
    try:
        hello = _hello_decoder.decode(body.hello)
    except msgspec.ValidationError as exc:
        raise BadBody(p.INVALID_MESSAGE, f"hello: {exc}") from None
    except msgspec.DecodeError as exc:  # not UTF-8 inside the hello (msgspec >= 0.23)
        raise BadBody(p.BAD_JSON, f"hello: {exc}") from None
    except p.UNDECODABLE as exc:
        raise BadBody(p.BAD_JSON, f"hello: {p.undecodable(exc)}") from None
    return hello, p.decode_items(body.messages)


def _live(hub: Hub, view) -> bool:
    return view.status(hub.clock(), hub.state.http_live_ms) == "live"


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encoder.encode({"error": {"code": code, "message": message}}),
        content_type="application/json",
    )


STORE_DOWN = "store unavailable; nothing after this was acked, resend"


async def ea_batch(request: web.Request) -> web.Response:
    try:
        return await _ea_batch(request)
    except StoreError as exc:  # a read (the token, the hello's positions, the acked seq) failed: retry later
        log.warning("MT4 batch: store unavailable: %s", exc)
        return json_error(503, p.STORE_UNAVAILABLE, STORE_DOWN)
    except LoginChanged as exc:  # before anything of the batch was applied (the hello goes first)
        log.warning("MT4 batch refused: %s", exc)
        return json_error(409, p.LOGIN_CHANGED, str(exc))


async def _ea_batch(request: web.Request) -> web.Response:
    hub: Hub = request.app[HUB]
    token = bearer_token(request)
    account = await hub.ea_account(token) if token else None
    if account is None:
        return json_error(401, "unauthorized", "missing bearer token" if token is None else "invalid or revoked token")
    if hub.draining:
        return json_error(503, "shutting_down", "server shutting down; retry")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = hub.settings.server.max_frame_bytes
        return json_error(413, "too_large", f"body exceeds the {limit}-byte limit")
    try:
        hello, items = decode_body(raw)
    except BadBody as exc:
        return json_error(400, exc.code, str(exc))
    count = len(items) + (hello is not None)
    burst = hub.settings.limits.ea_burst
    if count > burst:  # more than the account's bucket ever holds: a 429 would be retried forever
        return json_error(
            413, "too_large", f"a batch of {count} messages is over [limits] ea_burst ({burst}); send smaller batches"
        )
    delay = hub.throttle(account, count)
    if delay:
        hub.refund(account, count)
        refused = json_error(429, p.RATE_LIMITED, f"over {hub.settings.limits.ea_messages_per_s:g} messages/s; retry")
        refused.headers["Retry-After"] = retry_after(delay)
        return refused
    # An account greeted by an earlier POST within the liveness window need not repeat hello; nor one greeted
    # by another node, live there (several nodes behind a load balancer: its POSTs may come to any of them).
    view = hub.state.accounts.get(account)
    greeted = view is not None and view.transport == "http" and _live(hub, view)
    if not greeted and hello is None and (info := await hub.http_greeted_elsewhere(account)) is not None:
        await hub.greet(account, info, "http")
        greeted = True
    core = SessionCore(account, greeted=greeted)
    now = hub.touch(account)  # each POST is a heartbeat: only after the liveness check above

    errors: list[p.ErrorReply] = []
    durable: list[tuple[p.DurableMsg, asyncio.Future]] = []
    stream = DurableStream()  # this batch's durable messages: one that fails fails the later ones untried
    welcome: p.Welcome | None = None
    steps: list[tuple[int | None, Step]] = [(None, s) for s in core.steps([hello])] if hello is not None else []
    many = len(items) > 1  # as for every other error: an index only among several messages
    steps += ((i if many else None, s) for i, s in enumerate(core.steps(items)))
    for index, step in steps:
        if isinstance(step, Greet):
            welcome = await hub.greet(account, step.hello, "http")
        elif isinstance(step, Volatile):
            refused = hub.apply_volatile(account, step.msg, now)  # the request's time: one clock read, one touch
            if refused is not None:
                errors.append(refused if index is None else msgspec.structs.replace(refused, index=index))
        elif isinstance(step, Durable):
            durable.append((step.msg, hub.submit_durable(account, step.msg, stream)))
        elif isinstance(step, Reply):
            errors.append(step.msg)
    hub.counters["messages"] += len(items)
    hub.counters["errors"] += len(errors)

    highest = 0
    for msg, fut in durable:
        try:
            result = await asyncio.shield(fut)  # a cancelled request must not cancel the hub's view of the commit
        except StoreError:
            return json_error(503, p.STORE_UNAVAILABLE, STORE_DOWN)
        highest = max(highest, msg.seq)
        error = SessionCore.outcome(msg, result)
        if error is not None:
            errors.append(error)
    acked = max(highest, await hub.store.acked_seq(account))
    answer: dict = {"ackedSeq": acked, "errors": errors, "serverTime": hub.clock()}
    if welcome is not None:
        answer["heartbeatSec"] = welcome.heartbeatSec
    return web.Response(body=_encoder.encode(answer), content_type="application/json")
