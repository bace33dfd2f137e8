"""The built-in synthetic RSNA-like data set: procedural left-hand PA radiograph phantoms.

`render(true_age, male, seed)` draws one hand: radius, ulna, eight carpals, metacarpals, phalanges, their
epiphyses, the thumb's adductor sesamoid and the soft tissue, in a canonical hand frame (millimetres, fingers
up, thumb on the image's right as in RSNA), mapped to pixels by one similarity transform per image. Bone age
drives appearance as Greulich-Pyle / Tanner-Whitehouse read it (carpal order, epiphysis width, capping,
fusion, density); girls' maturity clock runs `FEMALE_CLOCK` times faster. Pose, size, exposure and
the other nuisances depend on the seed only, so the same seed at another age is the same hand growing up.
`make_dataset(out_dir, ...)` writes a full data set in the official RSNA layout plus ground truth
(`annotations/<id>.json`: true age, boxes of Chen 2022's regions and Koitka et al.'s ossification ROIs,
bones present, nuisances; `annotations/<id>_mask.png`: hand mask).

Used in: notebooks/01_data_exploration.ipynb, notebooks/02_preprocessing.ipynb and, through
`bac.data.load` / `bac.data.annotations`, every paper notebook; `bac synth`.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

VERSION = "1.0"
RATER_SD = 5.0            # SD (months) of one rater's reading around the true bone age
N_TEST_RATERS = 6         # the RSNA test label is the mean of six readers
AGE_RANGE = (1.0, 228.0)  # months, as in the RSNA training labels
FEMALE_CLOCK = 1.18       # girls pass each maturity stage at bone age / 1.18 (boys' months are the clock)
P_MALE = 0.542
# Truncated skew-normal (shape -1.5) per sex, fitted so the mix has mean 127.3 and SD 41.2 months
# (RSNA training; boys ~135, girls ~118 months): (loc, scale) in months.
AGE_DIST = {True: (172.76, 55.72), False: (154.32, 55.81)}
AGE_SKEW = -1.5
FIRST_ID = {"test": 4360, "train": 5000, "validation": 20000}
SPLIT_DIRS = {"train": "boneage-training-dataset", "validation": "Bone Age Validation Set",
              "test": "Bone Age Test Set"}
ROI_KEYS = ("dip", "pip", "mcp", "radius", "ulna", "wrist")  # Koitka et al. 2020 ossification ROI classes

# ------------------------------------------------------------------------------------------ anatomy
# Maturity events in boys' bone-age months (girls: divide by FEMALE_CLOCK). Carpal appearance order and
# ages follow Greulich-Pyle; epiphysis (appear, fusion start) so that phalanges fuse at ~15-17 y in boys
# (13-15 y girls), distal phalanges first and the radius last.
CARPALS = {  # name: (appear, centre xy mm, mature half-size (a, b) mm, rotation deg)
    "capitate": (2, (1.0, -1.0), (6.5, 10.5), 0.0),
    "hamate": (3, (-11.5, -1.0), (6.0, 9.0), -12.0),
    "triquetrum": (30, (-13.0, 13.0), (6.0, 5.0), 25.0),
    "lunate": (44, (-0.5, 17.0), (6.5, 5.5), 0.0),
    "trapezium": (62, (20.0, -0.5), (6.5, 6.0), 30.0),
    "trapezoid": (68, (11.0, -5.0), (4.8, 5.8), 10.0),
    "scaphoid": (72, (13.0, 13.5), (5.2, 10.0), -50.0),
    "pisiform": (140, (-16.5, 16.5), (4.2, 4.2), 0.0),
}
SESAMOID_APPEAR = 152
# Rays: base xy (mm), direction (deg, + toward the thumb), bones [(name, slot length, width)].
RAYS = {
    1: ((22.0, -7.0), 36.0, [("mc1", 44, 10.0), ("pp1", 31, 9.0), ("dp1", 24, 8.0)]),
    2: ((10.5, -13.5), 7.0, [("mc2", 66, 8.6), ("pp2", 40, 8.6), ("mp2", 23, 7.5), ("dp2", 17, 6.4)]),
    3: ((1.0, -14.0), 0.0, [("mc3", 63, 9.0), ("pp3", 45, 9.0), ("mp3", 28, 8.0), ("dp3", 19, 6.8)]),
    4: ((-9.0, -12.0), -7.0, [("mc4", 57, 8.0), ("pp4", 42, 8.0), ("mp4", 27, 7.2), ("dp4", 18, 6.2)]),
    5: ((-17.5, -8.5), -14.0, [("mc5", 52, 7.5), ("pp5", 33, 7.2), ("mp5", 19, 6.5), ("dp5", 16, 5.8)]),
}
SPLAY = {1: -6.0, 2: 4.0, 3: 0.0, 4: -4.0, 5: -8.0}  # extra angle of the fingers at the MCP joint (deg)
EPIPHYSES = {  # kind: (appear, fusion start, mature height/width, epiphysis end)
    "radius": (14, 206, 0.36, "distal"), "ulna": (80, 200, 0.5, "distal"),
    "mc": (24, 190, 0.62, "distal"), "mc1": (26, 188, 0.4, "proximal"),
    "pp": (18, 184, 0.34, "proximal"), "mp": (28, 180, 0.34, "proximal"), "dp": (22, 176, 0.36, "proximal"),
}
FOREARM = {"radius": ((8.0, 24.0), 15.0), "ulna": ((-15.5, 27.0), 10.5)}  # distal end xy, shaft width (mm)
FUSE_MONTHS = 20.0    # from fusion start to a closed physis
CAP_MONTHS = 45.0     # capping phase before fusion


def _bone_kind(name: str) -> str:
    return "mc1" if name == "mc1" else name.rstrip("0123456789")


def maturity_clock(bone_age, male) -> np.ndarray:
    """Bone age (months) on the boys' clock: girls at the same bone age are more mature."""
    return np.asarray(bone_age, float) * np.where(np.asarray(male, bool), 1.0, FEMALE_CLOCK)


