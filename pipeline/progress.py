"""One progress bar for every loop that can take more than a few seconds (training, translation, features).

Rate and ETA on stderr; redrawn every 0.5 s on a terminal and every 10 s otherwise (a DVC or CI log gets a line
now and then, not thousands).
"""
from __future__ import annotations

import sys
from typing import Iterable

from tqdm.auto import tqdm


def bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it", initial: int = 0,
        enabled: bool = True) -> tqdm:
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                disable=not enabled, mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)
