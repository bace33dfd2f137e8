"""Command line: `python -m bac run|synth|predict|compare ...` (also installed as the `bac` script)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bac", description="Bone age assessment: reproduce five papers' methods.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute the notebooks headless (papermill) and regenerate reports/")
    r.add_argument("--profile", default="demo", choices=["smoke", "demo", "full"])
    r.add_argument("--only", help="notebook name globs, comma-separated (e.g. '01_*,10_*')")
    r.add_argument("--data-dir", default="", help="the real RSNA data (default: $BAC_DATA_DIR or synthetic)")
    r.add_argument("--out", help="output directory (default: reports/)")
    r.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    r.add_argument("--timeout", type=float, default=3600, help="wall-clock seconds per notebook")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seeds", type=int, default=1,
                   help="train every table row for seeds 0..N-1, report mean +/- SD (seeds 1..N-1 in <out>/seeds/)")
    r.add_argument("--set", dest="overrides", default="", help="profile overrides, e.g. 'epochs=2,size=128'")
    r.add_argument("--dry-run-full", action="store_true",
                   help="full architectures and resolutions, a couple of steps on a few images")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--notebooks", default=None, help="notebook folder (default: the repo's notebooks/)")

    s = sub.add_parser("synth", help="write the synthetic phantom data set in the RSNA layout")
    s.add_argument("--out", help="output folder (RSNA layout); omit with --profile to build the built-in set")
    s.add_argument("--profile", choices=["smoke", "demo", "full"],
                   help="build the built-in synthetic set of this profile (what `make reports` and the notebooks use)")
    s.add_argument("--n", type=int, help="total images, split 80/10/10 (or give the three counts)")
    s.add_argument("--n-train", type=int, default=800)
    s.add_argument("--n-val", type=int, default=100)
    s.add_argument("--n-test", type=int, default=100)
    s.add_argument("--size", type=int, default=512, help="long side in pixels")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)

    pr = sub.add_parser("predict", help="bone age of radiographs with a trained model")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--sex", help="M or F; required unless every image is a DICOM with PatientSex")
    pr.add_argument("--model", default="li2021", help="model id or a checkpoint (.safetensors)")
    pr.add_argument("--out", default="predictions")
    pr.add_argument("--force", action="store_true",
                    help="predict films whose hand localisation was rejected (the CSV says so) instead of refusing")

    c = sub.add_parser("compare", help="check that two report folders hold the same numbers (timings aside)")
    c.add_argument("a", help="a report folder, e.g. reports/")
    c.add_argument("b", help="another, e.g. a copy made before rerunning")

    pl = sub.add_parser("plan", help="what a profile will cost before it starts: trainings, GPU hours, memory, disk")
    pl.add_argument("--profile", default="full", choices=["smoke", "demo", "full"])
    pl.add_argument("--data-dir", default="", help="count this RSNA-layout folder's images (default: the RSNA "
                                                   "release, 12,611 / 1,425 / 200)")
    pl.add_argument("--only", help="notebook name globs, comma-separated")
    pl.add_argument("--gpu", default="H200", help="GPU class of the estimate (bac.plan.GPUS)")
    pl.add_argument("--dry-run", action="store_true", help="the full profile's dry run")

    pt = sub.add_parser("pretrain", help="pretrain backbones on phantoms: a stand-in for ImageNet weights")
    pt.add_argument("--backbone", help="a timm name (default: every paper's backbone in --profile)")
    pt.add_argument("--profile", default="demo", choices=["smoke", "demo", "full"],
                    help="whose paper backbones (their arguments and input channels)")
    pt.add_argument("--images", type=int, help="phantoms to train on (default: bac.pretrain.DEFAULTS)")
    pt.add_argument("--epochs", type=int, help="passes over the phantoms (default: bac.pretrain.DEFAULTS)")
    pt.add_argument("--size", type=int, help="input px (default: bac.pretrain.DEFAULTS)")
    pt.add_argument("--seed", type=int)
    pt.add_argument("--workers", type=int, help="loader processes rendering phantoms")

    a = p.parse_args(argv)
    if a.cmd == "pretrain":
        from bac import pretrain
        asked = dict(images=a.images, epochs=a.epochs, size=a.size, seed=a.seed, workers=a.workers)
        settings = {k: v for k, v in asked.items() if v is not None}
        todo = {}
        for paper, (name, chans, kwargs) in pretrain.backbones(a.profile).items():
            if not a.backbone or name == a.backbone:
                todo.setdefault((name, chans, repr(sorted(kwargs.items()))), (paper, name, chans, kwargs))
        if not todo:
            p.error(f"no paper uses backbone {a.backbone!r} in the {a.profile} profile: "
                    f"{sorted({b[0] for b in pretrain.backbones(a.profile).values()})}")
        for paper, name, chans, kwargs in todo.values():
            path = pretrain.ensure(name, chans, kwargs, **settings)
            print(f"{paper}: {name} ({chans} channel(s), {kwargs}) -> {path}"
                  + ("" if not settings else f"\n  (not the defaults: load with pretrained_file='{path}')"))
        return 0
    if a.cmd == "plan":
        from bac import plan
        plan.print_plan(a.profile, gpu=a.gpu, only=a.only, dry_run=a.dry_run, data_dir=a.data_dir)
        return 0
    if a.cmd == "run":
        from bac.runner import run
        outcomes = run(profile=a.profile, only=a.only, data_dir=a.data_dir, out=a.out, jobs=a.jobs,
                       timeout=a.timeout, dry_run_full=a.dry_run_full, overrides=a.overrides, seed=a.seed,
                       seeds=a.seeds,
                       progress=not a.no_progress, **({"notebook_dir": a.notebooks} if a.notebooks else {}))
        return 1 if any(o.status != "ok" for o in outcomes) else 0
    if a.cmd == "synth":
        from bac.data import synth
        if a.profile and not a.out:
            from bac.config import resolve
            from bac.data import ensure_synthetic
            print(f"built-in synthetic set ({a.profile}): {ensure_synthetic(resolve(a.profile))}")
            return 0
        if not a.out:
            p.error("synth needs --out DIR (or --profile P for the built-in set)")
        n_train, n_val, n_test = a.n_train, a.n_val, a.n_test
        if a.n:
            n_val = n_test = max(1, a.n // 10)
            n_train = a.n - n_val - n_test
        out = synth.make_dataset(a.out, n_train=n_train, n_val=n_val, n_test=n_test, long_side=a.size,
                                 seed=a.seed, workers=a.workers)
        print(f"wrote {n_train + n_val + n_test} synthetic radiographs to {out}")
        return 0
    if a.cmd == "compare":
        from bac.report import compare_reports
        diff = compare_reports(a.a, a.b)
        print("\n".join(diff) if diff else f"{a.a} and {a.b} hold the same numbers (wall-clock timings aside)")
        return 1 if diff else 0
    if a.cmd == "predict":
        from bac.predict import main as predict_main
        return predict_main(a)
    return 2


if __name__ == "__main__":
    sys.exit(main())
