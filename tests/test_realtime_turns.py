"""Turns: connection set-ups, one per event-loop turn, so that a herd of them does not hold the loop at once."""

import asyncio
from itertools import pairwise

from tradewire.realtime.turns import Turns


class LoopTurns:
    """Counts event-loop turns: a callback that schedules itself again runs once per turn."""

    def __init__(self) -> None:
        self.n = 0
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_an_uncontended_set_up_does_not_wait():
    turns, loop_turns = Turns(), LoopTurns()
    before = loop_turns.n
    await turns.take()
    assert loop_turns.n == before  # no loop turn passed: returned without suspending
    await asyncio.sleep(0.01)
    before = loop_turns.n
    await turns.take()  # the earlier turn is long over
    assert loop_turns.n == before
    loop_turns.stop()


async def test_a_herd_gets_one_turn_per_loop_turn_in_arrival_order():
    turns, loop_turns = Turns(), LoopTurns()
    got: list[tuple[int, int]] = []

    async def set_up(i: int) -> None:
        await turns.take()
        got.append((i, loop_turns.n))

    await asyncio.gather(*(set_up(i) for i in range(10)))
    loop_turns.stop()
    assert [i for i, _ in got] == list(range(10))
    at = [n for _, n in got]
    assert all(b > a for a, b in pairwise(at)), at  # never two in the same loop turn
    assert len(turns) == 0 and turns.waited == 9  # the first went at once


async def test_a_set_up_abandoned_while_waiting_passes_its_turn_on():
    turns = Turns()
    holder, gone, waiting = (asyncio.ensure_future(turns.take()) for _ in range(3))
    await asyncio.sleep(0)  # all three have asked: the first has this loop turn, two wait
    assert holder.done() and len(turns) == 2
    gone.cancel()  # its client left before its turn
    await asyncio.wait_for(waiting, 1)
    assert gone.cancelled() and len(turns) == 0
