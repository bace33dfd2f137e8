"""Scale rehearsal of the full profile without a GPU: every notebook's full-profile preprocessing on synthetic
radiographs at RSNA resolution, measured per image, for `bac plan` to extrapolate to the real set.

    python benchmarks/rehearse_full.py [--n 24] [--side 1800]     (make bench runs it)

What it measures, per notebook (each with its own empty cache folder, so shared inputs count in each):
- seconds per image on one CPU core of each input it prepares at the full profile's settings (cold cache:
  localisation, cropping, resizing, writing), and the seconds its localisers take to fit with capped steps
  (their full training is a GPU training in `bac plan`);
- the disk cache it writes per image (prepared arrays, cached localisations and CAMs; fitted models aside).
Writes benchmarks/results/rehearsal.json (what `bac plan` reads) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# the full profile's settings, but the localisers' fits capped (their cost is a GPU training in `bac plan`) and no
# ImageNet weights (offline)
STEPS = dict(det_steps=4, det_bs=2, unet_steps=4, unet_bs=2, max_steps=2)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def folders(cache: Path, n: int) -> dict:
    """{cache folder (relative): bytes per image} of what a notebook wrote (fitted models aside): `bac plan`
    counts a folder two notebooks share (the same pipeline, size and parameters) once."""
    return {str(d.relative_to(cache)): folder_bytes(d) / n for kind in ("prepared", "localised", "cams")
            for d in sorted((cache / kind).glob("*")) if d.is_dir()}


def inputs(method: str, cfg, df) -> list[tuple[str, int, dict]]:
    """(pipeline, size, params) of each input a notebook prepares and caches under the full profile."""
    from bac import preprocess
    from bac.models import chen2022 as chen
    from bac.models import method as method_of
    final = method_of(method).final_pipeline(cfg, df)
    plain = lambda s: ("plain", int(s), {})   # noqa: E731
    extra = []
    if method == "ren2019":
        extra = [plain(cfg.size)]
    elif method == "li2021":
        params = preprocess.pipeline_params(cfg, df, cfg.pipeline)
        extra = [(cfg.pipeline, int(s), params) for s in cfg.sizes] + [plain(cfg.size)]
    elif method == "chen2022":
        extra = [plain(s) for s in chen.plain_sizes(cfg)]
    if method == "chen2022":
        final = plain(cfg.size)   # the region crops are built in memory from the cached CAMs (`chen.region_images`)
    return list({(p, s, json.dumps(q, sort_keys=True, default=str)): (p, s, q) for p, s, q in [final, *extra]}
                .values())


def rehearse(method: str, data_dir: Path, cache: Path) -> dict:
    import bac.data
    from bac import preprocess
    from bac.config import resolve
    from bac.data import cache_root
    os.environ["BAC_CACHE_DIR"] = str(cache / method)
    os.environ["BAC_OUT_DIR"] = str(cache / "reports")   # (the split manifests `bac.data.load` writes)
    cfg = resolve("full", method, data_dir=str(data_dir)).replace(pretrained=False, **STEPS)
    df = bac.data.load(cfg, progress=False)
    t = time.perf_counter()
    todo = inputs(method, cfg, df)            # fits the localisers (capped steps)
    if method == "chen2022":
        from bac.models import chen2022 as chen
        keys = chen.fit_locators(cfg, df)["keys"]
    fit_s = time.perf_counter() - t
    models = folder_bytes(cache_root() / "models")
    rows, n = [], len(df)
    for pipeline, size, params in todo:
        t = time.perf_counter()
        preprocess.prepare(df, pipeline, size, workers=1, progress=False, **params)
        rows.append(dict(input=f"{pipeline}@{size}", seconds_per_image=(time.perf_counter() - t) / n))
    crops = []
    if method == "chen2022":   # the CAMs of the three localisers, once per image (cached); the crops of each input
        for i, regions in enumerate(r for r in dict.fromkeys([cfg.final_regions, *cfg.inputs]) if r != "O"):
            t = time.perf_counter()
            chen.region_images(cfg.replace(workers=1), df, regions, cfg.size, keys)
            (rows if i == 0 else crops).append(dict(
                input=f"regions {regions}@{cfg.size}" + (" (CAMs cached, crops in memory)" if i == 0 else
                                                          " (crops in memory, every training)"),
                seconds_per_image=(time.perf_counter() - t) / n))
    written = folder_bytes(cache_root()) - models
    return dict(method=method, images=n, fit_seconds=fit_s, inputs=rows, per_training=crops,
                folders=folders(cache_root(), n),
                seconds_per_image=sum(r["seconds_per_image"] for r in rows), cache_bytes_per_image=written / n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="synthetic images (2/3 train, 1/6 validation, 1/6 test)")
    ap.add_argument("--side", type=int, default=1800, help="long side in px (RSNA originals: ~1,500-2,500)")
    ap.add_argument("--only", default="", help="method ids, comma-separated (default: all)")
    ap.add_argument("--keep", default="", help="keep the data and caches in this folder")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from bac.data import synth
    from bac.models import METHODS, method
    work = Path(args.keep or tempfile.mkdtemp(prefix="bac-rehearsal-"))
    data = work / "data"
    n_val = n_test = max(1, args.n // 6)
    if not (data / "synth.json").exists():
        t = time.perf_counter()
        synth.make_dataset(data, args.n - n_val - n_test, n_val, n_test, long_side=args.side, progress=False)
        print(f"{args.n} synthetic radiographs, long side {args.side} px, in {time.perf_counter() - t:.0f} s")
    out = []
    for m in [m for m in METHODS if not args.only or m in args.only.split(",")]:
        r = rehearse(m, data, work / "cache")
        print(f"{m}: {r['seconds_per_image']:.2f} s per image on one core, {r['cache_bytes_per_image'] / 1e6:.2f} MB "
              f"cache per image, localisers fitted (capped steps) in {r['fit_seconds']:.0f} s")
        for row in r["inputs"] + r["per_training"]:
            print(f"    {row['input']:<40} {row['seconds_per_image']:.3f} s/image")
        out.append(r)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "rehearsal.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    nb = {m: method(m).notebook for m in METHODS}
    doc = dict(source=f"benchmarks/rehearse_full.py: {args.n} synthetic radiographs at {args.side} px, one core of "
                      f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
                      f"{time.strftime('%Y-%m-%d')}",
               cpu_seconds_per_image={**old.get("cpu_seconds_per_image", {}),
                                      **{nb[r["method"]]: r["seconds_per_image"] for r in out}},
               cache_bytes_per_image={**old.get("cache_bytes_per_image", {}),
                                      **{nb[r["method"]]: r["cache_bytes_per_image"] for r in out}},
               cache_folders={**old.get("cache_folders", {}), **{nb[r["method"]]: r["folders"] for r in out}},
               detail={**old.get("detail", {}), **{r["method"]: r for r in out}})
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
