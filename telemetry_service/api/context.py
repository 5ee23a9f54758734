"""What every router of the API shares: the daemon, writes through its ledger writer, and energy answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy.orm import Session

from telemetry_service import carbon
from telemetry_service.api.energy_cache import AnswerCache, answer_key
from telemetry_service.daemon import Daemon
from telemetry_service.report import run_energy
from telemetry_service.runs import get_run
from telemetry_service.store.models import Run

T = TypeVar("T")
# An instant in a query: finite, like every number the API takes (NaN would compare false and filter nothing).
Instant = Annotated[float | None, Query(allow_inf_nan=False)]
# How long an energy answer for a just-stopped run waits for the counter update after its end to be stored.
SETTLE_WAIT_S = 3.0


class ApiContext:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.answers = AnswerCache()
        # Read once: the intensity is configuration, and nothing is fetched while serving.
        self.carbon = carbon.from_settings(daemon.settings.carbon_intensity, daemon.settings.carbon_intensity_file)

    async def write(self, job: Callable[[Session], T]) -> T:
        """Runs `job` in the ledger writer's transaction; its result comes back once it is committed."""
        fut: Future[T] = self.daemon.writer.submit(job)
        return await asyncio.wrap_future(fut)

    def energy(self, run_id: str) -> dict[str, Any]:
        with self.daemon.sessions() as session:
            return self.energy_of(session, get_run(session, run_id))

    def energy_of(self, session: Session, run: Run) -> dict[str, Any]:
        key = answer_key(session, run, time.time())
        return self.answers.get_or_compute(key, lambda: run_energy(session, run, self.daemon.settings.interval,
                                                                           carbon=self.carbon))

    def totals(self, session: Session, run: Run) -> dict[str, Any] | None:
        """A run's fixed totals; computed for a running one; None for one stopped before its samples were in."""
        if run.totals is not None:
            return run.totals
        if run.status != "running":
            return None
        return self.energy_of(session, run)["total"]
