"""Which EA errors a webhook is told of. Pure: the notifier asks, with its clock.

An EA that reports the same error in a loop (a broken order, a full disk) raises a SYSTEM_ERROR each time: every
one is stored and published, but a receiver (a chat channel, a pager) told of each is flooded, and rate-limits or
mutes the hook, margin calls with it. So an EA error of the same code from the same account is sent at most once
per window; those in between are counted, and the next one sent says how many were not (`suppressed`). What
happens to an alert that was not sent (its acknowledgement) is not sent either: the receiver never saw it.
"""

from __future__ import annotations

from collections import OrderedDict

from tradewire.model import Alert

MAX_KEYS = 10_000  # (account, code) pairs remembered; the oldest are forgotten first
MAX_HELD_BACK = 10_000  # ids of alerts not sent, whose later transitions are not sent either


class RepeatFilter:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._last_sent: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._suppressed: dict[tuple[str, str], int] = {}
        self._held_back: OrderedDict[str, None] = OrderedDict()

    def decide(self, alert: Alert, transition: str, now: float) -> tuple[bool, int]:
        """(send it, how many of its kind were not sent since the last one that was)."""
        if alert.id in self._held_back:
            return False, 0
        if not self.window_s or transition != "raised" or not _ea_error(alert):
            return True, 0
        key = (alert.account, str((alert.data or {}).get("code", "")))
        last = self._last_sent.get(key)
        if last is not None and now - last < self.window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._held_back[alert.id] = None
            if len(self._held_back) > MAX_HELD_BACK:
                self._held_back.popitem(last=False)
            return False, 0
        self._last_sent.pop(key, None)
        self._last_sent[key] = now
        if len(self._last_sent) > MAX_KEYS:
            old, _ = self._last_sent.popitem(last=False)
            self._suppressed.pop(old, None)
        return True, self._suppressed.pop(key, 0)


def _ea_error(alert: Alert) -> bool:
    """An EA's own error report; not the server's word that a write failed (told live, and rare)."""
    return alert.type == "SYSTEM_ERROR" and (alert.data or {}).get("source") != "server"