# ------------------------------------------------------------------------------------------ labels
def sample_labels(n: int, rng: np.random.Generator, split: str = "train") -> pd.DataFrame:
    """`n` draws of (true_age, male, label) shaped like RSNA training.

    Labels: one rater (N(0, RATER_SD), integer months) for train/validation, the mean of N_TEST_RATERS
    raters (two decimals) for test; clipped to AGE_RANGE.
    """
    male = rng.random(n) < P_MALE
    age = np.empty(n)
    for sex in (True, False):
        idx = np.flatnonzero(male == sex)
        grid, cdf = _age_cdf(sex)
        age[idx] = np.interp(rng.random(idx.size), cdf, grid)  # inverse CDF of the truncated skew-normal
    age = np.clip(age, *AGE_RANGE)
    if split == "test":
        label = np.round(age + rng.normal(0, RATER_SD, (n, N_TEST_RATERS)).mean(1), 2)
    else:
        label = np.round(age + rng.normal(0, RATER_SD, n))
    return pd.DataFrame({"true_age": np.round(age, 3), "male": male, "label": np.clip(label, *AGE_RANGE)})


@lru_cache(maxsize=2)
def _age_cdf(male: bool):
    """(ages, CDF) of one sex's truncated skew-normal on a 0.05-month grid."""
    from scipy import stats
    loc, scale = AGE_DIST[male]
    grid = np.linspace(*AGE_RANGE, 4541)
    cdf = stats.skewnorm.cdf(grid, AGE_SKEW, loc, scale)
    return grid, (cdf - cdf[0]) / (cdf[-1] - cdf[0])


def rater_sd(split: str) -> float:
    return RATER_SD / math.sqrt(N_TEST_RATERS) if split == "test" else RATER_SD


def mae_floor(split: str) -> float:
    """E|label - true age| of a perfect model: sd * sqrt(2 / pi)."""
    return rater_sd(split) * math.sqrt(2 / math.pi)


# ------------------------------------------------------------------------------------------ drawing
@dataclass
class Phantom:
    image: np.ndarray            # (H, W) uint8, bone bright
    mask: np.ndarray             # (H, W) bool, hand + visible forearm
    boxes: dict                  # pixel boxes [x0, y0, x1, y1], x1/y1 exclusive
    meta: dict = field(default_factory=dict)


class _Canvas:
    """Float fields in pixels; primitives are evaluated in their own local frame over their pixel bbox."""

    def __init__(self, h, w, scale, angle, centre, offset):
        self.h, self.w, self.s = h, w, scale
        c, s = math.cos(angle), math.sin(angle)
        self.rot = np.array([[c, -s], [s, c]])
        self.reach = math.hypot(h, w) / scale + 40  # mm: the forearm runs this far, off the canvas
        self.centre, self.offset = np.asarray(centre, float), np.asarray(offset, float)
        self.soft = np.zeros((h, w), np.float32)
        self.bone = np.zeros((h, w), np.float32)

    def to_px(self, pts):
        """Canonical mm (N, 2) -> pixel xy (N, 2)."""
        return (np.atleast_2d(pts) - self.centre) @ self.rot.T * self.s + self.offset

    def local(self, origin, direction, extent):
        """Pixel window covering the local rectangle |u|,|v| <= extent around origin, and (u, v) there.

        u runs along `direction` (unit vector, mm frame), v along its normal (toward the thumb when
        direction points to the fingers). Returns (slices, u, v) or None when off-canvas.
        """
        (c, s), sc = self.rot[:, 0], self.s
        dx, dy = float(direction[0]), float(direction[1])
        rdx, rdy = c * dx - s * dy, s * dx + c * dy  # direction and normal in pixel axes
        rnx, rny = -rdy, rdx
        eu, ev = extent
        px, py = self.to_px(origin)[0]
        hx, hy = sc * (abs(rdx) * eu + abs(rnx) * ev), sc * (abs(rdy) * eu + abs(rny) * ev)
        x0, y0 = max(int(math.floor(px - hx)), 0), max(int(math.floor(py - hy)), 0)
        x1, y1 = min(int(math.ceil(px + hx)) + 1, self.w), min(int(math.ceil(py + hy)) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - px)) / np.float32(sc)
        ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - py)) / np.float32(sc)
        return (slice(y0, y1), slice(x0, x1)), rdx * xs + rdy * ys, rnx * xs + rny * ys


def _unit(deg):
    a = math.radians(deg)
    return np.array([math.sin(a), -math.cos(a)])  # 0 deg = up (fingers), + toward the thumb (x+)


def _shell(r, ri, rho_inner):
    """Path length through a unit sphere/cylinder at normalised radius r with a cortex of inner radius ri."""
    outer = np.sqrt(np.maximum(1 - r * r, 0))
    inner = np.sqrt(np.maximum(ri * ri - r * r, 0))
    return outer - (1 - rho_inner) * inner


