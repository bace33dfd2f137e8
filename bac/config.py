"""Settings: each method's paper settings written once (`full`), and what the smaller profiles change, line by line
with the reason (minGPT's defaults-with-the-component, Deeplasia's config diffs).

`resolve(PROFILE, "ren2019", ...)` merges the common settings, the section's `full` settings, the profile's diff
(and the dry run's) and any per-field overrides, and returns a frozen `Config` (a dict with attribute access).
A paper's section lives with its model (`bac.models.<id>.SETTINGS`, found through the registry
`bac.models.METHODS`); the notebooks' own sections (data, preprocess, comparison) are below.
`explain(profile, section)` lists a profile's diff with the reasons.

- smoke: CI; the whole notebook suite in minutes on 2 CPU cores (tiny synthetic data, a step or two).
- demo:  the default main job; the whole suite in under 30 minutes on 2 CPU cores, models clearly learn.
- full:  the papers' own settings on the real RSNA data, for a GPU. `dry_run=True` keeps the full
         architectures and resolutions but trains a couple of steps on a few images (CPU check).

Used in: every notebook, `bac run`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_NAMES = ("smoke", "demo", "full")


def because(reason: str, **settings) -> dict:
    """Diff lines that share one reason: {key: (value, reason)}; join several with `|`."""
    return {key: (value, reason) for key, value in settings.items()}


@dataclass(frozen=True)
class Settings:
    """A section's settings: `full` (the paper's, or ours where it is silent: the comment says which) and the
    diffs of the smaller profiles and of the dry run (applied over `full`), each line `because(reason, ...)`."""
    full: dict
    smoke: dict = field(default_factory=dict)
    demo: dict = field(default_factory=dict)
    dry_run: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("smoke", "demo", "dry_run"):
            for key, line in getattr(self, name).items():
                if not (isinstance(line, tuple) and len(line) == 2 and isinstance(line[1], str) and line[1]):
                    raise ValueError(f"diff line {name}.{key} is not (value, reason): write it with because()")

    def check(self, common: dict, where: str) -> None:
        """Every diff line changes a setting of `full` (or of the common settings)."""
        for name in ("smoke", "demo", "dry_run"):
            for key in getattr(self, name):
                if key not in self.full and key not in common:
                    raise ValueError(f"{where}: diff line {name}.{key} changes no setting of `full`; add it there")

    def of(self, profile: str, dry_run: bool = False) -> dict:
        out = copy.deepcopy(self.full)
        diffs = ([] if profile == "full" else [getattr(self, profile)]) + ([self.dry_run] if dry_run else [])
        for diff in diffs:
            out.update({key: copy.deepcopy(value) for key, (value, _) in diff.items()})
        return out


# How a training is fed (bac.train): DataLoader worker processes, augmentation of whole batches on the device
# (instead of per image on the CPU), mixed precision ("bf16", "fp16" or "" for fp32; only on a GPU) and
# channels-last memory. The CPU profiles keep the per-image path their reference numbers were measured with.
_CPU_FEED = ("a CPU: the trainings are the bottleneck, not the loader, and the reference numbers were measured with "
             "per-image augmentation in the main process and fp32")

# Settings of every notebook. `synth` sizes the built-in synthetic data set used when no real data is given;
# `max_steps`/`limit` cap training batches and images per split (None: no cap).
COMMON = Settings(
    full=dict(synth=dict(n_train=48, n_val=16, n_test=16, long_side=1600), bs=32, epochs=100, max_steps=None,
              limit=None, workers=8, device="auto", gpus=1, loader_workers=12, batch_augment=True, amp="bf16",
              channels_last=True),
    smoke=because("CI: the suite in minutes", synth=dict(n_train=192, n_val=48, n_test=48, long_side=256), bs=16,
                  epochs=1)
    | because("2 CPU cores", workers=2) | because(_CPU_FEED, loader_workers=0, batch_augment=False, amp="",
                                                   channels_last=False),
    demo=because("a laptop CPU: the suite in under 30 minutes, and enough images for the models to learn",
                 synth=dict(n_train=1200, n_val=160, n_test=200, long_side=384), epochs=8)
    | because("2 CPU cores", workers=2) | because(_CPU_FEED, loader_workers=0, batch_augment=False, amp="",
                                                   channels_last=False),
    # What `dry_run=True` changes (only meaningful with the full profile).
    dry_run=because("a CPU check of the full architectures: two batches of two on four images per split",
                    max_steps=2, limit=4, epochs=1, bs=2),
)

# The notebooks' own sections (not methods). Each method's section is `bac.models.<id>.SETTINGS`.
SECTIONS: dict[str, Settings] = {
    # notebooks/01: images read for the statistics, sample grid size, strip resolution
    "data": Settings(
        full=dict(figure_n=12, stats_n=2000, low_contrast=60, strip_px=512),
        smoke=because("CI: a few images", figure_n=6, stats_n=48, strip_px=160),
        demo=because("the demo set has 1,560 images and a laptop CPU", stats_n=400, strip_px=256)),
    # notebooks/02. size: output px of the figures; score_n: test images scored per method (None: all);
    # bench_n/bench_side: benchmark images at RSNA size. li_*: Kim & Kanezaki segmentation at li_size px (long
    # side) with p = q = li_channels, li_iters iterations (Li 2021: 90 and 50). det_*: Faster R-CNN (no
    # pretrained weights), trained det_steps batches on det_train_n images (Ren 2019 annotated 1,000). unet_*:
    # UNet++ (Zheng 2024 gives no details: ResNet encoder, random init; ours). ridge_sigmas are px at 256 px
    # (scaled to the output, floored at 1 px). ref_n: training images pooled for the histogram-matching
    # reference. ren_matched_crop: Ren's coarse map is cropped from the histogram-matched image (the paper) or,
    # False, from the original grey levels (the box still comes from the matched image).
    "preprocess": Settings(
        full=dict(size=512, n_show=6, bench_n=64, bench_side=2000, score_n=None, clahe=False, margin=0.02,
                  li_size=128, li_channels=90, li_iters=50,
                  det_arch="resnet50", det_size=800, det_steps=4000, det_bs=8, det_lr=1e-4, det_train_n=1000,
                  unet_encoder="resnet34", unet_decoder=(256, 128, 64, 32, 16), unet_size=256, unet_steps=4000,
                  unet_bs=16, unet_lr=1e-3, unet_train_n=1000, ridge="frangi", ridge_sigmas=(1.0, 2.0, 4.0),
                  ref_n=100, ren_matched_crop=True),
        smoke=because("CI: small figures and few images", size=96, n_show=3, bench_n=3, bench_side=1600, score_n=24,
                      ref_n=16, det_train_n=96, unet_train_n=96)
        | because("CI: Li's segmentation at 48 px, 16 channels, 20 iterations", li_size=48, li_channels=16,
                  li_iters=20)
        | because("CI: a small detector (MobileNetV3 at 128 px) for 10 steps; its failures are counted",
                  det_arch="mobilenet_v3_320", det_size=128, det_steps=10, det_bs=4, det_lr=2e-3)
        | because("CI: a small UNet++ (ResNet-18, narrow decoder, 64 px) for 30 steps", unet_encoder="resnet18",
                  unet_decoder=(32, 16, 16, 8, 8), unet_size=64, unet_steps=30, unet_bs=8, unet_lr=1e-2),
        demo=because("a laptop CPU: smaller figures, 100 scored test images, 8 benchmark images", size=192,
                     n_show=4, bench_n=8, bench_side=1800, score_n=100, ref_n=32)
        | because("Li's segmentation at 64 px, 24 channels: 20 iterations gave the same box IoU as 30 on 40 demo "
                  "test images (0.71 vs 0.72) in half the time", li_size=64, li_channels=24, li_iters=20)
        | because("a detector a CPU trains from scratch: MobileNetV3 at 128 px, 300 steps on 400 images (with 60 "
                  "steps most demo boxes scored below min_score); failures are counted and shown",
                  det_arch="mobilenet_v3_320", det_size=128, det_steps=300, det_bs=4, det_lr=2e-3, det_train_n=400)
        | because("a UNet++ a CPU trains: ResNet-18, narrow decoder, 64 px, 80 steps on 400 images",
                  unet_encoder="resnet18", unet_decoder=(32, 16, 16, 8, 8), unet_size=64, unet_steps=80, unet_bs=8,
                  unet_lr=1e-2, unet_train_n=400)
        | because("ridges at the phantoms' bone scale at 192 px (1.1 / 2.25 px)", ridge_sigmas=(3.0, 6.0))
        | because("per-image matching erases the phantoms' bone-density cue: Ren's full method 26.2 -> 18.9 months "
                  "(matched crop vs original grey levels, demo detector, measured)", ren_matched_crop=False),
        # batch 8 of 800 px Faster R-CNN R50 training: ~7 GB, OOM on a shared CPU box
        dry_run=because("a CPU check: a few images, batches of 2", n_show=2, bench_n=1, score_n=4, det_train_n=4,
                        unet_train_n=4, ref_n=4, det_bs=2, unet_bs=2)),
    # notebooks/03: phantom pretraining (`bac.pretrain`). live_*: the pretraining the notebook runs itself (the
    # baseline's backbone; the full profile's is `bac pretrain`'s default budget); n_show: phantoms shown.
    "pretrain": Settings(
        full=dict(n_show=8, live_images=20000, live_epochs=4, live_size=128, live_held_out=512),
        smoke=because("CI: a few phantoms, one epoch at 48 px", n_show=4, live_images=96, live_epochs=1, live_size=48,
                      live_held_out=32),
        demo=because("a laptop CPU: a minute's pretraining to watch (the measured budget is `bac pretrain`'s: "
                     "benchmarks/results/pretrain*.json)", live_images=2000, live_epochs=3, live_size=96,
                     live_held_out=256)),
    # notebooks/90: each method's final model (its section's settings) on the official split; reused from the
    # method notebook's checkpoint when it is exactly what would be trained here, else retrained. latency_n: test
    # images timed one by one on one CPU thread (file -> preprocessing -> model).
    "comparison": Settings(
        full=dict(latency_n=51, n_boot=10000, n_wrong=8, levels=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95]),
        smoke=because("CI: few timed images, fewer bootstrap samples", latency_n=3, n_boot=500, n_wrong=4,
                      levels=[0.5, 0.7, 0.8, 0.9, 0.95]),
        demo=because("a laptop CPU: fewer timed images and bootstrap samples", latency_n=11, n_boot=2000, n_wrong=6),
        dry_run=because("a CPU check", latency_n=2, n_boot=200, n_wrong=2)),
}


def section(name: str) -> Settings:
    """The settings of a notebook section or of a method of the registry (`bac.models.METHODS`)."""
    if name in SECTIONS:
        return SECTIONS[name]
    from bac import models
    if name in models.METHODS:
        return models.method(name).settings
    raise ValueError(f"unknown paper/notebook section {name!r}; known: {', '.join([*SECTIONS, *models.METHODS])}")


def explain(profile: str, name: str | None = None, dry_run: bool = False):
    """What `profile` (and the dry run) changes of the `full` settings of `name` (and the common ones), with why."""
    import pandas as pd
    rows = []
    for where, s in [("common", COMMON)] + ([(name, section(name))] if name else []):
        diffs = ([] if profile == "full" else [getattr(s, profile)]) + ([s.dry_run] if dry_run else [])
        for diff in diffs:
            rows += [dict(section=where, setting=k, full=repr(s.full[k] if k in s.full else COMMON.full[k]),
                          here=repr(v), why=why)
                     for k, (v, why) in diff.items()]
    return pd.DataFrame(rows, columns=["section", "setting", "full", "here", "why"])


class Config(dict):
    """A frozen dict whose keys are also attributes (`cfg.epochs`). What a run learns (fitted localisers, the data
    folder) is returned by the function that learns it, never written here; `cfg.replace(k=v)` is a changed copy."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no field {name!r}; fields: {', '.join(sorted(self))}") from None

    def _frozen(self, *args, **kwargs):
        raise TypeError("a resolved config is frozen: pass what a step learned as an argument, or use "
                        "cfg.replace(key=value) for a changed copy")

    __setattr__ = __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _frozen

    def replace(self, **changes) -> "Config":
        return Config({**self, **changes})

    def __reduce__(self):
        return Config, (dict(self),)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))


