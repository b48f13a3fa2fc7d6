"""The AWS deployment (tradewire.aws): Lambda handlers driven with API Gateway event shapes as AWS sends
them, a DynamoDB-compatible server as a real process, a recorder standing in for `@connections`, and a
real tradewire hub standing in for AppSync Events (same HTTP publish and WebSocket protocol).

The hub refuses client publishes into `trading`, so the handlers publish into the `fleet` namespace
(TRADEWIRE_APPSYNC_NAMESPACE) and the stand-in hub lets admin keys publish there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import string
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tradewire.app import Server
from tradewire.aws import handlers
from tradewire.aws.connections import RecordingConnections
from tradewire.aws.state import LiveTable, pack_view, to_stored, unpack_view
from tradewire.config import load_settings
from tradewire.model import MAX_COMMENT, Position
from tradewire.state import MAX_POSITIONS_PER_ACCOUNT, MAX_SYMBOLS_PER_ACCOUNT, AccountView, LiveState
from tradewire.store.base import AlertQuery, EventQuery

from helpers import Subscriber, account_state, hello, http_server, issue_key, position, position_event
from stores import drop_dynamodb_tables, need_dynamodb

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "aws" / "template.yaml"
DOMAIN = "abc123def4.execute-api.us-east-1.amazonaws.com"


# --- API Gateway events, as AWS sends them ------------------------------------------------------
def _ws_context(route: str, event_type: str, connection_id: str, **extra) -> dict:
    return {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": "L3GxtHs5IAMFhRg=",
        "requestTime": "21/Nov/2024:10:15:00 +0000",
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": 1732184100000,
        "requestTimeEpoch": 1732184100123,
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "MetaTrader 5 Terminal/5.0.4620"},
        "requestId": "L3GxtHs5IAMFhRg=",
        "domainName": DOMAIN,
        "connectionId": connection_id,
        "apiId": "abc123def4",
        **extra,
    }


def connect_event(connection_id: str, token: str | None) -> dict:
    headers = {
        "Host": DOMAIN,
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Amzn-Trace-Id": "Root=1-673f0a24-0d8e2c6b5f1a3c7e9b2d4f60",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": _ws_context("$connect", "CONNECT", connection_id),
        "isBase64Encoded": False,
    }


def message_event(connection_id: str, frame) -> dict:
    return {
        "requestContext": _ws_context("$default", "MESSAGE", connection_id, messageId="L3G0ZeqOIAMCJfg="),
        "body": frame if isinstance(frame, str) else json.dumps(frame),
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str) -> dict:
    headers = {"Host": DOMAIN, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": _ws_context(
            "$disconnect",
            "DISCONNECT",
            connection_id,
            disconnectStatusCode=1001,
            disconnectReason="Going away",
        ),
        "isBase64Encoded": False,
    }


def http_api_event(method: str, path: str, query: dict | None = None, key: str | None = None) -> dict:
    headers = {"accept": "application/json", "host": "q1w2e3r4t5.execute-api.us-east-1.amazonaws.com"}
    if key:
        headers["x-api-key"] = key
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": headers,
        **({"queryStringParameters": query} if query else {}),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "q1w2e3r4t5",
            "domainName": "q1w2e3r4t5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "q1w2e3r4t5",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.4",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2024:10:16:00 +0000",
            "timeEpoch": 1732184160000,
        },
        "isBase64Encoded": False,
    }


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
async def appsync(tmp_path):
    """A real tradewire hub standing in for AppSync Events; admin keys may publish into `fleet`."""
    settings = load_settings(
        env={},
        overrides={
            "server": {"port": 0, "heartbeat_sec": 1, "auth_cache_s": 0, "drain_timeout_s": 5},
            "store": {"url": f"sqlite:///{tmp_path}/hub.db"},
            "realtime": {"publish_namespaces": ["fleet"]},
        },
    )
    srv = Server(settings)
    await srv.start()
    yield srv
    await srv.stop()


class Lambda:
    """The deployment under test: handlers called as Lambda calls them (sync, off the test's loop)."""

    def __init__(self, url: str, appsync: Server, admin_key: str) -> None:
        self.url = url
        self.recorder = RecordingConnections()
        env = {
            "TRADEWIRE_STORE": url,
            "TRADEWIRE_APPSYNC_HTTP_URL": appsync.url + "/event",
            "TRADEWIRE_APPSYNC_API_KEY": admin_key,
            "TRADEWIRE_APPSYNC_NAMESPACE": "fleet",
            "TRADEWIRE_SYSTEM_MAGIC_NUMBERS": "7001",
            "TRADEWIRE_LIMITS_MAX_SYMBOLS_PER_ACCOUNT": "2",
            "TRADEWIRE_LIMITS_MAX_POSITIONS_PER_ACCOUNT": "2",
        }
        handlers.reset()
        self.runtime = handlers.runtime(env, connections=lambda request_context: self.recorder)

    async def __call__(self, handler, event: dict) -> dict:
        return await asyncio.to_thread(handler, event, None)

    async def store_call(self, fn):
        """Run `fn(store)` on the handlers' own loop and store (as a handler would)."""

        async def go():
            return await fn(await self.runtime.open())

        return await asyncio.to_thread(self.runtime.run, go())


@pytest.fixture
async def aws(appsync):
    dynamodb_endpoint = need_dynamodb()
    url = f"dynamodb://tw-aws-{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint={dynamodb_endpoint}"
    admin = await issue_key(appsync, "admin")
    lam = Lambda(url, appsync, admin)
    yield lam
    await asyncio.to_thread(handlers.reset)
    await drop_dynamodb_tables(url)


async def appsync_subscriber(session: aiohttp.ClientSession, appsync: Server, channel: str) -> Subscriber:
    """A dashboard on the stand-in AppSync, subscribed to `channel` (as "s1")."""
    sub = await Subscriber.connect(session, appsync, await issue_key(appsync, "read"))
    await sub.expect("connection_ack")
    await sub.subscribe("s1", channel)
    return sub


# --- tests --------------------------------------------------------------------------------------
async def test_an_ea_session_goes_through_the_handlers_to_dynamodb_and_appsync(aws, appsync):
    token, _ = await aws.store_call(lambda s: s.add_token("icm-live01-5123456"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    async with aiohttp.ClientSession() as session:
        sub = await appsync_subscriber(session, appsync, "/fleet/*")

        cid = "Lx1ZtdxyoAMCJfg="
        assert (await aws(handlers.connect, connect_event(cid, token)))["statusCode"] == 200
        assert (await aws(handlers.default, message_event(cid, hello())))["statusCode"] == 200
        welcome = aws.recorder.sent(cid)[-1]
        assert welcome["type"] == "welcome" and welcome["ackedSeq"] == 0 and welcome["sessionId"]

        frame = [account_state(), position_event(1, "OPEN", position=position(1001, magic=7001))]
        await aws(handlers.default, message_event(cid, frame))
        assert aws.recorder.sent(cid)[-1] == {"type": "ack", "seq": 1}

        greeted = await sub.event(id="icm-live01-5123456", status="live")
        assert greeted["info"]["platform"] == "MT5" and "state" not in greeted
        summary = await sub.event(id="icm-live01-5123456", status="live")
        assert summary["state"]["equity"] == 10_000.0
        opened = await sub.event(event="OPEN", positionId=1001)
        assert opened["account"] == "icm-live01-5123456" and opened["source"] == "ea"
        listed = await sub.event(account="icm-live01-5123456")  # the OPEN event was taken above
        assert [p["id"] for p in listed["positions"]] == [1001]

        # The EA did not see the ack and resends: acked again, stored once, published once.
        await aws(handlers.default, message_event(cid, position_event(1, "OPEN", position=position(1001, magic=7001))))
        assert aws.recorder.sent(cid)[-1] == {"type": "ack", "seq": 1}
        page = await aws.store_call(lambda s: s.events(EventQuery(account="icm-live01-5123456")))
        assert [(e.event, e.positionId, e.seq) for e in page.items] == [("OPEN", 1001, 1)]

        # REST over the HTTP API answers from DynamoDB.
        resp = await aws(
            handlers.rest, http_api_event("GET", "/api/v1/events", {"account": "icm-live01-5123456"}, read_key)
        )
        assert resp["statusCode"] == 200, resp
        assert [(e["event"], e["positionId"]) for e in json.loads(resp["body"])["items"]] == [("OPEN", 1001)]
        resp = await aws(
            handlers.rest, http_api_event("GET", "/api/v1/system-trades", {"account": "icm-live01-5123456"}, read_key)
        )
        assert [t["positionId"] for t in json.loads(resp["body"])["items"]] == [1001]
        resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/accounts", key=read_key))
        [acct] = json.loads(resp["body"])["items"]
        assert (acct["id"], acct["status"], acct["positions"]) == ("icm-live01-5123456", "live", 1)
        resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/events"))
        assert resp["statusCode"] == 401

        # The EA goes away and does not come back: the schedule raises CONNECTION_LOST.
        await aws(handlers.disconnect, disconnect_event(cid))
        assert (await sub.event(id="icm-live01-5123456", status="lost"))["positions"] == 1
        real_clock = aws.runtime.clock
        aws.runtime.clock = lambda: real_clock() + 60_000
        result = await aws(handlers.schedule, {"source": "aws.events", "detail-type": "Scheduled Event"})
        assert result["raised"] == 1
        lost = await sub.event(type="CONNECTION_LOST")
        assert lost["account"] == "icm-live01-5123456" and lost.get("resolvedAt") is None
        resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/alerts", {"state": "open"}, read_key))
        assert [a["type"] for a in json.loads(resp["body"])["items"]] == ["CONNECTION_LOST"]
        await sub.ws.close()


async def test_a_bad_token_is_refused_at_connect(aws):
    await aws.store_call(lambda s: s.add_token("acct-1"))
    assert (await aws(handlers.connect, connect_event("c-bad", "twe_nothere_x")))["statusCode"] == 401
    assert (await aws(handlers.connect, connect_event("c-none", None)))["statusCode"] == 401
    # A frame on a connection $connect never accepted gets an error and is closed.
    await aws(handlers.default, message_event("c-bad", hello()))
    assert aws.recorder.sent("c-bad")[0]["code"] == "unknown_connection"
    assert aws.recorder.deleted == ["c-bad"]


async def test_a_token_revoked_while_connected_writes_nothing_more(aws):
    """$connect is where API Gateway authorizes; an open connection lasts up to 2 h. Each frame now asks
    whether its token still stands (cached per container for auth_cache_s)."""
    token, info = await aws.store_call(lambda s: s.add_token("acct-r"))
    await aws(handlers.connect, connect_event("cr", token))
    await aws(handlers.default, message_event("cr", hello(account="acct-r")))
    await aws(handlers.default, message_event("cr", position_event(1)))
    assert aws.recorder.sent("cr")[-1] == {"type": "ack", "seq": 1}
    assert await aws.store_call(lambda s: s.revoke_token(info.tokenId))
    real_clock = aws.runtime.clock
    aws.runtime.clock = lambda: real_clock() + 10_000  # past the container's auth cache
    await aws(handlers.default, message_event("cr", position_event(2, pid=1002)))
    assert aws.recorder.deleted == ["cr"] and aws.recorder.sent("cr")[-1] == {"type": "ack", "seq": 1}
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-r")))
    assert [e.seq for e in page.items] == [1]


async def test_a_hello_from_another_login_is_refused_and_its_connection_closed(aws):
    token, _ = await aws.store_call(lambda s: s.add_token("acct-l"))
    await aws(handlers.connect, connect_event("c1", token))
    await aws(handlers.default, message_event("c1", hello(account="acct-l")))
    await aws(handlers.default, message_event("c1", position_event(1)))
    await aws(handlers.connect, connect_event("c2", token))  # the terminal switched to another login
    frame = [hello(account="acct-l", login=999001), {"type": "positions", "ts": 1, "positions": []}]
    await aws(handlers.default, message_event("c2", frame))
    err = aws.recorder.sent("c2")[-1]
    assert err["code"] == "login_changed" and "999001" in err["message"] and aws.recorder.deleted == ["c2"]
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-l")))
    assert [e.event for e in page.items] == ["OPEN"]  # its empty snapshot closed nothing


async def test_a_connection_opened_before_tokens_were_recorded_is_closed_to_reconnect(aws):
    """Connection items written by an earlier version have no token hash, and were taken as standing: a token
    revoked after the upgrade wrote on through them for up to API Gateway's two hours."""
    from tradewire.aws.state import Connection

    _, info = await aws.store_call(lambda s: s.add_token("acct-old"))
    await aws.store_call(lambda s: s.revoke_token(info.tokenId))
    legacy = Connection(id="c-old", account="acct-old", connectedAt=1, tokenHash="")
    await asyncio.to_thread(aws.runtime.run, aws.runtime.live.put_connection(legacy))
    await aws(handlers.default, message_event("c-old", position_event(1)))
    assert aws.recorder.deleted == ["c-old"]
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-old")))
    assert page.items == []


async def test_rest_answers_503_when_the_key_lookup_fails(aws, monkeypatch):
    """A throttled or failing table is the server's trouble: 503 to retry, not a Lambda error (a 502)."""
    from tradewire.store.base import StoreError
    from tradewire.store.dynamodb import DynamoStore

    async def down(self, secret: str):
        raise StoreError("read failed: ProvisionedThroughputExceededException")

    monkeypatch.setattr(DynamoStore, "api_key_role", down)
    resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/accounts", key="twk_00000000_" + "z" * 43))
    assert resp["statusCode"] == 503 and json.loads(resp["body"])["error"]["code"] == "store_unavailable"


async def test_readiness_needs_no_key_and_says_when_the_tables_do_not_answer(aws, monkeypatch):
    from tradewire.store.base import StoreError
    from tradewire.store.dynamodb import DynamoStore

    resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/readyz"))
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["status"] == "ready"

    async def down(self):
        raise StoreError("read failed: ResourceNotFoundException")

    monkeypatch.setattr(DynamoStore, "head_offset", down)
    resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/readyz"))
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 503 and body["problems"] == {"store": "read failed: ResourceNotFoundException"}


async def _accounts(aws, key: str) -> dict[str, dict]:
    resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/accounts", key=key))
    return {a["id"]: a for a in json.loads(resp["body"])["items"]}


async def _later(aws, ms: int) -> None:
    real_clock = aws.runtime.clock
    aws.runtime.clock = lambda: real_clock() + ms


async def test_a_revoked_tokens_connection_ends_its_session(aws):
    """The frame that found the token revoked deleted the connection's item, so the $disconnect that
    followed found none and ended no session: the account stayed "live", never CONNECTION_LOST."""
    token, info = await aws.store_call(lambda s: s.add_token("acct-rv"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    await aws(handlers.connect, connect_event("crv", token))
    await aws(handlers.default, message_event("crv", hello(account="acct-rv")))
    assert (await _accounts(aws, read_key))["acct-rv"]["status"] == "live"
    assert await aws.store_call(lambda s: s.revoke_token(info.tokenId))
    await _later(aws, 10_000)  # past the container's auth cache
    await aws(handlers.default, message_event("crv", account_state()))
    await aws(handlers.disconnect, disconnect_event("crv"))  # API Gateway's, after the close
    assert (await _accounts(aws, read_key))["acct-rv"]["status"] == "lost"
    await _later(aws, 60_000)
    assert (await aws(handlers.schedule, {"source": "aws.events"}))["raised"] == 1


async def test_a_frame_that_loaded_the_account_before_a_hello_does_not_undo_it(aws):
    """The EA's next frame goes out on the welcome, and could load the account's item before the hello's
    frame saved it; saved after, it put back "no session, ended at T": CONNECTION_LOST for a live EA, which
    its frames never resolved. The session count is now atomic, apart from the body frames save."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-g"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    await aws(handlers.connect, connect_event("cg1", token))
    await aws(handlers.default, message_event("cg1", hello(account="acct-g")))
    await aws(handlers.disconnect, disconnect_event("cg1"))  # gone: sessions 0, ended at T

    async def load(live):
        state = LiveState()
        await live.load(state, "acct-g")
        return state.accounts["acct-g"]

    stale = await aws.store_call(lambda s: load(aws.runtime.live))  # loaded by a frame before the hello...
    await aws(handlers.connect, connect_event("cg2", token))
    await aws(handlers.default, message_event("cg2", hello(account="acct-g")))
    await aws.store_call(lambda s: aws.runtime.live.save(stale))  # ...and saved after it
    assert (await _accounts(aws, read_key))["acct-g"]["status"] == "live"
    await _later(aws, 60_000)
    await aws(handlers.default, message_event("cg2", account_state()))  # the EA streams on
    assert (await aws(handlers.schedule, {"source": "aws.events"}))["raised"] == 0


async def test_a_disconnect_does_not_write_back_a_position_a_frame_closed(aws, monkeypatch):
    """$disconnect loaded the account and saved it whole: loaded before a CLOSE's frame saved, it put the
    closed position back, open for as long as the EA stayed away."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-d"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    await aws(handlers.connect, connect_event("cd", token))
    await aws(handlers.default, message_event("cd", [hello(account="acct-d"), position_event(1, "OPEN")]))
    stale = LiveState()
    await aws.store_call(lambda s: aws.runtime.live.load(stale, "acct-d"))
    await aws(handlers.default, message_event("cd", position_event(2, "CLOSE")))
    live = aws.runtime.live
    real_load = type(live).load

    async def load_as_before(self, state, account):  # $disconnect's load ran before the CLOSE was saved
        state.accounts[account] = stale.accounts[account]
        return None

    monkeypatch.setattr(type(live), "load", load_as_before)
    await aws(handlers.disconnect, disconnect_event("cd"))
    monkeypatch.setattr(type(live), "load", real_load)
    account = (await _accounts(aws, read_key))["acct-d"]
    assert (account["status"], account.get("positions", 0)) == ("lost", 0)


async def test_what_a_frame_committed_is_published_even_when_the_rest_of_it_fails(aws, appsync, monkeypatch):
    token, _ = await aws.store_call(lambda s: s.add_token("acct-f"))
    async with aiohttp.ClientSession() as session:
        sub = await appsync_subscriber(session, appsync, "/fleet/events/*")
        await aws(handlers.connect, connect_event("cf", token))
        await aws(handlers.default, message_event("cf", hello(account="acct-f")))

        async def throttled(self, view):
            raise RuntimeError("ProvisionedThroughputExceededException")

        monkeypatch.setattr(type(aws.runtime.live), "save", throttled)
        with pytest.raises(RuntimeError):
            await aws(handlers.default, message_event("cf", position_event(1, "OPEN")))
        assert aws.recorder.sent("cf")[-1] == {"type": "ack", "seq": 1}  # stored and acked...
        opened = await sub.event(event="OPEN")  # ...and told, though the frame's save then failed
        assert opened["account"] == "acct-f"
        await sub.ws.close()


async def test_on_aws_a_refused_event_or_a_late_snapshot_does_not_bend_the_record(aws):
    """As on the server: a position message the store refused left the item's view changed, so no snapshot
    repaired the record; and a snapshot older than the last one applied recorded a CLOSE for good."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-r"))
    await aws(handlers.connect, connect_event("cr", token))
    p1, p2 = position(1), position(2)
    await aws(handlers.default, message_event("cr", [hello(account="acct-r"), position_event(5, pid=1, position=p1)]))
    await aws(handlers.default, message_event("cr", {"type": "positions", "ts": 2_000, "positions": [p1]}))
    await aws(handlers.default, message_event("cr", position_event(3, "CLOSE", pid=1, position=p1)))  # refused
    await aws(handlers.default, message_event("cr", {"type": "positions", "ts": 1_000, "positions": []}))  # late
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-r")))
    assert sorted((e.positionId, e.event) for e in page.items) == [(1, "OPEN")]
    await aws(handlers.default, message_event("cr", {"type": "positions", "ts": 3_000, "positions": [p2]}))
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-r")))
    assert sorted((e.positionId, e.event) for e in page.items) == [(1, "CLOSE"), (1, "OPEN"), (2, "OPEN")]


async def test_a_position_change_republishes_the_account_summary(aws, appsync):
    """The server republishes an account's summary when its positions change (their count, floating P/L);
    on AWS only the list was, so the fleet view's count lagged until the EA's next account message."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-s"))
    async with aiohttp.ClientSession() as session:
        sub = await appsync_subscriber(session, appsync, "/fleet/accounts/*")
        await aws(handlers.connect, connect_event("cs", token))
        await aws(handlers.default, message_event("cs", [hello(account="acct-s"), account_state()]))
        await aws(handlers.default, message_event("cs", position_event(1, "OPEN")))
        summary = await sub.event(id="acct-s", positions=1)
        assert summary["status"] == "live"
        await sub.ws.close()


async def test_a_stop_out_close_after_its_episode_ended_raises_nothing_on_aws(aws):
    """Each Lambda call builds its rules anew: the late stop-out CLOSE (the account update that ended the
    episode came in an earlier call) raised a second STOP_OUT there."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-so"))
    await aws(handlers.connect, connect_event("cso", token))
    await aws(handlers.default, message_event("cso", hello(account="acct-so")))
    await aws(handlers.default, message_event("cso", account_state(equity=400.0, margin=1000.0)))  # 40 %
    await aws(handlers.default, message_event("cso", account_state(equity=1_300.0, margin=1000.0)))  # liquidated
    close = position_event(1, "CLOSE", pid=5, position=position(5), reason="stopout", profit=-900.0)
    await aws(handlers.default, message_event("cso", close))
    assert aws.recorder.sent("cso")[-1] == {"type": "ack", "seq": 1}
    stop_outs = await aws.store_call(lambda s: s.alerts(AlertQuery(account="acct-so", type="STOP_OUT")))
    assert len(stop_outs) == 1 and stop_outs[0].resolvedAt is not None


async def test_a_session_open_across_the_upgrade_is_still_counted(aws):
    """Items written before the session count was an attribute of its own hold it in their body only: the
    new hello's ADD started from nothing, and the old connection's late $disconnect then took the count to
    0 with the EA live on its new connection."""
    from tradewire.aws.state import Connection

    token, _ = await aws.store_call(lambda s: s.add_token("acct-up"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    old = AccountView("acct-up", sessions=1, transport="ws", connected_at=1, ever_connected=True, last_seen=1)
    await aws.store_call(lambda s: aws.runtime.live.save(old))  # the body says 1 session; no attribute
    await aws.store_call(
        lambda s: aws.runtime.live.put_connection(Connection(id="c-old", account="acct-up", greeted=True))
    )
    await aws(handlers.connect, connect_event("c-new", token))
    await aws(handlers.default, message_event("c-new", hello(account="acct-up")))
    await aws(handlers.disconnect, disconnect_event("c-old"))  # the old connection's, late
    assert (await _accounts(aws, read_key))["acct-up"]["status"] == "live"


async def test_protocol_errors_come_back_through_connections(aws):
    token, _ = await aws.store_call(lambda s: s.add_token("acct-2"))
    await aws(handlers.connect, connect_event("c2", token))
    await aws(handlers.default, message_event("c2", account_state()))
    assert aws.recorder.sent("c2")[-1]["code"] == "hello_required"
    await aws(handlers.default, message_event("c2", "{not json"))
    assert aws.recorder.sent("c2")[-1]["code"] == "bad_json"
    await aws(handlers.default, message_event("c2", hello(account="someone-else")))
    assert aws.recorder.sent("c2")[-1]["code"] == "wrong_account"


async def test_a_margin_call_resolves_however_many_ea_errors_are_open_beside_it(aws):
    """Each invocation loaded the account's 100 newest open alerts for the rules: 100 SYSTEM_ERRORs (open
    until acknowledged) newer than a MARGIN_CALL hid it, and recovery never resolved it. Episodes now."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-m"))
    await aws(handlers.connect, connect_event("cm", token))
    await aws(handlers.default, message_event("cm", hello(account="acct-m")))
    await aws(handlers.default, message_event("cm", account_state(equity=900.0, margin=1000.0)))  # 90 %
    errors = [
        {"type": "error", "seq": n, "id": f"err-{n}", "code": "4756", "message": "trade failed"} for n in range(1, 102)
    ]
    await aws(handlers.default, message_event("cm", errors))
    assert aws.recorder.sent("cm")[-1] == {"type": "ack", "seq": 101}
    await aws(handlers.default, message_event("cm", account_state(equity=1_200.0, margin=1000.0)))  # 120 %
    still_open = await aws.store_call(lambda s: s.alerts(AlertQuery(account="acct-m", state="open", limit=1000)))
    assert {a.type for a in still_open} == {"SYSTEM_ERROR"} and len(still_open) == 101
    [call] = await aws.store_call(lambda s: s.alerts(AlertQuery(account="acct-m", type="MARGIN_CALL")))
    assert call.resolvedAt is not None


