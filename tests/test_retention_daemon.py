"""The daemon runs retention by itself, through its writer, while it samples."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def test_the_daemon_downsamples_old_samples_as_it_runs(daemon_factory):
    d = daemon_factory("--simulate-gpus", "1", "--retention", "3s:1s", env={"TELEMETRY_RETENTION_EVERY_S": "1"})
    time.sleep(8.0)
    with d.client() as c:
        health = c.get("/healthz").json()
    path = Path(d.db.removeprefix("sqlite:///"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        (pk,) = conn.execute("SELECT id FROM devices WHERE key = 'simgpu0'").fetchone()
        (start, end, bucket) = conn.execute("SELECT min(start), max(end), max(bucket_s) FROM downsampled_spans "
                                            "WHERE device_id = ?", (pk,)).fetchone()
        old = conn.execute("SELECT count(*) FROM samples WHERE device_id = ? AND t >= ? AND t < ?",
                           (pk, start + 1.0, end)).fetchone()[0]
        fresh = conn.execute("SELECT count(*) FROM samples WHERE device_id = ? AND t >= ?",
                             (pk, time.time() - 2.0)).fetchone()[0]
    assert bucket == 1.0 and end - start >= 2.0
    # Downsampled: two rows a second; still raw: about ten a second (fewer on a busy machine, never two).
    assert old <= 2.0 * (end - start - 1.0) + 2
    assert fresh >= 8
    assert health["sampler"]["ticks"] > 50
    d.stop()
    assert "old sample rows folded into buckets" in d.log()
