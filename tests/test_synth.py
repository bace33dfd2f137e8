"""The synthetic RSNA-like data set: layout, determinism, ground truth and the maturity model."""
from __future__ import annotations

import json

import numpy as np
import openpyxl
import pandas as pd
import pytest
from PIL import Image

from bac.data import synth

CARPALS = list(synth.CARPALS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "a"
    synth.make_dataset(root, n_train=5, n_val=4, n_test=3, long_side=96, seed=7, workers=1, progress=False)
    return root


def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    other = synth.make_dataset(tmp_path / "b", n_train=5, n_val=4, n_test=3, long_side=96, seed=7, workers=2,
                               progress=False)
    assert synth.file_digest(other) == synth.file_digest(dataset)
    changed = synth.make_dataset(tmp_path / "c", n_train=5, n_val=4, n_test=3, long_side=96, seed=8, workers=1,
                                 progress=False)
    assert synth.file_digest(changed) != synth.file_digest(dataset)


def test_official_layout_and_columns(dataset):
    train = pd.read_csv(dataset / "train.csv")
    assert list(train.columns) == ["id", "boneage", "male"]
    assert train.boneage.dtype.kind == "i" and train.male.dtype == bool and len(train) == 5
    assert all((dataset / "boneage-training-dataset" / f"{i}.png").is_file() for i in train.id)

    vdir = dataset / "Bone Age Validation Set"
    val = pd.read_csv(vdir / "Validation Dataset.csv")
    assert list(val.columns) == ["Image ID", "male", "Bone Age (months)"]
    first = [p.stem for p in (vdir / "boneage-validation-dataset-1").glob("*.png")]
    second = [p.stem for p in (vdir / "boneage-validation-dataset-2").glob("*.png")]
    assert sorted(map(int, first)) == list(val["Image ID"][:2])
    assert sorted(map(int, second)) == list(val["Image ID"][2:])

    tdir = dataset / "Bone Age Test Set"
    rows = list(openpyxl.load_workbook(tdir / "Bone age ground truth.xlsx").active.values)
    assert rows[0] == ("Case ID", "Sex", "Ground truth bone age (months)")
    ids = [r[0] for r in rows[1:]]
    assert ids == [4360, 4361, 4362] and {r[1] for r in rows[1:]} <= {"M", "F"}
    assert all(isinstance(r[2], float) for r in rows[1:])
    assert all((tdir / "Test Set Images" / f"{i}.png").is_file() for i in ids)

    all_ids = list(train.id) + list(val["Image ID"]) + ids
    assert len(set(all_ids)) == len(all_ids)
    im = Image.open(dataset / "boneage-training-dataset" / f"{train.id[0]}.png")
    assert im.mode == "L" and max(im.size) == 96

    info = json.loads((dataset / "synth.json").read_text())
    assert info["seed"] == 7 and info["counts"] == {"train": 5, "validation": 4, "test": 3}
    assert info["rater_sd"]["test"] == pytest.approx(5 / np.sqrt(6))
    assert info["mae_floor"]["train"] == pytest.approx(5 * np.sqrt(2 / np.pi), abs=1e-3)


def test_the_rsna_loader_reads_it(dataset):
    from bac.data import rsna
    df = rsna.load_table(dataset)
    assert df.split.value_counts().to_dict() == {"train": 5, "validation": 4, "test": 3}
    ann = synth.read_annotation(dataset, 4360)
    assert ann["split"] == "test" and df.set_index("id").loc[4360, "boneage"] == pytest.approx(ann["label"])


def test_annotations_match_images(dataset):
    for path in sorted((dataset / "annotations").glob("*.json")):
        ann = json.loads(path.read_text())
        image = dataset / ann["path"]
        h, w = np.asarray(Image.open(image)).shape
        mask = synth.read_mask(dataset, ann["id"])
        assert [h, w] == ann["size"] == list(mask.shape)
        ys, xs = np.nonzero(mask)
        assert ann["boxes"]["hand"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert set(ann["bones_present"]) >= set(CARPALS) and 0 < ann["true_age"] <= 228


def _all_boxes(boxes):
    for key, value in boxes.items():
        for box in ([value] if isinstance(value[0], int) else value):
            yield key, box


@pytest.mark.parametrize("seed", range(6))
def test_boxes_inside_image_and_hand(seed):
    ph = synth.render(20 + 35 * seed, seed % 2 == 0, seed, long_side=160)
    h, w = ph.image.shape
    hx0, hy0, hx1, hy1 = ph.boxes["hand"]
    assert len(ph.boxes["dip"]) == 5 and len(ph.boxes["pip"]) == 4 and len(ph.boxes["mcp"]) == 5
    for key, (x0, y0, x1, y1) in _all_boxes(ph.boxes):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, key
        assert hx0 <= x0 and hy0 <= y0 and x1 <= hx1 and y1 <= hy1, key
    ys, xs = np.nonzero(ph.mask)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == ph.boxes["hand"]


def test_carpal_count_grows_with_age_and_follows_the_atlas_order():
    ages = np.arange(1, 229, 3)
    for seed in range(20):
        for male in (True, False):
            present = [synth.maturity_state(a, male, seed)["bones_present"] for a in ages]
            counts = [sum(p[c] for c in CARPALS) for p in present]
            assert counts == sorted(counts) and counts[0] <= 2 and counts[-1] == 8
    for age in (2, 50, 100, 150, 228):  # the drawn hand reports the same state
        ph = synth.render(age, False, 5, long_side=64)
        assert {k: ph.meta[k] for k in ("bones_present", "stages")} == {
            k: v for k, v in synth.maturity_state(age, False, 5).items() if k != "maturity"}
    # at ~3 y (boys) the capitate and hamate are there and the pisiform is not
    p = synth.render(36, True, 0, long_side=64, nuisance=False).meta["bones_present"]
    assert p["capitate"] and p["hamate"] and not p["pisiform"] and not p["sesamoid"]


def test_bones_brighten_the_carpal_region_as_the_hand_grows_up():
    def carpal_mean(age):
        ph = synth.render(age, True, 3, long_side=256, nuisance=False)
        x0, y0, x1, y1 = ph.boxes["carpal"]
        return ph.image[y0:y1, x0:x1].mean()
    means = [carpal_mean(a) for a in (6, 60, 120, 200)]
    assert means == sorted(means) and means[-1] - means[0] > 15


def test_same_seed_is_the_same_hand_at_another_age():
    young, old = (synth.render(a, False, 11, long_side=128) for a in (40, 170))
    assert np.array_equal(young.mask, old.mask) and young.boxes["hand"] == old.boxes["hand"]
    for key in ("carpal", "metacarpal", "dip", "mcp"):  # regions stay put (physes may move a pixel)
        assert np.abs(np.subtract(young.boxes[key], old.boxes[key])).max() <= 2, key
    assert young.meta["nuisance"] == old.meta["nuisance"]
    assert np.abs(young.image.astype(int) - old.image).mean() > 1


def test_girls_are_more_mature_at_the_same_bone_age():
    for age in (30, 80, 140, 175):
        for seed in range(3):
            boy, girl = (synth.maturity_state(age, male, seed) for male in (True, False))
            assert girl["maturity"] == pytest.approx(age * synth.FEMALE_CLOCK, rel=1e-3)
            assert sum(girl["bones_present"].values()) >= sum(boy["bones_present"].values())
    boy, girl = (synth.maturity_state(140, m, 0)["stages"] for m in (True, False))
    order = ["absent", "narrow", "equal", "capped", "fusing", "fused"]
    rank = {k: [order.index(s[k]) for s in (boy, girl)] for k in boy}
    assert all(g >= b for b, g in rank.values()) and any(g > b for b, g in rank.values())


def test_label_statistics_match_rsna_training():
    labels = synth.sample_labels(200_000, np.random.default_rng(0))
    assert labels.true_age.mean() == pytest.approx(127.3, abs=0.6)
    assert labels.true_age.std() == pytest.approx(41.2, abs=0.6)
    assert labels.true_age.min() >= 1 and labels.true_age.max() <= 228
    assert labels.male.mean() == pytest.approx(0.542, abs=0.005)
    assert (labels.label - labels.true_age).std() == pytest.approx(5.0, abs=0.1)
    assert (labels.label == labels.label.round()).all()
    test = synth.sample_labels(50_000, np.random.default_rng(1), split="test")
    assert (test.label - test.true_age).std() == pytest.approx(5 / np.sqrt(6), abs=0.05)
    # boys are older on average, as in RSNA
    assert labels[labels.male].true_age.mean() - labels[~labels.male].true_age.mean() > 10


def test_nuisances_do_not_depend_on_age():
    rng = np.random.default_rng(3)
    ages, areas, scales, contrast = [], [], [], []
    for seed in range(150):
        age = rng.uniform(1, 228)
        ph = synth.render(age, bool(seed % 2), 1000 + seed, long_side=64)
        ages.append(age)
        areas.append(ph.mask.mean())
        scales.append(ph.meta["nuisance"]["px_per_mm"])
        contrast.append(ph.meta["nuisance"]["peak"] - ph.meta["nuisance"]["background"])
    for values in (areas, scales, contrast):
        assert abs(np.corrcoef(ages, values)[0, 1]) < 0.2


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="months"):
        synth.render(-3, True, 0)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.make_dataset(tmp_path / "x", 1, 1, 1, long_side=64, progress=False)
    with pytest.raises(FileNotFoundError, match="synthetic"):
        synth.read_annotation(tmp_path, 5000)
