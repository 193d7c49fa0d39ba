"""Safety: weights files are loaded with weights_only=True (a pickle payload never runs), the MLflow UI binds to
loopback by default, dataset manifests cannot reach outside their folder, and no shell command is built from user
strings. Source-tree checks parse the code (ast), so comments and strings cannot fool them."""
from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import cli_env
from pipeline.errors import CxrbenchError
from pipeline.offline import PROJECT_ROOT

SOURCE_DIRS = ("pipeline", "ours", "baselines", "eval", "reports")


def source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((PROJECT_ROOT / d).rglob("*.py")) if "__pycache__" not in p.parts]
    assert len(files) > 30, files  # the scan really covers the tree
    return files


def dotted(node: ast.AST) -> str:
    """'torch.load' for the call target torch.load, '' for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


# --------------------------------------------------------------------------------------------------------------------
# Unsafe deserialisation
# --------------------------------------------------------------------------------------------------------------------
def unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle arbitrary objects: torch.load without weights_only=True, pickle/dill/joblib loads,
    np.load(allow_pickle=True), yaml.load without SafeLoader, yaml.unsafe_load, torch.jit.load."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        line = f"line {node.lineno}: {name}"
        if name == "torch.load" and not is_true(keyword(node, "weights_only")):
            found.append(line)
        elif name in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "joblib.load", "cloudpickle.load",
                      "cloudpickle.loads", "yaml.unsafe_load", "yaml.full_load", "torch.jit.load", "marshal.loads"):
            found.append(line)
        elif name in ("np.load", "numpy.load") and is_true(keyword(node, "allow_pickle")):
            found.append(line)
        elif name == "yaml.load":
            loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if dotted(loader) not in ("yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader"):
                found.append(line)
    return found


def test_the_load_scanner_flags_unsafe_calls():
    bad = ("import torch, pickle, numpy as np, yaml\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\nnp.load(p, allow_pickle=True)\n"
           "yaml.load(s, Loader=yaml.Loader)\n")
    good = ("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p, allow_pickle=False)\n"
            "yaml.load(s, Loader=yaml.SafeLoader)\nyaml.safe_load(s)\n")
    assert [f.split(":")[0] for f in unsafe_loads(ast.parse(bad))] == ["line 2", "line 3", "line 4", "line 5",
                                                                        "line 6"]
    assert unsafe_loads(ast.parse(good)) == []


def test_every_load_in_the_source_tree_is_weights_only():
    offenders = {str(f.relative_to(PROJECT_ROOT)): bad for f in source_files()
                 if (bad := unsafe_loads(ast.parse(f.read_text(), str(f))))}
    assert offenders == {}, offenders
    # and there is something to check: the project's own loaders are among the scanned calls
    loads = [f for f in source_files() if "weights_only=True" in f.read_text()]
    assert {"engine.py", "prior.py", "segmentation.py"} <= {f.name for f in loads}


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(a .pt file whose unpickling would create `marker`, marker)."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": Payload(marker)}, path)
    import pickle

    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is real: a plain unpickle runs it ...
    assert marker.exists()
    marker.unlink()  # ... and the loaders below must not
    return path, marker


def test_safe_load_refuses_a_payload(evil):
    from pipeline.engine import safe_load

    path, marker = evil
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        safe_load(path)
    assert not marker.exists()


def test_trained_weights_loader_refuses_a_payload(evil, tmp_path):
    from pipeline.config import load_params, write_profile
    from pipeline.layout import load_trained

    path, marker = evil
    params = load_params(write_profile("ci", tmp_path / "params.yaml"))
    with pytest.raises(CxrbenchError, match=r"weights_only=True.*\(UnpicklingError\)"):
        load_trained(params, "cyclegan", 0, weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("loader", ["load_prior", "convert_checkpoint"])
def test_prior_loaders_refuse_a_payload(evil, loader):
    import pipeline.prior as prior

    path, marker = evil
    with pytest.raises(prior.PriorError, match=r"weights_only=True\) \(UnpicklingError\)"):
        getattr(prior, loader)(path)
    assert not marker.exists()


def test_segmenter_loader_refuses_a_payload(evil):
    from eval.segmentation import load_segmenter
    from eval.sets import EvalError

    path, marker = evil
    with pytest.raises(EvalError, match=r"weights_only=True.*rebuild it with `dvc repro segmenters`"):
        load_segmenter(path)
    assert not marker.exists()


def test_detector_loader_refuses_a_payload(evil):
    """ultralytics unpickles whole models (weights_only=False); the project checks a file with weights_only=True and
    ultralytics' allow-list of its own classes first."""
    from eval.detection import load_detector
    from eval.sets import EvalError

    path, marker = evil
    with pytest.raises(EvalError, match=r"not a YOLO checkpoint torch.load\(weights_only=True\) can read"):
        load_detector(path)
    assert not marker.exists()


