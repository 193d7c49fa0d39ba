"""User commands: `cxrbench translate` on a user's DICOM and PNG files, `cxrbench new-baseline` end to end."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import TINY_DATA, cli_env, copy_project
from pipeline.config import load_params, write_profile


def _write_dicom(path, array_u16, monochrome1=True):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "anon"
    ds.Rows, ds.Columns = array_u16.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = array_u16.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).pixel_array.shape == array_u16.shape


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers_data import write_tiny_dataset
    from pipeline.app.train import run_train

    root = tmp_path_factory.mktemp("root")
    params = load_params(write_profile("ci", root / "params.yaml"))
    params.tracking.enabled = False
    write_tiny_dataset(root)
    run_train(params, "ours_none", root=root)
    return root, params


def test_translate_dicom_and_png_with_mask_and_overlay(trained, tmp_path):
    from pipeline.app.user_translate import translate_files

    root, params = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    ramp = np.tile(np.linspace(0, 4095, 80), (100, 1)).astype(np.uint16)  # 100x80: not square, not 64 px
    _write_dicom(inputs / "patient1.dcm", ramp)
    Image.fromarray((ramp // 16).astype(np.uint8), "L").save(inputs / "patient2.png")
    out = tmp_path / "out"
    written = translate_files(params, "ours_none", [str(inputs)], out, weights=str(root / "models/ours_none/seed0.pt"))
    assert len(written) == 6
    for stem in ("patient1", "patient2"):  # outputs at the input's own size (100 rows x 80 columns), not 64x64
        t = Image.open(out / f"{stem}_translated.png")
        m = Image.open(out / f"{stem}_mask.png")
        o = Image.open(out / f"{stem}_overlay.png")
        assert t.mode == "L" and t.size == (80, 100) and m.size == (80, 100)
        assert o.mode == "RGB" and o.size == (3 * 80, 100)
    index = list(csv.DictReader((out / "index.csv").open()))
    assert [(Path(r["input"]).name, r["height"], r["width"], r["translated"]) for r in index] == [
        ("patient1.dcm", "100", "80", "patient1_translated.png"),
        ("patient2.png", "100", "80", "patient2_translated.png")]
    # MONOCHROME1: the left of the ramp (low stored value) is bright after inversion, as in the PNG's opposite
    from pipeline.app.user_translate import read_any

    dcm, png = read_any(inputs / "patient1.dcm", 64), read_any(inputs / "patient2.png", 64)
    assert dcm[:, :8].mean() > 200 and dcm[:, -8:].mean() < 55
    assert png[:, :8].mean() < 55 and png[:, -8:].mean() > 200


def test_translate_cli_bad_input_is_one_line(trained, tmp_path):
    root, _ = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "--params", str(root / "params.yaml"), "translate",
                        "--model", "ours_none", "--weights", str(root / "models/ours_none/seed0.pt"), "--out",
                        str(tmp_path / "out"), str(bad)], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert str(bad) in r.stderr and "corrupt" in r.stderr
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_translate_keeps_every_result_and_refuses_what_it_cannot_do(trained, tmp_path):
    """Same stems in several folders/extensions get distinct names; bad pixels, tiny or strip-shaped inputs, an
    existing output and --out naming a file are one-line errors with nothing written."""
    from pipeline.app.user_translate import translate_files

    root, params = trained
    kw = {"weights": str(root / "models/ours_none/seed0.pt")}
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    picture = (np.random.default_rng(0).random((70, 60)) * 255).astype(np.uint8)
    for name in ("a.png", "a.jpg", "a_2.png", "sub/a.png"):
        Image.fromarray(picture, "L").save(src / name)
    out = tmp_path / "out"
    translate_files(params, "ours_none", [str(src)], out, **kw)
    index = list(csv.DictReader((out / "index.csv").open()))
    assert len(index) == 4 and len({r["translated"] for r in index}) == 4
    assert len(list(out.glob("*_translated.png"))) == 4 and all(r["mask"] for r in index)

    with pytest.raises(Exception, match="already exists"):  # a second run into the same folder overwrites nothing
        translate_files(params, "ours_none", [str(src)], out, **kw)
    bad = {"nan.tiff": np.full((40, 40), np.nan, np.float32), "tiny.png": picture[:8, :8],
           "strip.png": np.zeros((20, 200), np.uint8)}
    for name, pixels in bad.items():
        path = tmp_path / name
        Image.fromarray(pixels).save(path)
        with pytest.raises(Exception, match={"nan.tiff": "NaN", "tiny.png": "too small",
                                             "strip.png": "elongated"}[name]) as err:
            translate_files(params, "ours_none", [str(path)], tmp_path / f"out_{name}", **kw)
        assert str(path) in str(err.value) and not (tmp_path / f"out_{name}").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(Exception, match="this is a file"):
        translate_files(params, "ours_none", [str(src / "a.png")], tmp_path / "afile", **kw)


@pytest.mark.slow
def test_new_baseline_passes_contract_tests_and_trains_under_dvc(tmp_path):
    dest = copy_project(tmp_path / "project")
    env = cli_env({"PYTHONPATH": str(dest)})

    def run(*args, timeout=900):
        r = subprocess.run(list(args), cwd=dest, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{args}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return r.stdout + r.stderr

    run("cxrbench", "profile", "ci")
    run("cxrbench", "new-baseline", "demo")
    assert (dest / "baselines" / "demo" / "README.md").exists()
    out = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_contract.py", "-k", "demo")
    assert "passed" in out and "failed" not in out
    # the registry is the model list: the new directory stays a model through every profile switch (what
    # `cxrbench profile X` runs, four switches in one process: each process start imports every method, ~6 s)
    switch = ("import json, yaml; from pipeline.config import write_profile\n"
              "for p in ('cpu', 'gpu-quick', 'cpu-rank', 'ci'):\n"
              "    write_profile(p, 'params.yaml')\n"
              "    print(json.dumps([p, yaml.safe_load(open('params.yaml'))['models']]))")
    for line in run(sys.executable, "-c", switch).splitlines():
        if line.startswith("["):
            profile, models = json.loads(line)
            assert models.get("demo", {}).get("method") == "demo", (profile, sorted(models))
    assert yaml.safe_load((dest / "params.yaml").read_text())["profile"] == "ci"
    params = yaml.safe_load((dest / "params.yaml").read_text())  # ci; only training and translation matter here
    params["data"].update({k: v for k, v in TINY_DATA.items() if k in params["data"]})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run("dvc", "repro", "translate@demo")
    assert "Running stage 'train@demo'" in out and "Running stage 'translate@demo'" in out
    assert (dest / "outputs" / "demo" / "seed0" / "index.csv").exists()
    r = subprocess.run(["cxrbench", "new-baseline", "demo"], cwd=dest, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "exists already" in r.stderr


def test_every_stage_command_ends_with_one_line_saying_its_wall_time(tmp_path, monkeypatch, capsys):
    import pipeline.app.cli as cli

    params = write_profile("ci", tmp_path / "params.yaml")
    monkeypatch.setattr(cli, "cmd_report", lambda args: print("report body"))
    assert cli.main(["--params", str(params), "report"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "report body" and out[-1].startswith("cxrbench report: done in ") and out[-1].endswith(" s")
    assert cli.main(["--params", str(params), "check"]) == 0  # not a stage: no timing line
    assert "done in" not in capsys.readouterr().out


def test_stage_commands_are_the_subcommands_dvc_runs():
    import re

    from pipeline.app.cli import STAGE_COMMANDS
    from pipeline.offline import PROJECT_ROOT

    used = set(re.findall(r"cmd: cxrbench ([\w-]+)", (PROJECT_ROOT / "dvc.yaml").read_text()))
    assert used and used <= set(STAGE_COMMANDS)


def test_version_and_bench_help_explain_themselves(capsys):
    from pipeline.app.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"cxrbench \d+\.\d+\.\d+\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    for option in ("--models", "--size", "--batch", "--steps", "--device", "--precision", "--out"):
        help_line = out[out.index(option):].split("\n  -", 1)[0]
        assert len(help_line.split()) > 3, (option, help_line)  # each option says what it does
