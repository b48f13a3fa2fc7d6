"""DynamoDB store (aiobotocore): the same contract as SQLite and PostgreSQL, on DynamoDB tables.

URL: ``dynamodb://TABLE_PREFIX?region=us-east-1&endpoint=http://127.0.0.1:8000``. Without `endpoint`
the store talks to AWS itself with the usual credential chain; with one (a DynamoDB-compatible server
such as moto, dynalite or DynamoDB Local) and no AWS_ACCESS_KEY_ID/AWS_PROFILE in the environment it
signs with placeholder credentials, which such servers accept. Tables are created on open when missing
(on-demand billing) and named PREFIX-state, PREFIX-events, PREFIX-alerts and PREFIX-trades.

Table design
------------
``PREFIX-state`` (pk S, sk S): the small items that carry the exactly-once rules, always read strongly
consistent, every one versioned (`v`) and written with a condition on the version read
(``attribute_not_exists(pk)`` when it was absent): optimistic concurrency between hub nodes.

=================  =================  ==========================================================
pk                 sk                 what
=================  =================  ==========================================================
ACCOUNT            ``#ACCOUNT``       maxSeq (highest EA seq stored), openIds (positions open)
ACCOUNT            ``MSG#<msg id>``   the EA inbox: seq, kind — one item per message id
ACCOUNT            ``POS#<pos id>``   the position's one OPEN and one CLOSE (event bodies), trade
ACCOUNT            ``EPISODE#<type>`` the one open episode of an alert type: the alert id
``ALERT#<id>``     ``#``              the alert by id (acknowledging it): account, body
``#PRESENCE``      ACCOUNT            last hello (ms)
``#TOKENS``        token id           account, sha256, label, createdAt, revokedAt (listing)
``TOKEN#<sha256>`` ``#``              account, token id (authentication; deleted on revoke)
``#KEYS``          key id             role, sha256, label, createdAt, revokedAt (listing)
``KEY#<sha256>``   ``#``              role, key id (authentication; deleted on revoke)
``#COUNTER``       ``offset``         the offset counter (UpdateItem ADD, a block per transaction)
``#META``          ``schema``         schema version
=================  =================  ==========================================================

``PREFIX-events`` (acct S, off N): position events by account and offset; attributes body (the JSON
bytes published), event, ts, pid, feed="events". GSI ``feed-off`` (feed, off) lists every account in
offset order. An EA report that fills in a reconciled OPEN/CLOSE moves the record to a new offset (as
the SQL engines do): the old item is deleted and the new one put in the same transaction.

``PREFIX-alerts`` (acct S, off N): alerts by account and offset (moved to a new offset when acknowledged
or resolved), with rk = "<raisedAt:020>#<off:020>" so that one key orders by (raisedAt, offset).
LSI ``acct-rk`` (strongly consistent per-account queries), GSI ``feed-off`` (history of every account),
GSI ``feed-rk`` (queries over every account) and the sparse GSI ``open-rk`` (openFeed is set only while
the alert is unresolved: the open alerts without reading the resolved ones).

``PREFIX-trades`` (acct S, off N): system trades, off taken from the same counter; GSI ``feed-off``.

Writes and exactly-once
-----------------------
One writer task per node takes everything queued and commits it in groups: each group's operations
are planned by the shared planner (store/plan.py) from strongly consistent reads plus what earlier
operations of the same group changed, then written as ONE TransactWriteItems (at most 100 items: a
group closes before an operation that might not fit). The inbox item is put with
``attribute_not_exists``, the account item and the position item with a condition on their version,
the event items beside them: a message id is stored once, seq only increases, and a position has one
OPEN and one CLOSE, even with several nodes. A transaction cancelled by a condition (another node
won a race) or a conflict is planned again from fresh reads, as postgres.py does for a unique
violation. Futures resolve only after TransactWriteItems has returned, i.e. once DynamoDB has made the
write durable. EA presence needs no condition: it goes by BatchWriteItem. Offsets come from the
counter item, one UpdateItem (ADD n, UPDATED_NEW) per transaction for exactly the offsets it needs.

Reads: per-account queries use Query on the account key with ConsistentRead. Queries over every
account (REST lists with no account, history of a wildcard channel, head_offset, open alerts at start)
use the GSIs above, which DynamoDB keeps eventually consistent (usually well under a second behind).
Their partition key is one constant per table: simple, and good for ~1000 writes/s per table before
that GSI partition throttles; past that the feed key would have to be sharded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from tradewire.model import Alert, ApiKeyInfo, Position, PositionEvent, Role, SystemTrade, TokenInfo, now_ms
from tradewire.store import plan as planner
from tradewire.store.base import (
    ALERT_DECODER,
    EVENT_DECODER,
    KEY_PREFIX,
    TOKEN_PREFIX,
    TRADE_DECODER,
    AlertAckOp,
    AlertQuery,
    AlertRaiseOp,
    AlertResolveOp,
    EAErrorOp,
    EAPositionOp,
    EventQuery,
    Page,
    PresenceOp,
    ReconcileOp,
    StoreError,
    WriteOp,
    WriteResult,
    blocked,
    hash_secret,
    new_secret,
    note_failure,
    take_group,
)
from tradewire.store.dynamodb_url import split_url

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
TX_MAX_ITEMS = 100  # DynamoDB's limit for one TransactWriteItems
OP_MAX_ITEMS = 8  # the most items one operation can add to a transaction (see _plan_*)
MAX_ATTEMPTS = 8  # plans of one group before giving up on races
EPISODELESS = "SYSTEM_ERROR"  # EA errors: each one is its own alert, never an episode
ACCOUNT_SK = "#ACCOUNT"
RETRYABLE_REASONS = {
    "ConditionalCheckFailed",
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
}

_encode = msgspec.json.encode
# state-item attributes holding a record, stored as its JSON bytes
_STRUCT_ATTRS: dict[str, msgspec.json.Decoder] = {
    "open": EVENT_DECODER,
    "close": EVENT_DECODER,
    "alert": ALERT_DECODER,
}


_SESSION: AioSession | None = None


def _session() -> AioSession:
    """One botocore session per process: the service model is loaded once, not for every store opened."""
    global _SESSION
    if _SESSION is None:
        _SESSION = get_session()
    return _SESSION


# --- attribute values -----------------------------------------------------------------------------
def _av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, set | frozenset):
        return {"NS": [str(v) for v in sorted(value)]}
    if isinstance(value, msgspec.Struct):
        return {"B": _encode(value)}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def _item(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A DynamoDB item from plain values; None and empty sets are left out (DynamoDB has no empty set)."""
    return {k: _av(v) for k, v in values.items() if v is not None and not (isinstance(v, set | frozenset) and not v)}


