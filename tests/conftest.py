"""Shared fixtures: tiny fake RSNA folders (official release and Kaggle copy) built from generated images.

`make_official(**options)` and `make_kaggle(**options)` return the root of a fresh fake folder;
`write_image(path, kind)` writes one small test image ('L', 'I;16', 'RGB', 'RGBA', 'JPEG');
`fake_rows` holds the labels they contain.
They do not use the synthetic phantom generator, so loader tests stay independent of it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never write into the repository's reports/: `make test` sets BAC_OUT_DIR; a bare `pytest` gets a
# temporary folder (configs resolved without out_dir, and notebooks run by nbval, read it).
os.environ.setdefault("BAC_OUT_DIR", tempfile.mkdtemp(prefix="bac-test-reports-"))

# Ids and labels of the fake release: (id, boneage, male). Ages are floats in the test set (mean of raters).
TRAIN_ROWS = [(1377, 180, False), (1378, 12, False), (1379, 94, True), (1380, 120, True), (1381, 228, True),
              (1382, 36, False)]
VALID_ROWS = [(1386, 30, False), (1392, 162, True), (1397, 150, True), (1401, 138, False)]
TEST_ROWS = [(4360, 168.934190822608, True), (4361, 169.652244463147, True), (4362, 73.256140116147, True),
             (4363, 151.98646359797, True)]


def _gradient(size=(20, 16), seed=0) -> np.ndarray:
    """A small uint8 gradient with noise (H, W)."""
    h, w = size
    rng = np.random.default_rng(seed)
    return (np.linspace(0, 200, w)[None, :] + rng.integers(0, 50, (h, w))).astype(np.uint8)


def write_image_file(path, kind: str = "L", size=(20, 16), seed: int = 0) -> Path:
    """Write a small image: 'L' (8-bit PNG), 'I;16' (16-bit PNG, values 1000..3000), 'RGB', 'RGBA', 'JPEG'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = _gradient(size, seed)
    if kind == "L":
        Image.fromarray(g).save(path)
    elif kind == "I;16":
        Image.fromarray((1000 + g.astype(np.uint16) * 8).astype(np.uint16)).save(path)
    elif kind in ("RGB", "RGBA"):
        rgb = np.stack([g, g, g] + ([np.full_like(g, 7)] if kind == "RGBA" else []), axis=-1)
        Image.fromarray(rgb, kind).save(path)
    elif kind == "JPEG":
        Image.fromarray(g).convert("RGB").save(path, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return path


def _csv(path: Path, header: str, rows, bom_cr: bool = False) -> None:
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    if bom_cr:  # the RSNA release's exports: UTF-8 BOM and old-Mac CR line endings
        path.write_bytes(("\ufeff" + "\r".join(lines) + "\r").encode("utf-8"))
    else:
        path.write_text("\n".join(lines) + "\n")


def build_official(root, train_labels: str = "train.csv", test_labels: str = "xlsx",
                   integer_test_ages: bool = False) -> Path:
    """The official RSNA layout: training set, validation set split over -1/-2 subfolders, test set.

    test_labels: 'xlsx' (Bone age ground truth.xlsx), 'csv' (a BOM + CR export of it), or 'none'.
    """
    import openpyxl
    root = Path(root)
    for i, (id_, _, _) in enumerate(TRAIN_ROWS):
        write_image_file(root / "boneage-training-dataset" / f"{id_}.png", seed=i)
    _csv(root / train_labels, "id,boneage,male", TRAIN_ROWS)
    valid = root / "Bone Age Validation Set"
    for i, (id_, _, _) in enumerate(VALID_ROWS):  # two in -1, one in -2, one directly in the folder
        sub = ["boneage-validation-dataset-1", "boneage-validation-dataset-1", "boneage-validation-dataset-2", ""][i]
        write_image_file(valid / sub / f"{id_}.png", seed=10 + i)
    _csv(valid / "Validation Dataset.csv", "Image ID,male,Bone Age (months)",
         [(i, "TRUE" if m else "FALSE", a) for i, a, m in VALID_ROWS], bom_cr=True)
    test = root / "Bone Age Test Set"
    for i, (id_, _, _) in enumerate(TEST_ROWS):
        write_image_file(test / "Test Set Images" / f"{id_}.png", seed=20 + i)
    rows = [(i, "M" if m else "F", round(a) if integer_test_ages else a) for i, a, m in TEST_ROWS]
    header = ("Case ID", "Sex", "Ground truth bone age (months)")
    if test_labels == "xlsx":
        wb = openpyxl.Workbook()
        wb.active.append(header)
        for r in rows:
            wb.active.append(r)
        wb.save(test / "Bone age ground truth.xlsx")
    elif test_labels == "csv":
        _csv(test / "Bone age ground truth.csv", ",".join(header), rows, bom_cr=True)
    return root


def build_kaggle(root) -> Path:
    """The Kaggle copy: images nested twice, boneage-test-dataset.csv without ages, no validation set."""
    root = Path(root)
    for i, (id_, _, _) in enumerate(TRAIN_ROWS):
        write_image_file(root / "boneage-training-dataset" / "boneage-training-dataset" / f"{id_}.png", seed=i)
    _csv(root / "boneage-training-dataset.csv", "id,boneage,male", TRAIN_ROWS)
    for i, (id_, _, _) in enumerate(TEST_ROWS):
        write_image_file(root / "boneage-test-dataset" / "boneage-test-dataset" / f"{id_}.png", seed=20 + i)
    _csv(root / "boneage-test-dataset.csv", "Case ID,Sex", [(i, "M" if m else "F") for i, _, m in TEST_ROWS])
    return root


@pytest.fixture
def make_official(tmp_path):
    """Factory: make_official(train_labels=..., test_labels=..., integer_test_ages=...) -> fresh root."""
    count = iter(range(1000))
    return lambda **kw: build_official(tmp_path / f"official{next(count)}", **kw)


@pytest.fixture
def make_kaggle(tmp_path):
    count = iter(range(1000))
    return lambda: build_kaggle(tmp_path / f"kaggle{next(count)}")


@pytest.fixture
def fake_rows():
    """The (id, boneage, male) rows the fake folders hold, by split."""
    return {"train": TRAIN_ROWS, "validation": VALID_ROWS, "test": TEST_ROWS}


@pytest.fixture
def write_image():
    """write_image(path, kind='L', size=(20, 16), seed=0) -> path."""
    return write_image_file


def write_dicom(path, pixels, photometric="MONOCHROME2", window=(2048, 1024), slope=1.0, intercept=0.0, sex="M",
                bits: int = 12) -> Path:
    """A minimal DICOM file holding uint16 `pixels` (bits stored `bits`), with PatientSex and an optional window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientSex = sex
    pixels = np.asarray(pixels, np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path, model): an (untrained) Li 2021 final model saved the way notebook 20 saves it (smoke settings)."""
    import torch
    import bac
    from bac import predict
    from bac.models import li2021
    torch.manual_seed(0)
    cfg = bac.config.resolve("smoke", "li2021", out_dir=str(tmp_path_factory.mktemp("reports")))
    model = li2021.build_final(cfg).eval()
    return predict.save_final(cfg, model, bac.data.load(cfg, progress=False)), model
