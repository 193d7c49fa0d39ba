"""The data plan as a whole (pipeline/data/plan.py): `cxrbench check` catches a missing lung-mask source for
segmentation, train/eval leakage (same file, same patient) and a one-domain training set, each with one line naming
the key and the fix; the data stage is atomic as a whole (a SIGKILL, then a rerun: all old or all new datasets, never
a mix) and reuses finished conversions."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers_realdata import write_all, write_mimic_set, write_montgomery_set
from pipeline.data.canonical import read_manifest
from test_bad_inputs import cli_error

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sources")
    keys = write_all(root, rsna=(16, 16), ards=4, jsrt=2, montgomery=12)
    keys["mimic_shared_dir"] = str(root / "mimic_shared")
    keys["mimic_shared_ards"] = str(write_mimic_set(root / "mimic_shared", 3, n_other=6, n_pneumonia=6,
                                                    masks=root / "mimic_shared_masks", shared=True))
    keys["mimic_shared_masks"] = str(root / "mimic_shared_masks")
    return keys


def _params(tmp_path: Path, data: dict, switched_off=()) -> Path:
    from pipeline.config import write_profile

    path = write_profile("ci", tmp_path / "params.yaml")
    params = yaml.safe_load(path.read_text())
    params["tracking"]["enabled"] = False
    params["eval"]["references"] = ["identity", "blur"]
    params["eval"]["switched_off"] = list(switched_off)
    params["data"].update(data)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _check_ok(path: Path, capsys) -> str:
    from pipeline.app.cli import main

    capsys.readouterr()
    assert main(["--params", str(path), "check"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _rsna(sources: dict, **more) -> dict:
    return {"source": "rsna", "rsna_dir": sources["rsna_dir"], "segmenter_sources": ["montgomery"],
            "montgomery_dir": sources["montgomery_dir"], "test_fraction": 0.3, **more}


def test_check_names_the_missing_lung_masks_of_each_segmented_set(tmp_path, sources, capsys):
    msg = cli_error(["--params", str(_params(tmp_path, _rsna(sources))), "check"], capsys)
    assert "segment:rsna_like" in msg and "data.rsna_lung_masks" in msg and "eval.switched_off" in msg, msg
    # the fix named: the optional RSNA lung masks, or switching the evaluation off (then the report says why)
    out = _check_ok(_params(tmp_path, _rsna(sources, rsna_lung_masks=sources["rsna_lung_masks"])), capsys)
    assert "data plan OK" in out
    out = _check_ok(_params(tmp_path, _rsna(sources), ["segment:rsna_like"]), capsys)
    assert "data plan OK" in out
    # JSRT as the jsrt_like set without its SCR masks
    msg = cli_error(["--params", str(_params(tmp_path, _rsna(sources, rsna_lung_masks=sources["rsna_lung_masks"],
                                                                    jsrt_dir=sources["jsrt_dir"]))), "check"], capsys)
    assert "segment:jsrt_like" in msg and "data.scr_dir" in msg, msg
    # segmenters with nothing to learn from: the training set's own (RSNA) images have no lung masks
    msg = cli_error(["--params", str(_params(tmp_path, _rsna(sources, segmenter_sources=["train"]),
                                             ["segment:rsna_like"])), "check"], capsys)
    assert "data.segmenter_sources" in msg and "lung-mask set" in msg, msg


def test_check_catches_train_eval_leakage_by_file_and_by_patient(tmp_path, sources, capsys):
    masks = sources["rsna_lung_masks"]
    same_file = _rsna(sources, rsna_lung_masks=masks, jsrt_dir=sources["jsrt_dir"], scr_dir=sources["scr_dir"],
                      segmenter_sources=["jsrt", "montgomery"])
    msg = cli_error(["--params", str(_params(tmp_path, same_file)), "check"], capsys)
    assert "leakage" in msg and "data/seg-train" in msg and "jsrt_like" in msg and "same file" in msg, msg
    assert "data.jsrt_as_eval: false" in msg and "data.drop_eval_patients: true" in msg, msg
    # MIMIC: every ARDS patient also has a PA training study (another file, the same patient; the AP ARDS images
    # themselves are not in a PA-only training set)
    same_patient = {"source": "mimic", "mimic_dir": sources["mimic_shared_dir"], "mimic_views": ["PA"],
                    "mimic_ards_studies": sources["mimic_shared_ards"], "mimic_ards_masks": sources["mimic_shared_masks"],
                    "segmenter_sources": ["montgomery"], "montgomery_dir": sources["montgomery_dir"]}
    msg = cli_error(["--params", str(_params(tmp_path, same_patient, ["segment:rsna_like", "lesions"])), "check"],
                    capsys)
    assert "leakage" in msg and "data/drr" in msg and "ards_like" in msg and "same patient" in msg, msg
    out = _check_ok(_params(tmp_path, {**same_patient, "drop_eval_patients": True}, ["segment:rsna_like", "lesions"]),
                    capsys)
    assert "image(s) of evaluation-set patients left out of data/drr" in out and "data plan OK" in out, out


def test_check_catches_a_one_domain_training_set(tmp_path, sources, capsys):
    one_domain = {"source": "montgomery", "montgomery_dir": sources["montgomery_dir"], "tb_domain": "exclude"}
    msg = cli_error(["--params", str(_params(tmp_path, one_domain)), "check"], capsys)
    assert "data.source" in msg and "no opacity images" in msg and "both domains" in msg, msg
    msg = cli_error(["--params", str(_params(tmp_path, {"source": "jsrt", "jsrt_dir": sources["jsrt_dir"],
                                                        "jsrt_as_eval": False}), ), "check"], capsys)
    assert "no opacity images" in msg, msg


def test_check_prints_counts_per_dataset_split_and_domain(tmp_path, sources, capsys):
    out = _check_ok(_params(tmp_path, _rsna(sources, rsna_lung_masks=sources["rsna_lung_masks"])), capsys)
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and len(line.split()) == 7]
    counts = {(r[0], r[2], r[3]): int(r[4]) for r in rows if r[0] != "dataset"}
    assert sum(n for (ds, _, _), n in counts.items() if ds == "drr") == 16 + 16  # RSNA's Not Normal left out
    assert counts[("ards-like", "test", "opacity")] == 4  # rendered (no MIMIC list in this plan)
    assert sum(n for (ds, _, _), n in counts.items() if ds == "seg-train") == 12  # every Montgomery image


def test_a_user_named_evaluation_set_is_planned_counted_and_checked(tmp_path, sources, capsys):
    """data.extra_eval_sets: a set of the user's own (any adapter, its own folder) is listed by `cxrbench check`
    with its counts, needs lung masks unless its segmentation is switched off, and takes part in the leakage
    check; bad names and unknown switched_off entries are one-line errors."""
    other = tmp_path / "montgomery2"
    write_montgomery_set(other, 8, seed=5, first=9001)  # other patients than those of data.montgomery_dir
    base = _rsna(sources, rsna_lung_masks=sources["rsna_lung_masks"])
    extra = {"tb_clinic": {"source": "montgomery", "dir": str(other), "description": "another TB clinic"}}
    out = _check_ok(_params(tmp_path, {**base, "extra_eval_sets": extra}), capsys)
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and len(line.split()) == 7]
    counts = {(r[0], r[2], r[3]): (int(r[4]), int(r[5])) for r in rows if r[0] != "dataset"}
    assert counts[("extra/tb_clinic", "test", "opacity")] == (2, 2), out  # every fourth image is TB: 2 of 8
    assert counts[("extra/tb_clinic", "test", "normal")] == (6, 6), out
    assert "data plan OK" in out
    # the same folder as the segmenters' training set: leakage, with the key that fixes it
    leak = {"tb_clinic": {"source": "montgomery", "dir": sources["montgomery_dir"]}}
    msg = cli_error(["--params", str(_params(tmp_path, {**base, "extra_eval_sets": leak})), "check"], capsys)
    assert "leakage" in msg and "data/seg-train" in msg and "tb_clinic" in msg and "same file" in msg, msg
    assert "data.extra_eval_sets" in msg, msg
    # a JSRT set without SCR masks cannot be segmented: the error names the set, the mask key and the switch
    nomask = {"films": {"source": "jsrt", "dir": sources["jsrt_dir"]}}
    msg = cli_error(["--params", str(_params(tmp_path, {**base, "extra_eval_sets": nomask})), "check"], capsys)
    assert "segment:films" in msg and "data.scr_dir" in msg and "eval.switched_off" in msg, msg
    out = _check_ok(_params(tmp_path, {**base, "extra_eval_sets": nomask}, ["segment:films"]), capsys)
    assert "extra/films" in out and "data plan OK" in out, out
    # names: reserved, malformed; switched_off entries must name a known set
    for bad, key in (({"rsna_like": nomask["films"]}, "extra_eval_sets.rsna_like"),
                     ({"My Set": nomask["films"]}, "extra_eval_sets.My Set")):
        msg = cli_error(["--params", str(_params(tmp_path, {**base, "extra_eval_sets": bad})), "check"], capsys)
        assert key in msg, msg
    msg = cli_error(["--params", str(_params(tmp_path, base, ["segment:films"])), "check"], capsys)
    assert "eval.switched_off" in msg and "segment:films" in msg, msg


# ---------------------------------------------------------------------------------------------------------------------
# The data stage is atomic as a whole and resumable.
# ---------------------------------------------------------------------------------------------------------------------
STAGE = """
import json, sys
from types import SimpleNamespace
from pipeline.app.data import run_data_stage
from pipeline.data.params import DataParams
run_data_stage(SimpleNamespace(data=DataParams(**json.loads(sys.argv[1]))), sys.argv[2],
               log=lambda *a: print(*a, flush=True))
