"""Burnt-in markers ("L"/"R" letters, initials, rulers, tags): found and erased before any localiser sees a film.

A lead marker is small, much brighter than what surrounds it and sharp-edged; on a low-contrast film it is
the brightest thing there (255 where the bones stay below 120), so it decides every global threshold, the
clusters of Li 2021's segmentation, the ridge map of Ren 2019 and where a CAM looks. None of the five papers
says what it does about markers. Here they are erased from every image as it is read (`bac.data.rsna.read_image`)
unless a caller asks for the raw film.

`find(image)` -> a boolean mask of marker pixels: at `work` px (long side) the white top-hat (a grey opening
with a disk of `radius` px removes strokes thinner than the disk; what is left lifts off its surroundings)
is thresholded at `lift`; pieces closer than `join` px form one candidate, grouped twice (`lines`): as they
are, and with straight lines longer than 60 px left out (a collimation edge or a ruler otherwise merges with
the letter beside it into one long candidate that is either rejected or erased only where it is brightest).
A candidate is a marker when it has at least `min_area` lifted pixels, their mean top-hat is above
`mean_lift`, its bright pixels (90th percentile) stand `contrast` grey levels above the median of a ring
around it, and they reach `bright` x the film's 99.5th percentile (lead and burnt-in text is as bright as the
brightest bone or brighter), unless the candidate lifts by more than `sure_lift` or stands more than
`sure_contrast` above its ring. A bone's edges lift too, but less and less brightly. Four passes (`PASSES`):
letters and tags at 512 px; small symbols at up to 2048 px; dark ink (the same search on the negative: outlined
symbols, ruler ticks and text) on a ground at least `ground` x the film's brightest; and digital overlays,
regions of one grey level (`flat_candidates`: a plate holding a letter, a black label box). `erase(image)` fills
the marker pixels (its lifted and bright pixels, grown by one working pixel) with the median of that ring:
flat background where there was a letter; an enclosing marker (a plate) is filled last.

The thresholds were chosen on the 37 annotated real originals (so these are training scores):
`benchmarks/real_films.py` counts 53 of their 56 annotated markers erased (40 with one 512 px pass, no line
grouping, no `sure_contrast`; 51 without the dark and flat passes) and 0.025 % of the annotated hand boxes
erased outside any marker, at most 0.38 % of one (marker plates' and rulers' edges beyond the annotated box,
checked on overlays; no bone). Missed: a tilted plastic marker plate with grey letters (1430), a blurred tag
(4505); a grey "L" wider than the disk on a low-contrast film (4444) is erased only at its edges. On 300
demo-size phantoms (384 px, ages 0-230 months): 0.21 % of the hand masks erased on average (the same with and
without the dark and flat passes), but 1-4 % of six hands (carpal clusters of low-contrast films lift like
letters at 384 px) and 37 % of one (a thin adult skeleton lifted whole): not solved yet.

Used in: `bac.data.rsna.read_image` (every pipeline, `bac predict`), notebooks/02_preprocessing.ipynb.
"""
from __future__ import annotations

import os

import numpy as np

DEFAULTS = dict(work=512, radius=6, lift=40, lines=(0, 60), join=3, mean_lift=60, sure_lift=100, sure_contrast=140,
                bright=0.9, contrast=50, min_area=10, dark=False, ground=0.0, flat=False)
