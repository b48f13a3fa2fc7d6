"""The sans-I/O session core: hello first, one account per token, durable vs volatile."""

import json

from tradewire.ingest import protocol as p
from tradewire.ingest.session import Durable, Greet, Reply, SessionCore, Volatile
from tradewire.ingest.session import account_state as state_of
from tradewire.store.base import WriteResult

from helpers import account_state, hello, position_event


def feed(core, *msgs):
    return core.receive(json.dumps(list(msgs)) if len(msgs) > 1 else json.dumps(msgs[0]))


def test_messages_before_hello_are_refused_and_hello_opens_the_session():
    core = SessionCore("acc-1")
    [step] = feed(core, account_state())
    assert isinstance(step, Reply) and step.msg.code == p.HELLO_REQUIRED
    steps = feed(core, hello(), account_state(), position_event(1))
    assert [type(s) for s in steps] == [Greet, Volatile, Durable]


def test_durable_message_before_hello_names_its_id():
    [step] = feed(SessionCore("acc-1"), position_event(1, msg_id="m-1"))
    assert step.msg.code == p.HELLO_REQUIRED and step.msg.ref == "m-1"


def test_a_message_for_another_account_is_refused_and_the_rest_carry_on():
    core = SessionCore("acc-1", greeted=True)
    steps = feed(core, account_state(account="acc-2"), account_state(account="acc-1"), account_state())
    assert isinstance(steps[0], Reply) and steps[0].msg.code == p.WRONG_ACCOUNT
    assert "acc-1" in steps[0].msg.message and "acc-2" in steps[0].msg.message
    assert steps[0].msg.index == 0
    assert isinstance(steps[1], Volatile) and isinstance(steps[2], Volatile)


def test_hello_for_another_account_does_not_open_the_session():
    core = SessionCore("acc-1")
    [step] = feed(core, hello(account="acc-2"))
    assert isinstance(step, Reply) and not core.greeted


def test_outcomes_of_durable_writes():
    msg = p.PositionMsg(
        **{k: v for k, v in position_event(4).items() if k not in ("type", "position")},
        position=p.decode_frame(json.dumps(position_event(4)))[0].position,
    )
    assert SessionCore.outcome(msg, WriteResult("stored")) is None
    assert SessionCore.outcome(msg, WriteResult("duplicate")) is None  # a resend: just acked again
    conflict = SessionCore.outcome(msg, WriteResult("conflict", "id reused"))
    assert conflict.code == p.DUPLICATE_ID and conflict.ref == msg.id
    regress = SessionCore.outcome(msg, WriteResult("seq_not_increasing", "seq 4 is not above 9"))
    assert regress.code == p.SEQ_NOT_INCREASING


def test_the_margin_level_is_not_rounded_before_it_is_compared():
    """Rounded to 2 decimals, 100.004 % became 100 %: a margin call at a 100 % level the broker does not make."""
    msg = p.AccountMsg(ts=1, balance=10_000.0, equity=10_000.4, margin=10_000.0, freeMargin=0.4, marginCallLevel=100.0)
    state = state_of(msg)
    assert state.marginLevel is not None and state.marginLevel > 100.0
