"""Typed keys for what the aiohttp application carries."""

from aiohttp import web

from tradewire.hub import Hub

HUB = web.AppKey("hub", Hub)
