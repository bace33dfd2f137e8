"""The demo profile on real films: every paper notebook trained and tested on half-resolution RSNA images.

    python benchmarks/real_demo.py [--train 400 --validation 50 --test 150] [--seeds 3] [--set OVERRIDES]
                                   [--sample ../shared/rsna-sample] [--keep DIR] [--name real_demo]
    python benchmarks/real_demo.py --synthetic [--seeds 3] [--set OVERRIDES] [--from REPORTS] --name NAME

Draws (seed 0) the training, validation and test images from the 600 half-resolution training images of the
real sample (`half-res/`, official labels), lays them out as the official release is (label files in the
official formats, the images linked, never copied) in a temporary folder, runs `bac run --profile demo
--data-dir <it> --seeds N` and collects notebook 90's test MAE of every method per seed, with the mean
predictor's MAE (the training mean) on the same test images, and the wall time.

`--synthetic` runs the same on the built-in phantoms (the demo's synthetic set, its official split) instead;
`--from REPORTS` only collects the numbers of a run already made (e.g. the committed reference, `reports`).

Writes benchmarks/results/<name>.json (numbers only). The targets of issue 20: the best method under 0.5x and
every method under 0.7x the mean predictor's MAE.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def official_layout(sample: Path, root: Path, n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict:
    """The half-res images of `sample` as an official release under `root`: {'train': ids, ...}."""
    half = pd.read_csv(sample / "half-res" / "labels.csv")
    if n_train + n_val + n_test > len(half):
        raise SystemExit(f"{n_train} + {n_val} + {n_test} images asked for; the sample has {len(half)}")
    order = np.random.default_rng(seed).permutation(len(half))
    parts = {"train": half.iloc[order[:n_train]], "validation": half.iloc[order[n_train:n_train + n_val]],
             "test": half.iloc[order[n_train + n_val:n_train + n_val + n_test]]}
    folders = {"train": root / "boneage-training-dataset",
               "validation": root / "Bone Age Validation Set" / "boneage-validation-dataset-1",
               "test": root / "Bone Age Test Set" / "Test Set Images"}
    for split, rows in parts.items():
        folders[split].mkdir(parents=True)
        for i in rows.id:
            os.symlink(sample / "half-res" / "images" / f"{i}.png", folders[split] / f"{i}.png")
    sex = {True: "M", False: "F"}
    tr, va, te = parts["train"], parts["validation"], parts["test"]
    tr[["id", "boneage", "male"]].to_csv(root / "boneage-training-dataset.csv", index=False)
    pd.DataFrame({"Image ID": va.id, "male": va.male, "Bone Age (months)": va.boneage}).to_csv(
        root / "Bone Age Validation Set" / "Validation Dataset.csv", index=False)
    pd.DataFrame({"Case ID": te.id, "Sex": te.male.map(sex), "Ground truth bone age (months)": te.boneage}).to_csv(
        root / "Bone Age Test Set" / "Bone age ground truth.csv", index=False)
    return {k: [int(i) for i in v.id] for k, v in parts.items()}


def comparison(out: Path, seeds: int) -> dict:
    """Notebook 90's test MAE per method for each seed (seed 0 in `out`, the others in `out`/seeds/seed-k)."""
    per_seed = {}
    for s in range(seeds):
        path = (out if s == 0 else out / "seeds" / f"seed-{s}") / "comparison" / "metrics.json"
        m = json.loads(path.read_text())["metrics"]
        rows = {}
        for paper in path.parent.parent.iterdir():          # every paper notebook's result rows (its tables)
            if (paper / "metrics.json").is_file() and paper.name not in ("comparison", "data", "preprocess"):
                for r in json.loads((paper / "metrics.json").read_text()).get("results", []):
                    if isinstance(r.get("ours"), (int, float)) and "MAE" in str(r.get("metric")):
                        rows[f"{paper.name} | {r['table']} | {r['row']}"] = round(float(r["ours"]), 3)
        per_seed[s] = dict(mean_predictor=m["mean_predictor"], n_test=m["n_test"],
                           mae={r["method"]: r["MAE"] for r in m["table"]}, rows=dict(sorted(rows.items())))
    return per_seed


