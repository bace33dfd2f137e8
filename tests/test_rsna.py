"""RSNA loaders (`bac.data.rsna`) and split schemes (`bac.data.splits`) on tiny fake release folders."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_dicom

from bac.data import rsna, splits
from bac.data.rsna import DataError


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rsna.load_table(root, **kw)


# ----------------------------------------------------------------------------------------- tables
@pytest.mark.parametrize("train_labels", ["train.csv", "boneage-training-dataset.csv"])
def test_official_layout_table(make_official, fake_rows, train_labels):
    root = make_official(train_labels=train_labels)
    assert rsna.detect_layout(root) == "official"
    df = rsna.load_table(root)
    assert list(df.columns) == ["id", "path", "boneage", "male", "split", "label_file"]
    assert df.id.dtype == np.int64 and df.boneage.dtype == np.float64 and df.male.dtype == bool
    expected = [(i, float(a), m, s) for s, rows in fake_rows.items() for i, a, m in rows]
    assert list(zip(df.id, df.boneage, df.male, df.split)) == expected
    # validation images found in -1, -2 and directly in the folder; every path absolute and existing
    valid_paths = df.path[df.split == "validation"].tolist()
    assert any("dataset-1" in p for p in valid_paths) and any("dataset-2" in p for p in valid_paths)
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in df.path)
    assert df.boneage[df.id == 4360].item() == pytest.approx(168.934190822608)  # decimals kept
    files = {train_labels: root / train_labels,
             "Bone Age Validation Set/Validation Dataset.csv": root / "Bone Age Validation Set/Validation Dataset.csv",
             "Bone Age Test Set/Bone age ground truth.xlsx": root / "Bone Age Test Set/Bone age ground truth.xlsx"}
    assert df.attrs["layout"] == "official"
    assert df.attrs["label_files"] == {k: _sha(p) for k, p in files.items()}
    assert set(df.label_file) == set(files)
    assert df.attrs["dropped"] == {}


def test_bom_cr_csv_export_and_integer_test_ages_warn(make_official, fake_rows):
    root = make_official(test_labels="csv", integer_test_ages=True)
    raw = (root / "Bone Age Test Set/Bone age ground truth.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\n" not in raw  # the fixture really is BOM + CR
    with pytest.warns(UserWarning, match="not the official RSNA ground truth"):
        df = rsna.load_table(root)
    test = df[df.split == "test"]
    assert test.id.tolist() == [r[0] for r in fake_rows["test"]]
    assert test.boneage.tolist() == [float(round(r[1])) for r in fake_rows["test"]]  # 4360 -> 169, an integer label
    assert test.male.all()
    assert any("not the official" in n for n in df.attrs["notes"])


def test_kaggle_layout(make_kaggle, fake_rows):
    root = make_kaggle()
    assert rsna.detect_layout(root) == "kaggle"
    df = rsna.load_table(root)
    assert df.attrs["layout"] == "kaggle"
    assert set(df.split) == {"train", "test"}  # no validation set
    assert df.boneage[df.split == "train"].tolist() == [float(r[1]) for r in fake_rows["train"]]
    assert df.boneage[df.split == "test"].isna().all()
    assert df.male[df.split == "test"].tolist() == [r[2] for r in fake_rows["test"]]
    assert all("/boneage-training-dataset/boneage-training-dataset/" in p for p in df.path[df.split == "train"])
    assert any("no bone ages" in n for n in df.attrs["notes"])
    assert set(df.attrs["label_files"]) == {"boneage-training-dataset.csv", "boneage-test-dataset.csv"}


# ----------------------------------------------------------------------------------------- errors
def test_unknown_layout_says_what_was_looked_for_and_found(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"Looked for boneage-training-dataset/.*found: images/, labels\.xlsx"):
        rsna.detect_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rsna.load_table(tmp_path / "nowhere")


def test_missing_images_listed_with_folder(make_official):
    root = make_official()
    for i in (1378, 1380):
        (root / f"boneage-training-dataset/{i}.png").unlink()
    with pytest.raises(DataError, match=r"missing image.*2 train ids \(first: 1378, 1380\) not found in .*"
                                        r"boneage-training-dataset"):
        _load(root)
    df = _load(root, check_files=False)
    assert 1378 in set(df.id) and df.path[df.id == 1378].item().endswith("boneage-training-dataset/1378.png")
    with pytest.warns(UserWarning, match="Dropped 2 rows.*missing image"):
        df = rsna.load_table(root, drop_invalid=True)
    assert df.attrs["dropped"] == {"missing image": 2} and not {1378, 1380} & set(df.id)


def test_duplicate_ids_across_files_and_duplicate_images(make_official):
    root = make_official()
    csv = root / "train.csv"
    csv.write_text(csv.read_text() + "1392,100,True\n")  # 1392 is also a validation id
    with pytest.raises(DataError, match=r"duplicate id.*id 1392 in train\.csv line 8, "
                                        r"Bone Age Validation Set/Validation Dataset\.csv line 3"):
        _load(root)
    root2 = make_official()
    shutil.copy(root2 / "Bone Age Validation Set/boneage-validation-dataset-1/1386.png",
                root2 / "Bone Age Validation Set/boneage-validation-dataset-2/1386.png")
    duplicate = r"duplicate image files.*id 1386: .*dataset-1/1386\.png, .*dataset-2/1386\.png"
    with pytest.raises(DataError, match=duplicate):
        _load(root2)


def test_bad_ages_and_sex_codes_name_file_and_row(make_official, fake_rows):
    root = make_official()
    csv = root / "train.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "1378,300,False"  # line 3: age out of range
    lines[4] = "1380,120,X"  # line 5: unknown sex code
    lines[5] = "1381,,True"  # line 6: missing age
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert "age outside 0-240 months (1 rows): train.csv line 3: id=1378, age=300" in msg
    assert "unknown sex code (1 rows): train.csv line 5: id=1380, sex=X" in msg
    assert "missing or non-numeric age (1 rows): train.csv line 6: id=1381" in msg
    with pytest.warns(UserWarning):
        df = rsna.load_table(root, drop_invalid=True)
    assert df.attrs["dropped"] == {"age outside 0-240 months": 1, "unknown sex code": 1,
                                   "missing or non-numeric age": 1}
    assert len(df) == sum(map(len, fake_rows.values())) - 3


def test_unknown_sex_in_test_xlsx_names_row(make_official):
    import openpyxl
    root = make_official()
    path = root / "Bone Age Test Set/Bone age ground truth.xlsx"
    wb = openpyxl.load_workbook(path)
    wb.active["B3"] = "U"  # row 3 = second case, 4361
    wb.save(path)
    with pytest.raises(DataError, match=r"Bone age ground truth\.xlsx row 3: id=4361, sex=U"):
        _load(root)


# ----------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("kind,suffix", [("L", "png"), ("I;16", "png"), ("RGB", "png"), ("RGBA", "png"),
                                         ("JPEG", "jpg")])
def test_read_image_formats_give_one_convention(tmp_path, write_image, kind, suffix):
    path = write_image(tmp_path / f"a.{suffix}", kind)
    ref = np.asarray(Image.open(write_image(tmp_path / "ref.png", "L")))
    img = rsna.read_image(path)
    assert img.dtype == np.uint8 and img.shape == ref.shape
    if kind == "I;16":  # values 1000 + 8 g: rescaled by the actual range, so it spans 0..255 ...
        assert img.min() == 0 and img.max() == 255
        expected = np.rint((ref.astype(float) - ref.min()) * 255 / (ref.max() - ref.min()))
        np.testing.assert_array_equal(img, expected)  # ... and is linear in the 8-bit original
    elif kind == "JPEG":
        assert np.abs(img.astype(int) - ref).mean() < 3
    else:  # alpha ignored, grey RGB -> same luminance
        np.testing.assert_array_equal(img, ref)


def _dicom(path, photometric, window=(2048, 1024), slope=1.0, intercept=0.0, sex="M"):
    return write_dicom(path, np.array([[0, 1024, 2048, 3072, 4095]], np.uint16), photometric, window, slope,
                       intercept, sex)


def test_dicom_windowing_and_monochrome1_inversion(tmp_path):
    # Stored 0..4095 through the window [1536, 2560]: below -> 0, centre -> ~128, above -> 255.
    mono2 = rsna.read_image(_dicom(tmp_path / "4360.dcm", "MONOCHROME2"))
    np.testing.assert_array_equal(mono2, [[0, 0, 128, 255, 255]])
    mono1 = rsna.read_image(_dicom(tmp_path / "4361.dcm", "MONOCHROME1"))
    np.testing.assert_array_equal(mono1, 255 - mono2)
    # The modality LUT (rescale) is applied before the window, which is given in rescaled units.
    rescaled = rsna.read_image(_dicom(tmp_path / "4362.dcm", "MONOCHROME2", window=(1000, 2000), slope=0.5,
                                      intercept=0))
    x = np.array([0, 1024, 2048, 3072, 4095]) * 0.5  # DICOM PS3.3 C.11.2.1.2.1 linear window, c=1000, w=2000:
    expected = np.rint(np.clip((x - (1000 - 0.5)) / (2000 - 1) + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(rescaled, [expected])
    assert rescaled[0, 1] == 65  # not 64: the standard's -0.5 / -1 offsets
    # No window: the stored range is stretched; a DICOM without extension is recognised by its magic.
    nowin = _dicom(tmp_path / "4363.dcm", "MONOCHROME2", window=None)
    shutil.copy(nowin, tmp_path / "4363")
    np.testing.assert_array_equal(rsna.read_image(tmp_path / "4363"), [[0, 64, 128, 191, 255]])
    assert rsna.read_dicom_sex(tmp_path / "4360.dcm") is True
    assert rsna.read_dicom_sex(_dicom(tmp_path / "f.dcm", "MONOCHROME2", sex="F")) is False
    assert rsna.read_dicom_sex(_dicom(tmp_path / "o.dcm", "MONOCHROME2", sex="")) is None


def test_dicom_in_a_release_folder_is_found_by_stem(make_official):
    root = make_official()
    images = root / "Bone Age Test Set/Test Set Images"
    (images / "4361.png").unlink()
    _dicom(images / "4361.dcm", "MONOCHROME1")
    df = rsna.load_table(root)
    assert df.path[df.id == 4361].item().endswith("4361.dcm")


def test_truncated_images_named_by_read_image_and_validate_images(make_official):
    root = make_official()
    df = rsna.load_table(root)
    rsna.validate_images(df, workers=2, progress=False)  # all good: no error
    bad = [df.path[df.id == 1379].item(), df.path[df.id == 4362].item()]
    for p in bad:
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match="1379.png"):
        rsna.read_image(bad[0])
    with pytest.raises(DataError) as err:
        rsna.validate_images(df, workers=2, progress=False)
    assert str(err.value).startswith(f"2 of {len(df)} images are unreadable")
    assert all(p in str(err.value) for p in bad)


# ----------------------------------------------------------------------------------------- splits
def _pool(n=2000, seed=1):
    """A labelled table (no files needed): ids shuffled, ages 1-228 months, official 80/10/10 splits."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + n))
    split = np.where(np.arange(n) < 0.8 * n, "train", np.where(np.arange(n) < 0.9 * n, "validation", "test"))
    df = pd.DataFrame({"id": ids, "path": [f"/x/{i}.png" for i in ids], "boneage": rng.uniform(1, 228, n).round(),
                       "male": rng.random(n) < 0.5, "split": split, "label_file": "train.csv"})
    df.attrs.update(layout="official", label_files={"train.csv": "ab" * 32}, dropped={}, notes=[])
    return df


