"""Browser security headers on every response, and the dashboard page's Content-Security-Policy.

The dashboard renders EA-controlled strings (comments, symbols, error texts) as text only; the policy is
what still holds if that ever slips: scripts from this origin only (the page's one inline script, its
import map, allowed by hash), no framing (clickjacking an admin), no plugins, no foreign connections.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aiohttp import web

PAGE_PATHS = ("/", "/web/index.html")  # the page, and the same file as the static route serves it
EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


def content_security_policy(page: bytes) -> str:
    """The policy for a page: its inline scripts allowed by their SHA-256, nothing else inline."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def install(app: web.Application, page: Path) -> None:
    csp = content_security_policy(page.read_bytes()) if page.exists() else None

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(EVERY_RESPONSE)
        if csp is not None and request.path in PAGE_PATHS:
            response.headers["Content-Security-Policy"] = csp

    app.on_response_prepare.append(add_headers)
