"""Images per second of each preprocessing pipeline on images of real RSNA size, cold and warm cache.

    python benchmarks/bench_preprocess.py [--profile smoke|demo|full] [--n 8] [--side 1800] [--workers 1]

Cold: the prepared images and cached localisations of the benchmark images are removed first (trained
localisers are kept: they are fitted once per data set, see notebook 02). Warm: everything read back.
Targets (issue 4): equalisation + crop >= 10 images/s on one core; the unsupervised segmentation < 1 s
per image on one core; a warm epoch limited by the model, not by loading.
"""
from __future__ import annotations

import argparse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", choices=["smoke", "demo", "full"])
    ap.add_argument("--n", type=int, default=0, help="images (default: the profile's bench_n)")
    ap.add_argument("--side", type=int, default=0, help="long side px (default: the profile's bench_side)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pipelines", default="plain,equalize,li2021,zheng2024,ren2019")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import bac.config
    import bac.data
    import bac.preprocess as P
    from bac.data import cache_root
    from bac.preprocess.scores import benchmark, benchmark_images
    cfg = bac.config.resolve(args.profile, "preprocess")
    df = bac.data.load(cfg, progress=False)  # the data set the localisers are trained on
    images = benchmark_images(cache_root() / "bench", args.n or cfg.bench_n, args.side or cfg.bench_side)
    rows = []
    for name in args.pipelines.split(","):
        params = P.pipeline_params(cfg, df, name)
        rows.append(benchmark(images, name, cfg.size, params, workers=args.workers))
    import pandas as pd
    table = pd.DataFrame(rows)
    print(f"profile {args.profile}: {len(images)} images, long side {args.side or cfg.bench_side} px, "
          f"output {cfg.size} px, {args.workers} worker(s)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return table


if __name__ == "__main__":
    main()
