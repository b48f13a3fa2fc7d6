"""MT4's path: POST /ea/v1/batch over a real socket."""

from tradewire.app import Server
from tradewire.store.base import StoreError

from conftest import make_settings
from helpers import account_state, batch, db_rows, hello, issue_token, position_event, running, sqlite_locked


async def test_batch_is_stored_and_acked_after_commit(server, http):
    token = await issue_token(server, "mt4-1")
    hello_mt4 = {k: v for k, v in hello(platform="MT4").items() if k != "type"}  # MT4 may omit "type"
    status, body = await batch(
        http, server, token, {"hello": hello_mt4, "messages": [account_state(), position_event(1), position_event(2)]}
    )
    assert status == 200 and body["ackedSeq"] == 2 and body["errors"] == []
    assert db_rows(server, "SELECT COUNT(*) FROM ea_inbox WHERE account = 'mt4-1'") == [(2,)]
    # the next POST within the liveness window needs no hello; a resend is acked, not stored again
    status, body = await batch(http, server, token, {"messages": [position_event(2), position_event(3, "CLOSE")]})
    assert status == 200 and body["ackedSeq"] == 3 and body["errors"] == []
    assert db_rows(server, "SELECT COUNT(*) FROM ea_inbox WHERE account = 'mt4-1'") == [(3,)]
    assert server.hub.state.summary("mt4-1", server.hub.clock()).status == "live"


async def test_messages_without_any_hello_are_refused(server, http):
    token = await issue_token(server, "mt4-1")
    status, body = await batch(http, server, token, {"messages": [position_event(1)]})
    assert status == 200 and body["errors"][0]["code"] == "hello_required" and body["ackedSeq"] == 0
    assert db_rows(server, "SELECT COUNT(*) FROM ea_inbox") == [(0,)]


async def test_a_terminal_switched_to_another_login_is_refused_before_it_writes(server, http):
    """File > Login to another account with the EA on the chart: the same token then said hello as another
    login, its empty snapshot closed this account's positions for good and its orders opened under it."""
    token = await issue_token(server, "mt4-1")
    status, _ = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": [position_event(1)]})
    assert status == 200
    snapshot = {"type": "positions", "ts": 1, "positions": []}
    other = {"hello": hello(platform="MT4", login=999001), "messages": [snapshot]}
    status, body = await batch(http, server, token, other)
    assert status == 409 and body["error"]["code"] == "login_changed" and "999001" in body["error"]["message"]
    assert db_rows(server, "SELECT event FROM position_events WHERE account = 'mt4-1'") == [("OPEN",)]
    assert [p.id for p in server.hub.state.accounts["mt4-1"].positions.values()] == [1001]


async def test_bad_messages_are_named_and_the_good_ones_stored(server, http):
    token = await issue_token(server, "mt4-1")
    msgs = [position_event(1), {"type": "account"}, position_event(2, account="other"), position_event(3)]
    status, body = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": msgs})
    assert status == 200 and body["ackedSeq"] == 3
    codes = {(e["index"], e["code"]) for e in body["errors"]}
    assert codes == {(1, "invalid_message"), (2, "wrong_account")}
    assert db_rows(server, "SELECT msg_id FROM ea_inbox ORDER BY seq") == [("open-1001-1",), ("open-1001-3",)]


