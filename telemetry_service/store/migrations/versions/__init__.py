"""Revisions of the ledger schema, oldest first by their down_revision chain."""