def test_official_schemes_keep_the_release_split():
    df = _pool(200)
    for scheme in ("official", "liu2024", "zheng2024"):
        out = splits.make_split(df, scheme)
        pd.testing.assert_series_equal(out.split, df.split)
        assert out.attrs["split_scheme"] == scheme and out.attrs["label_files"] == df.attrs["label_files"]
    with pytest.raises(ValueError, match="Unknown split scheme 'nope'"):
        splits.make_split(df, "nope")


@pytest.mark.filterwarnings("ignore:split")
@pytest.mark.parametrize("scheme,n,sizes", [("li2021", 2000, (1120, 320, 160)),  # 7:2:1 of the 1,600 train rows
                                            ("chen2022", 6000, (5000, 500, 500)),
                                            ("chen2022", 2000, (1600, 200, 200))])
def test_random_splits_sizes_reproducible_disjoint(scheme, n, sizes):
    df = _pool(n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = splits.make_split(df, scheme, seed=3)
    assert (any("scaled down" in str(w.message) for w in caught)) == (scheme == "chen2022" and n < 5000)
    counts = a.split.value_counts()
    assert (counts["train"], counts["validation"], counts["test"]) == sizes
    assert a.id.is_unique  # each image in exactly one split
    # same seed -> same split, whatever the row order; another seed -> a different one
    b = splits.make_split(df.sample(frac=1, random_state=0), scheme, seed=3)
    assert dict(zip(a.id, a.split)) == dict(zip(b.id, b.split))
    c = splits.make_split(df, scheme, seed=4)
    assert dict(zip(a.id, a.split)) != dict(zip(c.id, c.split))


def test_ren2019_pools_the_training_set_without_ages_over_216_months():
    """Ren 2019 split 12,480 images (the 12,611 of the training set less ages over 18 years) into
    9,984 / 1,248 / 1,248: the validation and test sets of the release are not in the pool."""
    df = _pool(2000)
    train = df[df.split == "train"]
    n_over = int((train.boneage > 216).sum())
    assert n_over > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = splits.make_split(df, "ren2019", seed=0)
    assert any(f"dropped {n_over} rows" in str(w.message) for w in caught)
    assert out.boneage.max() <= 216 and len(out) == len(train) - n_over and set(out.id) <= set(train.id)
    assert out.attrs["split_dropped"] == {"not in the official training set (ren2019 splits those)": 400,
                                          "bone age over 216 months": n_over}
    n = len(out)
    counts = out.split.value_counts()
    assert counts["validation"] == counts["test"] == round(0.1 * n) and counts["train"] == n - 2 * round(0.1 * n)
    # at RSNA scale: 12,480 -> 9,984 / 1,248 / 1,248, the paper's counts
    assert (round(0.1 * 12480), 12480 - 2 * round(0.1 * 12480)) == (1248, 9984)


def test_random_split_skips_unlabelled_kaggle_test(make_kaggle, fake_rows):
    df = rsna.load_table(make_kaggle())
    with pytest.warns(UserWarning) as caught:
        out = splits.make_split(df, "chen2022")
    assert any("dropped 4 rows (no bone age)" in str(w.message) for w in caught)
    assert out.boneage.notna().all() and len(out) == len(fake_rows["train"])


@pytest.mark.filterwarnings("ignore:split")
def test_save_manifest(tmp_path):
    df = splits.make_split(_pool(300), "li2021", seed=5)
    splits.save_manifest(df, tmp_path / "m" / "split_li2021.csv", scheme="li2021", seed=5)
    table = pd.read_csv(tmp_path / "m" / "split_li2021.csv")
    assert list(table.columns) == ["id", "split", "boneage", "male"]
    assert dict(zip(table.id, table.split)) == dict(zip(df.id, df.split))
    meta = json.loads((tmp_path / "m" / "split_li2021.json").read_text())
    assert meta["scheme"] == "li2021" and meta["seed"] == 5
    assert meta["label_files"] == {"train.csv": "ab" * 32}
    assert meta["counts"] == {"train": 168, "validation": 48, "test": 24}
    assert meta["dropped_by_split"] == {"not in the official training set (li2021 splits those)": 60}
