"""The columnar blocks give the energy math exactly what the raw samples hold."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import delete, func, insert, select

from telemetry_service.sampler import register_node
from telemetry_service.sensors.base import DeviceInfo
from telemetry_service.store.blocks import BLOCK_S, index_device, load_series, repack
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import BlockWatermark, Sample, SampleBlock

T0 = 1_800_000_000.0  # a minute boundary


@pytest.fixture
def ledger(tmp_path):
    engine, sessions = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    info = DeviceInfo(key="gpu0", kind="gpu", source="simulated", energy_counter=True, name="g", index=0)
    with sessions() as s, s.begin():
        _, ids = register_node(s, "n", [info], T0)
        t = np.concatenate([T0 + np.arange(0, 300, 0.1), T0 + 3600 + np.arange(0, 120, 0.1)])  # then an hour's gap
        rows = [{"device_id": ids["gpu0"], "t": float(x), "power_w": 100.0 + (i % 7),
                 "energy_t": float(x) - 0.04 if i % 5 else None, "energy_j": float(i) if i % 5 else None}
                for i, x in enumerate(t)]
        s.connection().execute(insert(Sample.__table__), rows)
    yield sessions, ids["gpu0"]
    engine.dispose()


def _same(a, b):
    for name in ("power_t", "power_w", "counter_t", "counter_j"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_blocks_and_raw_rows_agree_everywhere(ledger):
    sessions, dev = ledger
    with sessions() as s:
        raw = load_series(s, dev, T0 + 10.05, T0 + 3700.0)
    with sessions() as s, s.begin():
        assert index_device(s, dev, now=T0 + 200) == 2  # minutes 0 and 1 are closed at +200 s (30 s settling)
        assert s.get(BlockWatermark, dev).indexed_until == T0 + 2 * BLOCK_S
    with sessions() as s:
        _same(load_series(s, dev, T0 + 10.05, T0 + 3700.0), raw)  # blocks, then raw rows after the watermark
    with sessions() as s, s.begin():
        while index_device(s, dev, now=T0 + 7200):
            pass
        assert s.get(BlockWatermark, dev).indexed_until == T0 + 7200 - BLOCK_S
        assert s.scalar(select(func.count()).select_from(SampleBlock)) == 7  # 5 minutes, the gap skipped, 2 more
    with sessions() as s:
        _same(load_series(s, dev, T0 + 10.05, T0 + 3700.0), raw)
        assert load_series(s, dev, T0 + 400, T0 + 500).power_t.size == 0


def test_repacked_blocks_follow_rewritten_rows(ledger):
    sessions, dev = ledger
    with sessions() as s, s.begin():
        index_device(s, dev, now=T0 + 400)
        # Rows of the second minute rewritten coarser, as retention does.
        s.execute(delete(Sample).where(Sample.device_id == dev, Sample.t >= T0 + 60, Sample.t < T0 + 120))
        s.execute(insert(Sample), [{"device_id": dev, "t": T0 + 60 + k, "power_w": 50.0, "energy_t": None,
                                    "energy_j": None} for k in range(60)])
        repack(s, dev, T0 + 60, T0 + 120)
    with sessions() as s:
        series = load_series(s, dev, T0, T0 + 300)
        assert series.power_t.size == 3000 - 600 + 60
        assert np.all(series.power_w[(series.power_t >= T0 + 60) & (series.power_t < T0 + 120)] == 50.0)
        assert s.scalar(select(func.count()).select_from(SampleBlock)) == 5


def test_a_row_written_late_reaches_queries_and_a_current_one_costs_no_statement(ledger):
    from telemetry_service.store.blocks import reopen_before

    sessions, dev = ledger
    with sessions() as s, s.begin():
        index_device(s, dev, now=T0 + 200)  # minutes 0 and 1 packed
    late = T0 + 61.37  # a retried batch from inside the packed second minute, written after it was packed
    with sessions() as s, s.begin():
        s.connection().execute(insert(Sample.__table__), [{"device_id": dev, "t": late, "power_w": 999.0}])
        reopen_before(s, {dev: late}, now=T0 + 200)
        assert s.get(BlockWatermark, dev).indexed_until == T0 + BLOCK_S  # back to that minute
    with sessions() as s:
        series = load_series(s, dev, T0 + 61.3, T0 + 61.4)
        assert 999.0 in series.power_w.tolist()
    with sessions() as s, s.begin():
        reopen_before(s, {dev: T0 + 190.0}, now=T0 + 200)  # newer than any watermark can be: left alone
        assert s.get(BlockWatermark, dev).indexed_until == T0 + BLOCK_S
