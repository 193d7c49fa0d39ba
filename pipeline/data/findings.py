"""Findings inserted in 3D into one virtual patient's ray-space CT (see render.py), with radiologically plausible HU.

Every inserter edits `hu` (float32 (K, R, R), modified in place) inside the right compartment given by the labels
(a lobe, one hemithorax, both lungs, the heart) and returns its support: the voxels that now belong to the finding
(bool, same shape). Opacity-type findings raise lung density (normal aerated lung is about -850 HU):
ground glass -550..-250, consolidation / collapse / fluid about 0..+40. Lung labels never change, so the projected
lung field keeps the opacified lung (as an expert draws it).

Shapes are written in the virtual-patient frame (mm): spheres stay spheres, a cone points where it should. Fine
texture comes from smooth random fields (random control grids, trilinear), all from the numpy Generator passed in.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from pipeline.data.ct import HEART, LEFT_LOBES, LLL, LOBES, LUL, RIGHT_LOBES, RLL, RML, RUL
from pipeline.data.render import PatientVolume

Box = tuple[slice, slice, slice]


# ---------------------------------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------------------------------
def _voxel_mm(vol: PatientVolume) -> np.ndarray:
    """(depth, row, column) size of one ray-space voxel in mm (rows/columns: the smallest, nearest the source)."""
    depth = abs(float(vol.xyz[1, 1, 0, 0] - vol.xyz[1, 0, 0, 0])) if vol.xyz.shape[1] > 1 else 1.0
    columns = vol.xyz[0, :, 0, -1] - vol.xyz[0, :, 0, 0]
    lateral = float(columns.min()) / (vol.xyz.shape[3] - 1)
    return np.array([depth, lateral, lateral])


def _box(vol: PatientVolume, centre: tuple[int, int, int], radius_mm: float) -> Box:
    half = np.ceil(radius_mm / _voxel_mm(vol)).astype(int) + 1
    shape = vol.hu.shape
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, shape))


def _bbox(mask: np.ndarray, margin: int = 1) -> Box:
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    return tuple(slice(max(0, a - margin), min(n, b + margin + 1)) for a, b, n in zip(lo, hi, mask.shape))


def _random_voxel(rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int, int]:
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        raise ValueError("finding compartment is empty in this virtual patient")
    return tuple(int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], mask.shape))


def _noise(rng: np.random.Generator, vol: PatientVolume, box: Box, cell_mm: float) -> np.ndarray:
    """Smooth random field over `box`, roughly N(0, 1), correlation length about `cell_mm`."""
    shape = tuple(s.stop - s.start for s in box)
    extent = np.array(shape) * _voxel_mm(vol)
    cells = np.maximum(2, np.ceil(extent / cell_mm).astype(int) + 1)
    coarse = torch.from_numpy(rng.standard_normal(cells).astype(np.float32))[None, None]
    field = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    return field / 0.6  # trilinear interpolation between independent values shrinks the std to about 0.6


def _coords(vol: PatientVolume, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return vol.xyz[0][box], vol.xyz[1][box], vol.xyz[2][box]


def _blend(hu: np.ndarray, box: Box, alpha: np.ndarray, target) -> None:
    region = hu[box]
    region += alpha * (target - region)


def _support(hu_shape, box: Box, local: np.ndarray) -> np.ndarray:
    out = np.zeros(hu_shape, bool)
    out[box] = local
    return out


def _lungs(vol: PatientVolume, lobes=LOBES) -> np.ndarray:
    return vol.lungs if lobes == LOBES else np.isin(vol.labels, lobes)


def _centre_mm(vol: PatientVolume, voxel) -> np.ndarray:
    return vol.xyz[(slice(None), *voxel)].astype(np.float64)


def _side_lobes(rng: np.random.Generator, side: str | None = None):
    side = side or ("right" if rng.random() < 0.5 else "left")
    return side, (RIGHT_LOBES if side == "right" else LEFT_LOBES)


# ---------------------------------------------------------------------------------------------------------------------
# Opacity-type findings.
# ---------------------------------------------------------------------------------------------------------------------
def consolidation(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lobar/segmental airspace consolidation: dense (+15..+40 HU), confined to one lobe (stops at the fissures)."""
    lobe = int(rng.choice(LOBES, p=[0.15, 0.25, 0.15, 0.15, 0.30]))
    seed = _random_voxel(rng, vol.labels == lobe)
    r = rng.uniform(25, 45)
    box = _box(vol, seed, 1.6 * r)
    x, y, z = _coords(vol, box)
    c = _centre_mm(vol, seed)
    axes = rng.uniform(0.75, 1.3, 3)
    d = np.sqrt(((x - c[0]) / axes[0]) ** 2 + ((y - c[1]) / axes[1]) ** 2 + ((z - c[2]) / axes[2]) ** 2) / r
    alpha = np.clip(2.5 * (1 - d) + 0.6 * _noise(rng, vol, box, 15.0), 0, 1) * (vol.labels[box] == lobe)
    _blend(hu, box, alpha, rng.uniform(15, 40))
    return _support(hu.shape, box, alpha >= 0.5)