"""


def _data_params(sources: dict, resolution: int) -> dict:
    return {"source": "rsna", "rsna_dir": sources["rsna_dir"], "rsna_lung_masks": sources["rsna_lung_masks"],
            "mimic_dir": sources["mimic_dir"], "mimic_ards_studies": sources["mimic_ards_studies"],
            "mimic_ards_masks": sources["mimic_ards_masks"], "jsrt_dir": sources["jsrt_dir"],
            "scr_dir": sources["scr_dir"], "segmenter_sources": ["montgomery"],
            "montgomery_dir": sources["montgomery_dir"], "test_fraction": 0.3, "resolution": resolution,
            "workers": 1, "threads": 1, "sheet_resolution": 32}


def _start(sources: dict, resolution: int, data: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", STAGE, json.dumps(_data_params(sources, resolution)), str(data)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _visible(data: Path) -> dict[str, int]:
    """Image side of every dataset under data/ (and of summary.json): one value = one generation."""
    from PIL import Image

    sides = {"summary.json": json.loads((data / "summary.json").read_text())["resolution"]}
    for name in ("drr", "ards-like", "jsrt-like", "seg-train", "det-train"):
        df = read_manifest(data / name)
        sides[name] = Image.open(data / name / df["image"].iloc[0]).size[0]
    return sides


def test_sigkill_during_a_multi_dataset_run_leaves_old_or_new_never_a_mix(tmp_path, sources):
    data = tmp_path / "data"
    first = _start(sources, 32, data)
    assert first.wait(timeout=600) == 0, first.stdout.read()
    assert set(_visible(data).values()) == {32}
    # the new run (another resolution) is killed once data/drr is converted and JSRT is being read
    run = _start(sources, 48, data)
    seen = []
    for line in run.stdout:
        seen.append(line)
        if line.startswith("data: converting jsrt-like"):
            os.kill(run.pid, signal.SIGKILL)
            break
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, "".join(seen)
    assert set(_visible(data).values()) == {32}, "a kill before the swap leaves the old datasets, all of them"
    rerun = _start(sources, 48, data)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out
    assert set(_visible(data).values()) == {48}
    reused = [line for line in out.splitlines() if "already converted" in line]
    assert any(line.startswith("data: drr:") for line in reused), out  # RSNA was converted before the kill
    assert not list(data.glob(".next")) and not list(data.glob(".prev"))


def test_a_kill_at_any_point_of_the_swap_ends_all_new_after_recovery(tmp_path, monkeypatch):
    """Every interleaving of the swap's renames: stopped after k of them, then recover(): all new, never a mix."""
    from pipeline.app import data as stage

    def generation(root: Path, value: str) -> None:
        for name in stage.OUTPUTS:
            if name.endswith(".json"):
                (root / name).write_text(value)
            else:
                (root / name).mkdir(parents=True)
                (root / name / "manifest.csv").write_text(value)

    def state(root: Path) -> set[str]:
        return {(root / n).read_text() if n.endswith(".json") else (root / n / "manifest.csv").read_text()
                for n in stage.OUTPUTS}

    real_rename = Path.rename
    for k in range(2 * len(stage.OUTPUTS) + 1):
        root = tmp_path / f"k{k}"
        generation(root, "old")
        generation(root / stage.NEXT, "new")
        (root / stage.NEXT / stage.COMPLETE).write_text("")
        calls = []

        def rename(self, target, calls=calls, k=k):
            if len(calls) == k:
                raise KeyboardInterrupt("killed")
            calls.append(self)
            return real_rename(self, target)

        monkeypatch.setattr(Path, "rename", rename)
        with pytest.raises(KeyboardInterrupt):
            stage._swap_in(root)
            raise KeyboardInterrupt("finished")  # k past the last rename: the swap completed
        monkeypatch.setattr(Path, "rename", real_rename)
        stage.recover(root, log=None)
        assert state(root) == {"new"}, k
        assert not (root / stage.NEXT).exists() and not (root / stage.PREV).exists()


