"""The proposed method: adaptive activation masks (AASPM, BAML) and cross-domain alignment (CDAM) on ACL-GAN.

See ours/README.md for the architecture choice and the table of hyperparameters (paper vs assumed).
"""
from ours.model import Ours

__all__ = ["Ours"]
