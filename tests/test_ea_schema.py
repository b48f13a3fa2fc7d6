"""The MQL EAs against the hub's protocol schema.

MQL cannot be compiled here, so the sources are read instead. They build JSON only through
CJsonWriter (ea/mt5/Include/Tradewire/Json.mqh, and its copy inside the MT4 EA), whose calls name
every message, nested object and field with a string literal:

    w.BeginMessage("account")        a protocol message (writes its "type")
    w.BeginObject("Position")        a nested protocol struct: Position, Tick, EAInfo, BatchBody
    w.Money("freeMargin", ...)       a field of the innermost open object
    w.EndObject()

The checker walks those calls in source order and holds each program (MT5: the .mq5 and its .mqh
files; MT4: the .mq4) to the msgspec structs in tradewire.ingest.protocol / tradewire.model: every
message type exists, every field written exists (the hub would ignore an unknown one), every required
field is written, and field names are literals. A protocol change that leaves an EA behind fails here.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from tradewire.ingest import protocol as p
from tradewire.ingest.http import BatchBody
from tradewire.model import Position, Tick

ROOT = Path(__file__).resolve().parent.parent
EA = ROOT / "ea"
FIXTURES = Path(__file__).parent / "fixtures" / "protocol"

MESSAGES: dict[str, type[msgspec.Struct]] = {
    cls.__struct_config__.tag: cls
    for cls in (p.Hello, p.AccountMsg, p.PositionsMsg, p.TicksMsg, p.HeartbeatMsg, p.PositionMsg, p.ErrorMsg)
}
STRUCTS: dict[str, type[msgspec.Struct]] = {
    "Position": Position,
    "Tick": Tick,
    "EAInfo": p.EAInfo,
    "BatchBody": BatchBody,
}
# What each EA must send: MT4 posts over HTTP, where every POST is a heartbeat, so it sends none.
EXPECTED = {
    "mt5": set(MESSAGES) | {"Position", "Tick", "EAInfo"},
    "mt4": (set(MESSAGES) - {"heartbeat"}) | {"Position", "Tick", "EAInfo", "BatchBody"},
}

SCOPE_CALLS = ("BeginMessage", "BeginObject")
FIELD_CALLS = ("Key", "Str", "Int", "Num", "Price", "Qty", "Money", "Null", "Raw", "BeginArray")
CALL_RE = re.compile(r"\.\s*(BeginMessage|BeginObject|EndObject|" + "|".join(FIELD_CALLS) + r")\s*\(\s*([^,)]*)")
LITERAL_RE = re.compile(r'^"([A-Za-z_][A-Za-z0-9_]*)"$')


def fields_of(cls: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    """(every field name, the required ones) as they appear on the wire."""
    info = msgspec.structs.fields(cls)
    return {f.encode_name for f in info}, {f.encode_name for f in info if f.required}


def scan(source: str) -> tuple[str, list[tuple[int, int]]]:
    """MQL (C-like) source without // and /* */ comments (line breaks kept), and the spans of its
    string and char literals in that text."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    size = 0
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in "\"'":
            j = i + 1
            while j < n and source[j] != c:
                j += 2 if source[j] == "\\" else 1
            out.append(source[i : j + 1])
            spans.append((size, size + j + 1 - i))
            size += j + 1 - i
            i = j + 1
        elif source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
        elif source.startswith("/*", i):
            j = source.find("*/", i + 2)
            end = n if j < 0 else j + 2
            out.append("\n" * source.count("\n", i, end))
            size += source.count("\n", i, end)
            i = end
        else:
            out.append(c)
            size += 1
            i += 1
    return "".join(out), spans


def strip_comments(source: str) -> str:
    return scan(source)[0]


