"""Latest-wins values that parked connections miss. Pure: the gateway feeds it and asks it.

A subscriber whose transport is paused (it stopped reading, or reads slower than it is sent to) is
*parked*: the fan-out stops storing every new value into its pending ones, which it would otherwise
do for every publication on its routes, for as long as it does not read. Latest-wins semantics only
need the newest value of each channel it missed, once it reads again; so the gateway notes here the
newest value of every latest-wins channel that a parked subscription matches (one dict update per such
publication, not one per parked subscriber; nothing for channels no parked subscription watches), and a
connection that resumes takes what changed since it parked.
"""

from __future__ import annotations

from itertools import takewhile

from tradewire import channels


class MissedValues:
    __slots__ = ("_parked", "_recent", "_seq")

    def __init__(self) -> None:
        self._seq = 0  # publications noted, ever: a parked connection's mark is a position in this
        self._parked = 0
        # channel -> (seq, event literal), oldest first: a channel noted again moves to the end.
        self._recent: dict[str, tuple[int, bytes]] = {}

    def park(self) -> int:
        """A connection parks: returns its mark (it misses what is noted after it)."""
        self._parked += 1
        return self._seq

    def note(self, channel: str, literal: bytes) -> None:
        """A latest-wins value was published on a channel that a parked subscription matches."""
        recent = self._recent
        recent.pop(channel, None)
        self._seq += 1
        recent[channel] = (self._seq, literal)

    def since(self, mark: int, pattern: str) -> list[tuple[str, bytes]]:
        """The newest value of every channel `pattern` matches that was published after `mark`, oldest first."""
        newer = takewhile(lambda item: item[1][0] > mark, reversed(self._recent.items()))
        found = [(channel, literal) for channel, (_, literal) in newer if channels.matches(pattern, channel)]
        found.reverse()
        return found

    def unpark(self) -> None:
        """A connection resumed or went away. With nothing parked, nothing needs noting: forget it all."""
        self._parked -= 1
        if self._parked <= 0:
            self._parked = 0
            self._recent = {}

    @property
    def parked(self) -> int:
        return self._parked

    @property
    def active(self) -> bool:
        """Anything parked (the fan-out asks its routes' groups, not this, whether to note a value)."""
        return self._parked > 0

    def __len__(self) -> int:
        return len(self._recent)