# Each pass overrides DEFAULTS: the coarse one finds letters and tags; the fine one (the film's own resolution, up
# to 2048 px) finds small burnt-in symbols (outlined triangles, squares) a few pixels wide at 512 px; the dark one
# finds dark ink (outlines, ruler ticks and text) on a ground as bright as the film's brightest (an unexposed
# corner, a ruler's strip); the flat one finds digital overlays (a letter on a plate of one grey level).
FINE = dict(work=2048, radius=2, min_area=2, join=1, lines=(0,))
PASSES = ({}, FINE, dict(FINE, dark=True, lift=100, contrast=120, bright=0.0, ground=0.55), dict(work=2048, flat=True))
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def candidates(image: np.ndarray, **params) -> tuple[np.ndarray, list[dict]]:
    """(small, candidates): `image` at `work` px (at most its own size) and one dict per candidate found there:
    its `box` [x0, y0, x1, y1) in the small image's pixels and the `mask` of its pixels within that box, the
    `background` grey level, `lift`, `contrast`, `peak` (/ the film's 99.5th percentile), the `lines` grouping,
    and `marker`: whether it passed every test, else `why` not. `params` override `DEFAULTS`; sizes are in
    pixels of a `work` = 512 image and scale with the working size."""
    import cv2
    from skimage.measure import label, regionprops
    from skimage.morphology import disk
    from bac.preprocess import resize_long

    def grow(mask, n):               # n steps of the 3x3 cross, as scipy's binary_dilation(iterations=n)
        return cv2.dilate(mask.astype(np.uint8), CROSS, iterations=n).astype(bool)

    p = {**DEFAULTS, **params}
    if p["flat"]:
        return flat_candidates(image, **p)
    side = min(int(p["work"]), max(image.shape[:2]))
    small = resize_long(image, side)
    film_top = max(float(np.percentile(small, 99.5)), 1.0)      # the film's brightest (bones, lead, white corners)
    if p["dark"]:                   # dark ink on a bright ground: the same search on the negative
        small = 255 - small
    k = side / 512
    top = cv2.morphologyEx(small, cv2.MORPH_TOPHAT, disk(max(1, round(p["radius"] * k))).astype(np.uint8),
                           borderType=cv2.BORDER_REFLECT).astype(np.float32)     # skimage's white_tophat, faster
    grey, (h, w), pad = small.astype(np.float32), small.shape, max(2, round(4 * k))
    top_grey = max(float(np.percentile(grey, 99.5)), 1.0)
    out = []
    for line in p["lines"]:      # grouped as they are and (line > 0) with long straight lines (frame edges) left out
        lifted, lines = top > p["lift"], np.zeros(small.shape, bool)
        if line:
            n, lift8 = max(3, round(line * k)), lifted.astype(np.uint8)
            lines = (cv2.morphologyEx(lift8, cv2.MORPH_OPEN, np.ones((1, n), np.uint8))
                     | cv2.morphologyEx(lift8, cv2.MORPH_OPEN, np.ones((n, 1), np.uint8))).astype(bool)
            lines = grow(lines, max(1, round(2 * k)))
            lifted &= ~lines
        pieces = label(grow(lifted, max(1, round(p["join"] * k))) & ~lines, connectivity=2)
        for reg in regionprops(pieces):
            y0, x0, y1, x1 = reg.bbox
            y0, x0, y1, x1 = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
            part = pieces[y0:y1, x0:x1] == reg.label
            core = part & lifted[y0:y1, x0:x1]
            mean = float(top[y0:y1, x0:x1][core].mean()) if core.any() else 0.0
            if core.sum() < p["min_area"] * k * k:
                continue
            ring = grow(part, pad) & ~part & ~lines[y0:y1, x0:x1]
            vals = grey[y0:y1, x0:x1]
            background = float(np.median(vals[ring])) if ring.any() else float(np.median(grey))
            peak = float(np.percentile(vals[core], 90))
            why = ("faint" if mean <= p["mean_lift"] else "low contrast" if peak - background <= p["contrast"]
                   else "dim" if peak < p["bright"] * top_grey and mean <= p["sure_lift"]
                   and peak - background <= p["sure_contrast"]
                   else "dark ground" if p["dark"] and 255 - background < p["ground"] * film_top else "")
            mask = grow(core | (part & (vals > background + 0.5 * (peak - background))), 1)
            out.append(dict(box=[x0, y0, x1, y1], mask=mask, background=255 - background if p["dark"] else background,
                            contrast=peak - background, lift=mean, peak=peak / top_grey, lines=line, marker=not why,
                            why=why))
    return (255 - small if p["dark"] else small), out


