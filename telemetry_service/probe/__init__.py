"""Probe: measure how a GPU's NVML energy counter and power fields actually behave, from raw polling."""
