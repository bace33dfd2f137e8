"""Ren 2019's fine attention map: Hessian-based ridge filtering of the coarse (cropped) hand.

Ren et al. cite Frangi et al.'s multiscale vesselness (MICCAI 1998), a filter on the eigenvalues of the
Hessian at several scales sigma; scikit-image provides it (`frangi`) and its relatives (`sato`,
`meijering`, `hessian`). Bright ridges (bones on darker soft tissue) by default.

Used in: notebooks/02_preprocessing.ipynb, 10_ren2019_regression_cnn (pipeline 'ren2019').
"""
from __future__ import annotations

import numpy as np

METHODS = ("frangi", "sato", "meijering", "hessian")  # functions of skimage.filters


def ridge_map(image: np.ndarray, method: str = "frangi", sigmas=(1.0, 2.0, 4.0), black_ridges: bool = False,
              ) -> np.ndarray:
    """uint8 ridge response of `image` (uint8 HxW), scaled so that its 99.5th percentile is 255.

    `sigmas` are in pixels of `image`; the notebooks pass them scaled to the output size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ridge filter {method!r}; choose one of {', '.join(METHODS)}")
    from skimage import filters
    x = image.astype(np.float32) / 255.0
    r = getattr(filters, method)(x, sigmas=list(sigmas), black_ridges=black_ridges, mode="reflect")
    top = np.percentile(r, 99.5)
    if not np.isfinite(top) or top <= 0:
        return np.zeros(image.shape, np.uint8)
    return np.clip(np.rint(r / top * 255), 0, 255).astype(np.uint8)
