"""Preprocessing pipelines of the five papers, and the prepared-image cache every notebook reads from.

`prepare(df, pipeline, size)` returns a uint8 array (N, C, size, size), one prepared image per table
row. Each image is prepared once per (content hash of the file, pipeline, parameters) and stored under
`<cache>/prepared/`; later calls (other notebooks, epochs, runs) read the small arrays back instead of
decoding full-size radiographs. A pipeline is a function `fn(image uint8 HxW, size, **params) -> uint8
(C, size, size)` registered with `@register("name")`.

Used in: notebooks/02_preprocessing.ipynb and every paper notebook.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

PIPELINES: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        PIPELINES[name] = fn
        return fn
    return deco


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the long side to `size` (anti-aliased) and pad to a square, centred, with zeros."""
    from skimage.transform import resize
    h, w = image.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = resize(image, (nh, nw), order=1, anti_aliasing=s < 1, preserve_range=True)
    out = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(np.round(small), 0, 255).astype(np.uint8)
    return out


@register("plain")
def plain(image: np.ndarray, size: int) -> np.ndarray:
    """The whole radiograph, letterboxed to a square (the 'original image' O of the papers)."""
    return letterbox(image, size)[None]


def file_hash(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def pipeline_key(pipeline: str, size: int, params: dict) -> str:
    text = json.dumps(dict(pipeline=pipeline, size=size, params=params), sort_keys=True, default=str)
    return f"{pipeline}-{size}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _prepare_one(path: str, cache_dir: Path, pipeline: str, size: int, params: dict) -> tuple[np.ndarray, bool]:
    from bac.data.rsna import read_image
    target = cache_dir / f"{file_hash(path)}.npy"
    if target.exists():
        return np.load(target), True
    out = PIPELINES[pipeline](read_image(path), size, **params)
    if out.dtype != np.uint8 or out.ndim != 3 or out.shape[1:] != (size, size):
        raise ValueError(f"pipeline {pipeline!r} returned {out.dtype} {out.shape} for {path}; "
                         f"expected uint8 (C, {size}, {size})")
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(target)
    return out, False


def prepare(df, pipeline: str = "plain", size: int = 256, workers: int = 1, progress: bool = True,
            cache: bool = True, **params) -> np.ndarray:
    """Prepared images for every row of `df` (column `path`), from the cache when present."""
    from tqdm.auto import tqdm
    from bac.data import cache_root
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(sorted(PIPELINES))}")
    cache_dir = cache_root() / "prepared" / pipeline_key(pipeline, size, params)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = list(df["path"])
    fn = partial(_prepare_one, cache_dir=cache_dir, pipeline=pipeline, size=size, params=params)
    bar = dict(total=len(paths), desc=f"prepare {pipeline}@{size}", disable=not progress, leave=False)
    if workers > 1 and len(paths) > 8:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(fn, paths, chunksize=8), **bar))
    else:
        results = [fn(p) for p in tqdm(paths, **bar)]
    if not cache:
        for p in paths:
            (cache_dir / f"{file_hash(p)}.npy").unlink(missing_ok=True)
    prepare.last_hits = sum(hit for _, hit in results)
    return np.stack([r for r, _ in results]) if results else np.zeros((0, 1, size, size), np.uint8)


def prepare_splits(df, pipeline: str = "plain", size: int = 256, **kw) -> dict[str, np.ndarray]:
    """`prepare` for each split: {'train': array, 'validation': ..., 'test': ...} aligned with df rows."""
    return {s: prepare(df[df.split == s], pipeline, size, **kw) for s in ("train", "validation", "test")
            if (df.split == s).any()}
