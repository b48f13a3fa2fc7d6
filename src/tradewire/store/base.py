"""The Store interface: what the hub needs from durable storage, whatever the engine.

Writes are *operations* queued to the store and committed in groups; each returns a future that
resolves only after the transaction holding it has committed. That is the whole durability promise:
the hub acknowledges an EA message only when its future has resolved.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

import msgspec

from tradewire.ingest.protocol import ErrorMsg, PositionMsg
from tradewire.model import Alert, ApiKeyInfo, Position, PositionEvent, Role, SystemTrade, TokenInfo


# --- write operations ---------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class DurableStream:
    """The durable messages of one EA session (or one HTTP batch), in the order they were received.

    Group commit lets a later message commit after an earlier one failed (a lock, a deadlock, a throttle
    that hit only the earlier group). Its seq would then be the account's highest: the next welcome's
    `ackedSeq` covers the failed one, and the EA drops it for good. So once one message of a stream fails,
    the store fails every later one of that stream without trying it (`blocked`, `note_failure`); the EA
    reconnects and resends them all, in order, on a new stream."""

    failed: bool = False


@dataclass(slots=True)
class EAPositionOp:
    """An EA-reported position event (durable, idempotent on (account, msg.id))."""

    account: str
    msg: PositionMsg
    system: bool  # magic is a configured system magic number
    stream: DurableStream | None = None


@dataclass(slots=True)
class EAErrorOp:
    """An EA `error` message: stored as a SYSTEM_ERROR alert, idempotent on (account, msg.id)."""

    account: str
    msg: ErrorMsg
    stream: DurableStream | None = None


@dataclass(slots=True)
class ReconcileOp:
    """An OPEN or CLOSE the server inferred from a snapshot. Stored only if none is recorded yet."""

    account: str
    event: Literal["OPEN", "CLOSE"]
    position: Position
    ts: int
    system: bool


@dataclass(slots=True)
class AlertRaiseOp:
    """Open an alert. An episodic type already open for the account stores nothing (status ignored)."""

    alert: Alert


@dataclass(slots=True)
class AlertResolveOp:
    account: str
    type: str
    at: int
    message: str = ""


@dataclass(slots=True)
class AlertAckOp:
    alert_id: str
    by: str
    at: int


@dataclass(slots=True)
class PresenceOp:
    """An EA said hello: remembered so that lost-connection timers survive a restart."""

    account: str
    at: int


WriteOp = EAPositionOp | EAErrorOp | ReconcileOp | AlertRaiseOp | AlertResolveOp | AlertAckOp | PresenceOp

WriteStatus = Literal["stored", "duplicate", "conflict", "seq_not_increasing", "ignored", "not_found"]


@dataclass(slots=True)
class WriteResult:
    """What committing one operation did. `events`/`alerts` are what changed, for publishing."""

    status: WriteStatus
    detail: str = ""
    events: list[PositionEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    system_trades: list[SystemTrade] = field(default_factory=list)


# --- queries ------------------------------------------------------------------------------------
@dataclass(slots=True)
class EventQuery:
    account: str | None = None
    type: str | None = None  # OPEN / CLOSE / MODIFY
    since: int | None = None  # ts >= since (ms)
    until: int | None = None  # ts < until (ms)
    limit: int = 100
    cursor: int | None = None  # return events with offset < cursor (newest first)


@dataclass(slots=True)
class AlertQuery:
    account: str | None = None
    type: str | None = None
    state: str | None = None  # open | resolved
    since: int | None = None  # raisedAt >= since
    until: int | None = None  # raisedAt < until
    limit: int = 100
    before: tuple[int, int] | None = None  # (raisedAt, offset): only alerts listed after it (paging)


T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: int | None


class StoreError(Exception):
    """The store could not do what was asked (unavailable, full disk, corrupt): nothing was committed."""


class Store(Protocol):
    commits: int
    committed_ops: int
    on_commit: Callable[[float, int], None] | None  # called after each commit with (seconds, operations)

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # durable writes: resolved after commit, in submission order
    def submit(self, op: WriteOp) -> asyncio.Future[WriteResult]: ...
    async def write(self, ops: list[WriteOp]) -> list[WriteResult]: ...

    # ingest support
    async def acked_seq(self, account: str) -> int: ...
    async def open_positions(self, account: str) -> list[Position]: ...

    # queries
    async def history(self, kind: str, account: str | None, since: int, limit: int) -> list[tuple[str, int, bytes]]: ...
    async def head_offset(self) -> int: ...
    async def events(self, query: EventQuery) -> Page[PositionEvent]: ...
    async def system_trades(self, query: EventQuery) -> Page[SystemTrade]: ...
    async def alerts(self, query: AlertQuery) -> list[Alert]: ...
    async def open_alerts(self) -> list[Alert]: ...
    async def open_episodes(self, account: str) -> list[str]: ...  # the types of the account's open alerts
    async def present_accounts(self) -> list[str]: ...

    # credentials (stored hashed)
    async def add_token(self, account: str, label: str = "") -> tuple[str, TokenInfo]: ...
    async def token_account(self, token: str) -> str | None: ...
    async def list_tokens(self, account: str | None = None) -> list[TokenInfo]: ...
    async def revoke_token(self, token_id: str) -> bool: ...
    async def add_api_key(self, role: Role, label: str = "") -> tuple[str, ApiKeyInfo]: ...
    async def api_key_role(self, key: str) -> Role | None: ...
    async def list_api_keys(self) -> list[ApiKeyInfo]: ...
    async def revoke_api_key(self, key_id: str) -> bool: ...
    async def known_accounts(self) -> list[str]: ...


# --- shared by the engines -----------------------------------------------------------------------
# Records are stored as the JSON they are published as; every engine decodes them the same way.
EVENT_DECODER = msgspec.json.Decoder(PositionEvent)
TRADE_DECODER = msgspec.json.Decoder(SystemTrade)
ALERT_DECODER = msgspec.json.Decoder(Alert)


def sql_where(clauses: list[str]) -> str:
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


# --- group commit ---------------------------------------------------------------------------------
def blocked(op: object) -> StoreError | None:
    """The error for an op not to be tried: an earlier one of its stream failed (see DurableStream)."""
    stream = getattr(op, "stream", None)
    if stream is not None and stream.failed:
        return StoreError("an earlier durable message of this session failed; resend from it")
    return None


def note_failure(op: object) -> None:
    """An op failed (nothing of it is durable): the later ones of its stream must not be tried."""
    stream = getattr(op, "stream", None)
    if stream is not None:
        stream.failed = True


Q = TypeVar("Q")


def take_group(
    first: Q, get_nowait: Callable[[], Q | None], empty: type[Exception], limit: int
) -> tuple[list[Q], bool]:
    """`first` and whatever else is already queued, up to `limit`: what one group commit takes. The second
    value is True when the stop marker (None) was met: commit this group, then stop."""
    group = [first]
    while len(group) < limit:
        try:
            nxt = get_nowait()
        except empty:
            break
        if nxt is None:
            return group, True
        group.append(nxt)
    return group, False


# --- secrets ------------------------------------------------------------------------------------
TOKEN_PREFIX = "twe_"
KEY_PREFIX = "twk_"


def new_secret(prefix: str) -> tuple[str, str]:
    """A fresh credential: (public id, full secret). The id is shown in listings; the secret never is."""
    public_id = secrets.token_hex(4)
    return public_id, f"{prefix}{public_id}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    # The secrets are 256-bit random, so a fast hash is enough (no password stretching needed).
    # surrogatepass: a presented credential may hold lone surrogates (a header's non-UTF-8 bytes, as aiohttp
    # decodes them; a JSON "\ud800"). It then matches nothing, as any wrong credential, instead of raising.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
