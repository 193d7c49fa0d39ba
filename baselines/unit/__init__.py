"""UNIT baseline (mingyuliutw/UNIT master): see README.md for the paper, the repository and every modification."""
from .model import UNIT

__all__ = ["UNIT"]
