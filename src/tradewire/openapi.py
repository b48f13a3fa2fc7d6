"""The OpenAPI 3.1 document for /api/v1, with schemas generated from the msgspec records."""

from __future__ import annotations

from typing import Any

import msgspec

from tradewire.model import Alert, PositionEvent, SystemTrade, Tick
from tradewire.state import AccountSummary, ExposureRow

_LIST = ("limit", "cursor")


def _param(name: str, description: str, schema: dict | None = None, where: str = "query") -> dict:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _ok(ref: str | None, description: str, paged: bool = False) -> dict:
    items = {"$ref": f"#/components/schemas/{ref}"} if ref else {"type": "object"}
    schema: dict[str, Any] = {"type": "object", "properties": {"items": {"type": "array", "items": items}}}
    if paged:
        schema["properties"]["nextCursor"] = {"type": ["string", "null"]}
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }


def build() -> dict:
    _, components = msgspec.json.schema_components(
        [AccountSummary, PositionEvent, SystemTrade, Alert, Tick, ExposureRow],
        ref_template="#/components/schemas/{name}",
    )
    ms = {"type": "integer", "description": "UTC milliseconds since the epoch"}
    paging = [
        _param("limit", "1-1000, default 100", {"type": "integer"}),
        _param("cursor", "nextCursor of the previous page", {"type": "integer"}),
    ]
    window = [_param("account", "account id"), _param("from", "ts >= from", ms), _param("to", "ts < to", ms)]
    paths = {
        "/healthz": {
            "get": {"summary": "liveness; no key needed", "security": [], "responses": {"200": {"description": "ok"}}}
        },
        "/accounts": {
            "get": {
                "summary": "every account: status, identity, money, open position count",
                "responses": _ok("AccountSummary", "accounts"),
            }
        },
        "/accounts/{id}": {
            "get": {
                "summary": "one account with its open positions",
                "parameters": [_param("id", "account id", where="path")],
                "responses": {**_ok("AccountSummary", "the account"), "404": {"description": "no such account"}},
            }
        },
        "/positions": {
            "get": {
                "summary": "open positions across the fleet",
                "parameters": [_param("account", "account id"), _param("symbol", "symbol")],
                "responses": _ok(None, "positions with their account"),
            }
        },
        "/prices": {"get": {"summary": "latest bid/ask per symbol", "responses": _ok("Tick", "prices")}},
        "/exposure": {
            "get": {"summary": "net volume and floating P/L per symbol", "responses": _ok("ExposureRow", "exposure")}
        },
        "/events": {
            "get": {
                "summary": "durable position events, newest first",
                "parameters": [*window, _param("type", "OPEN, CLOSE or MODIFY"), *paging],
                "responses": _ok("PositionEvent", "events", paged=True),
            }
        },
        "/system-trades": {
            "get": {
                "summary": "trades placed by the hedge system (by magic number)",
                "parameters": [*window, *paging],
                "responses": _ok("SystemTrade", "system trades", paged=True),
            }
        },
        "/alerts": {
            "get": {
                "summary": "alerts",
                "parameters": [_param("account", "account id"), _param("state", "open or resolved")],
                "responses": _ok("Alert", "alerts"),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (key also accepted as Authorization: Bearer)",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    }
    error = {
        "type": "object",
        "properties": {
            "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradewire REST API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": {**components, "Error": error},
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "responses": {
                "BadRequest": {
                    "description": "a parameter is wrong (named in the message)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "Unauthorized": {
                    "description": "missing or invalid API key",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    }
