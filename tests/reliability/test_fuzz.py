"""Fuzzing: malformed and adversarial input never crashes the hub, always gets a named error, and never
affects another connection. Bounded here; TRADEWIRE_FUZZ_SCALE=N multiplies the input counts."""

import json
import os
import random
import string
from urllib.parse import quote

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradewire.ingest import protocol as ea_protocol
from tradewire.realtime import protocol as rt_protocol

from helpers import EA, Subscriber, account_state, hello, issue_key, issue_token, position, position_event

SCALE = int(os.environ.get("TRADEWIRE_FUZZ_SCALE", "1"))

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


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_ea_decoder_never_raises_and_names_every_refusal(frame):
    for item in ea_protocol.decode_frame(frame):
        if isinstance(item, ea_protocol.ErrorReply):
            assert item.code and item.message


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_realtime_decoder_never_raises_and_names_every_refusal(frame):
    msg = rt_protocol.decode(frame)
    if isinstance(msg, rt_protocol.ProtocolError):
        assert msg.error_type and msg.message and msg.encode()


# --- over real sockets ---------------------------------------------------------------------------
GOLDEN = [
    hello(),
    account_state(),
    {"type": "positions", "ts": 1, "positions": [position(1)]},
    {"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.2, "ts": 1}]},
    position_event(1),
    {"type": "subscribe", "id": "s", "channel": "/trading/*"},
    {"type": "publish", "id": "p", "channel": "/custom/a", "events": ["1"]},
]
WEIRD = [
    None,
    True,
    -1,
    0,
    2**63,
    -(2**64),
    1e308,
    "",
    "x" * 5000,
    "\u0000",
    "../../etc",
    [],
    {},
    [[[[[]]]]],
    "'; DROP TABLE ea_inbox; --",
    "NaN",
]


def mutate(rng: random.Random) -> str:
    """A golden message broken in one of the ways clients break them."""
    base = json.loads(json.dumps(rng.choice(GOLDEN)))
    kind = rng.randrange(7)
    if kind == 0:  # a field set to something weird
        base[rng.choice(list(base))] = rng.choice(WEIRD)
    elif kind == 1:  # a field removed
        base.pop(rng.choice(list(base)), None)
    elif kind == 2:  # deep nesting
        value: object = 1
        for _ in range(rng.randrange(10, 200)):
            value = [value]
        base[rng.choice(FIELDS)] = value
    elif kind == 3:  # truncated text
        text = json.dumps(base)
        return text[: rng.randrange(len(text))]
    elif kind == 4:  # random bytes in the middle
        text = json.dumps(base)
        at = rng.randrange(len(text))
        return text[:at] + "".join(rng.choice(string.printable) for _ in range(5)) + text[at:]
    elif kind == 5:  # a batch of mixed good and bad
        return json.dumps([base, rng.choice(WEIRD), rng.choice(GOLDEN)])
    else:
        base["type"] = rng.choice(["", "HELLO", "subscribe", "hello ", "ack", "welcome", rng.choice(WEIRD)])
    return json.dumps(base)


async def test_fuzzed_connections_never_hurt_the_server_or_a_clean_connection(server, http):
    rng = random.Random(20261124)
    token_fuzz, token_clean = await issue_token(server, "acc-fuzz"), await issue_token(server, "acc-clean")
    key = await issue_key(server, "admin")
    clean = await EA.connect(http, server, token_clean)
    await clean.greet()
    count = 300 * SCALE

    fuzz_ea = await EA.connect(http, server, token_fuzz)
    await fuzz_ea.greet()
    sub = await Subscriber.connect(http, server, key)
    for n in range(count):
        for conn in (fuzz_ea, sub):
            if conn.ws.closed:  # a frame over a limit may close it: that is an answer too; reconnect
                if conn is fuzz_ea:
                    fuzz_ea = conn = await EA.connect(http, server, token_fuzz)
                else:
                    sub = conn = await Subscriber.connect(http, server, key)
            await conn.ws.send_str(mutate(rng))
        if n % 50 == 0:  # the clean EA keeps working throughout
            await clean.send(position_event(n + 1, pid=n + 1))
            await clean.wait_ack(n + 1)

    # HTTP batch bodies and REST query parameters
    for _ in range(100 * SCALE):
        body = mutate(rng).encode()
        async with http.post(
            server.url + "/ea/v1/batch",
            data=body,
            headers={"Authorization": f"Bearer {token_fuzz}", "Content-Type": "application/json"},
        ) as r:
            assert r.status in (200, 400, 413, 429), r.status
            assert "error" in await r.json() or r.status == 200
        param = quote(str(rng.choice(WEIRD)))
        name = rng.choice(["account", "type", "from", "to", "limit", "cursor", "symbol", "state"])
        async with http.get(f"{server.url}/api/v1/events?{name}={param}", headers={"x-api-key": key}) as r:
            assert r.status in (200, 400), (name, param, r.status)
        async with http.get(f"{server.url}/api/v1/alerts?{name}={param}", headers={"x-api-key": key}) as r:
            assert r.status in (200, 400), (name, param, r.status)

    # still alive, still correct for everyone else
    async with http.get(server.url + "/api/v1/healthz") as r:
        assert r.status == 200
    await clean.send(position_event(100_000, pid=100_000))
    assert (await clean.wait_ack(100_000))["seq"] == 100_000
    assert not [m for m in clean.inbox if m["type"] == "error"]
    assert isinstance(fuzz_ea.ws, aiohttp.ClientWebSocketResponse)
