"""Li et al. 2021: head widths (1,280 + 24 = 1,304), Eq. 7 round trip, loss = MSE on Y', 700x700 forward/backward."""
import numpy as np
import pytest
import torch

from bac.models import li2021


def small_model(**kw):
    return li2021.SexEmbeddingRegressor("mobilenetv3_large_100", pretrained=False, **kw)


def test_head_widths_follow_table_1():
    torch.set_num_threads(1)
    model = small_model()
    assert model.feature_dim == 1280
    assert model.concat_dim == 1280 + 24 == 1304
    assert model.head[0].in_features == 1304 and model.head[0].out_features == 1304
    assert model.head[-1].out_features == 1
    assert model.sex[0].in_features == 1 and model.sex[0].out_features == li2021.SEX_DIM
    x, male = torch.randn(2, 1, 64, 64), torch.tensor([0.0, 1.0])
    assert model.features(x, male).shape == (2, 1304)
    # The last 24 features are ReLU(W * male + b): non-negative, and they depend on sex alone.
    f = model.features(x, male)[:, 1280:]
    assert (f >= 0).all()
    f_swapped = model.features(x.flip(0), male)[:, 1280:]
    assert torch.allclose(f, f_swapped)
    nosex = small_model(use_sex=False)
    assert nosex.sex is None and nosex.concat_dim == 1280
    assert nosex.features(x, male).shape == (2, 1280)


def test_sex_changes_the_prediction_only_with_the_embedding():
    torch.set_num_threads(1)
    x = torch.randn(1, 1, 64, 64).repeat(2, 1, 1, 1)
    male = torch.tensor([0.0, 1.0])
    torch.manual_seed(0)
    with_sex = small_model().eval()
    nn_ = torch.nn
    nn_.init.normal_(with_sex.sex[0].bias, 1.0, 0.1)   # make the embedding active for both sexes
    p = with_sex(x, male)
    assert not torch.isclose(p[0], p[1])
    p = small_model(use_sex=False).eval()(x, male)
    assert torch.isclose(p[0], p[1])


def test_standardisation_round_trip_and_loss():
    ages = np.array([12.0, 60, 96, 150, 200, 228])
    scaler = li2021.AgeScaler.from_ages(ages)
    z = scaler.to_z(ages)
    assert abs(z.mean()) < 1e-12 and abs(z.std(ddof=1) - 1) < 1e-12
    np.testing.assert_allclose(scaler.to_months(z), ages)
    # The model outputs months = mu + sigma * head(x); at initialisation the head's last bias is 0.
    model = small_model(age_mean=scaler.mean, age_sd=scaler.sd).eval()
    loss = li2021.standardised_mse(model)
    pred, target = torch.tensor([100.0, 50.0]), torch.tensor([90.0, 80.0])
    expected = (((pred - target) / scaler.sd) ** 2).mean()     # MSE on Y' = MSE in months / sigma^2
    assert torch.isclose(loss(pred, target), expected)
    assert torch.isclose(loss((pred, "extra"), target), expected)
    with pytest.raises(ValueError, match="boneage"):
        li2021.AgeScaler.from_ages([np.nan, 3.0])
    with pytest.raises(ValueError, match="at least two different ages"):
        li2021.AgeScaler.from_ages([5.0, 5.0])


def test_step_schedule_divides_by_ten_every_30_of_160_epochs():
    sched = li2021.step_schedule(0.01, 160, 30)
    pos = lambda epoch: epoch / 160  # noqa: E731
    assert sched(pos(0)) == pytest.approx(0.01)
    assert sched(pos(29.9)) == pytest.approx(0.01)
    assert sched(pos(30)) == pytest.approx(0.001)
    assert sched(pos(65)) == pytest.approx(0.0001)
    assert sched(pos(159)) == pytest.approx(0.01 * 1e-5)


def test_full_size_forward_backward_700():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = small_model(age_mean=100.0, age_sd=40.0).train()
    n_params = sum(p.numel() for p in model.parameters())
    # 4.20 M (timm MobileNetV3-Large to 1,280) + 48 (sex) + 1,304*1,305 + 1,305 (MLP): about 5.9 M.
    assert n_params == 4_201_744 + 48 + 1304 * 1305 + 1305
    x, male, y = torch.randn(2, 1, 700, 700), torch.tensor([1.0, 0.0]), torch.tensor([120.0, 30.0])
    out = model(x, male)
    assert out.shape == (2,) and torch.isfinite(out).all()
    li2021.standardised_mse(model)(out, y).backward()
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    assert model.sex[0].weight.grad is not None


