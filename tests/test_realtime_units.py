"""Pure pieces of the realtime gateway: channel rules, the outbox, frame codec and auth parsing."""

import base64
import gc
import json

import pytest

from tradewire import channels
from tradewire.broker.base import Publication
from tradewire.realtime import protocol as rp
from tradewire.realtime import wire
from tradewire.realtime.gateway import Subscription, SubscriptionIndex
from tradewire.realtime.late import LateArrivals
from tradewire.realtime.outbox import Outbox


@pytest.mark.parametrize(
    ("raw", "wildcard", "expected"),
    [
        ("trading/accounts/acc-1", False, "/trading/accounts/acc-1"),
        ("/trading/accounts/acc-1/", False, "/trading/accounts/acc-1"),
        ("/trading/*", True, "/trading/*"),
        ("default/x/*", True, "/default/x/*"),
        ("/a/b/c/d/e", False, "/a/b/c/d/e"),
    ],
)
def test_valid_channels_normalise(raw, wildcard, expected):
    assert channels.normalise(raw, wildcard=wildcard) == expected


@pytest.mark.parametrize(
    ("raw", "wildcard", "problem"),
    [
        ("", False, "empty"),
        ("/", False, "empty"),
        ("/trading/*", False, "only allowed when subscribing"),
        ("/*", True, "needs a namespace"),
        ("/a/b/c/d/e/f", False, "at most 5"),
        ("/trading/EURUSD.m", False, "segment 'EURUSD.m'"),
        ("/trading/-x", False, "segment '-x'"),
        ("/trading/" + "x" * 51, False, "1-50"),
        ("/trading/a*/b", True, "segment 'a*'"),
        ("/trading/acc-1\n", False, "segment 'acc-1\\n'"),  # `$` alone would let a trailing newline in
    ],
)
def test_invalid_channels_say_why(raw, wildcard, problem):
    with pytest.raises(channels.ChannelError, match=None) as info:
        channels.normalise(raw, wildcard=wildcard)
    assert problem in str(info.value)


def test_wildcards_match_every_deeper_level_only():
    assert channels.prefixes("/trading/prices/EURUSD") == ("/trading/*", "/trading/prices/*")
    assert channels.matches("/trading/*", "/trading/prices/EURUSD")
    assert channels.matches("/trading/prices/*", "/trading/prices/EURUSD")
    assert not channels.matches("/trading/prices/*", "/trading/pricesX/EURUSD")
    assert not channels.matches("/trading/prices/*", "/trading/prices")
    assert channels.matches("/trading/exposure", "/trading/exposure")


def test_symbol_slugs_are_valid_segments_and_one_per_symbol():
    """With every other character as '-', EURUSD, EURUSD#, #EURUSD and .EURUSD shared one channel: one latest
    value, one snapshot entry, and an exact subscriber got two instruments' quotes mixed."""
    for symbol, slug in [("EURUSD", "EURUSD"), ("EURUSD.m", "EURUSD-m"), ("US30.cash", "US30-cash")]:
        assert channels.symbol_slug(symbol) == slug  # the common names read as they are
    awkward = ["EURUSD#", "#EURUSD", ".EURUSD", "EURUSD+", "EURUSD-m", "EURUSD_m", "EURUSD..m", "ÄPFEL", "PFEL",
               "###", "...", "A" * 49 + ".x", "A" * 60, "A" * 60 + "B"]  # fmt: skip
    names = ["EURUSD", "EURUSD.m", *awkward]
    slugs = [channels.symbol_slug(s) for s in names]
    assert len(set(slugs)) == len(names), dict(zip(names, slugs, strict=True))
    for slug in slugs:
        channels.normalise(f"/trading/prices/{slug}")  # every one a valid segment
    assert channels.symbol_slug("EURUSD#").startswith("EURUSD--")


