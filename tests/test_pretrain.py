"""Phantom pretraining (`bac.pretrain`): a smoke-size pretraining lowers the loss on phantoms it never saw, its
weights are what `pretrained="phantom"` loads into every paper's backbone, and the same settings give the same
weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bac import pretrain

TINY = dict(images=24, epochs=1, held_out=8, size=48, long_side=160, bs=8, lr=3e-3, workers=0)
SMALL_RESNET = dict(channels=(8, 16, 16, 16), stem_width=8)


@pytest.fixture(autouse=True)
def tiny_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pretrain, "DEFAULTS", {**pretrain.DEFAULTS, **TINY})


def _held_out_loss(model, n=16):
    data = pretrain.Phantoms(n, TINY["size"], TINY["long_side"], seed=99)
    x, male, age, present, stages = (torch.stack(t) for t in zip(*(data[i] for i in range(n))))
    model.eval()
    with torch.no_grad():
        return float(pretrain.loss_of(model(x, male), age, present, stages)[0])


def test_a_smoke_pretraining_lowers_the_loss_on_unseen_phantoms_and_is_reproducible():
    torch.manual_seed(0)
    before = _held_out_loss(pretrain.Pretrainer("resnet10t", 1, TINY["size"], **SMALL_RESNET))
    path = pretrain.pretrain("resnet10t", 1, SMALL_RESNET, progress=False, images=96)
    manifest = json.loads(path.with_name("manifest.json").read_text())
    assert manifest["steps"] == 12 and manifest["curve"][-1]["images"] == 96
    model = pretrain.Pretrainer("resnet10t", 1, TINY["size"], **SMALL_RESNET)
    model.backbone.load_state_dict(load_file(str(path)))
    torch.manual_seed(0)
    head = pretrain.Pretrainer("resnet10t", 1, TINY["size"], **SMALL_RESNET).head   # the same untrained head
    model.head.load_state_dict(head.state_dict())
    # the backbone alone, under the untrained head, already does better than random features would
    assert _held_out_loss(model) < before
    first = load_file(str(path))
    path.unlink()
    again = load_file(str(pretrain.pretrain("resnet10t", 1, SMALL_RESNET, progress=False, images=96)))
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("paper, name, in_chans, kwargs",
                         [(p, *b) for p, b in pretrain.backbones("demo").items()], ids=lambda v: str(v))
def test_phantom_weights_load_into_every_papers_backbone(paper, name, in_chans, kwargs):
    """`create(pretrained="phantom")` pretrains once, then builds the backbone with exactly the stored weights,
    whatever head or feature outputs the paper puts on it."""
    from bac.models.pretrained import create
    extra = dict(features_only=True, img_size=96) if "swin" in name else dict(num_classes=0)
    net = create(name, pretrained="phantom", in_chans=in_chans, **kwargs, **extra)
    stored = load_file(str(pretrain.weights_path(name, in_chans, kwargs)))
    assert stored, paper
    mine = {k: v for k, v in net.state_dict().items()}
    if "swin" in name:    # timm's feature wrapper renames 'layers.0' to 'layers_0'
        mine = {k.replace("layers_", "layers."): v for k, v in mine.items()}
    # a Swin's relative-position tables are resized by timm when the paper's input gives another window size
    shared = [k for k in stored if k in mine and mine[k].shape == stored[k].shape and "relative_position" not in k
              and "attn_mask" not in k]
    assert len(shared) >= 0.9 * len(stored), (paper, sorted(set(stored) - set(mine))[:5])
    for k in shared:
        assert torch.equal(mine[k], stored[k]), (paper, k)
    fresh = create(name, pretrained=False, in_chans=in_chans, **kwargs, **extra)
    assert not all(torch.equal(v, fresh.state_dict()[k]) for k, v in net.state_dict().items() if v.is_floating_point())


def test_phantoms_are_drawn_from_index_and_seed():
    a, b = pretrain.Phantoms(4, 48, 160, seed=0), pretrain.Phantoms(4, 48, 160, seed=0)
    assert torch.equal(a[3][0], b[3][0]) and not torch.equal(a[3][0], pretrain.Phantoms(4, 48, 160, seed=1)[3][0])
    x, male, age, present, stages = a[0]
    assert x.shape == (1, 48, 48) and x.dtype == torch.uint8 and 0 <= float(age) <= 240
    assert present.shape == (30,) and stages.shape == (21,) and float(stages.max()) <= 1
    assert np.isin(stages.numpy() * 5, np.arange(6)).all()


def test_phantoms_are_rendered_once_and_every_epoch_is_on_the_curve(monkeypatch):
    path = pretrain.pretrain("resnet10t", 1, SMALL_RESNET, progress=False, images=32, epochs=3)
    manifest = json.loads(path.with_name("manifest.json").read_text())
    assert [c["epoch"] for c in manifest["curve"]] == [1, 2, 3] and manifest["steps"] == 12
    assert all(c["held_out_age_mae"] >= 0 for c in manifest["curve"]) and manifest["held_out_mean_predictor"] > 0
    monkeypatch.setattr(pretrain.Phantoms, "__getitem__", lambda self, i: 1 / 0)     # no rendering from now on
    path.unlink()
    assert pretrain.pretrain("resnet10t", 1, SMALL_RESNET, progress=False, images=32, epochs=3).exists()
    with pytest.raises(ZeroDivisionError):    # other phantoms are rendered
        pretrain.rendered(8, TINY["size"], TINY["long_side"], seed=5, workers=0, progress=False)
