"""Node-local telemetry daemon: samples GPU/CPU power and energy into a ledger and answers energy per run and phase."""

__version__ = "0.1.0"