def test_durable_scope_of_patterns():
    assert channels.durable_scope("/trading/*") == [("events", None), ("alerts", None)]
    assert channels.durable_scope("/trading/events/*") == [("events", None)]
    assert channels.durable_scope("/trading/alerts/acc-1") == [("alerts", "acc-1")]
    assert channels.durable_scope("/trading/prices/*") == []
    assert channels.durable_scope("/custom/*") == []
    assert channels.is_durable("/trading/events/a") and not channels.is_durable("/trading/accounts/a")


def test_outbox_conflates_latest_and_keeps_streams():
    box = Outbox(max_stream_bytes=1000)
    box.reply(b"ack")
    replaced = [box.put_latest("s", "/trading/prices/EURUSD", f'"p{n}"'.encode()) for n in range(5)]
    assert replaced == [False, True, True, True, True]
    box.put_latest("s", "/trading/prices/GBPUSD", b'"g"')
    assert box.pending_latest() == 2  # one pending value per channel, however many were queued
    assert box.put_stream("s", b"e1") and box.put_stream("s", b"e2")
    frames, latest = box.take()
    prefix = b'{"type":"data","id":"s","event":'
    assert frames == [b"ack", prefix + b'"p4"}', prefix + b'"g"}', b"e1", b"e2"] and latest == 2
    assert all(json.loads(f)["type"] == "data" for f in frames[1:3])
    assert not box and box.stream_bytes == 0


def test_outbox_stream_bound():
    box = Outbox(max_stream_bytes=10)
    assert box.put_stream("s", b"12345")
    assert not box.put_stream("s", b"123456")  # over the bound: the connection is to be closed
    assert box.overflowed and not box.put_stream("s", b"1")


def test_a_stream_backlog_adds_nothing_for_the_garbage_collector_to_track():
    """A parked durable subscriber's backlog grows by thousands of frames: none of them may be an object
    the collector tracks, or each counts toward the next collection (a pause of everyone's fan-out)."""
    box = Outbox(max_stream_bytes=10**9)
    gc.disable()
    try:
        before = len(gc.get_objects(generation=0))
        for n in range(1000):
            box.put_stream("s", b"frame %d" % n)
        assert len(gc.get_objects(generation=0)) - before < 10
    finally:
        gc.enable()
    frames, _ = box.take()
    assert frames == [b"frame %d" % n for n in range(1000)]


def test_outbox_forget_drops_a_subscriptions_pending_frames():
    box = Outbox(max_stream_bytes=100)
    box.put_latest("a", "/x/1", b"1")
    box.put_latest("b", "/x/1", b"2")
    box.put_stream("a", b"a2")
    box.put_stream("b", b"b2")
    box.forget("a")
    assert box.take() == ([b'{"type":"data","id":"b","event":2}', b"b2"], 1)


def test_decode_client_frames():
    assert isinstance(rp.decode('{"type":"connection_init"}'), rp.ConnectionInit)
    sub = rp.decode('{"type":"subscribe","id":"a-1_+","channel":"/trading/*","since":5,"extra":1}')
    assert isinstance(sub, rp.Subscribe) and sub.since == 5
    err = rp.decode('{"type":"subscribe","id":"x y","channel":"/t/*"}')
    assert isinstance(err, rp.ProtocolError) and err.reply == "subscribe_error" and err.id == "x y"
    # An id goes into every data frame as-is: a trailing newline would make them all invalid JSON.
    err = rp.decode('{"type":"subscribe","id":"s1\\n","channel":"/trading/*"}')
    assert isinstance(err, rp.ProtocolError) and err.error_type == rp.BAD_REQUEST and err.id == "s1\n"
    err = rp.decode('{"type":"publish","id":"p","channel":"/c/a","events":"nope"}')
    assert err.reply == "publish_error" and "events" in err.message
    err = rp.decode("[1,2]")
    assert err.reply == "error" and err.error_type == rp.BAD_REQUEST


def test_event_validation():
    assert rp.validate_events(['{"a":1}', "42", '"s"', "null"]) is None
    assert "1 to 5" in rp.validate_events([])
    assert "not valid JSON" in rp.validate_events(["{"])
    assert "240 KB" in rp.validate_events(['"' + "x" * 245_760 + '"'])


