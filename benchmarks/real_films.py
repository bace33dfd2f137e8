"""Localisation on real films, scored against hand annotations: the scoreboard of issue 20.

    python benchmarks/real_films.py [--profiles demo,full] [--sample ../shared/rsna-sample]

The 37 hard full-resolution originals of the real RSNA sample (`../shared/rsna-sample/originals`: the 10
low-contrast films, landscape and two-hand films, collimated films with "L" markers and initials), each with a
hand box, marker boxes and flags drawn by hand (`tests/data/rsna_sample_annotations.json`, original pixels). For
every localiser that needs no training data (Li 2021's unsupervised segmentation, at each profile's settings) and
for every image: the localiser's box and its IoU with the annotated hand, the fallback reason when
`boxes.check_box` rejected it, and the annotated markers that reach the final input (for Li's pipeline the
dilated hand mask inside the crop: a marker counts when 5 % of its box is inside it). Per localiser: hands found
(IoU >= 0.5), rejected, low-contrast films localised / rejected / failed silently, films with a marker in the
final input.

Writes benchmarks/results/real_films.json: numbers only; no image of the sample, nor any part of one, is written.
The learned localisers (Faster R-CNN, UNet++, Chen's CAM classifiers) need training data and are not scored here.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ANNOTATIONS = REPO / "tests" / "data" / "rsna_sample_annotations.json"
FOUND_IOU = 0.5          # PASCAL VOC: the object was found
MARKER_INSIDE = 0.05     # share of a marker's box inside the final input that counts as "the marker is in it"


def marker_share(marker, crop, mask=None) -> float:
    """Share of `marker`'s box inside the final input: the `crop` box, and within it the `mask` (full resolution
    bool, or None for a crop that keeps everything in its box)."""
    x0, y0, x1, y1 = (int(v) for v in marker)
    area = max((x1 - x0) * (y1 - y0), 1)
    keep = np.zeros((y1 - y0, x1 - x0), bool)
    cx0, cy0, cx1, cy1 = max(x0, crop[0]), max(y0, crop[1]), min(x1, crop[2]), min(y1, crop[3])
    if cx1 <= cx0 or cy1 <= cy0:
        return 0.0
    keep[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = True
    if mask is not None:
        keep &= mask[y0:y1, x0:x1]
    return float(keep.sum() / area)


def score_li(image: np.ndarray, truth: dict, settings) -> dict:
    """Li 2021's localisation of one image under `settings` (a profile's preprocessing settings)."""
    from scipy import ndimage
    from bac.preprocess import boxes, locate, resize
    params = dict(seg_size=settings.li_size, p=settings.li_channels, q=settings.li_channels,
                  iterations=settings.li_iters)
    t0 = time.perf_counter()
    loc = locate(image, "li2021", 0, **params)
    seconds = time.perf_counter() - t0
    crop = boxes.expand_box(loc["used"], image.shape, settings.margin)
    mask = None
    if loc["mask"] is not None:   # what the pipeline keeps: the mask grown by one segmentation pixel
        small = ndimage.binary_dilation(loc["mask"] > 127)
        mask = resize(small.astype(np.uint8) * 255, image.shape[:2]) > 127
    markers = [marker_share(m, crop, mask) for m in truth["markers"]]
    return dict(box=loc["box"], reason=loc["reason"], seconds=round(seconds, 2),
                iou=round(boxes.box_iou(loc["box"], truth["hand_box"]), 3) if loc["box"] else 0.0,
                markers_in_input=int(sum(s >= MARKER_INSIDE for s in markers)),
                marker_shares=[round(s, 3) for s in markers])


def summarise(rows: pd.DataFrame) -> dict:
    low = rows[rows.low_contrast]
    found, rejected = rows.iou >= FOUND_IOU, rows.reason != ""
    return dict(images=len(rows), hand_found=int((found & ~rejected).sum()), rejected=int(rejected.sum()),
                failed_silently=int((~found & ~rejected).sum()),
                low_contrast=dict(images=len(low), localised=int(((low.iou >= FOUND_IOU) & (low.reason == "")).sum()),
                                  rejected=int((low.reason != "").sum()),
                                  failed_silently=int(((low.iou < FOUND_IOU) & (low.reason == "")).sum())),
                films_with_a_marker_in_the_input=int((rows.markers_in_input > 0).sum()),
                films_with_markers=int((rows.markers > 0).sum()),
                median_iou=round(float(rows.iou.median()), 3), seconds_per_image=round(float(rows.seconds.mean()), 2))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="demo,full")
    ap.add_argument("--sample", default=str(REPO.parent / "shared" / "rsna-sample"))
    args = ap.parse_args(argv)
    sample = Path(args.sample)
    if not (sample / "originals" / "labels.csv").is_file():
        raise SystemExit(f"no real sample at {sample}: pass --sample (the folder with originals/labels.csv)")
    os.environ.setdefault("BAC_CACHE_DIR", tempfile.mkdtemp(prefix="bac-real-films-"))   # no stale localisations
    from bac.config import resolve
    from bac.data.rsna import read_image
    from bac.env import describe
    from bac.preprocess import settings as preprocess_settings
    truth = json.loads(ANNOTATIONS.read_text())["images"]
    labels = pd.read_csv(sample / "originals" / "labels.csv")
    out = dict(source=f"benchmarks/real_films.py on {len(labels)} originals of the real RSNA sample, "
                      f"{time.strftime('%Y-%m-%d')}", env=describe(show=False), localisers={})
    from tqdm.auto import tqdm
    for profile in args.profiles.split(","):
        s = preprocess_settings(resolve(profile, "li2021"))
        rows = []
        for r in tqdm(list(labels.itertuples()), desc=f"li2021 ({profile})"):
            t = truth[str(r.id)]
            res = score_li(read_image(sample / "originals" / f"{r.id}.png"), t, s)
            rows.append(dict(id=int(r.id), low_contrast=bool(t["low_contrast"]), markers=len(t["markers"]), **res))
        df = pd.DataFrame(rows)
        name = f"li2021 ({profile}: {s.li_size} px, p = q = {s.li_channels}, {s.li_iters} iterations)"
        out["localisers"][name] = dict(summary=summarise(df), images=rows)
        print(name, json.dumps(out["localisers"][name]["summary"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_films.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {RESULTS / 'real_films.json'}")
    return out


if __name__ == "__main__":
    main()
