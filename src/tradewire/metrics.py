"""Prometheus metrics. Counters are read from the live counters at scrape time (no double bookkeeping);
the latency histograms are fed by the gateway's writer, the store's writer thread and the collector."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tradewire import logs
from tradewire.hub import Hub
from tradewire.realtime.gateway import Gateway
from tradewire.store.base import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HUB_COUNTERS = {
    "frames": "EA frames received",
    "messages": "EA messages received",
    "durable": "durable EA messages queued to the store",
    "errors": "EA messages refused with an error",
    "reconciled": "position events inferred from snapshots",
    "throttled": "times an EA was slowed down (or a batch refused with 429) for its message rate",
    "positions_left_out": "position events and snapshots left out of a live view: the account was at "
    "[limits] max_positions_per_account",
}
GATEWAY_COUNTERS = {
    "connections_total": "subscriber connections accepted",
    "messages_in": "frames received from subscribers",
    "deliveries": "data frames queued for subscribers",
    "frames_out": "frames written to subscribers",
    "writes": "WebSocket writes to subscribers (a batch is one)",
    "conflated": "latest-wins frames replaced before they were written",
    "closed_slow": "subscribers closed for a backlog over its bound",
    "closed_stalled": "subscribers closed for taking no writes for [realtime] stall_close_s",
    "throttled": "times a subscriber connection's next message waited: it sent more than [realtime] messages_per_s",
}


class _LiveCollector(Collector):
    def __init__(self, hub: Hub, gateway: Gateway, store: Store) -> None:
        self.hub, self.gateway, self.store = hub, gateway, store

    def collect(self) -> Iterator[Metric]:
        now = self.hub.clock()
        statuses = {"live": 0, "lost": 0, "never": 0}
        for view in self.hub.state.accounts.values():
            statuses[view.status(now, self.hub.state.http_live_ms)] += 1
        accounts = GaugeMetricFamily("tradewire_accounts", "accounts known to the live cache", labels=["status"])
        for status, count in statuses.items():
            accounts.add_metric([status], count)
        yield accounts
        yield GaugeMetricFamily("tradewire_ea_sessions", "open EA WebSocket sessions", value=len(self.hub.sessions))
        yield GaugeMetricFamily(
            "tradewire_subscriber_connections", "open subscriber connections", value=len(self.gateway.connections)
        )
        yield GaugeMetricFamily("tradewire_subscriptions", "active subscriptions", value=len(self.gateway.index))
        yield GaugeMetricFamily(
            "tradewire_subscriber_connections_parked",
            "subscriber connections not taking writes (parked: latest-wins values wait for them in one place)",
            value=self.gateway.missed.parked,
        )
        for key, doc in HUB_COUNTERS.items():
            yield CounterMetricFamily(f"tradewire_ea_{key}", doc, value=self.hub.counters[key])
        for key, doc in GATEWAY_COUNTERS.items():
            name = key.removesuffix("_total")
            yield CounterMetricFamily(f"tradewire_realtime_{name}", doc, value=self.gateway.stats[key])
        yield CounterMetricFamily(
            "tradewire_realtime_late_arrivals",
            "durable publications that arrived after a higher offset (another node's commit published later): kept "
            "for subscribers resuming with since",
            value=self.gateway.late.noted,
        )
        yield CounterMetricFamily(
            "tradewire_realtime_setups_waited",
            "connects (EA and subscriber) and subscribes that waited a loop turn for their set-up: clients arriving "
            "together",
            value=self.gateway.turns.waited,
        )
        yield CounterMetricFamily(
            "tradewire_connections_refused", "WebSocket connections refused by the caps", value=self.hub.caps.refused
        )
        yield CounterMetricFamily(
            "tradewire_connects_throttled",
            "WebSocket connects refused (429) for a credential connecting faster than its rate",
            value=self.hub.connects.refused,
        )
        yield CounterMetricFamily(
            "tradewire_requests_throttled",
            "REST requests refused (429) for an API key asking faster than [limits] requests_per_s",
            value=self.hub.requests.refused,
        )
        yield GaugeMetricFamily(
            "tradewire_websocket_connections", "open WebSocket connections", value=self.hub.caps.total
        )
        yield GaugeMetricFamily("tradewire_tcp_connections", "open TCP connections", value=self.hub.tcp_caps.total)
        yield CounterMetricFamily(
            "tradewire_tcp_connections_refused",
            "TCP connections closed on accept: past the caps per address or overall (tcp_guard.py)",
            value=self.hub.tcp_caps.refused,
        )
        yield CounterMetricFamily("tradewire_store_commits", "store transactions committed", value=self.store.commits)
        yield CounterMetricFamily(
            "tradewire_store_operations", "store operations committed", value=self.store.committed_ops
        )
        # Only the SQLite store has a heap of its own in this process worth watching (the soak's RSS).
        memory_bytes = getattr(self.store, "memory_bytes", lambda: None)()
        if memory_bytes is not None:
            yield GaugeMetricFamily(
                "tradewire_sqlite_memory_bytes", "heap held by SQLite (page caches, statements)", value=memory_bytes
            )
        yield GaugeMetricFamily(
            "tradewire_gc_frozen_objects",
            "objects `tradewire serve` moved out of the garbage collector's reach once started (gc.freeze)",
            value=gc.get_freeze_count(),
        )
        yield CounterMetricFamily(
            "tradewire_log_records_dropped",
            "log records dropped: stderr was not read",
            value=logs.dropped(),
        )
        stats = getattr(self.hub.notifier, "stats", None)
        if stats is not None:  # webhooks: a revoked hook URL loses every alert with one log line each
            deliveries = CounterMetricFamily(
                "tradewire_webhook_deliveries",
                "webhook deliveries by outcome (sent, failed: given up or refused, dropped: queue full, retried, "
                "suppressed: an EA error repeated within [notify] repeat_errors_after_s)",
                labels=["outcome"],
            )
            for outcome in ("sent", "failed", "dropped", "retried", "suppressed"):
                deliveries.add_metric([outcome], stats.get(outcome, 0))
            yield deliveries


class _GcPauses:
    """How long each collection of the older generations held the event loop (a `gc.callbacks` entry).

    Generation 0 is left out: its collections are many and short, and timing each would cost more than
    it tells. A full (generation 2) collection walked the whole heap for 13-30 ms before `gc.freeze()`."""

    def __init__(self, histogram: Histogram) -> None:
        self.by_generation = {1: histogram.labels("1"), 2: histogram.labels("2")}
        self.started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif (child := self.by_generation.get(info["generation"])) is not None:
            child.observe(time.perf_counter() - self.started)


class Metrics:
    def __init__(self, hub: Hub, gateway: Gateway, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.fanout_latency = Histogram(
            "tradewire_fanout_latency_seconds",
            "time from a frame being queued for a subscriber to its write",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "tradewire_store_commit_seconds",
            "duration of one group commit (transaction, fsync included)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.commit_size = Histogram(
            "tradewire_store_commit_operations",
            "operations per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        gc_pause = Histogram(
            "tradewire_gc_pause_seconds",
            "time a garbage collection of generation 1 or 2 held the event loop",
            ["generation"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self._gc_pauses = _GcPauses(gc_pause)
        gc.callbacks.append(self._gc_pauses)
        self.registry.register(_LiveCollector(hub, gateway, store))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_open_fds, CPU
        # python_gc_collections_total by generation, generation 0 included (read from gc.get_stats() at a scrape):
        # what the pause histogram leaves out, and what tells whether a workload keeps making tracked objects.
        GCCollector(registry=self.registry)
        store.on_commit = self._on_commit
        gateway.on_flush = self.fanout_latency.observe

    def _on_commit(self, seconds: float, operations: int) -> None:
        self.commit_latency.observe(seconds)
        self.commit_size.observe(operations)

    def close(self) -> None:
        """Stop timing collections (a process may run hubs one after another, as the tests do)."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_pauses)

    def render(self) -> bytes:
        return generate_latest(self.registry)
