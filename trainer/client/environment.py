"""What the training process can say about itself: PID, host, the GPUs it sees, and its Slurm job.

Read from the environment only; torch is consulted when the program has already imported it and initialised
CUDA, never imported here (importing it costs seconds and would initialise nothing useful).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8765"
DEVICE_ORDERS = ("FASTEST_FIRST", "PCI_BUS_ID")

# Slurm variables kept as run tags, under lower-case names.
SLURM_TAGS = {
    "SLURM_JOB_ID": "slurm_job_id",
    "SLURM_ARRAY_JOB_ID": "slurm_array_job_id",
    "SLURM_ARRAY_TASK_ID": "slurm_array_task_id",
    "SLURM_JOB_NAME": "slurm_job_name",
    "SLURM_JOB_PARTITION": "slurm_partition",
    "SLURM_CLUSTER_NAME": "slurm_cluster",
    "SLURM_JOB_NODELIST": "slurm_nodelist",
    "SLURM_JOB_NUM_NODES": "slurm_num_nodes",
    "SLURM_NTASKS": "slurm_ntasks",
    "SLURM_STEP_ID": "slurm_step_id",
    "SLURM_PROCID": "slurm_procid",
    "SLURM_LOCALID": "slurm_localid",
    "SLURM_NODEID": "slurm_nodeid",
    "SLURM_RESTART_COUNT": "slurm_restart_count",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    host: str
    visible_devices: list[str] | None
    cuda_device_order: str | None
    job_run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)


def daemon_url(url: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The argument, else TELEMETRY_URL, else the node-local default."""
    return (url or env.get("TELEMETRY_URL") or DEFAULT_URL).rstrip("/")


def daemon_token(env: Mapping[str, str] = os.environ) -> str | None:
    """The daemon's bearer token, where it asks for one: TELEMETRY_TOKEN, else the file TELEMETRY_TOKEN_FILE names."""
    if env.get("TELEMETRY_TOKEN"):
        return env["TELEMETRY_TOKEN"].strip()
    path = env.get("TELEMETRY_TOKEN_FILE")
    if path:
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError as exc:
            log.warning("joulemeter: cannot read the token file %s: %s", path, exc)
    return None


def job_run_id(env: Mapping[str, str] = os.environ) -> str | None:
    """One id for every rank and node of a job: the array task (`<array job>_<task>`), else the Slurm job, else the
    torchrun rendezvous id."""
    array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    elastic = env.get("TORCHELASTIC_RUN_ID")
    return elastic if elastic and elastic != "none" else None


def job_tags(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    tags = {tag: env[var] for var, tag in SLURM_TAGS.items() if env.get(var)}
    if "slurm_nodelist" not in tags and env.get("SLURM_NODELIST"):
        tags["slurm_nodelist"] = env["SLURM_NODELIST"]
    return tags


def visible_devices(env: Mapping[str, str] = os.environ) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list: None when unset (every GPU), [] when set but empty (no GPU)."""
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [e.strip() for e in raw.split(",") if e.strip()]


def device_order(env: Mapping[str, str] = os.environ) -> str | None:
    order = env.get("CUDA_DEVICE_ORDER", "").strip().upper()
    return order if order in DEVICE_ORDERS else None


def cuda_uuids() -> list[str] | None:
    """`GPU-<uuid>` of each device this process sees, when the program has already initialised CUDA.

    UUIDs name a GPU exactly, whatever CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER say.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized():
            return None
        uuids = []
        for i in range(cuda.device_count()):
            uuid = str(cuda.get_device_properties(i).uuid)
            uuids.append(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        return uuids
    except (AttributeError, RuntimeError, AssertionError):
        return None


def discover(env: Mapping[str, str] = os.environ) -> ProcessInfo:
    return ProcessInfo(pid=os.getpid(), host=socket.gethostname(),
                       visible_devices=cuda_uuids() or visible_devices(env), cuda_device_order=device_order(env),
                       job_run_id=job_run_id(env), tags=job_tags(env))


def default_spool_dir(env: Mapping[str, str] = os.environ) -> Path:
    """TELEMETRY_SPOOL_DIR, else `spool` in the per-user data folder the daemon also uses (XDG on Linux)."""
    if env.get("TELEMETRY_SPOOL_DIR"):
        return Path(env["TELEMETRY_SPOOL_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "joulemeter" / "spool"