async def test_symbols_past_the_accounts_limit_are_refused_across_invocations(aws):
    """The account's item in DynamoDB keeps every symbol it streams: the limit keeps it small."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-3"))
    await aws(handlers.connect, connect_event("c3", token))
    await aws(handlers.default, message_event("c3", hello(account="acct-3")))

    def ticks(*symbols: str) -> dict:
        return {"type": "ticks", "ticks": [{"symbol": s, "bid": 1.1, "ask": 1.1002, "ts": 1} for s in symbols]}

    await aws(handlers.default, message_event("c3", ticks("AAA", "BBB")))
    assert not [m for m in aws.recorder.sent("c3") if m["type"] == "error"]
    await aws(handlers.default, message_event("c3", ticks("CCC", "AAA")))  # the state came back from DynamoDB
    error = aws.recorder.sent("c3")[-1]
    assert error["code"] == "too_many_symbols" and "'CCC'" in error["message"] and "'AAA'" not in error["message"]


async def test_positions_past_the_accounts_limit_are_stored_but_not_kept_in_its_item(aws):
    """The account's item holds its open positions too (DynamoDB items stop at 400 KB): past the limit an
    OPEN is stored and acked but left out of the item, and a snapshot over the limit is refused by name."""
    token, _ = await aws.store_call(lambda s: s.add_token("acct-4"))
    read_key, _ = await aws.store_call(lambda s: s.add_api_key("read"))
    await aws(handlers.connect, connect_event("c4", token))
    await aws(handlers.default, message_event("c4", hello(account="acct-4")))
    for seq in (1, 2, 3):  # one invocation each: the item is loaded and saved around every frame
        await aws(handlers.default, message_event("c4", position_event(seq, pid=seq)))
        assert aws.recorder.sent("c4")[-1] == {"type": "ack", "seq": seq}
    page = await aws.store_call(lambda s: s.events(EventQuery(account="acct-4")))
    assert sorted(e.positionId for e in page.items) == [1, 2, 3]
    resp = await aws(handlers.rest, http_api_event("GET", "/api/v1/positions", {"account": "acct-4"}, read_key))
    assert sorted(p["id"] for p in json.loads(resp["body"])["items"]) == [1, 2]
    snapshot = {"type": "positions", "ts": 1, "positions": [position(1), position(2), position(3)]}
    await aws(handlers.default, message_event("c4", snapshot))
    error = aws.recorder.sent("c4")[-1]
    assert (error["code"], error["ref"]) == ("too_many_positions", "positions")


async def _stored_and_loaded(view: AccountView) -> tuple[AccountView, int, int]:
    """`view` saved to a live table on the DynamoDB test server and loaded back; its item's size and the
    uncompressed JSON's."""
    url = f"dynamodb://tw-item-{uuid.uuid4().hex[:8]}?region=us-east-1&endpoint={need_dynamodb()}"
    live = LiveTable(url)
    await live.open(create=True)
    try:
        await live.save(view)
        state = LiveState()
        await live.load(state, view.id)
        item = await live._client.get_item(TableName=live.table, Key={"pk": {"S": "ACCOUNT"}, "sk": {"S": view.id}})
        return state.accounts[view.id], len(item["Item"]["body"]["B"]), len(msgspec.json.encode(to_stored(view, None)))
    finally:
        await live.close()
        await drop_dynamodb_tables(url)


