"""Intensity standardisation: global histogram equalisation, CLAHE, histogram matching (scikit-image).

Li 2021 and Zheng 2024 equalise the cropped hand globally; Ren 2019 matches every radiograph's histogram
to one reference distribution before detection. Images are uint8 HxW in and out.

Used in: notebooks/02_preprocessing.ipynb, 10_ren2019_regression_cnn, 20_li2021_mobilenetv3,
50_zheng2024_kdaldl (through the pipelines in `bac.preprocess`).
"""
from __future__ import annotations

import numpy as np
from skimage import exposure


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8."""
    return np.clip(np.rint(np.asarray(x, float) * 255), 0, 255).astype(np.uint8)


def equalize(image: np.ndarray, clahe: bool = False, clip_limit: float = 0.01, mask: np.ndarray | None = None,
             ) -> np.ndarray:
    """Global histogram equalisation (`clahe=False`) or CLAHE (`clip_limit` as in scikit-image).

    `mask` restricts the histogram to the hand (background pixels then stay dark instead of taking half of
    the grey levels); pixels outside the mask are set to 0.
    """
    image = np.asarray(image)
    if image.max() == image.min():  # a blank image has no histogram to flatten
        return np.zeros_like(image, np.uint8)
    if clahe:
        out = to_uint8(exposure.equalize_adapthist(image, clip_limit=clip_limit))
    else:
        out = to_uint8(exposure.equalize_hist(image, mask=None if mask is None or not mask.any() else mask))
    if mask is not None:
        out[~mask.astype(bool)] = 0
    return out


def equalised_crop(image: np.ndarray, used, size: int, mask: np.ndarray | None = None, clahe: bool = False
                   ) -> np.ndarray:
    """The crop `used` (box in `image`'s pixels) at `size` px (long side), equalised inside `mask` with the
    background set to 0, letterboxed: (1, size, size). `mask`: a localiser's uint8 mask (0..255) over the
    whole image at any resolution, stretched over the image and cropped like it; None equalises the whole crop.
    Li 2021's and Zheng 2024's pipelines end with it."""
    from bac.preprocess import pad_square, resize, resize_long
    x0, y0, x1, y1 = used
    small = resize_long(image[y0:y1, x0:x1], size)
    if mask is not None:
        mask = resize(resize(mask, image.shape[:2])[y0:y1, x0:x1], small.shape[:2]) > 127
    return pad_square(equalize(small, clahe=clahe, mask=mask), size)[None]


def foreground(image: np.ndarray) -> np.ndarray:
    """The pixels above the image's Otsu threshold (hand, and any bright shutter or label); all of a flat image."""
    from skimage.filters import threshold_otsu
    image = np.asarray(image)
    if image.max() == image.min():
        return image.ravel()
    return image[image > threshold_otsu(image)]


def quantiles(images, n: int = 64, thumb: int = 128) -> list[int]:
    """`n` evenly spaced grey-level quantiles of the pooled foreground pixels (`foreground`) of `images`
    (each reduced to `thumb` px): a JSON-able reference distribution for `match_histogram` (enters the
    prepared-image cache key)."""
    from skimage.transform import resize
    pix = [foreground(resize(im, (thumb, max(1, round(thumb * im.shape[1] / im.shape[0]))), order=1,
                             preserve_range=True, anti_aliasing=True)) for im in images]
    if not pix:
        raise ValueError("quantiles() needs at least one reference image (the training split was empty?)")
    return [int(round(v)) for v in np.quantile(np.concatenate(pix), np.linspace(0, 1, n))]


def match_histogram(image: np.ndarray, reference) -> np.ndarray:
    """Ren 2019's histogram matching, on the foreground: the grey levels above the image's Otsu threshold
    are mapped quantile to quantile onto `reference` (from `quantiles`: foreground quantiles of reference
    images), the background below linearly onto [0, the reference's lowest level].

    Matching the whole film (background included) to a reference pooled over films stretches a dark, flat
    background over many grey levels (its detector noise becomes texture) and saturates the bones of films
    whose background is bright (measured on the phantoms: see notebook 10's deviations).
    """
    image = np.asarray(image)
    ref = np.asarray(reference, float).ravel()
    src = np.quantile(foreground(image), np.linspace(0, 1, len(ref)))
    src = np.maximum.accumulate(src) + np.arange(len(src)) * 1e-6     # np.interp needs increasing levels
    xp, fp = np.concatenate([[min(0.0, src[0] - 1)], src]), np.concatenate([[0.0], ref])
    return np.clip(np.rint(np.interp(image.astype(float), xp, fp)), 0, 255).astype(np.uint8)


def _register():
    from bac.preprocess import pad_square, register, resize_long

    @register("equalize", params=lambda s, cfg, df: dict(clahe=s.clahe))
    def equalize_pipeline(image: np.ndarray, size: int, clahe: bool = False, clip_limit: float = 0.01) -> np.ndarray:
        """The whole radiograph letterboxed, equalised (globally, or CLAHE); the padding stays black."""
        return pad_square(equalize(resize_long(image, size), clahe=clahe, clip_limit=clip_limit), size)[None]


_register()
