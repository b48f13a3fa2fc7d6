"""Fuzzing: malformed and adversarial input never crashes or hangs the hub, always gets a named error, keeps
memory bounded and never affects another connection.

One knob, TRADEWIRE_FUZZ_SCALE (1, the default, is the bounded run in `make test`), multiplies:
- the mutation fuzzer (mutations.py) in-process, straight into the code that reads each kind of input:
  1,000 x SCALE inputs for each of five targets (EA frames, realtime frames, `POST /ea/v1/batch` bodies,
  `POST /event` bodies, REST query strings);
- the same mutations over real sockets to a real hub: 10 x SCALE rounds of 100 inputs, each round ended by
  a sentinel whose answer proves every input before it was read, and a clean EA and a clean subscriber
  checked; the process's RSS sampled throughout;
- hypothesis over the two decoders, 300 x SCALE examples up to 3,000 (it makes ~100 inputs a second: it
  explores shapes, the mutation fuzzer carries the volume).
`make test-reliability FUZZ_SCALE=1000` is the full run, over six million inputs (docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import time
import traceback
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tradewire import api, channels
from tradewire.ingest import http as ingest_http
from tradewire.ingest import protocol as ea_protocol
from tradewire.ingest import session
from tradewire.malloc import fix_mmap_threshold
from tradewire.realtime import http as realtime_http
from tradewire.realtime import protocol as rt_protocol
from tradewire.realtime.outbox import data_prefix

from .mutations import TARGETS
from .soak import rss_kib
from conftest import make_settings
from helpers import EA, Subscriber, issue_key, issue_token, position_event, running

SCALE = int(os.environ.get("TRADEWIRE_FUZZ_SCALE", "1"))
SEED = 20261124
IN_PROCESS_INPUTS = 1_000 * SCALE
SOCKET_ROUNDS = 10 * SCALE
PER_ROUND = {"ea_frame": 40, "realtime_frame": 40, "batch_body": 4, "publish_body": 4, "rest_query": 12}
HYPOTHESIS_EXAMPLES = min(300 * SCALE, 3_000)
HANG_S = 30.0  # an input not answered by then is a hang

# --- hypothesis over the decoders -----------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = [
    "type",
    "id",
    "seq",
    "ts",
    "event",
    "position",
    "ticks",
    "positions",
    "account",
    "channel",
    "events",
    "balance",
    "equity",
    "margin",
    "symbol",
    "bid",
    "ask",
    "volume",
    "side",
    "openPrice",
    "openTime",
]
message_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
frames = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    message_like.map(json.dumps),
    st.lists(message_like, max_size=5).map(json.dumps),
)


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_ea_decoder_never_raises_and_names_every_refusal(frame):
    for item in ea_protocol.decode_frame(frame):
        if isinstance(item, ea_protocol.ErrorReply):
            assert item.code and item.message


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_realtime_decoder_never_raises_and_names_every_refusal(frame):
    msg = rt_protocol.decode(frame)
    if isinstance(msg, rt_protocol.ProtocolError):
        assert msg.error_type and msg.message and msg.encode()


# --- the mutation fuzzer, in-process --------------------------------------------------------------
EA_REFUSALS = {
    ea_protocol.BAD_JSON,
    ea_protocol.INVALID_MESSAGE,
    ea_protocol.UNKNOWN_TYPE,
    ea_protocol.HELLO_REQUIRED,
    ea_protocol.WRONG_ACCOUNT,
}
RT_ERROR_TYPES = {
    rt_protocol.BAD_REQUEST,
    rt_protocol.UNAUTHORIZED,
    rt_protocol.UNKNOWN_OPERATION,
    rt_protocol.UNSUPPORTED,
    rt_protocol.LIMIT_EXCEEDED,
}


def judge_steps(steps: list[session.Step]) -> str:
    """Each refusal named; each accepted message goes through what the hub does with it next."""
    outcome = "accepted"
    for step in steps:
        if isinstance(step, session.Reply):
            assert step.msg.code in EA_REFUSALS and step.msg.message, step.msg
            ea_protocol.encode(step.msg)
            outcome = step.msg.code if outcome == "accepted" else outcome
        elif isinstance(step, session.Greet):
            session.account_info(step.hello)
        else:
            encoded = ea_protocol.encode(step.msg)  # republished and stored as JSON
            if isinstance(step.msg, ea_protocol.DurableMsg):
                # Stored by every engine alike: PostgreSQL's text takes no NUL (its row would fail at
                # commit, the EA resending it forever), so none gets this far. (The text "\u0000" may.)
                assert not _holds_nul(json.loads(encoded)), encoded
            if isinstance(step.msg, ea_protocol.AccountMsg):
                session.account_state(step.msg)
    return outcome


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def judge_ea_frame(data: bytes) -> str:
    return judge_steps(session.SessionCore("acc-fuzz", greeted=len(data) % 2 == 0).receive(data))


def judge_batch_body(data: bytes) -> str:
    try:
        hello, items = ingest_http.decode_body(data)
    except ingest_http.BadBody as exc:
        assert exc.code in (ea_protocol.BAD_JSON, ea_protocol.INVALID_MESSAGE) and str(exc), exc
        return exc.code
    core = session.SessionCore("acc-fuzz")
    return judge_steps((core.steps([hello]) if hello is not None else []) + core.steps(items))


def judge_channel(channel: str, wildcard: bool) -> str:
    try:
        channels.normalise(channel, wildcard=wildcard)
    except channels.ChannelError as exc:
        assert str(exc)
        return "bad_channel"
    return "accepted"


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def judge_events(events: list[str]) -> str:
    problem = rt_protocol.validate_events(events)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return "bad_events"
    for event in events:  # what is accepted is JSON that every subscriber can parse: no NaN, no Infinity
        json.loads(event, parse_constant=_no_constant)
    return "accepted"


def judge_realtime_frame(data: bytes) -> str:
    msg = rt_protocol.decode(data)
    if isinstance(msg, rt_protocol.ProtocolError):
        assert msg.error_type in RT_ERROR_TYPES and msg.message, msg
        msg.encode()
        return msg.error_type
    if isinstance(msg, rt_protocol.ConnectionInit | rt_protocol.Unsubscribe):
        return "accepted"
    if isinstance(msg, rt_protocol.Subscribe):  # its id goes into every data frame as it is: they must parse
        assert json.loads(data_prefix(msg.id.encode()) + b'"e"}')["id"] == msg.id, msg.id
    rt_protocol.api_key_of(msg.authorization)
    outcome = judge_channel(msg.channel, wildcard=isinstance(msg, rt_protocol.Subscribe))
    return judge_events(msg.events) if isinstance(msg, rt_protocol.Publish) and outcome == "accepted" else outcome


def judge_publish_body(data: bytes) -> str:
    """What `POST /event` does with a body before the gateway (realtime/http.py: post_event)."""
    try:
        body = realtime_http._body.decode(data)
    except (msgspec.DecodeError, *rt_protocol.UNDECODABLE):
        return rt_protocol.BAD_REQUEST
    outcome = judge_channel(body.channel, wildcard=False)
    return judge_events(body.events) if outcome == "accepted" else outcome


REST_READERS = {  # what reads the query parameters of each REST path
    "events": api._event_query,
    "system-trades": api._event_query,
    "alerts": api._alert_query,
    "positions": api._account_param,
    "accounts/acc-clean/equity": lambda request: api._int_param(request, "from"),
}


def judge_rest_query(path_query: str) -> str:
    """The path's reader of query parameters, on the query as aiohttp parses it."""
    path, _, query = path_query.partition("?")
    try:
        REST_READERS[path](SimpleNamespace(query=URL.build(path="/", query_string=query, encoded=True).query))
    except api.BadParam as exc:
        assert str(exc)
        return str(exc).split(":")[0]  # "query parameter 'limit'"
    return "accepted"


