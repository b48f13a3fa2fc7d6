"""Brokers: the Broker interface and its engines (memory now; Redis for scale-out)."""

from tradewire.broker.base import Broker, Publication
from tradewire.broker.memory import MemoryBroker

__all__ = ["Broker", "MemoryBroker", "Publication"]
