"""The store's filesystem fills up: a clear error, nothing acked that is not stored, no corruption,
and everything stored once space returns. Needs a tiny tmpfs: root only (skipped otherwise)."""

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tradewire.app import Server

from conftest import make_settings
from helpers import EA, Subscriber, issue_key, issue_token, position, position_event


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "tinyfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int) -> Path:
    """Take all the free space but `leave` bytes."""
    filler = path / "filler"
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


async def test_a_full_disk_is_a_clear_error_and_recovers_without_loss(tiny_fs, http):
    settings = make_settings(tiny_fs)
    settings.store.url = f"sqlite:///{tiny_fs}/hub.db?busy_timeout_ms=200"
    srv = Server(settings)
    await srv.start()
    try:
        token, key = await issue_token(srv, "acc-1"), await issue_key(srv, "read")
        watcher = await Subscriber.connect(http, srv, key)
        await watcher.subscribe("al", "/trading/alerts/acc-1")
        filler = fill(tiny_fs, leave=64 * 1024)
        ea = await EA.connect(http, srv, token)
        await ea.greet()
        acked, failed_at = 0, None
        for seq in range(1, 2001):  # ~0.7 KB each: far more than the space left
            await ea.send(position_event(seq, pid=seq, position=position(seq, comment="x" * 250)))
            msg = await ea.ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                assert msg.data == 1011  # store failure: reconnect and resend
                break
            data = msg.json()
            if data["type"] == "ack":
                acked = data["seq"]
            elif data["type"] == "error":
                assert data["code"] == "store_unavailable"
                failed_at = seq
        assert failed_at is not None, "the disk never filled up"
        alert = await watcher.event(type="SYSTEM_ERROR")
        assert alert["severity"] == "CRITICAL" and "store refused a write" in alert["message"]

        conn = sqlite3.connect(f"{tiny_fs}/hub.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in conn.execute("SELECT seq FROM ea_inbox")}
        conn.close()
        assert set(range(1, acked + 1)) <= stored  # every ack was true

        filler.unlink()  # space returns
        ea = await EA.connect(http, srv, token)
        welcome = await ea.greet()
        resend_from = welcome["ackedSeq"] + 1
        for seq in range(resend_from, failed_at + 1):
            await ea.send(position_event(seq, pid=seq))
        await ea.wait_ack(failed_at, timeout=10)
        conn = sqlite3.connect(f"{tiny_fs}/hub.db")
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT msg_id), MAX(seq) FROM ea_inbox").fetchone()
        conn.close()
        assert rows == (failed_at, failed_at, failed_at)  # all of them, each once
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.stop(), 20)
