"""ICU devices of the ARDS-like set, added as line integrals to the projection (a thin object's projection is its
attenuation times the path length through it, so adding it to the ray-sum is the same as inserting it in 3D).

Placed from the patient's own projected anatomy: the endotracheal tube follows the trachea and stops 3-6 cm above
the carina; the central venous line comes in from the right subclavian region through the right brachiocephalic vein
down the superior vena cava; ECG electrodes sit on the chest wall with their leads running off the film; a nasogastric
tube (half of the patients) runs down the midline past the diaphragm. Devices are part of the patient: the clean twin
has them too.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.ct import BCV_RIGHT, LOBES, SVC, TRACHEA
from pipeline.data.render import PatientVolume


def _distance_to_polyline(px: np.ndarray, py: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (same units as the inputs) from every pixel (px, py) to a polyline (N, 2) of (x, y) points."""
    best = np.full(px.shape, np.inf, np.float32)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        np.minimum(best, np.hypot(px - x0 - t * dx, py - y0 - t * dy), out=best)
    return best


def _line(dist: np.ndarray, width: float, pixel: float) -> np.ndarray:
    """Anti-aliased fraction of each pixel covered by a line of `width` (mm)."""
    return np.clip((width / 2 - dist) / pixel + 0.5, 0, 1)


def _bezier(points: np.ndarray, n: int = 40) -> np.ndarray:
    """Points along the Bezier curve of control points (k, 2) (de Casteljau)."""
    t = np.linspace(0, 1, n)[:, None, None]
    pts = np.broadcast_to(points[None], (n, *points.shape)).copy()
    while pts.shape[1] > 1:
        pts = (1 - t) * pts[:, :-1] + t * pts[:, 1:]
    return pts[:, 0]


def devices(vol: PatientVolume, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """(added line integral (R, R), names of the devices placed)."""
    res = vol.hu.shape[1]
    pixel = vol.pixel_mm
    coords = (np.arange(res) + 0.5) * pixel
    px, py = np.meshgrid(coords, coords)  # detector mm, x to the right of the image, y down
    add = np.zeros((res, res), np.float32)
    placed = []

    def projected(label) -> np.ndarray:
        return (vol.labels == label).any(axis=0)

    lungs = np.isin(vol.labels, LOBES).any(axis=0)
    lung_rows = np.flatnonzero(lungs.any(axis=1))
    lung_cols = np.flatnonzero(lungs.any(axis=0))
    top, bottom = lung_rows.min() * pixel, lung_rows.max() * pixel
    left_edge, right_edge = lung_cols.min() * pixel, lung_cols.max() * pixel  # image left = patient's right
    midline = (left_edge + right_edge) / 2

    trachea = projected(TRACHEA)
    rows = np.flatnonzero(trachea.any(axis=1))
    if rows.size:  # endotracheal tube
        centre = np.array([np.flatnonzero(trachea[r]).mean() for r in rows]) * pixel
        carina = rows.max() * pixel
        tip = carina - rng.uniform(30, 60)
        ys = np.linspace(0, tip, 30)
        xs = np.interp(ys, rows * pixel, centre) + rng.uniform(-2, 2)
        path = np.stack([xs, ys], 1)
        d = _distance_to_polyline(px, py, path)
        add += 0.12 * _line(np.abs(d - 4.0), 1.5, pixel)  # the two plastic walls of an 8 mm tube
        stripe = _distance_to_polyline(px - 2.5, py, path)
        add += 0.7 * _line(stripe, 2.0, pixel)  # the radio-opaque stripe
        placed.append("endotracheal tube")

    svc, bcv = projected(SVC), projected(BCV_RIGHT)
    if svc.any():  # right subclavian central venous line, tip at the cavo-atrial junction
        sv_rows, sv_cols = np.nonzero(svc)
        tip = np.array([sv_cols.mean() * pixel, sv_rows.max() * pixel - rng.uniform(0, 10)])
        via = np.array([np.nonzero(bcv)[1].mean() * pixel, np.nonzero(bcv)[0].mean() * pixel]) if bcv.any() \
            else np.array([tip[0] - 15, top + 20])
        entry = np.array([left_edge + rng.uniform(10, 40), top + rng.uniform(-10, 15)])
        outside = np.array([rng.uniform(-20, 0), entry[1] - rng.uniform(10, 40)])
        path = _bezier(np.stack([outside, entry, via, tip]), 60)
        add += 0.45 * _line(_distance_to_polyline(px, py, path), 2.5, pixel)
        placed.append("central venous line")

    # ECG electrodes: foam disk with a metal snap, lead wire running off the film
    spots = [(left_edge + rng.uniform(0, 25), top + rng.uniform(0, 30)),
             (right_edge - rng.uniform(0, 25), top + rng.uniform(0, 30)),
             (right_edge - rng.uniform(0, 30), bottom + rng.uniform(-10, 25))]
    if rng.random() < 0.5:
        spots.append((left_edge + rng.uniform(0, 30), bottom + rng.uniform(-10, 25)))
    for cx, cy in spots:
        r = np.hypot(px - cx, py - cy)
        add += 0.08 * _line(r, 2 * rng.uniform(8, 11), pixel) + 1.2 * _line(r, 7.0, pixel)
        exit_x = -20.0 if cx < midline else res * pixel + 20.0
        ctrl = np.array([[cx, cy], [cx + rng.uniform(-40, 40), cy + rng.uniform(-60, 60)],
                         [exit_x, cy + rng.uniform(-80, 80)]])
        add += 0.35 * _line(_distance_to_polyline(px, py, _bezier(ctrl, 40)), 1.6, pixel)
    placed.append("ECG leads")

    if rng.random() < 0.5 and rows.size:  # nasogastric tube down the midline past the left hemidiaphragm
        ctrl = np.array([[midline + rng.uniform(-5, 5), 0.0], [midline + rng.uniform(0, 10), bottom - 40],
                         [midline + rng.uniform(20, 50), bottom + rng.uniform(20, 45)]])
        add += 0.4 * _line(_distance_to_polyline(px, py, _bezier(ctrl, 40)), 2.2, pixel)
        placed.append("nasogastric tube")
    return add, placed
