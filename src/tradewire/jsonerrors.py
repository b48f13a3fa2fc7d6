"""Input a JSON decoder cannot read at all, as opposed to JSON of the wrong shape.

msgspec (and json) raise RecursionError for nesting past their depth limit and UnicodeDecodeError for
bytes that are not UTF-8, instead of their DecodeError: every reader of external input catches these
too and answers with a named error (found by the fuzzer, tests/reliability/test_fuzz.py).
"""

from __future__ import annotations

UNDECODABLE = (RecursionError, UnicodeDecodeError)


def undecodable(exc: Exception) -> str:
    """Why input that raised one of UNDECODABLE is not JSON the hub reads."""
    return "nested too deeply" if isinstance(exc, RecursionError) else f"not valid UTF-8: {exc}"
