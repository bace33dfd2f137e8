"""Localisation on real films, scored against hand annotations: the scoreboard of issue 20.

    python benchmarks/real_films.py [--profiles demo,full] [--sample ../shared/rsna-sample]

The 37 hard full-resolution originals of the real RSNA sample (`../shared/rsna-sample/originals`: the 10
low-contrast films, landscape and two-hand films, collimated films with "L" markers and initials), each with a
hand box, marker boxes and flags drawn by hand (`bac/data/rsna_sample_originals.json`, original pixels), scored
by `bac.preprocess.scores.score_originals`: for the localiser that needs no training data (Li 2021's
unsupervised segmentation, at each profile's settings) and every film, the box and its IoU with the annotated
hand, the fallback reason when a check rejected it, the markers the reading erased (`bac.preprocess.markers`)
and the annotated markers still in the final input (the crop and, within it, the hand mask as the pipeline keeps
it: a marker counts when 5 % of its bright pixels are there, not erased). And on the 30 half-resolution images
with Koitka et al.'s ossification ROI boxes, the share of ROIs inside the crop (`scores.roi_coverage`).

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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


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
    from bac.env import describe
    from bac.preprocess import PARAMS, settings
    from bac.preprocess import scores
    out = dict(source=f"benchmarks/real_films.py on the real RSNA sample, {time.strftime('%Y-%m-%d')}",
               env=describe(show=False), localisers={})
    for profile in args.profiles.split(","):
        cfg = resolve(profile, "li2021")
        s = settings(cfg)
        params = PARAMS["li2021"](s, cfg, None)
        rows = scores.score_originals(sample, params, progress=True)
        roi = scores.roi_coverage(sample, params, progress=True)
        name = f"li2021 ({profile}: {s.li_size} px, p = q = {s.li_channels}, {s.li_iters} iterations)"
        summary = scores.summarise_originals(rows)
        summary["roi_coverage"] = dict(images=len(roi), rois_inside_crop=round(float(roi.inside.mean()), 4),
                                       rejected=int((roi.reason != "").sum()))
        out["localisers"][name] = dict(summary=summary, images=rows.round(5).to_dict("records"))
        print(name, json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_films.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {RESULTS / 'real_films.json'}")
    return out


if __name__ == "__main__":
    main()
