"""Offline by construction: the guard refuses non-loopback traffic; the project sets the library switches."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pipeline.offline import NetworkBlocked


def test_non_loopback_connection_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(NetworkBlocked):
            s.connect(("93.184.216.34", 80))
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("pypi.org", 443)


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=5):
        pass
    server.close()


def test_library_switches_are_set_by_the_project():
    for key, value in {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "YOLO_OFFLINE": "1",
                       "YOLO_AUTOINSTALL": "false"}.items():
        assert os.environ[key] == value


def test_subprocesses_of_the_suite_are_guarded_too():
    code = "import pipeline, socket\ntry:\n    socket.getaddrinfo('example.com', 80)\nexcept OSError as e:\n" \
           "    print('blocked', type(e).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.stdout.strip() == "blocked NetworkBlocked"