@dataclass
class Written:
    """What a program writes: scope name -> field names, and where each came from."""

    fields: dict[str, set[str]] = field(default_factory=dict)
    where: dict[tuple[str, str], str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def extract(sources: dict[str, str]) -> Written:
    written = Written()
    for name, source in sources.items():
        text, spans = scan(source)
        starts = [a for a, _ in spans]
        stack: list[str] = []
        for match in CALL_RE.finditer(text):
            k = bisect.bisect_right(starts, match.start()) - 1
            if k >= 0 and match.start() < spans[k][1]:
                continue  # inside a string literal
            call, arg = match.group(1), match.group(2).strip()
            line = text.count("\n", 0, match.start()) + 1
            at = f"{name}:{line}"
            if call == "EndObject":
                if not stack:
                    written.problems.append(f"{at}: EndObject() without an open object")
                else:
                    stack.pop()
                continue
            literal = LITERAL_RE.match(arg)
            if literal is None:
                written.problems.append(f"{at}: {call}({arg}...): names must be string literals")
                continue
            value = literal.group(1)
            if call in SCOPE_CALLS:
                stack.append(value)
                written.fields.setdefault(value, set())
                kind = MESSAGES if call == "BeginMessage" else STRUCTS
                if value not in kind:
                    what = "message type" if call == "BeginMessage" else "protocol struct"
                    written.problems.append(f"{at}: {call}({arg}): unknown {what} {value!r}")
            elif not stack:
                written.problems.append(f"{at}: field {value!r} written outside any message or object")
            else:
                written.fields[stack[-1]].add(value)
                written.where.setdefault((stack[-1], value), at)
        if stack:
            written.problems.append(f"{name}: objects left open at the end: {stack}")
    return written


def check_program(sources: dict[str, str], expected: set[str]) -> list[str]:
    """Every problem found; [] when the program is in step with the protocol schema."""
    written = extract(sources)
    problems = list(written.problems)
    schemas = {**MESSAGES, **STRUCTS}
    for scope, keys in sorted(written.fields.items()):
        if scope not in schemas:
            continue
        known, required = fields_of(schemas[scope])
        for key in sorted(keys - known):
            problems.append(f"{written.where[(scope, key)]}: {scope} has no field {key!r}: the hub would ignore it")
        for key in sorted(required - keys):
            problems.append(f"{scope}: required field {key!r} is never written")
    for missing in sorted(expected - set(written.fields)):
        problems.append(f"{missing}: never written (expected from this EA)")
    return problems


def program(kind: str) -> dict[str, str]:
    if kind == "mt5":
        paths = [EA / "mt5" / "TradewireEA.mq5", *sorted((EA / "mt5" / "Include" / "Tradewire").glob("*.mqh"))]
    else:
        paths = [EA / "mt4" / "TradewireEA.mq4"]
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in paths}


# --- the EAs are in step --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mt5", "mt4"])
def test_every_field_the_ea_writes_is_in_the_protocol_schema(kind):
    assert check_program(program(kind), EXPECTED[kind]) == []


@pytest.mark.parametrize("kind", ["mt5", "mt4"])
def test_the_extractor_sees_the_messages_it_should(kind):
    written = extract(program(kind))
    assert written.fields["account"] >= {"ts", "balance", "equity", "margin", "freeMargin", "marginLevel"}
    assert written.fields["position"] >= {"seq", "id", "event", "ts", "position", "closePrice", "profit", "reason"}
    assert written.fields["Position"] == fields_of(Position)[0]  # the EAs write every Position field
    assert written.fields["hello"] >= {"platform", "login", "tzOffsetSec", "lastSeq", "ea"}


@pytest.mark.parametrize("kind", ["mt5", "mt4"])
def test_every_field_the_ea_writes_is_shown_in_the_golden_messages(kind):
    """The fixtures under tests/fixtures/protocol/ document what EAs send: they must show every field."""
    golden: dict[str, set[str]] = {}
    for path in FIXTURES.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        frames = [f for f in data.get("frames", [])] + [m for b in data.get("bodies", []) for m in b["messages"]]
        for frame in frames:
            for msg in frame if isinstance(frame, list) else [frame]:
                golden.setdefault(msg["type"], set()).update(msg)
                for pos in [msg.get("position"), *msg.get("positions", [])]:
                    if isinstance(pos, dict):
                        golden.setdefault("Position", set()).update(pos)
                for tick in msg.get("ticks", []):
                    golden.setdefault("Tick", set()).update(tick)
    for scope, keys in extract(program(kind)).fields.items():
        if scope in golden:
            assert keys <= golden[scope] | {"account"}, f"{scope}: {keys - golden[scope]} in no golden message"


