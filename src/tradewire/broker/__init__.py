"""Brokers: the Broker interface and its engines, chosen by URL (memory:// or redis://)."""

from urllib.parse import urlsplit

from tradewire.broker.base import Broker, Publication
from tradewire.broker.memory import MemoryBroker
from tradewire.redact import redact_url

__all__ = ["Broker", "MemoryBroker", "Publication", "make_broker"]


def make_broker(url: str) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme in ("", "memory"):
        return MemoryBroker()
    if scheme in ("redis", "rediss"):
        try:
            from tradewire.broker.redis import RedisBroker
        except ImportError:
            raise ValueError("the Redis broker needs redis-py: pip install 'tradewire[redis]'") from None
        return RedisBroker(url)
    raise ValueError(
        f"broker URL {redact_url(url)!r}: unknown scheme {scheme!r}; expected memory:// or redis://HOST:PORT/DB"
    )