def test_a_payload_checkpoint_is_never_resumed_from(evil, tmp_path):
    from pipeline.engine import Engine, EngineSettings
    from toy_translator import ToyTranslator

    path, marker = evil
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    path.rename(ckpt / "step_000000005.pt")
    t = ToyTranslator()
    engine = Engine(t, EngineSettings(iterations=10, progress=False, device="cpu"), ckpt, seed=0)
    engine.optimizers, engine.schedulers = t.configure_optimizers(10)
    with pytest.warns(UserWarning, match="unreadable"):
        assert engine.try_resume() == 0
    assert not marker.exists()


def test_fid_feature_cache_never_unpickles(tmp_path, monkeypatch):
    """A cache file whose key matches but whose features are a pickled object array is recomputed, not loaded."""
    import json

    from eval import fid_kid as fk

    marker = tmp_path / "PAYLOAD_RAN"
    cache = tmp_path / "cache.npz"
    np.savez(cache, features=np.array([Payload(marker)], dtype=object), key=np.array(json.dumps("k")))
    calls = []
    monkeypatch.setattr(fk, "cache_key", lambda paths, ext, bs: "k")  # the stored key matches
    monkeypatch.setattr(fk, "extract_features", lambda paths, ext, bs=32: calls.append(1) or np.zeros((2, 4)))
    feats, hit = fk.cached_features([tmp_path / "a.png"], object(), cache, write=False)
    assert hit == "miss" and calls == [1] and feats.shape == (2, 4)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------------
# The MLflow UI binds to loopback by default
# --------------------------------------------------------------------------------------------------------------------
def test_ui_defaults_to_loopback_in_the_cli_and_the_makefile(capsys):
    from pipeline.app.cli import build_parser, main

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    with pytest.raises(SystemExit) as exc:
        main(["ui", "--help"])
    assert exc.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--host HOST" in help_text and "(default: 127.0.0.1, loopback only;" in help_text
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert recipe, "Makefile has no ui target"
    lines = recipe.group(1)
    assert "cxrbench ui" in lines
    assert "--host" not in lines or "--host 127.0.0.1" in lines  # the default, or loopback spelled out
    assert "0.0.0.0" not in (PROJECT_ROOT / "Makefile").read_text()


def _listeners(port: int) -> list[str]:
    """Local addresses of the sockets LISTENing on `port` (from /proc/net/tcp and tcp6)."""
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                out.append(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_ui_listens_on_loopback_only(tmp_path):
    import ipaddress

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ui.db'}", "CXRBENCH_ROOT": str(PROJECT_ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        addresses: list[str] = []
        deadline = time.monotonic() + 120
        while not addresses and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`cxrbench ui` exited with {proc.returncode}")
            time.sleep(0.5)
            addresses = _listeners(port)
        assert addresses, "the UI never started listening"
        time.sleep(1.0)  # any second listener (an IPv6 or wildcard socket) would be up by now
        addresses = _listeners(port)
        assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the session this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------------------------------
# Manifests cannot reach outside the dataset folder
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path) -> Path:
    from helpers_data import write_tiny_dataset

    ds = write_tiny_dataset(tmp_path, n=1, size=16, splits=("test",))
    (tmp_path / "secret").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8), "L").save(tmp_path / "secret" / "outside.png")
    return ds


def _first_image(ds: Path) -> Path:
    import pandas as pd

    return ds / pd.read_csv(ds / "manifest.csv", dtype=str)["image"].iloc[0]


def test_manifest_symlink_to_a_file_outside_is_refused(dataset):
    from pipeline.data.canonical import DataError, read_manifest

    image = _first_image(dataset)
    image.unlink()
    image.symlink_to(dataset.parent.parent / "secret" / "outside.png")
    with pytest.raises(DataError, match=r"escapes the dataset folder") as exc:
        read_manifest(dataset)
    assert "\n" not in str(exc.value) and image.name in str(exc.value)


