"""Real-data adapters on small fixtures written in the real formats (DICOM via pydicom, raw big-endian JSRT .IMG,
SCR GIF masks, MIMIC-CXR-JPG tree + CSVs, Montgomery / Shenzhen PNG layouts, a plain folder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.canonical import DataError, load_images, load_masks, read_boxes, read_manifest
from pipeline.data.params import DataParams

RES = 32


# ---------------------------------------------------------------------------------------------------------------------
# Fixture writers (also used by test_data_bad_input.py).
# ---------------------------------------------------------------------------------------------------------------------
def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                window: tuple[float, float] | None = None, view: str = "PA",
                uid: str = "1.2.826.0.1.3680043.2.1") -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    allocated = 8 if pixels.dtype == np.uint8 else 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography image storage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.PatientID, ds.Modality, ds.ViewPosition = path.stem, "CR", view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored = allocated, bits_stored or allocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint8 if allocated == 8 else "<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def blocks(values: np.ndarray, size: int = 64) -> np.ndarray:
    """An image made of constant blocks (so area-resizing to RES is exact): values (k, k) -> (size, size)."""
    k = values.shape[0]
    return np.kron(values, np.ones((size // k, size // k), values.dtype))


def write_rsna(root: Path) -> Path:
    grid = np.arange(16, dtype=np.uint16).reshape(4, 4)
    write_dicom(root / "stage_2_train_images" / "pid-normal.dcm", blocks((grid * 16).astype(np.uint8)),
                uid="1.2.826.0.1.3680043.2.1.1")
    # 16-bit words holding 12-bit values, MONOCHROME1 (large = dark), with a VOI window 0..4096
    write_dicom(root / "stage_2_train_images" / "pid-opacity.dcm", blocks(grid * 256), "MONOCHROME1", 12,
                window=(2048.0, 4096.0), view="AP", uid="1.2.826.0.1.3680043.2.1.2")
    write_dicom(root / "stage_2_train_images" / "pid-notnormal.dcm", blocks(grid * 200), "MONOCHROME2", 12,
                uid="1.2.826.0.1.3680043.2.1.3")
    pd.DataFrame([["pid-normal", "", "", "", "", 0], ["pid-opacity", 8, 16, 16, 8, 1],
                  ["pid-opacity", 40, 40, 8, 16, 1], ["pid-notnormal", "", "", "", "", 0]],
                 columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame([["pid-normal", "Normal"], ["pid-opacity", "Lung Opacity"], ["pid-opacity", "Lung Opacity"],
                  ["pid-notnormal", "No Lung Opacity / Not Normal"]], columns=["patientId", "class"]).to_csv(
        root / "stage_2_detailed_class_info.csv", index=False)
    return root


CHEXPERT = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices"]


def write_mimic(root: Path) -> Path:
    rows = [("d1", "10000001", "50000001", "PA"), ("d2", "10000001", "50000001", "LATERAL"),
            ("d3", "10000001", "50000002", "AP"), ("d4", "10000002", "50000003", "PA"),
            ("d5", "11000003", "50000004", "PA")]
    for i, (dicom, subject, study, _) in enumerate(rows):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 40), 40 * i + 20, np.uint8), "L").save(folder / f"{dicom}.jpg", quality=95)
    pd.DataFrame([dict(dicom_id=d, subject_id=s, study_id=st, PerformedProcedureStepDescription="CHEST (PA AND LAT)",
                       ViewPosition=v, Rows=48, Columns=40, StudyDate=21800506, StudyTime=213014.531)
                  for d, s, st, v in rows]).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    chex = pd.DataFrame([{"subject_id": s, "study_id": st, **{c: "" for c in CHEXPERT}}
                         for s, st in [("10000001", "50000001"), ("10000001", "50000002"), ("10000002", "50000003"),
                                       ("11000003", "50000004")]])
    chex.loc[0, "Pleural Effusion"] = "1.0"
    chex.loc[0, "Cardiomegaly"] = "-1.0"
    chex.loc[1, "No Finding"] = "1.0"
    chex.loc[2, "Edema"] = "-1.0"
    chex.loc[3, "No Finding"] = "1.0"
    chex.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame([dict(dicom_id=d, study_id=st, subject_id=s,
                       split={"10000001": "train", "10000002": "validate", "11000003": "test"}[s])
                  for d, s, st, _ in rows]).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    return root


def write_jsrt(root: Path, scr: Path | None = None) -> Path:
    raw = np.zeros((2048, 2048), ">u2")
    raw[:1024] = 4095  # film density: top half black, bottom half white after conversion
    raw[:, 1024:1088] = 2048  # exactly output column 16 at 32 px
    root.mkdir(parents=True, exist_ok=True)
    raw.tofile(root / "JPCLN001.IMG")
    if scr is not None:
        for side, cols in (("left lung", slice(600, 900)), ("right lung", slice(124, 424))):
            mask = np.zeros((1024, 1024), np.uint8)
            mask[200:800, cols] = 255
            (scr / "masks" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, "L").save(scr / "masks" / side / "JPCLN001.gif")
    return root


def write_tb_set(root: Path, name: str) -> Path:
    prefix = "MCUCXR" if name == "montgomery" else "CHNCXR"
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    for i, tb in ((1, 0), (2, 1)):
        stem = f"{prefix}_{i:04d}_{tb}"
        img = np.full((96, 80), 100 + 50 * tb, np.uint8)
        if name == "shenzhen" and tb == 0:  # Shenzhen ships some grayscale images as RGB: equal channels are fine
            Image.fromarray(np.stack([img] * 3, -1), "RGB").save(root / "CXR_png" / f"{stem}.png")
        else:
            Image.fromarray(img, "L").save(root / "CXR_png" / f"{stem}.png")
        left, right = np.zeros((96, 80), np.uint8), np.zeros((96, 80), np.uint8)
        left[20:80, 44:70], right[20:80, 10:36] = 255, 255
        if name == "montgomery":
            for side, m in (("leftMask", left), ("rightMask", right)):
                (root / "ManualMask" / side).mkdir(parents=True, exist_ok=True)
                Image.fromarray(m, "L").save(root / "ManualMask" / side / f"{stem}.png")
        elif tb == 0:  # Shenzhen masks exist for part of the set only
            (root / "mask").mkdir(exist_ok=True)
            Image.fromarray(left | right, "L").save(root / "mask" / f"{stem}_mask.png")
    return root


def write_folder(root: Path, n_patients: int = 2) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "opacity_masks").mkdir()
    rows = []
    for i in range(2 * n_patients):
        name = f"img{i:03d}"
        Image.fromarray(np.full((64, 64), 10 * i, np.uint8), "L").save(root / "images" / f"{name}.png")
        lung = np.zeros((64, 64), np.uint8)
        lung[8:56, 8:56] = 255
        Image.fromarray(lung, "L").save(root / "masks" / f"{name}.png")
        domain = "opacity" if i % 2 == 0 else "normal"
        if domain == "opacity":
            opacity = np.zeros((64, 64), np.uint8)
            opacity[16:24, 16:32] = 255
            opacity[40:48, 40:48] = 255
            Image.fromarray(opacity, "L").save(root / "opacity_masks" / f"{name}.png")
        rows.append(dict(image=f"{name}.png", domain=domain, patient_id=f"pat{i // 2}",
                         Pneumonia=int(domain == "opacity"), label_Effusion=0))
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def params(**values) -> DataParams:
    return DataParams(resolution=RES, **values)


# ---------------------------------------------------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------------------------------------------------
def test_rsna_dicom_monochrome1_16bit_boxes_and_classes(tmp_path):
    from pipeline.data.adapters import write_source

    src = write_rsna(tmp_path / "rsna")
    out = tmp_path / "data" / "drr"
    write_source(params(rsna_dir=str(src), val_fraction=0.0, test_fraction=0.0), "rsna", out)
    df = read_manifest(out).set_index("id")
    assert set(df.index) == {"rsna-pid-normal", "rsna-pid-opacity"}  # 'Not Normal' excluded by default
    assert df.loc["rsna-pid-opacity", "domain"] == "opacity" and df.loc["rsna-pid-normal", "domain"] == "normal"
    assert df.loc["rsna-pid-opacity", "view"] == "AP" and df.loc["rsna-pid-opacity", "label_Pneumonia"] == 1
    # MONOCHROME1 with the window 0..4096: gray = 1 - value / 4096, value = 256 * block index (4x4 blocks)
    img = load_images(out, df.loc[["rsna-pid-opacity"]].reset_index())[0]
    expected = np.kron(np.round(255 * (1 - np.arange(16).reshape(4, 4) * 256 / 4096)), np.ones((8, 8)))
    assert np.abs(img.astype(int) - expected).max() <= 1
    assert img[0, 0] == 255 and img[-1, -1] < img[0, 0]  # low stored value = bright after inversion
    # 8-bit MONOCHROME2 without a window: kept as stored
    normal = load_images(out, df.loc[["rsna-pid-normal"]].reset_index())[0]
    assert np.abs(normal.astype(int) - np.kron(np.arange(16).reshape(4, 4) * 16, np.ones((8, 8)))).max() <= 1
    # boxes: (x, y, w, h) = (8, 16, 16, 8) and (40, 40, 8, 16) on 64 px
    boxes = read_boxes(out / df.loc["rsna-pid-opacity", "boxes"])
    np.testing.assert_allclose(boxes, [[0, 16 / 64, 20 / 64, 16 / 64, 8 / 64], [0, 44 / 64, 48 / 64, 8 / 64, 16 / 64]],
                               atol=1e-5)
    mask = load_masks(out, df.loc[["rsna-pid-opacity"]].reset_index(), "opacity_mask")[0]
    expected_mask = np.zeros((RES, RES), bool)
    expected_mask[8:12, 4:12] = True
    expected_mask[20:28, 20:24] = True
    assert (mask == expected_mask).all()
    assert not load_masks(out, df.loc[["rsna-pid-normal"]].reset_index(), "opacity_mask").any()
    assert df.loc["rsna-pid-normal", "lung_mask"] == ""  # RSNA has no lung masks

    write_source(params(rsna_dir=str(src), rsna_not_normal="normal"), "rsna", out)
    df = read_manifest(out).set_index("id")
    assert df.loc["rsna-pid-notnormal", "domain"] == "normal"
    notnormal = load_images(out, df.loc[["rsna-pid-notnormal"]].reset_index())[0]
    assert notnormal.min() <= 1 and notnormal.max() >= 254  # 12-bit without a window: its own range


def test_mimic_views_policies_split_and_ards(tmp_path):
    from pipeline.data.adapters import write_mimic_ards, write_source

    src = write_mimic(tmp_path / "mimic")
    out = tmp_path / "data" / "drr"
    write_source(params(mimic_dir=str(src)), "mimic", out)
    df = read_manifest(out).set_index("id")
    # LATERAL filtered out; d4 (Edema uncertain, No Finding blank): U-zeros -> neither opacity nor normal -> left out
    assert set(df.index) == {"mimic-d1", "mimic-d3", "mimic-d5"}
    assert df.loc["mimic-d1", "domain"] == "opacity" and df.loc["mimic-d1", "label_Effusion"] == 1
    assert df.loc["mimic-d1", "label_Cardiomegaly"] == 0  # -1 -> 0 under U-zeros
    assert df.loc["mimic-d3", "domain"] == "normal" and df.loc["mimic-d3", "view"] == "AP"
    assert (df.loc["mimic-d1", "split"], df.loc["mimic-d5", "split"]) == ("train", "test")
    write_source(params(mimic_dir=str(src), mimic_uncertain="positive", mimic_views=["PA"]), "mimic", out)
    df = read_manifest(out).set_index("id")
    assert set(df.index) == {"mimic-d1", "mimic-d4", "mimic-d5"}  # AP dropped, d4 now Edema-positive
    assert df.loc["mimic-d4", "domain"] == "opacity" and df.loc["mimic-d4", "split"] == "val"
    assert df.loc["mimic-d1", "label_Cardiomegaly"] == 1
    write_source(params(mimic_dir=str(src), mimic_uncertain="exclude"), "mimic", out)
    assert set(read_manifest(out)["id"]) == {"mimic-d3", "mimic-d5"}  # d1 had a -1 (Cardiomegaly)

    (tmp_path / "ards_masks").mkdir()
    mask = np.zeros((48, 40), np.uint8)
    mask[10:40, 5:35] = 255
    Image.fromarray(mask, "L").save(tmp_path / "ards_masks" / "d4.png")
    pd.DataFrame({"study_id": ["s50000003"]}).to_csv(tmp_path / "ards.csv", index=False)
    ards = tmp_path / "data" / "ards-like"
    write_mimic_ards(params(mimic_dir=str(src), mimic_ards_studies=str(tmp_path / "ards.csv"),
                            mimic_ards_masks=str(tmp_path / "ards_masks")), ards)
    df = read_manifest(ards)
    assert list(df["id"]) == ["mimic-d4"] and df["split"].tolist() == ["test"] and df["domain"].tolist() == ["opacity"]
    lung = load_masks(ards, df, "lung_mask")[0]
    assert 0.4 < lung.mean() < 0.7
    # a listed study that has no image here is not dropped without a word
    pd.DataFrame({"study_id": ["s50000003", "s59999999"]}).to_csv(tmp_path / "ards.csv", index=False)
    with pytest.raises(DataError, match=r"ards.csv: 1 listed study/image id\(s\) without a usable image \(s59999999\)"):
        write_mimic_ards(params(mimic_dir=str(src), mimic_ards_studies=str(tmp_path / "ards.csv"),
                                mimic_ards_masks=str(tmp_path / "ards_masks")), ards)
    assert list(read_manifest(ards)["id"]) == ["mimic-d4"]  # the earlier set is untouched


def test_jsrt_raw_big_endian_and_scr_masks(tmp_path):
    from pipeline.data.adapters import write_source

    src = write_jsrt(tmp_path / "jsrt", scr=tmp_path / "scr")
    out = tmp_path / "data" / "jsrt-like"
    write_source(params(jsrt_dir=str(src), scr_dir=str(tmp_path / "scr")), "jsrt", out, eval_only=True)
    df = read_manifest(out)
    assert df["id"].tolist() == ["jsrt-JPCLN001"] and df["label_Nodule"].tolist() == [1]
    assert df["split"].tolist() == ["test"] and df["domain"].tolist() == ["normal"]
    img = load_images(out, df)[0]
    assert (img[:16, :14] == 0).all() and (img[16:, :14] == 255).all()  # 4095 -> black, 0 -> white
    assert abs(int(img[20, 16]) - round(255 * (1 - 2048 / 4095))) <= 1
    lung = load_masks(out, df, "lung_mask")[0]
    expected = np.zeros((RES, RES), bool)
    expected[6:25, 4:13] = expected[6:25, 19:28] = True  # 1024 px SCR masks scaled to 32 px: 32 px per pixel
    assert (lung == expected).mean() > 0.97


@pytest.mark.parametrize("name", ["montgomery", "shenzhen"])
def test_montgomery_shenzhen(tmp_path, name):
    from pipeline.data.adapters import write_source

    src = write_tb_set(tmp_path / name, name)
    out = tmp_path / "data" / "drr"
    write_source(params(**{f"{name}_dir": str(src)}, val_fraction=0.0, test_fraction=0.0), name, out)
    df = read_manifest(out).set_index("id")
    prefix = "MCUCXR" if name == "montgomery" else "CHNCXR"
    normal, tb = f"{name}-{prefix}_0001_0", f"{name}-{prefix}_0002_1"
    assert df.loc[normal, "domain"] == "normal" and df.loc[tb, "domain"] == "opacity"
    lung = load_masks(out, df.loc[[normal]].reset_index(), "lung_mask")[0]
    # two 26x60 rectangles on 80x96, resized to 32x32
    assert abs(lung.mean() - 2 * 26 * 60 / (80 * 96)) < 0.04 and lung[:, :16].any() and lung[:, 16:].any()
    assert (df.loc[tb, "lung_mask"] == "") == (name == "shenzhen")
    write_source(params(**{f"{name}_dir": str(src)}, tb_domain="exclude"), name, out)
    assert list(read_manifest(out)["id"]) == [normal]


def test_plain_folder_labels_masks_boxes_and_patient_splits(tmp_path):
    from pipeline.data.adapters import write_source

    src = write_folder(tmp_path / "plain", n_patients=10)
    out = tmp_path / "data" / "drr"
    write_source(params(folder_dir=str(src), val_fraction=0.2, test_fraction=0.3, seed=3), "folder", out)
    df = read_manifest(out)
    assert len(df) == 20 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    from pipeline.data.adapters import stable_split

    assert all(stable_split(pid, 3, 0.2, 0.3) == split for pid, split in zip(df["patient_id"], df["split"]))
    opacity = df[df["domain"] == "opacity"]
    assert (opacity["label_Pneumonia"] == 1).all() and (df["label_Effusion"] == 0).all()
    boxes = read_boxes(out / opacity["boxes"].iloc[0])
    np.testing.assert_allclose(sorted(boxes.tolist()), [[0, 0.375, 0.3125, 0.25, 0.125], [0, 0.6875, 0.6875, 0.125,
                                                                                         0.125]])
    assert (df.loc[df["domain"] == "normal", "opacity_mask"] == "").all()
    # another seed, another patient assignment; the same seed, the same one
    write_source(params(folder_dir=str(src), val_fraction=0.2, test_fraction=0.3, seed=4), "folder", out)
    assert read_manifest(out)["split"].tolist() != df["split"].tolist()


def test_patient_splits_are_a_function_of_patient_and_seed_only():
    """Fractions hold in expectation (binomial bounds on 20,000 patients, independent of the hash), and a patient
    keeps its split when other patients are added or filtered out (the RSNA rsna_not_normal case)."""
    from pipeline.data.adapters import patient_splits

    patients = [f"p{i}" for i in range(20_000)]
    a = patient_splits(patients * 2, 0, 0.2, 0.3)
    assert sorted(a) == sorted(patients)
    n = len(patients)
    for split, q in (("test", 0.3), ("val", 0.2), ("train", 0.5)):
        count = sum(v == split for v in a.values())
        assert abs(count - q * n) < 4 * (n * q * (1 - q)) ** 0.5, (split, count)
    subset = patient_splits(patients[::7], 0, 0.2, 0.3)  # a filter removes 6 of every 7 patients
    assert all(subset[pid] == a[pid] for pid in subset)
    other = patient_splits(patients, 1, 0.2, 0.3)
    assert sum(other[pid] != a[pid] for pid in patients) > 0.4 * n  # another seed, another assignment


def test_stage_with_a_real_source_writes_all_three_sets(tmp_path):
    """source=folder: data/drr from the folder, ards-like and jsrt-like still rendered; the sheet reads back."""
    from types import SimpleNamespace

    from pipeline.app.data import run_data_stage

    src = write_folder(tmp_path / "plain", n_patients=10)
    p = DataParams(source="folder", folder_dir=str(src), resolution=RES, ards=2, jsrt=2, images_per_patient=2,
                   oversample=2, depth_samples=32, workers=1, threads=1, train_opacity=1, train_normal=1,
                   test_opacity=1, test_normal=1, test_fraction=0.4)
    summary = run_data_stage(SimpleNamespace(data=p), tmp_path / "data", log=None)
    assert summary["datasets"]["drr"]["origin"] == "folder" and summary["datasets"]["drr"]["images"] == 20
    # the role sets: segmenters on the folder's normal train images with lung masks, the detector on train/val
    drr = read_manifest(tmp_path / "data" / "drr")
    seg = read_manifest(tmp_path / "data" / "seg-train")
    assert sorted(seg["id"]) == sorted(drr.loc[drr["split"].isin(["train", "val"]) & (drr["domain"] == "normal"),
                                               "id"])
    det = read_manifest(tmp_path / "data" / "det-train")
    assert sorted(det["id"]) == sorted(drr.loc[drr["split"].isin(["train", "val"]), "id"])
    same = tmp_path / "data" / "drr" / seg["image"].iloc[0]
    assert same.stat().st_ino == (tmp_path / "data" / "seg-train" / seg["image"].iloc[0]).stat().st_ino  # linked
    assert summary["datasets"]["ards-like"]["origin"] == "drr" and summary["datasets"]["ards-like"]["images"] == 2
    assert (tmp_path / "reports" / "figures" / "data_samples.png").is_file()
