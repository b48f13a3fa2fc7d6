"""The hub: where live state, the store and the fan-out meet. Transports call it; it owns no socket.

Volatile messages update the live cache and are published at once. Durable ones are queued to the
store; their publications go out after commit, and the transport acknowledges them from the same
future, so nothing is acknowledged or announced before it is durable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from tradewire import channels
from tradewire.alerts import CONNECTION_LOST, EPISODIC, AlertRules, Raise, Resolve, Transition, is_stop_out_close
from tradewire.broker.base import Broker, NoPresence, Publication
from tradewire.config import Settings
from tradewire.ingest import protocol as p
from tradewire.ingest.session import account_info, account_state, login_changed, positions_refused, symbols_refused
from tradewire.limits import ConnectionCaps, CredentialRates, TokenBucket
from tradewire.model import AccountInfo, Alert, Role, new_alert, now_ms
from tradewire.state import AccountSummary, LiveState
from tradewire.store.base import (
    AlertAckOp,
    AlertRaiseOp,
    AlertResolveOp,
    DurableStream,
    EAErrorOp,
    EAPositionOp,
    PresenceOp,
    ReconcileOp,
    Store,
    WriteResult,
    hash_secret,
)
from tradewire.tcp_guard import tcp_caps

_summary_decoder = msgspec.json.Decoder(AccountSummary)
log = logging.getLogger(__name__)

# After the backplane's presence could not be read, how long before accounts are adopted as orphans: the
# other nodes' presence lapsed meanwhile and is written again within their refresh (3 s; it lives 10 s).
PRESENCE_SETTLE_S = 10.0


class Fanout(Protocol):
    """Where publications go (the realtime gateway plugs in here)."""

    def publish(self, channel: str, payload: Any, *, durable: bool = False, offset: int | None = None) -> None: ...


class NullFanout:
    def publish(self, channel: str, payload: Any, *, durable: bool = False, offset: int | None = None) -> None:
        pass


class BrokerFanout:
    """Publish through a Broker: the payload is encoded to JSON at most once, whatever the subscriber count
    (and not at all if no subscriber, snapshot or other node needs it)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def publish(self, channel: str, payload: Any, *, durable: bool = False, offset: int | None = None) -> None:
        if isinstance(payload, bytes):
            self.broker.publish(Publication(channel, payload, not durable, offset))
        else:
            self.broker.publish(Publication.of(channel, payload, not durable, offset))


class LoginChanged(Exception):
    """A hello from another trading account (login) than the one its account id was greeted as."""


class Notifier(Protocol):
    """Where alert transitions go besides the store and the channels (webhooks)."""

    def notify(self, alert: Alert, transition: str) -> None: ...


class Presence(Protocol):
    """EA sessions across nodes (the broker provides it)."""

    def session_started(self, account: str) -> None: ...
    def session_ended(self, account: str) -> None: ...
    async def live_accounts(self) -> set[str]: ...  # on the other nodes
    async def last_seen(self) -> dict[str, int]: ...
    async def snapshot(self, pattern: str) -> list[Publication]: ...  # latest values, another node's too
    async def forget(self, channels: list[str]) -> None: ...


class Drainable(Protocol):
    """An open EA session, as the hub sees it: something it can replace or drain."""

    account: str

    async def drain(self, code: int, reason: str) -> None: ...


MAX_SECRET_CHARS = 256  # issued credentials have 56: a longer one matches nothing and is neither looked up nor kept