def _py(value: dict[str, Any]) -> Any:
    [(kind, raw)] = value.items()
    if kind == "N":
        return int(raw)
    if kind == "NS":
        return {int(v) for v in raw}
    if kind == "NULL":
        return None
    return raw  # S, B, BOOL


def _plain(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: _py(v) for k, v in item.items()}


def _names(*names: str) -> dict[str, str]:
    return {f"#{n}": n for n in names}


# --- one transaction being planned ----------------------------------------------------------------
class _Rec:
    """A state item as read (v is None when it was absent) and as it will be written (data None: delete)."""

    __slots__ = ("data", "dirty", "key", "v")

    def __init__(self, key: tuple[str, str], v: int | None, data: dict[str, Any] | None) -> None:
        self.key = key
        self.v = v
        self.data = data
        self.dirty = False


@dataclass(slots=True, eq=False)
class _Log:
    """An item of an append-only table (events, alerts, trades); its offset is given at the end."""

    kind: str
    obj: Any
    off: int = 0
    dropped: bool = False  # replaced within the same transaction: never written, its offset stays unused


class _Tx:
    def __init__(self, store: DynamoStore) -> None:
        self.store = store
        self.recs: dict[tuple[str, str], _Rec] = {}
        self.logs: list[_Log] = []
        self.deletes: list[tuple[str, str, int]] = []  # (kind, account, offset) of items written before
        self.presence: dict[str, int] = {}

    async def prefetch(self, keys: list[tuple[str, str]]) -> None:
        wanted = list(dict.fromkeys(k for k in keys if k not in self.recs))
        if not wanted:
            return
        items = await self.store._batch_get(self.store.tables["state"], [_item({"pk": p, "sk": s}) for p, s in wanted])
        for item in items:
            self._load(item)
        for key in wanted:
            self.recs.setdefault(key, _Rec(key, None, None))

    def _load(self, item: dict[str, Any]) -> _Rec:
        values = _plain(item)
        key = (values.pop("pk"), values.pop("sk"))
        v = values.pop("v", 0)
        for name, decoder in _STRUCT_ATTRS.items():
            if name in values:
                values[name] = decoder.decode(values[name])
        rec = self.recs[key] = _Rec(key, v, values)
        return rec

    async def get(self, pk: str, sk: str) -> _Rec:
        rec = self.recs.get((pk, sk))
        if rec is None:
            item = await self.store._get_state(pk, sk)
            rec = self._load(item) if item is not None else self.recs.setdefault((pk, sk), _Rec((pk, sk), None, None))
        return rec

    def new(self, pk: str, sk: str) -> _Rec:
        """A state item known to be absent (a fresh uuid): not read; its put is conditional all the same."""
        return self.recs.setdefault((pk, sk), _Rec((pk, sk), None, None))

    @staticmethod
    def set(rec: _Rec, data: dict[str, Any] | None) -> None:
        rec.data = data
        rec.dirty = True

    def add_log(self, kind: str, obj: Any) -> None:
        self.logs.append(_Log(kind, obj))

    def replace_log(self, kind: str, old: Any, new: Any) -> None:
        for entry in self.logs:
            if entry.obj is old and not entry.dropped:
                entry.dropped = True  # written by this very transaction: simply not written
                break
        else:
            self.deletes.append((kind, old.account, old.offset))
        self.add_log(kind, new)

    def size(self) -> int:
        return sum(r.dirty for r in self.recs.values()) + sum(not e.dropped for e in self.logs) + len(self.deletes)

    def assign_offsets(self, first: int) -> None:
        for i, entry in enumerate(self.logs):
            entry.off = first + i
            if entry.kind != "trades":
                entry.obj.offset = entry.off

    def transact_items(self) -> list[dict[str, Any]]:
        tables = self.store.tables
        state = tables["state"]
        items: list[dict[str, Any]] = []
        for rec in self.recs.values():
            if not rec.dirty:
                continue
            key = _item({"pk": rec.key[0], "sk": rec.key[1]})
            if rec.v is None:
                cond: dict[str, Any] = {
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": _names("pk"),
                }
            else:
                cond = {
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": _names("v"),
                    "ExpressionAttributeValues": {":v": _av(rec.v)},
                }
            if rec.data is not None:
                item = {**key, **_item({**rec.data, "v": (rec.v or 0) + 1})}
                items.append({"Put": {"TableName": state, "Item": item, **cond}})
            elif rec.v is not None:
                items.append({"Delete": {"TableName": state, "Key": key, **cond}})
            else:  # created and deleted within this transaction: it must still have been absent
                items.append({"ConditionCheck": {"TableName": state, "Key": key, **cond}})
        for kind, account, off in self.deletes:
            items.append({"Delete": {"TableName": tables[kind], "Key": _item({"acct": account, "off": off})}})
        for entry in self.logs:
            if not entry.dropped:
                items.append({"Put": {"TableName": tables[entry.kind], "Item": _log_item(entry)}})
        return items


