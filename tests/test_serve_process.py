"""`tradewire serve` as a real process: TLS for wss:// EAs, and a SIGTERM drain that loses nothing."""

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import sqlite3
import ssl
import sys
from collections.abc import Callable

import aiohttp
import trustme

from tradewire.store.sqlite import SQLiteStore

from helpers import ServeProcess, hello, position_event


async def issue(db: str, account: str) -> str:
    store = SQLiteStore(db)
    await store.open()
    try:
        token, _ = await store.add_token(account)
        return token
    finally:
        await store.close()


async def serve(db: str, *extra: str) -> ServeProcess:
    return await ServeProcess.start("--store", f"sqlite:///{db}", *extra)


async def test_tls_serves_wss_to_an_ea(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    db = str(tmp_path / "tls.db")
    token = await issue(db, "acc-1")
    server = await serve(db, "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    try:
        assert server.url.startswith("https://")
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                server.url.replace("https", "wss") + "/ea/v1",
                headers={"Authorization": f"Bearer {token}"},
                ssl=client_ctx,
            )
            await ws.send_json(hello())
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            await ws.send_json(position_event(1))
            assert await ws.receive_json(timeout=5) == {"type": "ack", "seq": 1}
            await ws.close()
            # and a client that does not trust the certificate is refused
            try:
                await http.ws_connect(server.url.replace("https", "wss") + "/ea/v1")
                raise AssertionError("untrusted certificate accepted")
            except aiohttp.ClientConnectorCertificateError:
                pass
    finally:
        assert await server.stop() == 0


async def test_sigterm_drains_then_a_restart_loses_nothing(tmp_path):
    db = str(tmp_path / "drain.db")
    token = await issue(db, "acc-1")
    total = 400
    server = await serve(db)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url.replace("http", "ws") + "/ea/v1", headers=headers)
        await ws.send_json(hello())
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        for start in range(1, total + 1, 50):  # in flight when the signal lands
            await ws.send_json([position_event(s, pid=s) for s in range(start, start + 50)])
        server.proc.send_signal(signal.SIGTERM)
        acked, close_code = 0, None
        while True:
            msg = await ws.receive(timeout=20)
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.json()
                if data["type"] == "ack":
                    acked = max(acked, data["seq"])
            else:
                close_code = msg.data
                break
        assert close_code == 1001
        assert await server.stop() == 0

        # Everything acked is committed, and nothing was committed without its ack being sent.
        conn = sqlite3.connect(db)
        stored = sorted(r[0] for r in conn.execute("SELECT seq FROM ea_inbox"))
        conn.close()
        assert stored == list(range(1, acked + 1))

        # The rolling restart: the EA reconnects, learns ackedSeq and resends the rest.
        server = await serve(db)
        try:
            ws = await http.ws_connect(server.url.replace("http", "ws") + "/ea/v1", headers=headers)
            await ws.send_json(hello())
            welcome = await ws.receive_json(timeout=5)
            assert welcome["ackedSeq"] == acked
            await ws.send_json([position_event(s, pid=s) for s in range(1, total + 1)])  # resend all, to be sure
            last = 0
            while last < total:
                data = await ws.receive_json(timeout=10)
                assert data["type"] == "ack", data
                last = data["seq"]
            await ws.close()
        finally:
            assert await server.stop() == 0
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM ea_inbox").fetchone()
    events = conn.execute("SELECT COUNT(*) FROM position_events").fetchone()[0]
    conn.close()
    assert rows == (total, total) and events == total


async def test_the_served_hub_freezes_its_startup_heap_and_pins_the_mmap_threshold(tmp_path):
    # A full collection walking every module and the app caused the event loop's longest pauses; glibc's
    # sliding mmap threshold fragmented the heap (tradewire/malloc.py, test_malloc.py).
    db = str(tmp_path / "gc.db")
    store = SQLiteStore(db)
    await store.open()
    key, _ = await store.add_api_key("read")
    await store.close()
    srv = await serve(db)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(srv.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {key}"}) as r,
        ):
            text = await r.text()
    finally:
        await srv.stop()
    frozen = re.search(r"^tradewire_gc_frozen_objects (\S+)$", text, re.M)
    assert frozen is not None and float(frozen.group(1)) > 10_000
    assert "malloc: mmap threshold fixed at 131072 bytes" in "".join(srv.log)


