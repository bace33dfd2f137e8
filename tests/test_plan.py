"""`bac plan`: costs counted on the models, measured throughput replacing the estimate, the disk check."""
import json

import pytest

from bac import plan
from bac.plan.grids import Training


def _baseline(size, **kw):
    return Training(notebook="60_baseline_regression", method="baseline", what="x", changes=kw, size=size, chans=1,
                    epochs=2, images=100, bs=4)


def test_flops_follow_the_pixels_and_the_backbone():
    small, large = plan.cost(_baseline(64)), plan.cost(_baseline(128))
    assert large["gflops"] / small["gflops"] == pytest.approx(4, rel=0.05)   # a CNN with global pooling
    assert large["act_bytes"] / small["act_bytes"] == pytest.approx(4, rel=0.05)
    other = plan.cost(_baseline(64, backbone="resnet18"))
    assert other["params"] < small["params"] and other["gflops"] < small["gflops"]   # ResNet-18 < ResNet-50


def test_gpu_hours_are_images_seen_over_throughput(monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "trainings", lambda *a, **k: [_baseline(64)])
    est = plan.plan("smoke")
    row = est.iloc[0]
    assert row.source == "estimated"
    assert row.gpu_hours == pytest.approx(2 * 100 / row.images_per_s / 3600, rel=0.01)
    (tmp_path / "throughput.json").write_text(json.dumps(
        {"H200": {"train_images_per_s": {plan.key(_baseline(64)): 50.0}}}))
    monkeypatch.setattr(plan, "RESULTS", tmp_path)
    got = plan.plan("smoke").iloc[0]
    assert got.source == "measured" and got.images_per_s == 50 and got.gpu_hours == pytest.approx(200 / 50 / 3600)


def test_disk_check_refuses_naming_what_does_not_fit(monkeypatch, tmp_path):
    (tmp_path / "rehearsal.json").write_text(json.dumps({"cache_folders": {
        "10_ren2019_regression_cnn": {"prepared/plain-512-a": 250_000, "prepared/ren2019-512-b": 500_000},
        "30_chen2022_attention_ldl": {"prepared/plain-560-c": 1_000_000, "cams/x": 1_000},
        "60_baseline_regression": {"prepared/plain-512-a": 250_000}}}))
    monkeypatch.setattr(plan, "RESULTS", tmp_path)
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    sizes = dict(train=10_000, validation=1_000, test=200)   # Ren's pool: the training set; Chen, baseline: all
    cache = plan.cache_bytes("full", sizes).set_index("notebook")["bytes"]
    assert cache["10_ren2019_regression_cnn"] == 250_000 * 11_200 + 500_000 * 10_000   # shared folder: most images
    assert cache["60_baseline_regression"] == 0 and cache["30_chen2022_attention_ldl"] == 1_001_000 * 11_200
    with pytest.raises(RuntimeError, match="30_chen2022_attention_ldl 11.2 GB"):
        plan.check_disk("full", sizes, free=10 * 10**9)
    plan.check_disk("full", sizes, free=30 * 10**9)                       # fits: no error
    plan.check_disk("full", sizes, only="10_*", free=10 * 10**9)         # only Ren: 7.8 GB fits


def test_unknown_gpu_is_refused():
    with pytest.raises(ValueError, match="H200"):
        plan.plan("smoke", gpu="TPU")