def flat_candidates(image: np.ndarray, **params) -> tuple[np.ndarray, list[dict]]:
    """`candidates` of digital overlays: regions of one grey level (every 3 x 3 neighbourhood within one level;
    film, bone and soft tissue always carry noise) of at least `min_area` pixels, with what they enclose (a letter
    on a plate), standing `contrast` grey levels above the median of a ring around them (white regions, > 247,
    are clipped film), or, away from the film's edges and under 1 % of it, twice `contrast` below it (a black
    label box; black film clipped at 0 reaches the film's edge or is larger)."""
    import cv2
    from scipy import ndimage
    from skimage.measure import label
    from bac.preprocess import resize_long
    p = {**DEFAULTS, **params}
    side = min(int(p["work"]), max(image.shape[:2]))
    small = resize_long(image, side)
    k, (h, w) = side / 512, small.shape
    square = np.ones((3, 3), np.uint8)
    flat = (cv2.dilate(small, square) - cv2.erode(small, square) <= 1) & (small < 247)
    pieces = label(cv2.dilate(flat.astype(np.uint8), square).astype(bool), connectivity=1)
    areas = np.bincount(pieces[flat], minlength=pieces.max() + 1)
    pad, out, where = max(2, round(4 * k)), [], ndimage.find_objects(pieces)
    for n in np.flatnonzero(areas >= max(p["min_area"] * k * k, 9)):
        ys, xs = where[n - 1]
        inside = ys.start > 0 and xs.start > 0 and ys.stop < h and xs.stop < w and areas[n] < 0.01 * h * w
        y0, x0, y1, x1 = max(0, ys.start - pad), max(0, xs.start - pad), min(h, ys.stop + pad), min(w, xs.stop + pad)
        part = ndimage.binary_fill_holes(pieces[y0:y1, x0:x1] == n)
        ring = cv2.dilate(part.astype(np.uint8), square, iterations=pad).astype(bool)
        ring &= ~cv2.dilate(part.astype(np.uint8), square, iterations=2).astype(bool)    # past a plate's frame line
        vals = small[y0:y1, x0:x1].astype(np.float32)
        background = float(np.median(vals[ring])) if ring.any() else float(np.median(small))
        level = float(np.median(vals[part & flat[y0:y1, x0:x1]]))
        why = "" if level - background > p["contrast"] or inside and background - level > 2 * p["contrast"] \
            else "low contrast"
        out.append(dict(box=[int(x0), int(y0), int(x1), int(y1)], mask=cv2.dilate(part.astype(np.uint8), square,
                        iterations=2).astype(bool), background=background,
                        contrast=level - background, lift=0.0, peak=level, lines=0, marker=not why, why=why))
    return small, out


def _markers(image: np.ndarray, params: dict):
    """(small, markers) of each pass (`PASSES`, every one with `params` on top)."""
    for extra in PASSES:
        small, found = candidates(image, **{**extra, **params})
        yield small, [m for m in found if m["marker"]]


def find(image: np.ndarray, **params) -> np.ndarray:
    """Boolean mask (image's shape) of the marker pixels of `image` (uint8 HxW); `params` override `DEFAULTS`."""
    from bac.preprocess import resize
    out = np.zeros(image.shape[:2], bool)
    for small, found in _markers(image, params):
        mask = np.zeros(small.shape, bool)
        for m in found:
            x0, y0, x1, y1 = m["box"]
            mask[y0:y1, x0:x1] |= m["mask"]
        if mask.any():
            out |= resize(mask.astype(np.uint8) * 255, image.shape[:2]) > 0
    return out


def boxes(image: np.ndarray, **params) -> list[list[int]]:
    """The markers' boxes [x0, y0, x1, y1) in `image`'s pixels."""
    from bac.preprocess.boxes import scale_box
    return [scale_box(m["box"], small.shape, image.shape) for small, found in _markers(image, params) for m in found]


def erase(image: np.ndarray, **params) -> np.ndarray:
    """`image` with every marker filled with the grey level around it (a copy; `image` itself when none)."""
    from PIL import Image
    out = image
    for small, found in _markers(image, params):
        if not found:
            continue
        level = np.zeros(small.shape, np.uint8)   # 0: keep; else the fill level + 1 (nearest-neighbour upscaled)
        for m in sorted(found, key=lambda m: m["mask"].sum()):     # an enclosing marker (a plate) fills last
            x0, y0, x1, y1 = m["box"]
            level[y0:y1, x0:x1][m["mask"]] = min(int(round(m["background"])), 254) + 1
        level = np.asarray(Image.fromarray(level).resize(image.shape[:2][::-1], Image.NEAREST))
        out = out.copy() if out is image else out
        out[level > 0] = level[level > 0] - 1
    return out


def erase_file(image: np.ndarray, path) -> np.ndarray:
    """`erase(image)` for the film stored at `path`, the erased pixels cached by the file's content (a few kB under
    `<cache>/markers-<code>/`): every pipeline, CAM and localiser reads the same film, erased once. Inside
    `bac.preprocess.uncached_localisation()` nothing is read or stored."""
    from bac.data import cache_root, code_version
    from bac.preprocess import file_hash, uncached
    if uncached():                                # a latency measurement: the search as a new film needs it
        return erase(image)
    store = cache_root() / f"markers-{code_version('preprocess/markers.py', 'preprocess/__init__.py')}"
    target = store / f"{file_hash(path)}.npz"
    if target.exists():
        with np.load(target) as z:
            where, values = z["where"], z["values"]
        if not len(where):
            return image
        out = image.copy()
        out.reshape(-1)[where] = values
        return out
    out = erase(image)
    where = np.flatnonzero(out != image).astype(np.uint32)
    store.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, where=where, values=out.reshape(-1)[where])
    tmp.replace(target)
    return out
