"""Daemon settings: command-line flags override environment variables (prefix TELEMETRY_) override defaults."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    simulate_profile: str | None = Field(None, description="sensor profile of simulated GPUs (see sensors/simulated)")
    cpu_tdp_w: float = Field(65.0, gt=0.0, description="TDP used by the CPU estimate where RAPL is unreadable")
    # A package never draws nothing: uncore, memory controller and I/O stay powered in the deepest C-states, and
    # idle packages commonly measure a quarter to a third of TDP. Without a floor, utilisation x TDP read 0 W on a
    # quiet node and swung with every unrelated process.
    cpu_idle_fraction: float = Field(0.3, ge=0.0, lt=1.0,
                                     description="idle power of the CPU estimate, as a fraction of its TDP")
    rapl_root: Path = Path("/sys/class/powercap")
    flush_interval: float = Field(0.5, gt=0.0, le=10.0, description="longest a sample waits before it is written")
    process_interval: float = Field(1.0, gt=0.0, description="per-process CPU/RSS/GPU-memory sampling interval")
    log_level: str = "info"
    # Access (see api/auth.py): a token is required to listen on anything but loopback.
    token: SecretStr | None = None
    token_file: Path | None = None
    public_read: bool = False
    cors_origin: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                        description="origins allowed to call the API from a browser")
    # Downsampling of old samples (see retention.py): "AGE:BUCKET,..." or "off".
    retention: str = "1d:1s,7d:1m,90d:15m"
    retention_every_s: float = Field(300.0, gt=0.0, description="how often the retention pass looks for work")
    # Grid carbon intensity for the gCO2e figures (see carbon.py): a constant, or the node's series in a CSV file.
    carbon_intensity: float | None = Field(None, ge=0.0, allow_inf_nan=False, description="gCO2e/kWh")
    carbon_intensity_file: Path | None = None
    member_check_s: float = Field(3.0, gt=0.0, le=600.0,
                                  description="how often processes of running runs are checked for having died")

    @field_validator("simulate_profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        from telemetry_service.sensors.simulated.profiles import profile

        if value is not None:
            profile(value)  # raises ValueError naming the known ones
        return value

    @model_validator(mode="after")
    def _one_carbon_source(self) -> Settings:
        from telemetry_service.carbon import read_series

        if self.carbon_intensity is not None and self.carbon_intensity_file is not None:
            raise ValueError("give a carbon intensity or a carbon intensity file, not both")
        if self.carbon_intensity_file is not None:
            try:
                read_series(self.carbon_intensity_file)  # a bad file stops the start, not the first answer
            except OSError as exc:
                raise ValueError(f"cannot read the carbon intensity file: {exc.strerror}: {exc.filename}") from exc
        return self

    @field_validator("cors_origin", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # TELEMETRY_CORS_ORIGIN="https://a.example,https://b.example"; repeated --cors-origin flags arrive as a list.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
