"""Webhook notifications for alerts (DESIGN.md §7).

Every alert transition ("raised", "resolved", "acknowledged") is POSTed as JSON to each configured
``[[notify.webhook]]`` whose ``types`` / ``severities`` filters match (an empty list matches everything)::

    POST <url>
    Content-Type: application/json
    User-Agent: tradewire/<version>
    X-Tradewire-Event: raised
    X-Tradewire-Delivery: <alert id>:raised                     (the same on every retry and resend: dedupe on it)
    X-Tradewire-Timestamp: 1700000000                           (only with a secret; unix seconds)
    X-Tradewire-Signature: sha256=<64 hex digits>               (only with a secret)

    {"event": "raised", "alert": {"id": ..., "type": "MARGIN_CALL", ...}, "sentAt": 1700000000123}

An EA's SYSTEM_ERROR of the same code from the same account is sent at most once per ``[notify]
repeat_errors_after_s`` (60): those in between are stored and published as ever, not sent, and the next one
sent carries ``"suppressed": N``, how many were not (``repeats.py``).

Verifying a delivery (receiver side): take the raw request body bytes *as received* (do not re-serialise the
JSON) and the ``X-Tradewire-Timestamp`` header, compute
``"sha256=" + HMAC-SHA256(key=secret, msg=f"{timestamp}.".encode() + body).hexdigest()`` and compare it with
``X-Tradewire-Signature`` using a constant-time comparison (``hmac.compare_digest``). Reject timestamps far
from your own clock (for example more than 5 minutes) to defeat replays. The timestamp, the signature and
``sentAt`` are fresh on each attempt; the delivery id is not.

Delivery is at least once: deliveries wait in memory, and what a stop or a crash left queued is not kept. At
start the hub sends again the open alerts raised in the last ``[notify] resend_open_s`` seconds (300) that
nobody acknowledged, so a receiver may get a transition twice (and, with several nodes, once from each node that
starts): the delivery id is the alert's id and the transition, the same each time.

Delivery: a 2xx answer is success. Network errors, timeouts (``timeout_s``), 408, 429 and 5xx are retried with
exponential back-off and jitter (0.5 s doubling, capped at 30 s; a numeric ``Retry-After`` on 429/503 is
honoured up to the cap) up to ``max_attempts`` attempts in all. Any other answer (4xx, and 3xx: redirects are not
followed) fails the delivery at once. Deliveries to one webhook are sent one at a time by that webhook's own
worker, so a slow or dead webhook never delays another; they are sent in order for each account, the accounts
taking turns, so that one account's storm of alerts (an EA reporting errors in a loop) never delays another
account's. Each webhook has a bounded queue (``queue_size``); when it is full the oldest queued delivery of
the account with the most queued is dropped (``fairqueue.py``). ``notify`` never blocks and never raises.

Webhook URLs often embed credentials (Slack, Discord, ...), so logs name a webhook by its index and origin only;
the secret is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
import yarl

from tradewire.alerts import EPISODIC
from tradewire.config import NotifySettings, WebhookSettings
from tradewire.fairqueue import FairQueue
from tradewire.model import Alert
from tradewire.repeats import RepeatFilter

log = logging.getLogger(__name__)

Transition = Literal["raised", "resolved", "acknowledged"]
TRANSITIONS: frozenset[str] = frozenset({"raised", "resolved", "acknowledged"})
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
TOKEN_LIKE_CHARS = 8  # a webhook URL's path segment or query value this long may be its secret: never logged
RETRY_AFTER_STATUSES = frozenset({429, 503})
BACKOFF_CAP_S = 30.0

try:
    VERSION = metadata.version("tradewire")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    VERSION = "0+unknown"
USER_AGENT = f"tradewire/{VERSION}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Tradewire-Signature`` value: ``sha256=`` + hex HMAC-SHA256(secret, b"<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def matches(hook: WebhookSettings, alert: Alert) -> bool:
    """Whether ``hook``'s filters select ``alert`` (an empty filter list selects everything)."""
    return (not hook.types or alert.type in hook.types) and (not hook.severities or alert.severity in hook.severities)


