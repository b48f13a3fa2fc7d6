"""REST API over a real socket: API keys, listings, filters, named parameter errors."""

import asyncio
import gc
import re

import pytest
from aiohttp import web

from tradewire import api
from tradewire.app import Server
from tradewire.store.base import StoreError

from conftest import make_settings
from helpers import EA, account_state, issue_key, issue_token, position, position_event, running


async def get(http, server, path, key=None):
    headers = {"x-api-key": key} if key else {}
    async with http.get(server.url + "/api/v1" + path, headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture
async def fleet(server, http):
    """Two accounts with state, positions, prices and durable events."""
    eas = []
    for account, magic in (("acc-1", 0), ("acc-2", 7001)):
        ea = await EA.connect(http, server, await issue_token(server, account))
        await ea.greet()
        await ea.send(account_state(equity=9_000.0 if account == "acc-2" else 10_000.0))
        pos = position(11 if account == "acc-1" else 22, magic=magic, symbol="EURUSD" if magic == 0 else "XAUUSD")
        await ea.send(position_event(1, pid=pos["id"], position=pos))
        await ea.send({"type": "positions", "ts": 2, "positions": [pos]})
        await ea.send({"type": "ticks", "ticks": [{"symbol": "EURUSD.m", "bid": 1.1, "ask": 1.1002, "ts": 3}]})
        await ea.wait_ack(1)
        eas.append(ea)
    await issue_token(server, "acc-3")  # issued, never connected
    return eas


async def test_health_needs_no_key(server, http):
    status, body = await get(http, server, "/healthz")
    assert status == 200 and body["status"] == "ok"


async def test_readiness_needs_no_key_and_names_a_store_that_does_not_answer(server, http, monkeypatch):
    """DESIGN §8's readyz, for a load balancer: healthz said "ok" while the store was down, so a balancer kept
    sending EAs to a node that could not commit anything."""
    status, body = await get(http, server, "/readyz")
    assert status == 200 and body["status"] == "ready"

    async def down() -> int:
        raise StoreError("connection refused")

    monkeypatch.setattr(server.hub.store, "head_offset", down)
    monkeypatch.setattr("tradewire.api.READY_CACHE_S", 0.0)
    status, body = await get(http, server, "/readyz")
    assert status == 503 and body["status"] == "not_ready"
    assert body["problems"] == {"store": "connection refused"}
    monkeypatch.undo()
    monkeypatch.setattr("tradewire.api.READY_CACHE_S", 0.0)
    server.hub.draining = True
    try:
        status, body = await get(http, server, "/readyz")
        assert status == 503 and set(body["problems"]) == {"hub"}
    finally:
        server.hub.draining = False


async def test_every_read_needs_a_valid_key(server, http):
    for path in ("/accounts", "/positions", "/prices", "/events", "/system-trades", "/exposure", "/alerts"):
        status, body = await get(http, server, path)
        assert status == 401 and "x-api-key" in body["error"]["message"]
        assert (await get(http, server, path, "twk_wrong"))[0] == 401


async def test_accounts_show_live_state_and_never_connected_ones(server, http, fleet):
    key = await issue_key(server)
    status, body = await get(http, server, "/accounts", key)
    rows = {a["id"]: a for a in body["items"]}
    assert status == 200 and set(rows) == {"acc-1", "acc-2", "acc-3"}
    assert rows["acc-1"]["status"] == "live" and rows["acc-3"]["status"] == "never"
    assert rows["acc-1"]["state"]["equity"] == 10_000.0 and rows["acc-1"]["state"]["marginLevel"] == 5000.0
    assert rows["acc-1"]["info"]["login"] == 5123456 and rows["acc-1"]["positions"] == 1
    status, one = await get(http, server, "/accounts/acc-2", key)
    assert status == 200 and one["openPositions"][0]["id"] == 22
    assert (await get(http, server, "/accounts/nobody", key))[0] == 404
    assert (await get(http, server, "/accounts/bad%20id", key))[0] == 400


async def test_disconnect_flips_status_to_lost(server, http, fleet):
    key = await issue_key(server)
    await fleet[0].close()
    for _ in range(50):
        rows = {a["id"]: a for a in (await get(http, server, "/accounts", key))[1]["items"]}
        if rows["acc-1"]["status"] == "lost":
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert rows["acc-1"]["status"] == "lost" and rows["acc-2"]["status"] == "live"


async def test_positions_prices_exposure(server, http, fleet):
    key = await issue_key(server)
    _, body = await get(http, server, "/positions?symbol=XAUUSD", key)
    assert [(p["account"], p["id"]) for p in body["items"]] == [("acc-2", 22)]
    _, body = await get(http, server, "/positions?account=acc-1", key)
    assert [p["id"] for p in body["items"]] == [11]
    _, body = await get(http, server, "/prices", key)
    assert body["items"] == [{"symbol": "EURUSD.m", "bid": 1.1, "ask": 1.1002, "ts": 3}]
    _, body = await get(http, server, "/exposure", key)
    assert {r["symbol"] for r in body["items"]} == {"EURUSD", "XAUUSD"}


async def test_events_and_system_trades_with_filters_and_paging(server, http, fleet):
    key = await issue_key(server)
    _, body = await get(http, server, "/events?account=acc-1", key)
    assert [(e["account"], e["event"], e["source"]) for e in body["items"]] == [("acc-1", "OPEN", "ea")]
    _, body = await get(http, server, "/events?type=OPEN&limit=1", key)
    assert len(body["items"]) == 1 and body["nextCursor"]
    _, more = await get(http, server, f"/events?type=OPEN&limit=1&cursor={body['nextCursor']}", key)
    assert len(more["items"]) == 1 and more["items"][0]["account"] != body["items"][0]["account"]
    _, body = await get(http, server, "/events?from=0&to=1", key)
    assert body["items"] == []
    _, body = await get(http, server, "/system-trades", key)
    assert [(t["account"], t["positionId"], t["magic"]) for t in body["items"]] == [("acc-2", 22, 7001)]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("type=BUY", "type"),
        ("from=yesterday", "from"),
        ("cursor=-4", "cursor"),
        ("account=no%20spaces", "account"),
    ],
)
async def test_bad_query_parameters_are_named(server, http, query, param):
    key = await issue_key(server)
    status, body = await get(http, server, f"/events?{query}", key)
    assert status == 400 and f"'{param}'" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/events?from=2000&to=1000", "from"),
        ("/alerts?from=2000&to=1000", "from"),  # DynamoDB refused the range: a 503 there, [] elsewhere
        ("/system-trades?type=CLOSE", "type"),  # was accepted, and ignored by every engine
        # Parameters a route does not take were ignored: the answer was everything, unfiltered.
        ("/events?since=5", "since"),  # the realtime API's name for resuming
        ("/alerts?severity=CRITICAL", "severity"),
        ("/events?symbol=EURUSD", "symbol"),
        ("/positions?acount=acc-1", "acount"),
        ("/accounts?status=live", "status"),
        ("/accounts/acc-1?x=1", "x"),
    ],
)
async def test_a_query_that_cannot_mean_anything_is_refused_by_name(server, http, path, param):
    status, body = await get(http, server, path, await issue_key(server))
    assert status == 400 and f"'{param}'" in body["error"]["message"]


