"""The OpenAPI 3.1 document for /api/v1, with schemas generated from the msgspec records."""

from __future__ import annotations

from typing import Any

import msgspec

from tradewire.alerts import ALERT_TYPES
from tradewire.model import Alert, Position, PositionEvent, SystemTrade, Tick
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


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(schema: dict, description: str) -> dict:
    """A 200 with this body, and what every keyed request can also be answered."""
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "429": {"$ref": "#/components/responses/RateLimited"},
        "503": {"$ref": "#/components/responses/StoreUnavailable"},
    }


def _ok(ref: str | None, description: str, paged: bool = False) -> dict:
    """A list answer: {"items": [...]} (and its nextCursor when paged)."""
    items = _ref(ref) if ref else {"type": "object"}
    schema: dict[str, Any] = {"type": "object", "properties": {"items": {"type": "array", "items": items}}}
    if paged:
        schema["properties"]["nextCursor"] = {"type": ["string", "null"]}
    return _answer(schema, description)


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def build() -> dict:
    _, components = msgspec.json.schema_components(
        [AccountSummary, Position, PositionEvent, SystemTrade, Alert, Tick, ExposureRow],
        ref_template="#/components/schemas/{name}",
    )
    ms = {"type": "integer", "description": "UTC milliseconds since the epoch"}
    paging = [
        _param("limit", "1-1000, default 100", {"type": "integer"}),
        _param(
            "cursor",
            "nextCursor of the previous page (as given: a string of digits)",
            {"type": "string", "pattern": "^[0-9]+$"},
        ),
    ]
    window = [_param("account", "account id"), _param("from", "ts >= from", ms), _param("to", "ts < to", ms)]
    not_found = {"404": _error("no such account or alert")}
    paths = {
        "/healthz": {
            "get": {
                "summary": "liveness; no key needed",
                "security": [],
                "responses": {
                    "200": {
                        "description": "ok, or draining while the hub shuts down",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"status": {"enum": ["ok", "draining"]}, "time": ms},
                                }
                            }
                        },
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "readiness, for a load balancer's health check; no key needed",
                "security": [],
                "responses": {
                    "200": {
                        "description": "ready, or degraded: the Redis backplane is down (every node's outage: "
                        "each still serves its own EAs), named in problems.broker",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"enum": ["ready", "degraded"]},
                                        "problems": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "time": ms,
                                    },
                                }
                            }
                        },
                    },
                    "503": {
                        "description": "not ready: draining, or the store not answering",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"const": "not_ready"},
                                        "problems": {
                                            "type": "object",
                                            "description": "what is wrong, by part: hub, store",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "time": ms,
                                    },
                                }
                            }
                        },
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "this document; no key needed",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
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
                "responses": {
                    **_answer(
                        {
                            "allOf": [
                                _ref("AccountSummary"),
                                {
                                    "type": "object",
                                    "properties": {"openPositions": {"type": "array", "items": _ref("Position")}},
                                },
                            ]
                        },
                        "the account",
                    ),
                    **not_found,
                },
            }
        },
        "/accounts/{id}/equity": {
            "get": {
                "summary": "the account's recent equity and balance, one point a minute for 24 h, oldest first",
                "parameters": [_param("id", "account id", where="path"), _param("from", "ts >= from", ms)],
                "responses": {
                    **_answer(
                        {
                            "type": "object",
                            "properties": {
                                "account": {"type": "string"},
                                "bucketMs": {"type": "integer"},
                                "items": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "ts": ms,
                                            "equity": {"type": "number"},
                                            "balance": {"type": "number"},
                                        },
                                    },
                                },
                            },
                        },
                        "equity points",
                    ),
                    **not_found,
                },
            }
        },
        "/positions": {
            "get": {
                "summary": "open positions across the fleet",
                "parameters": [
                    _param("account", "account id"),
                    _param("symbol", "symbol"),
                    _param("limit", "1-1000, default 1000", {"type": "integer"}),
                    _param("cursor", "nextCursor of the previous page (ACCOUNT:POSITIONID)", {"type": "string"}),
                ],
                "responses": _ok(None, "positions with their account, by account then id", paged=True),
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
                "summary": "alerts, newest first",
                "parameters": [
                    _param("account", "account id"),
                    _param("type", "alert type", {"enum": list(ALERT_TYPES)}),
                    _param("state", "open or resolved", {"enum": ["open", "resolved"]}),
                    _param("from", "raised at >= from", ms),
                    _param("to", "raised at < to", ms),
                    paging[0],
                    _param("cursor", "nextCursor of the previous page (RAISEDAT.OFFSET)", {"type": "string"}),
                ],
                "responses": _ok("Alert", "alerts", paged=True),
            }
        },
        "/alerts/{id}/ack": {
            "post": {
                "summary": "acknowledge an alert (admin key)",
                "parameters": [_param("id", "alert id", where="path")],
                "responses": {
                    **_answer(_ref("Alert"), "the alert, acknowledged"),
                    "403": _error("a read key: acknowledging needs an admin key"),
                    **not_found,
                },
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
                "BadRequest": _error("a parameter is wrong (named in the message)"),
                "Unauthorized": _error("missing or invalid API key"),
                "RateLimited": {
                    **_error("this key is over [limits] requests_per_s"),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
                },
                "StoreUnavailable": _error("the store failed; retry later"),
            },
        },
    }
