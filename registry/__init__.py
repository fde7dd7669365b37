"""Adapter Registry: train adapters on a frozen base on request, keep versions and lineage."""

__version__ = "0.1.0"
