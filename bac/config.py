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
    "data": {
        "smoke": dict(figure_n=8),
        "demo": dict(figure_n=12),
        "full": dict(figure_n=12),
    },
    "preprocess": {
        "smoke": dict(size=96, n_show=3, bench_n=4),
        "demo": dict(size=192, n_show=4, bench_n=16),
        "full": dict(size=512, n_show=6, bench_n=64),
    },
    "ren2019": {"smoke": {}, "demo": {}, "full": {}},
    "li2021": {"smoke": {}, "demo": {}, "full": {}},
    "chen2022": {"smoke": {}, "demo": {}, "full": {}},
    "liu2024": {"smoke": {}, "demo": {}, "full": {}},
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
