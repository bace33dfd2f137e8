"""The loaders on real RSNA files: `../shared/rsna-sample` (real radiographs and the official label files as users
download them), laid out in a temporary folder as the official release is, the images linked, never copied. Skipped
when the sample is absent (a user's clone has none).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

from bac.data import rsna
from bac.env import REPO

SAMPLE = REPO.parent / "shared" / "rsna-sample"
pytestmark = pytest.mark.skipif(not (SAMPLE / "labels_official").is_dir(),
                                reason=f"the real RSNA sample is not at {SAMPLE}")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official layout: the training label file and the half-resolution training images (plus the training
    originals), the validation label file with its two images, the test ground truth as exported from the xlsx
    (UTF-8 BOM, old-Mac CR line endings) with the 22 test originals."""
    root = tmp_path_factory.mktemp("rsna-official")
    labels = SAMPLE / "labels_official"
    originals = pd.read_csv(SAMPLE / "originals" / "labels.csv")
    half = pd.read_csv(SAMPLE / "half-res" / "labels.csv")
    folders = {"train": root / "boneage-training-dataset",
               "validation": root / "Bone Age Validation Set" / "boneage-validation-dataset-1",
               "test": root / "Bone Age Test Set" / "Test Set Images"}
    for f in folders.values():
        f.mkdir(parents=True)
    for i in half.id:
        os.symlink(SAMPLE / "half-res" / "images" / f"{i}.png", folders["train"] / f"{i}.png")
    for r in originals.itertuples():
        os.symlink(SAMPLE / "originals" / f"{r.id}.png", folders[r.split] / f"{r.id}.png")
    os.symlink(labels / "boneage-training-dataset.csv", root / "boneage-training-dataset.csv")
    os.symlink(labels / "boneage-validation-dataset_Validation.csv",
               root / "Bone Age Validation Set" / "Validation Dataset.csv")
    os.symlink(labels / "boneage-test-ground-truth_original.csv",
               root / "Bone Age Test Set" / "Bone age ground truth.csv")
    return root, originals, half


def test_the_official_layout_from_real_files(official):
    root, originals, half = official
    assert (SAMPLE / "labels_official" / "boneage-test-ground-truth_original.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert rsna.detect_layout(root) == "official"
    with pytest.raises(rsna.DataError, match="missing"):   # 12,611 + 1,425 + 200 rows, a few hundred images
        rsna.load_table(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = rsna.load_table(root, drop_invalid=True)
    want = {"train": len(half) + (originals.split == "train").sum(), "validation": 2, "test": 22}
    assert df.split.value_counts().to_dict() == want
    assert sum(df.attrs["dropped"].values()) == 12611 + 1425 + 200 - sum(want.values())
    # every label as the label files give it: the decimal test ground truth (mean of six raters), sexes from
    # three spellings (False/True, FALSE/TRUE, F/M)
    truth = pd.concat([originals[["id", "boneage", "male"]], half[["id", "boneage", "male"]]]).set_index("id")
    got = df.set_index("id")
    assert np.allclose(got.boneage, truth.loc[got.index, "boneage"])
    assert (got.male == truth.loc[got.index, "male"]).all()
    assert got.loc[4360, "boneage"] == pytest.approx(168.93) and got.loc[4360, "split"] == "test"
    assert all(os.path.realpath(p).startswith(str(SAMPLE)) for p in df.path)


def test_real_images_read_as_grey_uint8(official):
    root, originals, _ = official
    for r in originals.head(5).itertuples():
        image = rsna.read_image(SAMPLE / "originals" / f"{r.id}.png")
        assert image.dtype == np.uint8 and image.shape == (r.height, r.width)


def test_predict_on_real_films(checkpoint, tmp_path):
    """`bac predict` on real originals: a portrait film with one hand is predicted; the landscape film whose
    localisation finds no hand (1418, rejected at these settings) is refused with the reason unless forced."""
    from bac import predict
    from bac.preprocess import locate
    li_checkpoint = checkpoint[0]
    films = [SAMPLE / "originals" / "1392.png", SAMPLE / "originals" / "1418.png"]
    meta = predict.load_final(str(li_checkpoint))[1]
    assert locate(rsna.read_image(films[1]), "li2021", 0, **meta["params"])["reason"]   # the premise
    df = predict.predict_files(films, sex="M", model=str(li_checkpoint), out=tmp_path / "a")
    assert df.error.iloc[0] == "" and np.isfinite(df.months.iloc[0]) and df.localisation.iloc[0] == ""
    assert "1418.png: the hand localisation of li2021 was rejected" in df.error.iloc[1]
    forced = predict.predict_files(films[1:], sex="M", model=str(li_checkpoint), force=True)
    assert forced.localisation.iloc[0].endswith("forced") and np.isfinite(forced.months.iloc[0])


def test_li2021_on_the_hard_originals():
    """Li 2021's localisation (demo settings) of the 37 annotated hard originals, markers erased on reading: every
    low-contrast film is localised (IoU >= 0.5) or rejected, never cropped wrongly in silence; no final input keeps
    a marker (dark ink, a black-outlined triangle and a ruler's ticks and text, is scored by its dark pixels)."""
    from bac.config import resolve
    from bac.preprocess import PARAMS, scores, settings
    cfg = resolve("demo", "li2021")
    rows = scores.score_originals(SAMPLE, PARAMS["li2021"](settings(cfg), cfg, None))
    summary = scores.summarise_originals(rows)
    assert summary["images"] == 37 and summary["low_contrast"]["images"] == 10
    assert summary["low_contrast"]["failed_silently"] == 0
    assert summary["films_with_a_marker_in_the_input"] == 0, rows[rows.markers_in_input > 0][["id", "marker_shares"]]
