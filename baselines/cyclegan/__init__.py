"""CycleGAN baseline (junyanz/pytorch-CycleGAN-and-pix2pix); see README.md for defaults and modifications."""
from .model import CycleGAN

__all__ = ["CycleGAN"]
