"""The baseline: starts at the training mean, its loss is the MAE, trains, and round-trips through save_final."""
import numpy as np
import pytest
import torch

from bac import config, data, predict, train
from bac.models import baseline as B

TINY = dict(channels=(8, 8, 8, 8))


def test_a_fresh_model_predicts_the_training_mean_and_the_loss_is_the_mae():
    cfg = config.resolve("smoke", "baseline", backbone_kwargs=TINY)
    net = B.build(cfg, age_mean=100.0, age_sd=40.0).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 1, 32, 32), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(out, torch.full((3,), 100.0))
    pred, target = torch.tensor([10.0, 20.0, 35.0]), torch.tensor([12.0, 20.0, 30.0])
    assert train.l1_loss(pred, target).item() == pytest.approx(np.mean([2, 0, 5]))


def test_fit_final_trains_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    cfg = config.resolve("smoke", "baseline", out_dir=str(tmp_path / "out"), backbone_kwargs=TINY, size=32,
                         bs=4, max_steps=2, workers=1)
    df = data.load(cfg, progress=False).groupby("split", group_keys=False).head(6).reset_index(drop=True)
    model = B.fit_final(cfg, df)
    assert not model.training and float(model.age_mean) == pytest.approx(df[df.split == "train"].boneage.mean())
    assert not torch.all(model.head.weight == 0), "two steps of training move the head"
    path = predict.save_final(cfg, model, df)
    net, meta = predict.load_final(str(path))
    assert (meta["paper"], meta["pipeline"], meta["size"], meta["split_scheme"]) == ("baseline", "plain", 32,
                                                                                    "official")
    x, male = torch.randn(2, 1, 32, 32), torch.tensor([1.0, 0.0])
    with torch.no_grad():
        assert torch.allclose(model(x, male), net(x, male))