def test_file_names_with_spaces_get_the_same_id_rule_in_every_adapter(tmp_path):
    from pipeline.data.adapters import safe_id, tb_items
    from pipeline.data.params import DataParams

    write_montgomery_set(tmp_path / "mc", 4, spaces=True)
    ids = {it.id for it in tb_items(DataParams(montgomery_dir=str(tmp_path / "mc")), "montgomery")}
    assert "montgomery-MCUCXR_0001_0" in ids
    assert safe_id("a b(1).png") == "a_b_1_.png" and safe_id("JPCLN001") == "JPCLN001"


def test_bench_data_measures_each_format_and_extrapolates(tmp_path):
    """`cxrbench bench-data` on a tiny run: every format converted per worker count and once resumed; the
    extrapolation is images / measured rate."""
    from types import SimpleNamespace

    from pipeline.app.bench_data import FULL, run_data_bench

    r = run_data_bench(SimpleNamespace(rsna=4, mimic=2, jsrt=2, resolution=32, workers="1,2", work=str(tmp_path / "w"),
                                       out=str(tmp_path / "out")))
    assert json.loads((tmp_path / "out" / "data-conversion.json").read_text()) == r
    runs = {(x["source"], x["workers"], bool(x.get("resumed"))): x for x in r["runs"]}
    assert {k[0] for k in runs} == {"rsna", "mimic", "jsrt"}
    assert runs[("rsna", 1, False)]["images"] == 4 and runs[("jsrt", 2, True)]["images"] == 2
    for name, e in r["extrapolated"].items():
        assert e["hours_one_core"] == pytest.approx(FULL[name] / r["images_per_s_per_core"][e["rate_from"]] / 3600,
                                                    abs=0.006)
    assert (tmp_path / "out" / "data-conversion.md").read_text().startswith("# Real-data conversion throughput")


