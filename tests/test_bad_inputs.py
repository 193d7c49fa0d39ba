"""Bad-input catalogue (params.yaml, weights files, the CLI, evaluation sets): each case stops with exit status 2 (CLI)
or a CxrbenchError, ONE line naming the culprit and the fix, and leaves no partial output.

The data adapters' own cases are in tests/test_data_bad_input.py. CLI cases call `pipeline.app.cli.main` in this process
(same code path as the `cxrbench` script, without a 10 s interpreter start per case); stage commands that write under
the project root are pointed at a temporary root.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.config import load_params, write_profile
from pipeline.errors import CxrbenchError
from pipeline.offline import PROJECT_ROOT

FIX_WORDS = ("run ", "use ", "set ", "rebuild", "retrain", "check ", "did you mean", "must", "expected", "known",
             "need", "choose", "remove", "list ", "lower ", "registered", "is it a", "rename", "fix ", "point to")


def assert_one_line(msg: str, *culprits: str) -> str:
    assert "\n" not in msg.strip(), msg
    assert "Traceback" not in msg
    for culprit in culprits:
        assert culprit in msg, f"{culprit!r} not named in: {msg}"
    assert any(w in msg.lower() for w in FIX_WORDS), f"no fix in: {msg}"
    return msg


def cli_error(argv: list[str], capsys) -> str:
    """Run `cxrbench ARGV` in this process; it must exit 2 with exactly one stderr line. Returns that line."""
    from pipeline.app.cli import main

    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cxrbench: error: "), err
    return assert_one_line(err)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under root: equal before and after = nothing written."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, dict]:
    """A temporary root with a ci params.yaml (tracking off): (root, params file, its plain data)."""
    path = write_profile("ci", tmp_path / "params.yaml")
    data = yaml.safe_load(path.read_text())
    data["tracking"]["enabled"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path, path, data


def write_params(project, edit) -> Path:
    root, path, data = project
    data = copy.deepcopy(data)
    edit(data)
    out = root / "edited.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def check_fails(project, capsys, edit, *culprits: str) -> str:
    """`cxrbench --params EDITED check` exits 2 naming the culprits, and writes nothing."""
    path = write_params(project, edit)
    before = snapshot(project[0])
    msg = cli_error(["--params", str(path), "check"], capsys)
    assert_one_line(msg, str(path), *culprits)
    assert snapshot(project[0]) == before
    return msg


# ---------------------------------------------------------------------------------------------------------------------
# params.yaml
# ---------------------------------------------------------------------------------------------------------------------
def test_params_not_valid_yaml_names_the_line(project, capsys):
    root, _, _ = project
    path = root / "broken.yaml"
    path.write_text("profile: ci\nseeds: [0]\ntrain:\n  iterations: 4\n  log_every: 1: 2\n")
    msg = cli_error(["--params", str(path), "check"], capsys)
    assert msg == (f"cxrbench: error: {path}: line 5: not valid YAML (mapping values are not allowed here); fix "
                   "the syntax there")


@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("lambda_a", float("inf"))])
def test_params_non_finite_numbers_are_refused(project, capsys, key, value):
    """A NaN passes every range check (each comparison is false): the first version trained with lr: .nan."""
    msg = check_fails(project, capsys, lambda d: d["methods"]["cyclegan"].__setitem__(key, value),
                      f"methods.cyclegan.{key}", "finite")
    assert "must be a finite number" in msg


def test_params_duplicate_key_is_refused(project, capsys):
    root, path, _ = project
    dup = root / "dup.yaml"
    dup.write_text(path.read_text() + "profile: ci\n")  # the top-level key `profile` a second time
    msg = cli_error(["--params", str(dup), "check"], capsys)
    assert_one_line(msg, str(dup), "'profile' is given twice")


def test_params_not_utf8_names_the_line(project, capsys):
    root, path, _ = project
    bad = root / "latin1.yaml"
    bad.write_bytes(path.read_bytes().replace(b"profile: ci", b"profile: ci # caf\xe9", 1))
    msg = cli_error(["--params", str(bad), "check"], capsys)
    assert_one_line(msg, str(bad), "not UTF-8", "0xe9")


def test_params_top_level_a_list(project, capsys):
    root, _, _ = project
    path = root / "list.yaml"
    path.write_text("- profile: ci\n- seeds: [0]\n")
    assert cli_error(["--params", str(path), "check"], capsys).endswith(
        f"{path}: expected a mapping at the top level")


def test_params_file_missing(project, capsys):
    path = project[0] / "nope.yaml"
    assert "file not found (run `cxrbench profile cpu` to write one)" in assert_one_line(
        cli_error(["--params", str(path), "check"], capsys), str(path))
    assert not path.exists()


def test_params_unknown_key_lists_the_known_ones(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["train"].__setitem__("iteratons", 3), "train.iteratons")
    assert "unknown key (did you mean 'iterations'?) (known keys: " in msg and " iterations," in msg


def test_params_wrong_type(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["train"].__setitem__("iterations", "four"), "train.iterations")
    assert msg.endswith("train.iterations: expected int, got str 'four'")


def test_params_out_of_range(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["eval"].__setitem__("kid_subset_size", 1), "eval.kid_subset_size")
    assert msg.endswith("must be >= 2, got 1")


def test_params_out_of_range_in_a_methods_config(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["methods"]["cyclegan"].__setitem__("ngf", 0),
                      "methods.cyclegan.ngf")
    assert msg.endswith("must be >= 1, got 0")


def test_params_unknown_method_in_models(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["models"].__setitem__(
        "pix", {"method": "pix2pix", "package": "baselines/pix2pix"}), "models.pix.method", "'pix2pix'")
    assert "(registered: ours, cyclegan" in msg


def test_params_unknown_method_section(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["methods"].__setitem__("pix2pix", {}), "methods.pix2pix")
    assert "unknown method (registered:" in msg


def test_params_models_package_wrong(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["models"]["cyclegan"].__setitem__("package", "baselines/cycle_gan"),
                      "models.cyclegan.package", "'baselines/cycle_gan'")
    assert "must be 'baselines/cyclegan'" in msg


@pytest.mark.parametrize("seeds, expected", [([], "seeds: must list at least one seed"),
                                             ([0, 0], "seeds: duplicate seeds [0, 0]; list each seed once")])
def test_params_seeds_empty_or_duplicate(project, capsys, seeds, expected):
    assert check_fails(project, capsys, lambda d: d.__setitem__("seeds", seeds)).endswith(expected)


def test_params_rsna_source_without_its_folder(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["data"].__setitem__("source", "rsna"), "data.rsna_dir")
    assert "must name the rsna folder when data.source is 'rsna'" in msg


@pytest.mark.parametrize("edit, culprits", [
    (lambda d: d.__setitem__("models", {}), ("models: empty",)),
    (lambda d: d["eval"].__setitem__("classifiers", ["resnet50", "resnet5O"]), ("eval.classifiers", "'resnet5O'")),
    (lambda d: d["eval"].__setitem__("detector_cfg", "yolov55.yaml"), ("eval.detector_cfg", "'yolov55.yaml'")),
    (lambda d: d["methods"]["cyclegan"].__setitem__("batch_size", 1000), ("methods.cyclegan.batch_size", "1000")),
    (lambda d: d["data"].__setitem__("resolution", 66), ("models.ours", "data.resolution 66", "divisible by 4")),
    (lambda d: (d["data"].__setitem__("resolution", 66), d.__setitem__("models", {"drit": {"method": "drit", "package": "baselines/drit"}})),
     ("models.drit", "data.resolution 66", "divisible by 4")),
], ids=["no-models", "classifier-typo", "detector-yaml-typo", "batch-larger-than-data", "size-ours-cannot-take",
        "size-drit-would-return-68px"])
def test_settings_that_would_fail_or_crawl_later_are_refused_by_check(project, capsys, edit, culprits):
    check_fails(project, capsys, edit, *culprits)


def test_shipped_detector_yamls_and_timm_names_pass_check(project, capsys):
    from pipeline.app.cli import main

    for cfg in ("yolov5n.yaml", "yolov5s.yaml"):
        path = write_params(project, lambda d: (d["eval"].__setitem__("detector_cfg", cfg),
                                                d["eval"].__setitem__("classifiers", ["mobilenetv3_large_100"])))
        assert main(["--params", str(path), "check"]) == 0, capsys.readouterr().err


def test_params_unknown_fid_extractor(project, capsys):
    msg = check_fails(project, capsys, lambda d: d["eval"].__setitem__("fid_extractors", ["inception", "clip"]),
                      "eval.fid_extractors", "'clip'")
    assert "must be one of inception, cxr-evaluator, cxr-densenet" in msg


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------
def test_profile_typo_suggests_and_leaves_params_alone(project, capsys):
    root, path, _ = project
    before = path.read_bytes()
    msg = cli_error(["--params", str(path), "profile", "gpu-quik"], capsys)
    assert msg == ("cxrbench: error: unknown profile 'gpu-quik' (did you mean 'gpu-quick'?); available: cpu, "
                   "cpu-rank, ci, gpu-quick, paper, paper-real")
    assert path.read_bytes() == before and not list(root.glob("*.tmp"))


@pytest.mark.parametrize("command", ["train", "translate-sets", "translate"])
def test_unknown_model_name_suggests_the_closest(project, capsys, command, tmp_path):
    root, path, _ = project
    extra = ["--out", str(tmp_path / "out"), str(tmp_path)] if command == "translate" else []
    before = snapshot(root)
    msg = cli_error(["--params", str(path), command, "--model", "cyclegn", *extra], capsys)
    assert_one_line(msg, "unknown model 'cyclegn' (did you mean 'cyclegan'?)", "params.yaml models: ours")
    assert snapshot(root) == before and not (tmp_path / "out").exists()


def write_png(path: Path, size: int = 64, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)
    return path


@pytest.fixture
def weights(project) -> Path:
    """Exported weights of an untrained cyclegan (ci widths) under the temporary root."""
    from pipeline.engine import export_weights, seed_everything
    from pipeline.layout import Layout, build_translator

    root, path, _ = project
    seed_everything(0)
    out = Layout(root).weights("cyclegan", 0)
    export_weights(build_translator(load_params(path), "cyclegan"), out, {"model": "cyclegan"})
    return out


def translate_fails(project, capsys, inputs: list[str], weights: Path | str, out: Path, *culprits: str) -> str:
    root, path, _ = project
    msg = cli_error(["--params", str(path), "translate", "--model", "cyclegan", "--weights", str(weights),
                     "--out", str(out), *inputs], capsys)
    assert_one_line(msg, *culprits)
    assert not out.exists(), "partial output left behind"
    return msg


def test_translate_input_path_missing(project, capsys, weights, tmp_path):
    missing = tmp_path / "scans" / "patient7.dcm"
    msg = translate_fails(project, capsys, [str(missing)], weights, tmp_path / "out", str(missing))
    assert msg.endswith("no such file or folder; check the path")


def test_translate_input_folder_without_images(project, capsys, weights, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    msg = translate_fails(project, capsys, [str(folder)], weights, tmp_path / "out", str(folder))
    assert msg.endswith("no PNG, JPG or DICOM files in this folder; point to the images")


def test_translate_one_unreadable_image_among_many_writes_nothing(project, capsys, weights, tmp_path):
    folder = tmp_path / "scans"
    for i in range(10):  # more than one batch of 8: the broken file is in the second batch
        write_png(folder / f"img{i:02d}.png", value=10 * i)
    (folder / "img09.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    msg = translate_fails(project, capsys, [str(folder)], weights, tmp_path / "out", str(folder / "img09.png"))
    assert "corrupt" in msg


def test_translate_weights_file_missing(project, capsys, tmp_path):
    image = write_png(tmp_path / "in.png")
    missing = tmp_path / "models" / "cyclegan" / "seed3.pt"
    msg = translate_fails(project, capsys, [str(image)], missing, tmp_path / "out", str(missing))
    assert msg.endswith("no trained weights; run `dvc repro train@cyclegan` first")


def test_translate_sets_stage_without_trained_weights(project, capsys, monkeypatch):
    import pipeline.app.translate as translate
    from helpers_data import write_tiny_dataset

    root, path, _ = project
    write_tiny_dataset(root)
    real = translate.run_translate
    monkeypatch.setattr(translate, "run_translate", lambda params, model, train_cap=0: real(
        params, model, root=root, train_cap=train_cap))
    before = snapshot(root)
    msg = cli_error(["--params", str(path), "translate-sets", "--model", "cyclegan"], capsys)
    assert_one_line(msg, str(root / "models" / "cyclegan" / "seed0.pt"), "dvc repro train@cyclegan")
    assert snapshot(root) == before


def test_translate_weights_of_another_model(project, capsys, tmp_path):
    from pipeline.engine import export_weights
    from pipeline.layout import build_translator

    other = tmp_path / "ours_none.pt"  # the state dict of another method (ours without its four modules)
    export_weights(build_translator(load_params(project[1]), "ours_none"), other, {})
    msg = translate_fails(project, capsys, [str(write_png(tmp_path / "in.png"))], other, tmp_path / "out", str(other))
    assert "weights do not fit model 'cyclegan' (missing ['gen_ab." in msg and "check methods.cyclegan" in msg


def test_translate_weights_with_other_shapes(project, capsys, tmp_path):
    from pipeline.engine import export_weights
    from pipeline.layout import build_translator

    params = load_params(project[1])
    params.methods["cyclegan"]["ngf"] = 16  # same names, twice the width of params.yaml's cyclegan
    wide = tmp_path / "wide.pt"
    export_weights(build_translator(params, "cyclegan"), wide, {})
    msg = translate_fails(project, capsys, [str(write_png(tmp_path / "in.png"))], wide, tmp_path / "out", str(wide))
    assert "weights do not fit model 'cyclegan' (size mismatch for gen_ab." in msg
    assert "torch.Size([16, 1, 7, 7])" in msg and "check methods.cyclegan in params.yaml" in msg


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", b"PK\x03\x04" + b"\0" * 64],
                         ids=["empty", "text", "broken-zip"])
def test_translate_weights_file_that_is_not_a_torch_file(project, capsys, tmp_path, content):
    bad = tmp_path / "seed0.pt"
    bad.write_bytes(content)
    msg = translate_fails(project, capsys, [str(write_png(tmp_path / "in.png"))], bad, tmp_path / "out", str(bad))
    assert "not a weights file torch.load(weights_only=True) can read" in msg


def test_translate_weights_that_are_a_tensor_not_a_state_dict(project, capsys, tmp_path):
    bad = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), bad)
    msg = translate_fails(project, capsys, [str(write_png(tmp_path / "in.png"))], bad, tmp_path / "out", str(bad))
    assert "holds a Tensor, not a state dict" in msg


class Payload:
    """Unpickling this runs `touch <marker>`: what a malicious 'weights' file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_translate_weights_pickle_with_a_payload_is_refused(project, capsys, weights, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pt"
    state = dict(torch.load(weights, weights_only=True))
    state["gen_ab.extra"] = Payload(marker)  # a real state dict with one booby-trapped entry
    torch.save(state, evil)
    msg = translate_fails(project, capsys, [str(write_png(tmp_path / "in.png"))], evil, tmp_path / "out", str(evil))
    assert "(UnpicklingError)" in msg
    assert not marker.exists(), "the payload was executed"


def test_new_baseline_invalid_name(capsys, tmp_path):
    from pipeline.app.scaffold import new_baseline

    before = sorted(p.name for p in (PROJECT_ROOT / "baselines").iterdir())
    msg = cli_error(["new-baseline", "Attention-GAN"], capsys)
    assert msg == ("cxrbench: error: baseline name 'Attention-GAN': use lower-case letters, digits and '_' "
                   "(e.g. 'attention_gan')")
    assert sorted(p.name for p in (PROJECT_ROOT / "baselines").iterdir()) == before
    with pytest.raises(CxrbenchError, match="'class'"):  # a Python keyword cannot be a package name
        new_baseline("class", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_new_baseline_existing_name(capsys, tmp_path):
    from pipeline.app.scaffold import new_baseline

    before = snapshot(PROJECT_ROOT / "baselines" / "cyclegan")
    msg = cli_error(["new-baseline", "cyclegan", "--no-params"], capsys)
    assert msg == ("cxrbench: error: baseline 'cyclegan' exists already (baselines/cyclegan); choose another name")
    assert snapshot(PROJECT_ROOT / "baselines" / "cyclegan") == before
    (tmp_path / "baselines" / "mine").mkdir(parents=True)  # a folder the registry does not know yet
    with pytest.raises(CxrbenchError) as exc:
        new_baseline("mine", add_to_params=False, root=tmp_path)
    assert_one_line(str(exc.value), str(tmp_path / "baselines" / "mine"), "exists already; remove it")
    assert list((tmp_path / "baselines").iterdir()) == [tmp_path / "baselines" / "mine"]


# ---------------------------------------------------------------------------------------------------------------------
# Stages: missing inputs, prior weights, evaluation sets
# ---------------------------------------------------------------------------------------------------------------------
def test_train_before_the_data_stage(project, capsys, monkeypatch):
    import pipeline.app.train as train

    root, path, _ = project
    real = train.run_train
    monkeypatch.setattr(train, "run_train", lambda params, model: real(params, model, root=root))
    before = snapshot(root)
    msg = cli_error(["--params", str(path), "train", "--model", "cyclegan"], capsys)
    assert_one_line(msg, str(root / "data" / "drr" / "manifest.csv"), "build the dataset with `cxrbench data`")
    assert snapshot(root) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_a_gpu(project, monkeypatch):
    from helpers_data import write_tiny_dataset
    from pipeline.engine import TrainingError
    from pipeline.app.train import run_train

    root, path, _ = project
    write_tiny_dataset(root)
    params = load_params(path)
    params.train.device = "cuda"
    with pytest.raises(TrainingError) as exc:
        run_train(params, "cyclegan", root=root)
    assert_one_line(str(exc.value), "train.device is 'cuda'", "set train.device: auto or cpu")
    assert not (root / "models").exists() and not (root / "checkpoints").exists()


def test_prior_weights_with_wrong_shapes(project, tmp_path):
    import torchvision
    from helpers_data import write_tiny_dataset

    from pipeline.app.prior import run_prior_stage
    from pipeline.prior import PriorError

    root, path, _ = project
    write_tiny_dataset(root)
    state = torchvision.models.densenet121(weights=None, num_classes=14).state_dict()
    state["features.conv0.weight"] = torch.zeros(64, 3, 5, 5)  # a 5x5 stem: not DenseNet-121's 7x7
    bad = tmp_path / "chexnet.pth"
    torch.save(state, bad)
    params = load_params(path)
    params.prior.weights = str(bad)
    with pytest.raises(PriorError) as exc:
        run_prior_stage(params, root / "data", root / "models" / "prior")
    msg = assert_one_line(str(exc.value), str(bad), "does not match DenseNet-121", "is it a DenseNet-121 checkpoint?")
    assert "size mismatch for densenet.features.conv0.weight" in msg
    assert not (root / "models").exists()


@pytest.fixture
def eval_project(project, monkeypatch):
    """Three tiny evaluation sets (32 px, 3 images per split and domain) and a random prior under the root."""
    from test_eval_support import write_eval_datasets

    from pipeline.prior import PriorNet, save_prior

    root, path, data = project
    write_eval_datasets(root, size=32, n=3)
    torch.manual_seed(0)
    save_prior(PriorNet(input_size=32).eval(), root / "models" / "prior" / "prior.pt")
    params = load_params(path)
    params.data.resolution = 32
    return root, params


def test_empty_evaluation_set(eval_project, capsys, monkeypatch):
    import pandas as pd

    import pipeline.app.evaluate as stages

    root, params = eval_project
    manifest = root / "data" / "drr" / "manifest.csv"
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df[~((df["split"] == "test") & (df["domain"] == "normal"))].to_csv(manifest, index=False)  # no test normals
    real = stages.run_fidkid
    monkeypatch.setattr(stages, "run_fidkid", lambda p, model: real(params, model, root=root))
    before = snapshot(root)
    msg = cli_error(["--params", str(root / "params.yaml"), "fidkid", "--model", "original"], capsys)
    assert msg == (f"cxrbench: error: {manifest}: FID/KID need at least 2 opacity and 2 normal test images, "
                   "got 3 and 0")
    assert snapshot(root) == before


def test_kid_subset_larger_than_the_sets_is_half_the_smaller_set(eval_project):
    from torch_fidelity.metric_kid import kid_features_to_metric

    from eval import fid_kid as fk
    from pipeline.app.evaluate import FID_SET, run_fidkid
    from eval.sets import eval_rows
    from pipeline.layout import Layout

    root, params = eval_project
    params.eval.fid_extractors = ["cxr-densenet"]
    params.eval.kid_subset_size = 1000  # the sets have 3 images each
    result = run_fidkid(params, "original", root=root)
    entry = result["extractors"]["cxr-densenet"]
    assert entry["status"] == "ok" and entry["kid_subset_size"] == 2  # half of 3, at least 2: the subsets differ
    assert result["settings"]["kid_subset_size_requested"] == 1000
    # the reduced KID is torch-fidelity's KID at subset size 2 on the same features; at 1000 it would refuse
    ds, rows = eval_rows(Layout(root), FID_SET, params.eval.max_images)
    ext = fk.resolve_extractor("cxr-densenet", prior_path=root / "models" / "prior" / "prior.pt")
    f_gen, f_ref = (torch.from_numpy(fk.extract_features([ds / p for p in rows[rows["domain"] == d]["image"]], ext)
                                     .astype(np.float64)) for d in ("opacity", "normal"))
    direct = kid_features_to_metric(f_gen, f_ref, kid_subsets=params.eval.kid_subsets, kid_subset_size=2,
                                    rng_seed=params.eval.fid_rng_seed, verbose=False)
    assert entry["per_seed"]["original"]["kid_mean"] == pytest.approx(float(direct["kernel_inception_distance_mean"]),
                                                                      rel=1e-6, abs=1e-12)
    with pytest.raises(ValueError):
        kid_features_to_metric(f_gen, f_ref, kid_subsets=2, kid_subset_size=1000, verbose=False)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_truncated_or_deleted_image_in_fidkid_is_named(eval_project, capsys, monkeypatch, damage):
    import pandas as pd

    import pipeline.app.evaluate as stages

    root, params = eval_project
    params.eval.fid_extractors = ["cxr-densenet"]
    ds = root / "data" / "drr"
    df = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    victim = ds / df[(df["split"] == "test") & (df["domain"] == "normal")]["image"].iloc[1]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:40])
    else:
        victim.unlink()
    real = stages.run_fidkid
    monkeypatch.setattr(stages, "run_fidkid", lambda p, model: real(params, model, root=root))
    before = snapshot(root)
    msg = cli_error(["--params", str(root / "params.yaml"), "fidkid", "--model", "original"], capsys)
    if damage == "truncated":  # found when the image is decoded
        assert_one_line(msg, str(victim), "truncated or corrupt", "dvc repro")
    else:  # found before: the manifest names a file that is not there
        assert_one_line(msg, victim.name, "not found", "cxrbench data")
    assert snapshot(root) == before