def test_data_frames_carry_the_event_as_a_json_string():
    literal = rp.event_literal(b'{"a":"\\u00e9","b":[1]}')
    frame = json.loads(rp.data_frame(b"sub-1", literal, None))
    assert frame == {"type": "data", "id": "sub-1", "event": '{"a":"\\u00e9","b":[1]}'}
    assert json.loads(frame["event"]) == {"a": "é", "b": [1]}
    assert json.loads(rp.data_frame(b"s", literal, 42))["offset"] == 42
    batch = json.loads(rp.batch_frame([rp.KA, rp.data_frame(b"s", literal, None)]))
    assert [i["type"] for i in batch["items"]] == ["ka", "data"]


def test_auth_from_the_header_subprotocol():
    raw = json.dumps({"host": "h:1", "X-Api-Key": "k1"}).encode()
    proto = "header-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    auth = rp.auth_from_subprotocols(["aws-appsync-event-ws", proto])
    assert rp.api_key_of(auth) == "k1"
    assert rp.auth_from_subprotocols(["header-%%%"]) is None
    assert rp.auth_from_subprotocols(["aws-appsync-event-ws"]) is None
    assert rp.api_key_of({"Authorization": "x"}) is None


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_text_frames_follow_rfc6455_length_encoding(size):
    payload = b"x" * size
    frame = wire.text_frame(payload)
    assert frame[0] == 0x81  # FIN + TEXT, no RSV bits: uncompressed
    if size < 126:
        header = 2
        assert frame[1] == size
    elif size < 65536:
        header = 4
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == size
    else:
        header = 10
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == size
    assert frame[header:] == payload
    assert wire.text_frames([payload, b"y"]) == frame + b"\x81\x01y"


def test_outbox_take_batch_is_one_frame_of_everything_pending_in_order():
    box = Outbox(max_stream_bytes=1000)
    assert box.take_batch() == (b"", 0)
    box.put_latest("s", "/x/1", b'"a"')
    assert box.take_batch() == (b'{"type":"data","id":"s","event":"a"}', 1)  # a lone frame is sent as itself
    box.reply(b'{"type":"ka"}')
    box.put_latest("s", "/x/1", b'"old"')
    box.put_latest("s", "/x/1", b'"b"')
    box.put_latest("s", "/x/2", b'"c"')
    box.put_latest("t", "/x/1", b'"d"')
    box.put_stream("t", b'{"type":"data","id":"t","event":"e","offset":7}')
    payload, count = box.take_batch()
    items = json.loads(payload)["items"]
    assert count == 5 == len(items)
    expected = [(None, None), ("s", "b"), ("s", "c"), ("t", "d"), ("t", "e")]
    assert [(i.get("id"), i.get("event")) for i in items] == expected
    assert items[4]["offset"] == 7 and not box


def test_hostile_json_is_refused_by_name_not_by_an_exception():
    """Found by the fuzzer: JSON nested past msgspec's or json's recursion limit, bytes that are not UTF-8,
    and NaN (which json.loads accepts but no JSON client can parse) in a published event."""
    deep = "[" * 5000 + "]" * 5000
    msg = rp.decode('{"type":"subscribe","id":"a","channel":"/x","authorization":{"a":' + deep + "}}")
    assert isinstance(msg, rp.ProtocolError) and "nested too deeply" in msg.message
    msg = rp.decode(b'{"type":"subscribe","id":"a","channel":"\xff"}')
    assert isinstance(msg, rp.ProtocolError) and "UTF-8" in msg.message
    assert rp.validate_events([deep]) == "event 0 is nested too deeply"
    assert rp.validate_events(["NaN"]) == rp.validate_events(["Infinity"]) == "event 0 is not valid JSON"
    header = base64.urlsafe_b64encode(("[" * 3000 + "]" * 3000).encode()).decode().rstrip("=")
    assert rp.auth_from_subprotocols([rp.SUBPROTOCOL, "header-" + header]) is None


