"""Durable publications that arrived after a higher offset: what a `since` resume would otherwise skip.

Offsets become visible in the order they were drawn (the stores commit one group at a time), but each node
publishes its own commits: node A commits 10, node B commits 11 and publishes first. Every node sees the
backplane in one order (11, then 10), so a subscriber that got 11, lost its connection before 10 arrived, and
resumed with `since` 11 asks the store for offsets above 11 and never gets 10. A node's own publications
held back by a backplane outage (sent again once it is back) arrive late the same way.

`LateArrivals` notes each durable publication whose offset is below the highest one this node had seen (a
rare event: two nodes' commits a few milliseconds apart), with that highest offset. A resume with `since` S
is sent, before its history, the late ones below S that arrived after some offset >= S had: those the
subscriber may have missed. One it already had is a duplicate, which clients drop by offset.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from tradewire import channels
from tradewire.broker.base import Publication

KEEP_S = 600.0  # longer than any client's reconnect back-off: the window a resume can fall in
MAX_KEPT = 10_000  # late arrivals remembered, oldest dropped first


class LateArrivals:
    def __init__(self, keep_s: float = KEEP_S, max_kept: int = MAX_KEPT, clock: Callable[[], float] = time.monotonic):
        self.highest = 0  # the highest durable offset delivered so far
        self.keep_s = keep_s
        self.clock = clock
        # (when it arrived, its offset, the highest offset seen before it, the publication), oldest first
        self._kept: deque[tuple[float, int, int, Publication]] = deque(maxlen=max_kept)
        self.noted = 0  # late arrivals seen since start (a metric)

    def note(self, offset: int, pub: Publication) -> None:
        """Every durable publication (`offset` is its offset), in the order this node receives it."""
        if offset > self.highest:
            self.highest = offset
        elif offset < self.highest:
            self.noted += 1
            self._kept.append((self.clock(), offset, self.highest, pub))

    def missable(self, since: int, pattern: str) -> list[Publication]:
        """The late publications on channels `pattern` matches that a subscriber which had seen `since` may
        not have been sent, in arrival order."""
        kept = self._kept
        horizon = self.clock() - self.keep_s
        while kept and kept[0][0] < horizon:
            kept.popleft()
        matches = channels.matches
        return [pub for _, offset, highest, pub in kept if offset < since <= highest and matches(pattern, pub.channel)]
