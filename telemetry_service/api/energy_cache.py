"""Energy answers kept while nothing they depend on has changed.

A stopped run's answer changes only when a phase arrives late (a replayed spool) or the run is stopped
again, so it is keyed by the run's status, end and phase count; a running run's answer is kept a moment,
so that dashboards polling it do not recompute it for every viewer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from telemetry_service.store.models import Phase, Run

RUNNING_TTL_S = 2.0
# Samples around a run's end are still arriving this long after it.
SETTLE_S = 10.0


def answer_key(session: Session, run: Run, now: float) -> Hashable | None:
    """What a run's energy answer depends on; None where it must not be kept (the run's end is too recent)."""
    count, newest = session.execute(select(func.count(Phase.id), func.max(Phase.id)).where(Phase.run_pk == run.id)).one()
    if run.ended_at is None:
        return (run.id, "running", count, newest, int(now / RUNNING_TTL_S))
    if now - run.ended_at < SETTLE_S:
        return None
    return (run.id, run.status, run.ended_at, count, newest)


class AnswerCache:
    def __init__(self, max_entries: int = 32) -> None:
        self._entries: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable | None, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key is None:
            return compute()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        answer = compute()
        with self._lock:
            self._entries[key] = answer
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return answer
