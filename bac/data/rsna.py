"""Loaders for the RSNA Pediatric Bone Age data in the layouts people actually have.

`load_table(root)` reads the official RSNA release (training, validation and test sets with the decimal
test ground truth) or the Kaggle copy (doubly nested folders, no validation set, no test ages) into one
table `id, path, boneage, male, split, label_file`, with the label files' checksums in
`df.attrs["label_files"]`. `read_image` turns any PNG/JPEG/DICOM into one uint8 convention (bone bright).

Used in: notebooks/01_data_exploration.ipynb, notebooks/02_preprocessing.ipynb and, through
`bac.data.load`, every paper notebook; `bac predict`.
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bac import warn_once


class DataError(ValueError):
    """Bad or missing input data; the message names the file or row and what to do."""


class MissingDataError(DataError, FileNotFoundError):
    """A folder, label file or image that should be there is not."""


TRAIN = "boneage-training-dataset"
KAGGLE_TEST = "boneage-test-dataset"
VALID_DIR = "Bone Age Validation Set"
TEST_DIR = "Bone Age Test Set"
TRAIN_LABELS = ("train.csv", f"{TRAIN}.csv")
VALID_LABELS = ("Validation Dataset.csv",)
TEST_LABELS = ("Bone age ground truth.xlsx", "Bone age ground truth.csv")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
AGE_RANGE = (0.0, 240.0)
SPLITS = ("train", "validation", "test")

# Column names after lower-casing and dropping everything but letters and digits.
ID_COLUMNS = ("id", "imageid", "caseid")
AGE_COLUMNS = ("boneage", "boneagemonths", "groundtruthboneagemonths")
SEX_COLUMNS = ("male", "sex")
SEX_CODES = {"true": True, "t": True, "1": True, "1.0": True, "m": True, "male": True,
             "false": False, "f": False, "0": False, "0.0": False, "female": False}


# ----------------------------------------------------------------------------------------- layout
def detect_layout(root) -> str:
    """'official' (the RSNA release) or 'kaggle' (the Kaggle copy, images nested twice, no test ages)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingDataError(f"Data folder {root} does not exist. Point DATA_DIR (or $BAC_DATA_DIR) at the "
                               f"folder that holds {TRAIN}/ and its label CSV.")
    if (root / f"{KAGGLE_TEST}.csv").is_file() or (
            (root / TRAIN / TRAIN).is_dir() and not (root / VALID_DIR).is_dir() and not (root / TEST_DIR).is_dir()):
        return "kaggle"
    if any((root / p).exists() for p in (TRAIN, VALID_DIR, TEST_DIR, *TRAIN_LABELS)):
        return "official"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(found[:20]) + (f" ... ({len(found)} entries)" if len(found) > 20 else "") or "nothing"
    raise DataError(
        f"{root} matches no known RSNA layout. Looked for {TRAIN}/ with train.csv or {TRAIN}.csv (official "
        f"release or Kaggle copy), '{VALID_DIR}/', '{TEST_DIR}/' and {KAGGLE_TEST}.csv; found: {shown}. "
        "Point DATA_DIR at the folder that contains these (not at the image folder itself).")


def _nested(folder: Path) -> list[Path]:
    """A folder and its same-named child (zip archives often extract to <name>/<name>/)."""
    return [folder, folder / folder.name]


def _split_sources(root: Path, layout: str, warned: list | None = None) -> list[tuple[str, Path | None, list[Path]]]:
    """(split, label file or None, image folders to search) for each split the layout has; warnings go to `warned`."""
    train_labels = [root / n for n in TRAIN_LABELS if (root / n).is_file()]
    if not train_labels:
        raise MissingDataError(f"No training label file in {root}: looked for {' or '.join(TRAIN_LABELS)}. "
                               "Copy the CSV that came with the training images next to their folder.")
    if len(train_labels) > 1 and _sha256(train_labels[0]) != _sha256(train_labels[1]):
        warn_once(f"Both {TRAIN_LABELS[0]} and {TRAIN_LABELS[1]} are in {root} and differ; reading "
                  f"{TRAIN_LABELS[0]}.", stacklevel=3, record=warned)
    sources = [("train", train_labels[0], _nested(root / TRAIN))]
    if layout == "kaggle":
        if (root / f"{KAGGLE_TEST}.csv").is_file():
            sources.append(("test", root / f"{KAGGLE_TEST}.csv", _nested(root / KAGGLE_TEST)))
        else:
            warn_once(f"No {KAGGLE_TEST}.csv in {root}: the table has no test rows.", stacklevel=3, record=warned)
        return sources
    for split, folder, names, image_dirs in (
            ("validation", root / VALID_DIR, VALID_LABELS,
             [root / VALID_DIR, *_nested(root / VALID_DIR / "boneage-validation-dataset-1"),
              *_nested(root / VALID_DIR / "boneage-validation-dataset-2")]),
            ("test", root / TEST_DIR, TEST_LABELS, [root / TEST_DIR, *_nested(root / TEST_DIR / "Test Set Images")])):
        if not folder.is_dir():
            warn_once(f"No '{folder.name}/' in {root}: the table has no {split} rows.", stacklevel=3, record=warned)
            continue
        labels = [folder / n for n in names if (folder / n).is_file()]
        if not labels:
            raise MissingDataError(f"'{folder}' has no label file: looked for {' or '.join(names)}. Copy it "
                                   "from the RSNA release, or remove the folder to load without this split.")
        sources.append((split, labels[0], image_dirs))
    return sources


