"""Ren et al. 2019: the attention loss (Eq. 1-2), the dynamic-k callback, the 2-channel model and RAM."""
import numpy as np
import pandas as pd
import pytest
import torch

from bac import config, train
from bac.models import ren2019 as ren


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_amae_equals_mae_at_k1():
    g = torch.tensor([1.0, 12.0, 60.0, 150.0, 228.0])
    p = torch.tensor([5.0, 3.0, 80.0, 149.0, 190.0])
    assert torch.allclose(ren.amae(p, g, k=1), torch.nn.functional.l1_loss(p, g), rtol=1e-6)
    assert torch.allclose(ren.AttentionMAE(1.0)(p, g), (p - g).abs().mean(), rtol=1e-6)


def test_amae_upweights_large_relative_errors():
    g = torch.tensor([100.0, 100.0])
    p = torch.tensor([105.0, 150.0], requires_grad=True)   # alpha = 0.05 (easy) and 0.5 (hard)
    ratios = {}
    for k in (1.0, 2.0, 3.0):
        (grad,) = torch.autograd.grad(ren.amae(p, g, k=k), p)
        ratios[k] = float(grad[1].abs() / grad[0].abs())
    # d/dp alpha^k |g| = k alpha^(k-1) sign: the hard image's weight grows as (0.5 / 0.05)^(k-1)
    assert ratios[1.0] == pytest.approx(1.0)
    assert ratios[2.0] == pytest.approx(10.0, rel=1e-4)
    assert ratios[3.0] == pytest.approx(100.0, rel=1e-4)
    # and the relative error (not the absolute one) decides: 10 months off at 20 months is "harder" than at 200
    assert ren.amae(torch.tensor([30.0]), torch.tensor([20.0]), k=2) > ren.amae(torch.tensor([210.0]),
                                                                               torch.tensor([200.0]), k=2)


def test_k_schedule():
    sched = ren.k_schedule(3.0, end_frac=0.5)
    ks = [sched(pos) for pos in np.linspace(0, 1, 11)]
    assert ks[0] == 3.0 and sched(0.25) == pytest.approx(2.0) and sched(0.5) == 1.0 and ks[-1] == 1.0
    assert all(a >= b for a, b in zip(ks, ks[1:]))
    with pytest.raises(ValueError):
        ren.k_schedule(0.5)