class _Conn:
    """What a Subscription needs of its connection: an outbox."""

    def __init__(self):
        self.outbox = Outbox(max_stream_bytes=1000)
        self.parked_at = None


def routed(route) -> tuple:
    """The subscriptions a route delivers to, in order."""
    return tuple(sub for group in route for sub in group.subs)


def test_routes_hold_ready_subscriptions_and_survive_unrelated_changes():
    index = SubscriptionIndex()
    wide = Subscription(_Conn(), "w", "/trading/*")
    index.add(wide)  # loading its snapshot: buffered for, not routed to
    assert index.route("/trading/prices/EURUSD") == () and list(index.loading) == [wide]
    index.ready(wide)
    eurusd = index.route("/trading/prices/EURUSD")
    assert routed(eurusd) == (wide,) and eurusd[0].pendings == (wide.pending,) and not index.loading
    assert eurusd[0].conns == {wide.conn}
    one = Subscription(_Conn(), "a", "/trading/accounts/acc-1")
    index.add(one)
    index.ready(one)  # an exact channel: only its own route is rebuilt
    assert index.route("/trading/prices/EURUSD") is eurusd
    assert set(routed(index.route("/trading/accounts/acc-1"))) == {wide, one}
    index.remove(one)
    assert routed(index.route("/trading/accounts/acc-1")) == (wide,)
    gone = Subscription(_Conn(), "g", "/trading/*")
    index.add(gone)
    index.remove(gone)  # unsubscribed while loading: never routed
    index.ready(gone)
    assert routed(index.route("/trading/prices/GBPUSD")) == (wide,) and len(index) == 1


def test_a_reconnect_storm_on_a_busy_pattern_keeps_every_cached_route():
    """Subscribers joining and leaving a pattern others hold change its group in place: no route is
    rebuilt, and each delivery still reaches exactly the subscriptions ready at that moment."""
    index = SubscriptionIndex()
    healthy = Subscription(_Conn(), "h", "/trading/*")
    index.add(healthy)
    index.ready(healthy)
    channels_ = [f"/trading/prices/acc-{n}/EURUSD" for n in range(50)]
    before = [index.route(c) for c in channels_]
    for n in range(100):
        storm = Subscription(_Conn(), f"s{n}", "/trading/*")
        index.add(storm)
        index.ready(storm)
        assert routed(index.route(channels_[n % 50])) == (healthy, storm)
        assert storm.conn in index.route(channels_[n % 50])[0].conns
        index.remove(storm)
        assert routed(index.route(channels_[n % 50])) == (healthy,)
    assert all(index.route(c) is r for c, r in zip(channels_, before, strict=True))
    # A pattern's first subscription (or its last leaving) changes which groups match: those routes only.
    prices = Subscription(_Conn(), "p", "/trading/prices/*")
    index.add(prices)
    index.ready(prices)
    assert routed(index.route(channels_[0])) == (healthy, prices)
    unrelated = index.route("/trading/accounts/acc-1")
    index.remove(prices)
    assert routed(index.route(channels_[0])) == (healthy,)
    assert index.route("/trading/accounts/acc-1") is unrelated


def test_a_publications_event_literal_is_encoded_once_and_kept_with_it():
    """Snapshots reuse the literal the fan-out made: the same bytes, not a second encoding."""
    from tradewire.broker.base import Publication
    from tradewire.realtime.gateway import literal_of

    pub = Publication.of("/trading/accounts/a", {"id": "a", "note": 'say "hi" \u00e9'}, latest=True)
    first = literal_of(pub)
    assert first == rp.event_literal(pub.data) and json.loads(json.loads(first)) == {"id": "a", "note": 'say "hi" é'}
    assert literal_of(pub) is first


