"""A fast, seeded, structure-aware mutation fuzzer for the hub's inputs.

Each input starts from a valid frame, body or query (built with tests/helpers.py) and is broken in the ways
clients break them: fields dropped, duplicated, renamed or retyped; extreme numbers (2^63, 1e308, a
5,000-digit integer); NaN-ish strings; huge and deeply nested values; then, as text, truncation, byte
flips, stray bytes and invalid UTF-8. Pure `random` with one seed: tens of thousands of inputs a second,
where hypothesis makes a hundred, and a failing input is made again by rerunning the seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from helpers import account_state, hello, position, position_event

# --- valid inputs, one list per target ------------------------------------------------------------
EA_MESSAGES = [
    hello(),
    hello(account="acc-fuzz", lastSeq=3),
    account_state(),
    {"type": "positions", "ts": 1, "positions": [position(1), position(2, side="sell", magic=7001)]},
    {"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.2, "ts": 1}]},
    {"type": "heartbeat", "ts": 1_700_000_000_000},
    position_event(1),
    position_event(2, "CLOSE", closePrice=1.1, profit=-3.5, reason="sl"),
    {"type": "error", "seq": 3, "id": "err-3", "code": "4756", "message": "trade failed", "severity": "CRITICAL"},
]
EA_FRAMES = [*EA_MESSAGES, [account_state(), position_event(4, "MODIFY")], [position_event(n) for n in range(5, 9)]]
RT_FRAMES = [
    {"type": "connection_init"},
    {"type": "connection_init", "payload": {"batch": True}},
    {"type": "subscribe", "id": "s1", "channel": "/trading/*"},
    {"type": "subscribe", "id": "s2", "channel": "/trading/events/acc-fuzz", "since": 0},
    {"type": "subscribe", "id": "s3", "channel": "/custom/a", "authorization": {"x-api-key": "twk_x_y"}},
    {"type": "unsubscribe", "id": "s1"},
    {"type": "publish", "id": "p1", "channel": "/custom/a", "events": ['{"a": 1}', '"text"', "[1, 2]"]},
]
BATCH_BODIES = [
    {"hello": hello(), "messages": [account_state(), position_event(1)]},
    {"hello": {k: v for k, v in hello(platform="MT4").items() if k != "type"}, "messages": []},
    {"messages": [{"type": "heartbeat", "ts": 1}, position_event(2, "CLOSE")]},
]
PUBLISH_BODIES = [
    {"channel": "/custom/a", "events": ['{"a": 1}']},
    {"channel": "custom/b/c/", "events": ["1", '"two"', '{"three": [3]}']},
]
EVENT_QUERY = {"account": "acc-fuzz", "type": "OPEN", "from": "0", "to": "1700000000000", "limit": "10", "cursor": "5"}
QUERIES = [  # REST path (under /api/v1/) and query parameters
    ("events", EVENT_QUERY),
    ("system-trades", EVENT_QUERY),
    (
        "alerts",
        {"state": "open", "type": "MARGIN_CALL", "account": "acc-clean", "from": "1", "to": "2", "limit": "1000"},
    ),
    ("positions", {"account": "acc-clean", "symbol": "EURUSD"}),
    ("accounts/acc-clean/equity", {"from": "1700000000000"}),
]
QUERY_NAMES = ["account", "type", "from", "to", "limit", "cursor", "symbol", "state"]

# --- what a field may be set to -------------------------------------------------------------------
WEIRD = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    -(2**64),
    1e308,
    -1e308,
    5e-324,
    -0.0,
    0.1,
    "",
    " ",
    "x" * 5000,
    "\u0000",
    "x\u0000",
    "s1\n",  # a trailing newline: what a `$`-anchored pattern lets through
    "acc-fuzz\n",
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "1e999",
    "9223372036854775808",
    "../../etc",
    "'; DROP TABLE ea_inbox; --",
    "/trading/*",
    "*",
    "\U0001f642",
    "\u202e",
    "\ufeff",
    "OPEN",
    "buy",
    "hello",
    [],
    {},
    [1, 2],
    {"a": None},
    [[[[[]]]]],
]
# Number and string spellings json.dumps never writes: they go into the text as they are.
RAW_TOKENS = [
    "1" * 5000,
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.0e-400",
    "00012",
    "+1",
    "0x10",
    ".5",
    "1.",
    "-",
    "-0",
    "99999999999999999999",
    '"\\ud800"',
    '"\\udc00x"',
    '"\\u00"',
    '"\\x41"',
    '"a\tb"',
    '"\\u0000"',
    "tru",
    "nul",
    "[1,]",
    '{"a":1,}',
    "{,}",
    "// comment",
]
TYPE_NAMES = ["", "HELLO", "hello ", "ack", "welcome", "batch", "data", "ka", "connection_ack", "subscribe", "position"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80", b"\xf0\x9f"]


class _RawText:
    """A value serialised as the text it holds, not as JSON: deep nesting, bad numbers, bad escapes."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _nested(rng: random.Random) -> _RawText:
    depth = rng.choice([50, 200, 900, 1_000, 2_000, 10_000]) if rng.random() < 0.95 else 200_000
    if rng.random() < 0.5:
        return _RawText("[" * depth + "1" + "]" * depth)
    return _RawText('{"a":' * depth + "null" + "}" * depth)


