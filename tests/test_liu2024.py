"""2M-Net (liu2024): jigsaw shuffle, step/stage mapping, attention blocks, full model at 448 x 448."""
import numpy as np
import pytest
import torch

from bac.models import liu2024 as L

TINY = dict(backbone_kwargs=dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8), hidden=16)


def _tiles(img: torch.Tensor, n: int) -> list[bytes]:
    c, h, w = img.shape
    th, tw = h // n, w // n
    return [img[:, i * th:(i + 1) * th, j * tw:(j + 1) * tw].numpy().tobytes() for i in range(n) for j in range(n)]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_jigsaw_is_a_permutation_of_tiles(n):
    torch.manual_seed(n)
    x = torch.rand(3, 2, 24, 24)
    out, perm = L.jigsaw(x, n, return_perm=True)
    assert out.shape == x.shape and perm.shape == (3, n * n)
    for b in range(3):
        assert sorted(perm[b].tolist()) == list(range(n * n))
        src, dst = _tiles(x[b], n), _tiles(out[b], n)
        assert dst == [src[i] for i in perm[b].tolist()]            # tile i of the output = input tile perm[i]
        assert sorted(dst) == sorted(src)                            # same tiles, same pixels
    assert torch.equal(torch.sort(out.flatten(1)).values, torch.sort(x.flatten(1)).values)
    assert not torch.equal(out, x)                                   # 3 random permutations of >= 4 tiles


def test_jigsaw_n1_is_identity_and_leftover_strips_stay():
    x = torch.rand(2, 1, 26, 23)
    assert torch.equal(L.jigsaw(x, 1), x)
    torch.manual_seed(0)
    out, perm = L.jigsaw(x, 4, return_perm=True)                     # tiles 6 x 5; 2 rows and 3 columns left over
    assert torch.equal(out[..., 24:, :], x[..., 24:, :]) and torch.equal(out[..., :, 20:], x[..., :, 20:])
    for b in range(2):
        assert _tiles(out[b, :, :24, :20], 4) == [_tiles(x[b, :, :24, :20], 4)[i] for i in perm[b].tolist()]
    with pytest.raises(ValueError, match="granularity"):
        L.jigsaw(x, 0)


def test_step_stage_mapping():
    # (T - 1) - t = K - k with K = 4 groups; paper stage = k + 1 (stage 1 is the stem)
    assert L.step_plan((4, 2, 1)) == [(4, 4), (2, 5), (1, None)]
    assert L.step_plan((8, 4, 2, 1)) == [(8, 3), (4, 4), (2, 5), (1, None)]
    assert L.step_plan((2, 1)) == [(2, 5), (1, None)]
    assert L.step_plan((1,)) == [(1, None)]
    with pytest.raises(ValueError, match="ending with 1"):
        L.step_plan((4, 2))
    with pytest.raises(ValueError, match="at most 5 steps"):
        L.step_plan((32, 16, 8, 4, 2, 1))
    assert L.parse_experiment("q421+s3+c45") == dict(queue=(4, 2, 1), spatial=(3,), channel=(4, 5))


def test_attention_blocks_keep_shape_and_are_identity_with_zero_output_weights():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 7)
    nl, ca = L.NonLocal(16), L.ChannelAttention()
    assert torch.allclose(nl(x), x) and torch.allclose(ca(x), x)   # zero-initialised output weights
    nl.out[1].weight.data.fill_(1.0)
    ca.gamma.data.fill_(0.5)
    y_nl, y_ca = nl(x), ca(x)
    assert y_nl.shape == x.shape and y_ca.shape == x.shape
    assert not torch.allclose(y_nl, x) and not torch.allclose(y_ca, x)
    nl.out[1].weight.data.zero_()
    nl.out[1].bias.data.zero_()
    assert torch.allclose(nl(x), x)
    nl.keep_attention = True
    nl(x)
    assert nl.attention.shape == (2, 9 * 7, 4 * 3)                   # phi/g max-pooled 2 x 2
    assert torch.allclose(nl.attention.sum(-1), torch.ones(2, 63))   # normalised by C(X)


