"""Scoring the hand localisers against the synthetic ground truth, and the preprocessing benchmark.

`score_localisation` gives, per image, the IoU of the hand box, the Dice of the hand mask (for methods
that produce one) and the fraction of ossification boxes (DIP/PIP/MCP/radius/ulna/wrist) that fall inside
the crop actually used (a fallback crops nothing, so it keeps every box but scores a low IoU).
`benchmark` times a pipeline on full-size images, cold (cache emptied) and warm (read back).

Used in: notebooks/02_preprocessing.ipynb, benchmarks/bench_preprocess.py.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

SITES = ("dip", "pip", "mcp", "radius", "ulna", "wrist")
LOCALISING = {"li2021": "Li 2021 (unsupervised)", "zheng2024": "Zheng 2024 (UNet++)",
              "ren2019": "Ren 2019 (Faster R-CNN)"}


def score_localisation(cfg, df, pipeline: str, params: dict, progress: bool = False) -> pd.DataFrame:
    """One row per image of `df`: id, iou (hand box), dice (hand mask, NaN without one), inside (fraction of
    ossification boxes with >= 90 % of their area in the crop used), reason ('' or why it fell back)."""
    from tqdm.auto import tqdm
    from bac.data import synth
    from bac.data.rsna import read_image
    from bac.preprocess import locate, resize
    from bac.preprocess.boxes import box_iou, boxes_inside_fraction, dice, expand_box
    root = df.attrs["root"]
    rows = []
    for r in tqdm(list(df.itertuples()), desc=f"score {pipeline}", disable=not progress, leave=False):
        image = read_image(r.path)
        ann = synth.read_annotation(root, r.id)
        loc = locate(image, pipeline, cfg.get("size", 256), **params)
        crop = expand_box(loc["used"], image.shape, params.get("margin", 0.0))
        sites = [b for k in SITES for b in ann["boxes"].get(k, [])]
        d = float("nan")
        if loc.get("mask") is not None:
            truth = synth.read_mask(root, r.id)
            d = dice(resize(np.asarray(loc["mask"], np.uint8), truth.shape) > 127, truth)
        elif loc["reason"] and pipeline != "ren2019":
            d = 0.0  # a failed segmentation found no hand
        rows.append(dict(id=int(r.id), boneage=float(r.boneage),
                         iou=box_iou(loc["box"], ann["boxes"]["hand"]) if loc["box"] else 0.0,
                         dice=d, inside=boxes_inside_fraction(sites, crop), reason=loc["reason"]))
    return pd.DataFrame(rows)


def summarise_scores(scores: dict[str, pd.DataFrame], iou_ok: float = 0.5) -> pd.DataFrame:
    """Per method: images, mean/median IoU, share with IoU >= `iou_ok`, mean Dice, ossification boxes
    inside the crop, fallbacks."""
    out = []
    for name, s in scores.items():
        out.append({"method": LOCALISING.get(name, name), "images": len(s), "mean IoU": s.iou.mean(),
                    "median IoU": s.iou.median(), f"IoU >= {iou_ok}": (s.iou >= iou_ok).mean(),
                    "mean Dice": s.dice.mean(), "ossification boxes inside crop": s.inside.mean(),
                    "fallbacks": int((s.reason != "").sum())})
    return pd.DataFrame(out)


def benchmark_images(out_dir, n: int, long_side: int, seed: int = 0) -> pd.DataFrame:
    """`n` synthetic radiographs of real RSNA size (long side `long_side`) written as PNG under `out_dir`,
    ages spread over 1-19 years: a table with `path` for `prepare`."""
    from pathlib import Path
    from PIL import Image
    from bac.data import synth
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = out / f"bench_{long_side}_{seed}_{i}.png"
        if not path.exists():
            ph = synth.render(12 + 216 * (i + 0.5) / n, bool(i % 2), seed * 1000 + i, long_side=long_side)
            Image.fromarray(ph.image).save(path)
        rows.append(dict(id=i, path=str(path)))
    return pd.DataFrame(rows)


def forget(df, size: int = 0, reference=None) -> int:
    """Remove every cached localisation of the images of `df` (so that the next `prepare` is cold); Ren's
    detector caches by its reduced, histogram-matched copy: pass the pipeline's `size` and `reference`."""
    from bac.data import cache_root
    from bac.data.rsna import read_image
    from bac.preprocess import image_hash
    from bac.preprocess.detect import work_image
    hashes = set()
    for p in df.path:
        im = read_image(p)
        hashes.add(image_hash(im))
        if reference is not None:
            hashes.add(image_hash(work_image(im, size, reference)))
    n = 0
    for f in (cache_root() / "localised").glob("*/*.npz"):
        if f.stem in hashes:
            f.unlink(missing_ok=True)
            n += 1
    return n


def benchmark(df, pipeline: str, size: int, params: dict, workers: int = 1) -> dict:
    """Images/s of `prepare(df, pipeline, size, **params)` cold (prepared images and localisations of these
    images removed first; trained localisers stay) and warm (read back from the cache)."""
    import shutil
    from bac.data import cache_root
    from bac.preprocess import cached, pipeline_key, prepare
    shutil.rmtree(cache_root() / "prepared" / pipeline_key(pipeline, size, params), ignore_errors=True)
    forget(df, size, params.get("reference"))
    t = time.perf_counter()
    prepare(df, pipeline, size, workers=workers, progress=False, **params)
    cold = time.perf_counter() - t
    hits = cached(df, pipeline, size, **params)
    t = time.perf_counter()
    prepare(df, pipeline, size, workers=workers, progress=False, **params)
    warm = time.perf_counter() - t
    return {"pipeline": pipeline, "images": len(df), "workers": workers, "cold images/s": len(df) / cold,
            "warm images/s": len(df) / warm, "warm cache hits": hits}