async def test_auth_and_body_errors(server, http):
    token = await issue_token(server, "mt4-1")
    assert (await batch(http, server, None, {"messages": []}))[0] == 401
    status, body = await batch(http, server, "twe_bad", {"messages": []})
    assert status == 401 and "invalid" in body["error"]["message"]
    revoked, info = await server.store.add_token("mt4-2")
    await server.store.revoke_token(info.tokenId)
    assert (await batch(http, server, revoked, {"hello": hello(platform="MT4"), "messages": []}))[0] == 401
    status, body = await batch(http, server, token, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == "bad_json"
    status, body = await batch(http, server, token, {"messages": 5})
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = await batch(http, server, token, {"hello": {"platform": "MT9"}, "messages": []})
    assert status == 400 and "hello" in body["error"]["message"]
    status, body = await batch(http, server, token, {"helo": {}, "messages": []})
    assert status == 400 and "helo" in body["error"]["message"]


async def test_oversize_body_is_413(tmp_path, http):
    srv = Server(make_settings(tmp_path, max_frame_bytes=4096))
    await srv.start()
    try:
        token = await issue_token(srv, "mt4-1")
        status, body = await batch(http, srv, token, raw=b'{"messages": [' + b" " * 5000 + b"]}")
        assert status == 413 and "4096" in body["error"]["message"]
    finally:
        await srv.stop()


async def test_store_failure_is_503_and_acks_nothing(tmp_path, http):
    settings = make_settings(tmp_path)
    settings.store.url += "?busy_timeout_ms=200"
    async with running(settings) as srv:
        token = await issue_token(srv, "mt4-1")
        with sqlite_locked(srv.store.path):
            status, body = await batch(
                http, srv, token, {"hello": hello(platform="MT4"), "messages": [position_event(1)]}
            )
        assert status == 503 and body["error"]["code"] == "store_unavailable" and "ackedSeq" not in body
        status, body = await batch(http, srv, token, {"hello": hello(platform="MT4"), "messages": [position_event(1)]})
        assert status == 200 and body["ackedSeq"] == 1


async def test_hello_is_needed_again_after_the_liveness_window(server, http):
    token = await issue_token(server, "mt4-1")
    status, body = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": []})
    assert status == 200
    server.hub.state.accounts["mt4-1"].last_seen -= 10_000  # 3 heartbeats (3 s here) have passed
    status, body = await batch(http, server, token, {"messages": [position_event(1)]})
    assert body["errors"][0]["code"] == "hello_required"


async def test_an_mt4_account_going_silent_is_published_as_lost(server, http):
    from helpers import Subscriber, issue_key

    sub = await Subscriber.connect(http, server, await issue_key(server))
    await sub.subscribe("a", "/trading/accounts/mt4-1")
    token = await issue_token(server, "mt4-1")
    status, _ = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": []})
    assert status == 200
    assert (await sub.event(status="live"))["id"] == "mt4-1"
    server.hub.state.accounts["mt4-1"].last_seen -= 10_000  # 3 heartbeats of silence
    assert (await sub.event(status="lost", timeout=5))["id"] == "mt4-1"  # pushed, not only on a REST read


async def test_ticks_past_the_accounts_symbol_limit_are_named_in_the_answer(tmp_path, http):
    settings = make_settings(tmp_path)
    settings.limits.max_symbols_per_account = 1
    async with running(settings) as srv:
        token = await issue_token(srv, "mt4-1")
        tick = {"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.1, "ask": 1.1002, "ts": 1}]}
        more = {"type": "ticks", "ticks": [{"symbol": "GBPUSD", "bid": 1.3, "ask": 1.3002, "ts": 2}]}
        body = {"hello": hello(platform="MT4"), "messages": [tick, more, position_event(1)]}
        status, answer = await batch(http, srv, token, body)
        assert status == 200 and answer["ackedSeq"] == 1
        [error] = answer["errors"]
        assert (error["code"], error["index"]) == ("too_many_symbols", 1) and "'GBPUSD'" in error["message"]
        assert set(srv.hub.state.prices) == {"EURUSD"}


async def test_a_store_that_cannot_be_read_is_503_not_a_server_error(server, http, monkeypatch):
    """The token lookup, the hello's reads and the acked seq read the store too: when one fails, the EA is
    told to retry (503 store_unavailable), as when a commit fails, not answered 500."""
    token = await issue_token(server, "mt4-1")

    async def down(*_args):
        raise StoreError("injected: the store cannot be read")

    for method in ("open_positions", "acked_seq", "token_account"):  # the last one: before the cache has it
        with monkeypatch.context() as patch:
            patch.setattr(server.store, method, down)
            if method == "token_account":
                token = await issue_token(server, "mt4-2")
            status, body = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": []})
        assert status == 503 and body["error"]["code"] == "store_unavailable", (method, body)
    status, body = await batch(http, server, token, {"hello": hello(platform="MT4"), "messages": [position_event(1)]})
    assert status == 200 and body["ackedSeq"] == 1
