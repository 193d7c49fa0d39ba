"""UVCGAN v1 baseline (LS4GAN/uvcgan) with its BERT-like masked pre-training; see README.md."""
from .model import UVCGAN

__all__ = ["UVCGAN"]
