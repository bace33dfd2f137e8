"""Data: the real RSNA loaders (`rsna`), paper splits (`splits`) and the built-in synthetic set (`synth`).

`load(cfg)` is what a notebook calls: the real data when `cfg.data_dir` (or $BAC_DATA_DIR) is set,
otherwise the built-in synthetic set of the profile (built once, then reused), split by `cfg.split`.

Used in: every notebook.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import pandas as pd

from bac import env
from bac.env import REPO


def cache_root() -> Path:
    """Where generated data and prepared images live: $BAC_CACHE_DIR, else `<repo>/data` in a checkout."""
    import os
    if os.environ.get("BAC_CACHE_DIR"):
        return Path(os.environ["BAC_CACHE_DIR"]).expanduser()
    if (REPO / "pyproject.toml").exists():
        return REPO / "data"
    return Path.home() / ".cache" / "bac"


# Libraries whose versions can change a computed number: part of every cache key with the code's hash (those
# `bac.env.describe` prints, and the ones it does not that read images or compute results).
RESULT_PACKAGES = (*env.PACKAGES, "scipy", "pillow", "pydicom", "opencv-python-headless")


@functools.lru_cache(maxsize=None)
def code_version(*files: str) -> str:
    """A hash of the `bac` source (every module, or only `files`, paths relative to `bac/`) and of the versions
    of the libraries that compute results. It is part of every cache key (prepared images, localisations,
    fitted localisers, the synthetic set, reused checkpoints), so that a stored result is reused only by the
    code that would compute it again, never by an older version of it."""
    import importlib.metadata
    pkg = Path(__file__).resolve().parent.parent
    h = hashlib.sha1()
    for path in sorted(pkg / f for f in files) if files else sorted(pkg.rglob("*.py")):
        h.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes())
    for name in RESULT_PACKAGES:
        try:
            h.update(f"{name}=={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:12]


def synthetic_dir(profile: str) -> Path:
    return cache_root() / f"synthetic-{profile}"


def ensure_synthetic(cfg, progress: bool = True) -> Path:
    """Build the profile's synthetic set unless an identical one (same arguments) is already there."""
    from bac.data import synth
    args = dict(cfg["synth"], seed=0)
    out = synthetic_dir(cfg["profile"])
    stamp = out / ".complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == dict(args, generator=code_version("data/synth.py")):
        return out
    if out.exists():
        import shutil
        shutil.rmtree(out)
    synth.make_dataset(out, workers=cfg.get("workers"), progress=progress, **args)
    stamp.write_text(json.dumps(dict(args, generator=code_version("data/synth.py"))))
    return out


def is_synthetic(root) -> bool:
    return (Path(root) / "synth.json").exists()


def load(cfg, split: str | None = None, progress: bool = True) -> pd.DataFrame:
    """The table `id, path, boneage, male, split` for a notebook's config.

    Its `attrs` say where it came from: `root` (the data folder), `data_source` ('synthetic' | 'rsna'),
    `label_files` (checksums), `split_scheme`. `split` (default `cfg.get('split', 'official')`) picks a paper's
    split scheme; `cfg.limit` keeps the first N rows of each split (dry runs).
    """
    from bac.data import rsna, splits
    root = Path(cfg["data_dir"]) if cfg.get("data_dir") else ensure_synthetic(cfg, progress=progress)
    df = rsna.load_table(root)
    attrs = dict(df.attrs)
    scheme = split or cfg.get("split", "official")
    if scheme != "official":
        df = splits.make_split(df, scheme, seed=cfg.get("seed", 0))
    if cfg.get("limit"):
        df = df.groupby("split", group_keys=False).head(cfg["limit"]).reset_index(drop=True)
    df.attrs.update(attrs, root=str(root), data_source="synthetic" if is_synthetic(root) else "rsna",
                    split_scheme=scheme)
    if cfg.get("paper") and cfg.get("out_dir"):
        from bac.report import report_dir
        splits.save_manifest(df, report_dir(cfg) / f"split_{scheme}.csv", scheme=scheme, seed=cfg.get("seed", 0))
    return df


def annotations(df, ids) -> dict:
    """Ground-truth annotations (boxes, true age) of the synthetic set `df` was loaded from, by id; {} for real
    data."""
    from bac.data import synth
    root = Path(df.attrs["root"])
    if not is_synthetic(root):
        return {}
    return {int(i): synth.read_annotation(root, int(i)) for i in ids}
