"""The short soak that runs in `make test` (the long one: `make soak MINUTES=60`): resources stay bounded."""

from .soak import soak


async def test_short_soak_keeps_memory_and_descriptors_bounded():
    samples = await soak(seconds=12, accounts=20, rate=5, sample_s=3, out=lambda line: None)
    assert len(samples) >= 3
    first, last = samples[0], samples[-1]
    assert last["fds"] <= first["fds"] + 10  # no descriptor leak
    assert last["rss_mib"] < 300  # bounded (a leak at this load would show within the run)
    assert 0 < last["sqlite_mib"] < last["rss_mib"]  # the hub reports SQLite's share of it
    assert sum(s["msgs_per_s"] > 0 for s in samples) >= len(samples) - 1  # under load (the last may be the end)
    # The timing subscriber (a process of its own) saw ticks and timed them: finite, positive latencies.
    timed = [s for s in samples if s["p50_ms"] == s["p50_ms"]]  # NaN: nothing arrived in that sample
    assert len(timed) >= len(samples) - 1
    assert all(0 < s["p50_ms"] <= s["p99_ms"] < 10_000 for s in timed)
