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
    ossification boxes with >= 90 % of their area in the crop used), reason ('' or why it fell back). Real
    data has no ground truth: iou, dice and inside are NaN, the reasons are still there."""
    from tqdm.auto import tqdm
    from bac.data import synth
    from bac.data.rsna import read_image
    from bac.preprocess import locate, resize
    from bac.preprocess.boxes import box_iou, boxes_inside_fraction, dice, expand_box
    root, annotated = df.attrs["root"], df.attrs.get("data_source") == "synthetic"
    rows = []
    for r in tqdm(list(df.itertuples()), desc=f"score {pipeline}", disable=not progress, leave=False):
        image = read_image(r.path)
        loc = locate(image, pipeline, cfg.get("size", 256), **params)
        if not annotated:
            rows.append(dict(id=int(r.id), boneage=float(r.boneage), iou=np.nan, dice=np.nan, inside=np.nan,
                             reason=loc["reason"]))
            continue
        ann = synth.read_annotation(root, r.id)
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


# ------------------------------------------------------------------------------------------ real films
# Hand annotations of the 37 hard originals of the real RSNA sample (`../shared/rsna-sample/originals`; the images
# are not in this repository): hand box (the patient's left hand on the two-hand film), every burnt-in marker
# (letters, initials, rulers, symbols), collimation and low-contrast flags, notes; [x0, y0, x1, y1) in original
# pixels. Drawn on renders of the films and checked on overlays.
ORIGINALS = __import__("pathlib").Path(__file__).parents[1] / "data" / "rsna_sample_originals.json"
FOUND_IOU = 0.5          # PASCAL VOC: the object was found
MARKER_INSIDE = 0.05     # share of a marker's bright pixels in the final input that counts as "the marker is in it"


def marker_share(marker, crop, raw, image, mask=None, dark=False) -> float:
    """Share of `marker`'s bright pixels (`dark`: its dark pixels, for dark ink on a bright ground) inside its box
    of the stored film `raw` still there (not erased: `image`, the film as read, equals `raw`) inside the final
    input: the `crop` box and within it the `mask` (full-resolution bool, or None for a crop that keeps
    everything in its box)."""
    from skimage.filters import threshold_otsu
    x0, y0, x1, y1 = (int(v) for v in marker)
    part = raw[y0:y1, x0:x1]
    cx0, cy0, cx1, cy1 = max(x0, crop[0]), max(y0, crop[1]), min(x1, crop[2]), min(y1, crop[3])
    if part.size == 0 or part.min() == part.max() or cx1 <= cx0 or cy1 <= cy0:
        return 0.0
    if dark:    # thin dark strokes (outlines, ruler ticks and text): 60 grey levels below their 15 x 15 neighbourhood
        import cv2
        bright = part.astype(int) < cv2.medianBlur(part, 15).astype(int) - 60
    else:       # brighter than Otsu's threshold and than halfway from the box's edge to its peak (a white letter
        # drawn with a dark outline on a bright film: Otsu alone splits the outline from everything else)
        border = np.concatenate([part[0], part[-1], part[:, 0], part[:, -1]]).astype(float)
        bright = part > max(threshold_otsu(part), (np.median(border) + float(part.max())) / 2)
    keep = np.zeros(part.shape, bool)
    keep[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = True
    if mask is not None:
        keep &= mask[y0:y1, x0:x1]
    keep &= image[y0:y1, x0:x1] == part
    return float((keep & bright).sum() / max(bright.sum(), 1))


def score_markers(raw: np.ndarray, image: np.ndarray, truth: dict) -> dict:
    """The marker erasure of one film (`raw` as stored, `image` as read) against its annotations: markers erased
    (at least half of their bright pixels) and the share of the annotated hand box erased outside every
    annotated marker (its box grown by 20 px)."""
    whole = [0, 0, raw.shape[1], raw.shape[0]]
    erased = [marker_share(m, whole, raw, image, dark=j in truth.get("dark_markers", ())) <= 0.5
              for j, m in enumerate(truth["markers"])]
    outside = image != raw
    for x0, y0, x1, y1 in truth["markers"]:
        outside[max(0, y0 - 20):y1 + 20, max(0, x0 - 20):x1 + 20] = False
    hx0, hy0, hx1, hy1 = truth["hand_box"]
    return dict(markers_erased=int(sum(erased)), erased_in_hand_box=float(outside[hy0:hy1, hx0:hx1].mean()))


def score_originals(sample, params: dict, progress: bool = False) -> pd.DataFrame:
    """Li 2021's localisation (`params`: the 'li2021' pipeline's) of the annotated originals of the real sample
    (`sample`/originals), one row per film: its box and IoU with the annotated hand, the fallback reason, the
    markers erased on reading, the annotated markers still in the final input (the crop and, within it, the
    hand mask grown by one segmentation pixel, as the pipeline keeps it; `marker_shares`: the share of each
    marker's bright pixels there) and seconds per film."""
    import json
    from pathlib import Path
    from scipy import ndimage
    from tqdm.auto import tqdm
    from bac.data.rsna import read_image
    from bac.preprocess import locate, resize, uncached_localisation
    from bac.preprocess.markers import erase
    from bac.preprocess.boxes import box_iou, expand_box
    truth = json.loads(ORIGINALS.read_text())["images"]
    folder = Path(sample) / "originals"
    rows = []
    for image_id, t in tqdm(list(truth.items()), desc="score the real originals", disable=not progress, leave=False):
        raw = read_image(folder / f"{image_id}.png", erase_markers=False)
        image = erase(raw)                                  # as read_image reads it, without a second decode
        t0 = time.perf_counter()
        with uncached_localisation():
            loc = locate(image, "li2021", 0, **params)
        seconds = time.perf_counter() - t0
        crop = expand_box(loc["used"], image.shape, params.get("margin", 0.0))
        mask = None
        if loc["mask"] is not None:
            mask = resize(ndimage.binary_dilation(loc["mask"] > 127).astype(np.uint8) * 255, image.shape) > 127
        shares = [marker_share(m, crop, raw, image, mask, dark=j in t.get("dark_markers", ()))
                  for j, m in enumerate(t["markers"])]
        rows.append(dict(id=int(image_id), low_contrast=bool(t["low_contrast"]), box=loc["box"], used=crop,
                         reason=loc["reason"], iou=box_iou(loc["box"], t["hand_box"]) if loc["box"] else 0.0,
                         markers=len(t["markers"]), **score_markers(raw, image, t),
                         marker_shares=shares, markers_in_input=int(sum(s >= MARKER_INSIDE for s in shares)),
                         seconds=seconds))
    return pd.DataFrame(rows)


def summarise_originals(rows: pd.DataFrame) -> dict:
    """Counts of `score_originals`: hands found (IoU >= `FOUND_IOU`, not rejected), rejected, failed silently
    (neither), the same for the low-contrast films, films with a marker in the final input, markers erased."""
    found, rejected = rows.iou >= FOUND_IOU, rows.reason != ""
    low = rows.low_contrast
    return dict(images=len(rows), hand_found=int((found & ~rejected).sum()), rejected=int(rejected.sum()),
                failed_silently=int((~found & ~rejected).sum()),
                low_contrast=dict(images=int(low.sum()), localised=int((low & found & ~rejected).sum()),
                                  rejected=int((low & rejected).sum()),
                                  failed_silently=int((low & ~found & ~rejected).sum())),
                films_with_a_marker_in_the_input=int((rows.markers_in_input > 0).sum()),
                films_with_markers=int((rows.markers > 0).sum()), markers=int(rows.markers.sum()),
                markers_erased=int(rows.markers_erased.sum()),
                erased_in_hand_box=dict(mean=round(float(rows.erased_in_hand_box.mean()), 5),
                                        max=round(float(rows.erased_in_hand_box.max()), 5)),
                median_iou=round(float(rows.iou.median()), 3), seconds_per_image=round(float(rows.seconds.mean()), 2))


def read_voc(path) -> list[list[int]]:
    """The boxes [x0, y0, x1, y1) of a Pascal VOC annotation file (Koitka et al.'s ossification ROIs)."""
    import xml.etree.ElementTree as ET
    out = []
    for obj in ET.parse(path).getroot().iter("object"):
        b = obj.find("bndbox")
        out.append([int(float(b.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")])
    return out


def roi_coverage(sample, params: dict, progress: bool = False) -> pd.DataFrame:
    """Li 2021's crop (`params`) of every half-resolution image of the real sample with Koitka et al.'s
    ossification ROI boxes (`sample`/roi_annotations, original pixels, halved; the expert's boxes where both an
    expert's and a non-expert's exist): one row per image with the
    fraction of ROI boxes with >= 90 % of their area inside the crop used, the IoU of the hand box with the box
    around all ROIs (fingertip joints to the wrist: a lower bound of the hand), and the fallback reason."""
    from pathlib import Path
    from tqdm.auto import tqdm
    from bac.data.rsna import read_image
    from bac.preprocess import locate
    from bac.preprocess.boxes import box_iou, boxes_inside_fraction, expand_box
    sample = Path(sample)
    xmls = {p.stem: p for p in sorted((sample / "roi_annotations").rglob("*.xml"), key=lambda p: "expert" in p.parts)}
    ids = [i for i in sorted(xmls, key=int) if (sample / "half-res" / "images" / f"{i}.png").exists()]
    rows = []
    for i in tqdm(ids, desc="ROI coverage", disable=not progress, leave=False):
        image = read_image(sample / "half-res" / "images" / f"{i}.png")
        rois = [[v // 2 for v in b] for b in read_voc(xmls[i])]
        loc = locate(image, "li2021", 0, **params)
        crop = expand_box(loc["used"], image.shape, params.get("margin", 0.0))
        around = [min(b[0] for b in rois), min(b[1] for b in rois), max(b[2] for b in rois), max(b[3] for b in rois)]
        rows.append(dict(id=int(i), rois=len(rois), inside=boxes_inside_fraction(rois, crop),
                         roi_box_iou=box_iou(loc["box"], around) if loc["box"] else 0.0, reason=loc["reason"]))
    return pd.DataFrame(rows)


def film_statistics(image: np.ndarray, hand_box, markers=(), side: int = 384) -> dict:
    """What tells a phantom from a real film, on `image` reduced to `side` px (long side; the demo's phantoms;
    never enlarged): the hand box's share of the film; the median grey inside and outside it (markers left out);
    the hand's contrast (90th percentile inside minus the median outside); the noise (SD of the film minus its
    3x3 median, outside the hand, differences of 16 grey levels or more left out as edges); per marker box, its
    long side over the film's and its contrast (95th percentile inside minus the median of a ring around it)."""
    from scipy import ndimage
    from bac.preprocess import resize_long
    from bac.preprocess.boxes import scale_box
    small = resize_long(image, min(side, max(image.shape[:2]))).astype(np.float32)   # never enlarged
    box = scale_box(hand_box, image.shape, small.shape)
    inside = np.zeros(small.shape, bool)
    inside[box[1]:box[3], box[0]:box[2]] = True
    marked = np.zeros(small.shape, bool)
    marks = []
    for m in markers:
        x0, y0, x1, y1 = scale_box(m, image.shape, small.shape)
        if x1 <= x0 or y1 <= y0:
            continue
        marked[y0:y1, x0:x1] = True
        ring = np.zeros(small.shape, bool)
        ring[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
        ring[y0:y1, x0:x1] = False
        marks.append(dict(size=max(x1 - x0, y1 - y0) / max(small.shape),
                          contrast=float(np.percentile(small[y0:y1, x0:x1], 95) - np.median(small[ring]))))
    outside = ~inside & ~marked
    residual = small - ndimage.median_filter(small, 3)
    out_res = residual[outside] if outside.any() else residual.ravel()
    out_res = out_res[np.abs(out_res) < 16]     # edges (field borders, text) are not noise
    background = float(np.median(small[outside])) if outside.any() else np.nan
    return dict(hand_share=float(inside.mean()), inside=float(np.median(small[inside])), outside=background,
                contrast=float(np.percentile(small[inside], 90)) - background,
                noise=float(out_res.std()) if out_res.size else np.nan, markers=marks)