def describe(index: int, url: str) -> str:
    """A loggable name for a webhook: its index and origin, never its path, query or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        origin = "<invalid url>"
    return f"webhook #{index} ({origin})"


class _Delivery(msgspec.Struct):
    id: str
    event: str
    alert_id: str
    account: str  # whose turn it takes in the webhook's queue
    alert_json: bytes  # encoded at notify() time: a snapshot, whatever happens to the Alert afterwards
    alert_type: str = ""
    suppressed: int = 0  # EA errors of this account and code not sent before it (repeats.py)


@dataclass(eq=False)
class _Hook:
    index: int
    settings: WebhookSettings
    name: str
    queue: FairQueue[_Delivery]  # by account
    task: asyncio.Task[None] | None = None
    current: _Delivery | None = None  # the delivery being attempted right now


class WebhookNotifier:
    """Delivers alert transitions to the configured webhooks; see the module docstring for the wire format."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        clock: Callable[[], float] = time.time,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stats: dict[str, int] = {"sent": 0, "retried": 0, "failed": 0, "dropped": 0, "suppressed": 0}
        self._repeats = RepeatFilter(settings.repeat_errors_after_s)
        self._hooks = [
            _Hook(i, hook, describe(i, hook.url), FairQueue(settings.queue_size))
            for i, hook in enumerate(settings.webhook)
        ]
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._session is not None or not self._hooks:
            return
        self._closed = False
        # One connection per webhook at most (one delivery at a time each): no pool limit, so that many hanging
        # webhooks can never starve the others of connections.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), headers={"User-Agent": USER_AGENT}
        )
        for hook in self._hooks:
            hook.task = asyncio.create_task(self._worker(hook), name=f"tradewire-notify-{hook.index}")
        log.info("notifier started: %d webhook(s)", len(self._hooks))

    async def stop(self, timeout: float = 5.0) -> None:
        """Give queued deliveries up to ``timeout`` seconds, then cancel what is left and close the session."""
        self._closed = True
        running = [h for h in self._hooks if h.task is not None]
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(h.queue.join() for h in running)), timeout)
            for hook in running:
                left = [*([hook.current] if hook.current is not None else []), *hook.queue.items()]
                if left:
                    named = ", ".join(f"{d.event} of alert {d.alert_id} ({d.account})" for d in left[:20])
                    more = f" and {len(left) - 20} more" if len(left) > 20 else ""
                    log.warning(
                        "%s: %d delivery(ies) abandoned at shutdown: %s%s (open ones raised in the last "
                        "[notify] resend_open_s are sent again at the next start)",
                        hook.name,
                        len(left),
                        named,
                        more,
                    )
                assert hook.task is not None
                hook.task.cancel()
            await asyncio.gather(*(h.task for h in running if h.task), return_exceptions=True)
        for hook in self._hooks:
            hook.task = None
            hook.current = None
            hook.queue.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ enqueue

    def notify(self, alert: Alert, transition: str) -> None:
        """Queue ``alert``'s ``transition`` for every matching webhook. Never blocks, never raises."""
        try:
            self._notify(alert, transition)
        except Exception:
            log.exception("notify failed for alert %s (%s)", getattr(alert, "id", "?"), transition)

    def _notify(self, alert: Alert, transition: str) -> None:
        if not self._hooks:
            return
        if transition not in TRANSITIONS:
            log.warning("notify: unknown transition %r for alert %s: ignored", transition, alert.id)
            return
        if self._closed:
            log.warning("notify after stop: alert %s (%s) not delivered", alert.id, transition)
            return
        send, suppressed = self._repeats.decide(alert, transition, self.clock())
        if not send:
            self.stats["suppressed"] += 1
            return
        alert_json: bytes | None = None
        for hook in self._hooks:
            if not matches(hook.settings, alert):
                continue
            if alert_json is None:
                alert_json = msgspec.json.encode(alert)
            delivery = _Delivery(
                f"{alert.id}:{transition}", transition, alert.id, alert.account, alert_json, alert.type, suppressed
            )
            old = hook.queue.put(alert.account, delivery, urgent=self._urgent(hook, alert, transition))
            if old is not None:
                self.stats["dropped"] += 1
                log.warning(
                    "%s: queue full (%d), dropped the oldest delivery %s (%s of alert %s) of the account with "
                    "the most queued, %s",
                    hook.name,
                    hook.queue.maxsize,
                    old.id,
                    old.event,
                    old.alert_id,
                    old.account,
                )

    @staticmethod
    def _urgent(hook: _Hook, alert: Alert, transition: str) -> bool:
        """An episode raised (an account has a handful at most at once), or the server's own word that an alert
        could not be stored, goes before, and is dropped after, EA errors and resolutions: a flood of either
        must not hold back or push out a STOP_OUT. Unless the account has a delivery of the same type waiting
        in the ordinary lane (the previous episode's 'resolved'): it goes behind it, so that a receiver never
        sees a type's episodes out of order."""
        told_live = alert.type == "SYSTEM_ERROR" and (alert.data or {}).get("source") == "server"
        if transition != "raised" or not (alert.type in EPISODIC or told_live):
            return False
        return not any(d.alert_type == alert.type for d in hook.queue.waiting(alert.account))

    # ------------------------------------------------------------------ delivery

    async def _worker(self, hook: _Hook) -> None:
        while True:
            delivery = await hook.queue.get()
            hook.current = delivery
            try:
                await self._deliver(hook, delivery)
            except Exception:  # a bug must not kill the worker: the next deliveries still go out
                self.stats["failed"] += 1
                log.exception("%s: delivery %s crashed", hook.name, delivery.id)
            finally:
                hook.current = None
                hook.queue.task_done()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(delay / 2, delay)  # "equal jitter": never retry in lock-step, never too early
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(self.backoff_cap_s, delay)

    def _request(self, hook: WebhookSettings, delivery: _Delivery) -> tuple[bytes, dict[str, str]]:
        now = self.clock()
        payload = {"event": delivery.event, "alert": msgspec.Raw(delivery.alert_json), "sentAt": int(now * 1000)}
        if delivery.suppressed:
            payload["suppressed"] = delivery.suppressed
        body = msgspec.json.encode(payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Tradewire-Event": delivery.event,
            "X-Tradewire-Delivery": delivery.id,
        }
        if hook.secret:
            timestamp = int(now)
            headers["X-Tradewire-Timestamp"] = str(timestamp)
            headers["X-Tradewire-Signature"] = sign(hook.secret, timestamp, body)
        return body, headers

    async def _deliver(self, hook: _Hook, delivery: _Delivery) -> None:
        settings = hook.settings
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        what = f"{hook.name}: {delivery.event} of alert {delivery.alert_id} (delivery {delivery.id})"
        for attempt in range(1, settings.max_attempts + 1):
            if attempt > 1:
                self.stats["retried"] += 1
            body, headers = self._request(settings, delivery)
            retry_after: float | None = None
            try:
                async with self._session.post(
                    settings.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    if 200 <= resp.status < 300:
                        self.stats["sent"] += 1
                        log.debug("%s: delivered on attempt %d", what, attempt)
                        return
                    snippet = (await resp.content.read(200)).decode("utf-8", "replace")
                    reason = f"HTTP {resp.status} {resp.reason or ''}".rstrip() + (f": {snippet!r}" if snippet else "")
                    # Error pages often echo the request's path (Express, Spring): the URL's token with it.
                    reason = _redact(reason, settings.url)
                    if resp.status not in RETRY_STATUSES and resp.status < 500:
                        self.stats["failed"] += 1
                        log.error("%s: rejected with %s; not retried", what, reason)
                        return
                    if resp.status in RETRY_AFTER_STATUSES:
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.InvalidURL:  # will never work: do not retry
                self.stats["failed"] += 1
                log.error("%s: invalid URL; not retried", what)
                return
            except TimeoutError:  # aiohttp's own timeouts derive from it; their text may carry the URL
                reason = f"no answer within {settings.timeout_s:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                reason = _redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, settings.url)
            if attempt >= settings.max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs", what, attempt, settings.max_attempts, reason, delay
            )
            await asyncio.sleep(delay)
        self.stats["failed"] += 1
        log.error("%s: failed after %d attempt(s), last: %s", what, settings.max_attempts, reason)


def _redact(text: str, url: str) -> str:
    """``text`` without ``url`` in any of the spellings aiohttp may print it in, nor any path segment or query
    value of it long enough to be a token (a receiver's error page may quote one alone)."""
    spellings = {url}
    with contextlib.suppress(Exception):
        parsed = yarl.URL(url)
        spellings |= {str(parsed), parsed.human_repr(), str(parsed.with_query(None)), parsed.path_qs}
        parts = [*parsed.raw_path.split("/"), *parsed.path.split("/"), *parsed.query.values()]
        parts += [pair.partition("=")[2] for pair in parsed.raw_query_string.split("&")]
        spellings |= {part for part in parts if len(part) >= TOKEN_LIKE_CHARS}
    for spelling in sorted(spellings, key=len, reverse=True):
        if spelling and spelling != "/":
            text = text.replace(spelling, "<url>")
    return text


def _retry_after(value: str | None) -> float | None:
    """A numeric Retry-After in seconds; HTTP dates and garbage are ignored."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None