def test_manifest_symlinked_folder_outside_is_refused(dataset):
    from pipeline.data.canonical import DataError, read_manifest

    images = dataset / "images"
    target = dataset.parent.parent / "secret" / "images"
    images.rename(target)
    images.symlink_to(target, target_is_directory=True)
    with pytest.raises(DataError, match=r"images/.*escapes the dataset folder"):
        read_manifest(dataset)


def test_manifest_absolute_path_is_refused(dataset):
    import pandas as pd

    from pipeline.data.canonical import DataError, read_manifest

    df = pd.read_csv(dataset / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[0, "lung_mask"] = str(dataset.parent.parent / "secret" / "outside.png")
    df.to_csv(dataset / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"lung_mask path '/.*outside.png' escapes the dataset folder"):
        read_manifest(dataset)


def test_a_symlink_that_stays_inside_is_fine(dataset):
    from pipeline.data.canonical import read_manifest

    image = _first_image(dataset)
    inside = dataset / "images" / "copy.png"
    image.rename(inside)
    image.symlink_to(inside)
    assert len(read_manifest(dataset)) == 2


# --------------------------------------------------------------------------------------------------------------------
# No shell command is built from user strings
# --------------------------------------------------------------------------------------------------------------------
SHELL_CALLS = ("os.system", "os.popen", "os.spawnl", "os.spawnlp", "os.spawnv", "os.spawnvp", "commands.getoutput",
               "asyncio.create_subprocess_shell", "pty.spawn")
PROCESS_CALLS = ("subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                 "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput")


def shell_uses(tree: ast.AST) -> list[str]:
    """Shell invocations, shell=True, and process calls whose command is a string rather than an argument list."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        line = f"line {node.lineno}: {name}"
        if name in SHELL_CALLS or name in ("subprocess.getoutput", "subprocess.getstatusoutput"):
            found.append(line)
        elif is_true(keyword(node, "shell")):
            found.append(line + " shell=True")
        elif name in PROCESS_CALLS or name.startswith("os.exec"):
            argv = node.args[0] if node.args else keyword(node, "args")
            if name.startswith("os.exec"):
                argv = node.args[1] if len(node.args) > 1 else None
            if isinstance(argv, (ast.Constant, ast.JoinedStr, ast.BinOp)) or (
                    isinstance(argv, ast.Call) and dotted(argv.func).endswith(".format")):
                found.append(line + " with a command string")
    return found


def test_the_shell_scanner_flags_shell_commands():
    bad = ("import os, subprocess\nos.system('ls ' + d)\nsubprocess.run(f'git log {ref}', shell=True)\n"
           "subprocess.check_output('ls -l')\nos.popen(cmd)\nsubprocess.run(cmd, shell=True)\n")
    good = "subprocess.run(['git', 'log', ref], check=True)\nos.execv(sys.executable, argv)\n"
    assert [f.split(":")[0] for f in shell_uses(ast.parse(bad))] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert shell_uses(ast.parse(good)) == []


def test_no_shell_commands_in_the_source_tree():
    offenders = {str(f.relative_to(PROJECT_ROOT)): bad for f in source_files()
                 if (bad := shell_uses(ast.parse(f.read_text(), str(f))))}
    assert offenders == {}, offenders


def test_dvc_commands_interpolate_only_validated_model_names(tmp_path):
    """dvc.yaml's `cmd` lines run in a shell; the only value interpolated into them is a models key, and params.yaml
    validation restricts those to lower-case letters, digits and '_'."""
    from pipeline.config import ConfigError, load_params, write_profile

    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    cmds = [s.get("do", s).get("cmd", "") for s in stages.values()]
    assert cmds and all(isinstance(c, str) for c in cmds)
    assert {v for c in cmds for v in re.findall(r"\$\{([^}]*)\}", c)} == {"key", "item"}
    assert all(s["foreach"] == "${models}" for s in stages.values() if "${key}" in s.get("do", {}).get("cmd", ""))
    # ${item} only iterates eval.references, whose entries validation restricts to identity, blur, oracle
    assert all(s["foreach"] == "${eval.references}" for s in stages.values()
               if "${item}" in s.get("do", {}).get("cmd", ""))

    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    for name in ("x; rm -rf ~", "$(reboot)", "a`id`", "Ours", "a b"):
        bad = {**data, "models": {**data["models"], name: dict(data["models"]["cyclegan"])}}
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=r"model names are lower-case letters, digits and '_'"):
            load_params(path)
        bad = {**data, "eval": {**data["eval"], "references": ["identity", name]}}
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=r"eval.references"):
            load_params(path)
