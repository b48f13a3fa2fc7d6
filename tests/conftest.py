"""Shared fixtures: a real hub on a free port with a real SQLite file, and EA-side helpers."""

from __future__ import annotations

import aiohttp
import pytest

from tradewire.app import Server
from tradewire.config import load_settings


def make_settings(tmp_path, **server):
    return load_settings(
        env={},
        overrides={
            "server": {"port": 0, "heartbeat_sec": 1, "auth_cache_s": 0, "drain_timeout_s": 5, **server},
            "store": {"url": f"sqlite:///{tmp_path}/hub.db"},
            "system": {"magic_numbers": [7001, 7002]},
        },
    )


def fast_alert_settings(tmp_path, **server):
    """Alerts on short timers, markets open all week: alerts happen within a test's patience, any day."""
    from tradewire.config import MarketHours

    s = make_settings(tmp_path, **server)
    s.alerts.connection_lost_after_s = 1.0
    s.alerts.stale_after_s = 1.0
    s.alerts.check_interval_s = 0.1
    always = MarketHours(open_day=0, open="00:00", close_day=0, close="00:00")
    s.alerts.market_hours = {"fx": always, "metal": always, "index": always}
    return s


@pytest.fixture
async def server(tmp_path):
    srv = Server(make_settings(tmp_path))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
