"""Class/regression activation maps and map-to-box utilities.

CAM (Zhou et al. 2016): for feature maps F (K, h, w) before global pooling and the weights W (C, K) of
the linear layer after it, the map of output t is A_t(i, j) = sum_k W[t, k] F[k, i, j] (Chen 2022 Eq. 2;
Ren 2019's regression activation map with the regression weights). Grad-CAM for the other models comes
from pytorch-grad-cam (`gradcam`).

Used in: notebooks/10_ren2019_regression_cnn.ipynb, 30_chen2022_attention_ldl, 50_zheng2024_kdaldl,
`bac predict`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def class_activation_map(features: torch.Tensor, weights: torch.Tensor, index=None) -> torch.Tensor:
    """A (B, h, w) = sum_k W[index, k] F[:, k]; `weights` is (C, K) or (K,); `index` an int or (B,) tensor."""
    if weights.dim() == 1:
        w = weights[None].expand(features.shape[0], -1)
    elif index is None:
        raise ValueError("index (the class t of each image) is needed when weights has several rows")
    else:
        idx = torch.as_tensor(index, device=weights.device).long().reshape(-1)
        w = weights[idx.expand(features.shape[0]) if idx.numel() == 1 else idx]
    return torch.einsum("bk,bkhw->bhw", w.to(features.dtype), features)


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear."""
    return nn.functional.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalize_map(m: np.ndarray, scale: float | str = "authors") -> np.ndarray:
    """The map on the scale its thresholds tau are read on.

    "authors": as Chen et al.'s released code makes the map that `data/crop_patches.py` thresholds (at 40 for the
    hand): m / max(m) as 8 bits (negatives clipped: their uint8 cast of negative values is undefined), coloured
    with OpenCV's COLORMAP_JET, written as PNG and read back as grey (`cv2.imread(path, 0)`), 0..255. Jet's grey
    level rises to 225 at heat ~158 and falls to 38 at 255, so their 40 keeps heat levels 37..253 of 255: about
    15 % of the maximum and up. A number: min-max to [0, scale] (our earlier reading, kept in smoke/demo)."""
    m = np.asarray(m, float)
    if scale == "authors":
        import cv2  # opencv-python-headless, as the authors used
        top = m.max()
        heat = np.zeros(m.shape, np.uint8) if top <= 0 else (255 * np.clip(m / top, 0, 1)).astype(np.uint8)
        png = cv2.imencode(".png", cv2.applyColorMap(heat, cv2.COLORMAP_JET))[1]
        return cv2.imdecode(png, cv2.IMREAD_GRAYSCALE).astype(float)
    lo, hi = m.min(), m.max()
    return np.zeros_like(m) if hi - lo < 1e-12 else (m - lo) / (hi - lo) * float(scale)


def threshold_box(m: np.ndarray, tau: float, largest: bool = True):
    """Box [x0, y0, x1, y1) of the pixels of map `m` at or above `tau` (the largest connected region when
    `largest`); None when nothing passes the threshold."""
    mask = np.asarray(m) >= tau
    if not mask.any():
        return None
    if largest:
        from skimage.measure import label
        lab = label(mask)
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        mask = lab == counts.argmax()
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def box_iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class _WithSex(nn.Module):
    """Adapts `model(x, male)` to the single-input call pytorch-grad-cam makes."""

    def __init__(self, model, male):
        super().__init__()
        self.model, self.male = model, male

    def forward(self, x):
        from bac.train import age_of
        return age_of(self.model(x, self.male.to(x.device))).reshape(-1, 1)


def gradcam(model: nn.Module, target_layer: nn.Module, x: torch.Tensor, male, reshape_transform=None) -> np.ndarray:
    """Grad-CAM maps (B, H, W) in [0, 1] of the predicted age with respect to `target_layer`."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import RawScoresOutputTarget
    wrapped = _WithSex(model, torch.as_tensor(np.asarray(male, dtype=np.float32)))
    with GradCAM(model=wrapped, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
        return cam(input_tensor=x, targets=[RawScoresOutputTarget()] * len(x))