JUDGES: dict[str, Callable[..., str]] = {
    "ea_frame": judge_ea_frame,
    "realtime_frame": judge_realtime_frame,
    "batch_body": judge_batch_body,
    "publish_body": judge_publish_body,
    "rest_query": judge_rest_query,
}


def fuzz_in_process(target: str, count: int, seed: int) -> tuple[collections.Counter, dict]:
    """Outcomes by name, and the failures: an exception or an unnamed refusal, first input of each kind."""
    rng, make, judge = random.Random(seed), TARGETS[target].make, JUDGES[target]
    outcomes: collections.Counter = collections.Counter()
    failures: dict[str, tuple] = {}
    for n in range(count):
        data = make(rng)
        try:
            outcomes[judge(data)] += 1
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            kind = f"{type(exc).__name__} at {where.filename}:{where.lineno}: {str(exc)[:200]}"
            failures.setdefault(kind, (f"input #{n}", len(data), data[:300]))
    return outcomes, failures


# --- the mutation fuzzer over real sockets --------------------------------------------------------
EA_CODES_ON_SOCKET = EA_REFUSALS | {
    ea_protocol.DUPLICATE_ID,
    ea_protocol.SEQ_NOT_INCREASING,
    ea_protocol.TOO_MANY_SYMBOLS,
    ea_protocol.TOO_MANY_POSITIONS,
}
RT_FRAME_TYPES = {"connection_ack", "ka", "subscribe_success", "unsubscribe_success", "publish_success", "data"}
TOO_BIG = aiohttp.WSCloseCode.MESSAGE_TOO_BIG  # 1009: a frame over the limit is refused by closing


