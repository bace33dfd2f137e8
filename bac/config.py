"""One table of profiles (smoke | demo | full), resolved by every notebook.

`resolve(PROFILE, "ren2019", ...)` merges the profile's common settings with the paper's section and
any per-field overrides, and returns a `Config` (a dict with attribute access).

- smoke: CI; the whole notebook suite in minutes on 2 CPU cores (tiny synthetic data, a step or two).
- demo:  the default main job; the whole suite in under 30 minutes on 2 CPU cores, models clearly learn.
- full:  the papers' own settings on the real RSNA data, for a GPU. `dry_run=True` keeps the full
         architectures and resolutions but trains a couple of steps on a few images (CPU check).

Used in: every notebook, `bac run`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

PROFILE_NAMES = ("smoke", "demo", "full")

# Settings shared by every notebook. `synth` sizes the built-in synthetic data set used when no real
# data is given; `max_steps`/`limit` cap training batches and images per split (None: no cap).
COMMON = {
    "smoke": dict(synth=dict(n_train=192, n_val=48, n_test=48, long_side=256), bs=16, epochs=1,
                  max_steps=None, limit=None, workers=2, device="auto"),
    "demo": dict(synth=dict(n_train=1200, n_val=160, n_test=200, long_side=384), bs=32, epochs=8,
                 max_steps=None, limit=None, workers=2, device="auto"),
    "full": dict(synth=dict(n_train=48, n_val=16, n_test=16, long_side=1600), bs=32, epochs=100,
                 max_steps=None, limit=None, workers=8, device="auto", gpus=1),
}

# What `dry_run=True` changes (only meaningful with the full profile).
DRY_RUN = dict(max_steps=2, limit=4, epochs=1, bs=2)

# One section per notebook/paper. Each section lists the settings of the three profiles; keys absent
# from a profile fall back to COMMON. Paper settings are quoted in the `full` row.
PAPERS: dict[str, dict[str, dict]] = {
    "data": {  # notebooks/01: images read for the statistics, sample grid size, strip resolution
        "smoke": dict(figure_n=6, stats_n=48, low_contrast=60, strip_px=160),
        "demo": dict(figure_n=12, stats_n=400, low_contrast=60, strip_px=256),
        "full": dict(figure_n=12, stats_n=2000, low_contrast=60, strip_px=512),
    },
    "preprocess": {
        "smoke": dict(size=96, n_show=3, bench_n=4),
        "demo": dict(size=192, n_show=4, bench_n=16),
        "full": dict(size=512, n_show=6, bench_n=64),
    },
    "ren2019": {"smoke": {}, "demo": {}, "full": {}},
    "li2021": {"smoke": {}, "demo": {}, "full": {}},
    "chen2022": {"smoke": {}, "demo": {}, "full": {}},
    # liu2024 (2M-Net). Experiments are named q<input queue>[+s<spatial stages>][+c<channel stages>]
    # (bac.models.liu2024.parse_experiment); stages as in the paper: 1 = stem, 2-5 = ResNet's groups.
    # Boys: resize to `resize`, centre-crop `size`; girls: resize to `size` (the paper's 512/448 and 448).
    # smoke/demo: a stand-in ResNet-18 (1 block per group, 16-128 channels, from scratch) on small
    # images, a higher lr for few epochs, and the subset (1) vs (4, 2, 1) vs the full model.
    "liu2024": {
        "smoke": dict(backbone="resnet18", backbone_kw=dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128),
                      stem_width=16), pretrained=False, pretrained_file="", pipeline="plain", resize=80,
                      size=64, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5), hidden=64,
                      bs=16, epochs=1, lr=0.02, warmup_epochs=0, warmup_lr=0.002, lr_drop_every=30,
                      momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
                      experiments=["q1", "q421", "q421+s3+c45"], final="q421+s3+c45", n_queries=3),
        "demo": dict(backbone="resnet18", backbone_kw=dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128),
                     stem_width=16), pretrained=False, pretrained_file="", pipeline="plain", resize=128,
                     size=112, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5), hidden=64,
                     bs=32, epochs=8, lr=0.02, warmup_epochs=1, warmup_lr=0.002, lr_drop_every=6,
                     momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
                     experiments=["q1", "q421", "q421+s3+c45"], final="q421+s3+c45", n_queries=3),
        # The paper: ImageNet ResNet-18, 448 x 448, SGD momentum 0.9, wd 1e-4, batch 64, 130 epochs, warm-up
        # 5 epochs from 0.001, lr 0.0025 divided by 10 every 30 epochs; Tables 3-5 and the combined model.
        "full": dict(backbone="resnet18", backbone_kw={}, pretrained=True, pretrained_file="", pipeline="plain",
                     resize=512, size=448, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5),
                     hidden=256, bs=64, epochs=130, lr=0.0025, warmup_epochs=5, warmup_lr=0.001,
                     lr_drop_every=30, momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
                     experiments=["q1", "q21", "q421", "q8421", "q421+s2", "q421+s3", "q421+s4", "q421+s5",
                                  "q421+c4", "q421+c5", "q421+c45", "q421+s3+c45"],
                     final="q421+s3+c45", n_queries=4),
        # CPU check at full size: no weights here; every queue length, the heaviest spatial block, the full model.
        "dry_run": dict(pretrained=False, experiments=["q1", "q8421", "q421+s2", "q421+s3+c45"]),
    },
    "zheng2024": {"smoke": {}, "demo": {}, "full": {}},
    "comparison": {"smoke": {}, "demo": {}, "full": {}},
}


class Config(dict):
    """A dict whose keys are also attributes (`cfg.epochs`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no field {name!r}; fields: {', '.join(sorted(self))}") from None

    def __setattr__(self, name, value):
        self[name] = value


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


def resolve(profile: str = "smoke", paper: str | None = None, *, data_dir: str = "", seed: int = 0,
            out_dir: str = "", dry_run: bool = False, overrides: str | dict = "", command: str = "",
            **fields) -> Config:
    """The settings of `paper` under `profile`, with per-field overrides (from notebook parameters).

    data_dir: "" -> $BAC_DATA_DIR, else the built-in synthetic set. out_dir: "" -> $BAC_OUT_DIR, else
    `<repo>/reports`. command: how the run was started (recorded in metrics.json).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILE_NAMES}")
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"unknown paper/notebook section {paper!r}; known: {', '.join(PAPERS)}")
    cfg = Config(copy.deepcopy(COMMON[profile]))
    if paper is not None:
        cfg.update(copy.deepcopy(PAPERS[paper][profile]))
    if dry_run:
        cfg.update(DRY_RUN)
        cfg.update(copy.deepcopy(PAPERS.get(paper, {}).get("dry_run", {})))
    extra = parse_overrides(overrides) if isinstance(overrides, str) else dict(overrides)
    extra.update(fields)
    for key, value in extra.items():
        if key not in cfg:
            raise ValueError(f"override {key!r} is not a setting of {paper or 'common'} under {profile!r}; "
                             f"settings: {', '.join(sorted(cfg))}")
        cfg[key] = value
    data_dir = data_dir or os.environ.get("BAC_DATA_DIR", "")
    from bac.env import REPO
    out_dir = out_dir or os.environ.get("BAC_OUT_DIR", "") or str(REPO / "reports")
    cfg.update(profile=profile, paper=paper, seed=seed, dry_run=dry_run, overrides=extra,
               data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else "",
               data_source="rsna" if data_dir else "synthetic",
               out_dir=str(Path(out_dir).expanduser().resolve()),
               command=command or f"python -m bac run --profile {profile}" + (f" --only '{paper}'" if paper else ""))
    return cfg