def _tiny_data(n=24, size=32, chans=2, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(dict(id=range(n), boneage=rng.uniform(10, 200, n), male=rng.integers(0, 2, n).astype(bool),
                           split=["train"] * (n - 8) + ["validation"] * 8))
    imgs = {s: rng.integers(0, 255, ((df.split == s).sum(), chans, size, size), dtype=np.uint8)
            for s in ("train", "validation")}
    return df, imgs


def test_dynamic_k_callback_lowers_k_to_one_during_fit():
    df, imgs = _tiny_data()
    model = ren.RegressionCNN("resnet10t", in_chans=2, hidden=16, backbone_kwargs=dict(channels=(8, 8, 8, 8)),
                              age_mean=100.0, age_sd=50.0)
    dls = train.dataloaders(imgs, df, bs=4, device="cpu")
    cb = ren.DynamicK(ren.k_schedule(3.0, end_frac=0.5))
    learn = train.learner(dls, model, loss_func=ren.AttentionMAE(3.0), cbs=[cb])
    with learn.no_logging(), learn.no_bar():
        learn.fit(2, 1e-3)
    h = cb.history
    assert len(h) == 2 * 4 and h[0] == 3.0                  # 16 training images / bs 4 = 4 batches per epoch
    assert all(a >= b for a, b in zip(h, h[1:])) and h[-1] == 1.0 and h[3] > 1.0
    assert learn.loss_func.k == 1.0


def test_full_size_forward_backward():
    cfg = config.resolve("full", "ren2019")
    assert cfg.backbone == "inception_v3" and cfg.in_chans == 2
    model = ren.build(cfg, age_mean=120.0, age_sd=40.0, pretrained=False)
    x = torch.randn(2, cfg.in_chans, cfg.size, cfg.size)
    male = torch.tensor([1.0, 0.0])
    out = model(x, male)
    assert out.shape == (2,) and torch.isfinite(out).all()
    out.sum().backward()
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.shape[1] == 2 and first_conv.weight.grad.abs().sum() > 0
    sex_column = model.head[1].weight.grad[:, -1]
    assert sex_column.abs().sum() > 0                          # the sex input reaches the loss
    # N(0, 0.001) initialisation of the conv/linear weights
    assert first_conv.weight.std().item() == pytest.approx(cfg.init_std, rel=0.2)


def test_full_config_holds_the_papers_settings():
    cfg = config.resolve("full", "ren2019")
    assert (cfg.lr, cfg.init_std, cfg.pretrained, cfg.split) == (0.01, 0.001, False, "ren2019")
    assert cfg.augment == dict(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2)
    assert cfg.configs == list(ren.CONFIGS) and set(cfg.backbones) == set(ren.PAPER_TABLE2)
    with pytest.raises(TypeError):
        cfg.pipeline_params = dict(detector="abc")   # a resolved config is frozen: fits are returned, not stored


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_ram_shape_and_sum(head):
    torch.manual_seed(0)
    model = ren.RegressionCNN("resnet10t", in_chans=2, head=head, hidden=32, age_mean=110.0, age_sd=35.0,
                              backbone_kwargs=dict(channels=(8, 8, 16, 16)))
    for m in model.modules():   # non-trivial BN statistics, so the eval-mode head is a real affine map
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x, male = torch.randn(3, 2, 64, 64), torch.tensor([1.0, 0.0, 1.0])
    fmap = model.feature_maps(x)
    out = ren.regression_activation_map(model, x, male)
    assert out["maps"].shape == (3, *fmap.shape[-2:])
    pred = model(x, male).detach()
    assert torch.allclose(out["pred"], pred, atol=1e-4)
    assert torch.allclose(out["maps"].mean(dim=(1, 2)) + out["offset"], pred, atol=1e-3)
    if head == "linear":
        # CAM identity: the coefficients are the regression layer's weights and the offset is bias + sex term
        lin = model.head[-1]
        w, b = lin.weight[0].detach(), lin.bias.detach()
        expect_maps = torch.einsum("k,bkhw->bhw", w[:-1], fmap.detach()) * model.age_sd
        assert torch.allclose(out["maps"], expect_maps, atol=1e-4)
        expect_offset = model.age_mean + model.age_sd * (b + w[-1] * male)
        assert torch.allclose(out["offset"], expect_offset, atol=1e-3)
    else:
        # the coefficients are the slopes of the head's local linear piece: a small step follows them exactly
        pooled = fmap.mean(dim=(2, 3)).detach()
        step = 1e-4 * torch.randn_like(pooled)
        with torch.no_grad():
            moved = model.regress(pooled + step, male) - model.regress(pooled, male)
        assert torch.allclose(moved, (out["coef"] * step).sum(1), rtol=1e-2, atol=1e-5)
    heat, p = ren.ram_overlay(model, np.zeros((3, 2, 64, 64), np.uint8), male)
    assert heat.shape == (3, 64, 64) and heat.min() >= 0 and heat.max() <= 1 and p.shape == (3,)


def test_brightness_augment_on_two_channels():
    aug = ren.make_augment(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2)
    x = torch.full((2, 32, 32), 100, dtype=torch.uint8)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    only = ren.Brightness(0.8, 1.2)
    vals = {int(only(x)[0, 0, 0]) for _ in range(20)}
    assert min(vals) >= 80 and max(vals) <= 120 and len(vals) > 1


def test_fit_final_round_trips_through_save_final(tmp_path, monkeypatch):
    """fit_final on a few synthetic radiographs (tiny stand-in, 1 step) -> save_final -> load_final: same output."""
    from bac import predict
    from bac.data import rsna, synth
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))        # prepared images stay in tmp
    root = synth.make_dataset(tmp_path / "synth", n_train=4, n_val=2, n_test=0, long_side=96, workers=1,
                              progress=False)
    cfg = config.resolve("smoke", "ren2019", data_dir=str(root), out_dir=str(tmp_path / "reports"),
                         overrides="pipeline='plain',in_chans=1,size=32,bs=2,max_steps=1,epochs=1,workers=1",
                         backbone_kwargs=dict(channels=(8, 8, 8, 8)))
    df = rsna.load_table(root)
    with pytest.raises(ValueError, match="validation"):
        ren.fit_final(cfg, df[df.split == "train"])
    model = ren.fit_final(cfg, df)
    assert not model.training and ren.final_pipeline(cfg, df) == ("plain", 32, {})
    path = predict.save_final(cfg, model, df)
    net, meta = predict.load_final(str(path))
    assert (meta["paper"], meta["pipeline"], meta["size"]) == ("ren2019", "plain", 32)
    x, male = torch.randn(3, 1, 32, 32), torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, male), model(x, male))
    assert float(model.age_mean) == pytest.approx(df[df.split == "train"].boneage.mean())