def test_config_helpers_name_pipeline_and_size():
    from bac import config
    for profile in config.PROFILE_NAMES:
        cfg = config.resolve(profile, "li2021")
        pipeline, size, params = li2021.final_pipeline(cfg)
        assert isinstance(pipeline, str) and size == cfg.size and isinstance(params, dict)
    full = config.resolve("full", "li2021")
    assert (full.size, full.bs, full.epochs, full.lr_drop_every, full.momentum) == (700, 10, 160, 30, 0.9)
    assert full.pipeline == "li2021" and full.backbone == "mobilenetv3_large_100" and full.pretrained
    assert not config.resolve("full", "li2021", dry_run=True).pretrained


def test_table2_grid_rows():
    from bac import config
    full = li2021.table2_grid(config.resolve("full", "li2021"))
    assert [r["paper_mae"] for r in full] == [6.8, 6.5, 6.2, 8.5, 7.5, 7.4]
    assert [r["size"] for r in full] == [224, 500, 700, 700, 700, 700] and all(r["run"] for r in full)
    assert [(r["sex"], r["pipeline"], r["pretrained"]) for r in full[2:]] == [
        (True, "li2021", True), (False, "li2021", True), (True, "plain", True), (True, "li2021", False)]
    demo = config.resolve("demo", "li2021")
    rows = li2021.table2_grid(demo)
    assert [r["paper_size"] for r in rows[:len(demo.sizes)]] == list(li2021.PAPER_SIZES[-len(demo.sizes):])
    assert rows[-1]["row"].endswith("no pretrain") and not rows[-1]["run"]   # no weights offline
    with pytest.raises(ValueError, match="must end with `size`"):
        li2021.table2_grid(config.resolve("demo", "li2021", overrides="size=999"))


def test_fit_final_save_load_round_trip(tmp_path, monkeypatch):
    """fit_final on a few synthetic rows (tiny size, 1 step) -> save_final -> load_final predicts the same, and
    the saved (pipeline, size, params) alone rebuild the training input from the image file."""
    from bac import config, data, predict, train
    from bac.data.rsna import read_image
    torch.set_num_threads(1)
    cfg = config.resolve("smoke", "li2021", out_dir=str(tmp_path / "out"),
                         overrides="size=32,sizes=[32],bs=4,max_steps=1,epochs=1,workers=1")
    df = data.load(cfg, progress=False)
    df = df.groupby("split", group_keys=False).head(4).reset_index(drop=True)
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))   # prepared images go here
    with pytest.raises(ValueError, match="validation"):
        li2021.fit_final(cfg, df[df.split == "train"])
    model = li2021.fit_final(cfg, df)
    assert not model.training and model.sex is not None
    assert float(model.age_mean) == pytest.approx(df[df.split == "train"].boneage.mean())
    path = predict.save_final(cfg, model, df)
    net, meta = predict.load_final(str(path))
    assert (meta["paper"], meta["pipeline"], meta["size"]) == ("li2021", "li2021", 32)
    test = df[df.split == "test"]
    x = np.stack([predict.prepare_input(read_image(p), meta) for p in test.path])
    from bac import preprocess
    assert np.array_equal(x, preprocess.prepare(test, "li2021", 32, progress=False, **meta["params"]))
    a, b = train.predict(model, x, test.male.values), train.predict(net, x, test.male.values)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_latency_segments_afresh_and_leaves_the_cache_alone(tmp_path, monkeypatch):
    """latency() times the real pipeline (no cached localisation) and writes nothing to the cache."""
    import os
    from bac import config, data, preprocess
    torch.set_num_threads(1)
    cfg = config.resolve("smoke", "li2021")
    df = data.load(cfg, progress=False).head(3)
    params = preprocess.pipeline_params(cfg, df, "li2021")
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    model = small_model().eval()
    r = li2021.latency(model, list(df.path), df.male.values, "li2021", 32, params, threads=1)
    assert r["n"] == 2 and r["threads"] == 1 and torch.get_num_threads() == 1
    assert r["total_s"] == pytest.approx(r["preprocess_s"] + r["forward_s"]) and r["preprocess_s"] > 0
    assert r["cpu_total_s"] > 0
    assert os.environ["BAC_CACHE_DIR"] == str(tmp_path / "cache") and not (tmp_path / "cache").exists()
