"""The ledger: nodes, their devices, runs (which may span nodes), phases, samples."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    first_seen: Mapped[float] = mapped_column(Float)
    last_started: Mapped[float] = mapped_column(Float)

    devices: Mapped[list[Device]] = relationship(back_populates="node")


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("node_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    key: Mapped[str] = mapped_column(String(64))  # gpu0, cpu0, dram0, host
    kind: Mapped[str] = mapped_column(String(16))
    index: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    uuid: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    energy_counter: Mapped[bool]
    update_period_s: Mapped[float | None] = mapped_column(Float)
    power_window_s: Mapped[float | None] = mapped_column(Float)  # power is a moving average over this window
    idle_power_w: Mapped[float | None] = mapped_column(Float)  # known idle draw (the CPU estimate's floor)
    counter_wrap_j: Mapped[float | None] = mapped_column(Float)
    present: Mapped[bool] = mapped_column(default=True)  # seen by the daemon's last start

    node: Mapped[Node] = relationship(back_populates="devices")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # running, completed, failed: follows its members
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    totals: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the energy total, fixed once the run stops

    members: Mapped[list[RunMember]] = relationship(back_populates="run", order_by="RunMember.id")


class RunMember(Base):
    """One registration of a run from one process on one node: the devices that process can see, and how it ended.
    The run ends when its last member does."""

    __tablename__ = "run_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    device_keys: Mapped[list[Any]] = mapped_column(default=list)
    joined_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="running", server_default="running")  # + lost
    ended_at: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what this registrant said, beside the run's own
    last_seen_at: Mapped[float | None] = mapped_column(Float)  # end of its last marker: where a lost member ends
    # Only a process the daemon could see at registration can be declared dead when it vanishes.
    pid_visible: Mapped[bool] = mapped_column(default=False, server_default=false())

    run: Mapped[Run] = relationship(back_populates="members")
    node: Mapped[Node] = relationship()


class Phase(Base):
    __tablename__ = "phases"
    # A replayed marker is the same phase: same run, node, name and instants.
    __table_args__ = (UniqueConstraint("run_pk", "node_id", "name", "start", "end", name="uq_phase_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    name: Mapped[str] = mapped_column(String(255))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(BigInteger)
    attrs: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_device_t", "device_id", "t"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    t: Mapped[float] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    energy_j: Mapped[float | None] = mapped_column(Float)  # cumulative since the device entered the ledger
    energy_t: Mapped[float | None] = mapped_column(Float)  # the counter update instant that value belongs to
    counter_raw_j: Mapped[float | None] = mapped_column(Float)  # what the hardware said, for audits and resets
    timing: Mapped[str | None] = mapped_column(String(8))  # edge | grid | read: how energy_t was found
    stamp_err_s: Mapped[float | None] = mapped_column(Float)  # standard uncertainty of energy_t
    util_pct: Mapped[float | None] = mapped_column(Float)
    mem_util_pct: Mapped[float | None] = mapped_column(Float)
    mem_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mem_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    temp_c: Mapped[float | None] = mapped_column(Float)
    sm_clock_mhz: Mapped[float | None] = mapped_column(Float)
    power_limit_w: Mapped[float | None] = mapped_column(Float)
    cpu_busy_s: Mapped[float | None] = mapped_column(Float)  # host rows: cumulative busy CPU seconds, all cores


class ProcessSample(Base):
    __tablename__ = "process_samples"
    __table_args__ = (Index("ix_process_samples_node_pid_t", "node_id", "pid", "t"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    pid: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_mem_bytes: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # device key -> bytes
    cpu_time_s: Mapped[float | None] = mapped_column(Float)  # cumulative CPU seconds, descendants included
    # device key -> cumulative SM-seconds (SM % / 100 x s); rows of GPU processes of no run have only these.
    gpu_sm_s: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SamplerSession(Base):
    """One life of a daemon on a node: the stretches between sessions are gaps in the samples."""

    __tablename__ = "sampler_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    started_at: Mapped[float] = mapped_column(Float)
    last_sample_at: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    interval_s: Mapped[float] = mapped_column(Float)


class SampleBlock(Base):
    """A minute of one device's samples, packed: float64 rows of (t, power_w, energy_t, energy_j,
    stamp_err_s, timing code: 0 edge, 1 grid, 2 read), NaN for none."""

    __tablename__ = "sample_blocks"
    __table_args__ = (UniqueConstraint("device_id", "start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BlockWatermark(Base):
    """Samples of a device before `indexed_until` are in blocks; after it, only in `samples`."""

    __tablename__ = "block_watermarks"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    indexed_until: Mapped[float] = mapped_column(Float)


class DownsampledSpan(Base):
    """A stretch of one device's samples (or, with no device, of a node's process samples) that retention
    replaced with a coarser series of `bucket_s` buckets (see retention.py). Stretches of coarser tiers lie
    over finer ones; the coarsest covering an instant wins."""

    __tablename__ = "downsampled_spans"
    __table_args__ = (Index("ix_downsampled_spans_device_bucket", "device_id", "bucket_s"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))  # set for process samples
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    bucket_s: Mapped[float] = mapped_column(Float)
