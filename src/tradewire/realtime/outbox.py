"""What is waiting to be written to one subscriber connection. Pure: the writer task drains it.

- Replies (subscribe_success, publish_success, errors, ka) go first, in order.
- Latest-wins data is keyed by (subscription, channel): while a connection is behind, a newer value
  replaces the pending one (conflation), so its backlog can never exceed one frame per channel.
- Stream data (durable channels, client publications) is never conflated; its backlog is bounded in
  bytes, and a connection that passes the bound is to be closed (it reconnects and catches up from
  history with `since`).
"""

from __future__ import annotations

from collections import deque


class Outbox:
    def __init__(self, max_stream_bytes: int) -> None:
        self.max_stream_bytes = max_stream_bytes
        self.replies: deque[bytes] = deque()
        self.latest: dict[tuple[str, str], bytes] = {}
        self.stream: deque[tuple[str, bytes]] = deque()  # (subscription id, frame)
        self.stream_bytes = 0
        self.overflowed = False
        self.conflated = 0  # frames replaced before they were written

    def __bool__(self) -> bool:
        return bool(self.replies or self.latest or self.stream)

    def reply(self, frame: bytes) -> None:
        self.replies.append(frame)

    def put_latest(self, sub_id: str, channel: str, frame: bytes) -> bool:
        """Queue the newest value; True when it replaced one that was never written (conflation)."""
        key = (sub_id, channel)
        replaced = key in self.latest
        if replaced:
            self.conflated += 1
        self.latest[key] = frame
        return replaced

    def put_stream(self, sub_id: str, frame: bytes) -> bool:
        """Queue a never-conflated frame; False once the backlog is past its bound."""
        if self.overflowed:
            return False
        self.stream.append((sub_id, frame))
        self.stream_bytes += len(frame)
        if self.stream_bytes > self.max_stream_bytes:
            self.overflowed = True
            return False
        return True

    def forget(self, sub_id: str) -> None:
        """Drop what is pending for a subscription that was just unsubscribed."""
        self.latest = {k: v for k, v in self.latest.items() if k[0] != sub_id}
        kept = deque(item for item in self.stream if item[0] != sub_id)
        self.stream_bytes = sum(len(f) for _, f in kept)
        self.stream = kept

    def take(self) -> list[bytes]:
        frames = list(self.replies)
        frames.extend(self.latest.values())
        frames.extend(f for _, f in self.stream)
        self.replies.clear()
        self.latest = {}
        self.stream.clear()
        self.stream_bytes = 0
        return frames
