"""Virtual patients and the frontal radiograph model: warp the template CT once per patient into ray space, then
project (cone-beam ray-sum) and expose like a detector.

Ray space. For a detector of `res` x `res` pixels and a point source at distance SID from it, `PatientVolume` holds
the CT sampled at `n_depth` points along every source-detector ray: hu[k, i, j] is the HU at depth sample k of the
ray hitting detector pixel (row i, column j). A frontal radiograph is then a sum over axis 0, and anything inserted
into `hu` (findings) is projected exactly like the anatomy. Column j grows towards the patient's left (a PA film as
read: patient's right on the viewer's left); row i grows towards the feet.

Virtual patient. The ray points p (virtual-patient frame, mm) are mapped back into the template frame by
    q = c + R^T S^-1 (p - c - t)     rotation R (obliquity, lordosis, in-plane), scaling S = (lateral, AP, SI)
    q += e(p)                         low-frequency elastic displacement (cubic-ish smooth, a few mm)
    q -= w(q) (1 - 1/h) (q - c_heart) heart scaling h, w a Gaussian window around the heart
and the template is sampled there (trilinear for HU, nearest for labels), once per patient.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from pipeline.data.ct import HU_AIR, LOBES, Template

MU_WATER = 0.0195  # linear attenuation of water, 1/mm, at an effective energy of about 70 keV


@dataclass(frozen=True)
class Geometry:
    """Source/detector arrangement. PA: detector at the anterior chest wall, long SID (little magnification).
    AP portable: detector behind the back (bed/cassette gap), short SID: anterior structures (heart) magnified."""

    name: str
    sid_mm: float  # source-to-detector distance
    detector_mm: float  # side of the square detector field
    gap_mm: float  # skin-to-detector distance
    detector_anterior: bool  # True for PA (beam enters the back)


PA = Geometry("PA", sid_mm=1800.0, detector_mm=370.0, gap_mm=20.0, detector_anterior=True)
AP = Geometry("AP", sid_mm=1000.0, detector_mm=370.0, gap_mm=60.0, detector_anterior=False)


@dataclass
class Pose:
    """One virtual patient: the parameters of its deformation of the template."""

    scale: tuple[float, float, float]  # (lateral, AP, SI)
    angles_deg: tuple[float, float, float]  # rotation about x (lordotic tilt), y (in-plane), z (obliquity)
    shift_mm: tuple[float, float]  # (x, z) position of the patient on the detector
    heart_scale: float
    elastic: np.ndarray  # (3, gz, gy, gx) displacement at the control points, mm

    @staticmethod
    def sample(rng: np.random.Generator, portable: bool = False) -> "Pose":
        scale = (rng.uniform(0.9, 1.1), rng.uniform(0.88, 1.12),
                 rng.uniform(0.86, 0.97) if portable else rng.uniform(0.92, 1.08))
        angles = (rng.uniform(3, 10) if portable else rng.uniform(-3, 3), rng.uniform(-3, 3),
                  rng.uniform(-7, 7) if portable else rng.uniform(-4, 4))
        shift = (rng.uniform(-8, 8), rng.uniform(-8, 8) + (12.0 if portable else 0.0))
        return Pose(scale=scale, angles_deg=angles, shift_mm=shift, heart_scale=rng.uniform(0.92, 1.1),
                    elastic=rng.normal(0.0, 4.0, size=(3, 4, 4, 4)).astype(np.float32))


def _rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class PatientVolume:
    """The CT of one virtual patient in ray space (see module docstring)."""

    hu: np.ndarray  # float32 (K, R, R)
    labels: np.ndarray  # uint8 (K, R, R) grouped labels (ct.LUL ... ct.AORTA)
    xyz: np.ndarray  # float32 (3, K, R, R) virtual-patient coordinates (mm) of every sample
    step_mm: np.ndarray  # float32 (R, R) path length represented by one depth sample along each ray
    pixel_mm: float  # detector pixel pitch (mm)
    geometry: Geometry

    @functools.cached_property
    def lungs(self) -> np.ndarray:
        """bool (K, R, R): samples inside any lung lobe."""
        return np.isin(self.labels, LOBES)


def sample_patient(template: Template, pose: Pose, geometry: Geometry, res: int, n_depth: int,
                   device: str = "cpu", coarse_step: int = 4) -> PatientVolume:
    """Warp the template into ray space for one virtual patient (one grid_sample per volume).

    The map ray sample -> template voxel is smooth (perspective and affine parts are bilinear in the detector
    position and depth, the elastic and heart terms vary over centimetres), so it is evaluated on every
    `coarse_step`-th sample of each axis and interpolated trilinearly (exact for the bilinear parts)."""
    dev, f32 = torch.device(device), torch.float32
    sid, fov = geometry.sid_mm, geometry.detector_mm
    # detector plane and ray depths in the virtual-patient frame (y: anterior)
    back, front = (float(b) * pose.scale[1] for b in template.body_y)
    depth = (front - back) * 1.04 + geometry.gap_mm  # from the detector through the whole body
    pixel = fov / res
    zc = -12.0  # detector centre slightly below the lungs' centre: frames apices to costophrenic angles

    def ray_points(k: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """(3, len(k), len(i), len(j)) virtual-patient mm of depth samples k on the rays of pixels (i, j)."""
        t = (k + 0.5) / n_depth * depth  # distance from the detector
        y = (front + geometry.gap_mm - t) if geometry.detector_anterior else (back - geometry.gap_mm + t)
        u = (j + 0.5) * pixel - fov / 2  # column position (mm), + = patient's left
        v = fov / 2 - (i + 0.5) * pixel  # row position (mm), + = superior
        shrink = (sid - t) / sid  # a point at distance t from the detector projects magnified by 1 / shrink
        shape = (len(k), len(i), len(j))
        x_p = (u[None, None, :] * shrink[:, None, None] - pose.shift_mm[0]).expand(shape)
        z_p = (zc + v[None, :, None] * shrink[:, None, None] - pose.shift_mm[1]).expand(shape)
        return torch.stack([x_p, y[:, None, None].expand(shape), z_p])

    def to_template_grid(p: torch.Tensor) -> torch.Tensor:
        """grid_sample coordinates in the template of virtual-patient points p (3, ...)."""
        extra = (None,) * (p.dim() - 1)
        rot = torch.from_numpy(_rotation(pose.angles_deg)).to(dev, f32)
        scale = torch.tensor(pose.scale, dtype=f32, device=dev)[(slice(None), *extra)]
        q = torch.einsum("ij,j...->i...", rot.T, p) / scale
        # elastic displacement: control grid spanning the detector field, trilinear between control points
        lo = torch.tensor([-fov / 2, back - 10.0, zc - fov / 2], dtype=f32, device=dev)[(slice(None), *extra)]
        hi = torch.tensor([fov / 2, front + 10.0, zc + fov / 2], dtype=f32, device=dev)[(slice(None), *extra)]
        g = (2 * (p - lo) / (hi - lo) - 1).permute(1, 2, 3, 0)[None]  # (1, K, R, R, 3)
        field = torch.from_numpy(pose.elastic).to(dev)[None]  # (1, 3, gz, gy, gx)
        q = q + F.grid_sample(field, g, mode="bilinear", padding_mode="border", align_corners=True)[0]
        # heart scaling around the template heart centre
        c_heart = torch.tensor(template.heart_centre, dtype=f32, device=dev)[(slice(None), *extra)]
        w = torch.exp(((q - c_heart) ** 2).sum(0) * (-1 / (2 * 55.0 ** 2)))
        q = q - (w * (1 - 1 / pose.heart_scale)) * (q - c_heart)
        # template mm -> [-1, 1] (align_corners=True: -1 and 1 are the first and last voxel centres)
        lo_t, hi_t = (torch.tensor(a, dtype=f32, device=dev)[(slice(None), *extra)] for a in template.extent())
        return 2 * (q - lo_t) / (hi_t - lo_t) - 1

    def coarse(n: int) -> torch.Tensor:
        return torch.linspace(0, n - 1, max(2, -(-(n - 1) // coarse_step) + 1), dtype=f32, device=dev)

    grid = to_template_grid(ray_points(coarse(n_depth), coarse(res), coarse(res)))
    grid = F.interpolate(grid[None], size=(n_depth, res, res), mode="trilinear", align_corners=True)[0]
    grid = grid.permute(1, 2, 3, 0)[None]  # (1, K, R, R, 3)
    volume_hu, volume_labels = template.on(dev)
    hu = F.grid_sample(volume_hu[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
    labels = F.grid_sample(volume_labels[None, None], grid, mode="nearest", padding_mode="zeros",
                           align_corners=True)[0, 0]
    full = [torch.arange(n, dtype=f32, device=dev) for n in (n_depth, res, res)]
    xyz = ray_points(*full)
    u = (full[2] + 0.5) * pixel - fov / 2
    v = fov / 2 - (full[1] + 0.5) * pixel
    step = (depth / n_depth) * torch.sqrt(1 + (u[None, :] ** 2 + v[:, None] ** 2) / sid ** 2)
    return PatientVolume(hu=hu.cpu().numpy(), labels=labels.cpu().numpy().astype(np.uint8), xyz=xyz.cpu().numpy(),
                         step_mm=step.cpu().numpy(), pixel_mm=pixel, geometry=geometry)


# ---------------------------------------------------------------------------------------------------------------------
# Projection and the detector.
# ---------------------------------------------------------------------------------------------------------------------
def line_integral(hu: np.ndarray, step_mm: np.ndarray, bone_gain: float) -> np.ndarray:
    """Sum of attenuation along each ray, (R, R). mu = mu_water (1 + HU/1000), with bone (HU > 100) weighted up by
    `bone_gain` (photo-electric absorption of calcium at lower kVp). Columns are summed independently, row by row
    along axis 0, so two volumes that agree on a ray give bit-identical sums there."""
    rel = np.maximum(hu, HU_AIR) / 1000.0 + 1.0
    rel += (bone_gain - 1.0) * np.maximum(hu - 100.0, 0.0) / 1000.0
    return MU_WATER * rel.sum(axis=0, dtype=np.float32) * step_mm


@dataclass
class Exposure:
    """Detector and processing of one image (shared by the image and its clean twin)."""

    bone_gain: float
    photons: float  # detected photons per output pixel without attenuation (quantum noise level)
    scatter: float  # scatter-to-primary ratio relative to the mean primary over the field
    blur_px: float  # detector PSF sigma in output pixels
    low_pct: float  # window: percentiles of the clean twin's log image mapped to black / white
    high_pct: float
    gamma: float
    film_slope: float  # > 0: film-like sigmoid characteristic curve instead of a power law (jsrt-like)

    @staticmethod
    def sample(rng: np.random.Generator, kind: str) -> "Exposure":
        if kind == "ap":  # portable: no grid (more scatter), short exposure (more noise), softer
            return Exposure(bone_gain=rng.uniform(1.1, 1.5), photons=rng.uniform(1e4, 3e4),
                            scatter=rng.uniform(0.4, 0.9), blur_px=rng.uniform(0.6, 1.0),
                            low_pct=rng.uniform(0.5, 3), high_pct=rng.uniform(98.5, 99.8),
                            gamma=rng.uniform(1.2, 1.8), film_slope=0.0)
        if kind == "film":  # jsrt-like: digitised film, another characteristic curve, more blur, little noise
            return Exposure(bone_gain=rng.uniform(1.6, 2.2), photons=rng.uniform(5e4, 1.5e5),
                            scatter=rng.uniform(0.05, 0.15), blur_px=rng.uniform(0.9, 1.4),
                            low_pct=rng.uniform(0.2, 1.0), high_pct=rng.uniform(99.0, 99.9),
                            gamma=1.0, film_slope=rng.uniform(4.0, 6.0))
        return Exposure(bone_gain=rng.uniform(1.3, 1.9), photons=rng.uniform(3e4, 1e5),
                        scatter=rng.uniform(0.1, 0.3), blur_px=rng.uniform(0.4, 0.8),
                        low_pct=rng.uniform(0.3, 2), high_pct=rng.uniform(99.0, 99.9),
                        gamma=rng.uniform(1.3, 2.1), film_slope=0.0)


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    r = image.shape[0] // factor
    return image.reshape(r, factor, r, factor).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def expose(line_integrals: list[np.ndarray], exposure: Exposure, noise: np.ndarray, oversample: int,
           reference: int = -1) -> list[np.ndarray]:
    """8-bit radiographs of several line-integral maps under one exposure (the last one, the clean twin, sets the
    window and the scatter level so every map is processed identically).

    intensity = exp(-P) (primary) -> detector blur -> pixel binning -> + scatter -> quantum noise (the same noise
    field for every map; its std depends on the local intensity) -> log -> window -> gamma or film curve -> 8 bit.
    """
    sigma = exposure.blur_px * oversample
    primaries = [area_downsample(ndi.gaussian_filter(np.exp(-p), sigma, truncate=3.0), oversample)
                 for p in line_integrals]
    scatter = exposure.scatter * float(primaries[reference].mean())
    logs = []
    for primary in primaries:
        intensity = primary + scatter
        noisy = intensity + np.sqrt(intensity / exposure.photons) * noise
        logs.append(-np.log(np.maximum(noisy, 1e-6)))
    lo, hi = np.percentile(logs[reference], [exposure.low_pct, exposure.high_pct])
    out = []
    for log in logs:
        d = np.clip((log - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        if exposure.film_slope > 0:  # sigmoid through the middle of the window, rescaled to [0, 1]
            s = 1 / (1 + np.exp(-exposure.film_slope * (d - 0.5)))
            s0, s1 = 1 / (1 + np.exp(exposure.film_slope * 0.5)), 1 / (1 + np.exp(-exposure.film_slope * 0.5))
            d = (s - s0) / (s1 - s0)
        else:
            d = d ** exposure.gamma
        out.append(np.round(d * 255.0).astype(np.uint8))
    return out


def influence_radius(exposure: Exposure, oversample: int) -> int:
    """Render pixels a change in one ray can reach through the detector blur (gaussian_filter truncate=3)."""
    return int(np.ceil(3.0 * exposure.blur_px * oversample)) + 1


def projected_mask(mask3d: np.ndarray, step_mm: np.ndarray, min_mm: float, oversample: int) -> np.ndarray:
    """Output-resolution mask of rays crossing at least `min_mm` of `mask3d` (area fraction >= 0.5 per pixel)."""
    thickness = mask3d.sum(axis=0, dtype=np.float32) * step_mm
    return area_downsample((thickness >= min_mm).astype(np.float32), oversample) >= 0.5


def lung_mask(volume: PatientVolume, oversample: int) -> np.ndarray:
    """The anatomical lung field: every ray crossing a lung lobe (opacified lung included: labels never change)."""
    return projected_mask(volume.lungs, volume.step_mm, 1e-3, oversample)
