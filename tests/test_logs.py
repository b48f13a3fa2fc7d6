"""The log writer: off the caller's thread, bounded, and honest about what it dropped."""

import contextlib
import io
import json
import logging
import os
import sys
import threading
import time

from tradewire import logs


def test_a_blocked_stream_drops_records_counts_them_and_says_so_once_it_flows():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    logs.setup_logging("json", "info", stream=stream, queue_records=50)
    log = logging.getLogger("tradewire.test")
    try:
        # Nobody reads the pipe: the writer thread blocks once it is full, the queue fills behind it,
        # and from then on records are dropped, without ever blocking this thread.
        for n in range(5000):
            log.info("record %d", n)
        lost = logs.dropped()
        assert lost > 0
        received = bytearray()
        reader = threading.Thread(target=lambda: read_all(read_end, received), daemon=True)
        reader.start()
        while not logs._handler.queue.empty():  # the reader catches up
            time.sleep(0.01)
        log.warning("after the gap")
        logs.stop_logging()  # writes what is queued
        stream.close()
        reader.join(10)
        lines = [json.loads(line)["msg"] for line in received.decode().splitlines()]
        assert lines[-1] == "after the gap"
        # Every gap in the sequence is announced, right where it is, with its size; nothing else is missing.
        expected, announced = 0, 0
        for msg in lines[:-1]:
            if msg.endswith(" log records dropped: stderr was not being read"):
                gap = int(msg.split()[0])
                expected += gap
                announced += gap
            else:
                assert msg == f"record {expected}"
                expected += 1
        assert announced == lost and expected == 5000
    finally:
        logs.stop_logging()
        with contextlib.suppress(OSError):
            os.close(read_end)


def read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        into += chunk


def test_records_are_formatted_when_logged_not_when_written():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    logs.setup_logging("text", "info", stream=stream)
    try:
        value = ["before"]
        logging.getLogger("tradewire.test").info("value %s", value)
        value[0] = "after"  # a mutable argument changed later must not change the line
        logs.stop_logging()
        stream.close()
        line = os.read(read_end, 1 << 16).decode()
        assert line.endswith(" INFO tradewire.test: value ['before']\n")
    finally:
        logs.stop_logging()
        os.close(read_end)


def test_a_message_quoting_a_client_is_one_line_and_a_traceback_still_follows():
    """An EA's error text is logged as it came: its line breaks must not start lines of their own."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    logs.setup_logging("text", "info", stream=stream)
    try:
        forged = "failed\n2025-01-01 00:00:00,000 INFO tradewire.app: forged\r"
        logging.getLogger("tradewire.hub").warning("EA error 4756: %s", forged)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("tradewire.hub").exception("with a traceback")
        logs.stop_logging()
        stream.close()
        lines = os.read(read_end, 1 << 16).decode().splitlines()
        assert lines[0].endswith("EA error 4756: failed\\n2025-01-01 00:00:00,000 INFO tradewire.app: forged\\r")
        assert not [line for line in lines if line.startswith("2025-01-01")]
        assert lines[1].endswith("with a traceback") and lines[2] == "Traceback (most recent call last):"
    finally:
        logs.stop_logging()
        os.close(read_end)


def test_logs_go_to_stderr_as_it_is_when_written(monkeypatch):
    """The writer kept the stderr of set-up time: replaced and closed since (a test's captured stderr, an
    embedding app's redirect), each line was a 'Logging error' traceback instead."""
    logs.setup_logging("text", "info")
    try:
        now = io.StringIO()
        monkeypatch.setattr(sys, "stderr", now)
        logging.getLogger("tradewire.test").info("written where stderr is now")
    finally:
        logs.stop_logging()
    assert "written where stderr is now" in now.getvalue()


def test_credentials_a_library_quotes_are_redacted_before_the_line_is_written():
    """Belt and braces behind the per-logger filters: whatever reaches the writer (tracebacks included)
    carries no tradewire secret, no auth subprotocol payload, no bearer token; public ids stay."""
    buf = io.StringIO()
    logs.setup_logging("text", "info", stream=buf)
    key = "twk_0a1b2c3d_" + "S" * 43
    try:
        log = logging.getLogger("some.library")
        log.warning("offered %r", ["header-eyJ4LWFwaS1rZXkiOiJ0d2tfMGExYjJjM2Rf", "aws-appsync-event-ws"])
        log.warning("offered %r", ["header-eyJob3N0Ijoi+aC5l/eGFtcGxlIn0K/S3cR3t=="])  # plain base64 (btoa)
        try:
            raise ValueError(f"bad credential {key} in 'Authorization: Bearer twe_99887766_{'T' * 43}'")
        except ValueError:
            log.exception("request failed")
    finally:
        logs.stop_logging()
    text = buf.getvalue()
    assert "S" * 20 not in text and "T" * 20 not in text and "eyJ4LWFwaS1rZXki" not in text
    assert "S3cR3t" not in text
    assert "twk_0a1b2c3d_***" in text and "header-***" in text and "aws-appsync-event-ws" in text