def _capsule(cv, p0, p1, radius, thickness, sharp=2.2):
    """Soft tissue: a rounded cylinder from p0 to p1 (mm); union by maximum."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    d = (p1 - p0) / length
    win = cv.local((p0 + p1) / 2, d, (length / 2 + radius, radius))
    if win is None:
        return
    sl, u, v = win
    du = np.maximum(np.abs(u) - length / 2, 0)
    rr = (du * du + v * v) / radius ** 2
    t = np.clip(sharp * np.sqrt(np.maximum(1 - rr, 0)), 0, 1) * thickness
    np.maximum(cv.soft[sl], t.astype(np.float32), out=cv.soft[sl])


def _polygon(cv, pts, radius, thickness):
    """Soft tissue: a convex polygon (mm) with edges rounded over `radius`; union by maximum."""
    from scipy.spatial import ConvexHull
    pts = np.asarray(pts, float)
    hull = pts[ConvexHull(pts).vertices]  # counter-clockwise
    centre = hull.mean(0)
    edges = np.roll(hull, -1, 0) - hull
    normals = np.stack([edges[:, 1], -edges[:, 0]], 1) / np.linalg.norm(edges, axis=1)[:, None]
    if np.mean(np.sum(normals * (hull - centre), 1)) < 0:
        normals = -normals  # outward
    offsets = np.sum(normals * (hull - centre), 1)
    ext = np.abs(hull - centre).max(0)
    win = cv.local(centre, np.array([0.0, -1.0]), (ext[1], ext[0]))
    if win is None:
        return
    sl, u, v = win
    x, y = v, -u  # local (u up, v right) back to canonical offsets from the centre
    depth = np.min([off - (n[0] * x + n[1] * y) for n, off in zip(normals, offsets)], axis=0)
    t = np.sqrt(np.clip(1 - (1 - np.clip(depth / radius, 0, 1)) ** 2, 0, None)) * (depth > 0) * thickness
    np.maximum(cv.soft[sl], t.astype(np.float32), out=cv.soft[sl])


def _tube(cv, p0, p1, width, flare0, flare1, cortex, density, add=True):
    """A tubular bone shaft from p0 to p1 (mm) with flared metaphyses and a bright cortex."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    if length <= 0.5:
        return
    d = (p1 - p0) / length
    hw = width / 2
    win = cv.local((p0 + p1) / 2, d, (length / 2, hw * (1 + max(flare0, flare1))))
    if win is None:
        return
    sl, u, v = win
    u = u + length / 2  # 0 at p0, length at p1
    lam = 0.55 * width
    b0, b1 = np.exp(-(u / lam) ** 2), np.exp(-((length - u) / lam) ** 2)
    radius = hw * (1 + flare0 * b0 + flare1 * b1)
    cort = cortex * hw * (1 - 0.8 * np.maximum(b0, b1))  # thick cortex mid-shaft, thin at the metaphyses
    re = 0.3 * hw  # rounded ends
    dend = np.minimum(u, length - u)
    radius = radius * np.sqrt(np.clip(1 - (np.maximum(re - dend, 0) / re) ** 2, 0, None))
    radius = np.where(dend < 0, 0, radius)
    r = np.abs(v) / np.maximum(radius, 1e-3)
    ri = np.clip(1 - cort / np.maximum(radius, 1e-3), 0, 1)
    att = (_shell(r, ri, 0.3) * radius * density).astype(np.float32)
    if not add:
        return sl, att
    cv.bone[sl] += att


def _blob(cv, centre, direction, a, b, density, p=2.0, harmonics=(), cap=0.0, wedge=0.0, ri=0.62, add=True):
    """An ossification centre: superellipse (half-width a across, half-height b along `direction`).

    cap bends the lateral edges back toward -direction (an epiphysis capping its metaphysis); wedge makes
    it thicker on the +normal side (the radial styloid); harmonics [(k, amp, phase)] make carpals angular.
    """
    ext = max(a, b) * (1.6 + cap + abs(wedge))
    win = cv.local(np.asarray(centre, float), direction, (ext, ext))
    if win is None:
        return
    sl, u, v = win
    vn = v / a
    bb = b * (1 + wedge * np.clip(vn, -1, 1))
    un = (u + cap * b * vn * vn) / bb
    rho = (np.abs(vn) ** p + np.abs(un) ** p) ** (1 / p)
    if harmonics:
        theta = np.arctan2(un, vn)
        rho = rho / (1 + sum(amp * np.cos(k * theta + ph) for k, amp, ph in harmonics))
    att = (_shell(rho, ri, 0.45) * min(a, b) * density).astype(np.float32)
    if not add:
        return sl, att
    cv.bone[sl] += att


def _ramp(x, x0, x1):
    return min(max((x - x0) / (x1 - x0), 0.0), 1.0)


def _epiphysis_state(m, appear, fuse):
    """Stage numbers of one epiphysis at maturity m (boys' months)."""
    if m < appear:
        return dict(present=False, width=0.0, shape=0.0, cap=0.0, fusion=0.0, stage="absent")
    grow = _ramp(m, appear, fuse - CAP_MONTHS)
    cap = _ramp(m, fuse - CAP_MONTHS, fuse)
    fusion = _ramp(m, fuse, fuse + FUSE_MONTHS)
    width = 0.3 + 0.7 * grow ** 0.8 + 0.08 * cap
    stage = ("fused" if fusion >= 1 else "fusing" if fusion > 0 else "capped" if cap > 0.5
             else "equal" if grow >= 1 else "narrow")
    return dict(present=True, width=width, shape=grow, cap=cap, fusion=fusion, stage=stage)


# ------------------------------------------------------------------------------------------ a hand
def _identity(rng, male):
    """Proportions, pose of the fingers, per-bone timing offsets: fixed per seed, independent of age."""
    names = [b for _, _, bones in RAYS.values() for b, _, _ in bones] + ["radius", "ulna", "sesamoid"]
    return dict(
        finger=rng.normal(1, 0.03, 6), width=rng.normal(1, 0.05) * (1.02 if male else 0.98),  # a weak sex cue
        bone_width=dict(zip(names, rng.normal(1, 0.03, len(names)))),
        thumb=rng.normal(0, 6), spread=rng.uniform(0.2, 1.6), ray_angle=rng.normal(0, 1.5, 6),
        bend=rng.normal(0, 2.5, (6, 4)),
        carpal_shift={c: rng.normal(0, 0.5, 2) for c in CARPALS},
        carpal_rot={c: rng.normal(0, 6) for c in CARPALS},
        carpal_harm={c: [(k, rng.uniform(0.02, 0.05), rng.uniform(0, 2 * np.pi)) for k in (3, 4, 5)]
                     for c in CARPALS},
        tempo={n: rng.normal() for n in [*CARPALS, *names]},
        soft=rng.uniform(0.85, 1.2), finger_soft=rng.normal(1, 0.06), palm=rng.normal(1, 0.04),
    )


def _pose(rng, long_side, nuisance):
    if not nuisance:
        return dict(angle=0.0, landscape=False, aspect=0.8, fill=0.78, shift=(0.5, 0.5))
    return dict(angle=float(np.clip(rng.normal(0, 12), -30, 30)), landscape=bool(rng.random() < 0.06),
                aspect=float(rng.uniform(0.72, 0.9)), fill=float(rng.uniform(0.55, 0.85)),
                shift=tuple(rng.uniform(0, 1, 2)))


