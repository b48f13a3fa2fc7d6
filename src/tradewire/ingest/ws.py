"""EA ingest over WebSocket: `GET /ea/v1` with `Authorization: Bearer <ea-token>`.

The reader never waits for the disk: durable messages are queued to the store and the ack task
awaits their commits in order, sending one cumulative `ack` for whatever has committed. A store
failure closes the session (1011) without acking, so the EA resends after it reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

import msgspec
from aiohttp import WSMsgType, web

from tradewire.appkeys import GATEWAY, HUB
from tradewire.hub import Hub, LoginChanged
from tradewire.ingest import protocol as p
from tradewire.ingest.session import Durable, Greet, Reply, SessionCore, Volatile
from tradewire.limits import retry_after
from tradewire.store.base import DurableStream, StoreError, WriteResult

log = logging.getLogger(__name__)

# Messages of one frame applied between two turns of the event loop. A 1 MiB frame holds ~10,000 ticks, which
# applied in one go held the loop for the whole frame, every subscriber's delivery and every other EA waiting
# behind it; 128 at a time is ~1 ms. (An HTTP batch is applied whole: two batches of one account posted at
# once must not interleave, and a batch holds at most `[limits] ea_burst` messages.)
MESSAGES_PER_TURN = 128
# Durable messages of one session awaiting their ack: past it the next frame waits (TCP holds the rest).
# An ack covers many (the ack loop coalesces), so a session that keeps up never comes near it.
MAX_UNACKED = 1_000

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # bad or revoked token
CLOSE_LOGIN_CHANGED = 4003  # a hello from another trading account than the account's (login_changed)
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011  # store unavailable: reconnect and resend


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class EAWebSocketSession:
    def __init__(self, hub: Hub, account: str, ws: web.WebSocketResponse, token: str = "") -> None:
        self.hub = hub
        self.account = account
        self.ws = ws
        # The token is asked again every auth_cache_s while frames come: a revoked one stops writing then.
        self._token = token
        self._token_checked = time.monotonic()
        self.core = SessionCore(account)
        self._stream = DurableStream()  # this session's durable messages, in order (see DurableStream)
        # Set while a frame is being applied: a big one takes several loop turns (MESSAGES_PER_TURN), and a
        # drain must ack what it holds too, not only what was queued before the drain began.
        self._in_frame: asyncio.Future | None = None
        # Durable messages awaiting their commit, in order, and the task that acks them: both made on
        # the first durable message and the task gone when all are acked, so an idle session (most of
        # them, most of the time) holds neither.
        self._pending: collections.deque[tuple[p.DurableMsg, asyncio.Future[WriteResult]]] | None = None
        self._acker: asyncio.Task | None = None
        self._accepting = True
        self._welcomed = False  # a hello was answered: a later one on this session is not another session
        self._acked = 0
        self._close: tuple[int, str] | None = None
        self._last_count = 0

    async def run(self) -> None:
        # Registered (replacing an older session of the account) at its first answered hello, not at the
        # upgrade: a connection that never says hello, or whose hello is refused, knocks nobody off.
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if self._accepting and not await self._token_still_valid():
                        break
                    if self._accepting:
                        self._in_frame = asyncio.get_running_loop().create_future()
                        try:
                            await self._on_frame(msg.data)
                        finally:
                            self._in_frame.set_result(None)
                            self._in_frame = None
                        # Over its rate the EA is slowed down, not refused: refusing a durable message
                        # would let a later cumulative ack cover it. TCP back-pressure does the rest.
                        delay = self.hub.throttle(self.account, self._last_count)
                        if delay:
                            await asyncio.sleep(min(delay, 5.0))
                        await self._room_for_more()
                    # Reading a buffered socket never suspends: yield, or one fast EA starves the
                    # subscribers' writers and every other session on this loop.
                    await asyncio.sleep(0)
                elif msg.type == WSMsgType.ERROR:
                    log.info("account %s: websocket error: %s", self.account, self.ws.exception())
                    break
        finally:
            self._accepting = False
            if not await self._acked_all():
                log.warning("account %s: %d durable message(s) not acked at close", self.account, self._unacked())
            if self._acker is not None:
                self._acker.cancel()
            if self._welcomed:
                self.hub.session_ended(self, True)
            if not self.ws.closed:
                code, reason = self._close or (CLOSE_GOING_AWAY, "")
                await self.ws.close(code=code, message=reason.encode())

    async def _room_for_more(self) -> None:
        """Past MAX_UNACKED durable messages awaiting their ack, read no further until acks go out. The
        ack loop waits on the EA's socket: an EA that sends and never reads its acks (or a store that
        commits slower than the EA sends) would otherwise have the hub queue its messages without end."""
        while self._unacked() >= MAX_UNACKED and (acker := self._acker) is not None and not acker.done():
            await asyncio.wait([acker], timeout=0.1)

    async def _token_still_valid(self) -> bool:
        """False once the session's token is known revoked (then closed 1008). Asked at most once per
        auth_cache_s, before a frame: what it guards is writing. A store that cannot answer is asked next time."""
        every = self.hub.settings.server.auth_cache_s
        now = time.monotonic()
        if not self._token or now - self._token_checked < every:
            return True
        self._token_checked = now
        try:
            if await self.hub.ea_account(self._token) == self.account:
                return True
        except StoreError as exc:
            log.warning("account %s: token recheck: store unavailable: %s", self.account, exc)
            return True
        log.info("account %s: closing its session: the token was revoked", self.account)
        self._accepting = False
        self._close = (CLOSE_POLICY, "token revoked")
        return False

    async def _on_frame(self, data: str | bytes) -> None:
        self.hub.counters["frames"] += 1
        steps = self.core.receive(data)
        self._last_count = len(steps)
        self.hub.counters["messages"] += len(steps)
        now = self.hub.touch(self.account) if self.core.greeted else 0  # once per frame, not per message
        for index, step in enumerate(steps):
            if index and not index % MESSAGES_PER_TURN:
                await asyncio.sleep(0)  # a big frame takes turns with everyone else on the loop
            if isinstance(step, Volatile):
                refused = self.hub.apply_volatile(self.account, step.msg, now)
                if refused is not None:
                    self.hub.counters["errors"] += 1
                    await self._send(refused if len(steps) == 1 else msgspec.structs.replace(refused, index=index))
            elif isinstance(step, Durable):
                self._queue_durable(step.msg)
            elif isinstance(step, Reply):
                self.hub.counters["errors"] += 1
                await self._send(step.msg)
            elif isinstance(step, Greet):
                try:
                    welcome = await self.hub.greet(self.account, step.hello, "ws", new_session=not self._welcomed)
                    if not self._welcomed:
                        self._welcomed = True
                        await self.hub.session_started(self)
                except StoreError as exc:  # it reads what the store knows (acked seq, open positions)
                    await self._store_down("hello", exc)
                    return
                except LoginChanged as exc:  # written nothing; the client retries later, refused until fixed
                    log.warning("account %s: hello refused: %s", self.account, exc)
                    self._accepting = False
                    await self._send(p.ErrorReply(code=p.LOGIN_CHANGED, message=str(exc), ref="hello"))
                    self._close = (CLOSE_LOGIN_CHANGED, "another trading account")
                    await self.ws.close(code=CLOSE_LOGIN_CHANGED, message=b"another trading account")
                    return
                await self._send(welcome)

    def _queue_durable(self, msg: p.DurableMsg) -> None:
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append((msg, self.hub.submit_durable(self.account, msg, self._stream)))
        if self._acker is None:
            self._acker = asyncio.create_task(self._ack_loop(), name=f"acks-{self.account}")

    async def _ack_loop(self) -> None:
        """Await the commits in order and send one cumulative ack for whatever has committed; end when
        nothing is pending (the next durable message starts a new loop)."""
        pending = self._pending
        assert pending is not None
        try:
            while pending:
                msg, fut = pending[0]
                try:
                    # Shielded: this loop is cancelled when a session ends before its acks are out, and a
                    # cancel would reach the store's future, which the hub's own callbacks (publish, STOP_OUT)
                    # wait on too: the commit lands all the same, and they would never see it.
                    result = await asyncio.shield(fut)
                except StoreError as exc:
                    await self._store_down(msg.id, exc)
                    return
                pending.popleft()
                await self._settle(msg, result)
                # Coalesce: everything else that has committed by now gets covered by one ack.
                while pending and pending[0][1].done():
                    msg, fut = pending[0]
                    if fut.exception() is not None:
                        break
                    pending.popleft()
                    await self._settle(msg, fut.result())
                await self._send(p.Ack(seq=self._acked))
        finally:
            self._acker = None

    async def _acked_all(self) -> bool:
        """Wait (up to the drain timeout) until every durable message is committed and acked."""
        acker = self._acker
        if acker is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(acker), self.hub.settings.server.drain_timeout_s)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if acker.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                return False  # the ack loop was stopped (session closing), not us
            raise
        except Exception:  # the ack loop failed: say so, and let the session end cleanly all the same
            log.exception("account %s: ack loop failed", self.account)
            return False
        return not self._pending

    def _unacked(self) -> int:
        return len(self._pending) if self._pending else 0

    async def _settle(self, msg: p.DurableMsg, result: WriteResult) -> None:
        self._acked = max(self._acked, msg.seq)
        error = SessionCore.outcome(msg, result)
        if error is not None:
            self.hub.counters["errors"] += 1
            await self._send(error)

    async def _store_down(self, ref: str, exc: Exception) -> None:
        """The store failed (a commit, or the reads of a hello): ack nothing more on this session, tell the
        EA, close it 1011. It reconnects and resends what was not acked."""
        log.error("account %s: store failed for %s: %s", self.account, ref, exc)
        self._accepting = False
        if self._pending:
            self._pending.clear()
        await self._send(p.ErrorReply(code=p.STORE_UNAVAILABLE, message="store unavailable; resend later", ref=ref))
        self._close = (CLOSE_INTERNAL, "store unavailable")
        await self.ws.close(code=CLOSE_INTERNAL, message=b"store unavailable")

    async def _send(self, msg: p.Welcome | p.Ack | p.ErrorReply) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await self.ws.send_str(p.encode(msg).decode())

    async def drain(self, code: int, reason: str) -> None:
        """Take no more frames, wait until everything in flight is committed and acked, then close."""
        self._accepting = False
        self._close = (code, reason)
        if self._in_frame is not None:
            await asyncio.shield(self._in_frame)
        if not await self._acked_all():
            log.warning("account %s: drain timed out with %d message(s) unacked", self.account, self._unacked())
        await self.ws.close(code=code, message=reason.encode())


def admit(hub: Hub, request: web.Request) -> web.Response | None:
    """A WebSocket slot for this client, or the 503 that says why there is none."""
    refusal = hub.caps.admit(request.remote or "?")
    if refusal is None:
        return None
    body = p.encode(p.ErrorReply(code="too_many_connections", message=refusal))
    return web.Response(status=503, body=body, content_type="application/json", headers={"Retry-After": "5"})


def connect_refused(hub: Hub, who: str, named: str) -> web.Response | None:
    """The 429 for a credential connecting faster than `[limits] connects_per_s`, else None (CredentialRates)."""
    wait = hub.connects.admit(who)
    if not wait:
        return None
    limits = hub.settings.limits
    message = f"{named} connects more than {limits.connects_per_s:g} times a second (burst {limits.connect_burst})"
    body = p.encode(p.ErrorReply(code=p.RATE_LIMITED, message=f"{message}; retry after the Retry-After seconds"))
    headers = {"Retry-After": retry_after(wait)}
    return web.Response(status=429, body=body, content_type="application/json", headers=headers)


async def ea_websocket(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    refused = admit(hub, request)
    if refused is not None:
        return refused
    try:
        return await _ea_websocket(hub, request)
    finally:
        hub.caps.release(request.remote or "?")


async def _ea_websocket(hub: Hub, request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=hub.settings.server.max_frame_bytes, autoping=True)
    token = bearer_token(request)
    try:
        account = await hub.ea_account(token) if token else None
    except StoreError as exc:  # the token cannot be looked up: a close code the EA retries on, as for a commit
        log.warning("EA connect: store unavailable: %s", exc)
        await ws.prepare(request)
        await ws.close(code=CLOSE_INTERNAL, message=b"store unavailable")
        return ws
    # The rate check and the upgrade: one set-up per loop turn, as for subscribers (realtime/turns.py), so a
    # fleet reconnecting together after a restart does not hold every delivery while it upgrades.
    await request.app[GATEWAY].turns.take()
    if account is not None and (refused := connect_refused(hub, "ea:" + account, f"account {account!r}")):
        return refused
    await ws.prepare(request)
    if account is None:
        # Close after the upgrade rather than refuse it: MQL WebSocket clients often ignore the HTTP
        # status of a failed upgrade, but every client understands a close code.
        reason = "missing bearer token" if token is None else "invalid or revoked token"
        await ws.close(code=CLOSE_POLICY, message=reason.encode())
        return ws
    if hub.draining:
        await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
        return ws
    await EAWebSocketSession(hub, account, ws, token or "").run()
    return ws
