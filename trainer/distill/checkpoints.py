"""Checkpoints: weights (model, connector), tokenizer and trainer state per save; only the last N are kept, plus
the best one in `best/`, which rotation never touches."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREFIX = "checkpoint-"
BEST = "best"
CONNECTOR_FILE = "connector.pt"
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest (lowest step) first."""
    found = [(int(m.group(1)), p) for p in folder.glob(f"{PREFIX}*")
             if p.is_dir() and (m := re.fullmatch(rf"{PREFIX}(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def clear(folder: Path) -> None:
    """A new training starts from an empty folder, so rotation and `best/` never mix two trainings."""
    for path in [*checkpoint_dirs(folder), folder / BEST]:
        if path.is_dir():
            shutil.rmtree(path)


def save(target: Path, model: PreTrainedModel, connector: nn.Module | None,
         tokenizer: PreTrainedTokenizerBase | None, state: dict[str, Any]) -> Path:
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if connector is not None and any(True for _ in connector.parameters()):
        torch.save(connector.state_dict(), tmp / CONNECTOR_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    # Written aside and renamed, so an interrupted save never leaves a half checkpoint under the real name.
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def save_rotating(folder: Path, step: int, keep: int, model: PreTrainedModel, connector: nn.Module | None,
                  tokenizer: PreTrainedTokenizerBase | None, state: dict[str, Any]) -> Path:
    path = save(folder / f"{PREFIX}{step}", model, connector, tokenizer, state)
    for old in checkpoint_dirs(folder)[:-keep]:
        shutil.rmtree(old)
    return path


def load_weights(source: Path, model: PreTrainedModel, connector: nn.Module | None) -> None:
    """Puts the weights saved in `source` back into `model` (and the connector), in place."""
    loaded = type(model).from_pretrained(source)
    model.load_state_dict(loaded.state_dict())
    if connector is not None and (source / CONNECTOR_FILE).exists():
        connector.load_state_dict(torch.load(source / CONNECTOR_FILE, weights_only=True))
