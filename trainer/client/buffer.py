"""Phase markers as the training thread records them: a wall-clock instant and a deque append, nothing more.

Everything that costs (JSON, HTTP, files) happens in the sender thread. `collections.deque.append` and
`popleft` are atomic, so the training thread and the sender share the deque without a lock.

When the run stops, the queue is retired and replaced by one that drops (and counts) what is recorded later. A
thread may still hold the retired queue and append to it after its last drain: the appender sees the swap and counts
the marker itself, so every marker is sent, spooled or counted in `dropped`.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_time = time.time
_nextafter = math.nextafter
_INF = math.inf


class Phase:
    """One interval being measured: a context manager, or the handle `begin` returns and `end` closes."""

    __slots__ = ("_rec", "name", "step", "attrs", "start")

    def __init__(self, rec: Recorder, name: str, step: int | None, attrs: dict[str, Any] | None) -> None:
        self._rec = rec
        self.name = name
        self.step = step
        self.attrs = attrs

    def __enter__(self) -> Phase:
        self.start = self._rec._instant()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        rec = self._rec
        end = rec._instant()
        attrs = self.attrs
        if exc_type is not None:  # the interval still cost energy; say how it ended
            attrs = {**attrs, "error": exc_type.__name__} if attrs else {"error": exc_type.__name__}
        rec.record((self.name, self.start, end, self.step, attrs))


class _Dropping(deque[Any]):
    """The queue of a recorder whose run has ended: it keeps nothing and counts what it is given."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(maxlen=0)
        self._recorder = recorder

    def append(self, item: Any) -> None:
        self._recorder._count_dropped(1)


class Recorder:
    """Records phases into `queue` for a consumer thread, which `wake` hurries along when a batch is full."""

    def __init__(self, sync_cuda: bool = True, max_batch: int = 1000) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self.max_batch = max_batch
        self.sync_cuda = sync_cuda
        self._cuda_sync: Callable[[], None] | None = None
        self._last = 0.0
        self.dropped = 0  # markers recorded once the run had stopped (nothing sends them)
        self._dropped_lock = threading.Lock()

    def record(self, marker: tuple[Any, ...]) -> None:
        """Queues a marker (name, start, end, step, attrs) for the sender."""
        q = self.queue
        q.append(marker)
        if self.queue is not q:  # retired while this thread held it, perhaps after its last drain
            self._drain_retired(q)
        elif len(q) == self.max_batch:
            self.wake.set()

    def _retire_queue(self) -> None:
        """Once the run has stopped: later markers are dropped, and so is what the sender left behind."""
        retired, self.queue = self.queue, _Dropping(self)
        self._drain_retired(retired)

    def _drain_retired(self, retired: deque[Any]) -> None:
        n = 0
        while True:
            try:
                item = retired.popleft()  # atomic: a marker two threads race for is counted once
            except IndexError:
                break
            n += type(item) is tuple
        self._count_dropped(n)

    def _count_dropped(self, n: int) -> None:
        if n:
            with self._dropped_lock:
                self.dropped += n

    def _instant(self) -> float:
        """Now, in unix seconds, after the GPU's queued work; strictly after the previous instant.

        Strictly increasing, so two markers of one name are never the same (name, start, end) (the daemon's
        identity for a marker), and a clock stepped back by NTP cannot give a phase a negative length.
        """
        if self.sync_cuda:
            self._sync_device()
        t = _time()
        if t <= self._last:
            t = _nextafter(self._last, _INF)
        self._last = t
        return t

    def _sync_device(self) -> None:
        sync = self._cuda_sync
        if sync is None:
            # Only a program that already imported torch and initialised CUDA has GPU work in flight.
            cuda = getattr(sys.modules.get("torch"), "cuda", None)
            if cuda is None or not cuda.is_initialized():
                return
            sync = self._cuda_sync = cuda.synchronize
        sync()

    def phase(self, name: str, step: int | None = None, **attrs: Any) -> Phase:
        """`with tc.phase("teacher_forward", step=step): ...` records the block's [start, end]."""
        return Phase(self, name, step, attrs or None)

    def begin(self, name: str, step: int | None = None, **attrs: Any) -> Phase:
        """Opens a phase for code that cannot use `with`; close it with `end(handle)`."""
        handle = Phase(self, name, step, attrs or None)
        handle.__enter__()
        return handle

    def end(self, handle: Phase, **attrs: Any) -> None:
        if attrs:
            handle.attrs = {**(handle.attrs or {}), **attrs}
        handle.__exit__(None, None, None)

    def mark(self, name: str, step: int | None = None, **attrs: Any) -> None:
        """An instant (start == end): a checkpoint saved, a learning-rate change."""
        t = self._instant()
        self.record((name, t, t, step, attrs or None))

    def phased(self, name: str | Callable[P, R] | None = None, **attrs: Any) -> Any:
        """Decorator: `@tc.phased("eval")`, or bare `@tc.phased` (the function's name is the phase's)."""
        if callable(name):
            return self.phased()(name)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            phase_name = name or fn.__name__

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                with Phase(self, phase_name, None, attrs or None):
                    return fn(*args, **kwargs)

            return wrapper

        return decorate
