"""Where the code follows the papers (or their released code) in settings a test can see: the optimiser of
the Keras papers, Li's coupled weight decay, weight files reaching Chen's backbones, Ren's split pool."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from bac import config, train  # noqa: E402
from bac.models import chen2022 as C, li2021, ren2019  # noqa: E402


def _tiny_data(channels: int, n=(8, 4), size: int = 32):
    rng = np.random.default_rng(0)
    rows = [dict(id=i, boneage=float(rng.uniform(10, 200)), male=bool(i % 2), split=s)
            for i, s in enumerate(["train"] * n[0] + ["validation"] * n[1])]
    df = pd.DataFrame(rows)
    images = {s: rng.integers(0, 255, ((df.split == s).sum(), channels, size, size), dtype=np.uint8)
              for s in ("train", "validation")}
    return images, df


@pytest.mark.parametrize("paper", ["ren2019", "chen2022"])
def test_keras_papers_train_with_kerass_adam_in_full(paper):
    """Ren and Chen trained in Keras: Adam's beta2 is 0.999 there (fastai's default is 0.99), eps 1e-7."""
    assert config.resolve("full", paper).beta2 == 0.999
    opt = train.keras_adam(0.999)([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert opt.hypers[0]["sqr_mom"] == 0.999 and opt.hypers[0]["eps"] == 1e-7


def test_ren_fit_uses_the_configured_beta2():
    cfg = config.resolve("smoke", "ren2019", overrides=dict(beta2=0.999, size=32, max_steps=1, bs=4,
                                                           backbone_kwargs=dict(channels=(8, 8, 8, 8))))
    images, df = _tiny_data(2)
    learn = ren2019.fit(cfg, images, df, loss="mae")
    assert learn.opt.hypers[0]["sqr_mom"] == 0.999


def test_li_sgd_couples_weight_decay_to_the_gradient():
    """Li 2021 (SGD with weight decay, as in PyTorch's SGD): L2 added to the gradient, not decoupled."""
    cfg = config.resolve("smoke", "li2021", overrides=dict(size=32, max_steps=1, bs=4, opt="sgd"))
    images, df = _tiny_data(1)
    learn = li2021.fit(cfg, images, df)
    names = [cb.__name__ for cb in learn.opt.cbs]
    assert "l2_reg" in names and "weight_decay" not in names


def test_a_weights_file_reaches_chens_backbones(tmp_path):
    """`pretrained_files` (timm name -> file) loads local weights into Phase I and Phase II backbones."""
    import timm
    from safetensors.torch import save_file
    kw = dict(channels=(8, 8, 16, 16))
    source = timm.create_model("resnet10t", pretrained=False, **kw)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r10.safetensors"))
    cfg = config.resolve("smoke", "chen2022", overrides=dict(pretrained=True, pretrained_files={
        "resnet10t": str(tmp_path / "r10.safetensors")}))
    expected = source.state_dict()["layer2.0.conv1.weight"]
    cls = C.CamClassifier("resnet10t", pool="max", in_chans=1, backbone_kwargs=kw, **C.weights(cfg, "resnet10t"))
    reg = C.ChenRegressor("resnet10t", in_chans=3, backbone_kwargs=kw, **C.weights(cfg, "resnet10t"))
    for model in (cls, reg):
        assert torch.equal(model.backbone.net.state_dict()["layer2.0.conv1.weight"], expected)
    assert C.weights(cfg, "inception_v3") == dict(pretrained=True, pretrained_file="")  # no file: the hub
