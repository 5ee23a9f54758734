"""Energy math: pure functions over stored samples and phase boundaries.

Two ways to know a device's cumulative energy E(t) at any instant:

* counter (`counter.py`): the hardware counter's values, each stamped with the update instant it belongs to,
  interpolated between updates. Inside one update interval the increment is shaped by instant power where we
  have it, so a boundary that falls inside the interval gets the share of energy that was really spent before it.
* integrated (`power.py`): power samples integrated with the trapezoid rule, held (not interpolated) across
  phase boundaries; a moving-average power reading is unrolled back into energy.

`device.py` composes them into energy per phase name; phases shorter than the sensor resolves are attributed
statistically (`partition.py`, `attribution.py`). Energy over [a, b] is E(b) - E(a). Every figure says which
method produced it and how far to trust it.
"""

from telemetry_service.energy.attribution import AttributionFit, attribute, tagged_fit, tagged_power
from telemetry_service.energy.common import Method, combine_methods, find_gaps, is_short, overlaps
from telemetry_service.energy.counter import Increment, counter_energy_at, counter_increment, counter_points
from telemetry_service.energy.device import DeviceEnergy, DeviceSeries, PhaseEnergies, device_energy_at, phase_energies
from telemetry_service.energy.partition import UNMARKED, Partition, innermost_partition
from telemetry_service.energy.power import AveragedPowerCurve, PowerCurve, averaged_power_curve, power_curve

__all__ = [
    "UNMARKED", "AttributionFit", "AveragedPowerCurve", "DeviceEnergy", "DeviceSeries", "Increment", "Method",
    "Partition", "PhaseEnergies", "PowerCurve", "attribute", "averaged_power_curve", "combine_methods",
    "counter_energy_at", "counter_increment", "counter_points", "device_energy_at", "find_gaps", "innermost_partition",
    "is_short", "overlaps", "phase_energies", "power_curve", "tagged_fit", "tagged_power",
]
