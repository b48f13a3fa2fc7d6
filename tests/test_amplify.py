"""The hub driven by the REAL Amplify JS client (`aws-amplify/data` `events`), through tests/amplify/client.mjs.

Needs `node` (20+) and `npm ci --prefix tests/amplify`. Without them these tests are skipped, unless
TRADEWIRE_REQUIRE_SERVICES is set, in which case they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import EA, account_state, issue_key, issue_token

AMPLIFY_DIR = Path(__file__).parent / "amplify"
SCRIPT = AMPLIFY_DIR / "client.mjs"
TIMEOUT_S = 20  # the script's own global timeout; we wait a little longer than that


def require_node() -> str:
    """The node binary; skips (or, with TRADEWIRE_REQUIRE_SERVICES set, fails) if node or the packages are missing."""
    problems = []
    node = shutil.which("node")
    if node is None:
        problems.append("node is not on PATH")
    for package in ("aws-amplify", "ws"):
        if not (AMPLIFY_DIR / "node_modules" / package / "package.json").is_file():
            problems.append(f"tests/amplify/node_modules/{package} is missing")
    if problems:
        message = "; ".join(problems) + ": run `npm ci --prefix tests/amplify`"
        if os.environ.get("TRADEWIRE_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return node


class AmplifyClient:
    """One run of client.mjs: JSON lines on stdout, the last one the result."""

    def __init__(self, proc: asyncio.subprocess.Process, scenario: str) -> None:
        self.proc = proc
        self.scenario = scenario
        self.lines: list[dict] = []

    async def line(self, timeout: float = TIMEOUT_S + 5) -> dict:
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            await self.proc.wait()
            stderr = (await self.proc.stderr.read()).decode(errors="replace")
            raise AssertionError(
                f"client.mjs {self.scenario} exited {self.proc.returncode} without a result; "
                f"lines so far {self.lines}; stderr:\n{stderr}"
            )
        item = json.loads(raw)
        self.lines.append(item)
        return item

    async def result(self, timeout: float = TIMEOUT_S + 5) -> dict:
        """The final result line; asserts the script succeeded (exit 0, ok: true)."""
        while "ok" not in (item := await self.line(timeout)):
            pass
        code = await asyncio.wait_for(self.proc.wait(), 5)
        assert item["ok"] is True and code == 0, f"client.mjs {self.scenario} failed (exit {code}): {item}"
        return item


@contextlib.asynccontextmanager
async def amplify(node: str, server, scenario: str, key: str, *args: str) -> AsyncIterator[AmplifyClient]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        scenario,
        "--base",
        server.url,
        "--key",
        key,
        "--timeout",
        str(TIMEOUT_S * 1000),
        *args,
        cwd=AMPLIFY_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield AmplifyClient(proc, scenario)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run(node: str, server, scenario: str, key: str, *args: str) -> dict:
    async with amplify(node, server, scenario, key, *args) as client:
        return await client.result()


async def test_amplify_subscriber_receives_an_ea_account_update(server, http):
    node = require_node()
    key = await issue_key(server, "read")
    where = {"id": "acc-1", "state.equity": 12_345.0}
    async with amplify(node, server, "subscribe", key, "--where", json.dumps(where)) as client:
        assert await client.line() == {"ready": True}  # subscribe_success seen: sub.ready resolved
        ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
        try:
            await ea.greet()
            await ea.send(account_state(equity=12_345.0))
            result = await client.result()
        finally:
            await ea.close()
    account = result["matched"]
    assert account["id"] == "acc-1"
    assert account["state"]["equity"] == 12_345.0 and account["state"]["marginLevel"] == 6172.5


async def test_amplify_publishes_over_the_websocket(server):
    node = require_node()
    result = await run(node, server, "publish-ws", await issue_key(server, "admin"), "--channel", "/custom/orders")
    assert result["publishResults"] == [None, None]  # both publish() promises resolved on publish_success
    assert result["received"] == result["published"]  # one event, then a batch of two, in order


async def test_amplify_posts_over_http(server):
    node = require_node()
    result = await run(node, server, "post-http", await issue_key(server, "admin"), "--channel", "/custom/notes")
    assert result["postResult"] is None  # events.post returns `failed` only when it is not empty
    assert result["received"] == result["posted"]


async def test_amplify_publish_with_a_read_key_is_refused(server):
    node = require_node()
    result = await run(node, server, "publish-read-key", await issue_key(server, "read"))
    # WS: publish_error {errorType: UnauthorizedException} -> the publish() promise rejects
    assert result["ws"]["rejected"] is True
    assert result["ws"]["error"]["message"] == "Publish errors: UnauthorizedException"
    # HTTP: 403 with x-amzn-ErrorType: UnauthorizedException -> events.post throws an error of that name
    assert result["http"]["rejected"] is True
    assert result["http"]["error"]["name"] == "UnauthorizedException"
    assert result["http"]["error"]["status"] == 403


async def test_amplify_subscribe_with_a_bad_key_is_rejected(server):
    node = require_node()
    result = await run(node, server, "bad-key-subscribe", await issue_key(server, "read"), "--bad-key", "nope")
    # A wrong key on the connection: connection_error (UnauthorizedException, 401) makes events.connect reject
    # at once (non-retryable), instead of retrying or waiting for the 15 s ack timeout.
    assert result["connect"]["rejected"] is True
    assert result["connect"]["error"]["message"] == "UnauthorizedException"
    # A good connection, a wrong key on the subscribe message: subscribe_error -> sub.ready and observer.error
    subscribe = result["subscribe"]
    assert subscribe["rejected"] is True
    assert subscribe["error"]["message"].startswith("Connection failed: UnauthorizedException")
    assert subscribe["observerError"]["errors"][0].startswith("Connection failed: UnauthorizedException")
