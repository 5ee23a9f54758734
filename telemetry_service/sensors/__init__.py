"""Sensors: each reads one family of devices and labels what it reads with its provenance."""
