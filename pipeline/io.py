"""The one atomic writer: every file the project writes goes through `atomic_write`.

A reader never sees half a file: the bytes go to a temporary file in the same folder, are fsynced, renamed over the
target, and the folder itself is fsynced so the rename survives a power loss. A killed writer leaves at most a
`.tmp-<name>` file that the next write replaces.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, IO


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function that writes to a binary file object) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _plain(o: Any) -> Any:
    """JSON-ready: numpy scalars/arrays to Python, NaN and +-inf to None (metric files are strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if hasattr(o, "tolist") and not isinstance(o, (str, bytes)):
        return _plain(o.tolist())
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (no NaN/Infinity: they become null), indented, written atomically."""
    return atomic_write(path, json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # lazy: config.py writes params.yaml with this module and must not import torch (start-up)

    return atomic_write(path, lambda fh: torch.save(obj, fh))