def _exposure(rng, nuisance):
    if not nuisance:
        return dict(background=20.0, peak=235.0, gamma=1.5, mu_soft=0.5, mu_bone=0.25, noise=1.0, blur=0.5,
                    gradient=(0.0, 0.0), low_contrast=False)
    low = bool(rng.random() < 0.05)
    bg = rng.uniform(60, 100) if low else rng.uniform(0, 55)
    return dict(background=float(bg), peak=float(bg + (rng.uniform(50, 80) if low else rng.uniform(170, 250 - bg))),
                gamma=float(1.5 * np.exp(rng.normal(0, 0.2))), mu_soft=float(rng.uniform(0.4, 0.65)),
                mu_bone=float(rng.uniform(0.18, 0.32)), noise=float(rng.uniform(0.5, 6)),
                blur=float(rng.uniform(0.3, 1.3)), gradient=tuple(float(g) for g in rng.normal(0, 0.06, 2)),
                low_contrast=low)


def _skeleton(ident):
    """Bone slots of the rays (mm, canonical frame): where each bone lies, whatever its maturity."""
    rays = {}
    for r, (base, angle, bones) in RAYS.items():
        ang = angle + ident["ray_angle"][r] + (ident["thumb"] if r == 1 else 0.0)
        p = np.asarray(base, float) + (np.array([1.5, -2.0]) * ident["thumb"] / 6 if r == 1 else 0)
        slots = []
        for j, (name, length, width) in enumerate(bones):
            if j == 1:
                ang += SPLAY[r] * ident["spread"]
            if j >= 1:
                ang += ident["bend"][r, j] - (6.0 if r == 1 and j >= 1 else 0.0)
            d = _unit(ang)
            length = length * ident["finger"][r] * (ident["palm"] if j == 0 else 1.0)
            slots.append(dict(name=name, p0=p.copy(), p1=p + length * d, d=d,
                              width=width * ident["width"] * ident["bone_width"][name]))
            p = p + length * d
        rays[r] = slots
    return rays


def _draw_tubular(cv, slot, kind, m, gfrac, jitter):
    """Shaft plus epiphysis of one tubular bone in its slot; returns (physis point, unit vector toward the
    epiphysis, metaphysis width) for the ROI boxes."""
    appear, fuse, mature_hr, end = EPIPHYSES[kind]
    w = slot["width"] * (0.86 + 0.14 * gfrac)
    # Cartilage at both ends: wide in infants, thin joint spaces in adults (relative to bone width).
    joint = slot["width"] * (0.07 + 0.2 * (1 - gfrac))
    flare_epi = {"mc": 0.3, "mc1": 0.3, "pp": 0.38, "mp": 0.34, "dp": 0.32, "radius": 0.75, "ulna": 0.25}[kind]
    flare_far = {"mc": 0.22, "mc1": 0.22, "pp": 0.2, "mp": 0.2, "dp": 0.05, "radius": 0.0, "ulna": 0.0}[kind]
    meta_w = w * (1 + flare_epi)
    gap0 = max(0.16 * meta_w, 1.0)  # physis gap, scaled with the bone (stays visible when downsampled)
    epi_h_mature = mature_hr * meta_w * 1.02
    st = _epiphysis_state(m, appear, fuse)
    zone = gap0 + epi_h_mature
    if end == "distal":
        epi_end, far_end = slot["p1"], slot["p0"]
    else:
        epi_end, far_end = slot["p0"], slot["p1"]
    to_epi = (epi_end - far_end) / np.linalg.norm(epi_end - far_end)
    shaft_far = far_end + to_epi * joint
    shaft_epi = epi_end - to_epi * (joint + zone)
    dens = 0.62 + 0.38 * gfrac ** 0.7
    cortex = 0.3 + 0.2 * gfrac
    if kind == "dp":  # distal phalanx: tuft at the far end, narrower shaft
        parts = [_tube(cv, shaft_far, shaft_epi, w * 0.75, 0.35, flare_epi * 1.4, cortex, dens, add=False)]
    else:
        parts = [_tube(cv, shaft_far, shaft_epi, w, flare_far, flare_epi, cortex, dens, add=False)]
    if st["present"]:
        a = 0.5 * meta_w * st["width"] * jitter
        hr = 0.85 + (mature_hr - 0.85) * st["shape"]  # round nucleus -> flat (or round head for mc)
        b = max(a * hr, 0.35)
        gap = gap0 * (1 - st["fusion"]) - 0.4 * b * st["fusion"]
        centre = shaft_epi + to_epi * (gap + b)
        wedge = 0.45 * st["shape"] if kind == "radius" else 0.0
        parts.append(_blob(cv, centre, to_epi, a, b, dens, p=2.0 + 0.6 * st["shape"], cap=0.55 * st["cap"],
                           wedge=wedge, ri=0.55 + 0.1 * st["shape"], add=False))
    _fuse(cv, parts, st["fusion"])
    return shaft_epi, to_epi, meta_w


def _fuse(cv, parts, fusion):
    """Add shaft and epiphysis; as the physis closes their overlap becomes one bone (a faint scar remains)."""
    parts = [p for p in parts if p is not None]
    if len(parts) < 2 or fusion <= 0:
        for sl, att in parts:
            cv.bone[sl] += att
        return
    (sa, a), (sb, b) = parts
    y0, x0 = min(sa[0].start, sb[0].start), min(sa[1].start, sb[1].start)
    y1, x1 = max(sa[0].stop, sb[0].stop), max(sa[1].stop, sb[1].stop)
    both = np.zeros((2, y1 - y0, x1 - x0), np.float32)
    for k, (sl, att) in enumerate(parts):
        both[k, sl[0].start - y0:sl[0].stop - y0, sl[1].start - x0:sl[1].stop - x0] = att
    cv.bone[y0:y1, x0:x1] += both.sum(0) - 0.85 * fusion * both.min(0)


def _bone_maturity(ident, age_m, name):
    """Per-bone maturity: the hand's clock plus a fixed per-bone offset (SD a few months, growing with age)."""
    return age_m + ident["tempo"][name] * (1.5 + 0.035 * age_m)


