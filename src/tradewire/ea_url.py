"""Where an EA connects: the hub's EA WebSocket endpoint from the base URL a user gives (one rule for the agent,
the simulator and the MQL5 EA's WebSocket.mqh)."""

from __future__ import annotations

SCHEMES = (("https://", "wss://"), ("http://", "ws://"), ("wss://", "wss://"), ("ws://", "ws://"))


def ea_ws_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` or `ws(s)://…` + `/ea/v1` (unless already there). An API Gateway
    WebSocket URL (the AWS deployment's `EaWebSocketUrl`, `wss://ID.execute-api.REGION.amazonaws.com/STAGE`)
    is taken as it is: such an API has no paths below its stage. ValueError naming what is wrong."""
    base = url.strip().rstrip("/")
    for scheme, ws in SCHEMES:
        if base.startswith(scheme):
            rest = base[len(scheme) :]
            if not rest:
                break
            exact = rest.endswith("/ea/v1") or ".execute-api." in rest.split("/", 1)[0].lower()
            return ws + (rest if exact else rest + "/ea/v1")
    raise ValueError(f"hub URL {url!r} must start with http://, https://, ws:// or wss://")
