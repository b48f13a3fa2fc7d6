"""The notifier's per-account queue: accounts take turns, and a full queue drops from the one flooding it."""

import asyncio

from tradewire.fairqueue import FairQueue


async def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while not q.empty():
        out.append(await q.get())
        q.task_done()
    return out


async def test_keys_take_turns_and_each_keeps_its_order():
    q: FairQueue[str] = FairQueue(100)
    for key, item in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("b", "b2")]:
        assert q.put(key, item) is None
    assert await drain(q) == ["a1", "b1", "c1", "a2", "b2", "a3"]


async def test_a_full_queue_drops_the_oldest_item_of_the_key_holding_the_most():
    q: FairQueue[str] = FairQueue(3)
    for n in range(1, 4):
        assert q.put("noisy", f"n{n}") is None
    assert q.put("quiet", "q1") == "n1"  # not q1, and not the newest of the noisy key
    assert q.put("noisy", "n4") == "n2"
    assert q.qsize() == 3
    assert await drain(q) == ["n3", "q1", "n4"]


async def test_join_waits_for_what_was_taken_to_be_handled():
    q: FairQueue[str] = FairQueue(2)
    await asyncio.wait_for(q.join(), 0.1)  # nothing put: done at once
    q.put("a", "a1")
    q.put("a", "a2")
    q.put("a", "a3")  # drops a1: a dropped item counts as done
    joined = asyncio.ensure_future(q.join())
    assert await q.get() == "a2"
    await asyncio.sleep(0)
    assert not joined.done()  # a2 taken but not handled, a3 still queued
    q.task_done()
    assert q.clear() == 1  # a3
    await asyncio.wait_for(joined, 0.1)


async def test_get_waits_for_an_item():
    q: FairQueue[str] = FairQueue(2)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.put("a", "a1")
    assert await asyncio.wait_for(getter, 0.1) == "a1"


async def test_urgent_items_go_first_and_are_dropped_last():
    """An account's STOP_OUT, then its EA's errors in a loop: the STOP_OUT was the oldest item of the key
    holding the most, so the first one a full queue dropped; and behind every other account's deliveries."""
    q: FairQueue[str] = FairQueue(4)
    q.put("other", "o1")
    q.put("acc", "STOP_OUT", urgent=True)
    dropped = [q.put("acc", f"err{n}") for n in range(1, 6)]
    assert dropped == [None, None, "err1", "err2", "err3"]  # the other lane's flood, never the urgent item
    assert await drain(q) == ["STOP_OUT", "o1", "err4", "err5"]
    q.put("a", "a1", urgent=True)
    q.put("b", "b1", urgent=True)
    q.put("a", "a2", urgent=True)
    assert q.put("b", "b2", urgent=True) is None and q.put("c", "c1", urgent=True) == "a1"  # urgent only: same rule
    assert await drain(q) == ["a2", "b1", "c1", "b2"]


async def test_a_flood_across_many_keys_drops_from_the_longest_without_scanning_them_all():
    q: FairQueue[str] = FairQueue(10_000)
    for n in range(9_999):
        q.put(f"acc-{n}", "x")
    q.put("loop", "e0")
    dropped = [q.put("loop", f"e{n}") for n in range(1, 2_001)]
    assert dropped == [f"e{n}" for n in range(2_000)]  # the looping key's own oldest, each time
    assert q.qsize() == 10_000