def _status(ident, age_m):
    """(bones_present, epiphysis stages) of a hand at maturity age_m, without drawing it."""
    present, stages = {}, {}
    for name, (appear, *_) in CARPALS.items():
        present[name] = _bone_maturity(ident, age_m, name) >= appear
    bones = ["radius", "ulna"] + [b for _, _, bs in RAYS.values() for b, _, _ in bs]
    for name in bones:
        appear, fuse, *_ = EPIPHYSES[_bone_kind(name)]
        st = _epiphysis_state(_bone_maturity(ident, age_m, name), appear, fuse)
        present[f"epi_{name}"], stages[name] = st["present"], st["stage"]
    present["sesamoid"] = _bone_maturity(ident, age_m, "sesamoid") >= SESAMOID_APPEAR
    return present, stages


def maturity_state(true_age: float, male: bool, seed: int) -> dict:
    """What render() would draw, without drawing: maturity (boys' months), bones_present, stages."""
    ss = np.random.SeedSequence([int(seed), 0xBA5E])
    ident = _identity(np.random.default_rng(ss.spawn(1)[0]), bool(male))
    age_m = float(maturity_clock(true_age, male))
    present, stages = _status(ident, age_m)
    return dict(maturity=round(age_m, 3), bones_present=present, stages=stages)


def _draw_hand(cv, ident, age_m, jitter_rng):
    """All bones and soft tissue; returns (bones_present, stages, landmarks for boxes)."""
    def m_of(name):
        return _bone_maturity(ident, age_m, name)

    gfrac = float(np.clip(age_m / 216, 0, 1))  # growth fraction (adult at 18 y on the boys' clock)
    rays = _skeleton(ident)
    present, stages = _status(ident, age_m)
    land = {"joints": {}, "carpal_pts": []}
    size_jit = dict(zip(["radius", "ulna", *[s["name"] for r in rays.values() for s in r]],
                        jitter_rng.normal(1, 0.04, 2 + sum(len(r) for r in rays.values()))))
    # soft tissue (age-independent geometry: hand size in pixels must not carry age)
    soft = ident["soft"]
    for r, slots in rays.items():
        tip = slots[-1]["p1"] + slots[-1]["d"] * 3
        rad = (RAYS[r][2][1][2] * 0.5 + 4.2) * ident["finger_soft"] * (1.15 if r == 1 else 1.0)
        start = slots[0]["p0"] + 0.45 * (slots[0]["p1"] - slots[0]["p0"]) if r == 1 else slots[0]["p1"]
        _capsule(cv, start, tip, rad, 0.55 * soft)
    palm = [rays[r][0]["p1"] + rays[r][0]["d"] * 5 + side * np.array([-rays[r][0]["d"][1], rays[r][0]["d"][0]])
            * (rays[r][0]["width"] / 2 + 3.5) for r, side in ((2, 1), (3, 0), (5, -1))]
    mc1 = rays[1][0]
    thenar = mc1["p0"] + 0.55 * (mc1["p1"] - mc1["p0"])
    n1 = np.array([-mc1["d"][1], mc1["d"][0]]) * (mc1["width"] / 2 + 4.0)
    palm += [np.array([-27.0, 22.0]), np.array([30.0, 18.0]), np.array([-30.0, -20.0]), thenar + n1, thenar - n1]
    _polygon(cv, palm, 9.0, 0.85 * soft)
    _capsule(cv, (2.0, 10.0), (5.0, 10.0 + cv.reach), 30.0, 0.95 * soft, sharp=2.0)
    # carpals
    for name, (appear, c, (a, b), rot) in CARPALS.items():
        m = m_of(name)
        centre = np.asarray(c, float) + ident["carpal_shift"][name]
        outline = [centre + np.array(p) for p in ((-a, -b), (a, -b), (-a, b), (a, b))]
        land["carpal_pts"] += outline
        if not present[name]:
            continue
        t = _ramp(m, appear, 190)
        size = 0.25 + 0.75 * t ** 0.6
        g = math.sqrt(a * b)  # nuclei are round, mature bones take their own aspect
        aa, bb = 1.1 * size * (g + (a - g) * t), 1.1 * size * (g + (b - g) * t)
        harm = [(k, amp * t, ph) for k, amp, ph in ident["carpal_harm"][name]]
        _blob(cv, centre, _unit(rot + ident["carpal_rot"][name]), aa, bb, 0.62 + 0.38 * gfrac ** 0.7,
              p=2.0 + 0.8 * t, harmonics=harm, ri=0.5 + 0.15 * t)
    # forearm bones
    for name, (end, w_shaft) in FOREARM.items():
        slot = dict(name=name, p0=np.asarray(end, float) + np.array([0.0, cv.reach]), p1=np.asarray(end, float),
                    d=np.array([0.0, -1.0]), width=w_shaft * ident["width"] * ident["bone_width"][name])
        phys, to_epi, meta_w = _draw_tubular(cv, slot, name, m_of(name), gfrac, size_jit[name])
        land["joints"][name] = (phys, to_epi, meta_w)
    # rays
    for r, slots in rays.items():
        for slot in slots:
            kind = _bone_kind(slot["name"])
            _draw_tubular(cv, slot, kind, m_of(slot["name"]), gfrac, size_jit[slot["name"]])
        land["joints"][r] = [(s["p0"], s["p1"], s["d"], s["width"]) for s in slots]
    # adductor sesamoid of the thumb: ulnar side of the first metacarpal head
    mc1 = rays[1][0]
    m = m_of("sesamoid")
    if present["sesamoid"]:
        n = np.array([-mc1["d"][1], mc1["d"][0]])
        centre = mc1["p1"] - n * 0.45 * mc1["width"] - mc1["d"] * 3.0
        s = 0.4 + 0.6 * _ramp(m, SESAMOID_APPEAR, SESAMOID_APPEAR + 36)
        _blob(cv, centre, mc1["d"], 2.4 * s, 3.0 * s, 0.9 + 0.1 * gfrac, ri=0.5)
    return present, stages, land