def check_ea_reply(msg: dict) -> bool:
    """A named answer from the EA endpoint; True for the sentinel's."""
    if msg["type"] == "error":
        assert msg["code"] in EA_CODES_ON_SOCKET and msg["message"], msg
        return str(msg.get("ref", "")).startswith("sentinel-")
    assert msg["type"] in ("welcome", "ack"), msg
    return False


def check_realtime_reply(msg: dict) -> bool:
    found = False
    for item in msg["items"] if msg.get("type") == "batch" else [msg]:
        if item["type"].endswith("error"):
            assert item["errors"] and all(e["errorType"] and e["message"] for e in item["errors"]), item
            found = found or str(item.get("id", "")).startswith("sentinel-")
        else:
            assert item["type"] in RT_FRAME_TYPES, item
    return found


class FuzzSocket:
    """A WebSocket that takes a round of fuzzed frames, then a sentinel: its answer proves every frame before it
    was read and answered, each answer named. A close (a frame over the limit) is an answer too: reconnect."""

    def __init__(self, connect: Callable, sentinel: Callable[[int], str], check: Callable[[dict], bool]) -> None:
        self.connect, self.sentinel, self.check = connect, sentinel, check
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closes: collections.Counter = collections.Counter()
        self.sent = self.replies = 0

    async def round(self, inputs: list[bytes], n: int, rng: random.Random) -> list[int | None]:
        """Unexpected close codes (a close with no code is None)."""
        if self.ws is None or self.ws.closed:
            self.ws = await self.connect()
        for data in inputs:
            if self.ws.closed:
                break
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = None
            try:
                if text is None or rng.random() < 0.2:  # a fifth of the text as binary frames: JSON either way
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except ConnectionError:
                break
            self.sent += 1
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(self.sentinel(n))
        while True:
            try:
                msg = await self.ws.receive(timeout=HANG_S)
            except TimeoutError:
                raise AssertionError(f"round {n}: no answer within {HANG_S} s: a hang") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.replies += 1
                if self.check(json.loads(msg.data)):
                    return []
                continue
            self.closes[self.ws.close_code] += 1
            return [] if self.ws.close_code == TOO_BIG else [self.ws.close_code]


async def check_http(http: aiohttp.ClientSession, method: str, url: URL | str, **kw) -> int:
    """The status of a named answer."""
    async with http.request(method, url, **kw) as r:
        if r.content_type != "application/json":  # aiohttp's own answer to a body or a URL over its limits
            assert r.status in (400, 413, 414), (r.status, await r.text())
            return r.status
        body = await r.json()
    if r.status == 200:
        for error in body.get("errors", []) if "ackedSeq" in body else []:  # POST /ea/v1/batch
            assert error["code"] in EA_CODES_ON_SOCKET and error["message"], error
        return r.status
    if "errors" in body:  # AppSync's shape (POST /event); 413 for a body over the limit, as test_realtime asserts
        assert r.status in (400, 403, 413) and all(e["errorType"] and e["message"] for e in body["errors"]), body
    else:
        assert r.status in (400, 413, 429) and body["error"]["code"] and body["error"]["message"], (r.status, body)
    return r.status


@pytest.fixture
async def unthrottled(tmp_path):
    """A hub whose subscriber connections and API key may go as fast as they like: the fuzzer sends 100
    frames a round down one connection and its REST queries with one key, and what it tests is what each
    input gets, not the rate (test_limits.py)."""
    settings = make_settings(tmp_path)
    settings.realtime.messages_per_s = 1e9
    settings.limits.requests_per_s = 1e9  # and its REST queries all go through one key
    async with running(settings) as srv:
        yield srv


