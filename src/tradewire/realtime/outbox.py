"""What is waiting to be written to one subscriber connection. Pure: the gateway's flush drains it.

- Replies (subscribe_success, publish_success, errors, ka) go first, in order.
- Latest-wins data waits in one dict per subscription, keyed by channel, holding the event's JSON
  literal: while a connection is behind, a newer value replaces the pending one (conflation), so its
  backlog can never exceed one frame per channel. The gateway writes into these dicts directly
  (`slot`), because that assignment is the whole per-subscriber cost of a latest-wins delivery; the
  frame around the literal is built only for what is actually written.
- Stream data (durable channels, client publications) is never conflated; its backlog is bounded in
  bytes, and a connection that passes the bound is to be closed (it reconnects and catches up from
  history with `since`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress

from tradewire.realtime.protocol import BATCH_HEAD, BATCH_TAIL

FRAME_END = b"}"
_BETWEEN = FRAME_END + b","  # between two frames of a run: the end of one, the comma before the next


def data_prefix(sub_id: bytes) -> bytes:
    """The part of a `data` frame before the event literal: the same for every frame of a subscription."""
    return b'{"type":"data","id":"' + sub_id + b'","event":'


class Outbox:
    def __init__(self, max_stream_bytes: int) -> None:
        self.max_stream_bytes = max_stream_bytes
        # Lists, not deques: they are only appended to and emptied whole, and an empty deque costs
        # ~0.6 KiB against a list's 56 bytes, per connection.
        self.replies: list[bytes] = []
        self.slots: dict[str, tuple[bytes, dict[str, bytes]]] = {}  # subscription id -> (frame prefix, pending)
        # Never-conflated frames, and the subscription of each, side by side: a (id, frame) tuple per
        # frame would be a garbage-collected object, and a parked subscriber's backlog would be thousands
        # of them, each counted toward the next collection while it waits.
        self.stream: list[bytes] = []
        self.stream_ids: list[str] = []
        self.stream_bytes = 0
        self.overflowed = False

    def __bool__(self) -> bool:
        return bool(self.replies or self.stream or any(pending for _, pending in self.slots.values()))

    def reply(self, frame: bytes) -> None:
        self.replies.append(frame)

    def slot(self, sub_id: str) -> dict[str, bytes]:
        """The pending latest-wins literals of a subscription, by channel (created on first use)."""
        entry = self.slots.get(sub_id)
        if entry is None:
            entry = self.slots[sub_id] = (data_prefix(sub_id.encode()), {})
        return entry[1]

    def put_latest(self, sub_id: str, channel: str, literal: bytes) -> bool:
        """Queue the newest value; True when it replaced one that was never written (conflation)."""
        pending = self.slot(sub_id)
        replaced = channel in pending
        pending[channel] = literal
        return replaced

    def put_stream(self, sub_id: str, frame: bytes) -> bool:
        """Queue a never-conflated frame; False once the backlog is past its bound."""
        if self.overflowed:
            return False
        self.stream.append(frame)
        self.stream_ids.append(sub_id)
        self.stream_bytes += len(frame)
        if self.stream_bytes > self.max_stream_bytes:
            self.overflowed = True
            return False
        return True

    def pending_latest(self) -> int:
        return sum(len(pending) for _, pending in self.slots.values())

    def forget(self, sub_id: str) -> None:
        """Drop what is pending for a subscription that was just unsubscribed."""
        entry = self.slots.pop(sub_id, None)
        if entry is not None:
            entry[1].clear()  # the gateway may still hold the dict until its routes are rebuilt
        if sub_id in self.stream_ids:
            keep = [i != sub_id for i in self.stream_ids]
            self.stream_ids = list(compress(self.stream_ids, keep))
            self.stream = list(compress(self.stream, keep))
            self.stream_bytes = sum(map(len, self.stream))

    def take(self) -> tuple[list[bytes], int]:
        """Everything pending, in writing order, and how many of those frames were latest-wins data."""
        frames, _count, latest = self._drain(_frames)
        return frames, latest

    def take_batch(self) -> tuple[bytes, int]:
        """Everything pending as one payload, and how many frames it holds: the batching extension's
        frame, or a lone frame as itself. A subscription's pending values become one run of frames in a
        single join (they share the prefix), not one concatenation each."""
        parts, count, _latest = self._drain(_run)
        if count <= 1:
            return (parts[0] if parts else b""), count
        return BATCH_HEAD + b",".join(parts) + BATCH_TAIL, count

    def _drain(self, render: Callable[[bytes, Iterable[bytes]], list[bytes]]) -> tuple[list[bytes], int, int]:
        """Empty the outbox in writing order: replies, each subscription's latest-wins values as `render`
        builds them from its frame prefix, stream frames. Returns (parts, frames in them, latest-wins)."""
        parts, self.replies = self.replies, []
        replies = len(parts)
        latest = 0
        for prefix, pending in self.slots.values():
            if pending:
                latest += len(pending)
                parts.extend(render(prefix, pending.values()))
                pending.clear()
        streamed = len(self.stream)
        if streamed:
            parts.extend(self.stream)
            self.stream = []
            self.stream_ids = []
            self.stream_bytes = 0
        return parts, replies + latest + streamed, latest


def _frames(prefix: bytes, literals: Iterable[bytes]) -> list[bytes]:
    """One data frame per pending value."""
    return [prefix + literal + FRAME_END for literal in literals]


def _run(prefix: bytes, literals: Iterable[bytes]) -> list[bytes]:
    """All of a subscription's pending values as one comma-separated run of data frames, in one join."""
    return [prefix + (_BETWEEN + prefix).join(literals) + FRAME_END]