# --- the checker itself fails when it should ------------------------------------------------------
def _mutate(kind: str, old: str, new: str) -> dict[str, str]:
    sources = program(kind)
    hits = [name for name, text in sources.items() if old in text]
    assert hits, f"{old!r} is not in the {kind} sources"
    return {name: text.replace(old, new) for name, text in sources.items()}


@pytest.mark.parametrize("kind", ["mt5", "mt4"])
def test_a_renamed_field_fails_the_check(kind):
    problems = check_program(_mutate(kind, '"freeMargin"', '"free_margin"'), EXPECTED[kind])
    assert any("account has no field 'free_margin'" in x for x in problems)
    assert any("account: required field 'freeMargin' is never written" in x for x in problems)


@pytest.mark.parametrize("kind", ["mt5", "mt4"])
def test_a_renamed_position_field_fails_the_check(kind):
    problems = check_program(_mutate(kind, '"openTime"', '"open_time"'), EXPECTED[kind])
    assert any("Position has no field 'open_time'" in x for x in problems)
    assert any("Position: required field 'openTime' is never written" in x for x in problems)


def test_a_renamed_message_type_fails_the_check():
    problems = check_program(_mutate("mt5", 'BeginMessage("heartbeat")', 'BeginMessage("heartbeet")'), EXPECTED["mt5"])
    assert any("unknown message type 'heartbeet'" in x for x in problems)
    assert any("heartbeat: never written" in x for x in problems)


def test_a_field_the_schema_lacks_fails_the_check():
    src = 'void F(CJsonWriter &w) { w.BeginMessage("ticks"); w.Str("feed", "x"); w.BeginArray("ticks"); w.EndArray(); }'
    problems = check_program({"x.mq5": src + "\nvoid G(CJsonWriter &w) { w.EndObject(); }"}, set())
    assert problems == ["x.mq5:1: ticks has no field 'feed': the hub would ignore it"]


def test_names_must_be_literals_and_objects_balanced():
    src = """
    void F(CJsonWriter &w, string name) {
       w.BeginMessage("heartbeat");
       w.Int(name, 1);        // a computed name cannot be checked
       w.Int("ts", 1);
    }
    void G(CJsonWriter &w) { w.EndObject(); w.EndObject(); }
    """
    problems = check_program({"y.mq5": src}, set())
    assert any("names must be string literals" in x for x in problems)
    assert any("EndObject() without an open object" in x for x in problems)


def test_comments_and_strings_do_not_confuse_the_extractor():
    src = """
    // w.Str("commented", 1);
    /* w.BeginMessage("nothing"); */
    void F(CJsonWriter &w) { w.BeginMessage("heartbeat"); w.Int("ts", 1);
       Print("w.Str(\\"x\\", 1) // not code"); w.EndObject(); }
    """
    assert check_program({"z.mq5": src}, {"heartbeat"}) == []


# --- what the sources must (not) contain -------------------------------------------------------
def test_mt5_sources_use_native_sockets_and_no_dll():
    text = "\n".join(strip_comments(t) for t in program("mt5").values())
    assert "#import" not in text
    for api in (
        "SocketCreate(",
        "SocketConnect(",
        "SocketTlsHandshake(",
        "SocketTlsCertificate(",
        "SocketTlsSend(",
        "SocketTlsReadAvailable(",
        "SocketSend(",
        "SocketRead(",
        "CRYPT_HASH_SHA1",
        "CRYPT_BASE64",
        "GetMicrosecondCount()",
        "OnTradeTransaction(",
        "TRADE_TRANSACTION_DEAL_ADD",
        "TRADE_TRANSACTION_POSITION",
        "HistoryDealSelect(",
        "DEAL_ENTRY_OUT_BY",
        "POSITION_IDENTIFIER",
        "FileMove(",
        "FILE_COMMON",
        "TimeGMT()",
    ):
        assert api in text, api
    assert "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" in text
    assert not re.search(r"DoubleToString\([^;]*,\s*8\s*\)", text)  # no fixed 8-digit numbers


