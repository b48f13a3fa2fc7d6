"""Wiring: build the aiohttp application from settings, and run it with a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from tradewire import api, web_headers
from tradewire.appkeys import GATEWAY, HUB, METRICS
from tradewire.broker import Broker, make_broker
from tradewire.config import Settings
from tradewire.hub import BrokerFanout, Hub
from tradewire.ingest.http import ea_batch
from tradewire.ingest.ws import ea_websocket
from tradewire.malloc import fix_mmap_threshold
from tradewire.metrics import Metrics
from tradewire.notify import WebhookNotifier
from tradewire.realtime.gateway import Gateway
from tradewire.realtime.http import cors, post_event
from tradewire.realtime.ws import realtime_websocket
from tradewire.redact import redact_url
from tradewire.store import Store, make_store
from tradewire.tcp_guard import TcpGuard, fit_to_open_files

log = logging.getLogger(__name__)


def build_app(hub: Hub, gateway: Gateway, metrics: Metrics) -> web.Application:
    # The body limit is the frame limit: an MT4 batch is the HTTP twin of a WebSocket frame.
    app = web.Application(middlewares=[cors, api.api_auth], client_max_size=hub.settings.server.max_frame_bytes)
    app[HUB] = hub
    app[GATEWAY] = gateway
    app[METRICS] = metrics
    app.router.add_get("/ea/v1", ea_websocket)
    app.router.add_post("/ea/v1/batch", ea_batch)
    app.router.add_get("/event/realtime", realtime_websocket)
    app.router.add_post("/event", post_event)
    api.add_routes(app)
    add_dashboard(app)

    async def on_shutdown(app: web.Application) -> None:
        # EAs first, so that what they had in flight is committed and published, then subscribers.
        await hub.drain(hub.settings.server.drain_timeout_s)
        await gateway.stop()
        metrics.close()

    app.on_shutdown.append(on_shutdown)
    return app


WEB_DIR = Path(__file__).parent / "web"


def add_dashboard(app: web.Application) -> None:
    """The admin dashboard: static ES modules, no build step. `/` serves its page, `/web/` its files."""
    index = WEB_DIR / "index.html"

    async def dashboard(request: web.Request) -> web.StreamResponse:
        if not index.exists():
            return web.Response(text="the dashboard is not installed in this build", status=404)
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", dashboard)
    web_headers.install(app, index)
    if WEB_DIR.is_dir():
        app.router.add_static("/web/", WEB_DIR, append_version=False)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.server.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def no_passphrase() -> str:  # else OpenSSL asks on the terminal (and blocks a service that has none)
        raise ValueError("the TLS key is encrypted: give tradewire an unencrypted key (openssl pkey -in KEY)")

    try:
        ctx.load_cert_chain(settings.server.tls_cert, settings.server.tls_key, password=no_passphrase)
    except ValueError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate/key: {exc}") from None
    return ctx


class Server:
    """One tradewire process: store + hub + HTTP/WebSocket listener."""

    def __init__(self, settings: Settings, *, store: Store | None = None, broker: Broker | None = None) -> None:
        self.settings = settings
        self.store = store or make_store(settings.store.url)
        self.broker = broker or make_broker(settings.broker.url)
        self.hub: Hub | None = None
        self.gateway: Gateway | None = None
        self.notifier: WebhookNotifier | None = None
        self.runner: web.AppRunner | None = None
        self.port: int = 0
        self._stopped = asyncio.Event()

    @property
    def scheme(self) -> str:
        return "https" if self.settings.server.tls_cert else "http"

    @property
    def url(self) -> str:
        """Where this process can be reached from the same machine (every interface: through loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.settings.server.host, self.settings.server.host)
        return f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        ssl_ctx = tls_context(self.settings)
        try:
            await self._start(ssl_ctx)
        except BaseException:  # failed, or interrupted (a signal while the store was still connecting)
            await self._close_what_started()
            raise

    async def _close_what_started(self) -> None:
        """A start that did not finish closes what it opened: the webhooks' HTTP session, the backplane, the
        hub's timers, the store (each on its own: one failing does not leave the next open)."""
        steps = []
        if self.runner is not None:
            steps.append(self.runner.cleanup())
            self.runner = None
        if self.hub is not None:
            steps.append(self.hub.drain(0.1))
        if self.gateway is not None:
            steps.append(self.gateway.stop())
        if self.notifier is not None:
            steps.append(self.notifier.stop(timeout=0.1))
        steps.append(self.store.close())
        for step in steps:
            try:
                await step
            except Exception as exc:
                log.warning("closing after a failed start: %s", exc)

    async def _start(self, ssl_ctx: ssl.SSLContext | None) -> None:
        await self.store.open()
        self.notifier = WebhookNotifier(self.settings.notify)
        await self.notifier.start()
        self.hub = Hub(
            self.settings, self.store, BrokerFanout(self.broker), notifier=self.notifier, presence=self.broker
        )
        self.gateway = Gateway(
            self.settings.realtime,
            self.broker,
            self.store,
            self.hub.api_role,
            recheck_s=max(1.0, self.settings.server.auth_cache_s),  # a revoked key's subscriptions end then
        )
        await self.gateway.start()
        if hasattr(self.broker, "on_gap"):  # a backplane that can lose publications (Redis)
            self.broker.on_gap = self._after_backplane_gap
        await self.hub.start()
        self.runner = web.AppRunner(
            build_app(self.hub, self.gateway, Metrics(self.hub, self.gateway, self.store)),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.settings.server.drain_timeout_s,
            keepalive_timeout=self.settings.server.idle_timeout_s,  # before the first request too (tcp_guard.py)
        )
        await self.runner.setup()
        TcpGuard(self.hub.tcp_caps).install(self.runner.server)  # type: ignore[arg-type]
        lowered = fit_to_open_files(self.hub.tcp_caps, self.hub.caps)
        if lowered is not None:
            log.info("%s", lowered)
        site = web.TCPSite(self.runner, self.settings.server.host, self.settings.server.port, ssl_context=ssl_ctx)
        try:
            await site.start()
        except OSError as exc:
            raise OSError(f"cannot listen on {self.settings.server.host}:{self.settings.server.port}: {exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        everywhere = " (every interface)" if self.settings.server.host in ("0.0.0.0", "::") else ""
        log.info("tradewire listening on %s%s (store %s)", self.url, everywhere, redact_url(self.settings.store.url))

    def _after_backplane_gap(self) -> None:
        """The backplane works again after publications were lost: publish this node's latest values again,
        then have subscribers catch up (a moment later, so that the snapshots they reconnect to hold them)."""
        assert self.hub is not None and self.gateway is not None
        self.hub.republish()
        asyncio.get_running_loop().call_later(0.5, self.gateway.resync)

    async def stop(self) -> None:
        """Stop accepting, drain EA sessions (commit, ack, close 1001), then close the store: each step in
        turn, even when one before it failed (a backplane that would not stop left the store open)."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            try:
                await runner.cleanup()
            finally:
                try:
                    if self.notifier is not None:  # after the drain: what the drain raised still goes out
                        await self.notifier.stop(timeout=min(5.0, self.settings.server.drain_timeout_s))
                finally:
                    await self.store.close()
                    log.info("tradewire stopped")
        self._stopped.set()

    async def serve_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(sig, stop.set)
        # A signal while starting (a store that takes a minute to time out) stops it there, not after it.
        starting = asyncio.ensure_future(self.start())
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("signal received while starting: stopped")
            return
        signalled.cancel()
        starting.result()  # a start that failed raises here
        # Everything built so far (modules, settings, the app) lives as long as the process. Frozen, a full
        # collection no longer walks it: 13-30 ms pauses of the event loop became 1-2 ms (bench scenario 7,
        # where a reconnect storm's connections leave cycles behind and trigger them every second or so).
        gc.freeze()
        fix_mmap_threshold()  # large buffers mmapped and given back, not fragmenting the heap (malloc.py)
        try:
            await stop.wait()
            log.info("signal received: draining")
        finally:
            await self.stop()
