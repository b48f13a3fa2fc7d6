"""Golden protocol messages (tests/fixtures/protocol/): the schema decodes them, a real hub accepts them
over a real socket, and what the agent produces is of the same kinds.

The fixtures are the shared reference the MQL EAs, the agent and the hub are held to: a protocol change
that breaks one of them fails here (or in test_ea_schema.py, which checks the MQL sources' field names).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tradewire.agent import run_agent
from tradewire.agent.fake import FakeMT5
from tradewire.ingest import protocol as p
from tradewire.store.base import AlertQuery, EventQuery

from helpers import EA, issue_token

FIXTURES = Path(__file__).parent / "fixtures" / "protocol"
WS_FILES = ["hello", "account", "positions", "ticks", "heartbeat", "position", "error", "batch"]  # in sending order
WS_ACCOUNT = "golden-1"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def frames(name: str) -> list[Any]:
    return load(name)["frames"]


def messages_of(frame: Any) -> list[dict]:
    return frame if isinstance(frame, list) else [frame]


def golden_messages(kind: str | None = None) -> list[dict]:
    """Every message in the WebSocket fixtures, in sending order (of one type when given)."""
    every = [m for name in WS_FILES for f in frames(name) for m in messages_of(f)]
    return [m for m in every if kind is None or m["type"] == kind]


def durable_seqs() -> list[int]:
    return [m["seq"] for m in golden_messages() if m["type"] in ("position", "error")]


def test_there_is_a_fixture_for_every_message_type():
    names = {f.stem for f in FIXTURES.glob("*.json")}
    assert set(p.MESSAGE_TYPES) <= names
    assert names == set(WS_FILES) | {"http_batch"}
    for name in p.MESSAGE_TYPES:
        assert load(name)["type"] == name
        assert all(m["type"] == name for f in frames(name) for m in messages_of(f))


def test_durable_seqs_increase_in_sending_order_and_ids_are_unique():
    seqs = durable_seqs()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    ids = [m["id"] for m in golden_messages() if "seq" in m]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", WS_FILES)
def test_every_golden_frame_decodes_into_messages(name):
    for frame in frames(name):
        raw = json.dumps(frame, ensure_ascii=False).encode()
        decoded = p.decode_frame(raw)
        assert decoded, frame
        errors = [m for m in decoded if isinstance(m, p.ErrorReply)]
        assert not errors, f"{name}: {errors}"
        tags = [type(m).__struct_config__.tag for m in decoded]
        assert tags == [m["type"] for m in messages_of(frame)]


def test_golden_edge_cases_decode_as_documented():
    flat = p.decode_frame(json.dumps(frames("account")[1]))[0]
    assert isinstance(flat, p.AccountMsg) and flat.marginLevel is None
    money = p.decode_frame(json.dumps(frames("account")[2]))[0]
    assert money.marginMode == "money" and money.equity < 0
    crypto = p.decode_frame(json.dumps(frames("positions")[0]))[0].positions[2]
    assert crypto.volume == 0.00012345 and crypto.ticket is None and crypto.sl is None
    opened = p.decode_frame(json.dumps(frames("position")[0], ensure_ascii=False).encode())[0]
    assert opened.position.comment == 'hedge "A" \\ leg\n1'
    assert p.decode_frame(json.dumps(frames("position")[3], ensure_ascii=False))[0].position.comment == "ヘッジ 🚀 €"
    assert p.decode_frame(json.dumps(frames("heartbeat")[1]))[0].ts == 0


def test_http_batch_bodies_decode():
    for body in load("http_batch")["bodies"]:
        if "hello" in body:
            msgspec.json.decode(json.dumps(body["hello"]), type=p.Hello)
        items = [msgspec.Raw(json.dumps(m).encode()) for m in body["messages"]]
        assert not [m for m in p.decode_items(items) if isinstance(m, p.ErrorReply)]


async def test_a_real_hub_accepts_every_golden_frame_and_acks_the_durable_ones(server, http):
    # Each hello on a session of its own: they are different trading accounts (logins), and an account id
    # greeted as one login refuses a hello from another (login_changed).
    for i, frame in enumerate(frames("hello")[1:]):
        other = await EA.connect(http, server, await issue_token(server, f"golden-hello-{i}"))
        await other.send(json.dumps({k: v for k, v in frame.items() if k != "account"}, ensure_ascii=False))
        await other.expect("welcome")
        await other.close()
    ea = await EA.connect(http, server, await issue_token(server, WS_ACCOUNT))
    for name in WS_FILES:
        for frame in frames(name)[:1] if name == "hello" else frames(name):
            await ea.send(json.dumps(frame, ensure_ascii=False))
            if messages_of(frame)[0]["type"] == "hello":
                await ea.expect("welcome")
    last = durable_seqs()[-1]
    await ea.wait_ack(last)
    await ea.send({"type": "heartbeat"})  # a round trip more: any late error reply has arrived by then
    await asyncio.sleep(0.2)
    await ea.close()
    assert [m for m in ea.inbox if m["type"] == "error"] == []
    assert await server.store.acked_seq(WS_ACCOUNT) == last
    stored = (await server.store.events(EventQuery(account=WS_ACCOUNT, limit=1000))).items
    by_msg = {e.msgId for e in stored if e.source == "ea"}
    assert {m["id"] for f in frames("position") for m in messages_of(f)} <= by_msg
    alerts = await server.store.alerts(AlertQuery(account=WS_ACCOUNT, limit=100))
    assert {a.data["eaMessageId"] for a in alerts if a.type == "SYSTEM_ERROR"} == {"error-10", "error-11"}


async def test_a_real_hub_accepts_the_http_batch_bodies(server, http):
    fixture = load("http_batch")
    token = await issue_token(server, fixture["account"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    highest = 0
    for body in fixture["bodies"]:
        highest = max([highest, *(m["seq"] for m in body["messages"] if "seq" in m)])
        async with http.post(
            server.url + "/ea/v1/batch", data=json.dumps(body, ensure_ascii=False), headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        assert answer["errors"] == [] and answer["ackedSeq"] == highest


async def test_the_agents_frames_are_golden_kinds(server, tmp_path):
    """Run the agent through a trade's life and decode every frame it sent with the hub's codec."""
    token = await issue_token(server, "golden-agent")
    fake = FakeMT5()
    fake.quote("EURUSD", 1.085, 1.08512)
    sent: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_agent(
            server.url,
            token,
            mt5=fake,
            outbox=tmp_path / "o.json",
            stop=stop,
            on_frame=sent.append,
            interval=0.05,
            symbols=["EURUSD"],
            snapshot_every=0.2,
            tz_probe=0.05,
        )
    )
    try:
        for _ in range(200):  # connected (its first snapshot went out): what it trades now, it sees
            if any('"positions"' in f for f in sent):
                break
            await asyncio.sleep(0.02)
        pid = fake.open("EURUSD", "buy", 0.1, 1.08512)
        await asyncio.sleep(0.3)
        fake.modify(pid, sl=1.08)
        await asyncio.sleep(0.3)
        fake.close(pid, 1.0862, 10.8)
        for _ in range(100):  # until a heartbeat went out too (heartbeat_sec is 1 in tests)
            if any('"heartbeat"' in f for f in sent) and await server.store.acked_seq("golden-agent") >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    produced: dict[str, set[str]] = {}
    events = []
    for text in sent:
        decoded = p.decode_frame(text.encode())
        assert not [m for m in decoded if isinstance(m, p.ErrorReply)], text
        events += [m.event for m in decoded if isinstance(m, p.PositionMsg)]
        for msg in messages_of(json.loads(text)):
            produced.setdefault(msg["type"], set()).update(msg)
    assert set(produced) == {"hello", "account", "positions", "ticks", "heartbeat", "position"}
    assert events == ["OPEN", "MODIFY", "CLOSE"]
    # Every field the agent writes appears in the golden messages of that type: the fixtures show it all.
    for kind, keys in produced.items():
        golden = set().union(*(set(m) for m in golden_messages(kind)))
        assert keys <= golden, f"{kind}: the agent writes {keys - golden} that no golden {kind} shows"
