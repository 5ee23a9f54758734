"""Data: the synthetic set's labels follow its grammar, every source ends up as integer `labels`, export-data
round-trips, and padding; plus accuracy and macro-F1 against hand counts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer

from tests.distill_fixtures import run_cli
from trainer.distill import data as data_mod
from trainer.distill import synthetic
from trainer.distill.errors import UsageError
from trainer.distill.evaluate import accuracy, macro_f1


def _clause_polarity(clause: str) -> int:
    words = clause.split()
    adjective = words[-1]
    polarity = 1 if adjective in synthetic.POSITIVE else -1
    assert adjective in synthetic.POSITIVE or adjective in synthetic.NEGATIVE, clause
    return -polarity if any(w in synthetic.NEGATORS for w in words) else polarity


def _label_from_text(text: str) -> int:
    """The generator's grammar, read back from the text alone."""
    for opener in sorted((o for o in synthetic.OPENERS if o), key=len, reverse=True):
        if text.startswith(opener + " "):
            text = text[len(opener) + 1:]
            break
    if " but " in text:
        return int(_clause_polarity(text.split(" but ")[1]) > 0)
    clauses = [c for part in text.split(", ") for c in part.split(" and ")]
    return int(sum(_clause_polarity(c) for c in clauses) > 0)


def test_synthetic_labels_follow_negation_and_but() -> None:
    rows = list(synthetic.reviews(500, seed=7))
    assert all(_label_from_text(text) == label for text, label in rows)
    assert 0.4 < np.mean([y for _, y in rows]) < 0.6
    assert any(" but " in t for t, _ in rows) and any(" not " in t for t, _ in rows)
    assert rows == list(synthetic.reviews(500, seed=7))
    assert rows != list(synthetic.reviews(500, seed=8))


def test_project_tokenizer_is_deterministic_and_never_unknown(tmp_path: Path) -> None:
    texts = [t for t, _ in synthetic.reviews(300, seed=1)]
    a = data_mod.build_wordpiece_tokenizer(texts, tmp_path / "a")
    b = data_mod.build_wordpiece_tokenizer(list(reversed(texts)), tmp_path / "b")
    assert (tmp_path / "a" / "vocab.txt").read_text() == (tmp_path / "b" / "vocab.txt").read_text()
    assert a.get_vocab() == b.get_vocab()
    ids = a("The BATTERY was not unreliable")["input_ids"]
    assert a.unk_token_id not in ids and ids[0] == a.cls_token_id and ids[-1] == a.sep_token_id
    assert a.tokenize("honestly the blender was superb") == ["honestly", "the", "blender", "was", "superb"]


def test_csv_with_string_labels_becomes_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    rows = [("great stuff", "pos"), ("awful, truly", "neg"), ("meh", "neutral")] * 10
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    text = data_mod.load_text(str(path), seed=0)
    assert text.label_names == ["neg", "neutral", "pos"]
    assert len(text.train) == 27 and len(text.eval) == 3  # 10% held out from a single-split file
    by_text = dict(zip(text.train["text"], text.train["labels"]))
    assert by_text["great stuff"] == 2 and by_text["awful, truly"] == 0 and by_text["meh"] == 1


def test_jsonl_and_saved_folder_sources(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 3}) + "\n" for i in range(20)))
    text = data_mod.load_text(str(jsonl), max_train=5)
    assert text.label_names == ["0", "1", "2"] and len(text.train) == 5 and "labels" in text.train.column_names

    features = Features({"text": Value("string"), "label": ClassLabel(names=["World", "Sports"])})
    folder = tmp_path / "saved"
    DatasetDict({
        "train": Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}, features=features),
        "test": Dataset.from_dict({"text": ["e", "f"], "label": [1, 0]}, features=features),
    }).save_to_disk(str(folder))
    text = data_mod.load_text(str(folder))
    assert text.label_names == ["World", "Sports"] and text.eval["labels"] == [1, 0]
    with pytest.raises(UsageError, match="has no split 'validation'"):
        data_mod.load_text(str(folder), eval_split="validation")


def test_missing_sources_and_columns(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such data folder"):
        data_mod.load_text(str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="no such data file"):
        data_mod.load_text(str(tmp_path / "absent.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,1\nbye,0\n" * 5)
    with pytest.raises(UsageError, match="no 'text' column"):
        data_mod.load_text(str(bad))


def test_export_data_round_trip_and_tokenizer_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exported"
    code, stdout, err = run_cli(["export-data", "--dataset", "synthetic", "--max-train-samples", "40",
                                 "--max-eval-samples", "10", "--max-length", "16", "--output", str(out)], capsys)
    assert code == 0, err
    assert "Saved 40 training and 10 held-out examples" in stdout
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    data = data_mod.load_data(str(out), tokenizer, max_length=128)
    assert data.max_length == 16 and data.label_names == ["negative", "positive"]
    row = data.train[0]
    assert isinstance(row["input_ids"], torch.Tensor) and row["input_ids"].numel() <= 16
    assert set(data.train.column_names) == {"input_ids", "attention_mask", "labels"}

    other = data_mod.build_wordpiece_tokenizer(["other words entirely"], tmp_path / "other")
    with pytest.raises(UsageError, match="tokenised with another tokenizer"):
        data_mod.load_data(str(out), other, max_length=16)
    code, _, err = run_cli(["export-data", "--dataset", "synthetic", "--output", str(out)], capsys)
    assert code == 2 and "is not empty" in err


def test_pad_collate_pads_to_the_longest_in_the_batch() -> None:
    rows = [{"input_ids": torch.tensor([2, 7, 3]), "attention_mask": torch.tensor([1, 1, 1]), "labels": torch.tensor(1)},
            {"input_ids": torch.tensor([2, 3]), "attention_mask": torch.tensor([1, 1]), "labels": torch.tensor(0)}]
    batch = data_mod.pad_collate(pad_id=0)(rows)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_accuracy_and_macro_f1_by_hand() -> None:
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # class 0: tp 2, fp 0, fn 1 -> 4/5; class 1: tp 2, fp 2, fn 0 -> 4/6; class 2: tp 0 -> 0
    assert macro_f1(pred, gold, 3) == pytest.approx((4 / 5 + 4 / 6 + 0) / 3)
    rng = random.Random(0)
    same = np.array([rng.randrange(4) for _ in range(50)])
    assert macro_f1(same, same, 4) == pytest.approx(1.0)
