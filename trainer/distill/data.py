"""Data: hub data sets, `save_to_disk` folders, CSV/JSONL files and the synthetic set, made into one shape:
a train and an eval split with `input_ids`, `attention_mask` and `labels` (integers) as tensors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk
from torch import Tensor
from transformers import BertTokenizerFast, PreTrainedTokenizerBase  # type: ignore[attr-defined]  # lazy export

from trainer.distill import synthetic
from trainer.distill.errors import UsageError
from trainer.distill.models import tokenizer_fingerprint

SYNTHETIC = "synthetic"
META_FILE = "joulemeter_data.json"
TENSOR_COLUMNS = ["input_ids", "attention_mask", "labels"]
# Share of a single-split source held out for evaluation.
HOLDOUT_FRACTION = 0.1
SYNTHETIC_TRAIN_DEFAULT = 4000
SYNTHETIC_EVAL_DEFAULT = 1000


def _amazon_text(row: dict[str, Any]) -> dict[str, str]:
    return {"text": f"{row['title']}. {row['content']}"}


# Hub data sets this trainer knows how to read: how each one's text column is made.
HUB_PRESETS: dict[str, Callable[[dict[str, Any]], dict[str, str]] | None] = {
    "amazon_polarity": _amazon_text,
    "ag_news": None,  # already has `text`
}


@dataclass
class TextData:
    train: Dataset
    eval: Dataset
    label_names: list[str]
    source: str


@dataclass
class TokenizedData:
    train: Dataset
    eval: Dataset
    label_names: list[str]
    source: str
    max_length: int
    tokenizer_fingerprint: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def meta(self) -> dict[str, Any]:
        return {"source": self.source, "label_names": self.label_names, "max_length": self.max_length,
                "tokenizer_fingerprint": self.tokenizer_fingerprint, "train_samples": len(self.train),
                "eval_samples": len(self.eval)}


def looks_like_path(source: str) -> bool:
    return "/" in source or source.startswith(".") or Path(source).suffix.lower() in {".csv", ".jsonl", ".json"}


def synthetic_text(train_samples: int | None, eval_samples: int | None, seed: int) -> TextData:
    n_train = train_samples or SYNTHETIC_TRAIN_DEFAULT
    n_eval = eval_samples or SYNTHETIC_EVAL_DEFAULT
    # Disjoint seeds for the two splits.
    train = list(synthetic.reviews(n_train, seed=2 * seed))
    held_out = list(synthetic.reviews(n_eval, seed=2 * seed + 1))

    def as_dataset(rows: list[tuple[str, int]]) -> Dataset:
        return Dataset.from_dict({"text": [t for t, _ in rows], "labels": [y for _, y in rows]})

    return TextData(train=as_dataset(train), eval=as_dataset(held_out), label_names=list(synthetic.LABEL_NAMES),
                    source=f"{SYNTHETIC}(seed={seed})")


def build_wordpiece_tokenizer(texts: list[str], folder: Path, vocab_size: int = 2000,
                              max_length: int = 512) -> PreTrainedTokenizerBase:
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is made from `texts`, saved in `folder`.

    The vocabulary is every character (alone and as a `##` continuation, so no word is ever [UNK]) plus the most
    frequent whole words, ties broken alphabetically: the same texts always give the same ids, which a trained
    WordPiece vocabulary does not promise (its merges tie-break in hash order).
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(lowercase=True)
    splitter = BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    seen = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), model_max_length=max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _split(ds: DatasetDict | Dataset, train_split: str, eval_split: str, seed: int, what: str) -> tuple[Dataset, Dataset]:
    if isinstance(ds, Dataset):
        parts = ds.train_test_split(test_size=HOLDOUT_FRACTION, seed=seed)
        return parts["train"], parts["test"]
    for split in (train_split, eval_split):
        if split not in ds:
            raise UsageError(f"{what} has no split {split!r}; it has {sorted(ds.keys())}")
    return ds[train_split], ds[eval_split]


def _read_local(path: Path, train_split: str, eval_split: str, seed: int) -> tuple[Dataset, Dataset]:
    if not path.exists():
        kind = "folder" if not path.suffix else "file"
        raise UsageError(f"no such data {kind}: {path}")
    if path.is_dir():
        try:
            ds = load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise UsageError(f"{path} is not a data set saved with save_to_disk ({exc})") from exc
        return _split(ds, train_split, eval_split, seed, str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        ds = load_dataset("csv", data_files=str(path), split="train")
    elif suffix in {".jsonl", ".json"}:
        ds = load_dataset("json", data_files=str(path), split="train")
    else:
        raise UsageError(f"cannot read {path}: expected a folder saved with save_to_disk, a .csv or a .jsonl file")
    return _split(ds, train_split, eval_split, seed, str(path))


def _read_hub(name: str, train_split: str, eval_split: str) -> tuple[Dataset, Dataset]:
    try:
        return load_dataset(name, split=train_split), load_dataset(name, split=eval_split)
    except Exception as exc:  # datasets raises many types (connection, missing split, unknown name)
        raise UsageError(f"cannot load the data set {name!r}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def normalise_labels(train: Dataset, held_out: Dataset, what: str) -> tuple[Dataset, Dataset, list[str]]:
    """Labels end up as integers 0..k−1 in a `labels` column, with their names (class names or the raw values)."""
    column = "labels" if "labels" in train.column_names else "label" if "label" in train.column_names else None
    if column is None or column not in held_out.column_names:
        raise UsageError(f"{what} has no 'label' column (columns: {train.column_names})")
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        mapping: dict[Any, int] | None = None
    else:
        values = sorted(set(train[column]) | set(held_out[column]), key=lambda v: (str(type(v)), v))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            if values and values[0] < 0:
                raise UsageError(f"{what} has negative labels ({values[0]}); labels must be 0..k-1 or strings")
            names = [str(i) for i in range(int(values[-1]) + 1 if values else 0)]
            mapping = None
        else:
            names = [str(v) for v in values]
            mapping = {v: i for i, v in enumerate(values)}
    if len(names) < 2:
        raise UsageError(f"{what} has {len(names)} distinct label(s); classification needs at least 2")

    def convert(ds: Dataset) -> Dataset:
        if mapping is not None:
            ds = ds.map(lambda row: {"_y": mapping[row[column]]}, remove_columns=[column]).rename_column("_y", "labels")
        elif column != "labels":
            ds = ds.rename_column(column, "labels")
        return ds

    return convert(train), convert(held_out), names


def load_text(source: str, train_split: str = "train", eval_split: str = "test", max_train: int | None = None,
              max_eval: int | None = None, seed: int = 0) -> TextData:
    """Texts and integer labels from any supported source (not tokenised)."""
    if source == SYNTHETIC:
        return synthetic_text(max_train, max_eval, seed)
    is_local = looks_like_path(source) or Path(source).exists()
    if is_local:
        train, held_out = _read_local(Path(source), train_split, eval_split, seed)
    else:
        train, held_out = _read_hub(source, train_split, eval_split)
    train, held_out, names = normalise_labels(train, held_out, source)
    # Subsample before building texts: amazon_polarity's training split alone has 3.6 million rows.
    train, held_out = _subsample(train, max_train, seed), _subsample(held_out, max_eval, seed)
    make_text = None if is_local else HUB_PRESETS.get(source)
    if make_text is not None:
        train, held_out = train.map(make_text), held_out.map(make_text)
    if "text" not in train.column_names:
        raise UsageError(f"{source} has no 'text' column (columns: {train.column_names})")
    return TextData(train=train, eval=held_out, label_names=names, source=source)


def tokenize(text: TextData, tokenizer: PreTrainedTokenizerBase, max_length: int) -> TokenizedData:
    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def run(ds: Dataset) -> Dataset:
        ds = ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "labels"])
        return ds.with_format("torch", columns=TENSOR_COLUMNS)

    return TokenizedData(train=run(text.train), eval=run(text.eval), label_names=text.label_names,
                         source=text.source, max_length=max_length,
                         tokenizer_fingerprint=tokenizer_fingerprint(tokenizer))


def save_tokenized(data: TokenizedData, folder: Path) -> None:
    DatasetDict({"train": data.train, "eval": data.eval}).save_to_disk(str(folder))
    (folder / META_FILE).write_text(json.dumps(data.meta(), indent=2))


def _read_tokenized(folder: Path, tokenizer: PreTrainedTokenizerBase, max_train: int | None, max_eval: int | None,
                    seed: int) -> TokenizedData:
    meta = json.loads((folder / META_FILE).read_text())
    expected = tokenizer_fingerprint(tokenizer)
    if meta["tokenizer_fingerprint"] != expected:
        raise UsageError(f"{folder} was tokenised with another tokenizer (fingerprint {meta['tokenizer_fingerprint']}, "
                         f"the models' is {expected}); export it again with the models' tokenizer")
    ds = load_from_disk(str(folder))
    return TokenizedData(train=_subsample(ds["train"], max_train, seed).with_format("torch", columns=TENSOR_COLUMNS),
                         eval=_subsample(ds["eval"], max_eval, seed).with_format("torch", columns=TENSOR_COLUMNS),
                         label_names=list(meta["label_names"]), source=str(meta["source"]),
                         max_length=int(meta["max_length"]), tokenizer_fingerprint=expected)


def load_data(source: str, tokenizer: PreTrainedTokenizerBase, max_length: int, train_split: str = "train",
              eval_split: str = "test", max_train: int | None = None, max_eval: int | None = None,
              seed: int = 0) -> TokenizedData:
    """Model-ready data: a folder written by `export-data` is used as it is, anything else is tokenised here."""
    path = Path(source)
    if path.is_dir() and (path / META_FILE).exists():
        return _read_tokenized(path, tokenizer, max_train, max_eval, seed)
    return tokenize(load_text(source, train_split, eval_split, max_train, max_eval, seed), tokenizer, max_length)


def pad_collate(pad_id: int) -> Callable[[list[dict[str, Tensor]]], dict[str, Tensor]]:
    """Pads each batch to its own longest sequence (not the global maximum), which is what short texts need."""

    def collate(rows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        longest = max(int(r["input_ids"].numel()) for r in rows)
        ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            n = int(r["input_ids"].numel())
            ids[i, :n] = r["input_ids"]
            mask[i, :n] = r["attention_mask"]
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.stack([r["labels"] for r in rows]).long()}

    return collate
