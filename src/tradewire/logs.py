"""Logging: human text or one JSON object per line. Secrets are never passed to the logger.

Records are written by a thread, never by the event loop: a stalled reader of stderr (a full pipe, a
stopped terminal) must not stall the hub. The queue between them is bounded; when it is full, records
are dropped and counted (`dropped()`, the metric `tradewire_log_records_dropped_total`), and the writer says how
many it lost once it can write again.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
import time

import msgspec
from aiohttp.http_exceptions import HttpProcessingError

from tradewire.redact import redact_secrets

QUEUE_RECORDS = 10_000  # about 2-5 MiB of formatted records at most
_STOP = None  # the writer thread's sentinel


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """One record, one line: a message's line breaks are written escaped. Messages quote what clients send
    (an EA's error text, a URL): with a raw newline in it, an EA could write a line of its own making,
    dated and levelled like the hub's. A traceback still follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return line.replace("\r", "\\r").replace("\n", "\\n") if "\n" in line or "\r" in line else line


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; never blocks the caller. A full queue drops the record."""

    def __init__(self, records: queue.Queue) -> None:
        super().__init__(records)
        self.dropped = 0
        self._reported = 0  # dropped records already told about

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = super().prepare(record)
        # Formatted, tracebacks included: a credential a library quotes goes no further (belt and braces).
        record.msg = redact_secrets(record.msg)
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped > self._reported:
            # Said before the record itself, so the gap shows where it happened.
            lost = self.dropped - self._reported
            note = logging.LogRecord(
                "tradewire.logs",
                logging.WARNING,
                __file__,
                0,
                "%d log records dropped: stderr was not being read",
                (lost,),
                None,
            )
            try:
                self.queue.put_nowait(self.prepare(note))
                self._reported = self.dropped
            except queue.Full:
                self.dropped += 1  # no room for the note: the record goes too, so the note stays in place
                return
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a malformed request (a line over 8 KiB, a bad header) as an ERROR with a traceback,
    though it is the client's mistake and is answered with a 4xx: one warning line says all there is to
    say. The exception's text is left out, as its parser quotes the request's bytes, credentials included."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "bad HTTP request from %s, answered %d: %s"
            record.args = (remote, exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
        return True


class _CurrentStderr(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, not as it was at set-up (as logging's last resort
    does): whoever replaces it later gets the lines, and a replaced one that was closed (a test's captured
    stderr) is not written to."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Writer:
    """The thread that formats nothing and writes everything: records arrive already formatted."""

    def __init__(self, records: queue.Queue, target: logging.Handler) -> None:
        self.records, self.target = records, target
        self.thread = threading.Thread(target=self._run, name="tradewire-log-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (record := self.records.get()) is not _STOP:
            self.target.handle(record)

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued, waiting at most `timeout` (the reader of stderr may be gone)."""
        try:
            self.records.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


_handler: DroppingQueueHandler | None = None
_writer: _Writer | None = None


def dropped() -> int:
    """Log records dropped so far because the writer could not keep up (stderr not read)."""
    return _handler.dropped if _handler is not None else 0


def setup_logging(fmt: str = "text", level: str = "info", *, stream=None, queue_records: int = QUEUE_RECORDS) -> None:
    global _handler, _writer
    stop_logging()
    target = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    if fmt == "json":
        target.setFormatter(JsonFormatter())
    else:
        target.setFormatter(TextFormatter())
    records: queue.Queue = queue.Queue(queue_records)
    # The queue handler formats in the caller (the record's args may change later) with the target's format.
    _handler = DroppingQueueHandler(records)
    _handler.setFormatter(target.formatter)
    target.setFormatter(logging.Formatter("%(message)s"))
    _writer = _Writer(records, target)
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())


def stop_logging() -> None:
    """Flush the writer (bounded wait) and detach it; called at exit."""
    global _handler, _writer
    if _writer is not None:
        root = logging.getLogger()
        if _handler in root.handlers:
            root.removeHandler(_handler)
        _writer.stop()
        _handler = _writer = None


atexit.register(stop_logging)