async def test_port_in_use_is_a_clear_error(tmp_path):
    db = str(tmp_path / "p.db")
    first = await serve(db)
    port = first.url.rsplit(":", 1)[1]
    cfg = tmp_path / "hooks.toml"  # a webhook: its HTTP session is open by the time the listen fails
    cfg.write_text('[[notify.webhook]]\nurl = "http://127.0.0.1:9/hook"\n')
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradewire.cli",
            "serve",
            "--config",
            str(cfg),
            "--port",
            port,
            "--store",
            f"sqlite:///{db}",
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in err.decode()
        assert "Unclosed" not in err.decode()  # what the start opened (the webhooks' session, the store) is closed
    finally:
        await first.stop()


async def test_a_signal_while_starting_stops_it_there(tmp_path):
    """The signal handlers waited for the start to finish: a store that does not answer (a firewall dropping
    packets) held Ctrl-C and a supervisor's SIGTERM for a minute, then exited saying the store had failed."""
    import socket

    silent = socket.socket()  # accepts connections (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradewire.cli", "serve", "--port", "0",
            "--store", f"postgresql://tw:pw@127.0.0.1:{port}/db", stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        # Its signal handlers are in place before it connects to the store: wait for that connection, not a
        # fixed time (a slow start under load took the signal before them, and died with a traceback).
        silent.setblocking(False)
        peer, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), 30)
        assert proc.returncode is None  # still connecting
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 5)
        assert proc.returncode == 0, err.decode()
        assert "signal received while starting" in err.decode() and "Traceback" not in err.decode()
        peer.close()
    finally:
        silent.close()


async def test_json_logs_never_contain_secrets(tmp_path):
    db = str(tmp_path / "log.db")
    token = await issue(db, "acc-1")
    server = await serve(db, "--log-format", "json")
    async with aiohttp.ClientSession() as http:
        for bearer in (token, token + "-wrong"):
            ws = await http.ws_connect(
                server.url.replace("http", "ws") + "/ea/v1", headers={"Authorization": f"Bearer {bearer}"}
            )
            await ws.send_json(hello())
            await ws.receive(timeout=5)
            await ws.close()
    assert await server.stop() == 0
    rest = "".join(server.log)
    lines = [line for line in rest.splitlines() if line.strip()]
    assert lines, "expected shutdown log lines"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry)
    assert token not in rest and secret_of(token) not in rest


def secret_of(token: str) -> str:
    """The random part of twe_<id>_<secret>; it may itself hold "_" (urlsafe base64)."""
    return token.split("_", 2)[2]


async def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would; the status line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_a_malformed_request_is_one_warning_line_that_quotes_nothing_of_it(tmp_path):
    """aiohttp logs these as an ERROR with a traceback whose parser message quotes the request's bytes."""
    db = str(tmp_path / "bad.db")
    token = await issue(db, "acc-1")
    server = await serve(db, "--log-format", "json")
    long_line = b"GET /api/v1/accounts?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    bad_header = b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\x01\r\n\r\n"
    for request in (long_line, bad_header):
        assert (await raw_request(server.url, request)).split()[1] == b"400"
    assert await server.stop() == 0
    entries = [json.loads(line) for line in "".join(server.log).splitlines() if line.strip()]
    bad = [e for e in entries if e["logger"] == "aiohttp.server"]
    assert [(e["level"], "exc" in e) for e in bad] == [("warning", False)] * 2, bad
    assert "LineTooLong" in bad[0]["msg"] and "answered 400" in bad[1]["msg"]
    assert not [e for e in entries if e["level"] == "error"], entries
    text = "".join(server.log)
    assert token not in text and secret_of(token) not in text and "aaaaaaaa" not in text


