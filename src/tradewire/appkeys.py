"""Typed keys for what the aiohttp application carries."""

from aiohttp import web

from tradewire.hub import Hub
from tradewire.metrics import Metrics
from tradewire.realtime.gateway import Gateway

HUB = web.AppKey("hub", Hub)
GATEWAY = web.AppKey("gateway", Gateway)
METRICS = web.AppKey("metrics", Metrics)
