"""Limits that keep one client from hurting the others: connection caps, connect and message rates. Pure."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def retry_after(wait: float) -> str:
    """A Retry-After header for a wait in seconds: whole seconds, rounded up (a client retrying sooner would
    only be refused again), at least 1."""
    return str(max(1, math.ceil(wait)))


class TokenBucket:
    """`rate` tokens a second, up to `burst`. `take(n)` says how long to wait (0 when within the rate)."""

    __slots__ = ("at", "burst", "clock", "rate", "tokens")  # one per subscriber connection: kept small

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.at = clock()

    def take(self, n: int = 1) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class ConnectionCaps:
    """Open WebSocket connections, overall and per client address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.total = 0
        self.by_ip: dict[str, int] = {}
        self.refused = 0

    def admit(self, ip: str) -> str | None:
        """Take a slot, or say why not."""
        if self.total >= self.max_total:
            self.refused += 1
            return f"the hub is at its connection limit ({self.max_total})"
        if self.by_ip.get(ip, 0) >= self.max_per_ip:
            self.refused += 1
            return f"too many connections from {ip} (limit {self.max_per_ip})"
        self.total += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.by_ip.get(ip, 1) - 1
        if left > 0:
            self.by_ip[ip] = left
        else:
            self.by_ip.pop(ip, None)


class CredentialRates:
    """Something a second per credential: WebSocket connects (an EA's account, a subscriber's API key),
    REST requests (an API key).

    A client that reconnects in a loop (a script gone wrong, two terminals on one token taking the
    session from each other) costs the hub a session and, for a subscriber, its snapshot and a share
    of every fan-out, each time; one that polls the REST API in a loop, a store query and its encoding
    each time. Past `burst`, such a client is refused for the price of an HTTP answer. Per credential,
    not per address: behind a proxy every client shares one."""

    MAX_TRACKED = 100_000  # bounded: the table is cleared (everyone's burst restored) rather than grown

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    def admit(self, who: str) -> float:
        """0 when this one may go on, else the seconds until the next one may."""
        bucket = self.buckets.get(who)
        if bucket is None:
            if len(self.buckets) >= self.MAX_TRACKED:
                self.buckets.clear()
            bucket = self.buckets[who] = TokenBucket(self.rate, self.burst, self.clock)
        wait = bucket.take()
        if wait:
            bucket.tokens += 1  # a refused one takes nothing: the client is not locked out for longer
            self.refused += 1
        return wait