async def test_unknown_routes_and_methods_answer_json_like_every_other_error(server, http):
    key = await issue_key(server)
    status, body = await get(http, server, "/nope", key)
    assert status == 404 and body["error"]["code"] == "not_found" and "/api/v1/nope" in body["error"]["message"]
    async with http.get(server.url + "/api/v1/alerts/x/ack", headers={"x-api-key": key}) as r:
        body = await r.json()
        assert r.status == 405 and body["error"]["code"] == "method_not_allowed" and "POST" in body["error"]["message"]


async def test_reading_the_accounts_creates_no_live_state(server, http):
    """Listing the accounts made every issued-token account a live view: its /equity answered 200 [] instead
    of 404, and the metrics counted it."""
    key = await issue_key(server)
    await issue_token(server, "acc-9")
    assert (await get(http, server, "/accounts/acc-9/equity", key))[0] == 404
    _, body = await get(http, server, "/accounts", key)
    assert [a["status"] for a in body["items"] if a["id"] == "acc-9"] == ["never"]
    status, one = await get(http, server, "/accounts/acc-9", key)
    assert status == 200 and one["openPositions"] == []
    assert (await get(http, server, "/accounts/acc-9/equity", key))[0] == 404
    assert "acc-9" not in server.hub.state.accounts


async def test_alerts_come_in_pages_with_a_cursor(server, http):
    ea = await EA.connect(http, server, await issue_token(server, "acc-1"))
    await ea.greet()
    errors = [{"type": "error", "seq": n, "id": f"e{n}", "code": "X", "message": "m", "ts": 5_000} for n in range(1, 6)]
    await ea.send(errors)  # five alerts raised in one millisecond
    await ea.wait_ack(5)
    key = await issue_key(server)
    seen, path = [], "/alerts?limit=2"
    while path:
        status, body = await get(http, server, path, key)
        assert status == 200
        seen += [a["id"] for a in body["items"]]
        path = f"/alerts?limit=2&cursor={body['nextCursor']}" if body["nextCursor"] else None
    assert len(seen) == len(set(seen)) == 5
    for bad in ("yesterday", "².1", "99999999999999999999.1"):  # a superscript is a digit to isdigit()
        status, body = await get(http, server, f"/alerts?cursor={bad}", key)
        assert status == 400 and "'cursor'" in body["error"]["message"], bad


