"""JSON bodies the daemon accepts: markers and registrations made safe for its strict schema.

The daemon rejects a whole batch when one marker breaks its schema (an empty name, a NaN attribute, a numpy
integer as step), so values are coerced here, in the sender thread, rather than discovered as a 422 later.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
import re
import time
from pathlib import PurePath
from typing import Any

MAX_NAME = 255
MAX_ATTRS = 64
MAX_STEP = 2**62
MAX_DEPTH = 12
# json.dumps holds the GIL for its whole call (about 4 us per marker): encoding a batch in slices of this many, with a
# pause between them, keeps the training thread from waiting milliseconds for the sender.
ENCODE_SLICE = 100
_isfinite = math.isfinite
# What JSON text cannot carry to the daemon: NUL, which it refuses, and lone surrogates, which are not UTF-8 (a file
# name that is not UTF-8 holds them as os.fsdecode's escapes, U+DC80..U+DCFF).
_UNSENDABLE = re.compile("[\x00\ud800-\udfff]")
# A config key holding one of these (case aside) names a credential: its value is never sent.
SECRET_WORDS = ("token", "secret", "password", "api_key")
REDACTED = "[redacted]"

Scalar = str | int | float | bool | None
# (name, start, end, step, attrs): what the training thread appends, untouched until it is sent.
Marker = tuple[str, float, float, "int | None", "dict[str, Any] | None"]


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode: shown as that byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code == 0 else f"\\u{code:04x}"


def text(value: str) -> str:
    """`value` with what the daemon cannot store written as escapes: `/data/caf\\xe9.bin` for a non-UTF-8 name."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSENDABLE.sub(lambda m: _escape(m.group()), value)


def scalar(value: Any) -> Scalar:
    """A tag or attribute value as one the daemon accepts: finite numbers, strings, booleans, None."""
    kind = type(value)
    if kind is str:
        return text(value)
    if kind is int or kind is bool or value is None:  # the common cases, without ABC checks
        return value
    if kind is float:
        return value if _isfinite(value) else str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if _isfinite(f) else str(f)
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return scalar(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return text(str(value))


def _key(key: Any) -> str:
    return text(key if type(key) is str else str(key))[:MAX_NAME]


def scalar_map(values: dict[Any, Any] | None, limit: int) -> dict[str, Scalar]:
    if not values:
        return {}
    items = values.items() if len(values) <= limit else list(values.items())[:limit]
    return {_key(k): scalar(v) for k, v in items}


def marker_body(marker: Marker) -> dict[str, Any] | None:
    """A recorded marker as a /phases item, or None when it has no usable name or time.

    Runs in the sender thread for every marker, so the common case (a plain name, float instants, an int step)
    is checked by exact type before anything slower.
    """
    name, start, end, step, attrs = marker
    if type(name) is not str or not name or len(name) > MAX_NAME or name[0].isspace() or name[-1].isspace():
        name = str(name).strip()[:MAX_NAME]
        if not name:
            return None
    name = text(name)[:MAX_NAME]
    if not (_isfinite(start) and _isfinite(end)):
        return None
    body: dict[str, Any] = {"name": name, "start": start, "end": end if end >= start else start}
    if step is not None:
        if type(step) is int and 0 <= step <= MAX_STEP:
            body["step"] = step
        elif isinstance(step, numbers.Integral) and 0 <= int(step) <= MAX_STEP:
            body["step"] = int(step)
        else:  # keep what the caller passed, where it cannot break the schema
            attrs = {**(attrs or {}), "step": step}
    if attrs:
        body["attrs"] = scalar_map(attrs, MAX_ATTRS)
    return body


def jsonable(value: Any, depth: int = 0) -> Any:
    """A configuration (dict, dataclass, argparse Namespace, HF TrainingArguments...) as plain JSON."""
    if depth > MAX_DEPTH:
        return str(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return text(value)
    if isinstance(value, numbers.Number):
        return scalar(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, PurePath):
        return text(str(value))
    if isinstance(value, dict):
        return {text(str(k)): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    for method in ("to_dict", "tolist"):  # HF configs and TrainingArguments; numpy and torch values
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return jsonable(convert(), depth + 1)
            except Exception:  # a broken converter still leaves the object's text
                return text(str(value))
    if hasattr(value, "__dict__") and type(value).__module__ == "argparse":
        return jsonable(vars(value), depth + 1)
    return text(str(value))


def clean(value: Any) -> Any:
    """Decoded JSON with its text, keys included, escaped where the daemon could not store it (see `text`)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def is_secret(key: str) -> bool:
    key = key.lower().replace("-", "_")
    return any(word in key for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """`value` with the value of every secret-looking key replaced, at any depth (`hub_token` in TrainingArguments,
    `wandb_api_key`). None and booleans are kept: they hold no secret."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(str(k)) and v is not None and not isinstance(v, bool) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def registration_body(body: dict[str, Any]) -> dict[str, Any]:
    """A POST /api/v1/runs body safe to send and to spool: its text escaped, its config's secrets redacted.
    Applied to every registration, also one read back from a spool file an older client wrote."""
    safe = clean(body)
    if isinstance(safe.get("config"), dict):
        safe["config"] = redact(safe["config"])
    return safe


def encode_list(items: list[Any]) -> str:
    """`json.dumps(items)`, compact, in slices that let other threads run in between."""
    parts = []
    for i in range(0, len(items), ENCODE_SLICE):
        parts.append(json.dumps(items[i:i + ENCODE_SLICE], separators=(",", ":"))[1:-1])
        time.sleep(0)
    return "[" + ",".join(parts) + "]"
