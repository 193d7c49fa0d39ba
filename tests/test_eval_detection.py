"""Lesion counts: the Wilcoxon test against an exact enumeration and scipy; YOLO trains offline (no connection
attempted, no mlflow.db / mlruns written) and counts detections per image.

The YOLO test's name contains "test_mlflow" on purpose: ultralytics mutes its MLflow callback under pytest unless the
current test's name contains that string, so here the callback is live and only our settings keep it off.
"""
from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from eval.stats import wilcoxon_paired
from pipeline.offline import PROJECT_ROOT


def exact_signed_rank_p(d: np.ndarray) -> tuple[float, float]:
    """Exact two-sided and 'greater' p-values of the signed-rank statistic by enumerating all 2^n sign patterns
    (distinct non-zero |d|, so ranks are 1..n)."""
    d = d[d != 0]
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = ranks[d > 0].sum()
    n = len(d)
    dist = np.array([sum(r for r, s in zip(range(1, n + 1), signs) if s)
                     for signs in itertools.product((0, 1), repeat=n)])
    greater = (dist >= w_plus).mean()
    centre = n * (n + 1) / 4
    two = (np.abs(dist - centre) >= abs(w_plus - centre)).mean()
    return float(two), float(greater)


def test_wilcoxon_matches_exact_enumeration_and_scipy():
    before = np.array([5, 7, 3, 9, 4, 8, 6, 10, 2], float)
    after = before - np.array([1.5, 2.5, -0.5, 4.5, 0.25, 3.5, 2.0, 5.5, -1.25])  # distinct |differences|
    res = wilcoxon_paired(before, after)
    two, greater = exact_signed_rank_p(before - after)
    assert res["p_two_sided"] == pytest.approx(two, rel=1e-9)
    assert res["p_greater"] == pytest.approx(greater, rel=1e-9)
    assert res["p_two_sided"] == pytest.approx(sps.wilcoxon(before, after).pvalue, rel=1e-12)
    assert res["n"] == 9 and res["n_nonzero"] == 9


def brute_force_midrank_p(d: np.ndarray) -> tuple[float, float]:
    """Exact p-values by enumerating every sign pattern of the non-zero differences, with mid-ranks for ties."""
    nz = d[d != 0]
    ranks = sps.rankdata(np.abs(nz))
    w_obs = ranks[nz > 0].sum()
    ws = np.array([ranks[np.array(signs, bool)].sum() for signs in itertools.product((0, 1), repeat=len(nz))])
    centre = ranks.sum() / 2
    return float((np.abs(ws - centre) >= abs(w_obs - centre) - 1e-9).mean()), float((ws >= w_obs - 1e-9).mean())


def test_wilcoxon_with_ties_and_zeros_is_exact():
    before = np.array([3, 2, 4, 0, 1, 2, 5, 3, 0, 2])  # detection counts: ties and zero differences
    after = np.array([1, 2, 1, 0, 0, 1, 2, 3, 0, 0])
    res = wilcoxon_paired(before, after)
    two, greater = brute_force_midrank_p(before - after)
    assert res["p_two_sided"] == pytest.approx(two, rel=1e-12) and res["p_greater"] == pytest.approx(greater)
    assert res["n_nonzero"] == 6 and res["method"] == "exact"


def test_wilcoxon_few_nonzero_among_many_zeros_is_exact_not_normal():
    """Five differences [2, 1, 1, 1, 2] and 25 unchanged images: all five positive has probability 2/32 two-sided.
    scipy's default falls back to the normal approximation when zeros are present and says 0.038."""
    before = np.array([2, 1, 1, 1, 2] + [0] * 25, float)
    res = wilcoxon_paired(before, np.zeros(30))
    assert res["p_two_sided"] == pytest.approx(0.0625, abs=1e-12) and res["p_greater"] == pytest.approx(1 / 32)
    assert sps.wilcoxon(before, np.zeros(30), zero_method="wilcox").pvalue < 0.05  # the trap this avoids


def test_wilcoxon_large_n_uses_the_normal_approximation_close_to_exact():
    from eval import stats

    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1, 60)
    exact = wilcoxon_paired(d, np.zeros(60))
    old, stats.EXACT_MAX_N = stats.EXACT_MAX_N, 10
    try:
        approx = wilcoxon_paired(d, np.zeros(60))
    finally:
        stats.EXACT_MAX_N = old
    assert approx["method"].startswith("normal") and exact["method"] == "exact"
    assert approx["p_two_sided"] == pytest.approx(exact["p_two_sided"], abs=0.01)


def test_wilcoxon_all_zero_differences_is_reported_not_invented():
    res = wilcoxon_paired([1, 0, 2], [1, 0, 2])
    assert res["p_two_sided"] is None and res["p_greater"] is None and "all paired differences are zero" in res["note"]


def test_mlflow_and_network_stay_off_while_yolo_trains(tmp_path, monkeypatch):
    from test_eval_support import write_eval_datasets

    from eval import detection
    from pipeline.data.canonical import read_manifest

    root = write_eval_datasets(tmp_path / "proj", size=64, n=3)
    ds = root / "data" / "drr"
    df = read_manifest(ds)
    df = df[df["split"].isin(["train", "val"])]

    attempts = []  # every connection or name lookup, whatever the guard would answer
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        attempts.append(("connect", address))
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow's default store would be ./mlflow.db
    import ultralytics.utils
    import ultralytics.utils.checks

    config_dir = tmp_path / "yolo-config"  # an empty config dir: the font must be provided, not fetched
    monkeypatch.setattr(ultralytics.utils, "USER_CONFIG_DIR", config_dir)
    monkeypatch.setattr(ultralytics.utils.checks, "USER_CONFIG_DIR", config_dir)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before_root = {p.name for p in PROJECT_ROOT.iterdir()}

    log = detection.train_detector(ds, df, tmp_path / "models" / "detector", cfg="yolov5n.yaml", epochs=1,
                                   batch_size=4, image_size=64, seed=0, device="cpu")
    assert (tmp_path / "models" / "detector" / "detector.pt").is_file() and log["epochs"] == 1
    model = detection.load_detector(tmp_path / "models" / "detector" / "detector.pt")
    test = read_manifest(ds).query("split == 'test'")
    counts = detection.count_detections(model, [ds / p for p in test["image"]], image_size=64, conf=0.25, iou=0.7)
    assert counts.shape == (len(test),) and counts.dtype == np.int64 and (counts >= 0).all()

    assert attempts == [], f"network attempted: {attempts[:3]}"
    assert (config_dir / "Arial.ttf").is_file()
    from ultralytics import settings

    assert all(settings[k] is False for k in detection.NETWORK_SETTINGS)
    assert sorted(os.listdir(work)) == []  # nothing written in the working directory (no runs/, mlflow.db, mlruns)
    new = {p.name for p in PROJECT_ROOT.iterdir()} - before_root
    assert not new & {"mlflow.db", "mlruns", "runs", "weights"}, new
    assert not Path(tmp_path / "mlruns").exists()
