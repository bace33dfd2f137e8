"""The frame every notebook uses: profiles, reports, environment files, pretrained-weight errors, metrics."""
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bac import config, metrics, report

REPO = Path(__file__).resolve().parent.parent


def test_profiles_resolve_with_overrides(tmp_path):
    cfg = config.resolve("demo", "data", overrides="figure_n=3, bs=4", out_dir=str(tmp_path))
    assert (cfg.figure_n, cfg.bs, cfg.profile, cfg.data_source) == (3, 4, "demo", "synthetic")
    assert config.resolve("smoke").epochs <= config.resolve("demo").epochs <= config.resolve("full").epochs
    with pytest.raises(ValueError, match="not a setting"):
        config.resolve("smoke", "data", overrides="no_such_key=1")
    with pytest.raises(ValueError, match="unknown profile"):
        config.resolve("huge")
    with pytest.raises(ValueError, match="key=value"):
        config.parse_overrides("epochs")


def test_dry_run_caps_steps_and_images():
    cfg = config.resolve("full", "data", dry_run=True)
    assert cfg.max_steps == config.COMMON.dry_run["max_steps"][0] and cfg.limit == config.COMMON.dry_run["limit"][0]
    assert config.resolve("full", "data").max_steps is None


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BAC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BAC_OUT_DIR", str(tmp_path / "out"))
    cfg = config.resolve("smoke")
    assert cfg.data_dir == str(tmp_path) and cfg.out_dir == str(tmp_path / "out")


def test_report_writes_tables_metrics_and_index(tmp_path):
    cfg = config.resolve("smoke", "data", out_dir=str(tmp_path))
    report.save_table(cfg, pd.DataFrame({"row": ["S1"], "mae": [7.123]}), "t1", title="Table I")
    md = (tmp_path / "data" / "t1.md").read_text()
    assert "synthetic data, smoke profile" in md and "7.12" in md
    report.save_metrics(cfg, {"mae": 7.1}, [report.result("Table I", "S1", 7.123, paper=5.2)], env={"x": 1})
    saved = json.loads((tmp_path / "data" / "metrics.json").read_text())
    assert saved["results"][0]["paper"] == 5.2 and saved["config"]["profile"] == "smoke"
    index = report.write_index(tmp_path).read_text()
    assert "| data " in index and "5.2" in index and "7.12" in index and "paper's value" in index


def _names(deps):
    return sorted(re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0].lower() for d in deps)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env_text = (REPO / "environment.yml").read_text()
    assert "python=3.11" in env_text
    pip_section = re.findall(r"^ {6}- (\S+)$", env_text.split("- pip:", 1)[1], re.M)
    assert _names(pip_section) == _names(deps)
    pins = {d for d in deps if d.startswith(("torch==", "torchvision=="))}
    assert len(pins) == 2 and all(p in env_text for p in pins), "torch/torchvision must be pinned as a pair"


def test_pretrained_weights_missing_gives_a_clear_message(monkeypatch):
    from bac.models import pretrained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-cache")
    import huggingface_hub.constants  # reads HF_HUB_OFFLINE at import: without this it waits on the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(pretrained.PretrainedWeightsError) as err:
        pretrained.create("resnet18", pretrained=True)
    msg = str(err.value)
    assert "resnet18" in msg and "HF_HOME" in msg and "pretrained_file" in msg
    with pytest.raises(pretrained.PretrainedWeightsError, match="does not exist"):
        pretrained.create("resnet18", pretrained=True, pretrained_file="/nonexistent/w.safetensors")


def test_metrics_on_known_inputs():
    s = metrics.summary([10, 20, 30], [12, 18, 36])
    assert s["mae"] == pytest.approx(10 / 3) and s["median_ae"] == 2 and s["rmse"] == pytest.approx(np.sqrt(44 / 3))
    assert list(metrics.age_band([0, 35.9, 36, 215, 216, 230])) == ["0-3 y", "0-3 y", "3-6 y", "15-18 y", "15-18 y",
                                                                  "15-18 y"]
    assert metrics.mean_predictor_mae([0, 10], [5, 7]) == pytest.approx(1.0)
    lo, hi = metrics.bootstrap_ci(np.r_[np.zeros(50), np.ones(50)], n_boot=500)
    assert lo < 0.5 < hi and hi - lo < 0.3
    p = np.zeros((2, 240))
    p[0, 99] = 1
    p[1, 9:30] = 1 / 21
    lo, hi = metrics.distribution_interval(p, 0.9)
    assert (lo[0], hi[0]) == (100, 100) and lo[1] >= 10 and hi[1] <= 30
    assert metrics.interval_coverage([100, 5], lo, hi) == 0.5
    t = metrics.paired_tests([1, 2, 3, 4, 5.5], [1, 2, 3, 4, 5])
    assert t["mean_diff"] == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + 0.5
    assert metrics.paired_tests(b, a)["p_t"] < 1e-6 and metrics.paired_tests(b, a)["p_wilcoxon"] < 1e-6


def test_cam_is_the_weighted_sum_of_feature_maps():
    import torch
    from bac import cam
    f = torch.randn(2, 5, 4, 3)
    w = torch.randn(7, 5)
    a = cam.class_activation_map(f, w, torch.tensor([1, 6]))
    manual = torch.stack([sum(w[t, k] * f[b, k] for k in range(5)) for b, t in enumerate([1, 6])])
    assert torch.allclose(a, manual, atol=1e-5)
    box = cam.threshold_box(np.pad(np.full((3, 4), 90.0), 2), 50)
    assert box == [2, 2, 6, 5] and cam.box_iou(box, box) == 1.0 and cam.box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0