# ------------------------------------------------------------------------------------------ boxes
def _box_px(cv, pts, pad_mm=0.0):
    """Axis-aligned pixel box [x0, y0, x1, y1] around canonical points, clipped to the canvas."""
    px = cv.to_px(np.asarray(pts, float))
    pad = pad_mm * cv.s
    x0, y0 = np.floor(px.min(0) - pad).astype(int)
    x1, y1 = np.ceil(px.max(0) + pad).astype(int)
    return [int(np.clip(x0, 0, cv.w)), int(np.clip(y0, 0, cv.h)), int(np.clip(x1, 0, cv.w)),
            int(np.clip(y1, 0, cv.h))]


def _square(centre, half):
    c = np.asarray(centre, float)
    return [c + np.array([sx * half, sy * half]) for sx in (-1, 1) for sy in (-1, 1)]


def _boxes(cv, land, mask):
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    hand = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1] if xs.size else [0, 0, cv.w, cv.h]
    joints = land["joints"]

    def joint_box(r, j):  # joint between bone j-1 and bone j of ray r
        p0, _, _, w = joints[r][j]
        return _box_px(cv, _square(p0, 1.15 * w))

    carpal = _box_px(cv, land["carpal_pts"], pad_mm=1.5)
    region2 = _box_px(cv, [p for r in (2, 3, 4, 5) for p in _square(joints[r][1][0], 1.2 * joints[r][1][3])])
    boxes = {
        "hand": hand, "carpal": carpal, "metacarpal": region2,
        "dip": [joint_box(1, 2)] + [joint_box(r, 3) for r in (2, 3, 4, 5)],
        "pip": [joint_box(r, 2) for r in (2, 3, 4, 5)],
        "mcp": [joint_box(r, 1) for r in (1, 2, 3, 4, 5)],
        "wrist": [carpal],
    }
    for name in ("radius", "ulna"):
        phys, to_epi, meta_w = joints[name]
        boxes[name] = [_box_px(cv, _square(phys + to_epi * 0.2 * meta_w, 0.72 * meta_w))]

    def clip(b):  # ossification boxes lie inside the hand box
        return [max(b[0], hand[0]), max(b[1], hand[1]), min(b[2], hand[2]), min(b[3], hand[3])]
    for k, v in boxes.items():
        if k != "hand":
            boxes[k] = clip(v) if isinstance(v[0], int) else [clip(b) for b in v]
    return boxes


# ------------------------------------------------------------------------------------------ render
def _place(ident, pose, long_side):
    """Canvas size and the similarity transform that fits the hand (not the forearm) inside it."""
    short = int(round(long_side * pose["aspect"]))
    h, w = (short, long_side) if pose["landscape"] else (long_side, short)
    rays = _skeleton(ident)
    core = [s["p1"] + s["d"] * 12 for r in rays.values() for s in r[-1:]]
    core += [np.array([x, y]) for x in (-34.0, 40.0) for y in (-30.0, 70.0)]
    core = np.asarray(core)
    angle = math.radians(pose["angle"])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    centre = core.mean(0)
    q = (core - centre) @ rot.T
    ext = q.max(0) - q.min(0)
    scale = min(pose["fill"] * h / ext[1], 0.92 * w / ext[0], 0.92 * h / ext[1])
    lo, hi = q.min(0) * scale, q.max(0) * scale
    margin = 0.03 * long_side
    free = np.array([w, h]) - 2 * margin - (hi - lo)
    offset = margin - lo + np.maximum(free, 0) * np.asarray(pose["shift"])
    return h, w, scale, angle, centre, offset, q * scale + offset


