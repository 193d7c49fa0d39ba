"""Bad input: each case stops with one DataError line naming the file and the fix, and leaves no partial dataset."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.canonical import DataError, DatasetWriter, load_images, read_manifest
from pipeline.errors import CxrbenchError
from test_data_adapters import params, write_dicom, write_folder, write_jsrt, write_mimic, write_rsna

FIX_WORDS = ("replace", "rename", "fix", "add", "remove", "convert", "rebuild", "restore", "use", "point", "complete",
             "check", "re-download", "list", "copy", "did you mean", "expected", "must", "save")


def assert_one_line(exc: pytest.ExceptionInfo, names: str) -> str:
    msg = str(exc.value)
    assert isinstance(exc.value, CxrbenchError)
    assert "\n" not in msg, msg
    assert names in msg, f"{names!r} not named in: {msg}"
    assert any(w in msg.lower() for w in FIX_WORDS), f"no fix in: {msg}"
    return msg


def assert_no_dataset(target: Path) -> None:
    assert not target.exists(), f"{target} was left behind"
    leftovers = list(target.parent.glob(f".{target.name}.*")) if target.parent.exists() else []
    assert not leftovers, leftovers


def convert(p, name: str, target: Path, **kw):
    from pipeline.data.adapters import write_source

    return write_source(p, name, target, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# Source formats.
# ---------------------------------------------------------------------------------------------------------------------
def test_corrupt_png_in_a_source_folder(tmp_path):
    src = write_folder(tmp_path / "plain")
    (src / "images" / "img002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    target = tmp_path / "data" / "drr"
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", target)
    assert_one_line(exc, "img002.png")
    assert_no_dataset(target)


def test_truncated_dicom(tmp_path):
    src = write_rsna(tmp_path / "rsna")
    path = src / "stage_2_train_images" / "pid-opacity.dcm"
    path.write_bytes(path.read_bytes()[:400])
    target = tmp_path / "data" / "drr"
    with pytest.raises(DataError) as exc:
        convert(params(rsna_dir=str(src)), "rsna", target)
    assert_one_line(exc, "pid-opacity.dcm")
    assert_no_dataset(target)


def test_dicom_values_beyond_bits_stored(tmp_path):
    src = write_rsna(tmp_path / "rsna")
    write_dicom(src / "stage_2_train_images" / "pid-opacity.dcm", np.full((64, 64), 5000, np.uint16), "MONOCHROME1",
                12)
    target = tmp_path / "data" / "drr"
    with pytest.raises(DataError) as exc:
        convert(params(rsna_dir=str(src)), "rsna", target)
    assert "BitsStored" in assert_one_line(exc, "pid-opacity.dcm")
    assert_no_dataset(target)


def test_jsrt_img_of_wrong_size(tmp_path):
    src = write_jsrt(tmp_path / "jsrt")
    (src / "JPCNN001.IMG").write_bytes(np.zeros(1024 * 1024, ">u2").tobytes())
    target = tmp_path / "data" / "jsrt-like"
    with pytest.raises(DataError) as exc:
        convert(params(jsrt_dir=str(src)), "jsrt", target, eval_only=True)
    assert "8388608" in assert_one_line(exc, "JPCNN001.IMG")
    assert_no_dataset(target)


def test_mask_size_mismatch(tmp_path):
    src = write_folder(tmp_path / "plain")
    Image.fromarray(np.zeros((32, 64), np.uint8), "L").save(src / "masks" / "img001.png")
    target = tmp_path / "data" / "drr"
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", target)
    assert_one_line(exc, "img001.png")
    assert_no_dataset(target)


@pytest.mark.parametrize("fill, words", [(0, "covers 0.0%"), (255, "covers 100.0%")], ids=["all-black", "all-white"])
def test_empty_or_full_lung_mask_is_refused(tmp_path, fill, words):
    src = write_folder(tmp_path / "plain")
    Image.fromarray(np.full((64, 64), fill, np.uint8), "L").save(src / "masks" / "img001.png")
    target = tmp_path / "data" / "drr"
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", target)
    assert words in assert_one_line(exc, "img001.png")
    assert_no_dataset(target)


def test_missing_csv_column(tmp_path):
    src = write_rsna(tmp_path / "rsna")
    df = pd.read_csv(src / "stage_2_train_labels.csv").drop(columns=["Target"])
    df.to_csv(src / "stage_2_train_labels.csv", index=False)
    with pytest.raises(DataError) as exc:
        convert(params(rsna_dir=str(src)), "rsna", tmp_path / "data" / "drr")
    assert "'Target'" in assert_one_line(exc, "stage_2_train_labels.csv")
    assert_no_dataset(tmp_path / "data" / "drr")


def test_unknown_label_column_and_unknown_class(tmp_path):
    src = write_folder(tmp_path / "plain")
    df = pd.read_csv(src / "labels.csv").rename(columns={"Pneumonia": "Pnemonia"})
    df.to_csv(src / "labels.csv", index=False)
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", tmp_path / "data" / "drr")
    assert "did you mean 'Pneumonia'" in assert_one_line(exc, "labels.csv")

    df.rename(columns={"Pnemonia": "Pneumonia", "label_Effusion": "label_Efusion"}).to_csv(src / "labels.csv",
                                                                                           index=False)
    with pytest.raises(DataError) as exc:  # the label_ prefix says it is meant as a label
        convert(params(folder_dir=str(src)), "folder", tmp_path / "data" / "drr")
    assert "did you mean 'Effusion'" in assert_one_line(exc, "labels.csv") and "label_Efusion" in str(exc.value)

    rsna = write_rsna(tmp_path / "rsna")
    classes = pd.read_csv(rsna / "stage_2_detailed_class_info.csv")
    classes.loc[0, "class"] = "Lung Opacityy"
    classes.to_csv(rsna / "stage_2_detailed_class_info.csv", index=False)
    with pytest.raises(DataError) as exc:
        convert(params(rsna_dir=str(rsna)), "rsna", tmp_path / "data" / "drr")
    assert "Lung Opacityy" in assert_one_line(exc, "stage_2_detailed_class_info.csv")
    assert_no_dataset(tmp_path / "data" / "drr")


def test_folder_labels_csv_may_carry_other_columns(tmp_path, capsys):
    """Real label files have patient age, sex, view...: those columns are named and left out, the labels kept."""
    src = write_folder(tmp_path / "plain")
    df = pd.read_csv(src / "labels.csv")
    df.insert(1, "PatientAge", 60)
    df["sex"] = "F"
    df.to_csv(src / "labels.csv", index=False)
    target = tmp_path / "data" / "drr"
    convert(params(folder_dir=str(src)), "folder", target)
    assert "column(s) PatientAge, sex are not NIH-14 labels: not used" in capsys.readouterr().out
    manifest = read_manifest(target)
    assert len(manifest) == len(df) and "PatientAge" not in manifest.columns
    assert manifest.loc[manifest["domain"] == "opacity", "label_Pneumonia"].astype(int).eq(1).all()


def test_unknown_chexpert_value(tmp_path):
    src = write_mimic(tmp_path / "mimic")
    chex = pd.read_csv(src / "mimic-cxr-2.0.0-chexpert.csv", dtype=str, keep_default_na=False)
    chex.loc[1, "Edema"] = "2.0"
    chex.to_csv(src / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(DataError) as exc:
        convert(params(mimic_dir=str(src)), "mimic", tmp_path / "data" / "drr")
    assert "'2.0'" in assert_one_line(exc, "mimic-cxr-2.0.0-chexpert.csv")


def test_empty_folder(tmp_path):
    src = tmp_path / "plain"
    (src / "images").mkdir(parents=True)
    pd.DataFrame(columns=["image", "domain"]).to_csv(src / "labels.csv", index=False)
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", tmp_path / "data" / "drr")
    assert_one_line(exc, str(src / "images"))
    assert_no_dataset(tmp_path / "data" / "drr")


def test_colour_image_in_a_source_folder(tmp_path):
    src = write_folder(tmp_path / "plain")
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200  # red: not a grayscale radiograph saved as RGB
    Image.fromarray(rgb, "RGB").save(src / "images" / "img003.png")
    with pytest.raises(DataError) as exc:
        convert(params(folder_dir=str(src)), "folder", tmp_path / "data" / "drr")
    assert "grayscale" in assert_one_line(exc, "img003.png")
    assert_no_dataset(tmp_path / "data" / "drr")


# ---------------------------------------------------------------------------------------------------------------------
# Canonical datasets.
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path) -> Path:
    src = write_folder(tmp_path / "plain")
    out = tmp_path / "data" / "drr"
    convert(params(folder_dir=str(src)), "folder", out)
    return out


def _edit_manifest(ds: Path, edit) -> None:
    df = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    edit(df)
    df.to_csv(ds / "manifest.csv", index=False)


def test_manifest_duplicate_ids(dataset):
    _edit_manifest(dataset, lambda df: df.__setitem__("id", [df["id"].iloc[0]] * len(df)))
    with pytest.raises(DataError) as exc:
        read_manifest(dataset)
    assert "duplicate id" in assert_one_line(exc, "manifest.csv")


def test_manifest_path_escaping_the_dataset(dataset):
    outside = dataset.parent / "outside.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(outside)

    def edit(df):
        df.loc[0, "image"] = "../outside.png"
    _edit_manifest(dataset, edit)
    with pytest.raises(DataError) as exc:
        read_manifest(dataset)
    assert "escapes" in assert_one_line(exc, "../outside.png")


def test_manifest_missing_column_unknown_split_and_missing_file(dataset):
    patient_ids = pd.read_csv(dataset / "manifest.csv", dtype=str)["patient_id"]
    _edit_manifest(dataset, lambda df: df.pop("patient_id"))
    with pytest.raises(DataError) as exc:
        read_manifest(dataset)
    assert "'patient_id'" in assert_one_line(exc, "manifest.csv")

    _edit_manifest(dataset, lambda df: df.insert(3, "patient_id", patient_ids))
    read_manifest(dataset)

    def bad_split(df):
        df.loc[1, "split"] = "training"
    _edit_manifest(dataset, bad_split)
    with pytest.raises(DataError) as exc:
        read_manifest(dataset)
    assert "'training'" in assert_one_line(exc, "manifest.csv")

    _edit_manifest(dataset, lambda df: df.__setitem__("split", "train"))
    (dataset / "images" / "img001.png").unlink()
    with pytest.raises(DataError) as exc:
        read_manifest(dataset)
    assert_one_line(exc, "images/img001.png")


def test_rgb_and_corrupt_png_in_a_canonical_dataset(dataset):
    df = read_manifest(dataset)
    path = dataset / df["image"].iloc[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(path)
    with pytest.raises(DataError) as exc:
        load_images(dataset, df)
    assert "grayscale" in assert_one_line(exc, str(path))
    path.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as exc:
        load_images(dataset, df)
    assert "corrupt" in assert_one_line(exc, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Atomic writing.
# ---------------------------------------------------------------------------------------------------------------------
def test_failed_rebuild_keeps_the_previous_dataset(dataset, tmp_path):
    before = {f: f.read_bytes() for f in dataset.rglob("*") if f.is_file()}
    src = write_folder(tmp_path / "plain2")
    (src / "images" / "img003.png").write_bytes(b"broken")
    with pytest.raises(DataError):
        convert(params(folder_dir=str(src)), "folder", dataset)
    after = {f: f.read_bytes() for f in dataset.rglob("*") if f.is_file()}
    assert before == after
    assert not list(dataset.parent.glob(".drr.*"))


def test_stale_partial_folder_of_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / ".drr.partial-999999"
    (stale / "images").mkdir(parents=True)
    with DatasetWriter(tmp_path / "drr") as w:
        image = w.png("images", "a.png", np.zeros((4, 4), np.uint8))
        from pipeline.data.canonical import empty_row

        w.add_row(empty_row(id="a", split="test", domain="normal", patient_id="a", image=image))
    assert not stale.exists() and (tmp_path / "drr" / "manifest.csv").is_file()


def test_sigterm_during_a_write_leaves_nothing(tmp_path):
    script = (
        "import sys, time, numpy as np\n"
        "from pathlib import Path\n"
        "from pipeline.data.canonical import DatasetWriter\n"
        "with DatasetWriter(Path(sys.argv[1])) as w:\n"
        "    w.png('images', 'a.png', np.zeros((4, 4), np.uint8))\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n")
    target = tmp_path / "drr"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONPATH": str(
                                Path(__file__).resolve().parent.parent)})
    assert proc.stdout.readline().strip() == "writing"
    assert list(tmp_path.glob(".drr.partial-*"))  # the write is under way in the hidden folder
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    time.sleep(0.1)
    assert_no_dataset(target)
