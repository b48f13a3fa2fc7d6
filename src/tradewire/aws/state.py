"""Latest-wins state in a DynamoDB live table: Lambda keeps no memory between calls.

Each invocation loads the account's `AccountView` (tradewire.state, the same pure diff logic as the
server's LiveState), applies the frame to it, and writes it back. Table ``PREFIX-live`` (pk S, sk S):

=====================  ============  ==================================================================
pk                     sk            what
=====================  ============  ==================================================================
``ACCOUNT``            account id    the account view as JSON (info, state, positions, connection
                                     status, last_seen, quotes), `lastSeen` as a number, and its
                                     open `sessions` and `endedAt` as attributes of their own
``CONN#<connection>``  ``#``         the WebSocket connection's account and whether it said hello;
                                     `expiresAt` (TTL) because `$disconnect` is best-effort
``PRICE``              symbol        the newest tick (written only if its ts is not older)
=====================  ============  ==================================================================

One partition for every account keeps "list all accounts" (REST, the schedule) a single Query; a
fleet of a few thousand accounts fits. The account's body is written last-writer-wins: two frames of
one EA handled at once by two Lambdas may interleave, which is what latest-wins means; the durable
OPEN/CLOSE records they imply are still written once each (the store's conditional writes decide).
Whether the EA is connected is not latest-wins: `sessions` and `endedAt` change only by atomic updates
(`session_started`, `session_ended`) and a frame's save leaves them alone. Kept in the body, a frame
that loaded the item before a hello, or a `$disconnect` racing a frame, saved the count back wrong: an
EA live on its new connection was taken for gone (CONNECTION_LOST, never resolved by its frames), or one
gone for live.
The equity series the server keeps in memory for charts is not kept here (one write per update would
rewrite ~35 KB); `/accounts/{id}/equity` is not served on AWS.

An account's body is zlib-compressed past 1 KB (`pack_view`): DynamoDB bills a write per KB of item and
refuses items over 400 KB, and the view's JSON (positions and quotes repeating the same keys) shrinks
4-8 times. At the default limits even 1,000 positions with 256-character comments fit; where one
account's view still does not, its positions are kept without comments (the stored events keep them).
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from typing import Any

import msgspec
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from tradewire.model import AccountInfo, AccountState, Position, Tick
from tradewire.state import AccountView, LiveState, Transport, price_order
from tradewire.store.dynamodb import _session
from tradewire.store.dynamodb_url import split_url

CONNECTION_TTL_S = 3 * 3600  # API Gateway closes a WebSocket after 2 h at most
ACCOUNTS_PK = "ACCOUNT"
PRICES_PK = "PRICE"


class StoredView(msgspec.Struct, omit_defaults=True):
    id: str
    info: AccountInfo | None = None
    state: AccountState | None = None
    positions: list[Position] = []
    positionsKnown: bool = False
    sessions: int = 0
    transport: str | None = None
    connectedAt: int | None = None
    lastSeen: int = 0
    updatedAt: int = 0
    everConnected: bool = False
    endedAt: int | None = None  # when its last session ended, while none is open (CONNECTION_LOST grace)
    quotes: dict[str, tuple[float, float]] = {}
    priceChanged: dict[str, int] = {}
    snapshotTs: int = 0  # the EA's clock: its newest positions snapshot applied (a late one is not)


_view_decoder = msgspec.json.Decoder(StoredView)
_tick_decoder = msgspec.json.Decoder(Tick)
_encode = msgspec.json.encode
log = logging.getLogger("tradewire.aws")

COMPRESS_OVER = 1024  # bytes of JSON: a smaller body is one write unit either way, and stays readable
# DynamoDB's item limit is 400 KB, attribute names and the other attributes included (a few dozen bytes).
MAX_BODY = 399 * 1024


class ViewTooLarge(ValueError):
    """An account's view that does not fit one DynamoDB item even without its positions' comments."""


def pack_view(stored: StoredView) -> bytes:
    """The account item's body: JSON, zlib-compressed past COMPRESS_OVER; without the positions' comments
    if that is what it takes to fit an item (an account sending long comments on hundreds of positions)."""
    body = _compress(_encode(stored))
    if len(body) <= MAX_BODY:
        return body
    bare = msgspec.structs.replace(stored, positions=[msgspec.structs.replace(p, comment="") for p in stored.positions])
    smaller = _compress(_encode(bare))
    if len(smaller) > MAX_BODY:
        raise ViewTooLarge(
            f"account {stored.id}: its live view is {len(smaller) // 1024} KB compressed, over DynamoDB's "
            "400 KB item; lower [limits] max_positions_per_account or max_symbols_per_account"
        )
    log.warning(
        "account %s: live view %d KB compressed, over DynamoDB's item limit: kept without position comments",
        stored.id,
        len(body) // 1024,
    )
    return smaller


def _compress(raw: bytes) -> bytes:
    return zlib.compress(raw, 6) if len(raw) > COMPRESS_OVER else raw


def unpack_view(body: bytes) -> StoredView:
    # A JSON body starts with "{", a zlib stream with 0x78: items written before compression still load.
    return _view_decoder.decode(body if body[:1] == b"{" else zlib.decompress(body))


def to_stored(view: AccountView, ended_at: int | None) -> StoredView:
    return StoredView(
        id=view.id,
        info=view.info,
        state=view.state,
        positions=list(view.positions.values()),
        positionsKnown=view.positions_known,
        sessions=view.sessions,
        transport=view.transport,
        connectedAt=view.connected_at,
        lastSeen=view.last_seen,
        updatedAt=view.updated_at,
        everConnected=view.ever_connected,
        endedAt=ended_at,
        quotes=dict(view.quotes),
        priceChanged=dict(view.price_changed),
        snapshotTs=view.snapshot_ts,
    )


def from_stored(s: StoredView) -> AccountView:
    transport: Transport | None = s.transport if s.transport in ("ws", "http") else None  # type: ignore[assignment]
    return AccountView(
        id=s.id,
        info=s.info,
        state=s.state,
        positions={p.id: p for p in s.positions},
        positions_known=s.positionsKnown,
        sessions=s.sessions,
        transport=transport,
        connected_at=s.connectedAt,
        last_seen=s.lastSeen,
        updated_at=s.updatedAt,
        ever_connected=s.everConnected,
        quotes={k: (v[0], v[1]) for k, v in s.quotes.items()},
        price_changed=dict(s.priceChanged),
        snapshot_ts=s.snapshotTs,
    )


class Connection(msgspec.Struct):
    id: str
    account: str
    greeted: bool = False
    connectedAt: int = 0
    # The SHA-256 of the token it connected with (what the store keeps, not the token): each frame asks
    # whether it still stands. "" on items written before it was kept: not asked.
    tokenHash: str = ""


def _into(state: LiveState, account: str, item: dict[str, Any]) -> int | None:
    """An account item into `state`: its body, then its session attributes; returns its endedAt. An item
    whose first session began before any frame saved a body has only the attributes."""
    if "body" in item:
        stored = unpack_view(item["body"]["B"])
        view = state.accounts[account] = from_stored(stored)
        ended = stored.endedAt
    else:
        view, ended = state.account(account), None
    if "sessions" in item:  # written by session_started/ended; absent on items from before they were kept
        view.sessions = max(0, int(item["sessions"]["N"]))
        ended = int(item["endedAt"]["N"]) if "endedAt" in item else None
        if view.sessions == 0 and view.transport == "ws":
            view.connected_at = None  # as on_session_end leaves it (the body is not saved at a $disconnect)
    return ended


class LiveTable:
    """The live table's items, over one aiobotocore client."""

    def __init__(self, url: str, table: str | None = None) -> None:
        prefix, self.region, self.endpoint = split_url(url)
        self.table = table or f"{prefix}-live"
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def open(self, create: bool = False) -> None:
        import os

        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint:
            kwargs["endpoint_url"] = self.endpoint
            if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
                kwargs.update(aws_access_key_id="local", aws_secret_access_key="local")
        config = AioConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=20)
        self._stack = contextlib.AsyncExitStack()
        self._client = await self._stack.enter_async_context(
            _session().create_client("dynamodb", config=config, **kwargs)
        )
        if create:
            await self._ensure_table()

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._client = None

    async def _ensure_table(self) -> None:
        try:
            await self._client.describe_table(TableName=self.table)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        with contextlib.suppress(ClientError):  # ResourceInUse: another process creates it
            await self._client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
            )
        waiter = self._client.get_waiter("table_exists")
        await waiter.wait(TableName=self.table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})

    # --- connections ----------------------------------------------------------------------------
    async def put_connection(self, conn: Connection) -> None:
        await self._client.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": f"CONN#{conn.id}"},
                "sk": {"S": "#"},
                "body": {"B": _encode(conn)},
                "expiresAt": {"N": str(int(time.time()) + CONNECTION_TTL_S)},
            },
        )

    async def get_connection(self, connection_id: str) -> Connection | None:
        resp = await self._client.get_item(
            TableName=self.table, Key={"pk": {"S": f"CONN#{connection_id}"}, "sk": {"S": "#"}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return msgspec.json.decode(item["body"]["B"], type=Connection) if item else None

    async def delete_connection(self, connection_id: str) -> Connection | None:
        resp = await self._client.delete_item(
            TableName=self.table,
            Key={"pk": {"S": f"CONN#{connection_id}"}, "sk": {"S": "#"}},
            ReturnValues="ALL_OLD",
        )
        item = resp.get("Attributes")
        return msgspec.json.decode(item["body"]["B"], type=Connection) if item else None

    # --- accounts -------------------------------------------------------------------------------
    async def load(self, state: LiveState, account: str) -> int | None:
        """Put the stored view of `account` into `state`; return its endedAt."""
        resp = await self._client.get_item(
            TableName=self.table, Key={"pk": {"S": ACCOUNTS_PK}, "sk": {"S": account}}, ConsistentRead=True
        )
        item = resp.get("Item")
        if item is None:
            state.account(account)
            return None
        return _into(state, account, item)

    async def _update_account(self, account: str, expression: str, values: dict[str, Any], **extra: Any) -> Any:
        return await self._client.update_item(
            TableName=self.table,
            Key={"pk": {"S": ACCOUNTS_PK}, "sk": {"S": account}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
            **extra,
        )

    async def save(self, view: AccountView) -> None:
        """The view's body (and `lastSeen`); its sessions and endedAt are not written here (see above)."""
        body = pack_view(to_stored(view, None))
        await self._update_account(
            view.id, "SET body = :b, lastSeen = :ls", {":b": {"B": body}, ":ls": {"N": str(view.last_seen)}}
        )

    async def session_started(self, account: str, counted: int = 0) -> int:
        """One more open session for `account`, its endedAt cleared; returns how many are open. `counted`:
        the sessions its item's body holds, taken as the count where the item has no attribute yet (written
        by the version before it was kept apart), so sessions open across an upgrade are not forgotten."""
        resp = await self._update_account(
            account,
            "SET sessions = if_not_exists(sessions, :counted) + :one REMOVE endedAt",
            {":one": {"N": "1"}, ":counted": {"N": str(max(0, counted))}},
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["sessions"]["N"])

    async def session_ended(self, account: str, now: int, counted: int = 1) -> int:
        """One session fewer for `account`; at none, endedAt = `now` (the CONNECTION_LOST grace starts).
        Returns how many are still open. `counted`: as for session_started."""
        resp = await self._update_account(
            account,
            "SET sessions = if_not_exists(sessions, :counted) - :one",
            {":one": {"N": "1"}, ":counted": {"N": str(max(0, counted))}},
            ReturnValues="UPDATED_NEW",
        )
        left = int(resp["Attributes"]["sessions"]["N"])
        if left > 0:
            return left
        try:  # unless a hello came in between (its session_started made it 1 again)
            await self._update_account(
                account,
                "SET sessions = :zero, endedAt = :now",
                {":zero": {"N": "0"}, ":now": {"N": str(now)}},
                ConditionExpression="sessions <= :zero",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return 1
        return 0

    async def load_all(self, state: LiveState) -> dict[str, int]:
        """Every account into `state`; return {account: endedAt} of those whose session ended."""
        ended: dict[str, int] = {}
        for item in await self._partition(ACCOUNTS_PK):
            account = item["sk"]["S"]
            at = _into(state, account, item)
            if at is not None:
                ended[account] = at
        return ended

    # --- prices ---------------------------------------------------------------------------------
    async def put_tick(self, tick: Tick, now: int = 0) -> bool:
        """Store a tick unless a newer one is stored (by `price_order`); False when it was older (nothing
        to publish)."""
        order = str(price_order(tick, now))
        try:
            await self._client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": PRICES_PK},
                    "sk": {"S": tick.symbol},
                    "body": {"B": _encode(tick)},
                    "ts": {"N": order},
                },
                ConditionExpression="attribute_not_exists(pk) OR #ts <= :ts",
                ExpressionAttributeNames={"#ts": "ts"},
                ExpressionAttributeValues={":ts": {"N": order}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def load_prices(self, state: LiveState) -> None:
        for item in await self._partition(PRICES_PK):
            state.load_price(_tick_decoder.decode(item["body"]["B"]), int(item["ts"]["N"]))

    async def _partition(self, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            resp = await self._client.query(**params)
            items.extend(resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