def parse_overrides(text: str) -> dict:
    """'epochs=3, size=128, lr=1e-3, name=x' -> {'epochs': 3, 'size': 128, 'lr': 0.001, 'name': 'x'}."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. OVERRIDES='epochs=3,size=128')")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _literal(value)
    return out


def _literal(value: str):
    import ast
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _a_method_setting(key: str, profile: str) -> bool:
    from bac import models
    return any(key in section(m).of(profile) for m in models.METHODS)


def resolve(profile: str = "smoke", paper: str | None = None, *, data_dir: str = "", seed: int = 0,
            out_dir: str = "", dry_run: bool = False, overrides: str | dict = "", command: str = "",
            **fields) -> Config:
    """The settings of `paper` (a method of `bac.models.METHODS` or a notebook section) under `profile`, with
    per-field overrides (from notebook parameters).

    data_dir: "" -> $BAC_DATA_DIR, else the built-in synthetic set. out_dir: "" -> $BAC_OUT_DIR, else
    `<repo>/reports`. command: how the run was started (recorded in metrics.json).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILE_NAMES}")
    own = section(paper) if paper is not None else Settings(full={})
    own.check(COMMON.full, paper)
    cfg = {**COMMON.of(profile), **own.of(profile)}
    if dry_run:   # after the section's settings: the dry run's batch and epochs win over the paper's
        cfg.update({k: v for k, (v, _) in COMMON.dry_run.items()})
        cfg.update({k: copy.deepcopy(v) for k, (v, _) in own.dry_run.items()})
    extra = parse_overrides(overrides) if isinstance(overrides, str) else dict(overrides)
    extra.update(fields)
    for key, value in extra.items():
        if key not in cfg and paper in SECTIONS and _a_method_setting(key, profile):
            continue    # `bac run --set` gives every notebook the same overrides: a method's setting is not a
            #             notebook section's (90 passes it on to each method that has it: `predict.comparison_model`)
        if key not in cfg:
            raise ValueError(f"override {key!r} is not a setting of {paper or 'common'} under {profile!r}; "
                             f"settings: {', '.join(sorted(cfg))}")
        cfg[key] = value
    data_dir = data_dir or os.environ.get("BAC_DATA_DIR", "")
    from bac.env import REPO
    out_dir = out_dir or os.environ.get("BAC_OUT_DIR", "") or str(REPO / "reports")
    cfg.update(profile=profile, paper=paper, seed=seed, dry_run=dry_run, overrides=extra,
               data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else "",
               data_source="rsna" if data_dir and not (Path(data_dir) / "synth.json").exists() else "synthetic",
               out_dir=str(Path(out_dir).expanduser().resolve()),
               command=command or f"python -m bac run --profile {profile}" + (f" --only '{paper}'" if paper else ""))
    return Config(cfg)