@pytest.mark.parametrize("code, words", [(28, "no space left"), (30, "cannot write here"), (13, "cannot write here")])
def test_machine_failures_are_one_line_naming_the_file(project, capsys, monkeypatch, code, words):
    """Disk full (ENOSPC), read-only file system (EROFS), permission denied (EACCES) in any stage: one line with
    the file and what to do, exit 2 (simulated: a real full disk cannot be made in a test)."""
    import pipeline.app.cli as cli

    def fail(_args):
        raise OSError(code, os.strerror(code), str(project[0] / "reports" / "table1.md"))

    monkeypatch.setattr(cli, "cmd_report", fail)
    msg = cli_error(["--params", str(project[1]), "report"], capsys)
    assert_one_line(msg, str(project[0] / "reports" / "table1.md"), words)


def test_classifiers_for_a_model_that_is_not_configured(project, capsys):
    root, path, _ = project
    edited = write_params(project, lambda d: d["eval"].__setitem__("classify_models", ["ours", "cyclegann"]))
    before = snapshot(root)
    msg = cli_error(["--params", str(edited), "classifiers"], capsys)
    assert_one_line(msg, "eval.classify_models", "'cyclegann'", "list trained models only")
    assert snapshot(root) == before


def test_cli_outside_any_checkout_says_so_in_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import cli_env

    env = cli_env()
    env.pop("CXRBENCH_ROOT", None)
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "check"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert f"{tmp_path.resolve()} is not inside a cxrbench checkout" in r.stderr and "CXRBENCH_ROOT" in r.stderr
    assert not (tmp_path / "params.yaml").exists() and not list(tmp_path.iterdir())  # nothing written


