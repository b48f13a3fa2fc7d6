"""Webhook notifier against real local HTTP receivers (aiohttp servers on free ports)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from aiohttp import web

from tradewire.config import NotifySettings, WebhookSettings
from tradewire.model import Alert
from tradewire.notify import USER_AGENT, WebhookNotifier, matches, sign

SECRET = "s3cr3t-do-not-log"
NOW = 1_700_000_000.25


def alert(n: int = 1, type: str = "MARGIN_CALL", severity: str = "HIGH", **extra) -> Alert:
    return Alert(
        id=f"alert-{n}",
        type=type,
        severity=severity,  # type: ignore[arg-type]
        account="acc-1",
        message=f"margin level 95% (#{n})",
        raisedAt=1_700_000_000_000 + n,
        data={"marginLevel": 95.0},
        **extra,
    )


class Receiver:
    """A real HTTP server that records every request; `behaviour` decides each answer."""

    def __init__(self, behaviour: Callable[[int, web.Request], Awaitable[web.StreamResponse]] | None = None):
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.behaviour = behaviour
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, time.monotonic()))
        self.arrived.set()
        if self.behaviour is None:
            return web.Response(status=204)
        return await self.behaviour(len(self.requests), request)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook/{token}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook/private-token"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body, _ in self.requests]

    def delivery_ids(self) -> list[str]:
        return [headers["X-Tradewire-Delivery"] for headers, _, _ in self.requests]


@pytest.fixture
async def receivers():
    started: list[Receiver] = []

    async def make(behaviour=None) -> Receiver:
        r = await Receiver(behaviour).start()
        started.append(r)
        return r

    yield make
    for r in started:
        await r.stop()


@pytest.fixture
async def notifiers():
    started: list[WebhookNotifier] = []

    async def make(
        *hooks: WebhookSettings, queue_size: int = 100, repeat_errors_after_s: float = 60.0, **kwargs
    ) -> WebhookNotifier:
        kwargs.setdefault("backoff_base_s", 0.01)
        settings = NotifySettings(
            webhook=list(hooks), queue_size=queue_size, repeat_errors_after_s=repeat_errors_after_s
        )
        n = WebhookNotifier(settings, **kwargs)
        await n.start()
        started.append(n)
        return n

    yield make
    for n in started:
        await n.stop(timeout=0.1)


def hook(url: str, **kw) -> WebhookSettings:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("max_attempts", 3)
    return WebhookSettings(url=url, **kw)


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(*codes: int, headers: dict[str, str] | None = None):
    """Answer the n-th request with codes[n-1] (the last code repeats)."""

    async def behaviour(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=codes[min(n, len(codes)) - 1], text="nope", headers=headers)

    return behaviour


def hang(seconds: float = 5.0):
    async def behaviour(n: int, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=200)

    return behaviour


# ---------------------------------------------------------------------------- pure helpers


def test_sign_matches_hmac_sha256_over_timestamp_dot_body():
    body = b'{"x":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1_700_000_000, body) == "sha256=" + expected


def test_matches_filters_with_empty_meaning_all():
    a = alert(type="STOP_OUT", severity="CRITICAL")
    assert matches(hook("http://x/"), a)
    assert matches(hook("http://x/", types=["STOP_OUT", "MARGIN_CALL"]), a)
    assert not matches(hook("http://x/", types=["MARGIN_CALL"]), a)
    assert matches(hook("http://x/", severities=["CRITICAL"]), a)
    assert not matches(hook("http://x/", severities=["HIGH"]), a)
    assert not matches(hook("http://x/", types=["STOP_OUT"], severities=["HIGH"]), a)


# ---------------------------------------------------------------------------- delivery


async def test_raised_alert_is_delivered_signed(receivers, notifiers, caplog):
    caplog.set_level(logging.DEBUG, logger="tradewire.notify")
    rx = await receivers()
    notifier = await notifiers(hook(rx.url, secret=SECRET), clock=lambda: NOW)
    a = alert(7)

    notifier.notify(a, "raised")
    await until(lambda: notifier.stats["sent"] == 1)

    [(headers, body, _)] = rx.requests
    assert json.loads(body) == {
        "event": "raised",
        "alert": {
            "id": "alert-7",
            "type": "MARGIN_CALL",
            "severity": "HIGH",
            "account": "acc-1",
            "message": "margin level 95% (#7)",
            "raisedAt": 1_700_000_000_007,
            "resolvedAt": None,
            "ackedAt": None,
            "ackedBy": None,
            "data": {"marginLevel": 95.0},
            "offset": 0,
        },
        "sentAt": 1_700_000_000_250,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("tradewire/")
    assert headers["X-Tradewire-Event"] == "raised"
    assert headers["X-Tradewire-Delivery"] == "alert-7:raised"  # an idempotency key: the same if sent again
    # verify as a receiver would: raw body bytes, timestamp header, constant-time comparison
    timestamp = headers["X-Tradewire-Timestamp"]
    assert timestamp == "1700000000"
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Tradewire-Signature"], expected)
    assert notifier.stats == {"sent": 1, "retried": 0, "failed": 0, "dropped": 0, "suppressed": 0}
    assert SECRET not in caplog.text and "private-token" not in caplog.text


async def test_no_secret_no_signature_and_all_transitions(receivers, notifiers):
    rx = await receivers()
    notifier = await notifiers(hook(rx.url))
    a = alert(1)
    notifier.notify(a, "raised")
    a.ackedAt, a.ackedBy = 1_700_000_001_000, "key-1"
    notifier.notify(a, "acknowledged")
    a.resolvedAt = 1_700_000_002_000
    notifier.notify(a, "resolved")
    notifier.notify(a, "bogus")  # ignored, never raises
    await until(lambda: notifier.stats["sent"] == 3)

    assert [b["event"] for b in rx.bodies()] == ["raised", "acknowledged", "resolved"]
    assert [h["X-Tradewire-Event"] for h, _, _ in rx.requests] == ["raised", "acknowledged", "resolved"]
    # each transition is a snapshot of the alert at notify() time
    assert rx.bodies()[0]["alert"]["ackedBy"] is None  # the snapshot taken when notify() was called
    assert rx.bodies()[1]["alert"]["ackedBy"] == "key-1" and rx.bodies()[1]["alert"]["resolvedAt"] is None
    assert rx.bodies()[2]["alert"]["resolvedAt"] == 1_700_000_002_000
    assert all("X-Tradewire-Signature" not in h and "X-Tradewire-Timestamp" not in h for h, _, _ in rx.requests)
    assert len(set(rx.delivery_ids())) == 3


async def test_filters_by_type_and_severity(receivers, notifiers):
    by_type, by_severity, both, every = [await receivers() for _ in range(4)]
    notifier = await notifiers(
        hook(by_type.url, types=["STOP_OUT"]),
        hook(by_severity.url, severities=["HIGH"]),
        hook(both.url, types=["CONNECTION_LOST"], severities=["CRITICAL"]),
        hook(every.url),
    )
    notifier.notify(alert(1, "STOP_OUT", "CRITICAL"), "raised")
    notifier.notify(alert(2, "MARGIN_CALL", "HIGH"), "raised")
    notifier.notify(alert(3, "CONNECTION_LOST", "HIGH"), "raised")
    await until(lambda: notifier.stats["sent"] == 6)
    await asyncio.sleep(0.05)  # nothing more arrives

    def ids(rx: Receiver) -> list[str]:
        return [b["alert"]["id"] for b in rx.bodies()]

    assert ids(by_type) == ["alert-1"]
    assert ids(by_severity) == ["alert-2", "alert-3"]
    assert ids(both) == []
    assert ids(every) == ["alert-1", "alert-2", "alert-3"]
    assert notifier.stats["sent"] == 6


async def test_5xx_is_retried_with_the_same_delivery_id(receivers, notifiers):
    rx = await receivers(status(500, 500, 200))
    notifier = await notifiers(hook(rx.url, secret=SECRET, max_attempts=5))
    notifier.notify(alert(1), "raised")
    await until(lambda: notifier.stats["sent"] == 1)

    assert len(rx.requests) == 3
    assert len(set(rx.delivery_ids())) == 1
    assert notifier.stats == {"sent": 1, "retried": 2, "failed": 0, "dropped": 0, "suppressed": 0}
    for headers, body, _ in rx.requests:  # every attempt is signed afresh and verifies
        expected = sign(SECRET, int(headers["X-Tradewire-Timestamp"]), body)
        assert hmac.compare_digest(headers["X-Tradewire-Signature"], expected)


async def test_4xx_is_not_retried(receivers, notifiers, caplog):
    rx = await receivers(status(400))
    notifier = await notifiers(hook(rx.url, max_attempts=5))
    notifier.notify(alert(1), "raised")
    await until(lambda: notifier.stats["failed"] == 1)
    await asyncio.sleep(0.1)

    assert len(rx.requests) == 1
    assert notifier.stats == {"sent": 0, "retried": 0, "failed": 1, "dropped": 0, "suppressed": 0}
    assert "HTTP 400" in caplog.text and "not retried" in caplog.text


async def test_an_error_page_that_echoes_the_url_does_not_put_its_token_in_the_log(receivers, notifiers, caplog):
    """Express answers `Cannot POST /path`, Spring Boot's error JSON has a "path": the webhook's token with it."""

    async def echo(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=503, text=f"no route for {request.match_info['token']}")
        return web.Response(status=404, text=f"Cannot POST {request.path_qs}")

    rx = await receivers(echo)
    notifier = await notifiers(hook(rx.url + "?key=private-key-2", max_attempts=3))
    notifier.notify(alert(1), "raised")
    await until(lambda: notifier.stats["failed"] == 1)
    assert "HTTP 404" in caplog.text and "HTTP 503" in caplog.text
    assert "private-token" not in caplog.text and "private-key-2" not in caplog.text


async def test_408_and_429_are_retried_and_retry_after_is_honoured(receivers, notifiers):
    rx = await receivers(status(408, 429, 200, headers={"Retry-After": "0.3"}))
    notifier = await notifiers(hook(rx.url, max_attempts=3))
    notifier.notify(alert(1), "raised")
    await until(lambda: notifier.stats["sent"] == 1)

    assert len(rx.requests) == 3
    assert rx.requests[2][2] - rx.requests[1][2] >= 0.29  # waited for Retry-After, not the 10 ms back-off
    assert notifier.stats["retried"] == 2


async def test_hanging_receiver_is_retried_until_max_attempts_then_failed(receivers, notifiers, caplog):
    rx = await receivers(hang(5.0))
    notifier = await notifiers(hook(rx.url, timeout_s=0.15, max_attempts=3, secret=SECRET))
    started = time.monotonic()
    notifier.notify(alert(1), "raised")
    await until(lambda: notifier.stats["failed"] == 1)

    assert len(rx.requests) == 3
    assert len(set(rx.delivery_ids())) == 1
    assert notifier.stats == {"sent": 0, "retried": 2, "failed": 1, "dropped": 0, "suppressed": 0}
    assert time.monotonic() - started < 2.0
    assert "failed after 3 attempt(s)" in caplog.text
    assert SECRET not in caplog.text and "private-token" not in caplog.text


async def test_dead_webhooks_do_not_delay_a_healthy_one(receivers, notifiers):
    hanging = await receivers(hang(5.0))
    healthy = await receivers()
    refused = f"http://127.0.0.1:{free_port()}/hook"
    notifier = await notifiers(
        hook(hanging.url, timeout_s=3.0, max_attempts=5),
        hook(refused, timeout_s=3.0, max_attempts=20),
        hook(healthy.url),
    )
    notifier.notify(alert(1), "raised")
    await hanging.arrived.wait()  # the hanging webhook is now stuck on its first attempt

    started = time.monotonic()
    for n in range(2, 6):
        notifier.notify(alert(n), "raised")
    await until(lambda: len(healthy.requests) == 5, timeout=2.0)
    assert time.monotonic() - started < 0.5
    assert [b["alert"]["id"] for b in healthy.bodies()] == [f"alert-{n}" for n in range(1, 6)]
    assert len(hanging.requests) == 1  # still stuck on alert-1


async def test_notify_returns_immediately_with_a_hanging_receiver(receivers, notifiers):
    rx = await receivers(hang(5.0))
    notifier = await notifiers(hook(rx.url, timeout_s=3.0, secret=SECRET))
    notifier.notify(alert(0), "raised")
    await rx.arrived.wait()

    for n in range(1, 50):
        started = time.perf_counter()
        notifier.notify(alert(n), "raised")
        assert time.perf_counter() - started < 0.010
    assert len(rx.requests) == 1


async def gated_receiver(receivers) -> tuple[Receiver, asyncio.Event]:
    """A receiver that holds every request until the gate is set: deliveries queue up behind the first."""
    gate = asyncio.Event()

    async def gated(n: int, request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=200)

    return await receivers(gated), gate


async def test_full_queue_drops_the_oldest(receivers, notifiers, caplog):
    rx, gate = await gated_receiver(receivers)
    notifier = await notifiers(hook(rx.url), queue_size=2)
    notifier.notify(alert(1), "raised")
    await rx.arrived.wait()  # alert-1 is in flight, the queue is empty

    for n in range(2, 6):  # 2 and 3 are queued, then pushed out by 4 and 5
        notifier.notify(alert(n), "raised")
    assert notifier.stats["dropped"] == 2
    assert caplog.text.count("dropped the oldest") == 2

    gate.set()
    await until(lambda: notifier.stats["sent"] == 3)
    await asyncio.sleep(0.05)
    assert [b["alert"]["id"] for b in rx.bodies()] == ["alert-1", "alert-4", "alert-5"]
    assert notifier.stats == {"sent": 3, "retried": 0, "failed": 0, "dropped": 2, "suppressed": 0}


async def test_one_accounts_storm_of_alerts_neither_delays_nor_pushes_out_anothers(receivers, notifiers, caplog):
    """An EA that reports errors in a loop raises a SYSTEM_ERROR each time: its deliveries wait behind one
    another, not in front of another account's margin call, and a full queue drops its own, not that one."""
    rx, gate = await gated_receiver(receivers)
    notifier = await notifiers(hook(rx.url), queue_size=10, repeat_errors_after_s=0)  # the queue's own fairness
    notifier.notify(alert(0), "raised")
    await rx.arrived.wait()  # acc-1's alert is in flight, the queue is empty
    for n in range(1, 51):
        storm = msgspec.structs.replace(alert(n, type="SYSTEM_ERROR", severity="CRITICAL"), account="acc-noisy")
        notifier.notify(storm, "raised")
    notifier.notify(msgspec.structs.replace(alert(99), account="acc-2"), "raised")
    assert notifier.stats["dropped"] == 41  # all of them the noisy account's oldest
    assert "the most queued, acc-noisy" in caplog.text and "acc-2" not in caplog.text

    gate.set()
    await until(lambda: notifier.stats["sent"] == 11)
    sent = [(b["alert"]["account"], b["alert"]["id"]) for b in rx.bodies()]
    # after the one in flight, acc-2's margin call (an episode raised) goes before every queued EA error
    assert sent[:3] == [("acc-1", "alert-0"), ("acc-2", "alert-99"), ("acc-noisy", "alert-42")]
    assert [i for a, i in sent[3:]] == [f"alert-{n}" for n in range(43, 51)]


