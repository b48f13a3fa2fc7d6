"""Who may do what: every actor x every action, each cell's expected answer asserted over real sockets."""

import asyncio
import json
import logging

import aiohttp
import pytest

from tradewire.store.base import EventQuery

from helpers import EA, Subscriber, auth_subprotocol, hello, issue_key, position_event

ACTORS = ["nobody", "ea_token_A", "revoked_token", "read_key", "admin_key", "wrong_key"]

# expected outcome per (action, actor)
EXPECT = {
    "ea_ws_connect": {"ea_token_A": "welcome", "*": "close-1008"},
    "ea_http_batch": {"ea_token_A": 200, "*": 401},
    "ea_write_other_account": {"ea_token_A": "wrong_account"},
    # any credential presented at connect that is not a valid API key (an EA token included) is refused there
    "subscribe": {"read_key": "ok", "admin_key": "ok", "nobody": "UnauthorizedException", "*": "connection_error"},
    "publish_trading": {"*": "UnauthorizedException"},
    "publish_custom": {"admin_key": "ok", "*": "UnauthorizedException"},
    "http_publish_custom": {"admin_key": 200, "read_key": 403, "*": 401},
    "rest_read": {"read_key": 200, "admin_key": 200, "*": 401},
    "alert_ack": {"admin_key": 404, "read_key": 403, "*": 401},  # 404: allowed, the alert does not exist
    # tokens are issued with the CLI on the hub's host only; unknown routes are not revealed to strangers
    "token_issue_via_api": {"read_key": 404, "admin_key": 404, "*": 401},
}


def expected(action, actor):
    table = EXPECT[action]
    return table.get(actor, table.get("*"))


@pytest.fixture
async def creds(server):
    token, _ = await server.store.add_token("acc-a")
    revoked, info = await server.store.add_token("acc-a")
    await server.store.revoke_token(info.tokenId)
    return {
        "nobody": None,
        "ea_token_A": token,
        "revoked_token": revoked,
        "read_key": await issue_key(server, "read"),
        "admin_key": await issue_key(server, "admin"),
        "wrong_key": "twk_00000000_" + "x" * 43,
    }


@pytest.fixture(autouse=True)
def no_secret_logged(request):
    """Every record the hub logs while a cell runs (its server's start and stop included, DEBUG and up,
    tracebacks too) holds none of the credentials tried, nor their random part alone; and no cell is an
    error on the hub's side (a refusal is an answer, not a failure)."""
    lines: list[str] = []
    errors: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(record: logging.LogRecord) -> None:
        lines.append(handler.format(record))
        if record.levelno >= logging.ERROR:
            errors.append(lines[-1])

    handler.emit = emit  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield  # autouse: set up before the server and torn down after it, so its stop is in the scan
    root.removeHandler(handler)
    root.setLevel(level)
    creds = request.node.funcargs.get("creds", {})
    assert lines, "expected the hub to log something (its start at least)"
    assert not errors, errors
    text = "\n".join(lines)
    for actor, cred in creds.items():
        if cred:
            assert cred not in text and cred.split("_", 2)[-1] not in text, f"{actor}'s credential was logged"
            assert auth_subprotocol(cred) not in text, f"{actor}'s credential was logged in its subprotocol"


def bearer(cred):
    return {"Authorization": f"Bearer {cred}"} if cred else {}


def api_key(cred):
    return {"x-api-key": cred} if cred else {}


@pytest.mark.parametrize("actor", ACTORS)
async def test_ea_ingest(server, http, creds, actor):
    cred = creds[actor]
    ea = await EA.connect(http, server, cred)
    await ea.send(hello())
    msg = await ea.ws.receive(timeout=5)
    got = json.loads(msg.data)["type"] if msg.type == aiohttp.WSMsgType.TEXT else f"close-{msg.data}"
    assert got == expected("ea_ws_connect", actor)
    async with http.post(server.url + "/ea/v1/batch", json={"hello": hello()}, headers=bearer(cred)) as r:
        assert r.status == expected("ea_http_batch", actor)
    if actor == "ea_token_A":
        await ea.send({"type": "heartbeat", "ts": 1, "account": "acc-b"})
        assert (await ea.expect("error"))["code"] == expected("ea_write_other_account", actor)


