"""bac.cam: class activation maps, upsampling, normalisation, map -> box, IoU, Grad-CAM."""
import numpy as np
import pytest
import torch
from torch import nn

from bac import cam


def test_cam_single_weight_vector_and_class_rows():
    torch.manual_seed(0)
    f = torch.randn(3, 4, 5, 6)
    w = torch.randn(4)
    assert torch.allclose(cam.class_activation_map(f, w), (w[None, :, None, None] * f).sum(1), atol=1e-5)
    rows = torch.randn(10, 4)
    a = cam.class_activation_map(f, rows, 7)  # one class for the whole batch
    assert torch.allclose(a, (rows[7][None, :, None, None] * f).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="index"):
        cam.class_activation_map(f, rows)


def test_cam_of_a_linear_layer_after_average_pooling_explains_its_output():
    """Eq. 1-3 of Chen 2022: for GAP + FC, the class score is the mean of the class map (plus the bias)."""
    torch.manual_seed(1)
    f = torch.randn(2, 8, 7, 7)
    fc = nn.Linear(8, 5)
    scores = fc(f.mean((2, 3)))
    t = scores.argmax(1)
    a = cam.class_activation_map(f, fc.weight.detach(), t)
    assert torch.allclose(a.mean((1, 2)) + fc.bias[t], scores[torch.arange(2), t], atol=1e-5)


def test_upsample_keeps_constants_and_shape():
    m = torch.full((2, 3, 4), 7.0)
    up = cam.upsample(m, (12, 16))
    assert up.shape == (2, 12, 16) and torch.allclose(up, torch.full_like(up, 7.0))


def test_normalize_map_range():
    m = np.array([[-2.0, 0.0], [3.0, 8.0]])
    n = cam.normalize_map(m, 100)
    assert n.min() == 0 and n.max() == 100 and n[0, 1] == pytest.approx(20.0)
    assert cam.normalize_map(m, scale=255).max() == 255
    assert (cam.normalize_map(np.full((3, 3), 5.0), 100) == 0).all()


def test_authors_scale_on_a_known_map():
    """Chen's released code: m / max(m) -> uint8 -> Jet colour -> PNG read back as grey -> threshold 40. On a ramp
    0..1 that keeps heat levels 37..253 of 255 (about 15 % of the maximum and up, bar the very top)."""
    ramp = np.arange(256, dtype=float)[None].repeat(2, 0) / 255 * 8.0  # heat level i at column i, any scale
    grey = cam.normalize_map(ramp, "authors")
    assert grey.shape == ramp.shape and grey.max() == 225 and grey[0, 0] == 14 and grey[0, 255] == 38
    assert np.all(np.diff(grey[0, :159]) >= 0) and np.all(np.diff(grey[0, 158:]) <= 0)  # up to heat ~158, then down
    kept = np.flatnonzero(grey[0] >= 40)
    assert (kept[0], kept[-1], len(kept)) == (37, 253, 217)
    assert cam.threshold_box(grey, 40) == [37, 0, 254, 2]
    assert (cam.normalize_map(-ramp, "authors") == 14).all()  # no positive value: heat 0 everywhere
    # far looser than min-max 50 of 100 on the same map, which keeps the upper half
    assert (cam.normalize_map(ramp, 100)[0] >= 50).sum() == 128


def test_threshold_box_keeps_the_largest_region():
    m = np.zeros((20, 30))
    m[2:4, 2:4] = 90       # small blob
    m[10:18, 12:27] = 60   # large blob
    assert cam.threshold_box(m, 50) == [12, 10, 27, 18]
    assert cam.threshold_box(m, 50, largest=False) == [2, 2, 27, 18]
    assert cam.threshold_box(m, 70) == [2, 2, 4, 4]
    assert cam.threshold_box(m, 95) is None


def test_threshold_of_an_upsampled_map_finds_the_hot_cell():
    a = torch.zeros(1, 4, 4)
    a[0, 1, 2] = 1.0  # hot feature cell: rows 8..16, columns 16..24 of a 32 x 32 image
    m = cam.normalize_map(cam.upsample(a, (32, 32))[0].numpy(), 100)
    box = cam.threshold_box(m, 50)
    assert cam.box_iou(box, [16, 8, 24, 16]) > 0.4 and box[0] >= 12 and box[2] <= 28


def test_box_iou():
    assert cam.box_iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(1 / 3)
    assert cam.box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)
    assert cam.box_iou([0, 0, 1, 1], [1, 1, 2, 2]) == 0.0


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(5, 1)

    def forward(self, x, male):
        f = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(torch.cat([f, male.reshape(-1, 1)], 1))[:, 0]


def test_gradcam_gives_maps_in_unit_range():
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        model.conv.weight.abs_()
        model.fc.weight.abs_()
    x = torch.rand(2, 1, 16, 12)
    maps = cam.gradcam(model, model.conv, x, [1.0, 0.0])
    assert maps.shape == (2, 16, 12) and maps.min() >= 0 and maps.max() <= 1 + 1e-6 and maps.max() > 0.5
