"""Writing server WebSocket frames straight to an aiohttp connection's transport.

aiohttp's `send_frame` is a coroutine: one await (and one writer-task step) per frame. The gateway
instead writes everything pending for a connection in one synchronous `transport.write` per flush,
several frames back to back (RFC 6455 frames need no separation). Server frames are unmasked, and
subscriber sockets do not negotiate compression, so a frame is a 2-10 byte header and the payload.

The only aiohttp internals used are here: the request's transport and protocol, and the protocol's
`_drain_helper()`, which aiohttp's own writer awaits the same way for flow control.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from aiohttp import web

_FIN_TEXT = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff, l_linger: close() sends a reset


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final TEXT frame."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 65536:
        return _LEN16.pack(_FIN_TEXT, 126, n) + payload
    return _LEN64.pack(_FIN_TEXT, 127, n) + payload


def text_frames(payloads: list[bytes]) -> bytes:
    """Several TEXT frames, back to back, for one write."""
    return b"".join([text_frame(p) for p in payloads])


class DirectWriter:
    """Synchronous writes to a prepared WebSocketResponse, with the transport's flow control exposed."""

    __slots__ = ("_protocol", "_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        req = ws._req  # the request of a prepared response: its transport and protocol
        self._ws = ws
        self._transport: Any = req.transport if req is not None else None
        self._protocol: Any = req.protocol if req is not None else None

    @property
    def writable(self) -> bool:
        """Open and not paused: the transport's buffer is under its high-water mark."""
        return self.open and not self._protocol.writing_paused

    @property
    def open(self) -> bool:
        t = self._transport
        return t is not None and not t.is_closing() and not self._ws.closed

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    async def drained(self) -> None:
        """Return once the transport has room again (at once if it is not paused)."""
        if self._protocol is not None and self._protocol.writing_paused:
            await self._protocol._drain_helper()  # shared with aiohttp's writer: never cancel this await

    def reset_on_close(self) -> None:
        """Make the coming close a reset (SO_LINGER 0). Closing a socket that still has unsent data is
        otherwise graceful: the kernel keeps it in FIN-WAIT-1 behind that data, probing a peer that does
        not read for minutes, and the peer never learns that it was dropped. asyncio's and uvloop's
        `transport.abort()` only discard the transport's own buffer and then close() the socket."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)

    def abort(self) -> None:
        if self._transport is not None:
            self.reset_on_close()
            self._transport.abort()
