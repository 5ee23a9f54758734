"""What a request may carry, as the API checks it at its edge: strict types, finite numbers, bounded sizes.

The run bookkeeping (runs.py) takes these models as its input, so they live outside the API package. Text in every
field, whatever its type, is checked at the API's edge for what the ledger cannot store (see text.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_NAME = 255
MAX_BATCH = 10_000
MAX_POINTS = 100_000
MAX_DEPTH = 32
# Instants are unix seconds: anything before this (September 2001) is a unit mistake or garbage.
MIN_UNIX_S = 1e9
# A config key holding one of these (case aside) names a credential: its value is never stored.
SECRET_WORDS = ("token", "secret", "password", "api_key")
REDACTED = "[redacted]"


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    # Deep nesting costs recursion at every later encoding of the run: bounded here.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return value


def is_secret(key: str) -> bool:
    key = key.lower().replace("-", "_")
    return any(word in key for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """`value` with the value of every secret-looking key replaced, at any depth. None and booleans are kept:
    they hold no secret, and `include_tokens_per_second: true` still reads as what it is."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(k) and v is not None and not isinstance(v, bool) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, strip_whitespace=True)]
RunId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_.:@+\-]+$")]
Scalar = str | int | float | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class RunCreate(Strict):
    name: Name
    run_id: RunId | None = None
    pid: int | None = Field(None, ge=0, le=2**31 - 1)
    host: Annotated[str, StringConstraints(max_length=MAX_NAME)] | None = None
    visible_devices: list[Annotated[str, StringConstraints(max_length=128)]] | None = Field(None, max_length=256)
    cuda_device_order: Literal["FASTEST_FIRST", "PCI_BUS_ID"] | None = None
    started_at: float | None = Field(None, ge=MIN_UNIX_S, description="when the run began, if earlier than its registration")
    tags: dict[Annotated[str, StringConstraints(max_length=MAX_NAME)], Scalar] = Field(default_factory=dict, max_length=256)
    config: Annotated[dict[str, Any], AfterValidator(_shallow), AfterValidator(redact)] = Field(default_factory=dict)


class PhaseIn(Strict):
    name: Name
    start: float
    end: float
    step: int | None = Field(None, ge=0, le=2**62)
    attrs: dict[Annotated[str, StringConstraints(max_length=MAX_NAME)], Scalar] | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> PhaseIn:
        if self.end < self.start:
            raise ValueError(f"phase {self.name!r} ends ({self.end}) before it starts ({self.start})")
        return self


class RunStop(Strict):
    status: Literal["completed", "failed"] = "completed"
    # The member stopping (its process on this node); without it every member still running is stopped.
    pid: int | None = Field(None, ge=0, le=2**31 - 1)
    end: float | None = Field(None, gt=0)
    metrics: dict[Annotated[str, StringConstraints(max_length=MAX_NAME)], Scalar] = Field(default_factory=dict, max_length=256)
