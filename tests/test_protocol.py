"""EA protocol v1 codec: every message type decodes, every bad input gets an error naming the problem."""

import json

import msgspec
import pytest

from tradewire.ingest import protocol as p

from helpers import account_state, hello, position, position_event

GOLDEN = {
    "hello": hello(lastSeq=12),
    "account": account_state(),
    "positions": {"type": "positions", "ts": 1, "positions": [position(1), position(2, side="sell")]},
    "ticks": {"type": "ticks", "ticks": [{"symbol": "EURUSD.m", "bid": 1.1, "ask": 1.1002, "ts": 5}]},
    "heartbeat": {"type": "heartbeat", "ts": 9},
    "position": position_event(3, "CLOSE", closePrice=1.09, profit=-12.5, reason="sl"),
    "error": {"type": "error", "seq": 4, "id": "err-4", "code": "TRADE_FAILED", "message": "no money"},
}
TYPES = {
    "hello": p.Hello,
    "account": p.AccountMsg,
    "positions": p.PositionsMsg,
    "ticks": p.TicksMsg,
    "heartbeat": p.HeartbeatMsg,
    "position": p.PositionMsg,
    "error": p.ErrorMsg,
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_message_type_decodes_to_its_struct(name):
    [msg] = p.decode_frame(json.dumps(GOLDEN[name]))
    assert isinstance(msg, TYPES[name])
    # and it round-trips: encoding gives back the fields that were sent
    again = json.loads(p.encode(msg))
    for key, value in GOLDEN[name].items():
        if key != "position":
            assert again[key] == value


def test_array_frame_is_a_batch_in_order():
    frame = json.dumps([GOLDEN["heartbeat"], GOLDEN["account"], GOLDEN["position"]])
    assert [type(m) for m in p.decode_frame(frame)] == [p.HeartbeatMsg, p.AccountMsg, p.PositionMsg]


def test_position_fields_keep_full_precision():
    [msg] = p.decode_frame(json.dumps(position_event(1, position=position(openPrice=1.234567891, volume=0.01))))
    assert msg.position.openPrice == 1.234567891
    assert msg.position.volume == 0.01


def test_malformed_json_names_the_problem():
    [err] = p.decode_frame('{"type": "heartbeat",')
    assert isinstance(err, p.ErrorReply) and err.code == p.BAD_JSON
    assert "malformed" in err.message or "truncated" in err.message


def test_wrong_type_names_the_field():
    [err] = p.decode_frame(json.dumps(account_state(balance="lots")))
    assert err.code == p.INVALID_MESSAGE
    assert "$.balance" in err.message and "float" in err.message


def test_missing_field_names_the_field():
    msg = position_event(1)
    del msg["position"]["symbol"]
    [err] = p.decode_frame(json.dumps(msg))
    assert err.code == p.INVALID_MESSAGE and "symbol" in err.message
    assert err.ref == msg["id"]  # the durable id is named so the EA knows which message failed


def test_every_string_a_hello_carries_is_bounded():
    """The EA's name and version are republished with every account update: a megabyte name was not refused."""
    for field, size in (("name", 65), ("version", 33)):
        msg = hello()
        msg["ea"] = {"name": "TradewireEA", "version": "1.0.0", field: "x" * size}
        [err] = p.decode_frame(json.dumps(msg))
        assert isinstance(err, p.ErrorReply) and err.code == p.INVALID_MESSAGE and f"$.ea.{field}" in err.message
    assert isinstance(p.decode_frame(json.dumps(hello()))[0], p.Hello)


def test_an_account_id_with_a_trailing_newline_is_not_an_account_id():
    [err] = p.decode_frame(json.dumps({**account_state(), "account": "acc-1\n"}))
    assert err.code == p.INVALID_MESSAGE and "$.account" in err.message


def test_a_nul_character_in_a_stored_string_is_refused_by_name_and_in_a_comment_dropped():
    """PostgreSQL's text refuses NUL: such a row failed at commit (store_unavailable, close 1011), and the EA
    resent it forever. Refused here, every store engine alike; a comment loses the character, not the trade."""
    for named, patch in (
        (
            "symbol may not contain a NUL character (\\u0000) - at `$.position`",
            {"position": {**position(), "symbol": "EUR\x00"}},
        ),
        ("id may not contain a NUL", {"id": "open-1\x00"}),
        ("reason may not contain a NUL", {"reason": "sl\x00"}),
    ):
        [err] = p.decode_frame(json.dumps({**position_event(1), **patch}))
        assert isinstance(err, p.ErrorReply) and err.code == p.INVALID_MESSAGE, patch
        assert named in err.message, err.message
    error = {"type": "error", "seq": 2, "id": "err-2", "code": "E\x00", "message": "m"}
    [err] = p.decode_frame(json.dumps(error))
    assert err.code == p.INVALID_MESSAGE and "code may not contain a NUL" in err.message and err.ref == "err-2"
    [msg] = p.decode_frame(json.dumps({**position_event(1), "position": {**position(), "comment": "hedge\x00 1"}}))
    assert isinstance(msg, p.PositionMsg) and msg.position.comment == "hedge 1"


def test_unknown_type_is_named():
    [err] = p.decode_frame('{"type": "orders", "x": 1}')
    assert err.code == p.UNKNOWN_TYPE and "'orders'" in err.message


def test_missing_type():
    [err] = p.decode_frame('{"ts": 1}')
    assert err.code == p.INVALID_MESSAGE and "type" in err.message


def test_bad_message_in_a_batch_does_not_take_the_others_down():
    frame = json.dumps([GOLDEN["heartbeat"], {"type": "account", "ts": 1}, 42, GOLDEN["position"]])
    out = p.decode_frame(frame)
    assert isinstance(out[0], p.HeartbeatMsg)
    assert isinstance(out[1], p.ErrorReply) and out[1].index == 1 and "balance" in out[1].message
    assert isinstance(out[2], p.ErrorReply) and out[2].index == 2 and "object" in out[2].message
    assert isinstance(out[3], p.PositionMsg)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"seq": 0}, "seq"),
        ({"event": "OPENED"}, "event"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"account": "bad id!"}, "account"),
    ],
)
def test_durable_message_constraints(patch, field):
    [err] = p.decode_frame(json.dumps({**position_event(1), **patch}))
    assert isinstance(err, p.ErrorReply) and f"$.{field}" in err.message


