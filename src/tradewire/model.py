"""Domain records shared by ingest, live state, stores and the APIs.

Field names are the wire names (camelCase) so that a record encodes to JSON exactly as DESIGN.md §4
describes it, with no mapping layer in between. Timestamps are UTC milliseconds since the epoch.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Literal

import msgspec

# An account id is used as a channel segment as-is, so it follows the AppSync segment rule:
# 1-50 of [A-Za-z0-9-], not starting or ending with '-'. Patterns that msgspec checks (re.search) and JSON
# Schema shows end in END: Python's `$` alone also matches before a trailing newline.
END = r"(?!\n)$"
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?" + END
ACCOUNT_ID_RE = re.compile(ACCOUNT_ID_PATTERN)
AccountId = Annotated[str, msgspec.Meta(pattern=ACCOUNT_ID_PATTERN)]
ACCOUNT_ID_RULE = "1-50 characters of A-Z, a-z, 0-9 and '-', not starting or ending with '-'"
INT64_MAX = 2**63 - 1  # every integer that reaches a store fits a signed 64-bit column
Int64 = Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Side = Literal["buy", "sell"]
PositionEventType = Literal["OPEN", "CLOSE", "MODIFY"]
EventSource = Literal["ea", "reconcile"]
Role = Literal["read", "admin"]
ConnectionStatus = Literal["live", "lost", "never"]


def now_ms() -> int:
    """The time as every record carries it: UTC milliseconds since the epoch."""
    return int(time.time() * 1000)


CLOCK_AHEAD_MS = 1_000  # how far a client's timestamp may run ahead of the hub's clock and be taken as it is


def not_ahead(ts: int, now: int) -> int:
    """A client's timestamp, but not past the hub's clock (`now`, 0 if unknown) by more than CLOCK_AHEAD_MS.
    Where timestamps order what everyone sees (a symbol's shared price, the alerts list), one terminal whose
    clock runs far ahead, or a message dated next year, would otherwise come first for as long as it is ahead."""
    return min(ts, now + CLOCK_AHEAD_MS) if now else ts


def is_account_id(value: str) -> bool:
    return bool(ACCOUNT_ID_RE.match(value))


MAX_COMMENT = 256


class Position(msgspec.Struct, forbid_unknown_fields=False):
    """An open position as the terminal reports it (MT5 position / MT4 market order)."""

    id: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # MT5 POSITION_IDENTIFIER, MT4 ticket: stable for its life
    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    side: Side
    volume: Annotated[float, msgspec.Meta(gt=0)]
    openPrice: float
    openTime: Millis
    ticket: Int64 | None = None  # MT5 ticket can change (service operations); id cannot
    price: float | None = None
    sl: float | None = None
    tp: float | None = None
    profit: float = 0.0
    swap: float = 0.0
    commission: float = 0.0
    magic: Int64 = 0
    comment: str = ""  # at most MAX_COMMENT characters: see __post_init__

    def __post_init__(self) -> None:
        # Terminals allow 31 characters. A longer comment from another client is cut here, not refused:
        # refusing would refuse the durable event that carries it, and the trade matters, its comment not.
        if len(self.comment) > MAX_COMMENT:
            self.comment = self.comment[:MAX_COMMENT]
        if "\x00" in self.comment:  # no store's text column takes one (PostgreSQL refuses the row)
            self.comment = self.comment.replace("\x00", "")
        refuse_nul(symbol=self.symbol)


def refuse_nul(**fields: str | None) -> None:
    """A NUL character in a string that is stored (PostgreSQL's text refuses it, and an EA would resend the
    refused row forever) is bad input, named like any other: msgspec reports this ValueError with its path."""
    for name, value in fields.items():
        if value and "\x00" in value:
            raise ValueError(f"{name} may not contain a NUL character (\\u0000)")


class Tick(msgspec.Struct):
    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    bid: float
    ask: float
    ts: Millis


class AccountInfo(msgspec.Struct, omit_defaults=True):
    """Who the account is: learned from the EA's `hello`."""

    platform: str
    login: int
    server: str
    currency: str
    leverage: int
    broker: str = ""
    ea: str = ""
    tzOffsetSec: int = 0


class AccountState(msgspec.Struct):
    """Money figures of the account, latest wins."""

    ts: int
    balance: float
    equity: float
    margin: float
    freeMargin: float
    marginLevel: float | None  # None when no margin is used: never alert on it
    marginCallLevel: float | None = None
    stopOutLevel: float | None = None
    marginMode: Literal["percent", "money"] = "percent"


class PositionEvent(msgspec.Struct, omit_defaults=True):
    """A durable position event. One OPEN and at most one CLOSE per (account, positionId)."""

    account: str
    positionId: int
    event: PositionEventType
    ts: int
    source: EventSource
    position: Position
    offset: int = 0  # store-assigned, increasing: cursor for paging and history
    seq: int | None = None
    msgId: str | None = None
    closePrice: float | None = None
    profit: float | None = None
    reason: str | None = None
    system: bool = False  # magic is one of the configured system magic numbers
    recordedAt: int = 0


class SystemTrade(msgspec.Struct, omit_defaults=True):
    """A trade placed by the hedge system, recognised by its magic number."""

    account: str
    positionId: int
    ticket: int
    symbol: str
    side: Side
    volume: float
    magic: int
    executedAt: int


class Alert(msgspec.Struct):
    id: str
    type: str
    severity: Literal["HIGH", "CRITICAL"]
    account: str
    message: str
    raisedAt: int
    resolvedAt: int | None = None
    ackedAt: int | None = None
    ackedBy: str | None = None
    data: dict | None = None
    offset: int = 0  # store-assigned, as for position events: history on the alerts channel


def new_alert(type_: str, severity: str, account: str, message: str, at: int, data: dict | None = None) -> Alert:
    """A freshly raised alert with its own id."""
    return Alert(
        id=str(uuid.uuid4()),
        type=type_,
        severity=severity,  # type: ignore[arg-type]
        account=account,
        message=message,
        raisedAt=at,
        data=data or None,
    )


class TokenInfo(msgspec.Struct, omit_defaults=True):
    """An EA token as listed: never the secret, which exists only hashed."""

    tokenId: str
    account: str
    createdAt: int
    revokedAt: int | None = None
    label: str = ""


class ApiKeyInfo(msgspec.Struct, omit_defaults=True):
    keyId: str
    role: Role
    createdAt: int
    revokedAt: int | None = None
    label: str = ""
