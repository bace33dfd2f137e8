"""Every training each notebook performs under a profile, read from the notebooks' loops and the methods' settings.

`trainings(profile, sizes)` lists them in `bac run`'s order (02, 10, 20, 30, 40, 50, 60, 90) with the reuse the
notebooks and caches do: a training whose setting already ran is not listed again (notebook 10's Table II
row that equals S1, notebook 30's `run` helper, notebook 50's `Experiments`, a hand localiser whose cache key
an earlier notebook already trained, notebook 90's reuse of a method notebook's checkpoint on the official
split). The images per training follow each split scheme's rule (`split_sizes`, as `bac.data.splits` splits),
and a dry run's `limit` and `max_steps` cap them as `bac.data.load` and `bac.train.learner` do.

Each enumeration below cites the notebook cell it mirrors; `tests/test_plan_grids.py` checks notebooks 10
and 30 against what they actually train. Used by `bac.plan` (the cost of each training).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

RSNA = dict(train=12611, validation=1425, test=200)   # the release's three sets (default `sizes`)
ORDER = ("02_preprocessing", "10_ren2019_regression_cnn", "20_li2021_mobilenetv3", "30_chen2022_attention_ldl",
         "40_liu2024_2mnet", "50_zheng2024_kdaldl", "60_baseline_regression", "90_comparison")


@dataclass(frozen=True)
class Training:
    """One training: its model (`changes` to the method's config for `build_final`), input and schedule.

    Step-based localisers (Faster R-CNN, UNet++) give steps as `epochs` and the batch as `images`. `passes`:
    forward/backward passes per batch (Liu's jigsaw steps, one per queue granularity), else 1.
    """
    notebook: str
    method: str            # method id, or "localiser"
    what: str
    changes: dict          # cfg keys to replace for build_final; for localisers dict(kind=..., ...)
    size: int              # input side in px
    chans: int
    epochs: float
    images: int            # training images per epoch
    bs: int
    teacher: dict | None = None   # cfg keys of a teacher run forward every step (Zheng's distillation), never {}
    count: int = 1                # identical trainings run (per sex)
    passes: int = 1


# ------------------------------------------------------------------------------------------ images per split
def split_sizes(scheme: str, sizes: dict | None = None, table=None) -> dict:
    """{'train', 'validation', 'test'} image counts of split `scheme` ('official' or a method id).

    With `table` (`bac.data.rsna.load_table`) the split is made (exact); otherwise computed from the official
    counts `sizes` by the scheme's rule (`bac.data.splits.rule`): pool, held-out fractions or counts (scaled
    below `full_pool`). From counts alone the ages over `max_age` (Ren: 131 of RSNA's 12,611) cannot be dropped,
    so Ren's sets come out ~1 % too large.
    """
    from bac.data import splits
    if table is not None:
        with warnings.catch_warnings():   # (the split's notes on dropped rows: the notebooks print them)
            warnings.simplefilter("ignore")
            df = table if scheme == "official" else splits.make_split(table, scheme)
        return {s: int((df.split == s).sum()) for s in ("train", "validation", "test")}
    sizes = dict(sizes or RSNA)
    r = splits.rule(scheme)
    if r.pool == "official":
        return {s: int(sizes.get(s, 0)) for s in ("train", "validation", "test")}
    n = sizes["train"] if r.pool == "train" else sum(sizes.values())
    if all(isinstance(h, int) for h in r.held_out):
        n_val, n_test = (min(h, round(h * n / r.full_pool)) for h in r.held_out)
    else:
        n_val, n_test = (round(f * n) for f in r.held_out)
    n_val, n_test = max(1, n_val), max(1, n_test)
    return dict(train=n - n_val - n_test, validation=n_val, test=n_test)


@dataclass
class _Run:
    """What the enumerations share: the profile, the data's counts, and the localiser fits already cached."""
    profile: str
    dry_run: bool
    sizes: dict
    table: object = None
    cached: set = field(default_factory=set)

    def cfg(self, section: str):
        from bac.config import resolve
        return resolve(self.profile, section, dry_run=self.dry_run)

    def n_train(self, cfg, scheme: str | None = None) -> int:
        """Training images of `cfg`'s split (or `scheme`), after the dry run's per-split `limit`."""
        n = split_sizes(scheme or cfg.get("split", "official"), self.sizes, self.table)["train"]
        return min(n, cfg["limit"]) if cfg.get("limit") else n

    def fit(self, nb, cfg, method, what, changes, size, chans, n=None, epochs=None, bs=None, **kw) -> Training:
        """A fastai training (`bac.train.learner`): `cfg.max_steps` caps its batches over all epochs."""
        n = self.n_train(cfg) if n is None else n
        bs = cfg["bs"] if bs is None else bs
        epochs = cfg["epochs"] if epochs is None else epochs
        if cfg.get("max_steps"):
            per_epoch = max(1, n // bs if n > bs else 1)    # bac.train.steps_per_epoch (drop_last)
            epochs = min(epochs, cfg["max_steps"] / per_epoch)
        return Training(nb, method, what, dict(changes), int(size), int(chans), float(epochs), int(n), int(bs), **kw)

    def localiser(self, nb, cfg, kind: str, scheme: str = "official") -> list[Training]:
        """Faster R-CNN ('detector') or UNet++ ('unetpp') fitted on `scheme`'s training rows unless an earlier
        notebook fitted the same (`detect.fit_detector` / `unetpp.fit_unetpp`: their cache key is the spec and
        the rows)."""
        from bac.preprocess import settings
        s, p = settings(cfg), {"detector": "det", "unetpp": "unet"}[kind]
        steps = s[f"{p}_steps"] if not cfg.get("max_steps") else min(s[f"{p}_steps"], cfg["max_steps"])
        n = min(s[f"{p}_train_n"], self.n_train(cfg, scheme))
        arch = dict(arch=s.det_arch) if kind == "detector" else dict(encoder=s.unet_encoder,
                                                                      decoder=list(s.unet_decoder))
        spec = dict(kind=kind, **arch, size=s[f"{p}_size"], steps=steps, bs=s[f"{p}_bs"], lr=s[f"{p}_lr"], n=n,
                    seed=cfg.get("seed", 0), rows=scheme)
        key = repr(sorted(spec.items()))
        if key in self.cached:
            return []
        self.cached.add(key)
        what = "Faster R-CNN hand detector" if kind == "detector" else "UNet++ hand segmentation"
        return [Training(nb, "localiser", f"{what} ({scheme} split)", dict(kind=kind, **arch, train_n=n),
                         s[f"{p}_size"], 3 if kind == "detector" else 1, float(steps), min(s[f"{p}_bs"], n),
                         s[f"{p}_bs"])]

    def chen_locators(self, nb, cfg, scheme: str) -> list[Training]:
        """Chen's Phase I (`chen2022.fit_locators`): hand (GAP, hand_size), Region-1 and Region-2 (GMP, r1_size)
        classifiers, unless stored fits with the same settings and rows exist (`_fit_id`)."""
        key = repr((scheme, self.dry_run, sorted((k, repr(cfg.get(k))) for k in cfg if k.startswith("cls_"))))
        if key in self.cached:
            return []
        self.cached.add(key)
        specs = (("hand", cfg.hand_pool, cfg.hand_size), ("r1", cfg.r1_pool, cfg.r1_size),
                 ("r2", cfg.r1_pool, cfg.r1_size))
        return [self.fit(nb, cfg, "localiser", f"Phase I {name} classifier ({scheme} split)",
                         dict(kind="chen_cls", backbone=cfg.cls_backbone, backbone_kwargs=cfg.cls_backbone_kwargs,
                              pool=pool, in_chans=1), size, 1, n=self.n_train(cfg, scheme), epochs=cfg.cls_epochs,
                         bs=cfg.cls_bs) for name, pool, size in specs]


def _diff(cfg, **values) -> dict:
    """The values that differ from `cfg`'s (the `changes` of a training)."""
    return {k: v for k, v in values.items() if cfg.get(k) != v}


# ------------------------------------------------------------------------------------------ the notebooks
def _nb02(run: _Run) -> list[Training]:
    """notebooks/02 cells with `pipeline_params`: Zheng's UNet++, then Ren's detector, on the official split."""
    cfg, nb = run.cfg("preprocess"), ORDER[0]
    return run.localiser(nb, cfg, "unetpp") + run.localiser(nb, cfg, "detector")


def _nb10(run: _Run) -> list[Training]:
    """notebooks/10: the detector (cell 6), Table II backbones (cell 15; one equal to cfg.backbone is S1),
    Table III configurations (cell 17; S5 by `fit_final`, whose detector is cached)."""
    from bac.models.ren2019 import CONFIGS
    cfg, nb = run.cfg("ren2019"), ORDER[1]
    out = run.localiser(nb, cfg, "detector", cfg.get("split", "official"))
    runs = {}
    for arch, (name, kw) in cfg.backbones.items():
        key = "S1" if name == cfg.backbone and dict(kw) == dict(cfg.backbone_kwargs) else arch
        if key not in runs:
            runs[key] = run.fit(nb, cfg, "ren2019", f"Table II {arch}" + (" (S1)" if key == "S1" else ""),
                                _diff(cfg, backbone=name, backbone_kwargs=dict(kw), in_chans=1), cfg.size, 1)
    for name in cfg.configs:
        if name not in runs:
            chans = cfg.in_chans if CONFIGS[name]["attention_input"] else 1
            runs[name] = run.fit(nb, cfg, "ren2019", name, _diff(cfg, in_chans=chans), cfg.size, chans)
    return out + list(runs.values())


def _nb20(run: _Run) -> list[Training]:
    """notebooks/20 cell 13: the rows of `li2021.table2_grid` that run (sizes, then the ablations)."""
    from bac.models import li2021
    cfg, nb = run.cfg("li2021"), ORDER[2]
    return [run.fit(nb, cfg, "li2021", f"Table 2 {row['row']}", _diff(cfg, size=row["size"]), row["size"], 1)
            for row in li2021.table2_grid(cfg) if row["run"]]


def _chen_setting(cfg, regions, loss="ldl", lam=None, size=None, backbone=None, sex_layers=None, pretrained=None,
                  **taus) -> str:
    """notebooks/30 cell 17 `setting`: what decides a Phase II training (the localisers named by role)."""
    from bac.models import chen2022 as chen

    def canon(v):
        if isinstance(v, dict):
            return {str(k): canon(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    name = backbone or cfg.backbone
    locators = {k: k for k in chen.LOCATORS}
    return repr(canon(dict(
        images=dict(pipeline="plain") if regions == "O" else chen.region_params(cfg, regions, locators, **taus),
        size=size or cfg.size, loss=loss, lam=(cfg.lam if lam is None else lam) if loss == "ldl" else None,
        backbone=name, backbone_kwargs=cfg.backbone_kwargs if backbone is None else {},
        sex_layers=cfg.sex_layers if sex_layers is None else sex_layers, weights=chen.weights(cfg, name, pretrained))))


def _chen_phase2(run: _Run, nb, cfg, runs: dict, regions, loss="ldl", lam=None, size=None, backbone=None,
                 sex_layers=None, pretrained=None, **taus) -> None:
    """notebooks/30 cell 17 `run`: one Phase II training per setting (added to `runs`)."""
    key = _chen_setting(cfg, regions, loss, lam, size, backbone, sex_layers, pretrained, **taus)
    if key in runs:
        return
    size = size or cfg.size
    what = f"Phase II {regions} {loss}" + "".join(
        f", {k}={v}" for k, v in dict(lam=lam, size=size if size != cfg.size else None, backbone=backbone,
                                      sex=sex_layers, pretrained=pretrained, **taus).items() if v is not None)
    changes = _diff(cfg, final_regions=regions, size=size, backbone=backbone or cfg.backbone,
                    backbone_kwargs=cfg.backbone_kwargs if backbone is None else {},
                    sex_layers=cfg.sex_layers if sex_layers is None else list(sex_layers))
    runs[key] = run.fit(nb, cfg, "chen2022", what, changes, size, len(regions.split("+")))


def _nb30(run: _Run) -> list[Training]:
    """notebooks/30: Phase I (cell 6), Table V (19), Tables II-IV (22-24), lambda and tau sweeps (26), Fig. 4 (28)
    and the final model (30), each Phase II setting trained once (cell 17)."""
    cfg, nb = run.cfg("chen2022"), ORDER[3]
    out = run.chen_locators(nb, cfg, cfg.get("split", "official"))
    runs: dict = {}
    add = lambda *a, **k: _chen_phase2(run, nb, cfg, runs, *a, **k)  # noqa: E731
    for regions in cfg.inputs:                                              # cell 19
        for loss in cfg.losses:
            add(regions, loss)
    for b in cfg.table2_backbones:                                          # cell 22
        for pre in cfg.table2_pretrained:
            if not (pre and not cfg.pretrained):
                add("O", "l1", size=cfg.table2_size, backbone=b, sex_layers=[], pretrained=pre)
    for layers in cfg.table3_sex:                                           # cell 23
        add("O", "l1", size=cfg.table2_size, sex_layers=list(layers))
    for size in cfg.table4_sizes:                                           # cell 24
        add("O", "l1", size=size)
    for regions in cfg.sens_lambda_inputs:                                  # cell 26
        for lam in cfg.sens_lambdas:
            add(regions, "ldl", lam=lam)
    for regions in cfg.sens_tau_regions if cfg.sens_taus else []:
        for tau in cfg.sens_taus:
            add(regions, "ldl", **{"tau_hand" if regions == "H" else "tau_r1": float(tau)})
    if not (cfg.sens_lambdas and cfg.sens_lambda_inputs):                   # cell 28 (else: the sweep, reused)
        add(cfg.final_regions, "ldl")
    add(cfg.final_regions, "ldl")                                           # cell 30
    return out + list(runs.values())


def _liu(run: _Run, nb, cfg, name: str, scheme: str | None = None) -> Training:
    """One 2M-Net experiment: a model per sex (`liu2024.fit`), each on that sex's training rows (half, here),
    one forward/backward pass per input-queue granularity each batch (`JigsawSteps`)."""
    from bac.models import liu2024
    n = run.n_train(cfg, scheme)
    return run.fit(nb, cfg, "liu2024", f"{liu2024.experiment_label(name)} (per sex)", _diff(cfg, final=name),
                   cfg.resize, 1, n=max(1, round(n / 2)), count=2,
                   passes=len(liu2024.parse_experiment(name)["queue"]))


def _nb40(run: _Run) -> list[Training]:
    """notebooks/40 cell 12: every experiment of cfg.experiments (the final one by `fit_final`)."""
    cfg, nb = run.cfg("liu2024"), ORDER[4]
    return [_liu(run, nb, cfg, name) for name in cfg.experiments]


def _zheng_experiments(run: _Run, nb, cfg, scheme=None):
    """`zheng2024.Experiments`: (teacher, student, regression, cnn_baseline, trainings) that train each key once."""
    runs: dict = {}

    def fit(key, what, label, teacher=None):
        if key not in runs:
            runs[key] = run.fit(nb, cfg, "zheng2024", what, _diff(cfg, student=label), cfg.size, 1,
                                n=run.n_train(cfg, scheme), teacher=teacher)

    def teacher(b=None, sigma=None, lam=None, use_sex=True):
        b, s = b or cfg.teacher, float(cfg.sigma if sigma is None else sigma)
        lam = float(cfg.lam if lam is None else lam)
        fit(("teacher", b, s, lam, use_sex), f"teacher {b}, sigma {s:g}, lambda {lam:g}"
            + ("" if use_sex else ", no sex"), b)

    def student(b=None, tau=None, use_sex=True):
        b, t = b or cfg.student, float(cfg.tau if tau is None else tau)
        teacher(use_sex=use_sex)
        fit(("student", b, t, cfg.teacher, use_sex), f"student {b} <- {cfg.teacher}, tau {t:g}"
            + ("" if use_sex else ", no sex"), b, teacher=dict(student=cfg.teacher))

    def regression():
        fit(("regression", cfg.teacher), f"regression, {cfg.teacher}", cfg.teacher)

    def cnn_baseline():   # a plain CNN regressor (zheng2024.build_cnn_baseline) with this backbone
        fit(("cnn", cfg.cnn_baseline), f"plain regression CNN, {cfg.cnn_baseline}", cfg.cnn_baseline)
    return teacher, student, regression, cnn_baseline, runs


def _nb50(run: _Run) -> list[Training]:
    """notebooks/50: the UNet++ (cell 4, cached by notebook 02 when the spec is the same), then the
    `Experiments` runs in the notebook's order (cells 10-35), each key trained once."""
    cfg, nb = run.cfg("zheng2024"), ORDER[5]
    out = run.localiser(nb, cfg, "unetpp")
    teacher, student, regression, cnn_baseline, runs = _zheng_experiments(run, nb, cfg)
    teacher(), student(), cnn_baseline(), regression()      # cells 10, 13, 19, 21
    for b in cfg.teacher_grid:                               # cell 24
        teacher(b)
    for b in cfg.student_grid:                               # cell 27
        student(b)
    for s in cfg.sigmas:                                     # cell 29
        teacher(sigma=s, lam=0.5)
    for lam in cfg.lambdas:                                  # cell 31
        teacher(sigma=14.0, lam=lam)
    for t in cfg.taus:                                       # cell 33
        student(tau=t)
    if cfg.sex_ablation == "kdaldl":                         # cell 35
        student(use_sex=False)
    elif cfg.sex_ablation == "teacher":
        teacher(use_sex=False)
    return out + list(runs.values())


def _nb60(run: _Run) -> list[Training]:
    """notebooks/60 cell 6: the baseline, once."""
    cfg = run.cfg("baseline")
    return [run.fit(ORDER[6], cfg, "baseline", "whole image, L1, sex input", {}, cfg.size, 1)]


def _final(run: _Run, nb, paper: str) -> list[Training]:
    """What `bac.models.<paper>.fit_final` trains on the official split (notebook 90)."""
    cfg = run.cfg(paper)
    fit = lambda what, chans=1, **kw: run.fit(nb, cfg, paper, what, {}, cfg.size, chans,  # noqa: E731
                                              n=run.n_train(cfg, "official"), **kw)
    if paper == "ren2019":
        return run.localiser(nb, cfg, "detector") + [fit("S5", cfg.in_chans)]
    if paper == "chen2022":
        return run.chen_locators(nb, cfg, "official") + [fit(f"Phase II {cfg.final_regions} ldl",
                                                             len(cfg.final_regions.split("+")))]
    if paper == "liu2024":
        return [_liu(run, nb, cfg, cfg.final, "official")]
    if paper == "zheng2024":
        teacher, student, *_, runs = _zheng_experiments(run, nb, cfg, "official")
        student()
        return run.localiser(nb, cfg, "unetpp") + list(runs.values())
    return [fit("final model")]


def _nb90(run: _Run) -> list[Training]:
    """notebooks/90 cell 4 (`predict.comparison_model`): a method whose notebook trained its final model on the
    official split is reused from that checkpoint; the others are retrained here by `fit_final`."""
    from bac.models import METHODS
    return [t for paper in METHODS if run.cfg(paper).get("split", "official") != "official"
            for t in _final(run, ORDER[7], paper)]


NOTEBOOKS = (_nb02, _nb10, _nb20, _nb30, _nb40, _nb50, _nb60, _nb90)


def trainings(profile: str, sizes: dict | None = None, dry_run: bool = False, data_dir: str = "") -> list[Training]:
    """Every training of `bac run --profile PROFILE` in notebook order, on official sets of `sizes` images
    (default: the RSNA release) or, with `data_dir`, on that folder's table (exact splits)."""
    table = None
    if data_dir:
        from bac.data.rsna import load_table
        table = load_table(data_dir)
    run = _Run(profile, dry_run, dict(sizes or RSNA), table)
    return [t for nb in NOTEBOOKS for t in nb(run)]


def per_notebook(ts: list[Training]) -> dict:
    """{notebook: trainings run} (counts included), e.g. for a summary."""
    out: dict = {}
    for t in ts:
        out[t.notebook] = out.get(t.notebook, 0) + t.count
    return out


__all__ = ["Training", "trainings", "split_sizes", "per_notebook", "RSNA", "ORDER"]
