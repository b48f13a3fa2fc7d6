"""Python client for tradewire's realtime API: the AWS AppSync Events WebSocket protocol plus extensions.

    async with Client("http://127.0.0.1:8080", api_key) as client:
        sub = await client.subscribe("/trading/events/*")
        async for event in sub:
            print(event.offset, event.data)

What it speaks (DESIGN.md §5): `GET {url}/event/realtime` with the subprotocols `aws-appsync-event-ws` and
`header-<base64url(auth JSON)>`, `connection_init` → `connection_ack`, `subscribe` / `unsubscribe` /
`publish` over the socket, and `POST {url}/event` for HTTP publishing. tradewire extensions it uses:
`connection_init.payload.batch` (the server may then send `{"type": "batch", "items": [...]}`),
`data.offset` on durable channels, `subscribe.since` and `subscribe_success.recovered`.

Reconnection: when the connection is lost (closed, network error, or nothing received, not even a `ka`,
for `connectionTimeoutMs`), the client reconnects with jittered exponential back-off and resubscribes every
live subscription under the same id. A subscription whose events carried offsets resumes with
`since=<highest offset seen>`, so nothing durable is missed; `Subscription.recovered` then says whether the
server could replay the whole gap (`False`: reload through the REST API).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

log = logging.getLogger(__name__)

SUBPROTOCOL = "aws-appsync-event-ws"
REALTIME_PATH = "/event/realtime"
PUBLISH_PATH = "/event"
DEFAULT_CONNECTION_TIMEOUT_MS = 300_000
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a batch frame may carry a slow connection's whole backlog
AUTH_ERROR_TYPES = frozenset({"UnauthorizedException", "Unauthorized", "BadRequestException", "ForbiddenException"})
AUTH_ERROR_CODES = frozenset({400, 401, 403})
AUTH_CLOSE_CODES = frozenset({1008, 4401, 4403})
RECENT_OFFSETS = 1024  # per subscription, to drop a durable event delivered twice

_decode = msgspec.json.decode
_encode = msgspec.json.encode


# --- errors ---------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base of every error this client raises. `error_type` is the server's errorType, when there is one."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(f"{error_type}: {message}" if error_type else message)
        self.message = message
        self.error_type = error_type


class AuthError(ClientError):
    """The server refused the credentials (`connection_error`, HTTP 401/403, close code 4401)."""


class ConnectError(ClientError):
    """Could not connect or complete the handshake (network error, no `connection_ack`)."""


class ConnectionLost(ClientError):
    """The connection is gone and will not come back (reconnect disabled, or the client was closed)."""


class SubscribeError(ClientError):
    """The server answered `subscribe_error` (bad channel, unknown namespace, no permission, …)."""


class PublishError(ClientError):
    """The server refused a publish: `publish_error` over WebSocket, or an error status over HTTP."""

    def __init__(self, message: str, error_type: str | None = None, status: int | None = None) -> None:
        super().__init__(message, error_type)
        self.status = status


def _first_error(frame: Any) -> tuple[str | None, str, int | None]:
    """(errorType, message, errorCode) of the first entry of an AppSync `errors` list."""
    errors = frame.get("errors") if isinstance(frame, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    error_type = first.get("errorType")
    message = first.get("message") or "no message"
    code = first.get("errorCode")
    return (
        error_type if isinstance(error_type, str) else None,
        str(message),
        code if isinstance(code, int) else None,
    )


# --- events and subscriptions ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """One event delivered to a subscription.

    `channel` is the subscribed channel when it is exact, None for a wildcard subscription (the protocol
    does not say which matching channel an event came from). `data` is the decoded JSON value; `offset`
    is the server's durable offset (durable channels only, usable as `since`).
    """

    channel: str | None
    data: Any
    offset: int | None
    subscription_id: str


class _End:
    """Queue marker: the subscription ended, normally (`error` None) or with an error to raise."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


Callback = Callable[[Event], Any]


