"""The Hugging Face callback on a real (tiny, CPU, built in place) BERT Trainer against the real daemon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.client_fixtures import phases_of, run_of, shared_daemon  # noqa: F401 - fixture
from tests.daemon_proc import DaemonProcess

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class Pairs(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 32).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}


def test_hf_trainer_steps_evaluations_and_saves_are_marked(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    from trainer.client.hf_callback import TelemetryCallback

    daemon = shared_daemon
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), run_name="tiny-bert", max_steps=4, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        hub_token="hf_SECRET_never_stored")
    callback = TelemetryCallback(url=daemon.url, spool_dir=tmp_path / "spool", flush_interval=0.05, sync_cuda=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Pairs(32, 1), eval_dataset=Pairs(16, 2),
                                   compute_metrics=accuracy, callbacks=[callback])
    trainer.train()

    assert callback.client is not None
    run_id = callback.client.run_id
    run = run_of(daemon.url, run_id)
    assert run is not None
    assert run["name"] == "tiny-bert" and run["status"] == "completed"
    assert run["config"]["max_steps"] == 4 and run["config"]["eval_steps"] == 2
    # The arguments are the run's config, but their token is not: not in the run, nor in the dashboard's list.
    assert run["config"]["hub_token"] == "[redacted]"
    assert "hf_SECRET" not in httpx.get(f"{daemon.url}/api/v1/runs", timeout=30).text
    assert "eval_accuracy" in run["metrics"] and "eval_loss" in run["metrics"]
    assert "train_loss" in run["metrics"] and "train_runtime" in run["metrics"]  # the training summary is kept

    phases = phases_of(daemon.url, run_id)
    assert Counter(p["name"] for p in phases) == {"train": 1, "epoch": 1, "train_step": 4, "evaluate": 2, "save": 2,
                                                   "log": 4 + 2 + 1}  # 4 step logs, 2 eval logs, the final summary
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in phases:
        by_name.setdefault(p["name"], []).append(p)
    steps = by_name["train_step"]
    assert [p["step"] for p in steps] == [1, 2, 3, 4]
    assert [p["step"] for p in by_name["evaluate"]] == [2, 4]
    assert [p["step"] for p in by_name["save"]] == [2, 4]
    assert all(0.0 <= p["attrs"]["eval_accuracy"] <= 1.0 for p in by_name["evaluate"])
    ev, sv = by_name["evaluate"][0], by_name["save"][0]
    # Step 2, then its evaluation, then its checkpoint, then step 3: in that order, without overlap.
    assert steps[1]["end"] <= ev["start"] < ev["end"] <= sv["start"] < sv["end"] <= steps[2]["start"]
    train = by_name["train"][0]
    assert train["start"] <= steps[0]["start"] and train["end"] >= by_name["save"][1]["end"]
    assert train["attrs"]["steps"] == 4
    assert any(p["attrs"] and "loss" in p["attrs"] for p in by_name["log"])