# ----------------------------------------------------------------------------------------- labels
def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _norm(name) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


def _read_labels(path: Path, root: Path) -> tuple[pd.DataFrame, bool]:
    """Raw label rows (strings) with `label_file` and `where` (line/row); and whether ages are present."""
    rel = path.relative_to(root).as_posix()
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            raw = pd.read_excel(path, dtype=str)
            where = "row"
        else:
            # utf-8-sig drops the BOM; splitlines() reads old-Mac CR line endings as well as LF/CRLF.
            text = "\n".join(path.read_bytes().decode("utf-8-sig").splitlines())
            raw = pd.read_csv(io.StringIO(text), dtype=str, skip_blank_lines=False)
            where = "line"
    except Exception as e:  # noqa: BLE001 - any parse failure becomes one clear message
        raise DataError(f"Cannot read label file {path}: {e}. Re-download it or save it as CSV.") from e
    cols = {_norm(c): c for c in raw.columns}

    def pick(options, what, required=True):
        for o in options:
            if o in cols:
                return raw[cols[o]]
        if required:
            raise DataError(f"{path} has no {what} column: expected one of {list(options)} (case and punctuation "
                            f"ignored), found {list(raw.columns)}. Fix the header row.")
        return pd.Series(np.nan, index=raw.index, dtype=object)

    ids, sexes = pick(ID_COLUMNS, "id"), pick(SEX_COLUMNS, "sex")
    has_age = any(o in cols for o in AGE_COLUMNS)
    ages = pick(AGE_COLUMNS, "bone age", required=has_age)
    ids, ages, sexes = (c.map(lambda v: v.strip() if isinstance(v, str) else v) for c in (ids, ages, sexes))
    table = pd.DataFrame({"id_raw": ids, "age_raw": ages, "sex_raw": sexes, "label_file": rel,
                          "at": [f"{rel} {where} {i + 2}" for i in raw.index]})
    table = table[~(table.id_raw.isna() & table.age_raw.isna() & table.sex_raw.isna())]  # blank lines
    return table, has_age


