"""EA ingest protocol v1 (DESIGN.md §4): message types and the frame codec. No I/O here.

A frame is JSON text holding one message object or an array of them. Decoding is done once per
frame on the fast path; only when that fails is the frame split so that each bad message gets an
error naming its field while the good ones in the same frame carry on.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from tradewire.jsonerrors import UNDECODABLE, undecodable
from tradewire.model import INT64_MAX, AccountId, Int64, Millis, Position, Tick, refuse_nul

MsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]


class _Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    pass


class EAInfo(msgspec.Struct):
    # Bounded like every other string: they are republished with every account update.
    name: Annotated[str, msgspec.Meta(max_length=64)] = ""
    version: Annotated[str, msgspec.Meta(max_length=32)] = ""


class Hello(_Msg, tag="hello"):
    platform: Literal["MT4", "MT5", "agent"]
    login: Int64
    server: Annotated[str, msgspec.Meta(max_length=128)]
    currency: Annotated[str, msgspec.Meta(max_length=16)]
    leverage: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
    broker: Annotated[str, msgspec.Meta(max_length=128)] = ""
    ea: EAInfo | None = None
    tzOffsetSec: Annotated[int, msgspec.Meta(ge=-86400, le=86400)] = 0
    lastSeq: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] = 0
    account: AccountId | None = None


class AccountMsg(_Msg, tag="account"):
    ts: Millis
    balance: float
    equity: float
    margin: float
    freeMargin: float
    marginLevel: float | None = None
    marginCallLevel: float | None = None
    stopOutLevel: float | None = None
    marginMode: Literal["percent", "money"] = "percent"
    account: AccountId | None = None


class PositionsMsg(_Msg, tag="positions"):
    ts: Millis
    positions: list[Position]
    account: AccountId | None = None


class TicksMsg(_Msg, tag="ticks"):
    ticks: list[Tick]
    account: AccountId | None = None


class HeartbeatMsg(_Msg, tag="heartbeat"):
    ts: Millis = 0
    account: AccountId | None = None


class PositionMsg(_Msg, tag="position"):
    """Durable: stored once per (account, id), acked after commit."""

    seq: Seq
    id: MsgId
    event: Literal["OPEN", "CLOSE", "MODIFY"]
    ts: Millis
    position: Position
    closePrice: float | None = None
    profit: float | None = None
    reason: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    account: AccountId | None = None

    def __post_init__(self) -> None:
        refuse_nul(id=self.id, reason=self.reason)


class ErrorMsg(_Msg, tag="error"):
    """Durable: an EA-side failure, stored as a SYSTEM_ERROR alert."""

    seq: Seq
    id: MsgId
    code: Annotated[str, msgspec.Meta(max_length=64)]
    message: Annotated[str, msgspec.Meta(max_length=2048)]
    ts: Millis = 0
    severity: Literal["HIGH", "CRITICAL"] = "HIGH"
    account: AccountId | None = None

    def __post_init__(self) -> None:
        refuse_nul(id=self.id, code=self.code, message=self.message)


ClientMsg = Hello | AccountMsg | PositionsMsg | TicksMsg | HeartbeatMsg | PositionMsg | ErrorMsg
DurableMsg = PositionMsg | ErrorMsg
MESSAGE_TYPES = ("hello", "account", "positions", "ticks", "heartbeat", "position", "error")


# --- server -> client -------------------------------------------------------------------------
class Welcome(_Msg, tag="welcome"):
    sessionId: str
    ackedSeq: int
    heartbeatSec: int
    serverTime: int


class Ack(_Msg, tag="ack"):
    seq: int


class ErrorReply(_Msg, tag="error", omit_defaults=True):
    code: str
    message: str
    ref: str | None = None  # the refused message's `id`, else its type
    index: int | None = None  # position of the message inside an array frame


# Error codes sent to EAs. Stable strings: EAs may branch on them.
BAD_JSON = "bad_json"
INVALID_MESSAGE = "invalid_message"
UNKNOWN_TYPE = "unknown_type"
HELLO_REQUIRED = "hello_required"
WRONG_ACCOUNT = "wrong_account"
DUPLICATE_ID = "duplicate_id"
SEQ_NOT_INCREASING = "seq_not_increasing"
STORE_UNAVAILABLE = "store_unavailable"
RATE_LIMITED = "rate_limited"
TOO_MANY_SYMBOLS = "too_many_symbols"
TOO_MANY_POSITIONS = "too_many_positions"
LOGIN_CHANGED = "login_changed"  # a hello from another trading account than this account id's: refused


class _Envelope(msgspec.Struct, forbid_unknown_fields=False):
    """Just enough of a message to name it in an error."""

    type: object = None
    id: object = None


_frame_decoder = msgspec.json.Decoder(list[ClientMsg] | ClientMsg)
_msg_decoder = msgspec.json.Decoder(ClientMsg)
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


# What msgspec raises, besides DecodeError, for input it cannot decode: nesting deeper than the
# interpreter's recursion limit, and invalid UTF-8 inside a string of a bytes input (a binary frame).
def decode_frame(data: bytes | str) -> list[ClientMsg | ErrorReply]:
    """Decode one frame into its messages, in order; a bad message becomes an ErrorReply in its place."""
    try:
        try:
            decoded = _frame_decoder.decode(data)
        except msgspec.DecodeError:
            return _decode_each(data)
    except UNDECODABLE as exc:
        return [ErrorReply(code=BAD_JSON, message=f"frame is not valid JSON: {undecodable(exc)}")]
    return decoded if isinstance(decoded, list) else [decoded]


def _decode_each(data: bytes | str) -> list[ClientMsg | ErrorReply]:
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError as exc:
        return [ErrorReply(code=BAD_JSON, message=f"frame is not valid JSON: {exc}")]
    if bytes(memoryview(raw)[:1]) == b"[":
        items = _raw_list_decoder.decode(raw)
        return [_decode_one(item, index) for index, item in enumerate(items)]
    return [_decode_one(raw, None)]


def decode_items(items: list[msgspec.Raw]) -> list[ClientMsg | ErrorReply]:
    """Decode already-split messages (the HTTP batch body's `messages`)."""
    return [_decode_one(item, index if len(items) > 1 else None) for index, item in enumerate(items)]


def _decode_one(raw: msgspec.Raw, index: int | None) -> ClientMsg | ErrorReply:
    try:
        try:
            return _msg_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            error = str(exc)
        try:
            env = _envelope_decoder.decode(raw)
        except msgspec.ValidationError:
            return ErrorReply(code=INVALID_MESSAGE, message="a message must be a JSON object", index=index)
    except UNDECODABLE as exc:
        return ErrorReply(code=BAD_JSON, message=f"message is not valid JSON: {undecodable(exc)}", index=index)
    except msgspec.DecodeError as exc:  # msgspec >= 0.23 checks a string's UTF-8 only here, not when splitting
        return ErrorReply(code=BAD_JSON, message=f"message is not valid JSON: {exc}", index=index)
    ref = env.id if isinstance(env.id, str) else (env.type if isinstance(env.type, str) else None)
    if env.type is None:
        return ErrorReply(code=INVALID_MESSAGE, message="missing field `type`", ref=ref, index=index)
    if env.type not in MESSAGE_TYPES:
        return ErrorReply(
            code=UNKNOWN_TYPE,
            message=f"unknown message type {env.type!r}; expected one of {', '.join(MESSAGE_TYPES)}",
            ref=ref,
            index=index,
        )
    return ErrorReply(code=INVALID_MESSAGE, message=f"{env.type}: {error}", ref=ref, index=index)


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def message_ref(msg: ClientMsg) -> str:
    return msg.id if isinstance(msg, PositionMsg | ErrorMsg) else type(msg).__struct_config__.tag
