"""Store and broker URLs fit for a log line or an error message: no password in them.

A URL may carry one in its user part (`postgresql://tw:s3cret@db/tw`, `redis://:s3cret@host/0`) or in its
query (`?password=s3cret`, which asyncpg reads too). Pure string work: `urlunsplit` would rewrite
`sqlite:///./x.db` as `sqlite:/./x.db`.
"""

from __future__ import annotations

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
