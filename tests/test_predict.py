"""`bac predict` end to end on synthetic radiographs (PNG and DICOM), its error cases, and the interval maths."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import bac
from bac import metrics, predict
from bac.data import rsna, synth
from bac.models import li2021
from conftest import write_dicom


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two synthetic test radiographs (PNG) and a 12-bit DICOM of the first with PatientSex M."""
    root = synth.make_dataset(tmp_path_factory.mktemp("synth"), n_train=2, n_val=1, n_test=2, long_side=256,
                              workers=1, progress=False)
    pngs = sorted((root / "Bone Age Test Set" / "Test Set Images").glob("*.png"))
    pixels = np.asarray(Image.open(pngs[0]), np.uint16) * 16  # 8-bit -> 12-bit stored values, and a window
    window = (2040.5, 4081)  # that maps them back: DICOM's linear VOI ((x - (c - .5)) / (w - 1) + .5) * 255
    dicom = write_dicom(tmp_path_factory.mktemp("dicom") / "hand.dcm", pixels, window=window, sex="M")
    return pngs, dicom


def test_saved_model_round_trips(checkpoint):
    path, model = checkpoint
    net, meta = predict.load_final(str(path))
    assert meta["paper"] == "li2021" and meta["pipeline"] == "li2021" and meta["size"] == 64
    x, male = torch.randn(3, 1, 64, 64), torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, male), model(x, male))


def test_predict_png_and_dicom(checkpoint, images, tmp_path):
    path, _ = checkpoint
    pngs, dicom = images
    out = tmp_path / "pred"
    df = predict.predict_files([pngs[0], pngs[1], dicom], sex="F", model=str(path), out=out)
    assert (df.error == "").all() and np.isfinite(df.months).all()
    np.testing.assert_allclose(df.years, df.months / 12, atol=0.01)
    assert df.lo90.isna().all()  # MobileNetV3 regression gives no distribution
    csv = pd.read_csv(out / "predictions.csv")
    assert len(csv) == 3 and list(csv.file) == [str(pngs[0]), str(pngs[1]), str(dicom)]
    for png in df.cam_png:
        assert Image.open(png).size[0] > 50
    # --sex wins over the header; without --sex the DICOM's PatientSex (M) is used
    assert df.sex.iloc[2] == "F"
    from_header = predict.predict_files([dicom], model=str(path))
    assert from_header.sex.iloc[0] == "M"
    # the DICOM holds the PNG's pixels x 16, windowed back on reading: the same image, so the same age
    png_as_male = predict.predict_files([pngs[0]], sex="M", model=str(path))
    np.testing.assert_array_equal(rsna.read_image(dicom), rsna.read_image(pngs[0]))
    assert from_header.months.iloc[0] == pytest.approx(png_as_male.months.iloc[0], abs=0.01)


def test_bad_inputs_get_a_row_with_the_reason(checkpoint, images, tmp_path):
    path, _ = checkpoint
    pngs, _ = images
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    df = predict.predict_files([broken, tmp_path / "missing.png", pngs[0]], sex="M", model=str(path))
    assert "broken.png: cannot read this image" in df.error.iloc[0]
    assert "missing.png: no such file" in df.error.iloc[1]
    assert df.error.iloc[2] == "" and np.isfinite(df.months.iloc[2])
    no_sex = predict.predict_files([pngs[0]], model=str(path))
    assert "--sex M or --sex F" in no_sex.error.iloc[0] and np.isnan(no_sex.months.iloc[0])
    assert "unknown sex 'X'" in predict.predict_files([pngs[0]], sex="X", model=str(path)).error.iloc[0]


def test_checkpoints_that_do_not_fit_are_refused(checkpoint, tmp_path):
    path, model = checkpoint
    with pytest.raises(predict.PredictError, match="neither a method id"):
        predict.load_final("no-such-model")
    pickle = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), pickle)
    with pytest.raises(predict.PredictError, match="not a safetensors checkpoint"):
        predict.load_final(str(pickle))
    # weights of another architecture under Li 2021's metadata
    cfg = bac.config.resolve("smoke", "li2021", out_dir=str(tmp_path), backbone="mobilenetv3_small_100")
    other = li2021.build_final(cfg)
    wrong = predict.save_final(cfg, other, bac.data.load(cfg, progress=False))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["bac"])
    bac.train.save_checkpoint(other, wrong, meta)
    with pytest.raises(predict.PredictError, match="does not match the li2021 model"):
        predict.load_final(str(wrong))
    bare = bac.train.save_checkpoint(other, tmp_path / "bare.safetensors")
    with pytest.raises(predict.PredictError, match="no bac model metadata"):
        predict.load_final(str(bare))