def _view(account: str, positions: int, symbols: list[str], comment) -> AccountView:
    """An account with `positions` open (each with a comment) over `symbols`, a quote for each symbol."""
    opened = {
        i: Position(
            id=i,
            symbol=symbols[i % len(symbols)],
            side="buy",
            volume=0.1,
            openPrice=1.1,
            openTime=1_732_184_100_000,
            ticket=100_000 + i,
            price=1.1234,
            sl=1.0,
            tp=1.2,
            profit=12.5,
            magic=7001,
            comment=comment(i),
        )
        for i in range(1, positions + 1)
    }
    quotes = {s: (1.1 + i / 1000, 1.1002 + i / 1000) for i, s in enumerate(symbols)}
    view = AccountView(id=account, positions=opened, positions_known=True, quotes=quotes)
    view.price_changed = {s: 1_732_184_100_000 + i for i, s in enumerate(symbols)}
    return view


def _noise(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


async def test_the_most_an_account_can_send_within_the_default_limits_fits_one_dynamodb_item():
    """1,000 positions with 256 characters of random comment, 1,000 random 64-character symbols: ~700 KB of
    JSON, which DynamoDB refuses as one item (400 KB). Stored compressed, comments and all, read back the same."""
    rng = random.Random(7)
    symbols = [_noise(rng, 64) for _ in range(MAX_SYMBOLS_PER_ACCOUNT)]
    view = _view("acct-full", MAX_POSITIONS_PER_ACCOUNT, symbols, lambda i: _noise(rng, MAX_COMMENT))
    loaded, item_bytes, json_bytes = await _stored_and_loaded(view)
    assert json_bytes > 400 * 1024 >= item_bytes
    assert loaded.positions == view.positions and loaded.quotes == view.quotes


async def test_a_view_too_big_for_an_item_even_compressed_is_kept_without_position_comments(caplog):
    """With the position limit raised (1,500), the same noise no longer fits compressed: the account's
    positions are kept without their comments (its stored events keep them), and the log says so."""
    rng = random.Random(8)
    symbols = [_noise(rng, 64) for _ in range(MAX_SYMBOLS_PER_ACCOUNT)]
    view = _view("acct-noisy", 1_500, symbols, lambda i: _noise(rng, MAX_COMMENT))
    with caplog.at_level(logging.WARNING, logger="tradewire.aws"):
        loaded, item_bytes, _ = await _stored_and_loaded(view)
    assert item_bytes <= 400 * 1024
    assert loaded.quotes == view.quotes
    assert loaded.positions == {i: msgspec.structs.replace(p, comment="") for i, p in view.positions.items()}
    assert "acct-noisy" in caplog.text and "without position comments" in caplog.text


def test_a_typical_account_is_one_write_unit_and_old_items_still_load():
    """10 positions over 28 symbols: ~4 KB of JSON, 5 write units a frame uncompressed; the cost model
    (tradewire.cost) counts one. Items written before compression (plain JSON) still load."""
    view = _view("acct-typical", 10, [f"SYM{i}.m" for i in range(28)], lambda i: f"hedge leg {i} of basket 42")
    stored = to_stored(view, None)
    plain = msgspec.json.encode(stored)
    assert len(plain) > 3 * 1024 and len(pack_view(stored)) <= 1024
    assert unpack_view(plain) == unpack_view(pack_view(stored)) == stored


def test_the_sam_template_lints_clean():
    cfn_lint = shutil.which("cfn-lint") or str(Path(sys.executable).with_name("cfn-lint"))
    if not Path(cfn_lint).exists():
        if os.environ.get("TRADEWIRE_REQUIRE_SERVICES"):
            pytest.fail("cfn-lint is not installed and TRADEWIRE_REQUIRE_SERVICES is set")
        pytest.skip("cfn-lint is not installed (pip install cfn-lint)")
    proc = subprocess.run([cfn_lint, str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_only_the_lambdas_may_publish_to_trading():
    """The API key goes to every dashboard: if it could publish, a dashboard user could forge alerts,
    positions or account state. Publishing is IAM only, and each function's role may publish."""
    from cfnlint.decode import decode_str

    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems, problems
    resources = template["Resources"]
    config = resources["EventsApi"]["Properties"]["EventConfig"]
    assert config["DefaultPublishAuthModes"] == [{"AuthType": "AWS_IAM"}]
    assert config["DefaultSubscribeAuthModes"] == [{"AuthType": "API_KEY"}]
    assert "PublishAuthModes" not in resources["TradingNamespace"]["Properties"]  # no override back to a key
    assert "TRADEWIRE_APPSYNC_API_KEY" not in template["Globals"]["Function"]["Environment"]["Variables"]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 5
    for function in functions:
        actions = [s["Action"] for p in function["Properties"]["Policies"] if "Statement" in p for s in p["Statement"]]
        assert "appsync:EventPublish" in actions, function["Properties"]["Handler"]


async def test_without_an_api_key_a_publish_is_signed_with_sigv4_for_appsync():
    """What AppSync checks: the Authorization header is the SigV4 signature of exactly the body that was
    sent, for service appsync in the API's region, with the temporary credentials' token beside it."""
    from aiohttp import web
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tradewire.aws.publisher import EventPublisher

    seen: list[tuple[dict, bytes]] = []

    async def event(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.json_response({"successful": [{"identifier": "1", "index": 0}], "failed": []})

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
    async with http_server("POST", "/event", event) as base:
        url = base + "/event"
        publisher = EventPublisher(url, "", region="eu-west-1", credentials=creds)
        try:
            publisher.publish("/trading/alerts/acc-1", {"type": "MARGIN_CALL"})
            await publisher.flush()
        finally:
            await publisher.close()
    [(headers, body)] = seen
    assert "x-api-key" not in {k.lower() for k in headers}
    assert headers["X-Amz-Security-Token"] == "session-token"
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/appsync/aws4_request" in authorization
    # Sign what arrived, at the time it says, and compare: the signature covers this body and these headers.
    again = AWSRequest(method="POST", url=url, data=body, headers={"content-type": headers["Content-Type"]})
    again.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(creds.get_frozen_credentials(), "appsync", "eu-west-1")
    signer._modify_request_before_signing(again)
    signature = signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)
    assert authorization.endswith(f"Signature={signature}")
    assert json.loads(body) == {"channel": "/trading/alerts/acc-1", "events": ['{"type":"MARGIN_CALL"}']}


def test_the_layer_requirements_bring_every_package_the_handlers_import():
    """The layer was built from a hand-written list that missed prometheus_client (api.py imports metrics.py):
    every function failed to import, so no EA could connect and every REST call was a 500."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    probe = (
        "import sys; before = set(sys.modules); import tradewire.aws.handlers; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} - {m.split('.')[0] for m in before})))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    third_party = {
        dist
        for module in imported
        if module not in sys.stdlib_module_names and module != "tradewire" and not module.startswith("_")
        for dist in md.packages_distributions().get(module, [])
    }
    requirements = TEMPLATE.with_name("requirements.txt").read_text().splitlines()
    wanted = [Requirement(line).name for line in requirements if line.strip() and not line.startswith("#")]
    closure: set[str] = set()
    while wanted:
        name = wanted.pop()
        key = name.lower().replace("_", "-")
        if key in closure:
            continue
        closure.add(key)
        for spec in md.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                wanted.append(req.name)
    missing = {d for d in third_party if d.lower().replace("_", "-") not in closure}
    assert not missing, f"the handlers import {sorted(missing)}: add them to deploy/aws/requirements.txt"
    assert "tzdata" in closure  # the market hours' zones, where the image has no time-zone database


def test_the_dashboards_key_expires_when_the_deployer_says_not_after_appsyncs_seven_days():
    from cfnlint.decode import decode_str

    template, _ = decode_str(TEMPLATE.read_text())
    key = template["Resources"]["EventsApiKey"]["Properties"]
    assert key["Expires"] == {"Ref": "DashboardKeyExpires"}
    assert "Default" not in template["Parameters"]["DashboardKeyExpires"]  # a date: the deployer's to give


def test_settings_only_a_file_can_hold_reach_the_functions(tmp_path):
    """Per-account alert levels, market hours and symbol classes need TOML: the functions read environment
    variables only, so on AWS every account had the defaults (and setting one by variable failed every
    cold start). TRADEWIRE_CONFIG names a file shipped with them."""
    config = tmp_path / "tradewire.toml"
    config.write_text("[alerts.accounts.vip-1]\nmargin_call_level = 150\n")
    env = {"TRADEWIRE_STORE": "dynamodb://tw?region=us-east-1", "TRADEWIRE_CONFIG": str(config)}
    runtime = handlers.Runtime(env)
    try:
        assert runtime.settings.alerts.accounts["vip-1"].margin_call_level == 150
        assert handlers.Runtime({**env, "TRADEWIRE_CONFIG": ""}).settings.alerts.accounts == {}
    finally:
        runtime.loop.close()


def test_the_ea_stage_is_throttled_and_the_schedule_runs_alone():
    """Nothing bounded what EA frames could cost: one runaway token could take the account's Lambda
    concurrency, the schedule (the CONNECTION_LOST checks) included."""
    from cfnlint.decode import decode_str

    template, _ = decode_str(TEMPLATE.read_text())
    resources = template["Resources"]
    throttle = resources["EaStage"]["Properties"]["DefaultRouteSettings"]
    assert throttle == {
        "ThrottlingRateLimit": {"Ref": "EaThrottleRate"},
        "ThrottlingBurstLimit": {"Ref": "EaThrottleBurst"},
    }
    assert resources["ScheduleFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    assert template["Globals"]["Function"]["Environment"]["Variables"]["TRADEWIRE_CONFIG"] == {"Ref": "ConfigFile"}
