"""Connection set-up, one per event-loop turn.

A WebSocket upgrade, or a subscribe with its snapshot, holds the hub's event loop for a fraction of a
millisecond. Clients that connect in the same instant (dashboards coming back after a network blip,
subscribers closed together by a durable stream) would otherwise all run their set-up in one loop turn,
and every value published meanwhile would wait behind all of them: ten `/trading/*` subscribes held the
loop ~4 ms here (bench/RESULTS.md). Taking turns, one set-up per loop turn, lets the loop read and write
what arrived in between, so the others wait for at most one set-up; the newcomers wait their turn.

A turn is not a lock: it is given up at the first await of whoever took it, so a set-up that waits on a
store or a broker does not hold the next one back.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._given = False  # a turn was given in this loop turn: the next one waits for the next loop turn
        self.waited = 0  # set-ups that had to wait for a loop turn of their own: clients arriving together

    def __len__(self) -> int:
        """Set-ups waiting for their turn."""
        return len(self._waiting)

    async def take(self) -> None:
        """Return when this caller's set-up may run: at once if nobody else's ran in this loop turn."""
        if self._given or self._waiting:
            self.waited += 1
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            await turn  # cancelled (the client left while waiting): `_next` skips it
        else:
            self._give()

    def _give(self) -> None:
        self._given = True
        asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        """The next loop turn: the next waiter, if any, gets it (its task runs in the loop turn after)."""
        self._given = False
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self._give()
                return
