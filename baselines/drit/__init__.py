"""DRIT++ baseline (HsinYingLee/DRIT, concat variant): see README.md for the paper, defaults and modifications."""
from .model import DRIT, DRITConfig

__all__ = ["DRIT", "DRITConfig"]