async def test_fuzzed_connections_never_hurt_the_server_or_a_clean_connection(unthrottled, http):
    server = unthrottled
    fix_mmap_threshold()  # as `tradewire serve` does: the memory bound below is the served hub's
    rng = random.Random(SEED)
    token_fuzz, token_clean = await issue_token(server, "acc-fuzz"), await issue_token(server, "acc-clean")
    key = await issue_key(server, "admin")
    ea_url = server.url.replace("http", "ws", 1) + "/ea/v1"
    clean = await EA.connect(http, server, token_clean)
    await clean.greet()
    clean_sub = await Subscriber.connect(http, server, key)
    await clean_sub.subscribe("clean", "/trading/events/acc-clean")

    async def connect_ea() -> aiohttp.ClientWebSocketResponse:
        return await http.ws_connect(ea_url, headers={"Authorization": f"Bearer {token_fuzz}"})

    async def connect_subscriber() -> aiohttp.ClientWebSocketResponse:
        return (await Subscriber.connect(http, server, key)).ws

    fuzz_ea = FuzzSocket(connect_ea, lambda n: json.dumps({"type": "sentinel", "id": f"sentinel-{n}"}), check_ea_reply)
    fuzz_sub = FuzzSocket(
        connect_subscriber, lambda n: json.dumps({"type": "unsubscribe", "id": f"sentinel-{n}"}), check_realtime_reply
    )
    batch_headers = {"Authorization": f"Bearer {token_fuzz}", "Content-Type": "application/json"}
    key_headers = {"x-api-key": key}
    statuses: collections.Counter = collections.Counter()
    unexpected: list[tuple] = []
    worst_clean_s = 0.0
    rss = [rss_kib(os.getpid())]
    started = time.perf_counter()

    for n in range(SOCKET_ROUNDS):
        inputs = {name: [TARGETS[name].make(rng) for _ in range(count)] for name, count in PER_ROUND.items()}
        requests = [
            *(
                check_http(http, "POST", server.url + "/ea/v1/batch", data=d, headers=batch_headers)
                for d in inputs["batch_body"]
            ),
            *(
                check_http(http, "POST", server.url + "/event", data=d, headers=key_headers)
                for d in inputs["publish_body"]
            ),
            *(
                check_http(http, "GET", URL(f"{server.url}/api/v1/{q}", encoded=True), headers=key_headers)
                for q in inputs["rest_query"]
            ),
        ]
        ea_closes, sub_closes, *codes = await asyncio.gather(
            fuzz_ea.round(inputs["ea_frame"], n, rng), fuzz_sub.round(inputs["realtime_frame"], n, rng), *requests
        )
        statuses.update(codes)
        if ea_closes or sub_closes:
            unexpected.append((n, ea_closes, sub_closes))

        # the clean EA and the clean subscriber are unaffected, round after round
        t0 = time.perf_counter()
        pid = n // 2 + 1  # opened, then closed: the clean account's state stays the same size
        await clean.send(position_event(n + 1, "CLOSE" if n % 2 else "OPEN", pid=pid))
        await clean.wait_ack(n + 1, timeout=HANG_S)
        event = await clean_sub.event(seq=n + 1, timeout=HANG_S)
        assert event["account"] == "acc-clean" and event["positionId"] == pid
        assert not [m for m in clean.inbox if m["type"] == "error"], clean.inbox
        worst_clean_s = max(worst_clean_s, time.perf_counter() - t0)
        clean.inbox.clear()
        clean_sub.inbox.clear()
        clean_sub.taken.clear()
        rss.append(rss_kib(os.getpid()))

    elapsed = time.perf_counter() - started
    sent = {"ea_frame": fuzz_ea.sent, "realtime_frame": fuzz_sub.sent}
    sent |= {name: PER_ROUND[name] * SOCKET_ROUNDS for name in ("batch_body", "publish_body", "rest_query")}
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 10))]  # after a tenth of the run: caches and pools filled
    print(
        f"\nfuzz sockets: {sum(sent.values()):,} inputs {dict(sent)} in {elapsed:.1f} s; "
        f"EA replies {fuzz_ea.replies:,}, closes {dict(fuzz_ea.closes)}; subscriber replies {fuzz_sub.replies:,}, "
        f"closes {dict(fuzz_sub.closes)}; HTTP {dict(statuses)}; "
        f"clean round trip worst {worst_clean_s * 1000:.0f} ms; "
        f"RSS MiB start {rss[0] / 1024:.1f}, warm {warm / 1024:.1f}, "
        f"by quarter {[round(rss[len(rss) * q // 4 - 1] / 1024, 1) for q in (1, 2, 3, 4)]}, max {max(rss) / 1024:.1f}"
    )
    assert not unexpected, unexpected
    assert rss[-1] - warm < 32 * 1024, rss  # bounded: no growth with the number of inputs

    # still alive, still correct for everyone else, and the fuzzing account can still work normally
    async with http.get(server.url + "/api/v1/healthz") as r:
        assert r.status == 200
    await clean.send(position_event(1_000_000, pid=1_000_000))
    assert (await clean.wait_ack(1_000_000))["seq"] == 1_000_000
    fresh = await EA.connect(http, server, token_fuzz)
    assert (await fresh.greet())["type"] == "welcome"


