"""Shared pieces of the distillation tests: a recording stand-in for the telemetry client (same methods as
`trainer.client.TelemetryClient`), tiny models and data, and a CLI runner."""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REQUIRED_PHASES = {"epoch", "train_step", "data_load", "teacher_forward", "student_forward", "loss", "backward",
                  "optimizer_step", "eval", "checkpoint"}


@dataclass
class Marker:
    name: str
    start: float
    end: float
    step: int | None
    depth: int


@dataclass
class RecordingTelemetry:
    """Keeps every phase in memory with its nesting depth; `energy()` answers None (no daemon)."""
    name: str
    config: dict[str, Any]
    tags: dict[str, Any]
    markers: list[Marker] = field(default_factory=list)
    entered: bool = False
    stopped: dict[str, Any] | None = None
    _open: list[tuple[str, float, int | None]] = field(default_factory=list)

    run_id: str | None = "rec-1"
    url: str = "http://recording.invalid"

    def __enter__(self) -> RecordingTelemetry:
        self.entered = True
        return self

    def __exit__(self, exc_type: Any, *_: object) -> None:
        if self.stopped is None:
            self.stop(status="failed" if exc_type else "completed")

    def begin(self, name: str, step: int | None = None) -> tuple[str, float, int | None, int]:
        assert self.entered, "phases outside the run"
        handle = (name, time.time(), step, len(self._open))
        self._open.append(handle[:3])
        return handle

    def end(self, handle: tuple[str, float, int | None, int]) -> None:
        name, start, step, depth = handle
        assert self._open and self._open[-1][0] == name, f"phase {name} closed out of order"
        self._open.pop()
        self.markers.append(Marker(name, start, time.time(), step, depth))

    @contextlib.contextmanager
    def phase(self, name: str, step: int | None = None) -> Iterator[None]:
        h = self.begin(name, step)
        try:
            yield
        finally:
            self.end(h)

    def phased(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(*a: Any, **k: Any) -> Any:
                with self.phase(name):
                    return fn(*a, **k)
            return inner
        return wrap

    def mark(self, name: str) -> None:
        t = time.time()
        self.markers.append(Marker(name, t, t, None, len(self._open)))

    def stop(self, status: str = "completed", metrics: dict[str, Any] | None = None) -> None:
        self.stopped = {"status": status, "metrics": dict(metrics or {})}

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def energy(self) -> dict[str, Any] | None:
        return None

    def names(self) -> set[str]:
        return {m.name for m in self.markers}

    def count(self, name: str) -> int:
        return sum(1 for m in self.markers if m.name == name)


@dataclass
class RecordingFactory:
    runs: list[RecordingTelemetry] = field(default_factory=list)

    def __call__(self, name: str, config: dict[str, Any], tags: dict[str, Any]) -> RecordingTelemetry:
        tc = RecordingTelemetry(name=name, config=config, tags=tags)
        self.runs.append(tc)
        return tc

    def by_role(self, role: str) -> RecordingTelemetry:
        return next(r for r in self.runs if r.tags.get("role") == role)


# --- tiny models and data -------------------------------------------------------------------------------------

@dataclass
class Tiny:
    tokenizer: Any
    data: Any  # TokenizedData

    def teacher(self, seed: int = 0, layers: int = 2, hidden: int = 32) -> Any:
        from trainer.distill.models import tiny_bert

        return tiny_bert(len(self.tokenizer), layers=layers, hidden=hidden, heads=2, num_labels=2, max_positions=32,
                         seed=seed)

    def student(self, seed: int = 1) -> Any:
        from trainer.distill.models import tiny_bert

        return tiny_bert(len(self.tokenizer), layers=1, hidden=16, heads=2, num_labels=2, max_positions=32, seed=seed)


def make_tiny(folder: Path, train: int = 160, held_out: int = 80, seed: int = 0) -> Tiny:
    import torch

    from trainer.distill import data as data_mod

    # Models this small gain nothing from a second intra-op thread, and on a busy machine lose a lot to it.
    torch.set_num_threads(1)
    text = data_mod.synthetic_text(train, held_out, seed)
    tokenizer = data_mod.build_wordpiece_tokenizer(list(text.train["text"]), folder / "tokenizer")
    return Tiny(tokenizer=tokenizer, data=data_mod.tokenize(text, tokenizer, max_length=32))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Callable[[], Any], Any, Any]:
    """(teacher with 2 layers of width 32, a factory of 1-layer width-16 students, tokenizer, data): untrained."""
    tiny = make_tiny(tmp_path_factory.mktemp("tiny"))
    return tiny.teacher(), tiny.student, tiny.tokenizer, tiny.data


@dataclass
class ModelFolders:
    teacher: Path
    student: Path
    other_student: Path  # same architecture, a tokenizer with a different vocabulary
    bare_teacher: Path  # an encoder without a classification head, as bert-base-uncased on the hub
    csv: Path


def save_model_folders(root: Path) -> ModelFolders:
    """Tiny teacher and student saved as a user's local checkpoints would be (config, weights, tokenizer), and a
    CSV data file with text,label."""
    from trainer.distill import data as data_mod
    from trainer.distill.models import tiny_bert

    tiny = make_tiny(root / "shared")
    other_tok = data_mod.build_wordpiece_tokenizer(["an entirely different corpus", "with other words"],
                                                   root / "other-tokenizer")
    out = ModelFolders(root / "teacher", root / "student", root / "other-student", root / "bare-teacher",
                       root / "reviews.csv")
    tiny_bert(len(tiny.tokenizer), layers=4, hidden=32, heads=2, num_labels=2, max_positions=64,
              seed=0).save_pretrained(out.teacher)
    tiny.tokenizer.save_pretrained(out.teacher)
    tiny_bert(len(tiny.tokenizer), layers=2, hidden=16, heads=2, num_labels=2, max_positions=64,
              seed=1).save_pretrained(out.student)
    tiny.tokenizer.save_pretrained(out.student)
    tiny_bert(len(tiny.tokenizer), layers=2, hidden=16, heads=2, num_labels=2, max_positions=64,
              seed=1).save_pretrained(out.other_student)
    other_tok.save_pretrained(out.other_student)
    bare = tiny_bert(len(tiny.tokenizer), layers=4, hidden=32, heads=2, num_labels=2, max_positions=64, seed=0)
    bare.bert.save_pretrained(out.bare_teacher)
    tiny.tokenizer.save_pretrained(out.bare_teacher)
    rows = data_mod.synthetic_text(60, 1, seed=3).train
    with out.csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, "pos" if y else "neg"] for t, y in zip(rows["text"], rows["labels"]))
    return out


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> ModelFolders:
    return save_model_folders(tmp_path_factory.mktemp("models"))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs `joulemeter-train` in this process; argparse's SystemExit is turned into a return code."""
    from trainer.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code) if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