def test_root_is_the_checkout_above_the_current_folder(tmp_path):
    """Run from a subfolder of a second checkout: that checkout, not the one the code was installed from."""
    import subprocess
    import sys

    from conftest import cli_env

    other = tmp_path / "second"
    (other / "pipeline" / "profiles").mkdir(parents=True)
    (other / "dvc.yaml").write_text("stages: {}\n")
    (other / "data" / "sub").mkdir(parents=True)
    env = cli_env({"PYTHONPATH": str(PROJECT_ROOT)})
    env.pop("CXRBENCH_ROOT", None)
    code = "from pipeline.offline import PROJECT_ROOT, ROOT_SOURCE; print(PROJECT_ROOT, ROOT_SOURCE)"
    r = subprocess.run([sys.executable, "-c", code], cwd=other / "data" / "sub", env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.split() == [str(other.resolve()), "cwd"], r.stderr
    r = subprocess.run([sys.executable, "-c", code], cwd=other / "data", env={**env, "CXRBENCH_ROOT": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == [str(tmp_path.resolve()), "CXRBENCH_ROOT"], r.stderr


def test_read_pngs_names_a_missing_or_truncated_translation(tmp_path):
    """Translated images are read through eval.sets.read_pngs: a deleted or truncated one is one line naming it."""
    from eval.sets import EvalError, read_pngs

    good, cut, gone = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:30])
    assert read_pngs([good]).shape == (1, 8, 8)
    for path, words in ((cut, "truncated or corrupt"), (gone, "missing")):
        with pytest.raises(EvalError) as err:
            read_pngs([good, path])
        assert_one_line(str(err.value), str(path), words, "dvc repro")
