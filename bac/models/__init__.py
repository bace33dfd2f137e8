"""The methods: one module per paper (`ren2019`, `li2021`, `chen2022`, `liu2024`, `zheng2024`) and the plain
regression `baseline`, each declaring a `METHOD` (the contract below); `pretrained` loads ImageNet weights.

`METHODS` is the registry, the one list of methods: the config, the splits, `bac predict` and the comparison
notebook read it. Adding a method = a module with `SETTINGS` and `METHOD`, a notebook, a test, one line here.

Every model follows `bac.train`'s convention: `model(x, male) -> months` (or a tuple starting with it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

METHODS = ("ren2019", "li2021", "chen2022", "liu2024", "zheng2024", "baseline")   # the registry


@dataclass(frozen=True)
class Split:
    """How a method splits the labelled data. pool: 'official' (the release's own sets, kept as they are),
    'train' (the official training set) or 'labelled' (every labelled image); max_age drops older children (months);
    held_out: (validation, test) as fractions of the pool, or counts (ints; scaled down below `full_pool` images)."""
    pool: str = "official"
    max_age: float | None = None
    held_out: tuple = ()
    full_pool: int = 0


@dataclass(frozen=True)
class Method:
    """The contract a method module meets (its `METHOD`); `bac.predict`, notebook 90 and `bac.config` use only this.

    settings: `bac.config.Settings` (the paper's `full` settings, per-profile diffs with reasons).
    headline: (the paper's headline MAE on RSNA in months, where it is stated); quotes: the paper's tables as
    quoted, {table: {row: value}} (values may be tuples, e.g. (MAE, SD)). split: `Split`.
    build_final(cfg) -> the final model, untrained; final_pipeline(cfg) -> (pipeline, size, params) that feed it;
    fit_final(cfg, df, progress) -> the trained final model. Optional: age_distribution(output) -> (B, K)
    probabilities over months 1..K; cam_target(model) -> (layer, reshape_transform) for Grad-CAM.
    """
    id: str
    notebook: str
    title: str
    citation: str
    settings: object
    split: Split
    headline: tuple[float | None, str]
    build_final: Callable
    final_pipeline: Callable
    fit_final: Callable
    quotes: dict = field(default_factory=dict)
    age_distribution: Callable | None = None
    cam_target: Callable | None = None


def method(id: str) -> Method:
    """The registered method `id` (imports its module)."""
    if id not in METHODS:
        raise ValueError(f"unknown method {id!r}; the registry (bac.models.METHODS) has {', '.join(METHODS)}")
    return importlib.import_module(f"bac.models.{id}").METHOD


def method_of(model) -> Method | None:
    """The method whose module defines `model`'s class (None for other models)."""
    name = type(model).__module__.rsplit(".", 1)[-1]
    return method(name) if name in METHODS else None
