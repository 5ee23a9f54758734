"""Daemon settings: command-line flags override environment variables (prefix TELEMETRY_) override defaults."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Per-user data folder (XDG on Linux), where the default SQLite ledger lives."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "joulemeter"


def default_db_url() -> str:
    return f"sqlite:///{default_data_dir() / 'telemetry.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    db: str = Field(default_factory=default_db_url)
    interval: float = Field(0.1, gt=0.0, le=60.0, description="sampling interval, seconds")
    node: str = Field(default_factory=socket.gethostname)
    simulate_gpus: int = Field(0, ge=0, le=1024)
    simulate_trace: Path | None = None
    cpu_tdp_w: float = Field(65.0, gt=0.0, description="TDP used by the CPU estimate where RAPL is unreadable")
    rapl_root: Path = Path("/sys/class/powercap")
    flush_interval: float = Field(0.5, gt=0.0, le=10.0, description="longest a sample waits before it is written")
    process_interval: float = Field(1.0, gt=0.0, description="per-process CPU/RSS/GPU-memory sampling interval")
    log_level: str = "info"
