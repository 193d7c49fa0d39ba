"""Offline by construction: the switches below (each with why), set before any library is imported.

Every entry point of the project imports `pipeline` first, which imports this module. Values already set by the
user are kept (setdefault), so a user who *wants* a download can still allow it explicitly.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout whose code is running


def find_checkout(start: Path) -> Path | None:
    """The nearest folder at or above `start` that is a cxrbench checkout (dvc.yaml and pipeline/profiles/)."""
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "pipeline" / "profiles").is_dir():
            return folder
    return None


def _project_root() -> tuple[Path, str]:
    """(the checkout the pipeline works in, how it was found): $CXRBENCH_ROOT; else the checkout at or above the
    current folder (so a subfolder of a second checkout, `dvc exp run --queue` copies and test copies work in
    themselves, never in the installed checkout); else, outside any checkout, the folder of this package, which
    the CLI refuses (`pipeline.app.cli`: one line saying so)."""
    if os.environ.get("CXRBENCH_ROOT"):
        return Path(os.environ["CXRBENCH_ROOT"]).resolve(), "CXRBENCH_ROOT"
    found = find_checkout(Path.cwd().resolve())
    return (found, "cwd") if found else (PACKAGE_ROOT, "package")


PROJECT_ROOT, ROOT_SOURCE = _project_root()

_SWITCHES = {
    "HF_HUB_OFFLINE": "1",  # timm / smp pretrained lookups would retry for ~24 s and then fail
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # mlflow phones home on every process otherwise
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # a down tracking server must not stall a stage for minutes
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "DO_NOT_TRACK": "1",
    "YOLO_OFFLINE": "1",  # ultralytics: no DNS probes, no asset downloads
    "YOLO_AUTOINSTALL": "false",  # ultralytics would pip-install missing requirements at run time
    "YOLO_VERBOSE": "false",
    "DVC_NO_ANALYTICS": "1",
    "TORCH_HOME": str(PROJECT_ROOT / "cache" / "torch"),  # torch.hub never falls back to ~/.cache downloads
}


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


def _is_loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkBlocked(OSError):
    """Raised when code tries to reach a non-loopback address while the guard is on."""


def install_network_guard() -> None:
    """Make every non-loopback connection (and name lookup) fail at once: offline by construction, proven.

    Active in the test suite (tests/conftest.py) and in any process started with CXRBENCH_NO_NETWORK=1, so stage
    subprocesses run by the tests (dvc repro, cxrbench train) are guarded too.
    """
    if getattr(socket, "_cxrbench_guard", False):
        return
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, \
        socket.getaddrinfo

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not _is_loopback(host):
                raise NetworkBlocked(f"network access blocked (offline by construction): {address!r}")

    def connect(sock, address):
        _check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        _check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkBlocked(f"name lookup blocked (offline by construction): {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    socket._cxrbench_guard = True


def apply() -> None:
    for key, value in _SWITCHES.items():
        os.environ.setdefault(key, value)
    # ultralytics writes settings.json (and wants Arial.ttf) in its config dir: keep it inside the project
    os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / "cache" / "ultralytics"))
    if os.environ.get("CXRBENCH_NO_NETWORK") == "1":
        install_network_guard()


apply()
