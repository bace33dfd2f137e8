"""Boxes, masks and crops shared by the localisers (Li 2021, Zheng 2024, Ren 2019, Chen 2022's CAM crops).

Boxes are [x0, y0, x1, y1) in pixels of the image they refer to (x1, y1 exclusive), as in `bac.cam`.
`check_box` is the one place that decides a localisation failed (empty, sliver, implausible); the
pipelines then fall back to the whole image and count it.

Used in: notebooks/02_preprocessing.ipynb, 10_ren2019_regression_cnn, 20_li2021_mobilenetv3,
30_chen2022_attention_ldl, 50_zheng2024_kdaldl.
"""
from __future__ import annotations

import numpy as np


def box_iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1) boxes (`bac.cam.box_iou`, imported on use: bac.cam loads torch)."""
    from bac.cam import box_iou as iou
    return iou(a, b)


def mask_to_box(mask: np.ndarray) -> list[int] | None:
    """Tight box of the True pixels of `mask`; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def largest_component(mask: np.ndarray, fill: bool = True) -> np.ndarray:
    """The largest 8-connected region of `mask` (holes filled when `fill`); all False if `mask` is empty."""
    from scipy import ndimage
    from skimage.measure import label
    lab = label(mask, connectivity=2)
    if lab.max() == 0:
        return np.zeros(mask.shape, bool)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    out = lab == counts.argmax()
    return ndimage.binary_fill_holes(out) if fill else out


def scale_box(box, from_shape, to_shape) -> list[int]:
    """Map a box from an image of shape `from_shape` (H, W) to the same place in one of `to_shape`."""
    sy, sx = to_shape[0] / from_shape[0], to_shape[1] / from_shape[1]
    x0, y0, x1, y1 = box
    return [int(np.floor(x0 * sx)), int(np.floor(y0 * sy)), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))]


def expand_box(box, shape, margin: float = 0.0) -> list[int]:
    """Grow `box` by `margin` x its size on each side, clamped to an image of `shape` (H, W)."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = shape[:2]
    return [max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my))),
            min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))]


def crop_to_box(image: np.ndarray, box, margin: float = 0.0) -> tuple[np.ndarray, list[int]]:
    """The part of `image` inside `box` grown by `margin` (clamped to the image); returns (crop, box used)."""
    x0, y0, x1, y1 = used = expand_box(box, image.shape, margin)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} lies outside the image of shape {image.shape}; pass a box in its pixels")
    return image[y0:y1, x0:x1], used


def check_box(box, shape, min_side: float = 0.2, min_area: float = 0.06, max_aspect: float = 4.0) -> str:
    """'' when `box` is a plausible hand box in an image of `shape`, else the reason it is not.

    A hand covers a good part of a hand radiograph: a box narrower or shorter than `min_side` of the image,
    covering less than `min_area` of it, or longer than `max_aspect` times its width is a failure (a
    marker, a ruler, a sliver), not a hand.
    """
    if box is None:
        return "nothing found"
    h, w = shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw <= 0 or bh <= 0:
        return "empty box"
    if bw < min_side * w or bh < min_side * h:
        return "sliver"
    if bw * bh < min_area * w * h:
        return "too small"
    if max(bw / bh, bh / bw) > max_aspect:
        return "implausible aspect"
    return ""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def covered(box, crop) -> float:
    """Fraction of the area of `box` that lies inside `crop`."""
    ix = max(0, min(box[2], crop[2]) - max(box[0], crop[0]))
    iy = max(0, min(box[3], crop[3]) - max(box[1], crop[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return ix * iy / area if area > 0 else 0.0


def boxes_inside_fraction(boxes, crop, min_cover: float = 0.9) -> float:
    """Fraction of `boxes` (e.g. the ossification sites) with at least `min_cover` of their area inside
    `crop`: a crop that cuts off the wrist loses the carpals and scores lower. NaN for no boxes."""
    boxes = list(boxes)
    if not boxes:
        return float("nan")
    return float(np.mean([covered(b, crop) >= min_cover for b in boxes]))