class Subscription:
    """A live subscription: an async iterator of `Event`s, resubscribed under the same id on reconnect.

    With a `callback`, events are passed to it (a coroutine function is run as a task) and are queued for
    `async for` only once iteration has started, so a callback-only subscription does not accumulate them.
    """

    def __init__(self, client: Client, channel: str, callback: Callback | None, since: int | None) -> None:
        self.id = uuid.uuid4().hex
        self.channel = "/" + channel.strip("/")
        self.callback = callback
        self.since = since
        self.last_offset: int | None = None
        self.recovered: bool | None = None  # from the latest subscribe_success: None when no replay was asked
        self.confirmed = False
        self.closed = False
        self.sent_on: int | None = None  # the connection generation its last subscribe frame went out on
        self._client = client
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._queueing = callback is None
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recent: deque[int] = deque(maxlen=RECENT_OFFSETS)
        self._recent_set: set[int] = set()

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.channel} last_offset={self.last_offset} recovered={self.recovered}>"

    @property
    def exact_channel(self) -> str | None:
        return None if self.channel.endswith("/*") else self.channel

    @property
    def resume_since(self) -> int | None:
        """The `since` to resubscribe with: the highest offset seen, else the one first asked for."""
        return self.last_offset if self.last_offset is not None else self.since

    async def unsubscribe(self) -> None:
        """Stop receiving; iteration ends after the events already queued."""
        await self._client._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        self._queueing = True
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends too
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

    # --- called by the client ---------------------------------------------------------------------
    def _confirm(self, recovered: Any, head: Any = None) -> bool:
        """Record a subscribe_success; True when it answered a resubscription.

        `head` is the server's newest durable offset when the subscription covers durable channels:
        a subscription that has seen no event yet resumes from there, so an outage leaves no gap.
        """
        self.recovered = recovered if isinstance(recovered, bool) else None
        if isinstance(head, int) and self.last_offset is None and self.since is None:
            self.last_offset = head
        again = self.confirmed
        self.confirmed = True
        if not self._first.done():
            self._first.set_result(None)
        return again

    def _refuse(self, error: ClientError) -> None:
        if not self._first.done():
            self._first.set_exception(error)
        self._end(error)

    def _deliver(self, event: Event) -> Awaitable[Any] | None:
        """Queue the event and run the callback; a coroutine the callback returned is handed back."""
        if event.offset is not None:
            if event.offset in self._recent_set:
                return None  # already delivered (the server replayed it)
            if len(self._recent) == self._recent.maxlen:
                self._recent_set.discard(self._recent[0])
            self._recent.append(event.offset)
            self._recent_set.add(event.offset)
            self.last_offset = event.offset if self.last_offset is None else max(self.last_offset, event.offset)
        if self._queueing:
            self._queue.put_nowait(event)
        if self.callback is None:
            return None
        result = self.callback(event)
        return result if inspect.isawaitable(result) else None

    def _end(self, error: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._first.done():
            self._first.set_exception(error or ConnectionLost("the subscription ended before it was confirmed"))
            self._first.exception()  # retrieved: nobody may be waiting for it
        self._queue.put_nowait(_End(error))


# --- URLs and auth ----------------------------------------------------------------------------------
def _http_base(url: str) -> str:
    parts = urlsplit(url.rstrip("/"))
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s):// or ws(s):// URL")
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def _ws_url(http_base: str) -> str:
    parts = urlsplit(http_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + REALTIME_PATH, "", ""))


def auth_subprotocol(host: str, api_key: str) -> str:
    """The `header-<base64url(JSON)>` subprotocol that carries AppSync auth on the WebSocket upgrade."""
    raw = _encode({"host": host, "x-api-key": api_key})
    return "header-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_event(event: Any) -> str:
    """An event as the JSON string AppSync carries (every event is JSON-encoded, strings included)."""
    return _encode(event).decode()


