"""Every TCP connection the listener accepts, capped per client address and overall before a byte is read.

The WebSocket caps (`ConnectionCaps` at the upgrade, a 503 that says why) count upgraded connections only:
a client that opened plain connections and sent nothing, or a request's headers a byte at a time, held a
file descriptor each for as long as it liked, without a credential, until the process had none left for
EAs. Now each connection is closed after `[server] idle_timeout_s` without a request in progress (aiohttp's
keep-alive timeout, which also runs before the first request), and a connection past the caps below is
closed as soon as it is accepted. They sit above the WebSocket caps, so an EA or a dashboard past those is
still told so by the 503, and plain HTTP requests (MT4 batches, REST, the dashboard's files) have room.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web_server

from tradewire.limits import ConnectionCaps

log = logging.getLogger(__name__)

HTTP_HEADROOM_PER_IP = 100  # TCP connections from one address beyond `[limits] max_connections_per_ip`
HTTP_HEADROOM = 1_000  # and in all, beyond `[limits] max_connections`


def tcp_caps(max_connections: int, max_connections_per_ip: int) -> ConnectionCaps:
    return ConnectionCaps(max_connections + HTTP_HEADROOM, max_connections_per_ip + HTTP_HEADROOM_PER_IP)


class TcpGuard:
    """Hooks aiohttp's connection bookkeeping (`web_server.Server.connection_made/lost`, which each request
    handler calls as its transport opens and closes) to take and give back a slot of `caps`."""

    def __init__(self, caps: ConnectionCaps) -> None:
        self.caps = caps
        self._admitted: dict[Any, str] = {}
        self._said_at = 0.0

    def install(self, server: web_server.Server) -> None:
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) and peer else "?"
            refusal = self.caps.admit(ip)
            if refusal is None:
                self._admitted[handler] = ip
                return
            now = time.monotonic()
            if now - self._said_at > 10:  # once in a while: a flood must not flood the log too
                self._said_at = now
                log.warning("closing new TCP connections: %s (%d refused so far)", refusal, self.caps.refused)
            transport.close()

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            ip = self._admitted.pop(handler, None)
            if ip is not None:
                self.caps.release(ip)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


FD_RESERVE = 256  # descriptors kept for what is not a connection: the store, the log, the broker, files


def open_files_limit(wanted: int) -> int | None:
    """Lift the soft open-files limit towards `wanted` (up to the hard one); the limit now, None if there
    is none (or no such thing, on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    for attempt in (target, min(target, 10_240)):  # macOS refuses more than its kern.maxfilesperproc
        if soft == resource.RLIM_INFINITY or soft >= attempt:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (attempt, hard))
            soft = attempt
            break
        except (ValueError, OSError):
            continue
    return None if soft == resource.RLIM_INFINITY else soft


def fit_to_open_files(caps: ConnectionCaps, websockets: ConnectionCaps | None = None) -> str | None:
    """Each connection is a descriptor, and past the process's limit the listener fails to accept anyone
    (EMFILE, logged per attempt): the overall cap is lifted to, or else lowered to, what the limit allows.
    What it did, when it lowered it. `websockets`, the WebSocket cap, is lowered with it, keeping the HTTP
    headroom below: else upgrades past the TCP cap were dropped at accept, unanswered, instead of told 503."""
    allowed = caps.max_total
    limit = open_files_limit(allowed + FD_RESERVE)
    if limit is None or limit - FD_RESERVE >= allowed:
        return None
    caps.max_total = max(limit // 2, limit - FD_RESERVE)  # a small limit (256) keeps room for connections
    if websockets is not None:
        room = max(caps.max_total - HTTP_HEADROOM, caps.max_total // 2)
        websockets.max_total = min(websockets.max_total, room)
    return (
        f"the open-files limit is {limit}: at most {caps.max_total} connections at once, not the {allowed} "
        f"[limits] max_connections allows (with room for HTTP requests); raise it (ulimit -n, LimitNOFILE=) "
        f"for more"
    )