def test_mt4_source_uses_webrequest_and_no_dll():
    text = strip_comments(program("mt4")["ea/mt4/TradewireEA.mq4"])
    assert "#import" not in text
    for api in ("WebRequest(", "/ea/v1/batch", "MODE_HISTORY", "OrderSelect(", "FileMove(", "ackedSeq"):
        assert api in text, api


def function_text(source: str, signature: str) -> str:
    """A function or method, from its signature to its closing brace, comments dropped, blanks squeezed."""
    text = re.sub(r"\s+", " ", strip_comments(source))
    start = text.index(signature)
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
        i += 1


@pytest.mark.parametrize(
    "signature",
    [
        "string TwJsonEscape(",
        "string TwJsonNumber(",
        "string TwRenumber(",
        "void Before(",
        "void BeginMessage(",
        "void BeginObject(",
        "int Ack(",
        "bool OnWelcome(",
        "string PositionEventMessage(",
        "string AccountMessage(",
        "string ErrorMessage(",
    ],
)
def test_the_mt4_copy_of_the_shared_code_matches_mt5(signature):
    """MT4 cannot include the MT5 headers, so it carries copies: they must not drift apart."""
    mt5 = function_text("\n".join(program("mt5").values()), signature)
    mt4 = function_text(program("mt4")["ea/mt4/TradewireEA.mq4"], signature)
    # The copy differs only in its position type: an MT4 order `o`, keyed by its ticket.
    for old, new in (("TwOrder &o", "TwPos &p"), ("(w, o)", "(w, p)"), ("o.symbol", "p.symbol"), ("o.ticket", "ID")):
        mt4 = mt4.replace(old, new)
    assert mt5.replace("(long)p.id", "ID") == mt4


def test_no_positions_snapshot_goes_out_from_a_terminal_that_may_list_nothing():
    """A snapshot is the open set: the hub records a CLOSE (for good) for every position it knew and the
    snapshot lacks. Built from a terminal cut off from its trade server (MT5 lists nothing then) or before
    the first connected scan (a fresh MT4 outbox knows no orders), it closed them all. Read, not run: each
    push of a snapshot must sit behind the guard."""
    mt5 = re.sub(r"\s+", " ", strip_comments(program("mt5")["ea/mt5/TradewireEA.mq5"]))
    pushes = [m.start() for m in re.finditer(r"TwPush\(items, PositionsMessage\(\)\)", mt5)]
    assert len(pushes) == 2
    for at in pushes:
        assert "TerminalSettled()" in mt5[at - 120 : at], mt5[at - 120 : at]
        assert "!SnapshotMustWait()" in mt5[at - 120 : at], mt5[at - 120 : at]
    settled = function_text(program("mt5")["ea/mt5/TradewireEA.mq5"], "bool TerminalSettled(")
    assert "TERMINAL_CONNECTED" in settled and "TW_SETTLE_MS" in settled  # connected, and for a while
    assert "if(!TerminalSettled()) return;" in function_text(program("mt5")["ea/mt5/TradewireEA.mq5"], "void SyncAll(")
    mt4 = re.sub(r"\s+", " ", strip_comments(program("mt4")["ea/mt4/TradewireEA.mq4"]))
    (at,) = [m.start() for m in re.finditer(r"TwPush\(items, PositionsMessage\(\)\)", mt4)]
    assert "if(whole && g_scanned &&" in mt4[at - 200 : at]
    assert "g_scanned = true;" in function_text(program("mt4")["ea/mt4/TradewireEA.mq4"], "void ScanOrders(")
    # and MT4 posts at least once per hub heartbeat, whatever InpPostIntervalSec says
    assert "interval > g_heartbeatSec" in mt4


