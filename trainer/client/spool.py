"""The spool: what the daemon could not take in time, kept as JSON lines until it can.

One file per client process (`<run id>.<host>.<pid>.<token>.jsonl`). Its first line describes the run (the
registration body, the daemon's URL, the host), so a replay can register a run the daemon never saw; then come
`{"kind": "phases", "phases": [...]}` and at most one `{"kind": "stop", "body": {...}}`. The writing process holds
an exclusive `flock` on its file for its whole life: a replayer that cannot take the lock leaves the file alone,
and one that can knows its writer is gone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trainer.client.payload import encode_list

log = logging.getLogger("trainer.client")

SUFFIX = ".jsonl"
FORMAT_VERSION = 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", text)[:80] or "_"


def _lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@dataclass
class SpoolContents:
    header: dict[str, Any]
    phases: list[list[dict[str, Any]]] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    bad_lines: int = 0

    @property
    def markers(self) -> int:
        return sum(len(b) for b in self.phases)

    @property
    def last_instant(self) -> float | None:
        ends = [p["end"] for batch in self.phases for p in batch]
        return max(ends) if ends else None


def parse(lines: list[str]) -> SpoolContents:
    """The records of a spool file; a torn last line (the writer died mid-write) is counted and skipped."""
    header: dict[str, Any] | None = None
    contents = SpoolContents(header={})
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record["kind"]
        except (ValueError, KeyError, TypeError):
            contents.bad_lines += 1
            continue
        if kind == "run" and header is None:
            header = record
        elif kind == "phases":
            contents.phases.append(record["phases"])
        elif kind == "stop":
            contents.stop = record["body"]
    if header is None:
        raise ValueError("no run record (the file's first line); not a joulemeter spool file")
    contents.header = header
    return contents


class SpoolWriter:
    """The live client's own spool file, created on the first record and removed when it ends empty."""

    def __init__(self, directory: Path, run_id: str, host: str, pid: int) -> None:
        self.path = directory / f"{_safe(run_id)}.{_safe(host)}.{pid}.{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._fh: IO[str] | None = None
        self.records = 0  # records after the header
        self.markers = 0  # markers in those records

    @property
    def has_data(self) -> bool:
        return self.records > 0

    def append(self, record: dict[str, Any], header: dict[str, Any], markers: int = 0) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+", encoding="utf-8")
            if not _lock(self._fh):  # the token makes this name ours alone; a lock held on it is a bug
                raise OSError(f"spool file {self.path} is locked by another process")
        if self.records == 0:
            self._fh.seek(0)
            self._fh.truncate()
            self._write({"kind": "run", "v": FORMAT_VERSION, **header})
        self._write(record)
        self.records += 1
        self.markers += markers

    def _write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None
        if record.get("kind") == "phases":  # large: encoded in slices (see encode_list)
            line = '{"kind":"phases","phases":' + encode_list(record["phases"]) + "}"
        else:
            line = json.dumps(record, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()

    def read(self) -> SpoolContents:
        assert self._fh is not None
        self._fh.seek(0)
        contents = parse(self._fh.readlines())
        self._fh.seek(0, os.SEEK_END)
        return contents

    def clear(self) -> None:
        """Everything in the file has reached the daemon."""
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
        self.records = 0
        self.markers = 0

    def close(self) -> Path | None:
        """Releases the file: removed if empty, else kept (synced to disk) for a replay. Returns what was kept."""
        if self._fh is None:
            return None
        fh, self._fh = self._fh, None
        kept = self.records > 0
        if kept:
            os.fsync(fh.fileno())
        else:
            self.path.unlink(missing_ok=True)  # still under our lock, so no replayer has it open
        fh.close()
        return self.path if kept else None


class ClaimedSpool:
    """A spool file whose writer is gone, held under its lock while it is replayed."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._fh = handle
        self.contents = parse(handle.readlines())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def set_aside(self, reason: str) -> Path:
        """Keeps a file the daemon refuses out of later replays, next to the reason."""
        target = self.path.with_suffix(".rejected")
        self.path.rename(target)
        target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        return target

    def release(self) -> None:
        self._fh.close()

    def __enter__(self) -> ClaimedSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def claim(path: Path) -> ClaimedSpool | None:
    """Takes a spool file for replay, or None when its writer still runs or another replayer has it."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        # The file may have been replayed and removed between open() and flock(): then it is no longer at `path`.
        if _lock(handle) and os.path.exists(path) and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            if os.fstat(handle.fileno()).st_size == 0:  # a writer that died right after sending everything
                path.unlink(missing_ok=True)
            else:
                return ClaimedSpool(path, handle)
    except (OSError, ValueError) as exc:
        log.warning("joulemeter: cannot read spool file %s: %s", path, exc)
    handle.close()
    return None


def abandoned(directory: Path, host: str, url: str | None, exclude: Path | None = None) -> Iterator[ClaimedSpool]:
    """Spool files left by finished or dead clients of this host (for the daemon at `url`, or any daemon when url is
    None), each claimed in turn."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0):
        if path == exclude:
            continue
        claimed = claim(path)
        if claimed is None:
            continue
        header = claimed.contents.header
        same_daemon = url is None or str(header.get("url", "")).rstrip("/") == url.rstrip("/")
        if header.get("host") != host or not same_daemon:
            claimed.release()  # another node's or another daemon's markers: theirs to replay
            continue
        yield claimed
