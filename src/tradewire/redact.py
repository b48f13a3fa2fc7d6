"""Store and broker URLs fit for a log line or an error message: no password in them.

A URL may carry one in its user part (`postgresql://tw:s3cret@db/tw`, `redis://:s3cret@host/0`) or in its
query (`?password=s3cret`, which asyncpg reads too). Pure string work: `urlunsplit` would rewrite
`sqlite:///./x.db` as `sqlite:/./x.db`.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "secret", "token", "sslpassword", "sslkey_password"})
HIDDEN = "***"


def redact_url(url: str) -> str:
    head, sep, query = url.partition("?")
    scheme, slashes, rest = head.partition("://")
    if slashes:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = f"{HIDDEN}@{authority.rsplit('@', 1)[1]}"
        head = f"{scheme}://{authority}{slash}{path}"
    if sep:
        query = "&".join(
            f"{pair.split('=', 1)[0]}={HIDDEN}" if pair.split("=", 1)[0].lower() in SECRET_PARAMS else pair
            for pair in query.split("&")
        )
    return head + sep + query


# Credentials as they may turn up in a log line a library wrote: tradewire's own secrets (their public id
# kept), the realtime connect's `header-<base64 JSON>` auth subprotocol, a bearer token.
_SECRET_TEXT = re.compile(
    r"(?P<keep>tw[ek]_[0-9a-f]{8}_)[A-Za-z0-9_-]+"
    r"|(?P<keep2>header-)[A-Za-z0-9_=+/-]{16,}"  # base64url, or plain base64 (a client's btoa())
    r"|(?P<keep3>Bearer\s+)[^\s'\",]+",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """`text` with every credential in it replaced by ***."""
    return _SECRET_TEXT.sub(lambda m: (m["keep"] or m["keep2"] or m["keep3"]) + HIDDEN, text)


class SecretFilter(logging.Filter):
    """Redacts a library's log records before any handler sees them: aiohttp.websocket warns, quoting them,
    about subprotocols it does not know, and the realtime connect's auth subprotocol is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_secret_filter(logger_name: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, SecretFilter) for f in logger.filters):
        logger.addFilter(SecretFilter())
