"""Text the ledger can store and the API can serve back: valid Unicode, no NUL.

JSON can carry a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8 encoder accepts, and NUL, which PostgreSQL
refuses in text and JSON. Either, once stored, would break every later read of it, so both are refused at the edge.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In a JSON body such a character can only arrive escaped (raw surrogates are not UTF-8, raw NUL not JSON).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")
MAX_REPORTED = 10

Path = tuple[str | int, ...]


def unstorable(text: str) -> str | None:
    """What is wrong with `text` (the first offending character), or None when it can be stored."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "must not contain NUL characters"
    return f"must be valid Unicode text: lone surrogate U+{ord(char):04X} at position {found.start()}"


def printable(text: str) -> str:
    """`text` with each unstorable character written as its escape, to name it in an answer."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def may_hold_unstorable(body: bytes) -> bool:
    """False when a JSON body cannot hold unstorable text, which spares most bodies the walk."""
    return _UNSTORABLE_ESCAPE.search(body) is not None


def find_unstorable(value: Any, limit: int = MAX_REPORTED) -> list[tuple[Path, str]]:
    """(JSON path, what is wrong) for every unstorable string in a decoded JSON value, keys included."""
    found: list[tuple[Path, str]] = []
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack and len(found) < limit:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem is not None:
                found.append((path, problem))
        elif isinstance(item, dict):
            for key in item:
                problem = unstorable(key)
                if problem is not None:
                    found.append(((*path, printable(key)), f"key {problem}"))
            # Pushed last first, so they are visited (and reported) in the body's order.
            stack.extend(((*path, printable(key)), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*path, i), item[i]) for i in range(len(item) - 1, -1, -1))
    return found[:limit]


def load_json(text: str | bytes) -> Any:
    """JSON from the ledger, with any unstorable text (stored by an older daemon) made printable, so it reads."""
    value = json.loads(text)
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _printable_json(value) if may_hold_unstorable(raw) else value


def _printable_json(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): _printable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_json(v) for v in value]
    return value
