"""MLflow tracking: one run per stage execution, tagged stage/model/seed/profile/git commit.

Runs are grouped per pipeline execution: every stage run is a child (tag mlflow.parentRunId) of one parent run
"pipeline-<profile>-<key>" per (git commit, params.yaml content), found or created by the first stage that logs,
so all stages of one `dvc repro` sit under one row of the MLflow UI. A stage rerun under the same parent (same
stage, model and seed) supersedes the earlier run: the earlier one is renamed "... (superseded)" and tagged
cxrbench.superseded_by, so the current run is the one without that tag. Every stage run logs its wall time (wall_s).

MLflow is the browsing and comparison view; the DVC metric files are the source of truth. So a tracking failure
(server down, "database is locked", a broken store) warns once and never fails a stage. Telemetry is off
(pipeline.offline). Default store: sqlite:///<project>/mlflow.db; `MLFLOW_TRACKING_URI` or params.tracking.uri win.
Artifacts go to <project>/mlartifacts (never ./mlruns, which makes `mlflow ui` refuse to start).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from pipeline.offline import PROJECT_ROOT

RETRIES = 3  # sqlite itself waits ~20 s per attempt on a lock: 3 tries bound the stall to about a minute


def tracking_uri(configured: str = "") -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool]:
    """(commit, dirty) of the project checkout; ('unknown', False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit or "unknown"), bool(status)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _retry(fn, *args, **kwargs):
    """MLflow over SQLite: concurrent writers hit 'database is locked'; retry with backoff."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (mlflow raises many types for the same lock)
            text = str(exc).lower()
            transient = "locked" in text or "online migration expected" in text  # concurrent store creation
            if not transient or attempt == RETRIES - 1:
                raise
            time.sleep(0.5 * 2**attempt)


class StageRun:
    """A handle that logs to an MLflow run, or silently does nothing once tracking has failed."""

    def __init__(self, run_id: str | None, client: Any):
        self.run_id, self.client = run_id, client
        self._warned = False

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if not self.active:
            return
        try:
            _retry(fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if not self._warned:
                warnings.warn(f"MLflow tracking failed while logging {what} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}); the stage continues, DVC files are unaffected",
                              stacklevel=3)
                self._warned = True
            self.run_id = None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric  # lazy, as every mlflow import here: ~2 s, only when tracking is on

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self._guard("metrics", self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self._guard("params", self.client.log_batch, self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._guard("tags", self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        if Path(path).exists():
            self._guard("artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)


@contextlib.contextmanager
def stage_run(stage: str, *, model: str = "", seed: int | None = None, profile: str = "", params: Any = None,
              enabled: bool = True, experiment: str = "cxrbench", uri: str = "",
              extra_tags: dict[str, Any] | None = None) -> Iterator[StageRun]:
    """Open one MLflow run for a stage execution; yields a StageRun (a no-op one when tracking is off or broken)."""
    run = StageRun(None, None)
    status = "FINISHED"
    start = time.perf_counter()
    if enabled:
        try:
            run = _start(stage, model, seed, profile, experiment, tracking_uri(uri), extra_tags or {})
            if params is not None:
                run.log_params(params if isinstance(params, dict) else {"params": params})
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"MLflow tracking unavailable at {tracking_uri(uri)} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); the stage runs without it",
                          stacklevel=3)
    try:
        yield run
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if run.active:
            run.log_metrics({"wall_s": time.perf_counter() - start})
            run._guard("run end", run.client.set_terminated, run.run_id, status)


def _start(stage: str, model: str, seed: int | None, profile: str, experiment: str, uri: str,
           extra_tags: dict[str, Any]) -> StageRun:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # its SQLAlchemy errors ("database is locked") come with full tracebacks; the one-line warning here says it
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = _retry(client.get_experiment_by_name, experiment)
    if exp is None:
        try:
            artifact_root = None
            if uri.startswith("sqlite:") or uri.startswith("file:"):
                artifact_root = (PROJECT_ROOT / "mlartifacts").as_uri()
            exp_id = _retry(client.create_experiment, experiment, artifact_location=artifact_root)
        except Exception:  # noqa: BLE001  (another process created it first)
            exp_id = _retry(client.get_experiment_by_name, experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    commit, dirty = git_state()
    key = execution_key(commit)
    parent = _parent_run(client, exp_id, key, profile, commit)
    tags = {"stage": stage, "model": model, "seed": "" if seed is None else str(seed), "profile": profile,
            "git_commit": commit, "git_dirty": str(dirty).lower(), "mlflow.source.git.commit": commit,
            "mlflow.parentRunId": parent, "cxrbench.execution": key,
            **{k: str(v) for k, v in extra_tags.items()}}
    name = "-".join(x for x in (stage, model, f"s{seed}" if seed is not None else "") if x)
    created = _retry(client.create_run, exp_id, run_name=name, tags=tags)
    _supersede(client, exp_id, created.info.run_id, parent, tags)
    return StageRun(created.info.run_id, client)


def execution_key(commit: str, root: Path = PROJECT_ROOT) -> str:
    """One pipeline execution = one (git commit, params.yaml content): 12 hex digits."""
    h = hashlib.sha256(commit.encode())
    params = root / "params.yaml"
    h.update(params.read_bytes() if params.is_file() else b"")
    return h.hexdigest()[:12]


def _parent_run(client: Any, exp_id: str, key: str, profile: str, commit: str) -> str:
    """The parent run of this execution, created by the first stage that logs under it."""
    found = _retry(client.search_runs, [exp_id], f"tags.`cxrbench.execution` = '{key}' and tags.stage = 'pipeline'",
                   max_results=1)
    if found:
        return found[0].info.run_id
    tags = {"stage": "pipeline", "profile": profile, "git_commit": commit, "cxrbench.execution": key,
            "mlflow.source.git.commit": commit}
    run = _retry(client.create_run, exp_id, run_name=f"pipeline-{profile or 'run'}-{key[:7]}", tags=tags)
    _retry(client.set_terminated, run.info.run_id, "FINISHED")  # a grouping row: its children carry the results
    return run.info.run_id


def _supersede(client: Any, exp_id: str, new_id: str, parent: str, tags: dict[str, str]) -> None:
    """Mark the earlier runs of the same stage, model and seed under the same parent as superseded by `new_id`."""
    query = (f"tags.`mlflow.parentRunId` = '{parent}' and tags.stage = '{tags['stage']}' "
             f"and tags.model = '{tags['model']}'")
    for old in _retry(client.search_runs, [exp_id], query, max_results=1000):
        t = old.data.tags
        if old.info.run_id == new_id or t.get("seed", "") != tags["seed"] or "cxrbench.superseded_by" in t:
            continue
        _retry(client.set_tag, old.info.run_id, "cxrbench.superseded_by", new_id)
        _retry(client.update_run, old.info.run_id, name=f"{old.info.run_name} (superseded)")