def _decode_event(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return raw  # not JSON: hand over the string as it came


# --- the client -------------------------------------------------------------------------------------
class Client:
    """An AppSync Events client for tradewire (asyncio, aiohttp). See the module docstring.

    `url` is the hub's base URL (`http(s)://host:port`, a `ws(s)://` one is accepted too). `on_resubscribe`
    is called with each subscription the server confirmed again after a reconnect (check its `recovered`).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        batch: bool = True,
        reconnect: bool = True,
        max_backoff: float = 10.0,
        min_backoff: float = 0.5,
        connect_timeout: float = 15.0,
        request_timeout: float = 10.0,
        heartbeat: float | None = None,
        session: aiohttp.ClientSession | None = None,
        on_resubscribe: Callable[[Subscription], Any] | None = None,
    ) -> None:
        self.url = _http_base(url)
        self.ws_url = _ws_url(self.url)
        self.host = urlsplit(self.url).netloc
        self.api_key = api_key
        self.batch = batch
        self.reconnect = reconnect
        self.max_backoff = max(max_backoff, 0.0)
        self.min_backoff = min(max(min_backoff, 0.0), self.max_backoff)
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self.on_resubscribe = on_resubscribe
        self.timeout_s = DEFAULT_CONNECTION_TIMEOUT_MS / 1000  # from connection_ack
        self.reconnects = 0
        self.generation = 0  # counts connections opened: a subscription is sent once per connection
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._up = asyncio.Event()  # set while connected, and once the client has failed or closed
        self._failure: ClientError | None = None
        self._closing = False

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._up.is_set() and self._failure is None

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    # --- lifecycle ----------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the WebSocket and complete the handshake; raises AuthError or ConnectError."""
        if self._runner is not None and not self._runner.done():
            return
        self._closing, self._failure = False, None
        self._up.clear()
        try:
            self._ws = await self._open()
        except BaseException:
            await self._close_session()
            raise
        self.generation += 1
        self._up.set()
        self._runner = asyncio.create_task(self._run(), name="tradewire-client")

    async def close(self) -> None:
        """Close the connection; every subscription's iteration ends, pending requests fail."""
        self._closing = True
        self._terminate(ConnectionLost("the client was closed"), error_subscriptions=False)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await self._close_ws(self._ws)
        self._ws = None
        for task in list(self._tasks):
            task.cancel()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    @staticmethod
    async def _close_ws(ws: aiohttp.ClientWebSocketResponse | None) -> None:
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    # --- handshake ----------------------------------------------------------------------------------
    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        session = self._ensure_session()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    self.ws_url,
                    protocols=(SUBPROTOCOL, auth_subprotocol(self.host, self.api_key)),
                    heartbeat=self.heartbeat,
                    max_msg_size=MAX_FRAME_BYTES,
                ),
                self.connect_timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in AUTH_ERROR_CODES:
                raise AuthError(f"{self.ws_url} refused the API key (HTTP {exc.status})") from None
            raise ConnectError(f"WebSocket handshake with {self.ws_url} failed: HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.ws_url}: {exc or type(exc).__name__}") from None
        try:
            init: dict[str, Any] = {"type": "connection_init"}
            if self.batch:
                init["payload"] = {"batch": True}
            await ws.send_str(_encode(init).decode())
            await self._await_ack(ws)
        except BaseException:
            await self._close_ws(ws)
            raise
        return ws

    async def _await_ack(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectError(f"no connection_ack from {self.ws_url} within {self.connect_timeout:g} s")
            try:
                msg = await ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise self._closed_before_ack(ws, msg)
            for frame in self._frames(msg.data):
                if frame.get("type") == "connection_ack":
                    self._set_timeout(frame)
                    return
                if frame.get("type") == "connection_error":
                    raise self._connection_error(frame)

    def _closed_before_ack(self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> ClientError:
        code = ws.close_code
        reason = f": {msg.extra}" if msg.extra else ""
        if code in AUTH_CLOSE_CODES:
            return AuthError(f"the server closed the connection (code {code}){reason}", "UnauthorizedException")
        return ConnectError(f"the connection closed before connection_ack (code {code}){reason}")

    def _connection_error(self, frame: dict[str, Any]) -> ClientError:
        error_type, message, code = _first_error(frame)
        if error_type in AUTH_ERROR_TYPES or code in AUTH_ERROR_CODES:
            return AuthError(message, error_type)
        return ConnectError(message, error_type)

    def _set_timeout(self, ack: dict[str, Any]) -> None:
        payload = ack.get("payload")
        timeout_ms = ack.get("connectionTimeoutMs")
        if not isinstance(timeout_ms, int | float) and isinstance(payload, dict):
            timeout_ms = payload.get("connectionTimeoutMs")
        if isinstance(timeout_ms, int | float) and timeout_ms > 0:
            self.timeout_s = timeout_ms / 1000

    # --- the connection's life ------------------------------------------------------------------------
    async def _run(self) -> None:
        """Read until the connection is lost, then reconnect and resubscribe, until closed or refused."""
        while True:
            assert self._ws is not None
            reason = await self._read(self._ws)
            self._up.clear()
            self._fail_pending(ConnectionLost(f"connection lost: {reason}"))
            if self._closing:
                return
            if not self.reconnect:
                self._terminate(ConnectionLost(f"connection lost: {reason}"))
                return
            log.warning("tradewire client: connection to %s lost (%s); reconnecting", self.ws_url, reason)
            try:
                self._ws = await self._reconnect()
            except ClientError as exc:
                log.error("tradewire client: giving up reconnecting: %s", exc)
                self._terminate(exc)
                return
            self.generation += 1
            self._up.set()
            self._spawn(self._resubscribe_all())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Dispatch frames until the connection ends; returns why it ended. This is also the ka watchdog."""
        while True:
            try:
                msg = await ws.receive(timeout=self.timeout_s)
            except TimeoutError:
                await self._close_ws(ws)
                return f"nothing received for {self.timeout_s:g} s (keep-alive timeout)"
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                for frame in self._frames(msg.data):
                    self._on_frame(frame)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"error: {msg.data}"
            else:
                extra = f" {msg.extra}" if msg.extra else ""
                return f"closed (code {ws.close_code}){extra}"

    async def _reconnect(self) -> aiohttp.ClientWebSocketResponse:
        attempt = 0
        while True:
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1
            try:
                ws = await self._open()
            except AuthError:
                raise
            except ClientError as exc:
                log.info("tradewire client: reconnect attempt %d failed: %s", attempt, exc)
                continue
            self.reconnects += 1
            log.info("tradewire client: reconnected to %s after %d attempt(s)", self.ws_url, attempt)
            return ws

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter: between half and all of min(max_backoff, min_backoff * 2^n)."""
        cap = min(self.max_backoff, self.min_backoff * 2 ** min(attempt, 30))
        return cap / 2 + random.uniform(0, cap / 2)

    async def _resubscribe_all(self) -> None:
        generation = self.generation
        for sub in list(self._subs.values()):
            if generation != self.generation:
                return  # lost again meanwhile: the next reconnect resubscribes
            if sub.sent_on != generation and not sub.closed and not await self._send_subscribe(sub):
                return

    def _terminate(self, error: ClientError, *, error_subscriptions: bool = True) -> None:
        """No more connection: fail what waits, end every subscription (with `error`, or normally)."""
        if self._failure is None:
            self._failure = error
        self._up.set()  # wake waiters: they see _failure
        self._fail_pending(error)
        for sub in list(self._subs.values()):
            sub._end(error if error_subscriptions else None)
        self._subs.clear()

    def _fail_pending(self, error: ClientError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("tradewire client: a callback failed", exc_info=task.exception())

    # --- inbound frames -------------------------------------------------------------------------------
    @staticmethod
    def _frames(raw: str | bytes) -> list[dict[str, Any]]:
        """The frames in one WebSocket message: a `batch` frame is unwrapped into its items."""
        try:
            frame = _decode(raw)
        except msgspec.DecodeError:
            log.warning("tradewire client: ignoring a frame that is not JSON: %.200r", raw)
            return []
        if not isinstance(frame, dict):
            return []
        if frame.get("type") == "batch":
            return [item for item in frame.get("items") or [] if isinstance(item, dict)]
        return [frame]

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        ident = frame.get("id")
        if kind == "data":
            self._on_data(frame)
        elif kind in ("subscribe_success", "subscribe_error"):
            self._on_subscribe_reply(frame)
        elif ident in self._pending:
            self._resolve(frame)
        elif kind == "error" and ident in self._subs:
            self._on_subscribe_reply(frame)
        elif kind in ("broadcast_error", "error", "connection_error"):
            log.warning("tradewire client: %s: %s", kind, _first_error(frame)[:2])
        # ka and unknown frames: nothing to do (any frame already reset the watchdog)

    def _on_data(self, frame: dict[str, Any]) -> None:
        sub = self._subs.get(frame.get("id"))  # type: ignore[arg-type]
        if sub is None:
            return  # unsubscribed meanwhile
        offset = frame.get("offset")
        offset = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
        raw = frame.get("event")
        values = raw if isinstance(raw, list) else [raw]  # the AWS doc once showed an array here
        for value in values:
            event = Event(sub.exact_channel, _decode_event(value), offset, sub.id)
            try:
                pending = sub._deliver(event)
            except Exception:
                log.exception("tradewire client: the callback of %s failed", sub.channel)
                continue
            if pending is not None:
                self._spawn(pending)

    def _on_subscribe_reply(self, frame: dict[str, Any]) -> None:
        sub = self._subs.get(frame.get("id"))  # type: ignore[arg-type]
        if sub is None:
            return
        if frame.get("type") == "subscribe_success":
            if sub._confirm(frame.get("recovered"), frame.get("offset")) and self.on_resubscribe is not None:
                try:
                    result = self.on_resubscribe(sub)
                except Exception:
                    log.exception("tradewire client: on_resubscribe failed")
                else:
                    if inspect.isawaitable(result):
                        self._spawn(result)
            return
        error_type, message, _ = _first_error(frame)
        del self._subs[sub.id]
        sub._refuse(SubscribeError(f"cannot subscribe to {sub.channel}: {message}", error_type))

    def _resolve(self, frame: dict[str, Any]) -> None:
        fut = self._pending.pop(frame["id"])
        if not fut.done():
            fut.set_result(frame)

    # --- outbound -------------------------------------------------------------------------------------
    def _authorization(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "host": self.host}

    async def _wait_up(self) -> None:
        if self._runner is None and self._failure is None:
            raise ClientError("not connected: call connect() first (or use `async with Client(...)`)")
        await self._up.wait()
        if self._failure is not None:
            raise self._failure

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send a frame on the current connection; False if it is gone (a reconnect is under way)."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(_encode(frame).decode())
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame carrying an id and wait for the reply with that id."""
        ident = frame["id"]
        try:
            async with asyncio.timeout(self.request_timeout):
                await self._wait_up()
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[ident] = fut
                if not await self._send(frame):
                    raise ConnectionLost(f"the connection was lost before {frame['type']} was sent")
                return await fut
        except TimeoutError:
            raise ClientError(f"no reply to {frame['type']} within {self.request_timeout:g} s") from None
        finally:
            self._pending.pop(ident, None)

    async def subscribe(
        self, channel: str, callback: Callback | None = None, *, since: int | None = None
    ) -> Subscription:
        """Subscribe to a channel (`/ns/a/b`, or `/ns/a/*` for every channel below `/ns/a`).

        Returns once the server confirmed; raises SubscribeError with the server's errorType and message
        when it refused. `since` (durable channels) replays what was published after that offset first.
        """
        await self._wait_up()
        sub = Subscription(self, channel, callback, since)
        self._subs[sub.id] = sub
        await self._send_subscribe(sub)  # if the connection is lost meanwhile, the reconnect resubscribes it
        try:
            await asyncio.wait_for(asyncio.shield(sub._first), self.request_timeout)
        except TimeoutError:
            self._subs.pop(sub.id, None)
            sub._end()
            raise ClientError(f"no reply to subscribe {channel} within {self.request_timeout:g} s") from None
        return sub

    async def _send_subscribe(self, sub: Subscription) -> bool:
        frame: dict[str, Any] = {
            "type": "subscribe",
            "id": sub.id,
            "channel": sub.channel,
            "authorization": self._authorization(),
        }
        if sub.resume_since is not None:
            frame["since"] = sub.resume_since
        sub.sent_on = self.generation  # before the send yields, so a concurrent resubscribe skips it
        return await self._send(frame)

    async def _unsubscribe(self, sub: Subscription) -> None:
        known = self._subs.pop(sub.id, None) is not None
        sub._end()
        if not known or not self.connected:
            return
        with contextlib.suppress(ClientError):
            await self._request({"type": "unsubscribe", "id": sub.id})

    async def publish(self, channel: str, *events: Any) -> dict[str, Any]:
        """Publish 1 to 5 events over the WebSocket (each is JSON-encoded); needs an admin key.

        Returns `{"successful": [...], "failed": [...]}`; raises PublishError on `publish_error`.
        """
        if not events:
            raise ValueError("publish needs at least one event")
        frame = {
            "type": "publish",
            "id": uuid.uuid4().hex,
            "channel": channel,
            "events": [encode_event(e) for e in events],
            "authorization": self._authorization(),
        }
        reply = await self._request(frame)
        if reply.get("type") != "publish_success":
            error_type, message, _ = _first_error(reply)
            raise PublishError(f"cannot publish to {channel}: {message}", error_type)
        return {"successful": reply.get("successful") or [], "failed": reply.get("failed") or []}

    async def post(self, channel: str, *events: Any) -> dict[str, Any]:
        """Publish 1 to 5 events over HTTP (`POST {url}/event`, header `x-api-key`); needs no WebSocket.

        Returns `{"successful": [...], "failed": [...]}`; raises PublishError (with `status`) when refused.
        """
        if not events:
            raise ValueError("post needs at least one event")
        body = _encode({"channel": channel, "events": [encode_event(e) for e in events]})
        headers = {"x-api-key": self.api_key, "content-type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with self._ensure_session().post(
                self.url + PUBLISH_PATH, data=body, headers=headers, timeout=timeout
            ) as resp:
                status, error_header, payload = resp.status, resp.headers.get("x-amzn-ErrorType"), await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot POST to {self.url}{PUBLISH_PATH}: {exc or type(exc).__name__}") from None
        try:
            reply = _decode(payload) if payload else {}
        except msgspec.DecodeError:
            reply = {}
        if status != 200:
            error_type, message, _ = _first_error(reply)
            raise PublishError(f"cannot publish to {channel}: {message}", error_header or error_type, status)
        return {"successful": reply.get("successful") or [], "failed": reply.get("failed") or []}
