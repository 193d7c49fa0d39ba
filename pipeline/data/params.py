"""The `data` section of params.yaml (owned by the data package)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.schema import param


@dataclass
class DataParams:
    source: Literal["drr", "rsna", "mimic", "jsrt", "montgomery", "shenzhen", "folder"] = param(
        "drr", doc="where the training data comes from; drr = the embedded benchmark rendered from a real CT")
    resolution: int = param(512, min=16, max=2048, doc="image side in pixels of every written dataset")
    seed: int = param(0, min=0, doc="seed of the DRR benchmark generator")
