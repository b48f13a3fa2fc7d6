from helpers import EA, db_rows, issue_token, position_event


async def test_open_is_acked_and_stored(server, http):
    token = await issue_token(server, "acc-1")
    ea = await EA.connect(http, server, token)
    welcome = await ea.greet()
    assert welcome["ackedSeq"] == 0
    await ea.send(position_event(1))
    assert (await ea.wait_ack(1))["seq"] == 1
    assert db_rows(server, "SELECT account, event, source FROM position_events") == [("acc-1", "OPEN", "ea")]
