"""MLflow tracking: a stage logs to a real server on 127.0.0.1 (read back over REST); failures never fail a stage."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline import tracking
from pipeline.config import load_params, write_profile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--default-artifact-root",
                             (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("mlflow server exited")
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up in 60 s")
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # stopped by its PID (and its worker children)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_training_stage_logs_params_and_metrics_to_a_server(tmp_path, mlflow_server, monkeypatch):
    from helpers_data import write_tiny_dataset
    from pipeline.app.train import run_train

    url, pid = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    params = load_params(write_profile("ci", tmp_path / "params.yaml"))
    write_tiny_dataset(tmp_path)
    run_train(params, "cyclegan", root=tmp_path)
    exp = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cxrbench")["experiment"]
    runs = _get(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                       "filter": "tags.stage = 'train'"})["runs"]
    assert len(runs) == 1
    data = runs[0]["data"]
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["model"] == "cyclegan" and tags["seed"] == "0" and tags["profile"] == "ci"
    assert len(tags["git_commit"]) in (40, 7) or tags["git_commit"] == "unknown"
    assert tags["git_dirty"] in ("true", "false")
    logged = {p["key"]: p["value"] for p in data["params"]}
    assert logged["method"] == "cyclegan"
    assert logged["train.iterations"] == str(params.train.iterations)
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert "wall_s" in metrics and metrics["parameters"] > 0
    losses = set(metrics) - {"wall_s", "parameters", "it_per_s"} - {k for k in metrics if k.startswith("lr_")}
    assert losses, metrics  # the method's own loss terms are logged
    assert runs[0]["info"]["status"] == "FINISHED"
    assert (tmp_path / "metrics" / "train" / "cyclegan.json").exists()


def test_an_unreachable_store_warns_and_the_stage_goes_on(tmp_path):
    with pytest.warns(UserWarning, match="MLflow tracking unavailable"):
        with tracking.stage_run("unit", model="m", uri=f"http://127.0.0.1:{_free_port()}") as run:
            run.log_metrics({"x": 1.0})  # a no-op, no exception
            assert not run.active


def test_a_failure_while_logging_warns_once_and_disables_the_run(tmp_path):
    class Broken:
        def log_batch(self, *a, **k):
            raise RuntimeError("disk I/O error")

    run = tracking.StageRun("id", Broken())
    with pytest.warns(UserWarning, match="MLflow tracking failed while logging metrics"):
        run.log_metrics({"a": 1.0})
    assert not run.active
    run.log_metrics({"a": 2.0})  # silently ignored now


def test_database_is_locked_is_retried(monkeypatch):
    calls = []
    monkeypatch.setattr(time, "sleep", lambda s: None)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking._retry(flaky) == "ok" and len(calls) == 3


def test_local_sqlite_store_records_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with tracking.stage_run("report", model="ours", seed=1, profile="ci", uri=uri, params={"a": {"b": 2}}) as run:
        run.log_metrics({"fid": 12.5, "nested": {"kid": 0.1}, "skip": "text"})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("cxrbench").experiment_id], "tags.stage = 'report'")
    assert r.data.tags["stage"] == "report" and r.data.tags["seed"] == "1"
    assert r.data.params == {"a.b": "2"}
    wall = r.data.metrics.pop("wall_s")
    assert r.data.metrics == {"fid": 12.5, "nested.kid": 0.1} and 0 <= wall < 60


def test_stage_runs_are_children_of_one_pipeline_run_and_a_rerun_supersedes(tmp_path, monkeypatch):
    """Stages without a run of their own (here `cxrbench segmenters`) get one from the CLI, with their params
    section, summary numbers and wall time; every run of one (commit, params.yaml) is a child of one "pipeline"
    run; running a stage again marks the earlier run superseded instead of leaving two current ones."""
    import pipeline.app.cli as cli
    from mlflow.tracking import MlflowClient

    params = write_profile("ci", tmp_path / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setattr(cli, "PROJECT_ROOT", tmp_path)  # where the stage's summary file is read

    def fake_stage(args):  # what run_segmenters writes, without training anything
        out = tmp_path / "models" / "segmenters"
        out.mkdir(parents=True, exist_ok=True)
        (out / "segmenters.json").write_text(json.dumps({"n_train": 3, "val": {"unet": {"miou": 0.9}}}))

    monkeypatch.setattr(cli, "cmd_eval", fake_stage)
    for _ in range(2):
        assert cli.main(["--params", str(params), "segmenters"]) == 0
    with tracking.stage_run("train", model="cyclegan", seed=0, profile="ci"):
        pass
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("cxrbench").experiment_id
    (parent,) = client.search_runs([exp], "tags.stage = 'pipeline'")
    assert parent.info.run_name == f"pipeline-ci-{parent.data.tags['cxrbench.execution'][:7]}"
    runs = client.search_runs([exp], "tags.stage != 'pipeline'", order_by=["attributes.start_time ASC"])
    assert [r.data.tags["stage"] for r in runs] == ["segmenters", "segmenters", "train"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    first, second, _ = runs
    assert first.data.tags["cxrbench.superseded_by"] == second.info.run_id
    assert first.info.run_name == "segmenters (superseded)" and "cxrbench.superseded_by" not in second.data.tags
    assert second.data.metrics["n_train"] == 3 and second.data.metrics["val.unet.miou"] == 0.9
    assert "wall_s" in second.data.metrics and second.data.params["eval.seg_iterations"] == \
        str(load_params(params).eval.seg_iterations)
    assert [a.path for a in client.list_artifacts(second.info.run_id)] == ["segmenters.json"]
    # another params.yaml is another execution: another parent
    other = tmp_path / "other"
    other.mkdir()
    (other / "params.yaml").write_text("seeds: [5]\n")
    assert tracking.execution_key("abc", other) != tracking.execution_key("abc", tmp_path)
    assert tracking.execution_key("abc", other) == tracking.execution_key("abc", other)