def test_channel_attention_prefers_negatively_correlated_channels():
    ca = L.ChannelAttention()
    ca.gamma.data.fill_(1.0)
    a = torch.ones(1, 1, 2, 2)
    x = torch.cat([a, a, -a], 1)                                     # channels 0, 1 alike; 2 opposite
    y = ca(x)
    # exp(-x_i^T x_j): channel 0 attends mostly to channel 2 (x_0^T x_2 = -4), so its output is pulled to -a
    assert torch.all(y[0, 0] < 0.2) and torch.all(y[0, 2] > -0.2)


def test_tiny_model_steps_and_bysex_routing():
    torch.manual_seed(0)
    m = L.TwoMNet(**TINY, spatial=(3,), channel=(4, 5), supervised=(3, 4, 5), geometry="crop", size=56)
    x = torch.randn(3, 1, 64, 64)
    for n, stage in L.step_plan((8, 4, 2, 1)):
        y = m(x, None, n=n, stage=stage)
        assert y.shape == (3,) and torch.isfinite(y).all()
        y.sum().backward()
    with pytest.raises(ValueError, match="no head"):
        m(x, None, stage=2)
    girls = L.TwoMNet(**TINY, geometry="resize", size=56)
    both = L.BySex(m, girls).eval()
    male = torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        out = both(x, male)
        assert torch.allclose(out[[0, 2]], m(x[[0, 2]])) and torch.allclose(out[1:2], girls(x[1:2]))


def test_jigsaw_callback_runs_the_extra_steps(tmp_path):
    from bac import config, train
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    import pandas as pd
    df = pd.DataFrame(dict(boneage=rng.uniform(0, 200, 12), male=True, split=["train"] * 8 + ["validation"] * 4))
    imgs = {"train": rng.integers(0, 255, (8, 1, 40, 40), dtype=np.uint8),
            "validation": rng.integers(0, 255, (4, 1, 40, 40), dtype=np.uint8)}
    dls = train.dataloaders(imgs, df, bs=4, device="cpu")
    model = L.TwoMNet(**TINY, supervised=(4, 5))
    cb = L.JigsawSteps((4, 2, 1))
    learn = train.learner(dls, model, cbs=[cb], cfg=config.resolve("smoke", "liu2024", out_dir=str(tmp_path)))
    before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    with learn.no_logging(), learn.no_bar():
        learn.fit(1, lr=1e-2)
    assert set(cb.losses) == {4, 2}                                  # the two jigsaw steps ran
    assert any(not torch.equal(before[k], v) for k, v in model.heads.state_dict().items())


def test_build_final_and_param_count():
    from bac import config
    cfg = config.resolve("full", "liu2024")
    model = L.build_final(cfg)
    assert isinstance(model, L.BySex) and L.final_pipeline(cfg) == ("plain", 512, {})
    assert 11.1e6 < model.boys.feature_parameters() < 11.9e6         # ResNet-18 + attention; paper: 11.8 M


def test_full_model_forward_backward_448():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = L.TwoMNet(spatial=(3,), channel=(4, 5), supervised=(4, 5))
    x = torch.randn(2, 1, 448, 448)
    y = m(x)
    assert y.shape == (2,) and torch.isfinite(y).all()
    y.sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5]) and torch.isfinite(m.stages[0][0].weight.grad).all()


def test_fit_final_save_load_round_trip(tmp_path):
    from bac import config, data, predict, train
    torch.set_num_threads(1)
    cfg = config.resolve("smoke", "liu2024", out_dir=str(tmp_path), overrides="resize=40,size=32,max_steps=1,bs=4")
    df = data.load(cfg)
    df = df.groupby(["split", "male"], group_keys=False).head(3)
    df = df[df.split.isin(["train", "validation", "test"])]
    model = L.fit_final(cfg, df)
    assert isinstance(model, L.BySex) and not model.training
    path = predict.save_final(cfg, model, df)
    loaded, meta = predict.load_final(str(path))
    test = df[df.split == "test"]
    imgs = L.prepare_images(cfg, test, ("test",))["test"]
    assert meta["pipeline"] == "plain" and meta["size"] == 40 and imgs.shape[-1] == 40
    np.testing.assert_allclose(train.predict(loaded, imgs, test.male.values),
                               train.predict(model, imgs, test.male.values), rtol=1e-5)
