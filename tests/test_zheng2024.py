"""Zheng 2024 (KDALDL): Gaussian labels, the joint loss, temperature softmax, feature refinement + SE,
distillation, and forward/backward of teacher and student at 512."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from bac.models import zheng2024 as z

MINI = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


def test_gaussian_labels_sum_to_one_and_peak_at_the_true_age():
    ages = torch.tensor([1.0, 37.0, 120.0, 200.0, 240.0])
    p = z.gaussian_labels(ages, sigma=14)
    assert p.shape == (5, 240)
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    assert (p.argmax(1) + 1).tolist() == ages.long().tolist()
    # a wider sigma spreads the mass: smaller peak, and inside the range the Gaussian of Eq. 1 itself
    assert (z.gaussian_labels(ages, 17).max(1).values < p.max(1).values).all()
    j = torch.arange(1, 241.0)
    eq1 = torch.exp(-(120 - j) ** 2 / (2 * 14 ** 2)) / (np.sqrt(2 * np.pi) * 14)
    assert torch.allclose(p[2], eq1 / eq1.sum(), atol=1e-6)
    # Eq. 3 on the label distribution of a mid-range age gives that age back
    assert z.expected_age(torch.log(p[2:3]))[0] == pytest.approx(120.0, abs=1e-2)


def test_loss_is_the_mae_at_lambda_one_and_the_kl_at_lambda_zero():
    logits = torch.randn(4, 240) * 3
    target = torch.tensor([10.0, 60.0, 130.0, 220.0])
    pred = (z.expected_age(logits), logits)
    mae = (pred[0] - target).abs().mean()
    g = z.gaussian_labels(target, 14)
    kl = (g * (g.clamp_min(1e-30).log() - F.log_softmax(logits, 1))).sum(1).mean()
    assert z.LDLLoss(14, lam=1.0)(pred, target) == pytest.approx(mae.item(), rel=1e-5)
    assert z.LDLLoss(14, lam=0.0)(pred, target) == pytest.approx(kl.item(), rel=1e-4)
    assert z.LDLLoss(14, lam=0.5)(pred, target) == pytest.approx(0.5 * mae.item() + 0.5 * kl.item(), rel=1e-4)
    # the student: no KL when its logits equal the teacher's, whatever tau
    kd = z.DistillLoss(tau=2.0, lam=0.5)
    kd.teacher_logits = logits.clone()
    assert kd(pred, target) == pytest.approx(0.5 * mae.item(), rel=1e-5)
    kd.teacher_logits = torch.randn(4, 240)
    assert kd(pred, target) > 0.5 * mae.item()


def test_temperature_softmax():
    logits = torch.randn(3, 240) * 4
    assert torch.allclose(z.temperature_softmax(logits, 1.0), torch.softmax(logits, -1))
    p2 = z.temperature_softmax(logits, 2.0)
    assert torch.allclose(p2, torch.exp(logits / 2) / torch.exp(logits / 2).sum(-1, keepdim=True), atol=1e-6)
    entropy = lambda p: -(p * p.log()).sum(-1)
    assert (entropy(p2) > entropy(z.temperature_softmax(logits, 1.0))).all()        # softer
    assert torch.equal(p2.argmax(-1), logits.argmax(-1))                              # same mode
    assert torch.allclose(z.temperature_softmax(logits, 1e4), torch.full((3, 240), 1 / 240), atol=1e-5)


def test_refinement_shape_at_512_and_se_channel_weighting():
    chans = [96, 192, 384, 768]      # Swin-T and Swin-S
    refine = z.FeatureRefinement(chans)
    maps = [torch.randn(1, c, 512 // s, 512 // s) for c, s in zip(chans, (4, 8, 16, 32))]
    with torch.no_grad():
        out = refine(maps, (128, 128))
    assert out.shape == (1, 1440, 128, 128)
    # SE multiplies every channel by one weight in (0, 1), the same at every position
    x = torch.rand(2, 64, 8, 8) + 0.5
    se = z.FeatureRefinement([64]).se
    with torch.no_grad():
        ratio = se(x) / x
        manual = torch.sigmoid(se.fc2(se.act(se.fc1(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all() and torch.allclose(ratio[..., 0, 0], manual[..., 0, 0], atol=1e-5)


def test_teacher_and_student_forward_backward_at_512():
    """Swin-T teacher trained by Eq. 6, then a smaller Swin student by the distillation loss (batch 2, 512 x 512)."""
    x, male, y = torch.randn(2, 1, 512, 512), torch.tensor([1.0, 0.0]), torch.tensor([30.0, 150.0])
    teacher = z.KDALDLNet("swin_tiny_patch4_window7_224", img_size=512)
    seen = {}
    teacher.refine.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    months, logits = teacher(x, male)
    assert seen["shape"] == (2, 96 + 192 + 384 + 768, 128, 128)
    assert months.shape == (2,) and logits.shape == (2, 240) and ((months > 1) & (months < 240)).all()
    z.LDLLoss(14, 0.5)((months, logits), y).backward()
    assert teacher.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    student = z.KDALDLNet("swin_tiny_patch4_window7_224", img_size=512, backbone_kwargs=MINI)  # a small Swin (Table 5)
    loss = z.DistillLoss(tau=2.0, lam=0.5)
    loss.teacher_logits = logits.detach()
    value = loss(student(x, male), y)
    value.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert torch.isfinite(value) and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sex_input_and_regression_head():
    x = torch.randn(2, 3, 64, 64)
    m = z.KDALDLNet("swin_tiny_patch4_window7_224", img_size=64, backbone_kwargs=MINI).eval()
    with torch.no_grad():
        a = m(x, torch.tensor([1.0, 1.0]))[0]
        b = m(x, torch.tensor([0.0, 0.0]))[0]
    assert not torch.allclose(a, b)                      # the sex branch reaches the prediction
    with pytest.raises(ValueError, match="male"):
        m(x)
    blind = z.KDALDLNet("swin_tiny_patch4_window7_224", img_size=64, use_sex=False, backbone_kwargs=MINI)
    assert blind.head[0].in_features == m.head[0].in_features - z.SEX_UNITS
    reg = z.KDALDLNet("swin_tiny_patch4_window7_224", img_size=64, head="regression", backbone_kwargs=MINI).eval()
    months, logits = reg(x, torch.ones(2))
    assert logits is None and months.shape == (2,) and abs(months.mean().item() - 120) < 30


def test_distillation_trains_through_fastai_and_checkpoint_roundtrip(tmp_path):
    from bac import config, train
    cfg = config.resolve("smoke", "zheng2024", out_dir=str(tmp_path), overrides=dict(size=64))
    rng = np.random.default_rng(0)
    df = pd.DataFrame(dict(id=range(12), boneage=rng.uniform(10, 230, 12), male=rng.integers(0, 2, 12),
                           split=["train"] * 8 + ["validation"] * 4))
    images = {s: rng.integers(0, 255, ((df.split == s).sum(), 1, 64, 64), dtype=np.uint8)
              for s in ("train", "validation")}
    dls = train.dataloaders(images, df, bs=4, device="cpu")
    teacher = z.build(cfg, cfg.teacher)
    z.train(teacher, dls, z.LDLLoss(cfg.sigma, cfg.lam), cfg, epochs=1)
    student = z.build(cfg, cfg.student)
    loss = z.DistillLoss(cfg.tau, cfg.lam)
    learn = z.train(student, dls, loss, cfg, cbs=[z.Distill(teacher)], epochs=1)
    with torch.no_grad():
        expected = teacher(train.normalize(torch.from_numpy(images["validation"][-4:])).float(),
                           torch.tensor(df.male.values[-4:], dtype=torch.float32))[1]
    assert torch.allclose(loss.teacher_logits, expected, atol=1e-4)    # last batch: the teacher's logits
    assert np.isfinite(learn.recorder.values[-1]).all()
    path = train.save_checkpoint(student, tmp_path / "final.safetensors", meta=dict(paper="zheng2024"))
    again = z.build_final(cfg)
    assert train.load_checkpoint(again, path)["paper"] == "zheng2024"
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="cfg.backbones"):
        z.build(cfg, "No-Such-Backbone")


def test_fit_final_round_trips_through_save_final(tmp_path, monkeypatch):
    """fit_final (teacher then student, 1 step each) on a few synthetic radiographs -> save_final -> load_final."""
    from bac import config, predict
    from bac.data import rsna, synth
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))        # prepared images stay in tmp
    root = synth.make_dataset(tmp_path / "synth", n_train=4, n_val=2, n_test=0, long_side=96, workers=1,
                              progress=False)
    cfg = config.resolve("smoke", "zheng2024", data_dir=str(root), out_dir=str(tmp_path / "reports"),
                         overrides="pipeline='plain',size=32,bs=2,max_steps=1,epochs=1,workers=1")
    df = rsna.load_table(root)
    with pytest.raises(ValueError, match="validation"):
        z.fit_final(cfg, df[df.split == "train"])
    model = z.fit_final(cfg, df)
    assert not model.training and isinstance(model, z.KDALDLNet) and z.final_pipeline(cfg, df) == ("plain", 32, {})
    path = predict.save_final(cfg, model, df)
    net, meta = predict.load_final(str(path))
    assert (meta["paper"], meta["pipeline"], meta["size"]) == ("zheng2024", "plain", 32)
    x, male = torch.randn(3, 1, 32, 32), torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, male), model(x, male))
        p = z.age_distribution(net(x, male))
    assert p.shape == (3, 240) and torch.allclose(p.sum(1), torch.ones(3))