# ----------------------------------------------------------------------------------------- images
def _is_dicom(path) -> bool:
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _index_images(folders: list[Path]) -> dict[int, list[str]]:
    """id -> image files found directly in `folders` (ids are file stems)."""
    index: dict[int, list[str]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if entry.name.startswith(".") or not stem.isdigit() or not entry.is_file():
                    continue
                if suffix.lower() in IMAGE_SUFFIXES or (suffix == "" and _is_dicom(entry.path)):
                    index.setdefault(int(stem), []).append(entry.path)
    return index


# ----------------------------------------------------------------------------------------- table
_RAW = {"id": "id_raw", "age": "age_raw", "sex": "sex_raw"}


def _examples(rows: pd.DataFrame, what: str, n: int = 5) -> str:
    shown = "; ".join(f"{r.at}: id={r.id_raw!s}" + (f", {what}={getattr(r, _RAW[what])!s}" if what != "id" else "")
                      for r in rows.head(n).itertuples())
    return shown + (f"; ... ({len(rows)} rows)" if len(rows) > n else "")


def load_table(root, drop_invalid: bool = False, check_files: bool = True) -> pd.DataFrame:
    """The table `id, path, boneage, male, split, label_file` of an RSNA folder (official or Kaggle).

    Raises `DataError` listing every invalid row (bad id, missing/out-of-range age, unknown sex code,
    duplicate id, duplicate or missing image), unless `drop_invalid`, which drops them with a warning per
    reason and counts in `df.attrs["dropped"]`. `check_files=False` skips the missing-image check.
    attrs: `layout`, `label_files` {relative path: sha256}, `dropped`, `notes`, `warnings` (every data warning of
    this load; `bac.warn_once` shows each distinct one once per process).
    """
    root = Path(root).expanduser().resolve()
    layout = detect_layout(root)
    notes: list[str] = []
    warned: list[str] = []  # every data warning of this load, shown or not (each is shown once per process)
    parts, label_files, folders = [], {}, {}
    for split, label_path, image_dirs in _split_sources(root, layout, warned):
        table, has_age = _read_labels(label_path, root)
        label_files[label_path.relative_to(root).as_posix()] = _sha256(label_path)
        index = _index_images(image_dirs)
        folders[split] = [d for d in image_dirs if d.is_dir()] or image_dirs[:1]
        ids = pd.to_numeric(table.id_raw, errors="coerce")
        found = [index.get(int(i), []) if float(i).is_integer() else [] for i in ids.fillna(-1.5)]
        table = table.assign(split=split, age_expected=has_age, images=found,
                             default_path=[os.path.join(folders[split][0], f"{r}.png") for r in table.id_raw])
        parts.append(table)
        if split == "test" and not has_age:
            notes.append(f"{label_path.name} has no bone ages (Kaggle copy): test rows have boneage NaN. The "
                         f"official decimal ground truth is '{TEST_DIR}/{TEST_LABELS[0]}' of the RSNA release.")
        orphans = sorted(set(index) - {int(i) for i in ids.dropna() if float(i).is_integer()})
        if orphans:
            warn_once(f"{len(orphans)} images in {folders[split][0]} have no row in {label_path.name} "
                      f"(ids {orphans[:5]}); they are not in the table.", stacklevel=2, record=warned)
    raw = pd.concat(parts, ignore_index=True)

    ids = pd.to_numeric(raw.id_raw, errors="coerce")
    ages = pd.to_numeric(raw.age_raw, errors="coerce")
    male = raw.sex_raw.map(lambda s: SEX_CODES.get(str(s).strip().lower()) if pd.notna(s) else None)
    bad_id = ids.isna() | (ids % 1 != 0)
    dup_id = ids.duplicated(keep=False) & ~bad_id
    n_images = raw.images.map(len)
    problems = {  # reason -> (row mask, message); a row is counted under its first reason
        "bad id": (bad_id, lambda r: _examples(r, "id") + ". Ids must be integers."),
        "duplicate id": (dup_id, lambda r: "; ".join(
            f"id {int(i)} in " + ", ".join(g["at"]) for i, g in r.groupby(ids[r.index]))
            + ". Keep one row per id."),
        "missing or non-numeric age": (raw.age_expected & ages.isna(), lambda r: _examples(r, "age")),
        "age outside 0-240 months": (ages.notna() & ((ages < AGE_RANGE[0]) | (ages > AGE_RANGE[1])),
                                     lambda r: _examples(r, "age")),
        "unknown sex code": (male.isna(), lambda r: _examples(r, "sex") + ". Use True/False or M/F."),
        "duplicate image files": (n_images > 1, lambda r: "; ".join(
            f"id {row.id_raw}: " + ", ".join(str(p) for p in row.images) for row in r.head(5).itertuples())
            + ". Keep one file per id."),
    }
    if check_files:
        problems["missing image"] = (n_images == 0, lambda r: "; ".join(
            f"{len(g)} {s} ids (first: {', '.join(g.id_raw.head(5))}) not found in "
            + " or ".join(str(d) for d in folders[s]) for s, g in r.groupby("split", sort=False))
            + ". Copy the images there, or load with check_files=False.")
    reason = pd.Series("", index=raw.index)
    for name, (mask, _) in reversed(problems.items()):
        reason[mask.fillna(False).astype(bool)] = name
    dropped = {}
    if (reason != "").any():
        if not drop_invalid:
            lines = [f"- {name} ({int((reason == name).sum())} rows): {msg(raw[reason == name])}"
                     for name, (_, msg) in problems.items() if (reason == name).any()]
            raise DataError(f"Invalid rows in the labels under {root}:\n" + "\n".join(lines) +
                            "\nFix the files, or call load_table(root, drop_invalid=True) to drop these rows "
                            "(counts go to df.attrs['dropped']).")
        dropped = {k: int(v) for k, v in reason[reason != ""].value_counts().items()}
        for name, count in dropped.items():
            warn_once(f"Dropped {count} rows under {root}: {name}.", stacklevel=2, record=warned)

    keep = reason == ""
    df = pd.DataFrame({
        "id": ids[keep].astype("int64"),
        "path": [i[0] if i else d for i, d in zip(raw.images[keep], raw.default_path[keep])],
        "boneage": ages[keep].astype("float64"),
        "male": male[keep].astype(bool),
        "split": raw.split[keep],
        "label_file": raw.label_file[keep],
    })
    df = (df.assign(_order=df.split.map(SPLITS.index)).sort_values(["_order", "id"])
          .drop(columns="_order").reset_index(drop=True))
    test_ages = df.boneage[df.split == "test"].dropna()
    if layout == "official" and len(test_ages) and (test_ages % 1 == 0).all():
        msg = ("The test labels are all integers: this is not the official RSNA ground truth (the mean of six "
               "raters, with decimals: case 4360 = 168.93). Use 'Bone age ground truth.xlsx' from the release.")
        warn_once(msg, stacklevel=2, record=warned)
        notes.append(msg)
    df.attrs.update(layout=layout, root=str(root), label_files=label_files, dropped=dropped, notes=notes,
                    warnings=warned)
    return df


# ----------------------------------------------------------------------------------------- reading
def _to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Linear map of [lo, hi] (default: the array's own range) to 0..255."""
    arr = arr.astype(np.float64)
    lo = float(arr.min()) if lo is None else lo
    hi = float(arr.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) == 3:  # colour DICOM (pydicom returns RGB): ITU-R 601 luminance
        return _to_uint8(arr[..., :3] @ np.array([0.299, 0.587, 0.114]), 0, 2 ** int(ds.BitsStored) - 1)
    if arr.ndim != 2:
        raise DataError(f"{path}: a {arr.ndim}-D DICOM ({int(ds.get('NumberOfFrames', 1))} frames); "
                        "export the single hand radiograph as one frame.")
    arr = apply_modality_lut(arr, ds)
    lo = hi = None
    voi = ds.get("VOILUTSequence")
    if voi and "LUTDescriptor" in voi[0] and "LUTData" in voi[0]:
        lo, hi = 0, 2 ** int(voi[0].LUTDescriptor[2]) - 1  # the VOI LUT's output range
        if not np.issubdtype(arr.dtype, np.integer):
            arr = np.rint(arr).astype(np.int64)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        with np.errstate(over="ignore"):  # the window's output range: push -inf and +inf through it
            lo, hi = apply_windowing(np.array([-1e300, 1e300]), ds)
    out = _to_uint8(apply_voi_lut(arr, ds), lo, hi)
    return 255 - out if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1" else out


def read_image(path, erase_markers: bool = True) -> np.ndarray:
    """Any radiograph file (8/16-bit, RGB(A) PNG, JPEG, DICOM) as uint8 HxW, bone bright, with its burnt-in
    markers ("L", initials, rulers) erased (`bac.preprocess.markers.erase`, cached per file;
    `erase_markers=False`: the film as stored). Every pipeline, localiser and `bac predict` read films through here.

    16-bit and DICOM images without a window are stretched over their own range; DICOM applies the
    modality LUT and VOI LUT/window, and MONOCHROME1 is inverted. Images under `MIN_MARKER_SIDE` px are
    too small to carry a readable marker and are returned as stored.
    """
    image = _read(path)
    if erase_markers and max(image.shape[:2]) >= MIN_MARKER_SIDE:
        from bac.preprocess.markers import erase_file
        image = erase_file(image, path)
    return image


MIN_MARKER_SIDE = 64


def _read(path) -> np.ndarray:
    """`read_image` without the marker erasure."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"Image {path} does not exist.")
    try:
        if _is_dicom(path):
            return _read_dicom(path)
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                return _to_uint8(np.asarray(img))  # rescale by the actual range, not by 65535
            return np.asarray(img if img.mode == "L" else img.convert("L")).copy()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise DataError(f"Cannot read image {path}: {e}. The file is unreadable or truncated: re-copy it "
                        "from the release, or drop its row.") from e


def read_dicom_sex(path) -> bool | None:
    """True for PatientSex 'M', False for 'F', None when absent or other."""
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"Cannot read DICOM header of {path}: {e}.") from e
    return {"M": True, "F": False}.get(str(ds.get("PatientSex", "") or "").strip().upper())


def _check_image(path: str) -> str | None:
    """None if the file's header and chunks read, else what is wrong."""
    try:
        if _is_dicom(path):
            import pydicom
            if "PixelData" not in pydicom.dcmread(path):
                return "DICOM without pixel data"
        else:
            with Image.open(path) as img:
                fmt = img.format
                img.verify()  # PNG: all chunks and CRCs; JPEG: header only, so also look for the end marker
            if fmt == "JPEG":
                with open(path, "rb") as f:
                    f.seek(max(0, os.path.getsize(path) - 64))
                    if b"\xff\xd9" not in f.read():
                        return "truncated JPEG (no end-of-image marker)"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def validate_images(df, workers: int = 2, progress: bool = True) -> None:
    """Open every image in `df.path` (PIL verify, DICOM header); raise one DataError listing all bad files."""
    from tqdm.auto import tqdm
    paths = list(df["path"])
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(_check_image, paths), total=len(paths), desc="checking images",
                            disable=not progress))
    bad = [f"{p}: {r}" for p, r in zip(paths, results) if r]
    if bad:
        raise DataError(f"{len(bad)} of {len(paths)} images are unreadable:\n" + "\n".join(bad) +
                        "\nRe-copy them from the release, or drop their rows.")
