"""MUNIT baseline (NVlabs/MUNIT): see README.md for the paper, the repository and every modification."""
from .model import MUNIT

__all__ = ["MUNIT"]
