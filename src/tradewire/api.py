"""REST query API under /api/v1 (DESIGN.md §8). Reads need an API key in `x-api-key`."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from tradewire import openapi
from tradewire.alerts import ALERT_TYPES
from tradewire.appkeys import GATEWAY, HUB, METRICS
from tradewire.broker import Broker
from tradewire.hub import Hub
from tradewire.limits import retry_after
from tradewire.metrics import CONTENT_TYPE
from tradewire.model import ACCOUNT_ID_RULE, INT64_MAX, is_account_id
from tradewire.state import SERIES_BUCKET_MS
from tradewire.store.base import AlertQuery, EventQuery, StoreError

_encoder = msgspec.json.Encoder()
PREFIX = "/api/v1"
ROLE = web.RequestKey("role", str)  # the caller's API-key role, for handlers that need admin
PUBLIC = {f"{PREFIX}/healthz", f"{PREFIX}/readyz", f"{PREFIX}/openapi.json"}
READY_PROBE_S = 2.0  # a store slower than this to answer is not ready
READY_CACHE_S = 1.0  # readyz needs no key: it asks the store at most once a second, however often it is asked
MAX_LIMIT = 1000


class BadParam(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"query parameter {name!r}: {problem}")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(data), content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


@web.middleware
async def api_auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    if not request.path.startswith(PREFIX + "/") or request.path in PUBLIC or request.method == "OPTIONS":
        return await handler(request)
    hub: Hub = request.app[HUB]
    key = request.headers.get("x-api-key") or _bearer(request)  # Bearer: what Prometheus can send
    try:
        role = await hub.api_role(key) if key else None
    except StoreError as exc:  # the store failed, not the client: a 503 to retry, not a 500
        return error_response(503, "store_unavailable", f"could not check the API key: {exc}")
    if role is None:
        return error_response(401, "unauthorized", "missing API key (x-api-key)" if not key else "invalid API key")
    wait = hub.requests.admit(key or "")  # a valid key here: it has a role
    if wait:
        limits = hub.settings.limits
        refused = error_response(
            429,
            "rate_limited",
            f"this API key made more than {limits.requests_per_s:g} requests a second (burst {limits.request_burst}); "
            "retry after the Retry-After seconds",
        )
        refused.headers["Retry-After"] = retry_after(wait)
        return refused
    request[ROLE] = role
    try:
        return await handler(request)
    except web.HTTPNotFound:  # the router's own answers are text: the API's errors are all JSON
        return error_response(404, "not_found", f"no route {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, "method_not_allowed", f"{request.method} {request.path}: allowed {allowed}")
    except BadParam as exc:
        return error_response(400, "bad_request", str(exc))
    except StoreError as exc:
        return error_response(503, "store_unavailable", str(exc))


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# --- parameters ---------------------------------------------------------------------------------
_WINDOW = ("account", "from", "to", "limit", "cursor")
PARAMS: dict[str, tuple[str, ...]] = {  # what each read takes: anything else is a mistake, said as one
    "accounts": (),
    "account": (),
    "equity": ("from",),
    "positions": ("account", "symbol", "limit", "cursor"),
    "prices": (),
    "exposure": (),
    "events": ("type", *_WINDOW),
    "system-trades": ("type", *_WINDOW),  # type: refused with its own reason
    "alerts": ("type", "state", *_WINDOW),
}


def check_params(query: Any, route: str) -> None:
    """Refuse a query parameter the route does not take: ignored, `/events?since=` or `/alerts?severity=`
    answered with everything, unfiltered, as if it had been applied."""
    allowed = PARAMS[route]
    for name in query:
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise BadParam(name, f"/{route} does not take it (it takes {takes})")


def _int_param(request: web.Request, name: str, *, lo: int = 0, hi: int = INT64_MAX) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(name, f"{raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise BadParam(name, f"{value} is outside {lo}..{hi}")
    return value


def _account_param(request: web.Request) -> str | None:
    account = request.query.get("account") or None
    if account is not None and not is_account_id(account):
        raise BadParam("account", f"must be {ACCOUNT_ID_RULE}")
    return account


def _time_range(request: web.Request) -> tuple[int | None, int | None]:
    """`from` (inclusive) and `to` (exclusive), in UTC ms; `from` after `to` is a mistake, said as one."""
    since, until = _int_param(request, "from"), _int_param(request, "to")
    if since is not None and until is not None and since > until:
        raise BadParam("from", f"{since} is after to={until}")
    return since, until


def _event_query(request: web.Request, *, typed: bool = True) -> EventQuery:
    type_ = request.query.get("type") or None
    if type_ is not None and not typed:
        raise BadParam("type", "system trades have no type: filter events by type instead")
    if type_ is not None and type_ not in ("OPEN", "CLOSE", "MODIFY"):
        raise BadParam("type", f"{type_!r} is not one of OPEN, CLOSE, MODIFY")
    limit = _int_param(request, "limit", lo=1, hi=MAX_LIMIT)
    since, until = _time_range(request)
    return EventQuery(
        account=_account_param(request),
        type=type_,
        since=since,
        until=until,
        limit=limit if limit is not None else 100,
        cursor=_int_param(request, "cursor", lo=1),
    )


def _alert_query(request: web.Request) -> AlertQuery:
    state = request.query.get("state") or None
    if state is not None and state not in ("open", "resolved"):
        raise BadParam("state", f"{state!r} is not one of open, resolved")
    type_ = request.query.get("type") or None
    if type_ is not None and type_ not in ALERT_TYPES:
        raise BadParam("type", f"{type_!r} is not one of {', '.join(ALERT_TYPES)}")
    limit = _int_param(request, "limit", lo=1, hi=MAX_LIMIT)
    since, until = _time_range(request)
    return AlertQuery(
        account=_account_param(request),
        type=type_,
        state=state,
        since=since,
        until=until,
        limit=limit if limit is not None else 100,
        before=_alert_cursor(request),
    )


def _alert_cursor(request: web.Request) -> tuple[int, int] | None:
    """An alerts page's `nextCursor`, "RAISEDAT.OFFSET": alerts are listed by when they were raised, and
    several can share a millisecond (a restart's lost connections), so the offset breaks the tie."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    raised, _, offset = raw.partition(".")
    parts = (raised, offset)
    if not all(p.isascii() and p.isdecimal() and len(p) <= 19 and int(p) <= INT64_MAX for p in parts):
        raise BadParam("cursor", f"{raw!r} is not a nextCursor of /alerts (RAISEDAT.OFFSET)")
    return int(raised), int(offset)


async def alerts_page(store: Any, request: web.Request) -> dict:
    """One page of alerts, newest first, and the cursor of the next (None on the last page)."""
    query = _alert_query(request)
    items = await store.alerts(dataclasses.replace(query, limit=query.limit + 1))
    if len(items) <= query.limit:
        return {"items": items, "nextCursor": None}
    last = items[query.limit - 1]
    return {"items": items[: query.limit], "nextCursor": f"{last.raisedAt}.{last.offset}"}


def positions_page(state: Any, request: Any) -> dict:
    """A page of open positions, by account then position id; `nextCursor` is "ACCOUNT:POSITIONID"."""
    limit = _int_param(request, "limit", lo=1, hi=MAX_LIMIT)
    raw = request.query.get("cursor") or None
    after = None
    if raw is not None:
        account, _, pid = raw.rpartition(":")
        if not is_account_id(account) or not (pid.isascii() and pid.isdecimal() and len(pid) <= 19):
            raise BadParam("cursor", f"{raw!r} is not a nextCursor of /positions (ACCOUNT:POSITIONID)")
        after = (account, int(pid))
    symbol = request.query.get("symbol") or None
    rows, nxt = state.open_positions(
        _account_param(request), symbol, after=after, limit=limit if limit is not None else MAX_LIMIT
    )
    return {"items": rows, "nextCursor": f"{nxt[0]}:{nxt[1]}" if nxt is not None else None}


def _page(page: Any) -> dict:
    return {"items": page.items, "nextCursor": str(page.next_cursor) if page.next_cursor is not None else None}


# --- handlers -----------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    hub: Hub = request.app[HUB]
    return json_response({"status": "draining" if hub.draining else "ok", "time": hub.clock()})


class _Readiness:
    """readyz's last answer, and when it was found (loop time)."""

    def __init__(self) -> None:
        self.at = -math.inf
        self.answer: tuple[int, dict] = (200, {})


READINESS = web.AppKey("readiness", _Readiness)


async def readyz(request: web.Request) -> web.Response:
    """Readiness, for a load balancer's health check: 503 naming what is wrong while this node cannot take EAs
    (draining, its store not answering: nothing durable could be acked). A backplane down is "degraded" but 200:
    it is every node's outage at once, and each node still serves its own EAs and subscribers (taken all out of
    the balancer, none would). healthz is liveness only."""
    hub: Hub = request.app[HUB]
    cache = request.app[READINESS]
    now = asyncio.get_running_loop().time()
    if now - cache.at >= READY_CACHE_S:
        cache.at = now
        cache.answer = await _readiness(hub, request.app[GATEWAY].broker)
    status, body = cache.answer
    return json_response({**body, "time": hub.clock()}, status)


async def store_problem(store: Any) -> str | None:
    """Why the store cannot serve right now (it does not answer a cheap read in time), or None."""
    try:
        await asyncio.wait_for(store.head_offset(), READY_PROBE_S)
    except TimeoutError:
        return f"did not answer within {READY_PROBE_S:g} s"
    except StoreError as exc:
        return str(exc)
    return None


async def _readiness(hub: Hub, broker: Broker) -> tuple[int, dict]:
    problems: dict[str, str] = {}
    if hub.draining:
        problems["hub"] = "draining: shutting down"
    if (trouble := await store_problem(hub.store)) is not None:
        problems["store"] = trouble
    if problems:
        return 503, {"status": "not_ready", "problems": problems}
    trouble = broker.problem()
    if trouble is not None:
        return 200, {"status": "degraded", "problems": {"broker": trouble}}
    return 200, {"status": "ready"}


async def list_accounts(request: web.Request) -> web.Response:
    check_params(request.query, "accounts")
    hub: Hub = request.app[HUB]
    now = hub.clock()
    ids = set(hub.state.accounts) | set(await hub.store.known_accounts())
    return json_response({"items": [hub.state.summary(a, now) for a in sorted(ids)]})


async def get_account(request: web.Request) -> web.Response:
    check_params(request.query, "account")
    hub: Hub = request.app[HUB]
    account = request.match_info["id"]
    if not is_account_id(account):
        return error_response(400, "bad_request", f"account id must be {ACCOUNT_ID_RULE}")
    if account not in hub.state.accounts and account not in await hub.store.known_accounts():
        return error_response(404, "not_found", f"no account {account!r}")
    return json_response(account_detail(hub.state, account, hub.clock()))


def account_detail(state: Any, account: str, now: int) -> dict:
    """One account's summary with its open positions (a read: no live view is made for it)."""
    view = state.accounts.get(account)
    positions = list(view.positions.values()) if view is not None else []
    return {**msgspec.structs.asdict(state.summary(account, now)), "openPositions": positions}


async def get_equity(request: web.Request) -> web.Response:
    """The recent past of an account's equity and balance: one point a minute, up to 24 h, newest last."""
    check_params(request.query, "equity")
    hub: Hub = request.app[HUB]
    account = request.match_info["id"]
    if not is_account_id(account):
        return error_response(400, "bad_request", f"account id must be {ACCOUNT_ID_RULE}")
    view = hub.state.accounts.get(account)
    if view is None:
        return error_response(404, "not_found", f"no account {account!r} is live or was seen since the hub started")
    since = _int_param(request, "from")
    points = [
        {"ts": ts, "equity": equity, "balance": balance}
        for ts, equity, balance in view.equity_series
        if since is None or ts >= since
    ]
    return json_response({"account": account, "bucketMs": SERIES_BUCKET_MS, "items": points})


async def list_positions(request: web.Request) -> web.Response:
    check_params(request.query, "positions")
    hub: Hub = request.app[HUB]
    return json_response(positions_page(hub.state, request))


async def list_prices(request: web.Request) -> web.Response:
    check_params(request.query, "prices")
    hub: Hub = request.app[HUB]
    return json_response({"items": sorted(hub.state.prices.values(), key=lambda t: t.symbol)})


async def get_exposure(request: web.Request) -> web.Response:
    check_params(request.query, "exposure")
    hub: Hub = request.app[HUB]
    return json_response({"items": hub.state.exposure()})


async def list_events(request: web.Request) -> web.Response:
    check_params(request.query, "events")
    hub: Hub = request.app[HUB]
    return json_response(_page(await hub.store.events(_event_query(request))))


async def list_system_trades(request: web.Request) -> web.Response:
    check_params(request.query, "system-trades")
    hub: Hub = request.app[HUB]
    return json_response(_page(await hub.store.system_trades(_event_query(request, typed=False))))


async def list_alerts(request: web.Request) -> web.Response:
    check_params(request.query, "alerts")
    hub: Hub = request.app[HUB]
    return json_response(await alerts_page(hub.store, request))


async def ack_alert(request: web.Request) -> web.Response:
    hub: Hub = request.app[HUB]
    if request[ROLE] != "admin":
        return error_response(403, "forbidden", "acknowledging an alert needs an admin API key")
    alert_id = request.match_info["id"]
    if len(alert_id) > 64:
        return error_response(400, "bad_request", "alert id is at most 64 characters")
    key = request.headers.get("x-api-key") or _bearer(request) or ""
    alert = await hub.acknowledge(alert_id, by=key_id(key))
    if alert is None:
        return error_response(404, "not_found", f"no alert {alert_id!r}")
    return json_response(alert)


def key_id(key: str) -> str:
    """The public id inside an API key (twk_<id>_<secret>): who acknowledged, without the secret."""
    parts = key.split("_")
    return f"key:{parts[1]}" if len(parts) >= 3 and parts[0] == "twk" else "key:unknown"


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


_openapi_doc: bytes | None = None


async def openapi_json(request: web.Request) -> web.Response:
    global _openapi_doc
    if _openapi_doc is None:
        _openapi_doc = _encoder.encode(openapi.build())
    return web.Response(body=_openapi_doc, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[READINESS] = _Readiness()
    app.router.add_get(f"{PREFIX}/openapi.json", openapi_json)
    app.router.add_get(f"{PREFIX}/metrics", metrics)
    app.router.add_get(f"{PREFIX}/healthz", healthz)
    app.router.add_get(f"{PREFIX}/readyz", readyz)
    app.router.add_get(f"{PREFIX}/accounts", list_accounts)
    app.router.add_get(f"{PREFIX}/accounts/{{id}}", get_account)
    app.router.add_get(f"{PREFIX}/accounts/{{id}}/equity", get_equity)
    app.router.add_get(f"{PREFIX}/positions", list_positions)
    app.router.add_get(f"{PREFIX}/prices", list_prices)
    app.router.add_get(f"{PREFIX}/exposure", get_exposure)
    app.router.add_get(f"{PREFIX}/events", list_events)
    app.router.add_get(f"{PREFIX}/system-trades", list_system_trades)
    app.router.add_get(f"{PREFIX}/alerts", list_alerts)
    app.router.add_post(f"{PREFIX}/alerts/{{id}}/ack", ack_alert)
