"""Independent runs in parallel with `dvc exp run --queue` + `dvc queue start -j 2` (docs/scale-out.md), on CPU.

In a clean copy of the project: ci profile, data and prior produced once and committed, then two experiments that
differ in methods.cyclegan.lr queued, run by two workers in temporary copies, and checked in `dvc exp show`
and in the shared MLflow store.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from conftest import TINY_DATA, cli_env, copy_project

pytestmark = pytest.mark.slow

LRS = {"lr-1e-4": 0.0001, "lr-3e-4": 0.0003}


def _run(args, cwd, env, timeout=600, stdout_only=False):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n"
                             f"{r.stderr[-3000:]}")
    return r.stdout if stdout_only else r.stdout + r.stderr


def _git(args, cwd):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def _uncached_outputs(dvc_yaml: dict, stages: tuple[str, ...]) -> list[str]:
    """Paths of the `cache: false` outputs and metrics of these stages: DVC keeps them in git, not in its cache."""
    paths = []
    for stage in stages:
        for kind in ("outs", "metrics", "plots"):
            for entry in dvc_yaml["stages"][stage].get(kind, []):
                if isinstance(entry, dict):
                    paths += [path for path, opts in entry.items() if (opts or {}).get("cache") is False]
    return paths


def _queue_status(dest, env) -> dict[str, str]:
    out = _run(["dvc", "queue", "status"], dest, env)
    return {parts[1]: parts[-1] for line in out.splitlines() if len(parts := line.split()) >= 4
            and parts[1] in LRS}


def test_two_queued_experiments_run_in_parallel(tmp_path):
    dest = copy_project(tmp_path / "project")
    env = cli_env({"PYTHONPATH": str(dest)})  # the copy's packages, not the editable install's
    _run(["cxrbench", "profile", "ci"], dest, env)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update({k: v for k, v in TINY_DATA.items() if k in params["data"]})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "prior"], dest, env)  # data + prior, once; queued runs take them from the shared cache

    # Queued runs start from the last commit: dvc.lock, params.yaml, and the `cache: false` outputs upstream of
    # the queued stage (git-ignored ones too: a missing one would make DVC rerun that stage in every run)
    for path in _uncached_outputs(yaml.safe_load((dest / "dvc.yaml").read_text()), ("data", "prior")):
        if (dest / path).exists():
            _git(["add", "-f", path], dest)
    _git(["add", "-A"], dest)
    _git(["commit", "-qm", "ci profile, data and prior"], dest)

    # An absolute MLflow store outside the copy, created once before parallel writers exist (two runs creating a
    # new SQLite store at the same moment race in its schema migration)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create = f"from mlflow.tracking import MlflowClient; MlflowClient({uri!r}).search_experiments()"
    _run([sys.executable, "-c", create], dest, env)
    for name, lr in LRS.items():
        _run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"methods.cyclegan.lr={lr}", "train@cyclegan"],
             dest, env)
    assert set(_queue_status(dest, env).values()) == {"Queued"}

    # Workers run each experiment in a temporary copy under .dvc/tmp/exps: PYTHONPATH=. makes every run import
    # the code of its own copy (whose project root is that copy), MLFLOW_TRACKING_URI sends all runs to one store
    workers = cli_env({"PYTHONPATH": ".", "MLFLOW_TRACKING_URI": uri})
    t0 = time.monotonic()
    try:
        # Not through pipes: the workers it starts inherit its stdout/stderr, so reading them to EOF would wait for
        # the workers to exit, not for `dvc queue start` (a busy machine turned that into a 600 s timeout)
        with open(tmp_path / "queue-start.log", "w") as log:
            started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=dest, env=workers, stdout=log,
                                     stderr=subprocess.STDOUT, timeout=120)
        assert started.returncode == 0, (tmp_path / "queue-start.log").read_text()[-3000:]
        status = {}
        while time.monotonic() - t0 < 900:
            status = _queue_status(dest, env)
            if status and not {"Queued", "Running"} & set(status.values()):
                break
            time.sleep(3)
        logs = {n: _run(["dvc", "queue", "logs", n], dest, env)[-2000:] for n, s in status.items() if s != "Success"}
        assert status == {name: "Success" for name in LRS}, (status, logs)
        for name in LRS:  # data and prior came from the cache: only the queued stage ran
            log = _run(["dvc", "queue", "logs", name], dest, env)
            assert "Running stage 'train@cyclegan'" in log and "Stage 'data' didn't change" in log, log[-2000:]
            assert "Running stage 'data'" not in log and "Running stage 'prior'" not in log
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=dest, env=env, capture_output=True, timeout=60)

    # both experiments, with their parameter value (the per-stage metric files are outputs, not DVC metrics: the
    # training results of each run are read back from the one MLflow store below)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], dest, env, stdout_only=True))
    experiments = {exp["name"]: exp["revs"][0]["data"] for base in shown for exp in base.get("experiments") or []}
    assert set(LRS) <= set(experiments)
    for name, lr in LRS.items():
        assert experiments[name]["params"]["params.yaml"]["data"]["methods"]["cyclegan"]["lr"] == lr

    # the runs stayed in their temporary copies (nothing trained into the workspace) and logged to the one store
    assert not (dest / "models" / "cyclegan").exists()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        rows = db.execute("SELECT p.value FROM runs r JOIN params p ON p.run_uuid = r.run_uuid "
                          "WHERE r.name = 'train-cyclegan-s0' AND r.status = 'FINISHED' AND p.key = 'cfg.lr'"
                          ).fetchall()
    assert sorted(float(v) for (v,) in rows) == sorted(LRS.values())
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        final = db.execute("SELECT p.value, m.key, m.value FROM runs r JOIN params p ON p.run_uuid = r.run_uuid "
                           "JOIN latest_metrics m ON m.run_uuid = r.run_uuid WHERE r.name = 'train-cyclegan-s0' "
                           "AND r.status = 'FINISHED' AND p.key = 'cfg.lr' AND m.key IN ('g_ab', 'd_a', 'cycle_a')"
                           ).fetchall()
    losses: dict[float, dict[str, float]] = {}
    for lr, key, value in final:
        losses.setdefault(float(lr), {})[key] = value
    assert set(losses) == set(LRS.values()) and all(len(v) == 3 for v in losses.values()), final
    assert losses[LRS["lr-1e-4"]] != losses[LRS["lr-3e-4"]]  # the value reached the training