def _code_version(out: Path) -> str:
    return json.loads((out / "comparison" / "metrics.json").read_text()).get("code_version", "?")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--validation", type=int, default=50)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", default="", help="profile overrides for every notebook (bac run --set)")
    ap.add_argument("--sample", default=str(REPO.parent / "shared" / "rsna-sample"))
    ap.add_argument("--keep", default="", help="write the reports here (default: a temporary folder)")
    ap.add_argument("--synthetic", action="store_true", help="the built-in phantoms instead of the real sample")
    ap.add_argument("--from", dest="reports", default="", help="collect from these reports (no run)")
    ap.add_argument("--name", default="real_demo", help="benchmarks/results/<name>.json")
    ap.add_argument("--only", default="10_*,20_*,30_*,40_*,50_*,60_*,90_*",
                    help="the notebooks to run (90 trains the final models that are not there)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bac-real-demo-"))
    out = Path(args.reports or args.keep or work / "reports")
    cmd = [sys.executable, "-m", "bac", "run", "--profile", "demo", "--out", str(out), "--seeds", str(args.seeds),
           "--only", args.only, "--no-progress"]
    env, ids = dict(os.environ), {}
    if not args.synthetic:
        sample = Path(args.sample)
        if not (sample / "half-res" / "labels.csv").is_file():
            raise SystemExit(f"no real sample at {sample}: pass --sample (the folder with half-res/labels.csv)")
        ids = official_layout(sample, work / "rsna", args.train, args.validation, args.test)
        cmd += ["--data-dir", str(work / "rsna")]
        env["BAC_CACHE_DIR"] = str(work / "cache")
        from bac.data import cache_root        # phantom-pretrained weights are the same for any data: share them
        if (cache_root() / "pretrained").is_dir():
            (work / "cache").mkdir()
            os.symlink(cache_root() / "pretrained", work / "cache" / "pretrained")
    if args.set:
        cmd += ["--set", args.set]
    t0 = time.time()
    rc = 0 if args.reports else subprocess.run(cmd, cwd=REPO, env=env).returncode
    seconds = None if args.reports else round(time.time() - t0)
    if rc:
        raise SystemExit(f"bac run failed (exit {rc}); reports in {out}")
    per_seed = comparison(out, args.seeds)
    methods = sorted(per_seed[0]["mae"])
    table = {}
    for m in methods:
        v = np.array([per_seed[s]["mae"][m] for s in per_seed])
        ratio = np.array([per_seed[s]["mae"][m] / per_seed[s]["mean_predictor"] for s in per_seed])
        sd = round(float(v.std(ddof=1)), 2) if len(v) > 1 else None
        table[m] = dict(mae_mean=round(float(v.mean()), 2), mae_sd=sd,
                        per_seed=[round(float(x), 2) for x in v], ratio_to_mean_predictor=round(float(ratio.mean()), 3))
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    what = "the built-in phantoms (demo synthetic set)" if args.synthetic else \
        "RSNA half-resolution training images of the real sample"
    result = dict(source=f"benchmarks/real_demo.py, {time.strftime('%Y-%m-%d')}: {what}, demo profile",
                  code=f"{code.stdout.strip()} (git)" if not args.reports else
                  f"collected from {args.reports}: code_version {_code_version(out)}",
                  data="synthetic" if args.synthetic else "real",
                  command=None if args.reports else " ".join(cmd[1:]), overrides=args.set,
                  images={k: len(v) for k, v in ids.items()},
                  seeds=args.seeds, wall_seconds=seconds, mean_predictor=per_seed[0]["mean_predictor"],
                  methods=table, rows={k: [per_seed[s]["rows"].get(k) for s in per_seed] for k in per_seed[0]["rows"]},
                  split_ids=ids,
                  targets=dict(best_under_half=min(t["ratio_to_mean_predictor"] for t in table.values()) < 0.5,
                               all_under_0_7=max(t["ratio_to_mean_predictor"] for t in table.values()) < 0.7))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "split_ids"}, indent=1))
    return result


if __name__ == "__main__":
    main()
