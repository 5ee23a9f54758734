"""Which NVML devices a process sees: CUDA_VISIBLE_DEVICES entries mapped by UUID, since NVML ignores that variable."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    key: str
    index: int
    uuid: str | None
    name: str


@dataclass
class Visibility:
    keys: list[str]
    warnings: list[str] = field(default_factory=list)


def resolve_visible(entries: list[str] | None, gpus: list[Gpu], device_order: str | None = None) -> Visibility:
    """Maps CUDA_VISIBLE_DEVICES-style entries (indices, `GPU-<uuid>` or a unique prefix of one) to device keys.

    None means the variable was unset: every GPU. An index counts in CUDA's order; NVML enumerates by PCI bus,
    which is CUDA's order under CUDA_DEVICE_ORDER=PCI_BUS_ID, and also under the default FASTEST_FIRST when
    all GPUs are the same model. Otherwise the mapping is a guess, and the answer says so. As CUDA does, the
    first entry that names no device ends the list.
    """
    by_index = sorted(gpus, key=lambda g: g.index)
    if entries is None:
        return Visibility([g.key for g in by_index])
    out = Visibility([])
    mixed = len({g.name for g in gpus}) > 1
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        match: Gpu | None = None
        if entry.isascii() and entry.isdigit():  # int() also takes '²' and other Unicode digits; CUDA does not
            i = int(entry)
            match = by_index[i] if i < len(by_index) else None
            if match is not None and mixed and (device_order or "FASTEST_FIRST") != "PCI_BUS_ID":
                out.warnings.append(f"CUDA index {i} mapped in PCI order; set CUDA_DEVICE_ORDER=PCI_BUS_ID or pass UUIDs "
                                    "on nodes with mixed GPU models")
        elif entry.startswith("GPU-"):
            hits = [g for g in gpus if g.uuid and g.uuid.lower().startswith(entry.lower())]
            match = hits[0] if len(hits) == 1 else None
            if len(hits) > 1:
                out.warnings.append(f"{entry} is a prefix of several GPUs' UUIDs")
        elif entry.startswith("MIG-"):
            out.warnings.append(f"{entry}: a MIG instance cannot be mapped here; pass its parent GPU's UUID")
        if match is None:
            out.warnings.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU on this node; later entries are ignored")
            break
        if match.key not in out.keys:
            out.keys.append(match.key)
    return out