def test_command_line_exit_codes(checkpoint, images, tmp_path, capsys):
    from bac.__main__ import main
    path, _ = checkpoint
    pngs, dicom = images
    assert main(["predict", str(dicom), "--model", str(path), "--out", str(tmp_path / "a")]) == 0
    assert "months (" in capsys.readouterr().out
    assert main(["predict", str(pngs[0]), "--model", str(path), "--out", str(tmp_path / "b")]) == 1
    assert "--sex" in capsys.readouterr().err
    assert main(["predict", str(pngs[0]), "--sex", "F", "--model", str(tmp_path / "none.safetensors")]) == 2


def test_a_rejected_localisation_is_refused_unless_forced(checkpoint, tmp_path, capsys):
    """A film whose only object is a small square (no hand): Li's localisation finds a box that `check_box`
    rejects; `bac predict` refuses it with the reason (exit 1) and `--force` predicts it and says so."""
    from bac.__main__ import main
    path, _ = checkpoint
    film = np.full((256, 200), 20, np.uint8)
    film[20:44, 150:174] = 180
    png = tmp_path / "no_hand.png"
    Image.fromarray(film).save(png)
    df = predict.predict_files([png], sex="F", model=str(path))
    assert df.localisation.iloc[0].startswith("rejected (") and np.isnan(df.months.iloc[0])
    assert "localisation of li2021 was rejected" in df.error.iloc[0] and "--force" in df.error.iloc[0]
    assert main(["predict", str(png), "--sex", "F", "--model", str(path), "--out", str(tmp_path / "a")]) == 1
    assert "was rejected" in capsys.readouterr().err
    assert main(["predict", str(png), "--sex", "F", "--model", str(path), "--out", str(tmp_path / "b"),
                 "--force"]) == 0
    csv = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert csv.localisation.iloc[0].endswith("forced") and np.isfinite(csv.months.iloc[0])


def test_gaussian_intervals_are_calibrated():
    """90 % central intervals of the true predictive distributions cover ~90 % of ages drawn from them."""
    rng = np.random.default_rng(0)
    centres, sd = rng.uniform(40, 200, 2000), 12.0
    ages = np.arange(1, 241)
    probs = np.exp(-0.5 * ((ages[None] - centres[:, None]) / sd) ** 2)
    truth = rng.normal(centres, sd)
    lo, hi = metrics.distribution_interval(probs, 0.9)
    assert np.median(hi - lo) == pytest.approx(2 * 1.645 * sd, abs=2)
    assert metrics.interval_coverage(truth, lo, hi) == pytest.approx(0.9, abs=0.025)
    assert metrics.interval_coverage(truth, lo + 30, hi + 30) < 0.3


def test_latency_runs_the_localiser_afresh(checkpoint, images, tmp_path, monkeypatch):
    """`predict.latency` times the whole pipeline: Li's per-image segmentation (which trains a small network,
    so it must run outside no_grad) on every image, nothing read from or written to the localisation cache."""
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    net, meta = predict.load_final(str(checkpoint[0]))
    pngs, _ = images
    r = predict.latency(net, meta, [str(p) for p in pngs], [1, 0], threads=1)
    assert r["n"] == 1 and r["preprocess_s"] > 0 and r["total_s"] == pytest.approx(r["preprocess_s"] + r["forward_s"])
    assert not (tmp_path / "cache" / "localised").exists()


def test_notebook_90_gives_each_method_the_runs_overrides(monkeypatch):
    """`bac run --set` gives every notebook the same overrides: notebook 90 accepts a method's setting (it has
    none of its own by that name) and resolves each method with the overrides that are its settings, so that it
    finds the method notebook's checkpoint instead of training the profile's defaults again."""
    from bac import config
    cfg = config.resolve("smoke", "comparison", overrides="pretrained='phantom',epochs=2,n_boot=50")
    assert cfg.n_boot == 50 and cfg.overrides == {"pretrained": "phantom", "epochs": 2, "n_boot": 50}
    with pytest.raises(ValueError, match="nonsense"):
        config.resolve("smoke", "comparison", overrides="nonsense=1")
    for section in ("data", "preprocess", "pretrain"):      # the other notebooks of a `bac run --set` run
        assert config.resolve("smoke", section, overrides="pretrained='phantom'").overrides == {"pretrained": "phantom"}
    with pytest.raises(ValueError, match="live_images"):      # a method does not take a section's setting
        config.resolve("smoke", "li2021", overrides="live_images=4")
    seen = {}

    def spy(profile, paper=None, **kw):
        seen[paper] = kw["overrides"]
        raise RuntimeError("resolved")

    monkeypatch.setattr(config, "resolve", spy)
    with pytest.raises(RuntimeError, match="resolved"):
        predict.comparison_model("li2021", cfg, df=None)
    assert seen["li2021"] == {"pretrained": "phantom", "epochs": 2}