async def test_an_accounts_stop_out_is_not_pushed_out_by_its_own_error_loop(receivers, notifiers):
    """The queue drops the oldest item of the account holding the most: an account that raised a STOP_OUT and
    then looped on errors (its EA retrying OrderSend) lost its own STOP_OUT first."""
    rx, gate = await gated_receiver(receivers)
    notifier = await notifiers(hook(rx.url), queue_size=10, repeat_errors_after_s=0)  # the queue's own fairness
    notifier.notify(alert(0), "raised")
    await rx.arrived.wait()
    notifier.notify(msgspec.structs.replace(alert(1, type="STOP_OUT", severity="CRITICAL"), account="acc-x"), "raised")
    for n in range(2, 60):
        err = msgspec.structs.replace(alert(n, type="SYSTEM_ERROR", severity="CRITICAL"), account="acc-x")
        notifier.notify(err, "raised")
    gate.set()
    await until(lambda: notifier.stats["sent"] == 11)
    assert [b["alert"]["type"] for b in rx.bodies()][:2] == ["MARGIN_CALL", "STOP_OUT"]


async def test_stop_flushes_queued_deliveries_then_gives_up(receivers):
    rx = await receivers()
    stuck = await receivers(hang(5.0))
    notifier = WebhookNotifier(
        NotifySettings(webhook=[hook(rx.url), hook(stuck.url, timeout_s=3.0)]), backoff_base_s=0.01
    )
    for n in range(3):  # queued before start: sent once started
        notifier.notify(alert(n), "raised")
    await notifier.start()

    started = time.monotonic()
    await notifier.stop(timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert len(rx.requests) == 3
    assert notifier.stats["sent"] == 3
    notifier.notify(alert(9), "raised")  # after stop: ignored, never raises


async def test_an_episode_raised_waits_behind_its_types_earlier_resolution(receivers, notifiers):
    """Raised episodes go first, but not past a resolution of the same account and type still waiting: a
    receiver keyed by account and type ended on 'MARGIN_CALL resolved' while a new one was open."""
    rx, gate = await gated_receiver(receivers)
    notifier = await notifiers(hook(rx.url), queue_size=100)
    notifier.notify(msgspec.structs.replace(alert(0), account="acc-0"), "raised")
    await rx.arrived.wait()  # in flight: the rest queue
    first = alert(1)
    notifier.notify(first, "raised")
    first.resolvedAt = 1_700_000_001_000
    notifier.notify(first, "resolved")
    notifier.notify(alert(2), "raised")  # the next episode of the same type
    notifier.notify(msgspec.structs.replace(alert(3, type="STOP_OUT", severity="CRITICAL"), account="acc-2"), "raised")
    gate.set()
    await until(lambda: notifier.stats["sent"] == 5)
    sent = [(b["alert"]["id"], b["event"]) for b in rx.bodies()]
    mine = [x for x in sent if x[0] in ("alert-1", "alert-2")]
    assert mine == [("alert-1", "raised"), ("alert-1", "resolved"), ("alert-2", "raised")]
    assert sent.index(("alert-3", "raised")) < sent.index(("alert-1", "resolved"))  # others' still go first


async def test_an_ea_error_repeated_in_a_loop_is_sent_once_a_window_saying_how_many_were_not(receivers, notifiers):
    """An EA retrying a broken order reports the same error every second: each was a webhook (a chat channel
    flooded, then rate-limited or muted, margin calls with it). Now one per code and window, the next one
    sent saying how many were held back; what follows an alert never sent (its acknowledgement) is not sent."""
    rx = await receivers()
    clock = [1000.0]
    notifier = await notifiers(hook(rx.url), repeat_errors_after_s=60, clock=lambda: clock[0])

    def error(n: int, code: str, account: str = "acc-1") -> Alert:
        a = alert(n, type="SYSTEM_ERROR", severity="CRITICAL")
        return msgspec.structs.replace(a, account=account, data={"code": code})

    for n in range(1, 31):  # 30 in 30 s
        notifier.notify(error(n, "ORDER_FAILED"), "raised")
        clock[0] += 1
    notifier.notify(error(31, "DISK_FULL"), "raised")  # another code: its own
    notifier.notify(error(32, "ORDER_FAILED", "acc-2"), "raised")  # another account: its own
    notifier.notify(error(5, "ORDER_FAILED"), "acknowledged")  # never sent: neither is its acknowledgement
    notifier.notify(error(1, "ORDER_FAILED"), "acknowledged")
    notifier.notify(alert(40), "raised")  # an episode: never held back
    clock[0] += 31  # past the window
    notifier.notify(error(33, "ORDER_FAILED"), "raised")
    await until(lambda: notifier.stats["sent"] == 6)
    got = sorted((b["alert"]["id"], b["event"], b.get("suppressed") or 0) for b in rx.bodies())
    assert got == [
        ("alert-1", "acknowledged", 0),
        ("alert-1", "raised", 0),
        ("alert-31", "raised", 0),
        ("alert-32", "raised", 0),
        ("alert-33", "raised", 29),  # the 29 of alert-2..30 held back, said with the next one sent
        ("alert-40", "raised", 0),
    ]
    assert notifier.stats["suppressed"] == 30  # 29 raised and one acknowledgement