@pytest.mark.parametrize("actor", ACTORS)
async def test_realtime(server, http, creds, actor):
    cred = creds[actor]
    sub = await Subscriber.connect(http, server, cred)
    await sub.send({"type": "subscribe", "id": "s", "channel": "/trading/*"})
    first = await _first_answer(sub, "s")
    want = expected("subscribe", actor)
    if want == "connection_error":
        assert first["type"] == "connection_error"
        return  # the connection is closed: nothing else to try on it
    assert (first["type"] == "subscribe_success") == (want == "ok")
    if want != "ok":
        assert first["errors"][0]["errorType"] == want
    for action, channel in (("publish_trading", "/trading/accounts/acc-a"), ("publish_custom", "/custom/x")):
        await sub.send({"type": "publish", "id": action, "channel": channel, "events": ["1"]})
        answer = await _first_answer(sub, action)
        outcome = "ok" if answer["type"] == "publish_success" else answer["errors"][0]["errorType"]
        assert outcome == expected(action, actor), action
    body = {"channel": "/custom/y", "events": ["1"]}
    async with http.post(server.url + "/event", json=body, headers=api_key(cred)) as r:
        assert r.status == expected("http_publish_custom", actor)


async def _first_answer(sub, ident):
    while True:
        for item in sub.inbox:
            if item.get("id") == ident or item["type"] == "connection_error":
                sub.inbox.remove(item)
                return item
        await sub.recv(timeout=5)


@pytest.mark.parametrize("actor", ACTORS)
async def test_rest(server, http, creds, actor):
    headers = api_key(creds[actor])
    async with http.get(server.url + "/api/v1/accounts", headers=headers) as r:
        assert r.status == expected("rest_read", actor)
    async with http.post(server.url + "/api/v1/alerts/no-such-alert/ack", headers=headers) as r:
        assert r.status == expected("alert_ack", actor)
    async with http.post(server.url + "/api/v1/tokens", json={"account": "x"}, headers=headers) as r:
        assert r.status in (expected("token_issue_via_api", actor), 405)


