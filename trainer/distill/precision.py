"""Device choice and mixed precision: bf16/fp16 autocast on CUDA only; elsewhere full fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from trainer.distill.errors import UsageError

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: no CUDA device is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise UsageError(f"--device {requested}: {exc}") from exc


@dataclass(frozen=True)
class Precision:
    name: Literal["fp32", "bf16", "fp16"]

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=device.type, dtype=self.dtype):
            yield

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
        return torch.amp.GradScaler(device.type) if self.name == "fp16" else None


def pick_precision(requested: PrecisionName, device: torch.device) -> Precision:
    if requested == "auto":
        if device.type == "cuda":
            return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        return Precision("fp32")
    if requested != "fp32" and device.type != "cuda":
        raise UsageError(f"--precision {requested} needs a CUDA device (this run uses {device.type}); use fp32")
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU does not support bfloat16; use fp16")
    return Precision(requested)
