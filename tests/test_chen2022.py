"""Chen 2022: soft labels, the Gaussian, KL(G || p), the expectation head, CAM, erasing, region crops."""
import json

import numpy as np
import pytest
import torch

from bac import cam, config
from bac.models import chen2022 as C

TINY = dict(channels=(8, 8, 16, 16), output_stride=16)  # a narrow ResNet-10 keeps these tests fast


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_soft_labels_are_the_triangle_of_eq5():
    y = C.soft_labels([100, 3], l=50)
    assert y.shape == (2, 240)
    assert y[0, 99] == 1 and y[0, 74].item() == pytest.approx(0.5) and y[0, 149] == 0  # i = 100, 75, 150
    assert y[0, 49] == 0 and y[0, 50].item() == pytest.approx(0.02)  # |i - t| = 50 and 49
    assert y[0].sum() == pytest.approx(50.0)  # 1 + 2 * sum_{d<50} (1 - d/50): the triangle's area
    assert y[1, 0] == pytest.approx(1 - 2 / 50) and (y >= 0).all() and (y <= 1).all()
    assert C.soft_labels([100], l=10)[0].sum() == pytest.approx(10.0)  # l controls the width


def test_gaussian_is_a_distribution_centred_on_the_age():
    g = C.gaussian_distribution([120.0, 5.0], delta=15)
    assert torch.allclose(g.sum(1), torch.ones(2))
    assert g[0].argmax() == 119 and g[1].argmax() == 4  # k = 120 and 5
    assert (g[0, 119 + 15] / g[0, 119]).item() == pytest.approx(np.exp(-0.5), rel=1e-5)  # exp(-d^2 / 2 delta^2)
    k = C.ages_axis()
    assert ((g[0] * (k - 120) ** 2).sum().sqrt()).item() == pytest.approx(15, rel=1e-3)  # sd = delta


def test_kl_is_kl_of_g_to_p_as_in_the_formula():
    torch.manual_seed(0)
    ages = torch.tensor([30.0, 200.0])
    g = C.gaussian_distribution(ages, delta=15)
    assert torch.allclose(C.kl_gaussian_to_p(torch.log(g), ages), torch.zeros(2), atol=1e-5)  # p = G -> 0
    logits = torch.randn(2, 240)
    p = torch.softmax(logits, 1)
    manual = (g * (torch.log(g) - torch.log(p))).sum(1)  # sum_k G_k ln(G_k / p_k)
    kl = C.kl_gaussian_to_p(logits, ages)
    assert torch.allclose(kl, manual, atol=1e-4) and (kl > 0).all()
    reverse = (p * (torch.log(p) - torch.log(g))).sum(1)  # D_KL(p || G), what the text calls it
    assert not torch.allclose(kl, reverse, atol=1e-2)


