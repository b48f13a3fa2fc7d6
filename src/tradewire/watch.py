"""`tradewire watch CHANNEL`: print a channel's events as they arrive, one line each.

A line is a timestamp, the channel (or, for a wildcard subscription, the subscribed pattern), the durable
offset as `#N` when the event has one (usable as `--since`), and the event as compact JSON. Styled with
`rich` on a terminal, plain text otherwise (pipes, files, logs).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from tradewire.client import AuthError, Client, ClientError, Event, SubscribeError, Subscription

AUTH_OR_USAGE_ERROR = 2
CONNECT_ERROR = 1


class _Printer:
    """Formats events as lines: rich styling on a TTY, plain text otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = None
        if _isatty(out):
            from rich.console import Console

            self.console = Console(file=out, highlight=False, soft_wrap=True)

    def event(self, event: Event, label: str) -> None:
        where = event.channel or label
        offset = f" #{event.offset}" if event.offset is not None else ""
        body = msgspec.json.encode(event.data).decode()
        if self.console is None:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self.out.write(f"{stamp} {where}{offset} {body}\n")
            self.out.flush()
            return
        from rich.highlighter import JSONHighlighter
        from rich.text import Text

        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        line = Text.assemble((stamp, "dim"), " ", (where, "bold cyan"), (offset, "magenta"), " ")
        line.append_text(JSONHighlighter()(Text(body)))
        self.console.print(line)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _note(message: str) -> None:
    print(f"tradewire watch: {message}", file=sys.stderr, flush=True)


def _on_resubscribe(sub: Subscription) -> None:
    if sub.recovered is False:
        _note(f"reconnected, but events on {sub.channel} after #{sub.resume_since} were missed: reload via the API")
    elif sub.recovered:
        _note(f"reconnected; {sub.channel} resumed after #{sub.resume_since}")
    else:
        _note(f"reconnected; {sub.channel} resubscribed")


async def watch(
    url: str,
    channel: str,
    key: str,
    *,
    since: int | None = None,
    out: TextIO | None = None,
    limit: int | None = None,
) -> int:
    """Subscribe to `channel` on the hub at `url` and print every event to `out` (default: stdout).

    Returns 0 when `limit` events were printed (or the connection ended cleanly), 2 with a one-line message
    on stderr when the key or the channel is refused, 1 when the hub cannot be reached. Ctrl-C is left to
    the caller (`asyncio.run` raises KeyboardInterrupt: the CLI exits 0 on it).
    """
    printer = _Printer(out if out is not None else sys.stdout)
    printed = 0
    try:
        async with Client(url, key, on_resubscribe=_on_resubscribe) as client:
            sub = await client.subscribe(channel, since=since)
            if limit is not None and limit <= 0:
                return 0
            async for event in sub:
                printer.event(event, sub.channel)
                printed += 1
                if limit is not None and printed >= limit:
                    break
    except AuthError as exc:
        _note(f"error: the hub refused the API key ({exc})")
        return AUTH_OR_USAGE_ERROR
    except SubscribeError as exc:
        _note(f"error: {exc}")
        return AUTH_OR_USAGE_ERROR
    except ClientError as exc:
        _note(f"error: {exc}")
        return CONNECT_ERROR
    return 0