def test_no_positions_snapshot_goes_out_ahead_of_a_durable_message_made_before_it():
    """An EA back from an outage resends its backlog a frame (MT5: 100 messages) or a POST (MT4: 200) at a
    time, and sent a snapshot with the first: one without a position had the hub record its CLOSE, and the
    position's MODIFYs still to come were not stored. Read, not run: the agent's rule, in MQL."""
    mt5 = program("mt5")["ea/mt5/TradewireEA.mq5"]
    wait = re.sub(r"\s+", " ", strip_comments(function_text(mt5, "bool SnapshotMustWait(")))
    assert "if(g_outbox.SeqAt(i) > g_sentSeq) return true;" in wait  # a message not sent yet
    assert "TW_API_GATEWAY_FRAME_BYTES && DurableUnanswered()" in wait  # concurrent Lambda calls
    welcome = re.sub(r"\s+", " ", strip_comments(function_text(mt5, "void OnWelcome(")))
    assert welcome.index("FlushDurable();") < welcome.index("SnapshotMustWait()")  # the first frame counts as sent
    post = function_text(program("mt4")["ea/mt4/TradewireEA.mq4"], "void PostCycle(")
    mt4 = re.sub(r"\s+", " ", strip_comments(post))
    whole = mt4.index("bool whole = ArraySize(items) == g_outbox.Count();")
    assert mt4.index("TwPush(items, g_outbox.MessageAt(i));") < whole < mt4.index("TwPush(items, AccountMessage());")


def test_mt4_reads_the_broker_offset_from_a_moving_quote_before_any_trade_event():
    """MT4's TimeCurrent() stops with the market: a quote stale by n x 15 minutes passed the freshness test
    (within 2 minutes of a quarter hour) and every OPEN was stored hours off, for good."""
    source = program("mt4")["ea/mt4/TradewireEA.mq4"]
    update = function_text(source, "void UpdateBrokerOffset(")
    assert "advanced > 0 && advanced <=" in update and update.index("if(!moving) return;") < update.index("diff")
    on_timer = function_text(source, "void OnTimer(")
    assert "if(g_tzKnown) ScanOrders();" in on_timer


def test_the_mt5_ea_keeps_its_frames_under_api_gateways_32_kb():
    """API Gateway (the AWS deployment) closes a connection 1009 for a frame over 32 KB. The MT5 EA batched
    up to 256 KB, so a reconnect snapshot of ~130 positions, or a backlog frame of ~90 messages, was refused
    and retried for ever. Read, not run: the limit comes from the URL, as the agent's does, frames are
    counted in UTF-8 bytes before a message joins, and every volatile send goes through the packer."""
    from tradewire.agent.runner import API_GATEWAY_FRAME_BYTES

    src = program("mt5")
    mt5 = src["ea/mt5/TradewireEA.mq5"]
    flat = re.sub(r"\s+", " ", strip_comments(mt5))
    assert f"#define TW_API_GATEWAY_FRAME_BYTES {API_GATEWAY_FRAME_BYTES}" in flat  # the agent's limit
    ws = re.sub(r"\s+", " ", strip_comments(src["ea/mt5/Include/Tradewire/WebSocket.mqh"]))
    assert 'm_apiGateway = StringFind(lowerHost, ".execute-api.") >= 0;' in ws
    init = function_text(mt5, "int OnInit(")
    assert "g_maxFrameBytes = probe.ApiGateway() ? TW_API_GATEWAY_FRAME_BYTES : TW_MAX_FRAME_BYTES;" in init
    durable = function_text(mt5, "void FlushDurable(")
    assert "int size = TwUtf8Len(msg) + 1;" in durable
    assert "bytes + size > g_maxFrameBytes)) break; TwPush(batch, msg);" in durable  # checked before it joins
    packer = function_text(mt5, "bool SendVolatile(")
    assert "TwUtf8Len(items[i])" in packer and "bytes + sizes[i] > g_maxFrameBytes" in packer
    assert "if(size + 1 > g_maxFrameBytes)" in packer  # one message alone over it is left out
    assert flat.count("SendBatch(") == 2  # its definition and FlushDurable's durable frame
    assert flat.count("SendVolatile(items);") == 2  # the welcome's snapshot and the timer's
