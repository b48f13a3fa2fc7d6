"""A dynamodb:// store URL, read without the AWS libraries: the CLI checks one before anything is installed
for it (`tradewire.store.parse_store_url`), and the DynamoDB store and the AWS live table open from it."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit

from tradewire.redact import redact_url

TABLE_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def split_url(url: str) -> tuple[str, str, str | None]:
    """(table prefix, region, endpoint) of a dynamodb:// URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "dynamodb":
        raise ValueError(f"store URL {redact_url(url)!r}: expected dynamodb://TABLE_PREFIX?region=REGION&endpoint=URL")
    prefix = parts.netloc or parts.path.strip("/")
    if (parts.netloc and parts.path.strip("/")) or not TABLE_PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"store URL {redact_url(url)!r}: write dynamodb://TABLE_PREFIX?region=REGION[&endpoint=URL], "
            "the table prefix 1-200 characters of A-Z, a-z, 0-9, '_', '-', '.'"
        )
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"region", "endpoint"}
    if unknown:
        raise ValueError(f"store URL {redact_url(url)!r}: unknown option(s) {', '.join(sorted(unknown))}")
    region = (
        options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    return prefix, region, options.get("endpoint") or None