async def _raw_status(server, request: bytes) -> int:
    """The status of an answer to bytes no HTTP client sends (header values that are not UTF-8)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
    finally:
        writer.close()


async def test_a_credential_that_is_not_utf8_is_refused_like_any_wrong_one(server, http):
    """aiohttp decodes such header bytes to lone surrogates, and JSON may carry them: hashing one for the
    lookup raised, a 500 with a traceback (the fixture above fails on the error it logged)."""
    garbled = b"tw\xff\xfe_x"
    for line, header in (
        (b"GET /api/v1/accounts", b"x-api-key: " + garbled),
        (b"GET /api/v1/metrics", b"Authorization: Bearer " + garbled),
        (b"POST /ea/v1/batch", b"Authorization: Bearer " + garbled),
        (b"POST /event", b"x-api-key: " + garbled),
    ):
        body = b'{"channel":"/custom/x","events":["1"]}' if line.startswith(b"POST") else b""
        request = line + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nContent-Type: application/json\r\n"
        request += b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        assert await _raw_status(server, request) == 401, line
    # In the connect's auth subprotocol: base64 of JSON, where "\ud800" is a lone surrogate too.
    sub = await Subscriber.connect(http, server, "\ud800")
    await sub.send({"type": "subscribe", "id": "s", "channel": "/trading/*"})
    assert (await _first_answer(sub, "s"))["type"] == "connection_error"


async def _close_code(ws, timeout: float = 5.0) -> int | None:
    """Read until the peer closes: its close code (None if it did not within `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            return None
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return msg.data if msg.type == aiohttp.WSMsgType.CLOSE else ws.close_code
    return None


async def test_a_token_revoked_during_a_session_writes_nothing_more(server, http):
    """Checked at connect only, a revoked token kept writing on the session it had (auth_cache_s is 0 here)."""
    token, info = await server.store.add_token("acc-a")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    await ea.send(position_event(1))
    await ea.wait_ack(1)
    assert await server.store.revoke_token(info.tokenId)
    await ea.send(position_event(2, pid=1002))
    assert await _close_code(ea.ws) == 1008
    assert [e.position.id for e in (await server.store.events(EventQuery(account="acc-a"))).items] == [1001]


async def test_a_key_revoked_while_subscribed_ends_its_subscriptions_and_no_one_elses(server, http):
    """Checked at subscribe only, a revoked key kept every account's data coming on what it had subscribed."""
    revoked, info = await server.store.add_api_key("read")
    kept = await issue_key(server, "read")
    gone, stays = [await Subscriber.connect(http, server, key) for key in (revoked, kept)]
    for sub in (gone, stays):
        await sub.send({"type": "subscribe", "id": "s", "channel": "/trading/*"})
        assert (await _first_answer(sub, "s"))["type"] == "subscribe_success"
    assert await server.store.revoke_api_key(info.keyId)
    assert await _close_code(gone.ws) == 4401  # within the recheck (1 s here) and the auth cache (0 s)
    token, _ = await server.store.add_token("acc-a")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    assert (await stays.expect("data"))["type"] == "data"  # the other key's subscription goes on


async def test_wrong_credentials_neither_fill_the_cache_nor_evict_the_ones_in_use(server, monkeypatch):
    """The cache was keyed by the presented secret: a megabyte "key" per subscribe kept a megabyte, ten
    thousand of them 20 GB, and any flood of wrong keys emptied the cache of the keys in use as well."""
    hub = server.hub
    hub._auth = type(hub._auth)(60.0, limit=100)
    key = await issue_key(server, "read")
    reads: list[str] = []
    real = server.store.api_key_role

    async def counted(secret: str):
        reads.append(secret)
        return await real(secret)

    monkeypatch.setattr(server.store, "api_key_role", counted)
    assert await hub.api_role(key) == "read" and len(reads) == 1
    for i in range(300):
        assert await hub.api_role(f"twk_00000000_wrong{i}") is None
    for i in range(5):
        assert await hub.api_role("x" * 2**20 + str(i)) is None
    assert len(reads) == 301  # the megabyte ones were not even looked up
    assert await hub.api_role(key) == "read" and len(reads) == 301  # still cached, after 305 wrong ones
    kept = [*hub._auth._found, *hub._auth._missing]
    assert len(kept) <= 101 and max(len(k) for k in kept) < 80


async def test_a_key_offered_only_in_the_auth_subprotocol_is_not_logged(server, http, creds):
    """aiohttp picks a subprotocol from the first Sec-WebSocket-Protocol line and warns, quoting what was
    offered, when none is its own: a client that offers only `header-…` (or puts it on a line of its own
    first) had its API key written to the log in base64 on every connect."""
    url = server.url.replace("http", "ws", 1) + "/event/realtime"
    async with http.ws_connect(url, protocols=(auth_subprotocol(creds["read_key"]),)) as ws:
        await ws.send_json({"type": "subscribe", "id": "s", "channel": "/trading/*"})
        assert (await ws.receive_json(timeout=5))["type"] == "subscribe_success"  # the key was read, and used


async def test_a_store_that_cannot_look_up_a_key_is_a_503_not_a_500_nor_a_dropped_connection(
    server, http, creds, monkeypatch
):
    """The EA paths answered a store failure 503 store_unavailable; a key lookup that failed gave a 500 and a
    traceback (REST, POST /event, the realtime upgrade) or dropped the realtime connection mid-message."""
    from tradewire.store.base import StoreError

    async def down(secret: str):
        raise StoreError("read failed: database is locked")

    monkeypatch.setattr(server.store, "api_key_role", down)
    key = "twk_00000000_" + "y" * 43  # never looked up before: not in the hub's cache
    async with http.get(server.url + "/api/v1/accounts", headers=api_key(key)) as r:
        assert r.status == 503 and (await r.json())["error"]["code"] == "store_unavailable"
    body = {"channel": "/custom/y", "events": ["1"]}
    async with http.post(server.url + "/event", json=body, headers=api_key(key)) as r:
        assert r.status == 503 and (await r.json())["errors"][0]["errorType"] == "ServiceUnavailable"
    url = server.url.replace("http", "ws", 1) + "/event/realtime"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url, protocols=("aws-appsync-event-ws", auth_subprotocol(key)))
    assert refused.value.status == 503
    sub = await Subscriber.connect(http, server, None)  # no key at connect: each message brings its own
    auth = {"x-api-key": key}
    await sub.send({"type": "subscribe", "id": "s", "channel": "/trading/*", "authorization": auth})
    assert (await _first_answer(sub, "s"))["errors"][0]["errorType"] == "SubscriptionProcessingError"
    await sub.send({"type": "publish", "id": "p", "channel": "/custom/x", "events": ["1"], "authorization": auth})
    assert (await _first_answer(sub, "p"))["errors"][0]["errorType"] == "MessageProcessingError"
    await sub.send({"type": "subscribe", "id": "s2", "channel": "/trading/*", "authorization": auth})
    assert (await _first_answer(sub, "s2"))["type"] == "subscribe_error"  # the connection is still served
