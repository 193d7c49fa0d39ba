"""Baselines: one self-contained package per method (discovered by pipeline/registry.py)."""