def render(true_age: float, male: bool, seed: int, long_side: int = 512, nuisance: bool = True) -> Phantom:
    """One left-hand PA radiograph phantom at bone age `true_age` (months).

    The seed fixes the hand (proportions, per-bone timing), pose and nuisances: the same seed at another
    age is the same hand growing up. nuisance=False gives an upright, centred, clean exposure.
    """
    if not 0 <= float(true_age) <= 240:
        raise ValueError(f"true_age={true_age} months is outside 0..240; bone ages are months (e.g. 120 = 10 y)")
    if int(long_side) < 32:
        raise ValueError(f"long_side={long_side} px is too small to draw a hand; use 64 px or more")
    ss = np.random.SeedSequence([int(seed), 0xBA5E])
    r_id, r_pose, r_exp, r_noise, r_jit, r_marks = (np.random.default_rng(s) for s in ss.spawn(6))
    ident = _identity(r_id, bool(male))
    pose, expo = _pose(r_pose, long_side, nuisance), _exposure(r_exp, nuisance)
    age_m = float(maturity_clock(true_age, male))
    h, w, scale, angle, centre, offset, core_px = _place(ident, pose, int(long_side))
    cv = _Canvas(h, w, scale, angle, centre, offset)
    present, stages, land = _draw_hand(cv, ident, age_m, r_jit)

    # collimation: a rotated rectangle around the hand; outside it the film is unexposed (or blacked out)
    field_mask = np.ones((h, w), bool)
    nz = dict(rotation=round(pose["angle"], 3), landscape=pose["landscape"], canvas=[h, w],
              px_per_mm=round(scale, 4), **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in expo.items()})
    shutter = None
    if nuisance and r_marks.random() < 0.55:
        a = math.radians(pose["angle"] + r_marks.normal(0, 3))
        c, s = math.cos(a), math.sin(a)
        q = core_px @ np.array([[c, s], [-s, c]]).T  # into the rectangle's frame
        lo = q.min(0) - r_marks.uniform(0.02, 0.12, 2) * long_side
        hi = q.max(0) + r_marks.uniform(0.02, 0.12, 2) * long_side
        xx, yy = np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32)[:, None] + 0.5
        u, v = c * xx + s * yy, -s * xx + c * yy
        field_mask = (u >= lo[0]) & (u <= hi[0]) & (v >= lo[1]) & (v <= hi[1])
        shutter = float(r_marks.uniform(150, 245) if r_marks.random() < 0.7 else r_marks.uniform(0, 25))
        nz["collimation"] = dict(angle=round(math.degrees(a), 3), level=round(shutter, 2))
    mask = (cv.soft > 0) & field_mask

    from scipy import ndimage
    # trabecular texture: smooth noise at ~0.7 mm grain, modulating bone density by a few per cent
    k = max(int(round(0.7 * scale)), 1)
    tex = r_noise.standard_normal((h // k + 1, w // k + 1), dtype=np.float32)
    tex = np.repeat(np.repeat(tex, k, 0), k, 1)[:h, :w]  # blocky; the detector blur below smooths it
    total = expo["mu_soft"] * cv.soft + expo["mu_bone"] * cv.bone * (1 + 0.07 * tex)
    lin = 1 - np.exp(-total)
    gy, gx = expo["gradient"]
    if gy or gx:  # heel effect / uneven exposure
        lin *= (1 + gx * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
                + gy * np.linspace(-1, 1, h, dtype=np.float32)[:, None])
    img = expo["background"] + (expo["peak"] - expo["background"]) * np.clip(lin, 0, 1) ** expo["gamma"]
    if shutter is not None:
        img = np.where(field_mask, img, np.float32(shutter))
    img = ndimage.gaussian_filter(img, expo["blur"] * long_side / 512, truncate=3.0)
    img += r_noise.standard_normal((h, w), dtype=np.float32) * expo["noise"]
    image = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "L")
    if nuisance:
        nz.update(_marks(image, (cv.soft > 0) | ~field_mask, r_marks, long_side))
    boxes = _boxes(cv, land, mask)
    meta = dict(true_age=float(true_age), male=bool(male), maturity=round(age_m, 3), seed=int(seed),
                bones_present={k: bool(v) for k, v in present.items()}, stages=stages, nuisance=nz)
    return Phantom(np.asarray(image), mask, boxes, meta)


def _font(size):
    try:
        return ImageFont.load_default(size=max(int(size), 8))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _marks(image, taken, rng, long_side):
    """Burnt-in 'L' marker with initials, and sometimes a ruler or a bar; placed off the hand, in the field."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    out = {}
    free = ~taken

    def spot(bw, bh):  # a random place in the corners' band that does not touch the hand
        for _ in range(12):
            x = int(rng.uniform(0.02, 0.98) * max(w - bw, 1))
            y = int(rng.choice([rng.uniform(0.01, 0.25), rng.uniform(0.75, 0.98)]) * max(h - bh, 1))
            if free[y:y + bh, x:x + bw].all():
                return x, y
        return None
    if rng.random() < 0.85:
        size = rng.uniform(0.04, 0.08) * long_side
        text = "L " + "".join(chr(65 + int(i)) for i in rng.integers(0, 26, int(rng.integers(2, 4))))
        font = _font(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        where = spot(x1 - x0 + 4, y1 - y0 + 4)
        if where is not None:
            level = int(rng.uniform(200, 256))
            draw.text((where[0] - x0 + 2, where[1] - y0 + 2), text, fill=level, font=font)
            bx, by = int(where[0]), int(where[1])
            out["marker"] = dict(text=text, xy=[bx, by], box=[bx, by, bx + x1 - x0 + 4, by + y1 - y0 + 4])
    if rng.random() < 0.12:  # ruler with ticks along a free strip
        length, thick = int(rng.uniform(0.3, 0.6) * h), max(int(0.02 * long_side), 3)
        where = spot(thick, length)
        if where is not None:
            x, y = where
            draw.rectangle([x, y, x + thick, y + length], fill=int(rng.uniform(150, 230)))
            step = max(length // 20, 2)
            for t in range(y, y + length, step):
                draw.line([x, t, x + thick // 2, t], fill=30, width=max(long_side // 512, 1))
            out["ruler"] = [int(x), int(y), int(x + thick), int(y + length)]
    if rng.random() < 0.08:  # a burnt-in bar along one edge
        thick = int(rng.uniform(0.02, 0.06) * long_side)
        top = bool(rng.random() < 0.5)
        box = [0, 0, w, thick] if top else [0, h - thick, w, h]
        if free[box[1]:box[3], :].all():
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=int(rng.choice([0, 255])))
            out["bar"] = box
    return out


# ------------------------------------------------------------------------------------------ data set
def image_seed(seed: int, image_id: int) -> int:
    """The render seed of one image: a function of the data-set seed and the id only."""
    return int(np.random.SeedSequence([int(seed), int(image_id)]).generate_state(1)[0])


def _ids(n_train, n_val, n_test):
    test0 = FIRST_ID["test"]
    train0 = max(FIRST_ID["train"], int(math.ceil((test0 + n_test) / 1000) * 1000))
    val0 = max(FIRST_ID["validation"], int(math.ceil((train0 + n_train) / 1000) * 1000))
    return {"train": np.arange(train0, train0 + n_train), "validation": np.arange(val0, val0 + n_val),
            "test": np.arange(test0, test0 + n_test)}


def image_path(root, split: str, image_id: int, position: int = 0, n_split: int = 0) -> Path:
    """Where make_dataset writes an image (validation: first half in -1, the rest in -2)."""
    root = Path(root)
    if split == "train":
        return root / SPLIT_DIRS["train"] / f"{image_id}.png"
    if split == "validation":
        sub = 1 if position < (n_split + 1) // 2 else 2
        return root / SPLIT_DIRS["validation"] / f"boneage-validation-dataset-{sub}" / f"{image_id}.png"
    return root / SPLIT_DIRS["test"] / "Test Set Images" / f"{image_id}.png"


def _work(job):
    root, split, image_id, pos, n_split, age, male, label, seed, long_side = job
    ph = render(age, male, image_seed(seed, image_id), long_side)
    path = image_path(root, split, image_id, pos, n_split)
    Image.fromarray(ph.image, "L").save(path)
    Image.fromarray(ph.mask.astype(np.uint8) * 255, "L").save(Path(root) / "annotations" / f"{image_id}_mask.png")
    ann = dict(id=int(image_id), split=split, path=path.relative_to(root).as_posix(), true_age=float(age),
               male=bool(male), label=label,
               size=[int(ph.image.shape[0]), int(ph.image.shape[1])], boxes=ph.boxes,
               bones_present=ph.meta["bones_present"], stages=ph.meta["stages"],
               maturity=ph.meta["maturity"], nuisance=ph.meta["nuisance"])
    (Path(root) / "annotations" / f"{image_id}.json").write_text(json.dumps(ann, indent=1))
    return image_id


def _stable_xlsx(df: pd.DataFrame, path: Path) -> None:
    """Write an .xlsx whose bytes depend on the content only (fixed zip times and document dates)."""
    import datetime
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(df.columns))
    for row in df.itertuples(index=False):
        ws.append(list(row))
    fixed = datetime.datetime(2017, 1, 1)
    wb.properties.created = fixed
    buf = io.BytesIO()
    wb.save(buf)
    buf.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "docProps/core.xml":  # openpyxl stamps `modified` with the current time
                import re
                data = re.sub(rb"<dcterms:modified([^>]*)>[^<]*</dcterms:modified>",
                              rb"<dcterms:modified\1>2017-01-01T00:00:00Z</dcterms:modified>", data)
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(2017, 1, 1, 0, 0, 0)), data,
                          compress_type=zipfile.ZIP_DEFLATED)
    path.write_bytes(out.getvalue())


def make_dataset(out_dir, n_train: int, n_val: int, n_test: int, long_side: int = 512, seed: int = 0,
                 workers: int | None = None, progress: bool = True) -> Path:
    """Write a synthetic data set in the official RSNA layout (plus `annotations/` and `synth.json`).

    Same seed and arguments give byte-identical files whatever `workers` is (default: all CPUs, at most 8).
    """
    out = Path(out_dir).expanduser()
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(n) < 0:
            raise ValueError(f"{name}={n}: the number of images must be 0 or more")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; make_dataset writes a fresh data set. Delete it or pick "
                              "another out_dir.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    ids = _ids(n_train, n_val, n_test)
    tables = {split: sample_labels(len(ids[split]), rng, split).assign(id=ids[split])
              for split in ("train", "validation", "test")}
    (out / "annotations").mkdir(parents=True)
    (out / SPLIT_DIRS["train"]).mkdir()
    for sub in (1, 2):
        (out / SPLIT_DIRS["validation"] / f"boneage-validation-dataset-{sub}").mkdir(parents=True)
    (out / SPLIT_DIRS["test"] / "Test Set Images").mkdir(parents=True)

    t = tables["train"]
    pd.DataFrame({"id": t.id, "boneage": t.label.astype(int), "male": t.male}).to_csv(
        out / "train.csv", index=False)
    t = tables["validation"]
    pd.DataFrame({"Image ID": t.id, "male": t.male, "Bone Age (months)": t.label.astype(int)}).to_csv(
        out / SPLIT_DIRS["validation"] / "Validation Dataset.csv", index=False)
    t = tables["test"]
    _stable_xlsx(pd.DataFrame({"Case ID": t.id.astype(int), "Sex": np.where(t.male, "M", "F"),
                               "Ground truth bone age (months)": t.label.astype(float)}),
                 out / SPLIT_DIRS["test"] / "Bone age ground truth.xlsx")

    jobs = [(str(out), split, int(r.id), pos, len(t), float(r.true_age), bool(r.male),
             (int(r.label) if split != "test" else float(r.label)), int(seed), int(long_side))
            for split, t in tables.items() for pos, r in enumerate(t.itertuples())]
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(int(workers), 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc=f"synthetic RSNA ({long_side} px)", unit="img")
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            _work(job)
            bar and bar.update()
    else:
        import multiprocessing as mp
        # fork (as torch's DataLoader does) starts workers in milliseconds; spawn where there is no fork
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for _ in pool.imap_unordered(_work, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                bar and bar.update()
    if bar:
        bar.close()

    moments = {}
    for split, t in tables.items():
        err = t.label - t.true_age
        moments[split] = dict(n=int(len(t)), true_age_mean=round(float(t.true_age.mean()), 3) if len(t) else None,
                              true_age_sd=round(float(t.true_age.std()), 3) if len(t) > 1 else None,
                              male_fraction=round(float(t.male.mean()), 4) if len(t) else None,
                              mae_label_vs_true=round(float(err.abs().mean()), 4) if len(t) else None)
    info = dict(
        version=VERSION, seed=int(seed),
        arguments=dict(n_train=int(n_train), n_val=int(n_val), n_test=int(n_test), long_side=int(long_side)),
        rater_sd={s: rater_sd(s) for s in tables}, raters={"train": 1, "validation": 1, "test": N_TEST_RATERS},
        mae_floor={s: round(mae_floor(s), 4) for s in tables},
        mae_floor_note="E|label - true age| of a perfect model = rater_sd * sqrt(2/pi); train/validation labels "
                       "are also rounded to whole months (adds ~0.02 months).",
        female_clock=FEMALE_CLOCK, age_range=list(AGE_RANGE),
        id_ranges={s: [int(v[0]), int(v[-1])] if len(v) else [] for s, v in ids.items()},
        counts={s: int(len(v)) for s, v in ids.items()}, splits=moments,
    )
    (out / "synth.json").write_text(json.dumps(info, indent=1))
    return out


def read_annotation(root, image_id) -> dict:
    """The ground truth of one synthetic image (annotations/<id>.json)."""
    path = Path(root) / "annotations" / f"{int(image_id)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No annotation {path}: annotations exist only for the synthetic data set "
                                f"(made by bac.data.synth.make_dataset); check the root and the id.")
    return json.loads(path.read_text())


def read_mask(root, image_id) -> np.ndarray:
    """The hand mask (H, W) bool of one synthetic image."""
    path = Path(root) / "annotations" / f"{int(image_id)}_mask.png"
    if not path.is_file():
        raise FileNotFoundError(f"No mask {path}: masks exist only for the synthetic data set (made by "
                                f"bac.data.synth.make_dataset); check the root and the id.")
    return np.asarray(Image.open(path)) > 127


def file_digest(root) -> str:
    """SHA-256 over every file's relative path and bytes (xlsx included): equal for equal data sets."""
    h = hashlib.sha256()
    root = Path(root)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
