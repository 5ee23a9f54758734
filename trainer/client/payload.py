"""JSON bodies the daemon accepts: markers and registrations made safe for its strict schema.

The daemon rejects a whole batch when one marker breaks its schema (an empty name, a NaN attribute, a numpy
integer as step), so values are coerced here, in the sender thread, rather than discovered as a 422 later.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from pathlib import PurePath
from typing import Any

MAX_NAME = 255
MAX_ATTRS = 64
MAX_STEP = 2**62
MAX_DEPTH = 12

Scalar = str | int | float | bool | None
# (name, start, end, step, attrs): what the training thread appends, untouched until it is sent.
Marker = tuple[str, float, float, "int | None", "dict[str, Any] | None"]


def scalar(value: Any) -> Scalar:
    """A tag or attribute value as one the daemon accepts: finite numbers, strings, booleans, None."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return scalar(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def scalar_map(values: dict[Any, Any] | None, limit: int) -> dict[str, Scalar]:
    if not values:
        return {}
    return {str(k)[:MAX_NAME]: scalar(v) for k, v in list(values.items())[:limit]}


def marker_body(marker: Marker) -> dict[str, Any] | None:
    """A recorded marker as a /phases item, or None when it has no usable name."""
    name, start, end, step, attrs = marker
    name = str(name).strip()[:MAX_NAME]
    if not name or not (math.isfinite(start) and math.isfinite(end)):
        return None
    body: dict[str, Any] = {"name": name, "start": start, "end": max(start, end)}
    if step is not None:
        if isinstance(step, numbers.Integral) and 0 <= int(step) <= MAX_STEP:
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
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Number):
        return scalar(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    for method in ("to_dict", "tolist"):  # HF configs and TrainingArguments; numpy and torch values
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return jsonable(convert(), depth + 1)
            except Exception:  # noqa: BLE001 - a broken converter still leaves the object's text
                return str(value)
    if hasattr(value, "__dict__") and type(value).__module__ == "argparse":
        return jsonable(vars(value), depth + 1)
    return str(value)
