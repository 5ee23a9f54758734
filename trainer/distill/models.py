"""Teacher and student models: loading by hub name or local path, tiny configs for the demo, and the checks that
must hold between the two (same tokenizer, valid hidden-state indices)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainer.distill.errors import UsageError

# A sentence the agreement check encodes with both tokenizers: cased, accented, punctuated and with digits,
# so lower-casing, accent stripping and the word-piece inventory all show up in the ids.
PROBE_TEXT = "Héllo, World! The battery lasted 10 hours; I wouldn't buy it again."


def num_hidden_states(model: PreTrainedModel) -> int:
    """Entries of `output_hidden_states`: the embeddings plus one per transformer layer."""
    return int(model.config.num_hidden_layers) + 1


def hidden_width(model: PreTrainedModel) -> int:
    return int(model.config.hidden_size)


def resolve_layer(index: int, model: PreTrainedModel, flag: str, role: str) -> int:
    """A hidden-state index (negative counts from the last layer) as a non-negative one, or a UsageError."""
    n = num_hidden_states(model)
    if not -n <= index < n:
        raise UsageError(f"{flag} {index} is out of range: the {role} has {n} hidden states "
                         f"(embeddings + {n - 1} layers), so valid indices are {-n}..{n - 1}")
    return index % n


def count_parameters(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _is_local(name: str) -> bool:
    return os.path.sep in name or name.startswith(".") or Path(name).exists()


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    if _is_local(name) and not Path(name).is_dir():
        raise UsageError(f"no model folder {name!r}")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the tokenizer of {name!r}: {_first_line(exc)}") from exc


def load_classifier(name: str, num_labels: int, role: str) -> tuple[PreTrainedModel, bool]:
    """A sequence classifier with `num_labels` outputs from a hub name or a local folder, and whether its
    classification head was trained (came with the checkpoint).

    A checkpoint that already has a classification head must have been trained for the same number of labels;
    a bare encoder (e.g. bert-base-uncased) gets a new, randomly initialised head of the right size.
    """
    if _is_local(name) and not Path(name).is_dir():
        raise UsageError(f"no {role} model folder {name!r}")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the {role} {name!r}: {_first_line(exc)}") from exc
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if has_head and config.num_labels != num_labels:
        raise UsageError(f"the {role} {name!r} was trained for {config.num_labels} labels but the data set has "
                         f"{num_labels}")
    config.num_labels = num_labels
    try:
        return AutoModelForSequenceClassification.from_pretrained(name, config=config), has_head
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the {role} {name!r}: {_first_line(exc)}") from exc


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of what decides the ids a text gets: the vocabulary, the special tokens and a probe encoding."""
    state = {"vocab": sorted(tokenizer.get_vocab().items()), "special": tokenizer.all_special_tokens,
             "probe": tokenizer(PROBE_TEXT)["input_ids"]}
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def check_tokenizers_agree(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase) -> None:
    """Distillation feeds one batch of ids to both models, so both must map every text to the same ids."""
    tv, sv = teacher.get_vocab(), student.get_vocab()
    if tv != sv:
        only_t = len(tv.keys() - sv.keys())
        only_s = len(sv.keys() - tv.keys())
        moved = sum(1 for k in tv.keys() & sv.keys() if tv[k] != sv[k])
        raise UsageError(f"the teacher and student tokenizers disagree: vocabularies of {len(tv)} and {len(sv)} "
                         f"tokens ({only_t} only in the teacher's, {only_s} only in the student's, {moved} with "
                         "different ids); both models must share one tokenizer")
    for attr in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id"):
        if getattr(teacher, attr) != getattr(student, attr):
            raise UsageError(f"the teacher and student tokenizers disagree on {attr}: "
                             f"{getattr(teacher, attr)} vs {getattr(student, attr)}")
    t_ids, s_ids = teacher(PROBE_TEXT)["input_ids"], student(PROBE_TEXT)["input_ids"]
    if t_ids != s_ids:
        raise UsageError("the teacher and student tokenizers share a vocabulary but encode text differently "
                         f"(e.g. lower-casing): {t_ids[:12]} vs {s_ids[:12]}")


def check_vocab_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, role: str) -> None:
    size = int(model.config.vocab_size)
    if len(tokenizer) > size:
        raise UsageError(f"the tokenizer has {len(tokenizer)} tokens but the {role}'s embedding has only {size} rows")


def tiny_bert(vocab_size: int, layers: int, hidden: int, heads: int, num_labels: int, max_positions: int,
              seed: int) -> BertForSequenceClassification:
    """A small BERT from a config (random weights, reproducible from `seed`): the demo's teacher and student."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max_positions, num_labels=num_labels,  # type: ignore[call-arg]
                        hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