def test_expectation_head_and_loss():
    assert C.expectation(torch.zeros(1, 240)).item() == pytest.approx(120.5)  # uniform over 1..240
    z = torch.full((2, 240), -50.0)
    z[0, 9], z[1, 200] = 50.0, 50.0
    assert C.expectation(z).tolist() == pytest.approx([10.0, 201.0])
    z = torch.randn(3, 240, requires_grad=True)
    ages = torch.tensor([10.0, 100.0, 230.0])
    pred = (C.expectation(z), z)
    mae = (pred[0] - ages).abs().mean()
    assert C.ChenLoss(lam=0)(pred, ages).item() == pytest.approx(mae.item(), rel=1e-6)
    kl = C.kl_gaussian_to_p(z, ages).mean()
    loss = C.ChenLoss(lam=0.1, delta=15)(pred, ages)
    assert loss.item() == pytest.approx((mae + 0.1 * kl).item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_soft_label_loss_is_zero_on_the_soft_labels():
    ages = torch.tensor([50.0, 180.0])
    y = C.soft_labels(ages)
    assert C.SoftLabelLoss(50, "l1")((None, y), ages).item() == pytest.approx(0.0)
    # each row sums to l
    assert C.SoftLabelLoss(50, "l1")((None, torch.zeros_like(y)), ages).item() == pytest.approx(50 / 240)
    with pytest.raises(ValueError, match="cls_loss"):
        C.SoftLabelLoss(50, "mse")


def test_cam_is_the_weighted_sum_of_the_classifier_feature_maps():
    torch.manual_seed(0)
    for pool in ("max", "avg"):
        model = C.CamClassifier("resnet10t", pool=pool, backbone_kwargs=TINY).eval()
        x = torch.randn(2, 1, 64, 64)
        maps, t = model.cam(x)
        with torch.no_grad():
            f = model.backbone(x)
            age, scores = model(x, None)
        assert torch.equal(t, scores.argmax(1)) and torch.equal(age, t.float() + 1)
        w = model.fc.weight
        manual = torch.stack([sum(w[t[b], k] * f[b, k] for k in range(f.shape[1])) for b in range(2)])
        assert torch.allclose(maps, manual, atol=1e-4)
        if pool == "avg":  # Eq. 3: the class score is the mean of its map (plus the bias)
            assert torch.allclose(maps.mean((1, 2)) + model.fc.bias[t], scores[torch.arange(2), t], atol=1e-4)


def test_regressor_heads_and_sex_input():
    torch.manual_seed(0)
    x, male = torch.randn(2, 3, 64, 64), torch.tensor([1.0, 0.0])
    m = C.ChenRegressor("resnet10t", in_chans=3, sex_layers=(32,), conv_channels=16, backbone_kwargs=TINY).eval()
    age, z = m(x, male)
    assert age.shape == (2,) and z.shape == (2, 240) and torch.allclose(age, C.expectation(z))
    assert not torch.allclose(m(x, 1 - male)[0], age)  # the sex changes the prediction
    r = C.ChenRegressor("resnet10t", in_chans=3, head="regression", sex_layers=(), conv_channels=16,
                        backbone_kwargs=TINY).eval()
    out = r(x, male)
    assert out.shape == (2,) and torch.allclose(r(x, 1 - male), out)  # no sex input
    with pytest.raises(ValueError, match="head"):
        C.ChenRegressor("resnet10t", head="softmax", backbone_kwargs=TINY)


def test_erasing_only_touches_the_region():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    keep = image.copy()
    out = C.erase_region(image, [5, 10, 20, 25], seed=1)
    inside = np.zeros_like(image, bool)
    inside[10:25, 5:20] = True
    assert np.array_equal(image, keep)  # the input is not modified
    assert np.array_equal(out[~inside], image[~inside])
    assert (out[inside] != image[inside]).mean() > 0.9 and out[inside].std() > 50  # random values inside
    assert np.array_equal(C.erase_region(image, None), image)


def test_letterbox_box_round_trip():
    from bac.preprocess import letterbox
    from bac.preprocess.boxes import mask_to_box
    image = np.zeros((300, 120), np.uint8)
    box = [30, 200, 90, 260]
    image[200:260, 30:90] = 255
    small = letterbox(image, 64)
    back = C.letterbox_to_original(mask_to_box(small > 127), image.shape, 64)
    assert cam.box_iou(back, box) > 0.8
    assert C.letterbox_to_original([0, 0, 5, 64], image.shape, 64) is None  # only the padding -> nothing


def test_localization_scores():
    s = C.localization_scores([[0, 0, 10, 10], None, [0, 0, 10, 5]], [[0, 0, 10, 10]] * 3)
    assert s["miou"] == pytest.approx(0.5) and s["ap50"] == pytest.approx(1 / 3) and s["missed"] == 1


def test_region_pipeline_crops_erases_and_keys_by_locator(tmp_path, monkeypatch):
    from bac.preprocess import letterbox
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    keys = {}
    for name, pool, size in (("hand", "avg", 32), ("r1", "max", 48), ("r2", "max", 48)):
        model = C.CamClassifier("resnet10t", pool=pool, backbone_kwargs=TINY).eval()
        keys[name] = C.save_locator(model, dict(backbone="resnet10t", pool=pool, in_chans=1,
                                                backbone_kwargs=TINY, size=size))
        assert C.locator_path(keys[name]).exists()
    assert len(set(keys.values())) == 3
    image = np.random.default_rng(0).integers(0, 256, (120, 90), dtype=np.uint8)
    out = C.regions_pipeline(image, 40, regions="O+H+R1+E+R2", **{k: v for k, v in keys.items()})
    assert out.shape == (5, 40, 40) and out.dtype == np.uint8
    assert np.array_equal(out[0], letterbox(image, 40))
    r1_box = C._locate_one(image, keys["r1"], 50.0)
    assert np.array_equal(out[3], letterbox(C.erase_region(image, r1_box, 0), 40))
    assert np.array_equal(out[2], C.crop_region(image, r1_box, 40))
    cfg = config.resolve("smoke", "chen2022")
    assert set(C.region_params(cfg, "H", keys)) == {"regions", "hand", "tau_hand"}
    assert "r2" not in C.region_params(cfg, "H+R1+E", keys)
    assert C.region_params(cfg, "R2", keys)["r2"] == keys["r2"]
    with pytest.raises(ValueError, match="region"):
        C.regions_pipeline(image, 40, regions="R3")
    with pytest.raises(FileNotFoundError, match="notebooks/30"):
        C.load_locator("0" * 16)


def test_fit_final_save_load_round_trip(tmp_path, monkeypatch):
    """fit_final on a few synthetic rows (tiny sizes, 1 step) -> save_final -> load_final predicts the same."""
    from bac import data, predict, train
    from bac.data.rsna import read_image
    cfg = config.resolve("smoke", "chen2022", out_dir=str(tmp_path / "out"), overrides=dict(
        hand_size=32, r1_size=48, size=48, max_steps=1, cls_epochs=1, epochs=1, bs=4, cls_bs=4, workers=1,
        cls_backbone_kwargs=TINY, backbone_kwargs=TINY, conv_channels=16))
    df = data.load(cfg, progress=False)
    df = df.groupby("split", group_keys=False).head(4).reset_index(drop=True)
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))  # localisers and prepared images go here
    model = C.fit_final(cfg, df)
    keys = C.fit_locators(cfg, df)["keys"]   # stored fits: reused, not retrained
    assert set(keys) == set(C.LOCATORS) and not model.training
    path = predict.save_final(cfg, model, df)
    assert sorted(p.name for p in path.parent.glob("locator-*")) == sorted(
        f"locator-{k}.safetensors" for k in keys.values())  # the folder is self-contained
    net, meta = predict.load_final(str(path))
    assert meta["pipeline"] == "chen2022-regions" and json.loads(json.dumps(meta["params"])) == meta["params"]
    test = df[df.split == "test"]
    x = np.stack([predict.prepare_input(read_image(p), meta) for p in test.path])
    cached = C.region_images(cfg, test, cfg.final_regions, cfg.size, keys)["test"]
    assert np.array_equal(x, cached)  # (pipeline, size, params) alone rebuild the training input
    a, b = train.predict(model, x, test.male.values), train.predict(net, x, test.male.values)
    assert np.allclose(a, b, atol=1e-4)
    with torch.no_grad():
        out = net(train.normalize(torch.from_numpy(x)), torch.tensor(test.male.values, dtype=torch.float32))
    probs = C.age_distribution(out)
    assert probs.shape == (len(test), 240) and torch.allclose(probs.sum(1), torch.ones(len(test)))
    assert C.cam_target(net)[0] is net.conv


def test_full_size_inception_cam_grid():
    """The paper's Region-1 classifier at 560 px: 2048 feature maps of 16 x 16 in timm (the text says 18 x 18)."""
    torch.set_num_threads(2)
    model = C.CamClassifier("inception_v3", pool="max").eval()
    maps, _ = model.cam(torch.randn(1, 1, 560, 560))
    assert model.backbone.num_features == 2048 and maps.shape[1:] == (16, 16)