async def test_a_stderr_nobody_reads_does_not_stall_the_hub(tmp_path):
    """The hub logs from a thread: with its stderr pipe full, EAs are still served, and the lines are kept
    (up to the log queue's bound) for when the pipe is read again. The soak once stalled on exactly this."""
    db = str(tmp_path / "quiet.db")
    token = await issue(db, "acc-1")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # a pipe that fills after ~40 lines
    os.set_blocking(read_end, False)
    # 300 sessions of one account in a few seconds is a reconnect loop the connect rate would refuse.
    env = {**os.environ, "TRADEWIRE_LIMITS_CONNECTS_PER_S": "1e6"}
    argv = ["-m", "tradewire.cli", "serve", "--port", "0", "--store", f"sqlite:///{db}"]
    proc = await asyncio.create_subprocess_exec(sys.executable, *argv, stderr=write_end, env=env)
    os.close(write_end)
    log = b""

    async def read_until(done: Callable[[bytes], object]) -> object:
        nonlocal log
        for _ in range(1000):
            with contextlib.suppress(BlockingIOError):
                log += os.read(read_end, 1 << 16)
            if found := done(log):
                return found
            await asyncio.sleep(0.01)
        raise AssertionError(f"not logged; the log ends {log[-300:]!r}")

    try:
        url = (await read_until(re.compile(rb"listening on (\S+)").search)).group(1).decode().replace(
            "http", "ws", 1
        ) + "/ea/v1"
        async with aiohttp.ClientSession() as http:
            # Each new session of the account logs, at its hello, that it replaces the last one (kept open until
            # then): 300 lines of ~100 bytes are seven times what this pipe holds before its writer blocks.
            previous = None
            for n in range(1, 301):
                ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
                await ws.send_json(hello())
                assert (await ws.receive_json(timeout=5))["type"] == "welcome", n
                if previous is not None:  # replaced by now: let it go
                    await previous.close()
                previous = ws
                await ws.send_json(position_event(n))
                assert await ws.receive_json(timeout=5) == {"type": "ack", "seq": n}
        # Read again, and every line is there: nothing was dropped for a backlog this size.
        await read_until(lambda log: log.count(b"replaces the previous one") == 299)
        assert b"log records dropped" not in log
    finally:
        proc.terminate()
        while proc.returncode is None:  # the pipe is read to the end, so the exit cannot block on it
            with contextlib.suppress(BlockingIOError):
                os.read(read_end, 1 << 16)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        os.close(read_end)


async def test_demo_runs_a_fleet_on_its_own_hub_and_its_scenario_raises_the_alert(tmp_path):
    """`tradewire demo` (what `make demo` runs): a hub, a simulated fleet against it, and with --scenario
    one scripted alert; it ends by itself with --duration and says what the fleet saw."""
    db = tmp_path / "demo.db"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tradewire.cli", "demo", "--port", "0", "--accounts", "3", "--duration", "5"),
        *("--scenario", "error", "--store", f"sqlite:///{db}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    out, err = (b.decode() for b in await asyncio.wait_for(proc.communicate(), 60))
    assert proc.returncode == 0, err
    assert re.search(r"hub on http://127\.0\.0\.1:\d+ .*3 simulated EAs for 5s", out), out
    assert re.search(r"admin API key twk_\w+", out) and "dashboard     http://127.0.0.1:" in out, out
    summary = re.search(r"demo: 3 accounts, .* durable (\d+)/(\d+) acked .* (\d+) errors", out)
    assert summary, out
    acked, sent, errors = map(int, summary.groups())
    assert sent > 0 and acked == sent and errors == 0, out
    assert "sent a durable EA error" in err, err
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT type FROM alerts").fetchall() == [("SYSTEM_ERROR",)]
        # The demo's store may be the one `serve` uses later: the admin key it printed, and its fleet's
        # tokens, must not stay live credentials there.
        assert conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ea_tokens WHERE revoked_at IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ea_tokens").fetchone() == (3,)