async def test_openapi_document_is_public_and_lists_the_endpoints(server, http):
    status, doc = await get(http, server, "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    # Every route of the REST API is in it, with its method, and nothing that is not a route.
    app = web.Application()
    api.add_routes(app)
    routes = {
        (r.resource.canonical.removeprefix(api.PREFIX), r.method.lower())
        for r in app.router.routes()
        if r.method in ("GET", "POST")
    }
    assert {(path, method) for path, ops in doc["paths"].items() for method in ops} == routes
    assert {"PositionEvent", "Position", "Alert"} <= set(doc["components"]["schemas"])
    # The alerts query's parameters are the ones the handler reads (a wrong one is named: see above).
    assert {p["name"] for p in doc["paths"]["/alerts"]["get"]["parameters"]} == {
        "account",
        "type",
        "state",
        "from",
        "to",
        "limit",
        "cursor",
    }


async def test_metrics_need_a_key_and_count_what_happened(server, http, fleet):
    async with http.get(server.url + "/api/v1/metrics") as r:
        assert r.status == 401
    key = await issue_key(server)
    async with http.get(server.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert values["tradewire_ea_sessions"] == 2
    assert values['tradewire_accounts{status="live"}'] == 2
    assert values["tradewire_ea_durable_total"] == 2
    assert values["tradewire_store_commit_seconds_count"] >= 1
    assert values["tradewire_store_operations_total"] >= 2
    assert values["tradewire_log_records_dropped_total"] == 0  # exported; tests/test_logs.py counts drops
    assert values["tradewire_realtime_setups_waited_total"] == 0  # exported; test_realtime_turns.py counts
    # What an operator watches a long run by (the soak reads these too).
    assert values["process_resident_memory_bytes"] > 10 * 2**20 and values["process_open_fds"] > 3
    assert values["tradewire_sqlite_memory_bytes"] > 0


async def test_metrics_time_the_collectors_pauses_until_the_hub_stops(tmp_path, http):
    callbacks = len(gc.callbacks)
    srv = Server(make_settings(tmp_path))
    await srv.start()
    try:
        gc.collect(1)
        gc.collect(2)
        key = await issue_key(srv)
        async with http.get(srv.url + "/api/v1/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
            text = await r.text()
    finally:
        await srv.stop()
    count = {g: re.search(rf'^tradewire_gc_pause_seconds_count{{generation="{g}"}} (\S+)$', text, re.M) for g in "12"}
    assert all(m is not None and float(m.group(1)) >= 1 for m in count.values()), text
    # Every generation's collections are counted too, generation 0 (not timed) included.
    gen0 = re.search(r'^python_gc_collections_total{generation="0"} (\S+)$', text, re.M)
    assert gen0 is not None and 0 < float(gen0.group(1)) <= gc.get_stats()[0]["collections"], text
    assert len(gc.callbacks) == callbacks  # a stopped hub times nothing more


async def test_equity_series_is_bucketed_per_minute(server, http, fleet):
    key = await issue_key(server)
    status, body = await get(http, server, "/accounts/acc-1/equity", key)
    assert status == 200 and body["bucketMs"] == 60_000
    [point] = body["items"]
    assert point["equity"] == 10_000.0 and point["ts"] % 60_000 == 0
    assert (await get(http, server, "/accounts/nobody/equity", key))[0] == 404


async def test_huge_integers_in_queries_are_a_named_400_not_a_500(server, http):
    key = await issue_key(server)
    status, body = await get(http, server, "/events?from=18446744073709551616", key)
    assert status == 400 and "'from'" in body["error"]["message"]


async def test_after_a_restart_accounts_that_had_connected_are_lost_not_never(tmp_path, http):
    from tradewire.app import Server

    from conftest import make_settings

    settings = make_settings(tmp_path)
    srv = Server(settings)
    await srv.start()
    ea = await EA.connect(http, srv, await issue_token(srv, "acc-1"))
    await ea.greet()
    await ea.close()
    await srv.stop()
    async with running(settings) as srv:
        key = await issue_key(srv)
        _, body = await get(http, srv, "/accounts/acc-1", key)
        assert body["status"] == "lost"


async def test_open_positions_come_in_pages_by_account_then_id(server, http):
    """The whole fleet's positions in one answer was built on the event loop (200 accounts at their limit: 46 MB,
    a third of a second during which no EA was acked): now pages of at most 1,000, with a cursor."""
    key = await issue_key(server)
    for account, pids in (("acc-b", [3, 1]), ("acc-a", [7, 2, 9])):
        ea = await EA.connect(http, server, await issue_token(server, account))
        await ea.greet()
        await ea.send({"type": "positions", "ts": 1, "positions": [position(p) for p in pids]})
        await ea.send(account_state())
    for _ in range(100):  # both snapshots applied (frames are read apart from this request)
        _, body = await get(http, server, "/positions", key)
        if len(body["items"]) == 5:
            break
        await asyncio.sleep(0.05)
    seen, path = [], "/positions?limit=2"
    for _ in range(50):
        _, body = await get(http, server, path, key)
        seen += [(p["account"], p["id"]) for p in body["items"]]
        assert len(body["items"]) <= 2
        if body["nextCursor"] is None:
            break
        path = f"/positions?limit=2&cursor={body['nextCursor']}"
    assert seen == [("acc-a", 2), ("acc-a", 7), ("acc-a", 9), ("acc-b", 1), ("acc-b", 3)]
    _, body = await get(http, server, "/positions", key)
    assert len(body["items"]) == 5 and body["nextCursor"] is None
    status, body = await get(http, server, "/positions?cursor=nope", key)
    assert status == 400 and "'cursor'" in body["error"]["message"]
