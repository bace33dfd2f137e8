"""Phantom pretraining, measured (issue 21): the demo's backbones pretrained at `bac pretrain`'s budget, then every
demo method from scratch vs phantom-pretrained, on the synthetic demo set and on real films, over seeds.

    python benchmarks/pretrain_transfer.py [--seeds 3] [--only pretrain,synthetic,real]
                                           [--synthetic-scratch-from reports]

1. `bac pretrain --profile demo` (each distinct backbone once, cached; about 20 minutes on 2 CPU cores), its
   manifests (settings, times, loss and held-out age MAE per epoch) -> benchmarks/results/pretrain_demo.json.
2. `benchmarks/real_demo.py` for {synthetic, real} x {from scratch, `--set "pretrained='phantom'"`}, the same seeds
   and split -> benchmarks/results/pretrain_<synthetic|real>_<scratch|phantom>.json. `--synthetic-scratch-from
   REPORTS` collects the from-scratch synthetic arm from a run already made with those seeds (the committed
   reference, `reports`: the from-scratch code path is the same) instead of running it again.

Notebook 03 reads these files.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PHANTOM = "pretrained='phantom'"


def pretrain_demo(profile: str = "demo") -> dict:
    """Every distinct backbone of `profile`'s methods pretrained (or read from the cache): their manifests."""
    from bac import pretrain
    made = {}
    for label, (name, chans, kwargs) in pretrain.backbones(profile).items():
        path = pretrain.ensure(name, chans, kwargs)
        made.setdefault(str(path), dict(used_by=[], manifest=json.loads(path.with_name("manifest.json").read_text())))
        made[str(path)]["used_by"].append(label)
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    out = dict(source=f"benchmarks/pretrain_transfer.py, {time.strftime('%Y-%m-%d')}: bac pretrain --profile "
                      f"{profile}", code=f"{code.stdout.strip()} (git)",
               backbones={", ".join(m["used_by"]): m["manifest"] for m in made.values()})
    (RESULTS / "pretrain_demo.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", default="pretrain,synthetic,real", help="which steps (comma-separated)")
    ap.add_argument("--synthetic-scratch-from", default="", help="collect the synthetic from-scratch arm from here")
    args = ap.parse_args(argv)
    steps = set(args.only.split(","))
    if "pretrain" in steps:
        for label, m in pretrain_demo()["backbones"].items():
            print(f"{label}: held-out age MAE {m['curve'][-1]['held_out_age_mae']} months "
                  f"({m['render_seconds']:.0f} s rendering, {m['train_seconds']:.0f} s training)")
    bench = [sys.executable, str(REPO / "benchmarks" / "real_demo.py"), "--seeds", str(args.seeds)]
    for data in ("synthetic", "real"):
        if data not in steps:
            continue
        extra = ["--synthetic"] if data == "synthetic" else []
        for init, more in (("scratch", []), ("phantom", ["--set", PHANTOM])):
            if data == "synthetic" and init == "scratch" and args.synthetic_scratch_from:
                more = ["--from", args.synthetic_scratch_from]
            subprocess.run(bench + extra + more + ["--name", f"pretrain_{data}_{init}"], cwd=REPO, check=True)


if __name__ == "__main__":
    main()