def test_missed_values_are_the_newest_per_channel_after_a_mark_and_only_while_something_is_parked():
    from tradewire.realtime.parking import MissedValues

    missed = MissedValues()
    assert not missed.active
    first = missed.park()
    missed.note("/trading/prices/a/EURUSD", b"1")
    missed.note("/trading/accounts/a", b"acc")
    second = missed.park()
    missed.note("/trading/prices/a/EURUSD", b"2")  # moves to the end: the newest value only
    assert missed.since(first, "/trading/*") == [("/trading/accounts/a", b"acc"), ("/trading/prices/a/EURUSD", b"2")]
    assert missed.since(second, "/trading/*") == [("/trading/prices/a/EURUSD", b"2")]
    assert missed.since(first, "/trading/prices/*") == [("/trading/prices/a/EURUSD", b"2")]
    assert missed.since(first, "/trading/accounts/b") == []
    assert len(missed) == 2 and missed.parked == 2
    missed.unpark()
    assert missed.active and len(missed) == 2  # the second is still parked
    missed.unpark()
    assert not missed.active and len(missed) == 0 and missed.parked == 0


def test_a_parked_connections_subscriptions_leave_the_latest_wins_shapes_but_not_the_stream():
    index = SubscriptionIndex()
    awake, asleep = Subscription(_Conn(), "a", "/trading/*"), Subscription(_Conn(), "s", "/trading/*")
    for sub in (awake, asleep):
        index.add(sub)
        index.ready(sub)
    (group,) = index.route("/trading/events/acc-1")
    assert group.pendings == (awake.pending, asleep.pending) and group.parked == 0
    asleep.conn.parked_at = 0
    index.refresh([asleep])
    assert group.pendings == (awake.pending,) and group.conns == {awake.conn}
    assert group.subs == (awake, asleep) and group.size == 2 and group.parked == 1  # stream data still reaches it
    late = Subscription(asleep.conn, "late", "/trading/*")  # subscribes while its connection is parked
    index.add(late)
    index.ready(late)
    assert group.pendings == (awake.pending,) and group.parked == 2
    asleep.conn.parked_at = None
    index.refresh([asleep])
    assert group.pendings == (awake.pending, asleep.pending, late.pending) and group.parked == 0


def test_an_error_quotes_at_most_a_few_hundred_characters_of_what_it_refuses():
    """Errors quote the input they refuse; a megabyte type or id made a megabyte reply, queued per message."""
    huge = "x" * 1_000_000
    for frame in (json.dumps({"type": huge}), json.dumps({"type": "subscribe", "id": huge, "channel": "/a/b"})):
        err = rp.decode(frame)
        assert isinstance(err, rp.ProtocolError)
        reply = json.loads(err.encode())
        assert len(err.encode()) < 1024 and reply["errors"][0]["message"]
    err = rp.decode(json.dumps({"type": huge}))
    assert json.loads(err.encode())["errors"][0]["message"].endswith("... (cut)")


def test_late_arrivals_are_what_a_subscriber_that_saw_a_higher_offset_may_have_missed():
    """Node A committed 10, node B 11 and published first: every node sees 11, then 10. A subscriber that saw 11
    and resumed `since` 11 is owed 10; one that had seen only 9 gets 10 from the store; one on another account's
    channel is owed nothing."""
    now = [0.0]
    late = LateArrivals(keep_s=60, clock=lambda: now[0])

    def pub(offset: int, account: str = "acc-1") -> Publication:
        return Publication(f"/trading/events/{account}", b"{}", latest=False, offset=offset)

    for offset in (9, 11):
        late.note(offset, pub(offset, "acc-2"))
    ten = pub(10)
    late.note(10, ten)
    late.note(11, pub(11, "acc-2"))  # the same offset again (a resend): not late
    assert late.noted == 1
    assert late.missable(11, "/trading/*") == [ten]
    assert late.missable(11, "/trading/events/acc-1") == [ten]
    assert late.missable(11, "/trading/events/acc-2") == []
    assert late.missable(9, "/trading/*") == []  # 10 is above 9: the store's history has it
    assert late.missable(12, "/trading/*") == []  # nothing >= 12 had arrived before 10: 10 came in order for it
    now[0] = 61.0
    assert late.missable(11, "/trading/*") == []  # forgotten after keep_s