def _huge(rng: random.Random) -> object:
    """Long or wide; one in ten is over the 1 MiB frame limit."""
    over = rng.random() < 0.1
    kind = rng.randrange(3)
    if kind == 0:
        return "y" * (1_100_000 if over else 20_000)
    if kind == 1:
        return _RawText("[" + ",".join(["0"] * (600_000 if over else 5_000)) + "]")
    return _RawText("{" + ",".join(f'"k{n}":{n}' for n in range(100_000 if over else 1_000)) + "}")


def _containers(value: object, out: list) -> list:
    """Every dict and list inside value (value first)."""
    if isinstance(value, dict | list):
        out.append(value)
        for child in value.values() if isinstance(value, dict) else value:
            _containers(child, out)
    return out


def _weird(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.65:
        value = rng.choice(WEIRD)
        return json.loads(json.dumps(value)) if isinstance(value, list | dict) else value  # a copy to change
    if roll < 0.85:
        return _RawText(rng.choice(RAW_TOKENS))
    if roll < 0.92:
        return _nested(rng)
    if roll < 0.93:
        return _huge(rng)
    return _dumps(_weird(rng))  # a JSON value inside a string, as AppSync events are


def _mutate_tree(rng: random.Random, root: object) -> object:
    """One structural change somewhere inside root; returns the (possibly new) root."""
    nodes = _containers(root, [])
    if not nodes or rng.random() < 0.05:  # the whole value replaced, or wrapped
        return rng.choice([[root], [root, _weird(rng)], {"type": "batch", "items": [root]}, _weird(rng)])
    node = rng.choice(nodes)
    if isinstance(node, list):
        if not node:
            node.append(_weird(rng))
            return root
        at = rng.randrange(len(node))
        kind = rng.randrange(4)
        if kind == 0:
            node[at] = _weird(rng)
        elif kind == 1:
            del node[at]
        elif kind == 2:  # repeated, as text: copies shared in the tree would multiply later changes
            text = _dumps(node[at])
            node[at] = _RawText(",".join([text] * (rng.choice([2, 3, 100]) if len(text) < 1000 else 2)))
        else:
            node.insert(at, _weird(rng))
        return root
    if not node:
        node[rng.choice(["type", "id", "seq", "x"])] = _weird(rng)
        return root
    key = rng.choice(list(node))
    kind = rng.randrange(8)
    if kind <= 2:  # retyped
        node[key] = _weird(rng)
    elif kind == 3:  # dropped
        del node[key]
    elif kind == 4:  # renamed
        node[rng.choice([key.upper(), key + " ", "", key[:-1], "__proto__"])] = node.pop(key)
    elif kind == 5:  # a message type swapped
        node["type"] = rng.choice([*TYPE_NAMES, rng.choice(EA_MESSAGES)["type"], rng.choice(RT_FRAMES)["type"]])
    elif kind == 6:  # a value moved into another field (a list where a number goes, ...)
        other = rng.choice(list(node))
        node[key], node[other] = node[other], node[key]
    else:  # a field that is not in the schema
        node[rng.choice(["extra", "account", "since", "authorization", "payload"])] = _weird(rng)
    return root


def _dumps(value: object) -> str:
    raws: list[str] = []

    def default(obj: object) -> str:
        if isinstance(obj, _RawText):
            raws.append(obj.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        raise TypeError(type(obj))

    text = json.dumps(value, default=default, ensure_ascii=False)
    for n, raw in enumerate(raws):
        text = text.replace(f'"\\u0000RAW{n}\\u0000"', raw, 1)
    return text


def _mutate_text(rng: random.Random, data: bytes) -> bytes:
    """One change to the serialised form."""
    if not data:
        return rng.choice(BAD_UTF8)
    at = rng.randrange(len(data))
    kind = rng.randrange(9)
    if kind == 0:  # truncated
        return data[:at]
    if kind == 1:  # bits flipped
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == 2:  # invalid UTF-8, inside a string or anywhere
        quote_at = data.find(b'"', at)
        at = quote_at + 1 if quote_at >= 0 and rng.random() < 0.7 else at
        return data[:at] + rng.choice(BAD_UTF8) + data[at:]
    if kind == 3:  # stray bytes
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) + data[at:]
    if kind == 4:  # a span deleted
        return data[:at] + data[at + rng.randrange(1, 20) :]
    if kind == 5:  # a key duplicated with another value (the last one wins in most parsers)
        brace = data.find(b"{", at) if data.find(b"{", at) >= 0 else data.find(b"{")
        if brace < 0:
            return data + b"}"
        key = rng.choice(["type", "id", "seq", "ts", "channel", "events", "hello", "messages", "position", "positions"])
        extra = f'"{key}":{_dumps(_weird(rng))},'.encode()
        return data[: brace + 1] + extra + data[brace + 1 :]
    if kind == 6:  # wrapped: BOM, whitespace, trailing garbage
        return rng.choice([b"\xef\xbb\xbf", b" \n\t", b""]) + data + rng.choice([b"", b"}", b",", b"\x00", b" []"])
    if kind == 7:  # two inputs run together
        return data[:at] + data
    return data.replace(b'"', b"'", 1) if rng.random() < 0.5 else data.upper()


def mutate(rng: random.Random, seeds: list[str]) -> bytes:
    """A seed (JSON text) broken by 0-3 structural changes and 0-2 textual ones (never zero of both)."""
    value = json.loads(rng.choice(seeds))
    tree_changes = rng.choice([0, 1, 1, 1, 2, 3])
    for _ in range(tree_changes):
        value = _mutate_tree(rng, value)
    data = _dumps(value).encode("utf-8", "surrogatepass")
    text_changes = rng.choice([0, 0, 1, 2]) if tree_changes else rng.choice([1, 2])
    for _ in range(text_changes):
        data = _mutate_text(rng, data)
    return data


QUERY_VALUES = [
    "",
    "-1",
    "0",
    "1",
    "1000",
    "1001",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775809",
    "1" * 5000,
    "1e3",
    "1.5",
    " 5",
    "5 ",
    "0x10",
    "1_000",
    "\uff11\uff12",  # fullwidth digits: int() reads them
    "\u0663",
    "NaN",
    "inf",
    "OPEN",
    "open",
    "resolved",
    "MARGIN_CALL",
    "acc-fuzz",
    "-acc",
    "a" * 51,
    "x" * 3000,
    "\u0000",
    "%",
    "%zz",
    "'; DROP TABLE events; --",
    "../..",
    "\U0001f642",
]


def mutate_query(rng: random.Random) -> str:
    """A REST path and query string: valid parameters, some retyped, repeated, dropped, unknown, or sent to
    another path; percent-encoded."""
    path, params = rng.choice(QUERIES)
    path, params = rng.choice(QUERIES)[0] if rng.random() < 0.1 else path, list(params.items())
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(5)
        at = rng.randrange(len(params)) if params else 0
        if kind <= 1 and params:  # a value replaced
            params[at] = (params[at][0], rng.choice(QUERY_VALUES))
        elif kind == 2 and params:  # dropped
            del params[at]
        elif kind == 3:  # repeated with another value
            params.append((rng.choice(QUERY_NAMES), rng.choice(QUERY_VALUES)))
        else:  # unknown, or no value at all
            params.append((rng.choice(["x", "", "limit[]", "LIMIT"]), rng.choice(QUERY_VALUES)))
    parts = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params]
    if rng.random() < 0.2:  # raw: a bare name, a bad escape, an escape of invalid UTF-8
        parts.insert(
            rng.randrange(len(parts) + 1), rng.choice(["limit", "from=%", "to=%zz", "account=%ff%fe", "&", "="])
        )
    return f"{path}?{'&'.join(parts)}"


@dataclass(frozen=True)
class Target:
    """One kind of input: how to make one from a seeded generator."""

    name: str
    make: Callable[[random.Random], bytes | str]


def _mutator(seeds: list) -> Callable[[random.Random], bytes]:
    texts = [json.dumps(seed) for seed in seeds]
    return lambda rng: mutate(rng, texts)


TARGETS = {
    "ea_frame": Target("ea_frame", _mutator(EA_FRAMES)),
    "realtime_frame": Target("realtime_frame", _mutator(RT_FRAMES)),
    "batch_body": Target("batch_body", _mutator(BATCH_BODIES)),
    "publish_body": Target("publish_body", _mutator(PUBLISH_BODIES)),
    "rest_query": Target("rest_query", mutate_query),
}