def _log_item(entry: _Log) -> dict[str, Any]:
    obj = entry.obj
    body = _encode(obj)  # after the offset is set: the bytes published
    if entry.kind == "events":
        values = {"event": obj.event, "ts": obj.ts, "pid": obj.positionId}
    elif entry.kind == "alerts":
        values = {
            "type": obj.type,
            "ts": obj.raisedAt,
            "rk": _rk(obj.raisedAt, entry.off),
            "openFeed": "alerts" if obj.resolvedAt is None else None,
        }
    else:
        values = {"ts": obj.executedAt}
    return _item({"acct": obj.account, "off": entry.off, "feed": entry.kind, "body": body, **values})


def _rk(raised_at: int, offset: int) -> str:
    return f"{max(raised_at, 0):020d}#{offset:020d}"


def _copy_alert(alert: Alert) -> Alert:
    return ALERT_DECODER.decode(_encode(alert))


def _is_retryable(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("TransactionConflictException", "ConditionalCheckFailedException"):
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = {r.get("Code") for r in exc.response.get("CancellationReasons") or []} - {"None", None}
    return bool(reasons) and reasons <= RETRYABLE_REASONS


# --- the store ------------------------------------------------------------------------------------
class DynamoStore:
    def __init__(self, url: str, *, batch_max: int = 1024) -> None:
        self.prefix, self.region, self.endpoint = split_url(url)
        self.tables = {name: f"{self.prefix}-{name}" for name in ("state", "events", "alerts", "trades")}
        self.batch_max = batch_max
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._queue: asyncio.Queue[tuple[WriteOp, asyncio.Future] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self.commits = 0
        self.committed_ops = 0
        self.replans = 0  # transactions cancelled by a race (another node, a conflict) and planned again
        self.on_commit: Callable[[float, int], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint:
            kwargs["endpoint_url"] = self.endpoint
            if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
                # a local DynamoDB-compatible server takes any credentials; never walk the AWS chain for it
                kwargs.update(aws_access_key_id="local", aws_secret_access_key="local")
        config = AioConfig(
            retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=20, max_pool_connections=20
        )
        self._stack = contextlib.AsyncExitStack()
        try:
            self._client = await self._stack.enter_async_context(
                _session().create_client("dynamodb", config=config, **kwargs)
            )
            await asyncio.gather(*(self._ensure_table(name) for name in self.tables))
            await self._check_schema()
        except (BotoCoreError, ClientError) as exc:
            await self._stack.aclose()
            self._stack = self._client = None
            raise StoreError(f"cannot open DynamoDB tables {self.prefix}-*: {exc}") from None
        self._writer = asyncio.create_task(self._write_loop(), name="tradewire-dynamodb-writer")

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._client = None

    def _table_spec(self, name: str) -> dict[str, Any]:
        def key(hash_: str, range_: str) -> list[dict[str, str]]:
            return [{"AttributeName": hash_, "KeyType": "HASH"}, {"AttributeName": range_, "KeyType": "RANGE"}]

        def gsi(index: str, hash_: str, range_: str) -> dict[str, Any]:
            return {"IndexName": index, "KeySchema": key(hash_, range_), "Projection": {"ProjectionType": "ALL"}}

        if name == "state":
            attrs = {"pk": "S", "sk": "S"}
            spec: dict[str, Any] = {"KeySchema": key("pk", "sk")}
        else:
            attrs = {"acct": "S", "off": "N", "feed": "S"}
            spec = {"KeySchema": key("acct", "off"), "GlobalSecondaryIndexes": [gsi("feed-off", "feed", "off")]}
        if name == "alerts":
            attrs.update(rk="S", openFeed="S")
            spec["LocalSecondaryIndexes"] = [gsi("acct-rk", "acct", "rk")]
            spec["GlobalSecondaryIndexes"] += [gsi("feed-rk", "feed", "rk"), gsi("open-rk", "openFeed", "rk")]
        spec["AttributeDefinitions"] = [{"AttributeName": a, "AttributeType": t} for a, t in attrs.items()]
        return spec

    async def _ensure_table(self, name: str) -> None:
        table = self.tables[name]
        try:
            status = (await self._client.describe_table(TableName=table))["Table"]["TableStatus"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            try:
                created = await self._client.create_table(
                    TableName=table, BillingMode="PAY_PER_REQUEST", **self._table_spec(name)
                )
                status = created["TableDescription"]["TableStatus"]
            except ClientError as exc2:  # another node is creating it at the same moment
                if exc2.response["Error"]["Code"] != "ResourceInUseException":
                    raise
                status = "CREATING"
        deadline = time.monotonic() + 300
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                raise StoreError(f"DynamoDB table {table} is still {status}")
            await asyncio.sleep(0.2)
            status = (await self._client.describe_table(TableName=table))["Table"]["TableStatus"]

    async def _check_schema(self) -> None:
        item = await self._get_state("#META", "schema")
        if item is None:
            with contextlib.suppress(ClientError):  # another node wrote it first: read it below
                await self._client.put_item(
                    TableName=self.tables["state"],
                    Item=_item({"pk": "#META", "sk": "schema", "version": SCHEMA_VERSION}),
                    ConditionExpression="attribute_not_exists(#pk)",
                    ExpressionAttributeNames=_names("pk"),
                )
            item = await self._get_state("#META", "schema")
        version = _py(item["version"]) if item else SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise StoreError(f"tables {self.prefix}-* have schema version {version}, newer than this tradewire's")

    # --- low-level calls ----------------------------------------------------------------------
    async def _get_state(self, pk: str, sk: str) -> dict[str, Any] | None:
        resp = await self._client.get_item(
            TableName=self.tables["state"], Key=_item({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        return resp.get("Item")

    async def _batch_get(self, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def chunk(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            request: dict[str, Any] = {table: {"Keys": part, "ConsistentRead": True}}
            delay = 0.01
            while request:
                resp = await self._client.batch_get_item(RequestItems=request)
                found.extend(resp.get("Responses", {}).get(table, []))
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            return found

        parts = await asyncio.gather(*(chunk(keys[i : i + 100]) for i in range(0, len(keys), 100)))
        return [item for part in parts for item in part]

    async def _batch_put(self, table: str, items: list[dict[str, Any]]) -> None:
        for i in range(0, len(items), 25):
            request: dict[str, Any] = {table: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]}
            delay = 0.01
            while request:
                resp = await self._client.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}
                if request:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)

    async def _take_offsets(self, n: int) -> int:
        """Reserve n consecutive offsets; returns the first."""
        resp = await self._client.update_item(
            TableName=self.tables["state"],
            Key=_item({"pk": "#COUNTER", "sk": "offset"}),
            UpdateExpression="ADD #n :n",
            ExpressionAttributeNames=_names("n"),
            ExpressionAttributeValues={":n": _av(n)},
            ReturnValues="UPDATED_NEW",
        )
        return _py(resp["Attributes"]["n"]) - n + 1

    async def _query(self, **params: Any) -> AsyncIterator[dict[str, Any]]:
        while True:
            resp = await self._client.query(**params)
            for item in resp.get("Items", []):
                yield item
            last = resp.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    # --- the writer ---------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch, stop = take_group(item, self._queue.get_nowait, asyncio.QueueEmpty, self.batch_max)
            done = 0
            while done < len(batch):
                try:
                    done += await self._commit_group(batch[done:])
                except Exception as exc:  # never let the writer die: fail what was left
                    log.exception("dynamodb writer failed")
                    for op, fut in batch[done:]:
                        note_failure(op)
                        _settle(fut, None, StoreError(f"commit failed: {exc}"))
                    break
            if stop:
                return

    async def _commit_group(self, pending: list[tuple[WriteOp, asyncio.Future]], max_ops: int | None = None) -> int:
        """Plan and commit as many of `pending` (from the front) as fit one transaction; settle them."""
        started = time.perf_counter()
        count = max_ops
        for attempt in range(1, MAX_ATTEMPTS + 1):
            tx = _Tx(self)
            outcomes: list[tuple[Any, BaseException | None]] = []
            try:
                for i, (op, _) in enumerate(pending):
                    if count is not None and i >= count:
                        break
                    if count is None and i > 0 and tx.size() + OP_MAX_ITEMS > TX_MAX_ITEMS:
                        break
                    if i % 16 == 0:
                        await tx.prefetch(_prefetch_all(o for o, _ in pending[i : i + 16]))
                    outcomes.append(await self._plan_isolated(tx, op))
                count = len(outcomes)
                if tx.presence:  # unconditional, and idempotent: written before the transaction, again on a retry
                    await self._batch_put(
                        self.tables["state"],
                        [_item({"pk": "#PRESENCE", "sk": acc, "at": at}) for acc, at in tx.presence.items()],
                    )
                if tx.logs:
                    tx.assign_offsets(await self._take_offsets(len(tx.logs)))
                items = tx.transact_items()
                if items:
                    await self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
            except ClientError as exc:
                if _is_retryable(exc) and attempt < MAX_ATTEMPTS:
                    # another node changed an item we read (or a transaction on it was in flight):
                    # plan the same operations again from what is there now.
                    self.replans += 1
                    await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
                    continue
                count = count or max(len(outcomes), 1)
                if count > 1 and not _is_retryable(exc):
                    # one operation DynamoDB refuses (e.g. an item too large) must not spoil its neighbours
                    for i in range(count):
                        await self._commit_group(pending[i:], max_ops=1)
                    return count
                error = StoreError(f"commit failed: {exc}")
                outcomes = [(None, error)] * count
            except BotoCoreError as exc:
                count = count or max(len(outcomes), 1)
                outcomes = [(None, StoreError(f"commit failed: {exc}"))] * count
            else:
                self.commits += 1
                self.committed_ops += count
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started, count)
            break
        for (op, fut), (result, exc) in zip(pending, outcomes, strict=False):
            if exc is not None:
                note_failure(op)  # before the next group is planned: its later ops are not tried
            _settle(fut, result, exc)
        return count or 1

    async def _plan_isolated(self, tx: _Tx, op: WriteOp) -> tuple[Any, BaseException | None]:
        """Each _plan_* reads first and changes `tx` only at its end, so a refusal spoils nothing."""
        if (refused := blocked(op)) is not None:
            return None, refused
        try:
            return await self._plan(tx, op), None
        except (ClientError, BotoCoreError):
            raise
        except Exception as exc:  # this operation alone, as on the other engines: nothing of it is in `tx` yet
            log.exception("store operation failed")
            note_failure(op)
            return None, StoreError(f"store operation failed: {exc}")

    async def _plan(self, tx: _Tx, op: WriteOp) -> WriteResult:
        if isinstance(op, PresenceOp):
            tx.presence[op.account] = op.at
            return WriteResult("stored")
        if isinstance(op, AlertRaiseOp):
            return await self._plan_raise(tx, op)
        if isinstance(op, AlertResolveOp | AlertAckOp):
            return await self._plan_alert_change(tx, op)
        return await self._plan_position(tx, op)

    async def _plan_position(self, tx: _Tx, op: EAPositionOp | EAErrorOp | ReconcileOp) -> WriteResult:
        now = now_ms()
        facts = planner.Facts()
        account = await tx.get(op.account, ACCOUNT_SK)
        inbox = None
        if isinstance(op, EAPositionOp | EAErrorOp):
            inbox = await tx.get(op.account, f"MSG#{op.msg.id}")
            facts.inbox_seq = inbox.data["seq"] if inbox.data else None
            facts.max_seq = (account.data or {}).get("maxSeq", 0)
        position_id = planner.needs_position_facts(op)
        position = None
        if position_id is not None:
            position = await tx.get(op.account, f"POS#{position_id}")
            facts.open_event = (position.data or {}).get("open")
            facts.close_event = (position.data or {}).get("close")
        p = planner.plan(op, facts, now)
        result = WriteResult(p.status, p.detail)
        # --- from here on: changes only
        acc_data = dict(account.data or {})
        if p.inbox is not None and inbox is not None:
            _, seq, kind = p.inbox
            tx.set(inbox, {"seq": seq, "kind": kind, "at": now})
            acc_data["maxSeq"] = max(acc_data.get("maxSeq", 0), seq)
        if position is not None and position_id is not None and (p.inserts or p.updates):
            pos_data = dict(position.data or {})
            for ev in p.inserts:
                tx.add_log("events", ev)
                if ev.event in ("OPEN", "CLOSE"):
                    pos_data[ev.event.lower()] = ev
            for ev in p.updates:
                name = ev.event.lower()
                tx.replace_log("events", pos_data[name], ev)
                pos_data[name] = ev
            if p.system_trade is not None and not pos_data.get("trade"):
                pos_data["trade"] = True
                tx.add_log("trades", p.system_trade)
                result.system_trades.append(p.system_trade)
            tx.set(position, pos_data)
            open_ids = set(acc_data.get("openIds") or ())
            if pos_data.get("open") is not None and pos_data.get("close") is None:
                open_ids.add(position_id)
            else:
                open_ids.discard(position_id)
            acc_data["openIds"] = open_ids
            if not open_ids:
                del acc_data["openIds"]  # DynamoDB has no empty set
            result.events.extend(p.inserts + p.updates)
        if p.alert is not None:
            tx.set(tx.new(f"ALERT#{p.alert.id}", "#"), {"acct": p.alert.account, "alert": p.alert})
            tx.add_log("alerts", p.alert)
            result.alerts.append(p.alert)
        if acc_data != (account.data or {}):
            tx.set(account, acc_data)
        return result

    async def _plan_raise(self, tx: _Tx, op: AlertRaiseOp) -> WriteResult:
        alert = op.alert
        episode = None
        if alert.type != EPISODELESS:
            episode = await tx.get(alert.account, f"EPISODE#{alert.type}")
            if episode.data:
                return WriteResult("ignored", f"{alert.type} already open for {alert.account}")
        record = await tx.get(f"ALERT#{alert.id}", "#")
        if record.data:
            return WriteResult("ignored", f"alert {alert.id!r} is already stored")
        if episode is not None:
            tx.set(episode, {"id": alert.id})
        tx.set(record, {"acct": alert.account, "alert": alert})
        tx.add_log("alerts", alert)
        return WriteResult("stored", alerts=[alert])

    async def _plan_alert_change(self, tx: _Tx, op: AlertResolveOp | AlertAckOp) -> WriteResult:
        episode = None
        if isinstance(op, AlertResolveOp):
            if op.type != EPISODELESS:
                episode = await tx.get(op.account, f"EPISODE#{op.type}")
                alert_id = episode.data["id"] if episode.data else None
            else:
                alert_id = await self._open_episodeless(tx, op.account, op.type)
            record = await tx.get(f"ALERT#{alert_id}", "#") if alert_id is not None else None
            if record is None or not record.data:
                return WriteResult("not_found", f"no open {op.type} for {op.account}")
            old = record.data["alert"]
            alert = _copy_alert(old)
            alert.resolvedAt = op.at
            alert.data = {**(alert.data or {}), "resolution": op.message}
        else:
            record = await tx.get(f"ALERT#{op.alert_id}", "#")
            if not record.data:
                return WriteResult("not_found", f"no alert {op.alert_id!r}")
            old = record.data["alert"]
            alert = _copy_alert(old)
            if alert.ackedAt is not None:
                return WriteResult("ignored", "already acknowledged", alerts=[alert])
            alert.ackedAt, alert.ackedBy = op.at, op.by
            if alert.type == EPISODELESS and alert.resolvedAt is None:
                alert.resolvedAt = op.at  # an EA error has no recovery to wait for: acknowledging ends it
        if episode is not None:
            tx.set(episode, None)
        tx.set(record, {"acct": alert.account, "alert": alert})
        tx.replace_log("alerts", old, alert)
        return WriteResult("stored", alerts=[alert])

    async def _open_episodeless(self, tx: _Tx, account: str, type_: str) -> str | None:
        """The oldest unresolved alert of a type that has no episode item (SYSTEM_ERROR)."""
        async for item in self._query(
            TableName=self.tables["alerts"],
            KeyConditionExpression="#acct = :a",
            FilterExpression="#type = :t AND attribute_exists(#openFeed)",
            ExpressionAttributeNames=_names("acct", "type", "openFeed"),
            ExpressionAttributeValues={":a": _av(account), ":t": _av(type_)},
            ConsistentRead=True,
        ):
            alert_id = ALERT_DECODER.decode(item["body"]["B"]).id
            record = await tx.get(f"ALERT#{alert_id}", "#")
            if record.data and record.data["alert"].resolvedAt is None:
                return alert_id
        for rec in tx.recs.values():  # raised by an earlier operation of this transaction
            alert = (rec.data or {}).get("alert")
            if alert is not None and alert.account == account and alert.type == type_ and alert.resolvedAt is None:
                return alert.id
        return None

    # --- durable writes -----------------------------------------------------------------------
    def submit(self, op: WriteOp) -> asyncio.Future[WriteResult]:
        if self._writer is None:
            raise StoreError("store is not open")
        fut: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    async def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        return list(await asyncio.gather(*(self.submit(op) for op in ops)))

    # --- reads --------------------------------------------------------------------------------
    async def _read(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._client is None:
            raise StoreError("store is not open")
        try:
            return await fn()
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"read failed: {exc}") from None

    async def _collect(self, params: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        async def q() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            async for item in self._query(**params):
                out.append(item)
                if limit is not None and len(out) >= limit:
                    break
            return out

        return await self._read(q)

    def _scope(
        self,
        kind: str,
        account: str | None,
        sort_key: str,
        key_cond: str | None,
        values: dict[str, Any],
        feed: tuple[str, str] = ("feed", "feed-"),
    ) -> dict[str, Any]:
        """Query parameters for one account (the table or its LSI: strongly consistent) or for all
        accounts (a GSI whose partition key `feed[0]` holds `kind`, named feed[1] + sort_key), sorted on
        `sort_key` ("off" or "rk"), with `key_cond` on it if any."""
        if account:
            params: dict[str, Any] = {"ConsistentRead": True, "KeyConditionExpression": "#acct = :part"}
            if sort_key == "rk":
                params["IndexName"] = "acct-rk"
            names, part = _names("acct"), account
        else:
            params = {"IndexName": feed[1] + sort_key, "KeyConditionExpression": f"#{feed[0]} = :part"}
            names, part = _names(feed[0]), kind
        if key_cond:
            params["KeyConditionExpression"] += f" AND {key_cond}"
            names.update(_names(sort_key))
        params.update(
            TableName=self.tables[kind],
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":part": _av(part)},
        )
        return params

    async def acked_seq(self, account: str) -> int:
        item = await self._read(lambda: self._get_state(account, ACCOUNT_SK))
        return _py(item["maxSeq"]) if item and "maxSeq" in item else 0

    async def open_positions(self, account: str) -> list[Position]:
        async def q() -> list[Position]:
            item = await self._get_state(account, ACCOUNT_SK)
            ids = _py(item["openIds"]) if item and "openIds" in item else set()
            keys = [_item({"pk": account, "sk": f"POS#{pid}"}) for pid in sorted(ids)]
            opens = [EVENT_DECODER.decode(i["open"]["B"]) for i in await self._batch_get(self.tables["state"], keys)]
            return [ev.position for ev in sorted(opens, key=lambda ev: ev.offset)]

        return await self._read(q)

    async def head_offset(self) -> int:
        """The newest offset committed (over the feed GSIs: eventually consistent, so never ahead)."""
        heads = []
        for kind in ("events", "alerts"):
            params = self._scope(kind, None, "off", None, {})
            heads += await self._collect({**params, "ScanIndexForward": False, "Limit": 1}, 1)
        return max((_py(i["off"]) for i in heads), default=0)

    async def history(self, kind: str, account: str | None, since: int, limit: int) -> list[tuple[str, int, bytes]]:
        """Durable publications after `since`, oldest first: (channel, offset, payload as published)."""
        if kind not in ("events", "alerts"):
            raise KeyError(kind)
        params = self._scope(kind, account, "off", "#off > :since", {":since": _av(since)})
        params.update(ScanIndexForward=True, Limit=max(1, min(limit, 1000)))
        rows = await self._collect(params, limit)
        return [(f"/trading/{kind}/{_py(r['acct'])}", _py(r["off"]), bytes(r["body"]["B"])) for r in rows]

    async def _log_page(self, kind: str, query: EventQuery, decoder: msgspec.json.Decoder) -> Page:
        values: dict[str, Any] = {}
        filters: list[tuple[str, str]] = []  # (condition, attribute)
        if query.type and kind == "events":
            filters.append(("#event = :type", "event"))
            values[":type"] = _av(query.type)
        if query.since is not None:
            filters.append(("#ts >= :since", "ts"))
            values[":since"] = _av(query.since)
        if query.until is not None:
            filters.append(("#ts < :until", "ts"))
            values[":until"] = _av(query.until)
        if query.cursor is not None:
            values[":cursor"] = _av(query.cursor)
        params = self._scope(kind, query.account, "off", "#off < :cursor" if query.cursor is not None else None, values)
        _add_filters(params, filters)
        params.update(ScanIndexForward=False, Limit=min(max(query.limit + 1, 100 if filters else 1), 1000))
        rows = await self._collect(params, query.limit + 1)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return Page([decoder.decode(r["body"]["B"]) for r in rows], _py(rows[-1]["off"]) if more and rows else None)

    async def events(self, query: EventQuery) -> Page[PositionEvent]:
        return await self._log_page("events", query, EVENT_DECODER)

    async def system_trades(self, query: EventQuery) -> Page[SystemTrade]:
        return await self._log_page("trades", query, TRADE_DECODER)

    async def alerts(self, query: AlertQuery) -> list[Alert]:
        """Newest raised first (ties: newest offset): the rk sort key orders by exactly that."""
        values: dict[str, Any] = {}
        key_cond = None
        # rk = "<raisedAt:020>#<offset>" sorts above the bare "<since:020>" and below the bare "<until:020>"
        # The upper bound, inclusive: below the bare "<until:020>" (no rk equals it), and at or below the
        # rk just before the `before` cursor's (its offset minus one: the next older key there is).
        highs = []
        if query.until is not None:
            highs.append(f"{max(query.until, 0):020d}")
        if query.before is not None:
            raised, offset = query.before
            highs.append(_rk(max(raised, 0), offset - 1) if offset > 0 else f"{max(raised, 0):020d}")
        if query.since is not None:
            values[":lo"] = _av(f"{max(query.since, 0):020d}")
        if highs:
            values[":hi"] = _av(min(highs))
        if query.since is not None and highs:
            if values[":lo"]["S"] > values[":hi"]["S"]:
                return []  # DynamoDB refuses an empty BETWEEN (a ValidationException, told as a 503)
            key_cond = "#rk BETWEEN :lo AND :hi"
        elif query.since is not None:
            key_cond = "#rk >= :lo"
        elif highs:
            key_cond = "#rk <= :hi"
        filters: list[tuple[str, str]] = []
        if query.type:
            filters.append(("#type = :type", "type"))
            values[":type"] = _av(query.type)
        if query.state == "open" and not query.account:
            # every account's open alerts: the sparse index holds nothing else
            params = self._scope("alerts", None, "rk", key_cond, values, feed=("openFeed", "open-"))
        else:
            params = self._scope("alerts", query.account, "rk", key_cond, values)
            if query.state == "open":
                filters.append(("attribute_exists(#openFeed)", "openFeed"))
            elif query.state == "resolved":
                filters.append(("attribute_not_exists(#openFeed)", "openFeed"))
        _add_filters(params, filters)
        params.update(ScanIndexForward=False, Limit=min(max(query.limit, 100 if filters else 1), 1000))
        return [ALERT_DECODER.decode(r["body"]["B"]) for r in await self._collect(params, query.limit)]

    async def open_alerts(self) -> list[Alert]:
        return await self.alerts(AlertQuery(state="open", limit=1_000_000))

    async def open_episodes(self, account: str) -> list[str]:
        """The alert types with an open episode for the account: its EPISODE# items, one Query whatever
        else is open (an account's SYSTEM_ERRORs, which have none, may be hundreds)."""
        params = {
            "TableName": self.tables["state"],
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :episode)",
            "ExpressionAttributeNames": _names("pk", "sk"),
            "ExpressionAttributeValues": {":pk": _av(account), ":episode": _av("EPISODE#")},
            "ConsistentRead": True,
        }
        return [i["sk"].removeprefix("EPISODE#") for i in map(_plain, await self._collect(params)) if i.get("id")]

    async def _partition(self, pk: str) -> list[dict[str, Any]]:
        """Every state item under one partition key, strongly consistent, in sort-key order."""
        params = {
            "TableName": self.tables["state"],
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": _names("pk"),
            "ExpressionAttributeValues": {":pk": _av(pk)},
            "ConsistentRead": True,
        }
        return [_plain(i) for i in await self._collect(params)]

    async def present_accounts(self) -> list[str]:
        return [r["sk"] for r in await self._partition("#PRESENCE")]

    # --- credentials --------------------------------------------------------------------------
    async def _add_credential(self, kind: str, public_id: str, secret: str, listing: dict[str, Any]) -> None:
        """Two items in one transaction: the listing one (by id) and the one looked up (by hash)."""
        digest = hash_secret(secret)
        auth = {k: v for k, v in listing.items() if k in ("acct", "role")}
        cond = {"ConditionExpression": "attribute_not_exists(#pk)", "ExpressionAttributeNames": _names("pk")}
        state = self.tables["state"]
        listed = _item({"pk": f"#{kind}S", "sk": public_id, "hash": digest, **listing})
        looked_up = _item({"pk": f"{kind}#{digest}", "sk": "#", "id": public_id, **auth})
        items = [{"Put": {"TableName": state, "Item": item, **cond}} for item in (listed, looked_up)]
        try:
            await self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"commit failed: {exc}") from None

    async def _lookup(self, kind: str, secret: str) -> dict[str, Any] | None:
        return await self._lookup_hash(kind, hash_secret(secret))

    async def _lookup_hash(self, kind: str, digest: str) -> dict[str, Any] | None:
        item = await self._read(lambda: self._get_state(f"{kind}#{digest}", "#"))
        return _plain(item) if item else None

    async def token_hash_account(self, digest: str) -> str | None:
        """The account of the token with this SHA-256, while it is not revoked (revoking deletes its item)."""
        found = await self._lookup_hash("TOKEN", digest)
        return found["acct"] if found else None

    async def _listing(self, kind: str) -> list[dict[str, Any]]:
        return sorted(await self._partition(f"#{kind}S"), key=lambda r: (r["createdAt"], r["sk"]))

    async def _revoke(self, kind: str, public_id: str) -> bool:
        """True once revoked here; False if there is no such active credential. A throttled or conflicting
        write is tried again (reading the item afresh each time), never reported as "no such credential":
        an operator told so would take a leaked token for revoked while it goes on working."""
        for attempt in range(MAX_ATTEMPTS):
            item = await self._read(lambda: self._get_state(f"#{kind}S", public_id))
            if item is None or "revokedAt" in item:
                return False  # none, or revoked (by someone else meanwhile, if this is a retry)
            try:
                await self._revoke_item(kind, public_id, item)
                return True
            except ClientError as exc:
                if not _is_retryable(exc):
                    raise StoreError(f"commit failed: {exc}") from None
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise StoreError(f"revoke failed: still throttled or conflicting after {MAX_ATTEMPTS} attempts")

    async def _revoke_item(self, kind: str, public_id: str, item: dict[str, Any]) -> None:
        state = self.tables["state"]
        items = [
            {
                "Update": {
                    "TableName": state,
                    "Key": _item({"pk": f"#{kind}S", "sk": public_id}),
                    "UpdateExpression": "SET #revokedAt = :now",
                    "ConditionExpression": "attribute_exists(#pk) AND attribute_not_exists(#revokedAt)",
                    "ExpressionAttributeNames": _names("pk", "revokedAt"),
                    "ExpressionAttributeValues": {":now": _av(now_ms())},
                }
            },
            {"Delete": {"TableName": state, "Key": _item({"pk": f"{kind}#{_py(item['hash'])}", "sk": "#"})}},
        ]
        try:
            await self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except BotoCoreError as exc:
            raise StoreError(f"commit failed: {exc}") from None

    async def add_token(self, account: str, label: str = "") -> tuple[str, TokenInfo]:
        token_id, token = new_secret(TOKEN_PREFIX)
        info = TokenInfo(tokenId=token_id, account=account, createdAt=now_ms(), label=label)
        await self._add_credential(
            "TOKEN", token_id, token, {"acct": account, "label": label, "createdAt": info.createdAt}
        )
        return token, info

    async def token_account(self, token: str) -> str | None:
        found = await self._lookup("TOKEN", token)
        return found["acct"] if found else None

    async def list_tokens(self, account: str | None = None) -> list[TokenInfo]:
        return [
            TokenInfo(
                tokenId=r["sk"],
                account=r["acct"],
                createdAt=r["createdAt"],
                revokedAt=r.get("revokedAt"),
                label=r["label"],
            )
            for r in await self._listing("TOKEN")
            if not account or r["acct"] == account
        ]

    async def revoke_token(self, token_id: str) -> bool:
        return await self._revoke("TOKEN", token_id)

    async def add_api_key(self, role: Role, label: str = "") -> tuple[str, ApiKeyInfo]:
        key_id, key = new_secret(KEY_PREFIX)
        info = ApiKeyInfo(keyId=key_id, role=role, createdAt=now_ms(), label=label)
        await self._add_credential("KEY", key_id, key, {"role": role, "label": label, "createdAt": info.createdAt})
        return key, info

    async def api_key_role(self, key: str) -> Role | None:
        found = await self._lookup("KEY", key)
        return found["role"] if found else None

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        return [
            ApiKeyInfo(
                keyId=r["sk"], role=r["role"], createdAt=r["createdAt"], revokedAt=r.get("revokedAt"), label=r["label"]
            )
            for r in await self._listing("KEY")
        ]

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._revoke("KEY", key_id)

    async def known_accounts(self) -> list[str]:
        return sorted({r["acct"] for r in await self._listing("TOKEN") if "revokedAt" not in r})


def _add_filters(params: dict[str, Any], filters: list[tuple[str, str]]) -> None:
    if filters:
        params["FilterExpression"] = " AND ".join(cond for cond, _ in filters)
        params["ExpressionAttributeNames"].update(_names(*(attr for _, attr in filters)))


def _prefetch_all(ops: Iterable[WriteOp]) -> list[tuple[str, str]]:
    """The items a few operations will read, fetched together. Only a speed-up: an operation whose keys
    cannot be worked out (a malformed one) reads its own, and fails alone when it is planned."""
    keys: list[tuple[str, str]] = []
    for op in ops:
        with contextlib.suppress(Exception):
            keys += _prefetch_keys(op)
    return keys


def _prefetch_keys(op: WriteOp) -> list[tuple[str, str]]:
    """The state items planning `op` will read, fetched for a whole group in one BatchGetItem."""
    if isinstance(op, EAPositionOp):
        return [(op.account, ACCOUNT_SK), (op.account, f"MSG#{op.msg.id}"), (op.account, f"POS#{op.msg.position.id}")]
    if isinstance(op, EAErrorOp):
        return [(op.account, ACCOUNT_SK), (op.account, f"MSG#{op.msg.id}")]
    if isinstance(op, ReconcileOp):
        return [(op.account, ACCOUNT_SK), (op.account, f"POS#{op.position.id}")]
    if isinstance(op, AlertRaiseOp):
        keys = [(f"ALERT#{op.alert.id}", "#")]
        if op.alert.type != EPISODELESS:
            keys.append((op.alert.account, f"EPISODE#{op.alert.type}"))
        return keys
    if isinstance(op, AlertResolveOp):
        return [(op.account, f"EPISODE#{op.type}")] if op.type != EPISODELESS else []
    if isinstance(op, AlertAckOp):
        return [(f"ALERT#{op.alert_id}", "#")]
    return []


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
