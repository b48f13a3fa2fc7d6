"""AWS AppSync Events WebSocket protocol (DESIGN.md §5), sans-I/O: client frames in, server frames out.

What the real service and the Amplify client do is in shared/research/appsync-events.md; where they
disagree this follows the clients (e.g. `data.event` is one JSON string, one frame per event).
Extensions, ignored by AWS clients: `connection_init.payload.batch`, `subscribe.since`, `data.offset`,
`subscribe_success.recovered`, and `{"type": "batch", "items": [...]}` frames.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from tradewire.jsonerrors import UNDECODABLE, undecodable

SUBPROTOCOL = "aws-appsync-event-ws"
ID_RE = re.compile(r"[a-zA-Z0-9\-_+]{1,128}")  # fullmatch: `$` would let a trailing newline in
MAX_EVENTS = 5
MAX_EVENT_BYTES = 240 * 1024
# A frame or POST /event body: 5 events of 240 KB, each JSON-escaped inside the frame (a quote or a backslash
# doubles), and the rest of the message. Under it, a publish AppSync takes is never a 1009 close here.
MAX_PUBLISH_BYTES = 2 * MAX_EVENTS * MAX_EVENT_BYTES + 64 * 1024

# errorType values, as AWS and the Amplify client use them
BAD_REQUEST = "BadRequestException"
UNAUTHORIZED = "UnauthorizedException"
UNKNOWN_OPERATION = "UnknownOperationError"
UNSUPPORTED = "UnsupportedOperation"
LIMIT_EXCEEDED = "LimitExceededException"


class _Client(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    pass


class ConnectionInit(_Client, tag="connection_init"):
    payload: Any = None  # any value: a client that sends a string here still expects its ack


class Subscribe(_Client, tag="subscribe"):
    id: str
    channel: str
    authorization: dict[str, Any] | None = None
    since: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None  # extension: replay from this offset


class Unsubscribe(_Client, tag="unsubscribe"):
    id: str


class Publish(_Client, tag="publish"):
    id: str
    channel: str
    events: list[str]
    authorization: dict[str, Any] | None = None


ClientMsg = ConnectionInit | Subscribe | Unsubscribe | Publish
_decoder = msgspec.json.Decoder(ClientMsg)
_encode = msgspec.json.encode
REPLY_FOR = {"subscribe": "subscribe_error", "publish": "publish_error", "unsubscribe": "unsubscribe_error"}


class _Envelope(msgspec.Struct, forbid_unknown_fields=False):
    type: Any = None
    id: Any = None


_envelope = msgspec.json.Decoder(_Envelope)


@dataclass(slots=True)
class ProtocolError:
    """A frame refused: `reply` is the frame type to answer with (subscribe_error, error, …)."""

    reply: str
    id: str | None
    error_type: str
    message: str

    def encode(self) -> bytes:
        return error_frame(self.reply, self.id, self.error_type, self.message)


def decode(frame: str | bytes) -> ClientMsg | ProtocolError:
    try:
        msg = _decoder.decode(frame)
    except msgspec.DecodeError as exc:
        return _explain(frame, exc)
    except UNDECODABLE as exc:
        return ProtocolError("error", None, BAD_REQUEST, f"frame is not valid JSON: {undecodable(exc)}")
    check = _validate(msg)
    return check if check is not None else msg


def _explain(frame: str | bytes, exc: msgspec.DecodeError) -> ProtocolError:
    try:
        env = _envelope.decode(frame)
    except msgspec.DecodeError:
        return ProtocolError("error", None, BAD_REQUEST, f"frame is not a JSON object: {exc}")
    except UNDECODABLE as err:
        return ProtocolError("error", None, BAD_REQUEST, f"frame is not valid JSON: {undecodable(err)}")
    ident = env.id if isinstance(env.id, str) else None
    if env.type not in ("connection_init", "subscribe", "unsubscribe", "publish"):
        return ProtocolError("error", ident, UNSUPPORTED, f"unknown message type {env.type!r}")
    return ProtocolError(REPLY_FOR.get(env.type, "error"), ident, BAD_REQUEST, f"{env.type}: {exc}")


def _validate(msg: ClientMsg) -> ProtocolError | None:
    if isinstance(msg, ConnectionInit):
        return None
    if not ID_RE.fullmatch(msg.id):
        return ProtocolError(
            REPLY_FOR[msg.__struct_config__.tag],
            msg.id[:128],
            BAD_REQUEST,
            "id must be 1-128 characters of a-z, A-Z, 0-9, '-', '_' and '+'",
        )
    return None


def validate_events(events: list[str]) -> str | None:
    """Why a list of published events is refused as a whole, or None. Each event is a JSON string."""
    if not 1 <= len(events) <= MAX_EVENTS:
        return f"a publish carries 1 to {MAX_EVENTS} events, not {len(events)}"
    for index, event in enumerate(events):
        if not isinstance(event, str):
            return f"event {index} must be a JSON value encoded as a string"
        if len(event.encode()) > MAX_EVENT_BYTES:
            return f"event {index} is larger than 240 KB"
        try:
            msgspec.json.decode(event)  # strict JSON: NaN and Infinity, which json.loads takes, are refused
        except msgspec.DecodeError:
            return f"event {index} is not valid JSON"
        except RecursionError:
            return f"event {index} is nested too deeply"
    return None


# --- server frames ------------------------------------------------------------------------------
MAX_ERROR_MESSAGE = 500  # an error quotes what it refuses, and that can be megabytes: a reply must not be


def error_frame(reply: str, ident: str | None, error_type: str, message: str) -> bytes:
    frame: dict[str, Any] = {"type": reply}
    if ident is not None:
        frame["id"] = ident[:128]  # a longer id is refused anyway
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "... (cut)"
    frame["errors"] = [{"errorType": error_type, "message": message}]
    return _encode(frame)


def connection_ack(timeout_ms: int) -> bytes:
    # Top-level for Amplify JS, in `payload` for the Swift SDK.
    return _encode(
        {"type": "connection_ack", "connectionTimeoutMs": timeout_ms, "payload": {"connectionTimeoutMs": timeout_ms}}
    )


def connection_error(error_type: str, code: int, message: str) -> bytes:
    return _encode(
        {"type": "connection_error", "errors": [{"errorType": error_type, "errorCode": code, "message": message}]}
    )


def subscribe_success(ident: str, recovered: bool | None = None, offset: int | None = None) -> bytes:
    """`offset` (durable scopes): the head at subscribe time, where a client without one resumes."""
    frame: dict[str, Any] = {"type": "subscribe_success", "id": ident}
    if recovered is not None:
        frame["recovered"] = recovered
    if offset is not None:
        frame["offset"] = offset
    return _encode(frame)


def unsubscribe_success(ident: str) -> bytes:
    return _encode({"type": "unsubscribe_success", "id": ident})


def publish_success(ident: str, successful: list[dict], failed: list[dict]) -> bytes:
    return _encode({"type": "publish_success", "id": ident, "successful": successful, "failed": failed})


KA = b'{"type":"ka"}'


def event_literal(data: bytes) -> bytes:
    """The event as a JSON string literal, computed once per publication, not once per subscriber."""
    return _encode(data.decode())


def data_frame(sub_id: bytes, literal: bytes, offset: int | None) -> bytes:
    if offset is None:
        return b'{"type":"data","id":"' + sub_id + b'","event":' + literal + b"}"
    return b'{"type":"data","id":"' + sub_id + b'","event":' + literal + b',"offset":' + str(offset).encode() + b"}"


BATCH_HEAD = b'{"type":"batch","items":['
BATCH_TAIL = b"]}"


def batch_frame(frames: list[bytes]) -> bytes:
    return BATCH_HEAD + b",".join(frames) + BATCH_TAIL


# --- auth ---------------------------------------------------------------------------------------
def auth_from_subprotocols(protocols: list[str]) -> dict[str, Any] | None:
    """The auth object from a `header-<base64url(JSON)>` subprotocol, or None if there is none/it is bad."""
    for proto in protocols:
        if proto.startswith("header-"):
            encoded = proto[len("header-") :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                value = json.loads(raw)
            except (binascii.Error, ValueError, RecursionError):  # a header fits ~4,000 levels of nesting
                return None
            return value if isinstance(value, dict) else None
    return None


def names_api_key(auth: dict[str, Any] | None) -> bool:
    """Whether an auth object carries an x-api-key entry at all (usable or not)."""
    return bool(auth) and any(isinstance(n, str) and n.lower() == "x-api-key" for n in auth)  # type: ignore[union-attr]


def api_key_of(auth: dict[str, Any] | None) -> str | None:
    """The API key in an AppSync auth object (keys are case-insensitive header names)."""
    if not auth:
        return None
    for name, value in auth.items():
        if isinstance(name, str) and name.lower() == "x-api-key" and isinstance(value, str):
            return value
    return None
