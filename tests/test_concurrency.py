"""Races between threads: the ledger writer shut down under load, sensor errors read while counted, and markers
recorded while the run stops."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from telemetry_service.sampler import SamplerStats
from telemetry_service.store.writer import Writer
from tests.client_fixtures import make_client, phases_of, shared_daemon, spool_dir  # noqa: F401 - fixtures
from trainer.client import TelemetryClient
from trainer.client.buffer import Recorder


def _writer() -> Writer:
    return Writer(sessionmaker(create_engine("sqlite://")))


def test_every_future_resolves_when_the_writer_closes_under_submitters() -> None:
    writer = _writer()
    futures: list[Future[Any]] = []
    lock = threading.Lock()
    go = threading.Event()

    def submit() -> None:
        go.wait()
        for i in range(3000):
            fut = writer.submit(lambda _s, i=i: i)
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(0.02)
    writer.close()
    for t in threads:
        t.join()
    done, not_done = wait(futures, timeout=10)
    assert not not_done, f"{len(not_done)} of {len(futures)} jobs were never answered"
    outcomes = [f.exception() is None for f in done]
    assert any(outcomes) and not all(outcomes)  # some written before the close, the rest refused after it


def test_a_cancelled_job_does_not_stop_the_writer() -> None:
    writer = _writer()
    release = threading.Event()
    blocker = writer.submit(lambda _s: release.wait(5))
    cancelled = writer.submit(lambda _s: 1)
    assert cancelled.cancel()  # its caller went away while it waited
    release.set()
    assert blocker.result(5) is True
    assert writer.submit(lambda _s: 2).result(5) == 2
    writer.close()


def test_sensor_errors_are_read_as_a_snapshot_while_counted() -> None:
    stats = SamplerStats()
    stats.count_sensor_error("nvml")
    stats.count_sensor_error("rapl")
    reading = iter(stats.sensor_errors.items())  # the API, part way through encoding /healthz or /metrics...
    assert next(reading) == ("nvml", 1)
    stats.count_sensor_error("simulated")  # ...when the sampler counts a failure of a sensor new to the dict
    assert list(reading) == [("rapl", 1)]  # in place, this would raise "dictionary changed size during iteration"
    assert stats.sensor_errors == {"nvml": 1, "rapl": 1, "simulated": 1}


def test_markers_recorded_after_the_stop_are_dropped_and_counted() -> None:
    rec = Recorder(sync_cuda=False)
    rec.mark("kept")
    rec._retire_queue()
    rec.mark("late")
    with rec.phase("late too"):
        pass
    assert rec.dropped == 3 and len(rec.queue) == 0


def test_no_marker_is_lost_while_threads_record_as_the_run_stops(shared_daemon, make_client) -> None:  # noqa: F811
    tc: TelemetryClient = make_client(url=shared_daemon.url, max_batch=50)
    tc.start()
    recorded = [0] * 4
    go = threading.Event()
    stop = threading.Event()

    def record(k: int) -> None:
        go.wait()
        while not stop.is_set():
            tc.mark(f"t{k}.{recorded[k]}")  # unique: two threads may take the same instant
            recorded[k] += 1
            time.sleep(0.002)  # a training loop's pace, which the sender keeps up with

    threads = [threading.Thread(target=record, args=(k,)) for k in range(len(recorded))]
    for t in threads:
        t.start()
    go.set()
    time.sleep(0.3)
    assert tc.stop() is True  # while the threads go on recording
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    stored = len(phases_of(shared_daemon.url, tc.run_id))
    assert tc.stats.spooled == 0 and tc.stats.unnamed == 0 and tc._sender is not None and tc._sender.rejected == 0
    assert stored > 0 and tc.dropped > 0
    assert stored + tc.dropped == sum(recorded)
