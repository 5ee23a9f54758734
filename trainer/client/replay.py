"""Replaying spooled markers: register the run, send its markers, stop it; every step idempotent on the daemon.

The daemon registers a run_id once and stores a re-sent marker once, so a replay cut short (daemon gone again,
process killed) is simply run again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.client.channel import RunChannel
from trainer.client.payload import clean, scalar_map
from trainer.client.spool import SpoolContents, abandoned
from trainer.client.transport import Rejected, Transport, Unreachable

log = logging.getLogger("trainer.client")


class Interrupted(Exception):
    """The replay was asked to stop; what it sent is on the daemon, the file stays for next time."""


@dataclass
class ReplayResult:
    run_id: str
    markers: int
    rejected: int
    stopped: str | None  # the status the run was stopped with; None when it was left as it was


def replay(transport: Transport, contents: SpoolContents, *, writer_gone: bool, written_at: float | None = None,
           max_batch: int = 1000, should_stop: Callable[[], bool] = lambda: False) -> ReplayResult:
    """Sends one spool file's run. `writer_gone`: the process that wrote it has ended; if it left no stop record
    it died without stopping its run (killed, crashed), and the run is stopped as failed at its last known instant.
    """
    header = contents.header
    channel = RunChannel(transport, header["registration"], derive_id=bool(header.get("derive_id")))
    channel.register()
    pending: list[dict[str, Any]] = []
    for batch in contents.phases:
        pending.extend(clean(batch))  # a file an older client wrote may hold text the daemon refuses
        while len(pending) >= max_batch:
            if should_stop():
                raise Interrupted
            channel.send(pending[:max_batch])
            del pending[:max_batch]
    channel.send(pending)
    stopped = None
    if contents.stop is not None:
        body = contents.stop
        channel.stop(body.get("status", "completed"), body["end"], scalar_map(body.get("metrics"), 256))
        stopped = body.get("status", "completed")
    elif writer_gone:
        instants = [t for t in (contents.last_instant, written_at, channel.registration.get("started_at")) if t]
        channel.stop("failed", max(instants), {})
        stopped = "failed"
    return ReplayResult(channel.run_id, contents.markers, channel.rejected, stopped)


def replay_abandoned(transport: Transport, directory: Path, host: str, url: str | None, *,
                     exclude: Path | None = None, stop_event: threading.Event | None = None,
                     max_batch: int = 1000) -> list[tuple[Path, ReplayResult]]:
    """Replays every spool file of this host whose writer is gone (for the daemon at `url`, or for any daemon
    when url is None), removing each once the daemon has it all. Stops at the first sign the daemon is away."""
    done: list[tuple[Path, ReplayResult]] = []
    should_stop = stop_event.is_set if stop_event is not None else (lambda: False)
    for claimed in abandoned(directory, host, url, exclude):
        with claimed:
            if should_stop():
                break
            try:
                written_at = claimed.path.stat().st_mtime
                result = replay(transport, claimed.contents, writer_gone=True, written_at=written_at,
                                max_batch=max_batch, should_stop=should_stop)
            except (Unreachable, Interrupted):
                break
            except (Rejected, KeyError, TypeError, ValueError) as exc:
                kept = claimed.set_aside(f"replay to {transport.url} failed: {exc}")
                log.warning("joulemeter: spool file %s cannot be replayed (%s); kept as %s", claimed.path, exc, kept)
                continue
            claimed.remove()
            done.append((claimed.path, result))
            log.info("joulemeter: replayed %d marker(s) of run %s from %s", result.markers, result.run_id,
                     claimed.path)
    return done
