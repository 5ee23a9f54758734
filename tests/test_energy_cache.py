"""Energy answers are reused only while what they depend on is unchanged."""

from __future__ import annotations

import time

from telemetry_service.api.energy_cache import SETTLE_S, AnswerCache, answer_key
from telemetry_service.sampler import register_node
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import Phase, Run


def test_answer_keys_follow_phases_status_and_time(tmp_path):
    engine, sessions = open_ledger(f"sqlite:///{tmp_path / 'c.db'}")
    now = time.time()
    with sessions() as s, s.begin():
        node_id, _ = register_node(s, "n", [], now)
        run = Run(run_id="r", name="r", status="running", started_at=now - 100, tags={}, config={}, metrics={})
        s.add(run)
        s.flush()
        running = answer_key(s, run, now)
        assert answer_key(s, run, now + 0.01) == running  # the same moment
        assert answer_key(s, run, now + 5) != running  # a running run's answer ages
        s.add(Phase(run_pk=run.id, node_id=node_id, name="a", start=now - 50, end=now - 40))
        s.flush()
        assert answer_key(s, run, now) != running  # a new phase
        run.status, run.ended_at = "completed", now - 1
        assert answer_key(s, run, now) is None  # samples around the end are still arriving
        settled = answer_key(s, run, now + SETTLE_S)
        assert settled is not None and answer_key(s, run, now + 1000) == settled
    engine.dispose()

    calls = []
    cache = AnswerCache(max_entries=2)
    compute = lambda: calls.append(1) or {"n": len(calls)}  # noqa: E731
    assert cache.get_or_compute("a", compute) == {"n": 1}
    assert cache.get_or_compute("a", compute) == {"n": 1}
    assert cache.get_or_compute(None, compute) == {"n": 2}  # never kept
    cache.get_or_compute("b", compute)
    cache.get_or_compute("c", compute)
    assert cache.get_or_compute("a", compute) == {"n": 5}  # evicted, computed again