def test_negative_volume_and_bad_side_are_refused():
    for pos in (position(volume=-1), position(side="long")):
        [err] = p.decode_frame(json.dumps(position_event(1, position=pos)))
        assert isinstance(err, p.ErrorReply)


def test_server_messages_encode_as_the_design_says():
    assert json.loads(p.encode(p.Ack(seq=5))) == {"type": "ack", "seq": 5}
    welcome = json.loads(p.encode(p.Welcome(sessionId="s", ackedSeq=3, heartbeatSec=10, serverTime=1)))
    assert welcome == {"type": "welcome", "sessionId": "s", "ackedSeq": 3, "heartbeatSec": 10, "serverTime": 1}
    err = json.loads(p.encode(p.ErrorReply(code="x", message="y", ref="id-1")))
    assert err == {"type": "error", "code": "x", "message": "y", "ref": "id-1"}


def test_unknown_fields_are_ignored_for_forward_compatibility():
    [msg] = p.decode_frame(json.dumps({**GOLDEN["heartbeat"], "newField": 1}))
    assert isinstance(msg, p.HeartbeatMsg)


def test_json_schema_exists_for_docs():
    schema = msgspec.json.schema(p.ClientMsg)
    assert "$defs" in schema


@pytest.mark.parametrize("field", ["seq", "id"])
def test_integers_beyond_64_bits_are_refused_at_the_edge_not_in_the_store(field):
    msg = position_event(1)
    if field == "seq":
        msg["seq"] = 2**63
    else:
        msg["position"]["id"] = 2**64
    [err] = p.decode_frame(json.dumps(msg))
    assert isinstance(err, p.ErrorReply) and err.code == p.INVALID_MESSAGE
