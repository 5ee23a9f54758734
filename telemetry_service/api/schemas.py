"""Response models of the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Accepted(BaseModel):
    accepted: int


class DeviceOut(BaseModel):
    id: str
    node: str
    key: str
    kind: str
    index: int | None
    name: str
    uuid: str | None
    source: str
    energy_counter: bool
    update_period_s: float | None
    present: bool
    latest: dict[str, Any] | None = None