def test_paper_real_profile_resolves_and_check_names_each_placeholder_path(tmp_path, sources, capsys):
    """The paper's setup as a profile: it validates as written; `cxrbench check` names the first placeholder folder;
    with every path pointing at real-format data, the plan passes with the paper's roles."""
    from pipeline.config import write_profile

    path = write_profile("paper-real", tmp_path / "params.yaml")
    params = yaml.safe_load(path.read_text())
    assert params["data"]["source"] == "rsna" and params["data"]["segmenter_sources"] == ["montgomery", "shenzhen"]
    assert params["methods"]["cyclegan"]["ngf"] == 64  # the paper's (official) widths
    msg = cli_error(["--params", str(path), "check"], capsys)
    assert "data.rsna_dir" in msg and "/data/rsna-pneumonia" in msg, msg
    shenzhen = tmp_path / "shenzhen"
    write_montgomery_set(shenzhen, 6)  # the Shenzhen layout differs: CXR_png/ + mask/<stem>_mask.png
    for f in (shenzhen / "CXR_png").glob("*.png"):
        f.rename(f.with_name(f.name.replace("MCUCXR", "CHNCXR")))
    (shenzhen / "mask").mkdir()
    for f in (shenzhen / "ManualMask" / "leftMask").glob("*.png"):
        f.rename(shenzhen / "mask" / f"{f.stem.replace('MCUCXR', 'CHNCXR')}_mask.png")
    params["data"].update({k: v for k, v in sources.items() if not k.startswith("mimic_shared")},
                          shenzhen_dir=str(shenzhen), test_fraction=0.3)
    params["tracking"]["enabled"] = False
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    out = _check_ok(path, capsys)
    assert "data plan OK" in out and "montgomery+shenzhen" in out, out