# After the run over sockets, whose RSS figures its big inputs would raise first (a file runs in order).
@pytest.mark.parametrize("target", list(JUDGES))
def test_mutated_inputs_are_each_accepted_or_refused_by_name(target):
    started = time.perf_counter()
    outcomes, failures = fuzz_in_process(target, IN_PROCESS_INPUTS, SEED)
    elapsed = time.perf_counter() - started
    print(
        f"\nfuzz in-process {target}: {IN_PROCESS_INPUTS:,} inputs in {elapsed:.1f} s: {dict(outcomes.most_common())}"
    )
    assert not failures, failures
    # The mutations get past the JSON parser: inputs are accepted, and refused for several different reasons.
    assert outcomes["accepted"] > 0 and len(outcomes) >= 3, outcomes


# --- regression tests for what the fuzzer found ---------------------------------------------------
DEEP = "[" * 5_000 + "]" * 5_000


@pytest.mark.parametrize(
    "frame",
    [DEEP, '{"type": "heartbeat", "x": ' + DEEP + "}", "[" + json.dumps(position_event(1)) + ", " + DEEP + "]"],
    ids=["deep frame", "deep field", "deep item"],
)
def test_ea_decoder_names_a_frame_nested_too_deeply(frame):
    replies = [m for m in ea_protocol.decode_frame(frame) if isinstance(m, ea_protocol.ErrorReply)]
    assert [r.code for r in replies] == [ea_protocol.BAD_JSON] and "nested too deeply" in replies[0].message


def test_ea_decoder_names_invalid_utf8_in_a_binary_frame():
    frame = (
        json.dumps(position_event(1, msg_id="open-X"))
        .replace("open-X", "open-\udcff")
        .encode("utf-8", "surrogateescape")
    )
    (reply,) = ea_protocol.decode_frame(frame)
    assert isinstance(reply, ea_protocol.ErrorReply) and reply.code == ea_protocol.BAD_JSON
    assert "UTF-8" in reply.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [' + DEEP.encode() + b"]}",
        b'{"hello": {"type": "hello", "server": "\xff"}, "messages": []}',
        b'{"messages": [{"type": "heartbeat", "account": "\xc0\x80"}]}',
    ],
    ids=["deep", "bad UTF-8 in hello", "bad UTF-8 in a message"],
)
def test_batch_body_nested_too_deeply_or_not_utf8_is_refused_by_name(body):
    try:
        _, items = ingest_http.decode_body(body)
    except ingest_http.BadBody as exc:
        assert exc.code == ea_protocol.BAD_JSON
    else:
        assert [(i.code, i.index) for i in items] == [(ea_protocol.BAD_JSON, None)]


async def test_ea_session_answers_a_deep_or_bad_utf8_frame_and_carries_on(server, http):
    token = await issue_token(server, "acc-1")
    ea = await EA.connect(http, server, token)
    await ea.greet()
    await ea.send(DEEP)
    assert (await ea.expect("error"))["code"] == ea_protocol.BAD_JSON
    await ea.ws.send_bytes(b'{"type": "heartbeat", "account": "\xff"}')
    assert (await ea.expect("error"))["code"] == ea_protocol.BAD_JSON
    await ea.send(position_event(1))
    assert (await ea.wait_ack(1))["seq"] == 1
    async with http.post(
        server.url + "/ea/v1/batch",
        data=b'{"messages": [' + DEEP.encode() + b"]}",
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == ea_protocol.BAD_JSON


@pytest.mark.parametrize(
    "body",
    [
        b'{"channel": "/custom/a", "events": ["1"], "x": ' + DEEP.encode() + b"}",
        b'{"channel": "/custom/\xff", "events": []}',
    ],
    ids=["deep", "bad UTF-8"],
)
async def test_post_event_body_nested_too_deeply_or_not_utf8_is_refused_by_name(server, http, body):
    key = await issue_key(server, "admin")
    async with http.post(server.url + "/event", data=body, headers={"x-api-key": key}) as r:
        assert r.status == 400 and (await r.json())["errors"][0]["errorType"] == rt_protocol.BAD_REQUEST