class _CredentialCache:
    """Credential look-ups cached briefly: a revoke reaches a running server within `ttl` seconds.

    Keyed by the secret's hash, never the secret: a presented "key" can be megabytes, and anyone can present
    one. Found and not-found are kept apart, each bounded: a flood of wrong credentials empties only its own
    half, never the half that spares the store a read for every credential in use.
    """

    def __init__(self, ttl: float, limit: int = 10_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._found: dict[str, tuple[float, Any]] = {}
        self._missing: dict[str, float] = {}

    def get(self, digest: str) -> tuple[bool, Any]:
        now = time.monotonic()
        hit = self._found.get(digest)
        if hit is not None and hit[0] >= now:
            return True, hit[1]
        if self._missing.get(digest, 0.0) >= now:
            return True, None
        return False, None

    def put(self, digest: str, value: Any) -> None:
        now = time.monotonic()
        if value is None:  # a wrong credential: remembered for a second at most
            if len(self._missing) >= self.limit:
                self._missing.clear()
            self._missing[digest] = now + min(1.0, self.ttl)
            return
        if len(self._found) >= self.limit:
            self._found = {k: v for k, v in self._found.items() if v[0] >= now}
            if len(self._found) >= self.limit:
                self._found.clear()
        self._found[digest] = (now + self.ttl, value)


class Hub:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        fanout: Fanout | None = None,
        clock: Callable[[], int] = now_ms,
        notifier: Notifier | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fanout: Fanout = fanout or NullFanout()
        self.presence: Presence = presence or NoPresence()
        self.clock = clock
        heartbeat_ms = settings.server.heartbeat_sec * 1000
        limits = settings.limits
        self.state = LiveState(3 * heartbeat_ms, limits.max_symbols_per_account, limits.max_positions_per_account)
        self.system_magics = frozenset(settings.system.magic_numbers)
        self._auth = _CredentialCache(settings.server.auth_cache_s)
        self.sessions: dict[str, Drainable] = {}
        self._background: set[asyncio.Future] = set()
        self._alert_writes: dict[str, set[asyncio.Future]] = {}  # account -> its alert writes not committed yet
        self._retired: set[str] = set()  # accounts with tokens, all revoked, at start: never adopted as lost
        self.draining = False
        self._exposure_dirty = False
        self._positions_dirty: set[str] = set()
        self._ticker: asyncio.Task | None = None
        self.counters = {
            "frames": 0,
            "messages": 0,
            "durable": 0,
            "errors": 0,
            "reconciled": 0,
            "throttled": 0,
            "positions_left_out": 0,
        }
        self._over_position_limit: set[str] = set()  # accounts already warned about in the log
        self.caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_ip)
        self.tcp_caps = tcp_caps(limits.max_connections, limits.max_connections_per_ip)  # every TCP connection
        self.connects = CredentialRates(limits.connects_per_s, limits.connect_burst)
        self.requests = CredentialRates(limits.requests_per_s, limits.request_burst)  # REST, per API key
        self._buckets: dict[str, TokenBucket] = {}
        self.rules = AlertRules(settings.alerts, settings.server.heartbeat_sec)
        self.notifier = notifier
        self._checker: asyncio.Task | None = None
        self._store_failure_alerted: dict[tuple[str, str], int] = {}  # (account, what failed) -> when told
        self._http_present: dict[str, int] = {}  # MT4 accounts heard from here lately -> when (see _http_heard)
        self._http_status: dict[str, str] = {}  # last published liveness of MT4 (HTTP) accounts
        # When presence became readable (see _adopt_orphans); a node starting up takes it as readable for long.
        self._presence_readable_since: float | None = time.monotonic() - PRESENCE_SETTLE_S
        self._presence_settle_s = PRESENCE_SETTLE_S

    # --- credentials ------------------------------------------------------------------------
    async def ea_account(self, token: str) -> str | None:
        if len(token) > MAX_SECRET_CHARS:
            return None
        digest = "t:" + hash_secret(token)
        hit, account = self._auth.get(digest)
        if not hit:
            account = await self.store.token_account(token)
            self._auth.put(digest, account)
        return account

    async def api_role(self, key: str) -> Role | None:
        if len(key) > MAX_SECRET_CHARS:
            return None
        digest = "k:" + hash_secret(key)
        hit, role = self._auth.get(digest)
        if not hit:
            role = await self.store.api_key_role(key)
            self._auth.put(digest, role)
        return role

    def throttle(self, account: str, messages: int) -> float:
        """Seconds this account's EA should wait before more messages: its rate is over the limit."""
        bucket = self._buckets.get(account)
        if bucket is None:
            limits = self.settings.limits
            bucket = self._buckets[account] = TokenBucket(limits.ea_messages_per_s, limits.ea_burst)
        delay = bucket.take(messages)
        if delay:
            self.counters["throttled"] += 1
        return delay

    def refund(self, account: str, messages: int) -> None:
        """Give back what a refused HTTP batch took: it was not processed."""
        bucket = self._buckets.get(account)
        if bucket is not None:
            bucket.tokens += messages

    # --- sessions -----------------------------------------------------------------------------
    async def session_started(self, session: Drainable) -> None:
        """Register a WebSocket session; an older one for the same account is replaced."""
        old = self.sessions.get(session.account)
        self.sessions[session.account] = session
        self.presence.session_started(session.account)
        if old is not None and old is not session:
            log.info("account %s: new session replaces the previous one", session.account)
            self.spawn(old.drain(4000, "replaced by a newer session for this account"))

    def session_ended(self, session: Drainable, greeted: bool) -> None:
        self.presence.session_ended(session.account)
        if self.sessions.get(session.account) is session:
            del self.sessions[session.account]
        if greeted:
            view = self.state.on_session_end(session.account, self.clock())
            if view.sessions == 0:
                self.rules.session_ended(session.account, self.clock())
                self.spawn(self._publish_gone(session.account))
            else:
                self._publish_account(session.account)

    async def greet(
        self, account: str, hello: p.Hello | AccountInfo, transport: str, *, new_session: bool = True
    ) -> p.Welcome:
        """Raises LoginChanged for a terminal logged in to another trading account than the one this account id
        was greeted as: read as this account's, its positions would close every one of this account's for good
        (the snapshot) and open the other's under it. The login is the one this node last greeted, or else the
        one in the account's last summary on the backplane (Redis keeps it across nodes and restarts)."""
        now = self.clock()
        view = self.state.account(account)
        known = view.info
        if known is None:  # not greeted here since this node started: as the backplane last showed it
            summary = await self._published_summary(account)
            known = summary.info if summary is not None else None
        if (refused := login_changed(account, known, hello)) is not None:
            raise LoginChanged(refused)
        if not view.positions_known and self.state.seed_positions(account, await self.store.open_positions(account)):
            self._positions_left_out(account)
        acked = await self.store.acked_seq(account)
        # Its episodes as the store has them: raised or resolved by another node while the EA was there,
        # they were unknown here (a margin call never resolved, or one never raised again). Once this node's
        # own writes for it are in: read before a raise committed, the episode was forgotten, never resolved.
        if pending := self._alert_writes.get(account):
            await asyncio.wait(set(pending))
        self.rules.load_episodes(account, await self.store.open_episodes(account))
        info = account_info(hello) if isinstance(hello, p.Hello) else hello
        if transport == "http":
            self._http_heard(account, now)
        self.state.on_hello(account, info, "ws" if transport == "ws" else "http", now, new_session=new_session)
        self._publish_account(account)
        self.rules.session_started(account, now)
        # Resolved through the store, not only the local rules: another node may have raised it.
        self.apply_transitions([Resolve(CONNECTION_LOST, account, "EA connected again", now)])
        self._track(self.store.submit(PresenceOp(account, now)))
        return p.Welcome(
            sessionId=str(uuid.uuid4()),
            ackedSeq=acked,
            heartbeatSec=self.settings.server.heartbeat_sec,
            serverTime=now,
        )

    def touch(self, account: str) -> int:
        """The account's EA was heard from now (a frame, a POST): its liveness moves. Returns now."""
        now = self.clock()
        self.state.touch(account, now)
        if account in self._http_present and self.state.accounts[account].transport == "http":
            self._http_present[account] = now
        if (account, CONNECTION_LOST) in self.rules.open:
            self.apply_transitions(self.rules.seen(account, now))
        return now

    # --- volatile -----------------------------------------------------------------------------
    def apply_volatile(
        self, account: str, msg: p.AccountMsg | p.PositionsMsg | p.TicksMsg | p.HeartbeatMsg, now: int | None = None
    ) -> p.ErrorReply | None:
        """Apply one live update; the error for the EA when part of it was refused. `now`: the time its
        frame was read, from `touch` (transports pass it once per frame rather than reading the clock and
        touching per message)."""
        if now is None:
            now = self.touch(account)
        kind = type(msg)
        if kind is p.TicksMsg:  # the bulk of all traffic
            publish = self.fanout.publish
            accepted, refused = self.state.apply_ticks(msg.ticks, now, account)  # type: ignore[union-attr]
            for tick in accepted:
                publish(channels.prices(tick.symbol), tick)
            if refused:
                return symbols_refused(account, refused, self.state.max_symbols_per_account)
        elif kind is p.AccountMsg:
            state = account_state(msg)  # type: ignore[arg-type]
            view = self.state.apply_account(account, state, now)
            self._publish_account(account, now)
            platform = view.info.platform if view.info else None
            transitions = self.rules.margin(account, state, platform, now)
            if transitions:
                self.apply_transitions(transitions)
        elif kind is p.PositionsMsg:
            rec = self.state.apply_snapshot(account, msg.positions, now, msg.ts)  # type: ignore[union-attr]
            if rec.refused:
                self._positions_left_out(account)
                return positions_refused(account, rec.refused, self.state.max_positions_per_account)
            if rec.late:
                return None
            for position in rec.opened:
                self._reconcile(ReconcileOp(account, "OPEN", position, msg.ts, position.magic in self.system_magics))
            for position in rec.closed:
                self._reconcile(ReconcileOp(account, "CLOSE", position, msg.ts, position.magic in self.system_magics))
            self._publish_positions(account)
        return None

    def _positions_left_out(self, account: str) -> None:
        """A position event or snapshot was left out of the account's live view (its limit): counted, and
        said in the log once per account, not once per event."""
        self.counters["positions_left_out"] += 1
        if account not in self._over_position_limit:
            self._over_position_limit.add(account)
            log.warning(
                "account %s: over [limits] max_positions_per_account (%d); its live position list leaves "
                "the rest out (their events are still stored)",
                account,
                self.state.max_positions_per_account,
            )

    def _reconcile(self, op: ReconcileOp) -> None:
        self.counters["reconciled"] += 1
        fut = self.store.submit(op)
        fut.add_done_callback(functools.partial(self._reconciled, op))
        fut.add_done_callback(self._after_commit)

    def _reconciled(self, op: ReconcileOp, fut: asyncio.Future[WriteResult]) -> None:
        """A snapshot's OPEN or CLOSE committed, or not: then it is tried again at the next snapshot (see
        `LiveState.reconciled`), and the operator is told."""
        if fut.cancelled():
            return
        exc = fut.exception()
        self.state.reconciled(op.account, op.event, op.position, stored=exc is None)
        if exc is not None:
            self._store_failed(op.account, exc)

    # --- durable ------------------------------------------------------------------------------
    def submit_durable(
        self, account: str, msg: p.DurableMsg, stream: DurableStream | None = None
    ) -> asyncio.Future[WriteResult]:
        """Queue a durable EA message; the future resolves after commit (or fails with StoreError). `stream`:
        the session's messages in order; once one fails, the later ones fail untried (see DurableStream)."""
        self.counters["durable"] += 1
        self.touch(account)
        if isinstance(msg, p.PositionMsg):
            op: EAPositionOp | EAErrorOp = EAPositionOp(account, msg, msg.position.magic in self.system_magics, stream)
        else:
            op = EAErrorOp(account, msg, stream)
        fut = self.store.submit(op)
        if isinstance(msg, p.PositionMsg):
            fut.add_done_callback(functools.partial(self._position_committed, account, msg))
        fut.add_done_callback(lambda f: self._after_commit(f, account))
        if is_stop_out_close(msg):
            fut.add_done_callback(functools.partial(self._after_stop_out_close, account, msg))
        return fut

    def _position_committed(self, account: str, msg: p.PositionMsg, fut: asyncio.Future[WriteResult]) -> None:
        """The live view takes an EA's OPEN, MODIFY or CLOSE once the store took it (`apply_committed_event`).
        Commits complete in the order they were submitted, so the view still sees an account's events in order."""
        if fut.cancelled() or fut.exception() is not None:
            return
        result = fut.result()
        applied = self.state.apply_committed_event(
            account, msg.event, msg.position, result.status, bool(result.events), self.clock()
        )
        if applied:
            self._publish_positions(account)
        elif applied is False:  # stored and acked all the same: the durable record stays whole
            self._positions_left_out(account)

    def _after_stop_out_close(self, account: str, msg: p.PositionMsg, fut: asyncio.Future[WriteResult]) -> None:
        """A stop-out CLOSE is a STOP_OUT alert once it is stored: a resend (a duplicate), or the same CLOSE
        reported again under another id (an EA that lost its outbox: taken, nothing recorded), is the same one."""
        if not fut.cancelled() and fut.exception() is None and fut.result().status == "stored" and fut.result().events:
            self.apply_transitions(
                self.rules.stop_out_close(account, msg.position.id, msg.position.symbol, self.clock())
            )

    def _after_commit(self, fut: asyncio.Future[WriteResult], account: str | None = None) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("durable write failed: %s", exc)
            if account is not None:
                self._store_failed(account, exc)
            return
        result = fut.result()
        for event in result.events:
            self.fanout.publish(channels.events(event.account), event, durable=True, offset=event.offset)
        for alert in result.alerts:
            self._announce(alert, "raised")

    def _store_failed(self, account: str, exc: BaseException, lost: Raise | None = None) -> None:
        """A server-side failure that touches an account: raised live even though the store is failing. With
        `lost`, an alert that could not be stored: named, so that a margin call is heard of all the same."""
        now = self.clock()
        key = (account, lost.type if lost is not None else "")
        if now - self._store_failure_alerted.get(key, -STORE_FAILURE_ALERT_EVERY_MS) < STORE_FAILURE_ALERT_EVERY_MS:
            return  # one per outage-minute (and alert type), not one per refused message
        self._store_failure_alerted[key] = now
        message, data = f"the store refused a write for this account: {exc}", {"source": "server"}
        if lost is not None:
            message = f"{lost.type} not stored ({lost.message}): the store refused the write: {exc}"
            data["alert"] = lost.type  # the rules raise it again, stored, at the next check
        alert = new_alert("SYSTEM_ERROR", "CRITICAL", account, message, now, data)
        self._announce(alert, "raised")
        self._track(self.store.submit(AlertRaiseOp(alert)))  # kept if the store recovers

    # --- alerts -------------------------------------------------------------------------------
    def apply_transitions(self, transitions: list[Transition]) -> None:
        """Persist each alert transition; publish and notify it once it is committed."""
        for t in transitions:
            if isinstance(t, Raise):
                alert = new_alert(t.type, t.severity, t.account, t.message, t.at, t.data)
                fut = self.store.submit(AlertRaiseOp(alert))
            elif isinstance(t, Resolve):
                fut = self.store.submit(AlertResolveOp(t.account, t.type, t.at, t.message))
            else:
                continue
            fut.add_done_callback(functools.partial(self._alert_committed, t))
            self._track(fut)
            writes = self._alert_writes.setdefault(t.account, set())
            writes.add(fut)
            fut.add_done_callback(functools.partial(self._alert_written, t.account))

    def _alert_written(self, account: str, fut: asyncio.Future) -> None:
        writes = self._alert_writes.get(account)
        if writes is not None:
            writes.discard(fut)
            if not writes:
                del self._alert_writes[account]

    def _alert_committed(self, t: Raise | Resolve, fut: asyncio.Future[WriteResult]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.error("alert write failed: %s", None if fut.cancelled() else fut.exception())
            # The rules took the episode as opened (or closed) when they decided it: undo that, so that the
            # next check decides it again and the write is tried again. Else a MARGIN_CALL whose write
            # failed was never stored nor told while the level stayed low.
            episode = (t.account, t.type)
            if isinstance(t, Raise):
                self.rules.open.discard(episode)
                exc = None if fut.cancelled() else fut.exception()
                if exc is not None and t.type != "SYSTEM_ERROR":
                    # Not stored, so not published nor notified: told live all the same, since a margin
                    # call that waits for the store to recover may come too late.
                    self._store_failed(t.account, exc, t)
            elif t.type in EPISODIC:
                self.rules.open.add(episode)
            return
        for alert in fut.result().alerts:
            self._announce(alert, "resolved" if alert.resolvedAt is not None else "raised")

    def _announce(self, alert: Alert, transition: str) -> None:
        log.info("alert %s %s for %s: %s", transition, alert.type, alert.account, alert.message)
        self.fanout.publish(channels.alerts(alert.account), alert, durable=True, offset=alert.offset or None)
        if self.notifier is not None:
            self.notifier.notify(alert, transition)

    async def acknowledge(self, alert_id: str, by: str) -> Alert | None:
        result = await self.store.submit(AlertAckOp(alert_id, by, self.clock()))
        if result.status == "not_found":
            return None
        alert = result.alerts[0]
        if result.status == "stored":
            self._announce(alert, "acknowledged")
        return alert

    def _track(self, fut: asyncio.Future) -> None:
        """Keep a background write referenced, and never let its failure go unseen."""
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)
        fut.add_done_callback(_log_failure)

    # --- publications -------------------------------------------------------------------------
    def _publish_account(self, account: str, now: int | None = None) -> None:
        self.fanout.publish(channels.accounts(account), self.state.summary(account, now or self.clock()))

    def republish(self) -> None:
        """Publish again the latest values of this node's own EAs (accounts, positions, their prices): after
        a backplane gap, what was published meanwhile was lost, on every node and in the backplane's copy
        of the latest values that new subscribers are given."""
        for account in {*self.sessions, *self._http_present}:  # the EAs live here: WebSocket, and MT4 heard lately
            self._publish_positions(account)  # the list, and the account's summary with it
            for symbol in self.state.account(account).quotes:
                if (tick := self.state.prices.get(symbol)) is not None:
                    self.fanout.publish(channels.prices(symbol), tick)

    def _publish_positions(self, account: str) -> None:
        """Mark the account's position list changed. It is published once per event-loop turn, so a
        frame of 200 position events costs one publication of the list, not 200."""
        self._exposure_dirty = True
        if not self._positions_dirty:
            asyncio.get_running_loop().call_soon(self._flush_positions)
        self._positions_dirty.add(account)

    def _flush_positions(self) -> None:
        dirty, self._positions_dirty = self._positions_dirty, set()
        for account in dirty:
            view = self.state.account(account)
            self.fanout.publish(
                channels.positions(account),
                {"account": account, "ts": view.updated_at, "positions": list(view.positions.values())},
            )
            self._publish_account(account)  # its position count and floating P/L changed too

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt what was open before a restart, restart lost-connection timers, start the periodic checks."""
        open_alerts = await self.store.open_alerts()
        now = self.clock()
        # Accounts whose every token is revoked are retired: nothing can connect for them any more. Adopted as
        # "must come back", each got a CONNECTION_LOST at every restart that nothing could ever resolve.
        tokens = await self.store.list_tokens()
        active = {t.account for t in tokens if t.revokedAt is None}
        self._retired = {t.account for t in tokens} - active
        retired_lost = [a for a in open_alerts if a.type == CONNECTION_LOST and a.account in self._retired]
        open_alerts = [a for a in open_alerts if a not in retired_lost]
        self.rules.load(open_alerts)
        self._resend_open(open_alerts, now)
        self.apply_transitions(
            [Resolve(CONNECTION_LOST, a.account, "account retired: every EA token revoked", now) for a in retired_lost]
        )
        # Nor are its summary and positions given to every new subscriber for good (Redis keeps them).
        retired_channels = [c for a in sorted(self._retired) for c in (channels.accounts(a), channels.positions(a))]
        try:
            await self.presence.forget(retired_channels)
        except Exception as exc:  # the backplane may be down at start: tried again at the next start
            log.warning("could not drop retired accounts' latest values from the backplane: %s", exc)
        for account in await self.store.present_accounts():
            if account in self._retired:
                continue
            view = self.state.account(account)
            view.ever_connected = True  # it had a session before the restart: 'lost' until it is back, not 'never'
            if view.sessions == 0:
                self.rules.session_ended(account, now)  # it must come back in time
        self._ticker = asyncio.create_task(self._exposure_loop())
        self._checker = asyncio.create_task(self._check_loop())

    def _resend_open(self, open_alerts: list[Alert], now: int) -> None:
        """Notifications wait in memory: a stop or a crash loses what was queued. Open alerts raised within
        `[notify] resend_open_s` and not acknowledged are sent again (at least once; receivers dedupe on the
        delivery id, which is the same each time)."""
        window_ms = self.settings.notify.resend_open_s * 1000
        if self.notifier is None or not window_ms:
            return
        recent = [a for a in open_alerts if a.ackedAt is None and now - a.raisedAt <= window_ms]
        for alert in sorted(recent, key=lambda a: a.raisedAt):
            self.notifier.notify(alert, "raised")
        if recent:
            log.info(
                "sent again %d open alert(s) raised in the last %g s (notifications do not outlive a stop)",
                len(recent),
                self.settings.notify.resend_open_s,
            )

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.alerts.check_interval_s)
            try:
                await self._check()
            except Exception:
                log.exception("alert check failed")

    async def _check(self) -> None:
        """The periodic alert check. What other nodes know (presence, over the backplane) refines it, but a
        backplane that cannot answer must not stop it: the EAs of this node are still to be watched."""
        self._publish_liveness_changes()
        self._http_expire(self.clock())
        presence = await self._read_presence()
        if presence is not None:
            self._adopt_orphans(*presence)
        elsewhere = presence[0] if presence is not None else None  # on the other nodes
        transitions = self.rules.check(self.clock(), self.state.accounts)
        self.apply_transitions(self._not_live_elsewhere(transitions, elsewhere))
        if elsewhere is not None:
            self._resolve_live_elsewhere(elsewhere)

    # --- MT4 (HTTP) accounts across nodes -----------------------------------------------------------
    # An MT4 EA has no session: its POSTs, behind a load balancer, may reach any node. Each node counts the
    # MT4 accounts it heard from within the liveness window in its presence, as it does its WebSocket
    # sessions, so that another node neither raises CONNECTION_LOST for them nor keeps one it raised; and a
    # node reached by an MT4 EA greeted elsewhere greets it from the backplane's copy of its summary.
    def _http_heard(self, account: str, now: int) -> None:
        if account not in self._http_present:
            self.presence.session_started(account)
        self._http_present[account] = now

    def _http_expire(self, now: int) -> None:
        for account, at in list(self._http_present.items()):
            if now - at > self.state.http_live_ms:
                del self._http_present[account]
                self.presence.session_ended(account)

    async def http_greeted_elsewhere(self, account: str) -> AccountInfo | None:
        """Who the MT4 account is, when another node greeted it and it is live there (its summary on the
        backplane says so, and is recent): a POST without hello reaching this node is then not refused."""
        try:
            if account in self._http_present or account not in await self.presence.live_accounts():
                return None  # not live on another node (one node alone: never), so the EA says hello here
        except Exception as exc:  # the backplane cannot answer: the EA is asked for a hello, as before
            log.debug("account %s: presence unreadable: %s", account, exc)
            return None
        summary = await self._published_summary(account)
        if summary is None or summary.info is None or summary.info.platform != "MT4" or summary.status != "live":
            return None
        fresh = summary.lastSeen is not None and self.clock() - summary.lastSeen <= self.state.http_live_ms
        return summary.info if fresh else None

    async def _published_summary(self, account: str) -> AccountSummary | None:
        """The account's summary as last published on the backplane (by any node; Redis keeps it across
        restarts), or None: none, or the backplane cannot answer."""
        try:
            latest = await self.presence.snapshot(channels.accounts(account))
        except Exception as exc:
            log.debug("account %s: no summary from the backplane: %s", account, exc)
            return None
        for pub in latest:
            try:
                return _summary_decoder.decode(pub.data)
            except msgspec.DecodeError:
                continue
        return None

    async def _read_presence(self) -> tuple[set[str], dict[str, int]] | None:
        """(accounts live on some node, when each account was last live), or None while it cannot be read."""
        try:
            live = await self.presence.live_accounts()
            seen = await self.presence.last_seen()
        except Exception as exc:
            if self._presence_readable_since is not None:
                log.warning("EA presence cannot be read (the backplane): alert checks go on without it: %s", exc)
            self._presence_readable_since = None
            return None
        if self._presence_readable_since is None:
            self._presence_readable_since = time.monotonic()
        return live, seen

    def _publish_liveness_changes(self) -> None:
        """An MT4 account has no session to end: it goes from live to lost by silence. Say so on its channel."""
        now = self.clock()
        for account, view in self.state.accounts.items():
            if view.transport != "http":
                continue
            status = view.status(now, self.state.http_live_ms)
            if self._http_status.get(account) != status:
                self._http_status[account] = status
                if status == "live":
                    self._publish_account(account)
                else:
                    self.spawn(self._publish_gone(account))

    async def _publish_gone(self, account: str) -> None:
        """The account's EA is no longer here: say so on its channel, unless it is live on another node. There
        the EA moved to (a reconnect that reached another node first, an MT4 EA's POSTs going elsewhere), and a
        "lost" from here, published last, said so on every dashboard for as long as it stayed there."""
        try:
            elsewhere = account in await self.presence.live_accounts()
        except Exception:  # the backplane cannot say: this node's own view is what there is
            elsewhere = False
        if not elsewhere:
            self._publish_account(account)

    async def _publish_orphan_lost(self, account: str) -> None:
        """An account whose EA was live on a node that died: its summary on the backplane, the dead node's
        last, said "live" for good. Published again as lost (with what it showed), unless this node has
        something newer of its own."""
        if account in self.state.accounts and self.state.accounts[account].ever_connected:
            self._publish_account(account)
            return
        summary = await self._published_summary(account)
        if summary is not None and summary.status == "live":
            lost = msgspec.structs.replace(summary, status="lost", asOf=self.clock())
            self.fanout.publish(channels.accounts(account), lost)

    def _not_live_elsewhere(self, transitions: list[Transition], live: set[str] | None) -> list[Transition]:
        """Drop a CONNECTION_LOST for an EA that simply reconnected to another node (`live`: None when
        presence cannot be read; then the raise stands: a lost EA unreported is worse than a move reported)."""
        if not live:
            return transitions
        keep = []
        for t in transitions:
            if isinstance(t, Raise) and t.type == CONNECTION_LOST and t.account in live:
                self.rules.session_started(t.account, t.at)  # alive elsewhere: no episode here
                continue
            keep.append(t)
        return keep

    def _resolve_live_elsewhere(self, live: set[str]) -> None:
        """Resolve a CONNECTION_LOST this node holds open for an EA live on another node. The raise can
        lose a race with the move: decided before the other node's presence showed, it is stored after that
        node's greet has resolved what was open; and nobody else would resolve it (the EA's frames go there)."""
        now = self.clock()
        transitions: list[Transition] = []
        for account, type_ in list(self.rules.open):
            if type_ == CONNECTION_LOST and account in live and account not in self.sessions:
                transitions += self.rules.session_started(account, now)
        self.apply_transitions(transitions)

    def _adopt_orphans(self, live: set[str], seen: dict[str, int]) -> None:
        """Accounts whose EA was live on a node that has gone (stopped refreshing its presence): start
        their grace period here. Every node does this; the store keeps one open episode per account.

        Not until presence has been readable for PRESENCE_SETTLE_S: after a backplane outage every node's
        presence has lapsed, and is written again only at its next refresh; adopted at once, with their
        last-live times from before the outage, a whole fleet of live EAs would be raised lost."""
        since = self._presence_readable_since
        if not seen or since is None or time.monotonic() - since < self._presence_settle_s:
            return
        here = self.sessions.keys() | self._http_present.keys() | self.rules.ended.keys() | self._retired
        for account, at in seen.items():
            if account in live or account in here:
                continue
            if (account, CONNECTION_LOST) not in self.rules.open:
                self.rules.session_ended(account, at)
                self.spawn(self._publish_orphan_lost(account))

    async def _exposure_loop(self) -> None:
        """Exposure sums every open position: publish it at most once a second, not per update."""
        while True:
            await asyncio.sleep(1.0)
            if self._exposure_dirty:
                self._exposure_dirty = False
                self.fanout.publish(channels.exposure(), {"ts": self.clock(), "symbols": self.state.exposure()})

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout: float) -> None:
        """Stop taking frames, commit and ack what is in flight, close every EA session with 1001. No alert check
        runs meanwhile: the EAs this closes did not go away, the server did (a drain that outlasted the grace
        reported every one of them lost, and notified it); the node that takes them over judges them."""
        self.draining = True
        if self._checker is not None:
            self._checker.cancel()
        sessions = list(self.sessions.values())
        if sessions:
            log.info("draining %d EA session(s)", len(sessions))
            _done, pending = await asyncio.wait(
                [asyncio.ensure_future(s.drain(1001, "server shutting down")) for s in sessions], timeout=timeout
            )
            if pending:
                log.warning("%d session(s) did not drain within %.1fs", len(pending), timeout)
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)
        for task in (self._ticker, self._checker):
            if task is not None:
                task.cancel()


STORE_FAILURE_ALERT_EVERY_MS = 60_000  # one server-side SYSTEM_ERROR per account per minute of outage


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("background store write failed: %s", fut.exception())
