"""The ledger's single writer: every write goes through one thread and lands in batched transactions.

SQLite takes one writer at a time. Rather than many threads contending (and retrying), the sampler's sample
batches and the API's phase batches queue here; whatever has queued up is written in one transaction. A
caller that needs durability (the API, before it answers 202) waits on the job's future.

Every future resolves: a job is queued only while the writer is open (checked and queued under one lock, so none
lands behind the stop), and whatever is still queued when the thread ends is failed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Session], Any]

_STOP = object()


class Refused(Exception):
    """A job turned its input down before writing anything, so the rest of its batch can still commit."""


class Writer:
    def __init__(self, sessions: sessionmaker[Session], max_jobs_per_batch: int = 512) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max = max_jobs_per_batch
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._open_lock = threading.Lock()
        self._open = True
        self.batches = 0
        self._thread.start()

    def submit(self, job: Callable[[Session], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._open_lock:
            if self._open:
                self._queue.put((job, fut))
                return fut
        fut.set_exception(RuntimeError("the ledger writer has stopped"))
        return fut

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._shut()

    def _shut(self) -> None:
        """Closes the writer and fails whatever is still queued (only left there when the loop ended on an error)."""
        with self._open_lock:
            self._open = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item[1].set_running_or_notify_cancel():
                item[1].set_exception(RuntimeError("the ledger writer has stopped"))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[Job, Future[Any]]]) -> None:
        # A future its caller cancelled is skipped; the others can no longer be cancelled, so setting them cannot fail.
        batch = [(job, fut) for job, fut in batch if fut.set_running_or_notify_cancel()]
        if not batch:
            return
        self.batches += 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._sessions() as session, session.begin():
                for job, _ in batch:
                    try:
                        outcomes.append((True, job(session)))
                    except Refused as exc:  # raised before the job wrote anything: the batch goes on
                        log.debug("ledger write refused: %s", exc)
                        outcomes.append((False, exc))
        except Exception:
            # One broken job must not sink the others: write them one by one to find it.
            for job, fut in batch:
                self._write_one(job, fut)
            return
        for (_, fut), (ok, value) in zip(batch, outcomes):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _write_one(self, job: Job, fut: Future[Any]) -> None:
        try:
            with self._sessions() as session, session.begin():
                result = job(session)
        except Refused as exc:
            log.debug("ledger write refused: %s", exc)
            fut.set_exception(exc)
            return
        except Exception as exc:
            log.error("ledger write failed: %s", exc)
            fut.set_exception(exc)
            return
        fut.set_result(result)

    def close(self, timeout: float = 10.0) -> None:
        """Writes everything queued so far, then stops; later jobs fail at once."""
        with self._open_lock:
            if self._open:
                self._open = False
                self._queue.put(_STOP)
        self._thread.join(timeout=timeout)
