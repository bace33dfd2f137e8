"""Burnt-in markers ("L"/"R" letters, initials, rulers, tags): found and erased before any localiser sees a film.

A lead marker is small, much brighter than what surrounds it and sharp-edged; on a low-contrast film it is
the brightest thing there (255 where the bones stay below 120), so it decides every global threshold, the
clusters of Li 2021's segmentation, the ridge map of Ren 2019 and where a CAM looks. None of the five papers
says what it does about markers. Here they are erased from every image as it is read (`bac.data.rsna.read_image`)
unless a caller asks for the raw film.

`find(image)` -> a boolean mask of marker pixels: at `work` px (long side) the white top-hat (a grey opening
with a disk of `radius` px removes strokes thinner than the disk; what is left lifts off its surroundings)
is thresholded at `lift`; pieces closer than `join` px form one candidate; a candidate is a marker when it
has at least `min_area` lifted pixels, their mean top-hat is above `mean_lift`, its bright pixels (90th
percentile) stand `contrast` grey levels above the median of a ring around it, and they reach `bright` x the
film's 99.5th percentile (lead and burnt-in text is as bright as the brightest bone or brighter), unless the
candidate lifts by more than `sure_lift`. A bone's edges lift too, but less and less brightly. `erase(image)`
fills the marker pixels (grown by one working pixel) with the median of that ring: flat background where
there was a letter.

The thresholds were chosen on the 37 annotated real originals (so these are training scores):
`benchmarks/real_films.py` counts 40 of their 56 annotated markers erased and 0.007 % of the annotated hand
boxes erased outside any marker (benchmarks/results/real_films.json). What is missed: small burnt-in symbols
(squares, triangles: a few pixels at the working size), markers cut by the film's edge, and typed initials
as grey as the bones. On 60 demo-size phantoms (384 px): all 33 "L" + initials and 3 rulers found; 0.03 % of
the hand masks erased on average, at most 0.33 % (the bright cut end of a forearm bone at a collimation edge).
The sizes are tuned at `work` = 512 px: larger working sizes (768, 1024) found far fewer real markers.

Used in: `bac.data.rsna.read_image` (every pipeline, `bac predict`), notebooks/02_preprocessing.ipynb.
"""
from __future__ import annotations

import numpy as np

DEFAULTS = dict(work=512, radius=6, lift=40, join=3, mean_lift=60, sure_lift=100, bright=0.9, contrast=50, min_area=10)


def candidates(image: np.ndarray, work: int = 512, radius: int = 6, lift: float = 40, join: int = 3,
               mean_lift: float = 60, sure_lift: float = 100, bright: float = 0.9, contrast: float = 50,
               min_area: int = 10) -> tuple[np.ndarray, list[dict]]:
    """(small, markers): `image` at `work` px (at most its own size) and one dict per marker found there
    (`box` [x0, y0, x1, y1) and `mask` in the small image's pixels, `background` grey level, `lift`,
    `contrast`). Sizes are in pixels of a `work` = 512 image and scale with the working size."""
    from scipy import ndimage
    from skimage.measure import label, regionprops
    from skimage.morphology import disk, white_tophat
    from bac.preprocess import resize_long
    side = min(int(work), max(image.shape[:2]))
    small = resize_long(image, side)
    k = side / 512
    top = white_tophat(small, disk(max(1, round(radius * k)))).astype(np.float32)
    lifted = top > lift
    pieces = label(ndimage.binary_dilation(lifted, iterations=max(1, round(join * k))), connectivity=2)
    grey, (h, w), pad = small.astype(np.float32), small.shape, max(2, round(4 * k))
    top_grey = max(float(np.percentile(grey, 99.5)), 1.0)
    out = []
    for reg in regionprops(pieces):
        y0, x0, y1, x1 = reg.bbox
        y0, x0, y1, x1 = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
        part = pieces[y0:y1, x0:x1] == reg.label
        core = part & lifted[y0:y1, x0:x1]
        mean = float(top[y0:y1, x0:x1][core].mean()) if core.any() else 0.0
        if core.sum() < min_area * k * k or mean <= mean_lift:
            continue
        ring = ndimage.binary_dilation(part, iterations=pad) & ~part
        vals = grey[y0:y1, x0:x1]
        background = float(np.median(vals[ring])) if ring.any() else float(np.median(grey))
        peak = float(np.percentile(vals[core], 90))
        if peak - background <= contrast or (peak < bright * top_grey and mean <= sure_lift):
            continue
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = ndimage.binary_dilation(part & (vals > background + 0.5 * (peak - background)))
        out.append(dict(box=[x0, y0, x1, y1], mask=mask, background=background, contrast=peak - background,
                        lift=mean))
    return small, out


def find(image: np.ndarray, **params) -> np.ndarray:
    """Boolean mask (image's shape) of the marker pixels of `image` (uint8 HxW); `params` override `DEFAULTS`."""
    from bac.preprocess import resize
    small, found = candidates(image, **{**DEFAULTS, **params})
    mask = np.zeros(small.shape, bool)
    for m in found:
        mask |= m["mask"]
    return resize(mask.astype(np.uint8) * 255, image.shape[:2]) > 0 if mask.any() else np.zeros(image.shape[:2], bool)


def boxes(image: np.ndarray, **params) -> list[list[int]]:
    """The markers' boxes [x0, y0, x1, y1) in `image`'s pixels."""
    from bac.preprocess.boxes import scale_box
    small, found = candidates(image, **{**DEFAULTS, **params})
    return [scale_box(m["box"], small.shape, image.shape) for m in found]


def erase(image: np.ndarray, **params) -> np.ndarray:
    """`image` with every marker filled with the grey level around it (a copy; `image` itself when none)."""
    from PIL import Image
    small, found = candidates(image, **{**DEFAULTS, **params})
    if not found:
        return image
    level = np.zeros(small.shape, np.uint8)   # 0: keep; else the fill level + 1 (nearest-neighbour upscaled)
    for m in found:
        level[m["mask"]] = min(int(round(m["background"])), 254) + 1
    level = np.asarray(Image.fromarray(level).resize(image.shape[:2][::-1], Image.NEAREST))
    out = image.copy()
    out[level > 0] = level[level > 0] - 1
    return out
