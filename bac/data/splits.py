"""Train/validation/test splits: the RSNA release's own (`official`) and each method's (its `METHOD.split` in the
registry `bac.models.METHODS`), reproducible from a seed.

| scheme | pool | split |
|---|---|---|
| official, liu2024, zheng2024 | the release's own sets | 12,611 / 1,425 / 200 (liu2024, zheng2024 say they used it) |
| ren2019 | the training set without ages over 216 months (18 years): 12,480 | random 80/10/10 (9,984/1,248/1,248) |
| chen2022 | all labelled images | random 500 validation + 500 test, the rest train |
| li2021 | the 12,611 training images (the paper's count) | random 7:2:1 |

Random splits are not stratified: the papers say "randomly". Ids are sorted before shuffling, so a split
depends only on the set of ids and the seed, not on row order.

Used in: notebooks/10_ren2019_*.ipynb, notebooks/20_li2021_*.ipynb, notebooks/30_chen2022_*.ipynb,
notebooks/40_liu2024_*.ipynb, notebooks/50_zheng2024_*.ipynb (through `bac.data.load`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bac import warn_once

def rule(scheme: str):
    """The `bac.models.Split` of a scheme: 'official' or a method id."""
    from bac.models import METHODS, Split, method
    if scheme == "official":
        return Split(pool="official")
    if scheme not in METHODS:
        raise ValueError(f"Unknown split scheme {scheme!r}; choose 'official' or a method: {', '.join(METHODS)}.")
    return method(scheme).split


def _drop(df: pd.DataFrame, mask, reason: str, dropped: dict, warned: list | None = None) -> pd.DataFrame:
    n = int(np.sum(mask))
    if n:
        dropped[reason] = n
        warn_once(f"split: dropped {n} rows ({reason}).", stacklevel=3, record=warned)
    return df[~np.asarray(mask)]


def make_split(df: pd.DataFrame, scheme: str = "official", seed: int = 0) -> pd.DataFrame:
    """`df` with its `split` column replaced by `scheme`'s (rows outside the scheme's pool removed).

    attrs added: `split_scheme`, `split_seed`, `split_dropped` {reason: count}, `split_counts`, `split_warnings`
    (every warning of this split; `bac.warn_once` shows each distinct one once per process).
    """
    r = rule(scheme)
    if df["id"].duplicated().any():
        raise ValueError(f"make_split: duplicate ids {sorted(df.loc[df['id'].duplicated(), 'id'])[:5]}; "
                         "load the table with bac.data.rsna.load_table, which rejects them.")
    out, dropped, warned = df.copy(), {}, []
    if r.pool == "official":
        if not (out["split"] == "validation").any():
            warn_once("split: this table has no validation rows (the Kaggle copy has none); the official "
                      "split needs the RSNA release's validation set.", stacklevel=2, record=warned)
    else:
        if r.pool == "train":  # Li: "12,611 X-ray images ... 7:2:1"; Ren: 12,480 = 12,611 - ages > 216
            out = _drop(out, out["split"] != "train", f"not in the official training set ({scheme} splits those)",
                        dropped, warned)
        out = _drop(out, out["boneage"].isna(), "no bone age", dropped, warned)
        if r.max_age is not None:
            out = _drop(out, out["boneage"] > r.max_age, f"bone age over {r.max_age:g} months", dropped, warned)
        n = len(out)
        if n < 3:
            raise ValueError(f"split {scheme!r}: only {n} labelled images in the pool; need at least 3.")
        if all(isinstance(h, int) for h in r.held_out):   # counts, scaled down in a small pool
            n_val, n_test = (min(h, round(h * n / r.full_pool)) for h in r.held_out)
            if n < r.full_pool:
                warn_once(f"split {scheme}: the pool has {n} images (< {r.full_pool}); validation and test scaled "
                          f"down from {r.held_out} to {(n_val, n_test)}.", stacklevel=2, record=warned)
        else:
            n_val, n_test = (round(f * n) for f in r.held_out)
        n_val, n_test = max(1, n_val), max(1, n_test)
        order = np.random.default_rng(seed).permutation(np.sort(out["id"].to_numpy()))
        labels = pd.Series("train", index=order, dtype=object)
        labels.iloc[:n_val] = "validation"
        labels.iloc[n_val:n_val + n_test] = "test"
        out["split"] = out["id"].map(labels).to_numpy()
    out = out.reset_index(drop=True)
    out.attrs.update(df.attrs)
    out.attrs.update(split_scheme=scheme, split_seed=int(seed), split_dropped=dropped, split_warnings=warned,
                     split_counts={s: int(c) for s, c in out["split"].value_counts().items()})
    return out


def save_manifest(df: pd.DataFrame, path, scheme: str, seed: int) -> None:
    """Write `path` (CSV: id, split, boneage, male) and `path` with .json (scheme, seed, label files, counts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df[["id", "split", "boneage", "male"]].to_csv(path, index=False)
    meta = {
        "scheme": scheme,
        "seed": int(seed),
        "layout": df.attrs.get("layout"),
        "label_files": df.attrs.get("label_files", {}),
        "counts": {s: int(c) for s, c in df["split"].value_counts().items()},
        "dropped_by_split": df.attrs.get("split_dropped", {}),
        "dropped_on_load": df.attrs.get("dropped", {}),
        "notes": df.attrs.get("notes", []),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