def pneumonia(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bronchopneumonia: 1-3 fluffy, ill-defined foci (-200..+20 HU), lower-lobe predominant, one or both lungs."""
    support = np.zeros(hu.shape, bool)
    lungs = _lungs(vol)
    for _ in range(int(rng.integers(1, 4))):
        lobe = int(rng.choice(LOBES, p=[0.1, 0.35, 0.1, 0.1, 0.35]))
        seed = _random_voxel(rng, vol.labels == lobe)
        r = rng.uniform(18, 32)
        box = _box(vol, seed, 1.8 * r)
        x, y, z = _coords(vol, box)
        c = _centre_mm(vol, seed)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r
        fluffy = 0.5 * _noise(rng, vol, box, 14.0) + 0.4 * _noise(rng, vol, box, 7.0)
        alpha = np.clip(1.8 * (1 - d) + fluffy, 0, 1) * lungs[box]
        _blend(hu, box, alpha, rng.uniform(-200, 20))
        support[box] |= alpha >= 0.5
    return support


def infiltration(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patchy ground-glass / reticulonodular infiltrates (-550..-250 HU), 1-3 patches."""
    support = np.zeros(hu.shape, bool)
    lungs = _lungs(vol)
    for _ in range(int(rng.integers(1, 4))):
        seed = _random_voxel(rng, lungs)
        r = rng.uniform(25, 50)
        box = _box(vol, seed, 1.6 * r)
        x, y, z = _coords(vol, box)
        c = _centre_mm(vol, seed)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r
        alpha = np.clip(1.6 * (1 - d) + 0.5 * _noise(rng, vol, box, 6.0), 0, 1) * lungs[box]
        _blend(hu, box, alpha, rng.uniform(-550, -250))
        support[box] |= alpha >= 0.5
    return support


def _hilum(vol: PatientVolume, lobes) -> np.ndarray:
    """A hilum point (mm) of the lung made of `lobes`: medial quarter, just above mid-height."""
    mask = _lungs(vol, lobes)
    x, y, z = (vol.xyz[i][mask] for i in range(3))
    right = lobes == RIGHT_LOBES
    lo, hi = np.percentile(x, [3, 97])
    hx = hi - 0.25 * (hi - lo) if right else lo + 0.25 * (hi - lo)
    return np.array([hx, np.median(y), np.percentile(z, 58)])


def edema(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pulmonary (cardiogenic) edema: bilateral perihilar 'bat-wing' ground glass/airspace (-450..-200 HU) fading to
    the periphery, more at the bases."""
    lungs = _lungs(vol)
    box = _bbox(lungs)
    x, y, z = _coords(vol, box)
    sigma = rng.uniform(38, 55)
    near = np.zeros(x.shape, np.float32)
    for lobes in (RIGHT_LOBES, LEFT_LOBES):
        h = _hilum(vol, lobes)
        d2 = (x - h[0]) ** 2 + ((y - h[1]) / 1.2) ** 2 + ((z - h[2]) / 1.4) ** 2
        near = np.maximum(near, np.exp(-d2 / (2 * sigma ** 2)))
    zl = z[lungs[box]]
    basal = np.clip((np.percentile(zl, 60) - z) / (np.percentile(zl, 60) - zl.min() + 1e-6), 0, 1)
    severity = rng.uniform(0.8, 1.3)
    alpha = np.clip(severity * (near + 0.25 * basal) + 0.2 * _noise(rng, vol, box, 20.0) - 0.2, 0, 1) * lungs[box]
    _blend(hu, box, alpha, rng.uniform(-450, -200))
    return _support(hu.shape, box, alpha >= 0.5)


def effusion(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pleural effusion (upright): fluid (+5..+20 HU) filling the lowest part of one hemithorax (both in 20%) up to a
    level, with a meniscus rising laterally; blunts the costophrenic angle and effaces the hemidiaphragm."""
    support = np.zeros(hu.shape, bool)
    sides = ["right", "left"] if rng.random() < 0.2 else [_side_lobes(rng)[0]]
    for side in sides:
        mask = _lungs(vol, RIGHT_LOBES if side == "right" else LEFT_LOBES)
        box = _bbox(mask)
        x, y, z = _coords(vol, box)
        xs, zs = x[mask[box]], z[mask[box]]
        floor = np.percentile(zs, 0.5)
        lateral, medial = (np.percentile(xs, 2), np.percentile(xs, 90)) if side == "right" else \
            (np.percentile(xs, 98), np.percentile(xs, 10))
        height = rng.uniform(25, 70)
        # the fluid climbs the lateral and posterior chest walls (a meniscus concave upwards); the soft top gives
        # the gradual upward fading of the density seen on a frontal film
        yl = y[mask[box]]
        lateral_rise = rng.uniform(15, 40) * np.clip((x - medial) / (lateral - medial), 0, 1) ** 2
        posterior_rise = rng.uniform(5, 20) * np.clip((yl.max() - y) / (yl.max() - yl.min() + 1e-6), 0, 1) ** 2
        level = floor + height + lateral_rise + posterior_rise
        alpha = np.clip((level - z) / 10.0 + 0.5, 0, 1) * mask[box]
        _blend(hu, box, alpha, rng.uniform(5, 20))
        support[box] |= alpha >= 0.5
    return support


def atelectasis(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atelectasis: either a plate-like (discoid) band of partly collapsed lung (-250..-50 HU; a shallow, irregular
    disc in a lower lobe or the middle lobe), or a triangular segmental collapse pointing to the hilum (soft-tissue
    dense, 0..+40 HU)."""
    if rng.random() < 0.5:  # plate-like
        lobe = int(rng.choice([LLL, RLL, RML], p=[0.4, 0.4, 0.2]))
        mask = vol.labels == lobe
        zs = vol.xyz[2][mask]
        seed = _random_voxel(rng, mask & (vol.xyz[2] < np.percentile(zs, 60)))
        extent, thickness = rng.uniform(25, 45), rng.uniform(8, 14)
        box = _box(vol, seed, extent)
        x, y, z = _coords(vol, box)
        c = _centre_mm(vol, seed)
        tilt = np.deg2rad(rng.uniform(-20, 20))
        normal = np.array([np.sin(tilt), 0.0, np.cos(tilt)])
        off = [x - c[0], y - c[1], z - c[2]]
        along = off[0] * normal[0] + off[2] * normal[2]
        radial = np.sqrt(np.maximum(off[0] ** 2 + off[1] ** 2 + off[2] ** 2 - along ** 2, 0))
        along = along - 0.004 * rng.uniform(-1, 1) * radial ** 2  # a shallow bowl, not a flat plate
        local = thickness / 2 * (1 + 0.35 * _noise(rng, vol, box, 10.0))  # irregular thickness
        alpha = (np.clip((local - np.abs(along)) / 2 + 0.5, 0, 1)
                 * np.clip((extent - radial) / 8 + 0.5, 0, 1) * (vol.labels[box] == lobe))
        _blend(hu, box, alpha, rng.uniform(-250, -50))  # partly collapsed lung: subsegmental, not solid
        return _support(hu.shape, box, alpha >= 0.5)
    # segmental collapse: a cone from the hilum towards the periphery of one lobe
    lobe = int(rng.choice(LOBES, p=[0.2, 0.25, 0.2, 0.1, 0.25]))
    apex = _hilum(vol, LEFT_LOBES if lobe in LEFT_LOBES else RIGHT_LOBES)
    mask = vol.labels == lobe
    axis = _centre_mm(vol, _random_voxel(rng, mask)) - apex
    axis[1] *= 0.3  # mostly in the coronal plane: seen as a triangle, not end-on
    length = np.linalg.norm(axis) * rng.uniform(1.0, 1.3)
    axis /= np.linalg.norm(axis) + 1e-9
    half_angle = np.deg2rad(rng.uniform(12, 20))
    box = _bbox(mask)
    x, y, z = _coords(vol, box)
    off = [x - apex[0], y - apex[1], z - apex[2]]
    along = off[0] * axis[0] + off[1] * axis[1] + off[2] * axis[2]
    perp = np.sqrt(np.maximum(off[0] ** 2 + off[1] ** 2 + off[2] ** 2 - along ** 2, 0))
    alpha = (np.clip((along * np.tan(half_angle) - perp) / 3 + 0.5, 0, 1)
             * np.clip((length - along) / 5 + 0.5, 0, 1) * (along > 0) * mask[box])
    _blend(hu, box, alpha, rng.uniform(0, 40))
    return _support(hu.shape, box, alpha >= 0.5)


# ---------------------------------------------------------------------------------------------------------------------
# Other NIH-14 findings.
# ---------------------------------------------------------------------------------------------------------------------
def cardiomegaly(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Enlarged cardiac silhouette: the heart scaled up about a pivot near its upper right border (so it widens to
    the left and grows down, as left-ventricular enlargement does); the new volume (lung or fat it displaces, never
    bone) becomes blood/myocardium (+35..+50 HU). The heart label is smoothed before scaling (no voxel steps)."""
    heart = vol.labels == HEART
    if not heart.any():
        return np.zeros(hu.shape, bool)
    idx = np.argwhere(heart)
    lo, hi = idx.min(0), idx.max(0)
    pivot = lo + (hi - lo) * np.array([0.5, 0.15, 0.3])  # (depth, rows, columns): top, patient's right
    s = np.array([rng.uniform(1.0, 1.1), rng.uniform(1.1, 1.2), rng.uniform(1.3, 1.5)])
    reach_lo = np.floor(pivot - (pivot - lo) * s).astype(int) - 2
    reach_hi = np.ceil(pivot + (hi - pivot) * s).astype(int) + 2
    box = tuple(slice(max(0, a), min(n, b + 1)) for a, b, n in zip(reach_lo, reach_hi, hu.shape))
    smooth = ndi.gaussian_filter(heart.astype(np.float32), 1.5 * _voxel_mm(vol).min() / _voxel_mm(vol))
    grids = np.meshgrid(*[np.arange(b.start, b.stop, dtype=np.float32) for b in box], indexing="ij")
    src = np.stack([pivot[a] + (grids[a] - pivot[a]) / s[a] for a in range(3)])
    grown = (ndi.map_coordinates(smooth, src, order=1, mode="constant") > 0.5) & ~heart[box] & (hu[box] < 150)
    _blend(hu, box, grown.astype(np.float32), rng.uniform(35, 50))
    return _support(hu.shape, box, grown)


def _inside_lungs_seed(vol, rng, lungs, r, min_fraction, lobes=LOBES):
    for _ in range(30):
        seed = _random_voxel(rng, np.isin(vol.labels, lobes))
        box = _box(vol, seed, r)
        x, y, z = _coords(vol, box)
        c = _centre_mm(vol, seed)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        ball = d <= r
        if lungs[box][ball].mean() >= min_fraction:
            return seed, box, d
    return seed, box, d


def nodule(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Solitary pulmonary nodule: a sharp sphere of 8-20 mm diameter, soft tissue (+20..+60 HU; calcified +300 in
    15%), fully inside the lung."""
    lungs = _lungs(vol)
    r = rng.uniform(4, 10)
    seed, box, d = _inside_lungs_seed(vol, rng, lungs, r + 3, 0.97)
    alpha = np.clip((r - d) / 1.5 + 0.5, 0, 1)
    _blend(hu, box, alpha, 300.0 if rng.random() < 0.15 else rng.uniform(20, 60))
    return _support(hu.shape, box, alpha >= 0.5)


def mass(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lung mass: lobulated soft-tissue lesion of 35-65 mm (+25..+50 HU), upper lobes or perihilar."""
    lungs = _lungs(vol)
    r = rng.uniform(17, 32)
    seed, box, d = _inside_lungs_seed(vol, rng, lungs, r, 0.85, lobes=(LUL, RUL, LLL, RLL))
    lobulated = r * (1 + 0.12 * _noise(rng, vol, box, 12.0))
    alpha = np.clip((lobulated - d) / 2.0 + 0.5, 0, 1) * lungs[box]
    _blend(hu, box, alpha, rng.uniform(25, 50))
    return _support(hu.shape, box, alpha >= 0.5)


def pneumothorax(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pneumothorax: a rim of pleural air (-1000 HU, no lung markings) along the lateral and apical pleura of one
    lung, widest at the apex, with the visceral pleural line (a thin denser shell) at the collapsed lung edge."""
    side, lobes = _side_lobes(rng)
    mask = _lungs(vol, lobes)
    has = mask.any(axis=2)
    if side == "right":  # the lateral edge of the right lung is its smallest column
        edge = np.argmax(mask, axis=2)
        cols = np.arange(mask.shape[2])[None, None, :] - edge[..., None]
    else:
        edge = mask.shape[2] - 1 - np.argmax(mask[..., ::-1], axis=2)
        cols = edge[..., None] - np.arange(mask.shape[2])[None, None, :]
    shrink = (vol.xyz[0][:, :, -1] - vol.xyz[0][:, :, 0]) / (mask.shape[2] - 1)  # mm per column at each depth
    dist = cols * shrink[..., None]  # mm from the lateral pleura along the row
    z = vol.xyz[2]
    zs = z[mask]
    z_mid, z_top = np.percentile(zs, 50), zs.max()
    rim = rng.uniform(15, 40)
    width = rim * (1 + 1.5 * np.clip((z - z_mid) / (z_top - z_mid), 0, 1))
    air = mask & has[..., None] & ((dist < width) | (z > z_top - 1.2 * rim))
    line = mask & ~air & (dist < width + 2.5) & (z <= z_top - 1.2 * rim)
    hu[air] = -1000.0
    hu[line] += 0.5 * (-100.0 - hu[line])
    return air | line


def emphysema(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Emphysema: hyperlucent lungs (-40..-90 HU below normal, upper-zone predominant) with 1-3 apical bullae."""
    lungs = _lungs(vol)
    box = _bbox(lungs)
    z = vol.xyz[2][box]
    zl = z[lungs[box]]
    upper = np.clip(0.4 + 0.6 * (z - zl.min()) / (zl.max() - zl.min()), 0, 1)
    drop = rng.uniform(40, 90) * upper * lungs[box]
    region = hu[box]
    region -= drop
    np.maximum(region, -1000.0, out=region)
    support = _support(hu.shape, box, drop > 20)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(10, 22)
        seed, bbox, d = _inside_lungs_seed(vol, rng, lungs, r, 0.9, lobes=(LUL, RUL))
        alpha = np.clip((r - d) / 1.5 + 0.5, 0, 1) * lungs[bbox]
        _blend(hu, bbox, alpha, -1000.0)
        support[bbox] |= alpha >= 0.5
    return support


# ---------------------------------------------------------------------------------------------------------------------
# The ARDS-like pattern (evaluation set only).
# ---------------------------------------------------------------------------------------------------------------------
def ards(vol: PatientVolume, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ARDS: bilateral diffuse opacities over most of both lungs, ground glass grading into dependent (posterior,
    the patient lies supine) consolidation, patchy and asymmetric (-450..-20 HU)."""
    lungs = _lungs(vol)
    box = _bbox(lungs)
    y = vol.xyz[1][box]
    yl = y[lungs[box]]
    dependent = np.clip((yl.max() - y) / (yl.max() - yl.min()), 0, 1)  # 1 at the back
    coarse, fine = _noise(rng, vol, box, 35.0), _noise(rng, vol, box, 10.0)
    severity = rng.uniform(0.6, 1.2)
    alpha = np.clip(severity * (0.4 + 0.45 * dependent + 0.35 * coarse), 0, 1) * lungs[box]
    target = -450.0 + 430.0 * np.clip(0.55 * dependent + 0.25 * fine + 0.25, 0, 1)
    _blend(hu, box, alpha, target)
    return _support(hu.shape, box, alpha >= 0.5)


INSERTERS = {
    "Atelectasis": atelectasis, "Consolidation": consolidation, "Edema": edema, "Effusion": effusion,
    "Infiltration": infiltration, "Pneumonia": pneumonia, "Cardiomegaly": cardiomegaly, "Nodule": nodule,
    "Mass": mass, "Pneumothorax": pneumothorax, "Emphysema": emphysema, "ARDS": ards,
}
OTHER_FINDINGS = ("Cardiomegaly", "Nodule", "Mass", "Pneumothorax", "Emphysema")
# NIH-14 labels a finding sets (ARDS: bilateral airspace + interstitial opacities of non-cardiogenic edema)
LABELS_OF = {name: (name,) for name in INSERTERS}
LABELS_OF["ARDS"] = ("Consolidation", "Edema", "Infiltration")
