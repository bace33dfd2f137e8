"""Li et al. 2021: MobileNetV3-Large + sex embedding (24 units) + one-hidden-layer MLP, standardised MSE.

Paper Table 1 / Fig. 12: backbone -> 1,280-d pooled feature; sex (0/1) -> Linear(1, 24) -> ReLU,
concatenated (1,304); MLP 1,304 -> 1,304 (ReLU) -> 1. The target is standardised on the training set
(Eq. 7, Y' = (Y - mu) / sigma) and the loss is the MSE on Y' (Eq. 6); the model maps its output back
to months, so it follows `bac.train`'s convention `model(x, male) -> months`. Training: SGD, momentum
0.9, lr / 10 every 30 epochs. The unsupervised hand localisation is `bac.preprocess` pipeline 'li2021'.

Used in: notebooks/20_li2021_mobilenetv3.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import torch
from torch import nn

from bac.config import Settings, because
from bac.models import Method, Split
from bac.models import pretrained as _pretrained

SEX_DIM = 24                       # width of the sex embedding (paper: 24)
PAPER_PARAMS_M = 7.6               # the paper's parameter count, millions (not reproducible from Table 1)
PAPER_SIZES = (224, 500, 700)      # Table 2's input sizes
# Table 2, RSNA rows: MAE (months) by input size (sex, preprocessing, pretraining on), then the ablations at 700.
PAPER_TABLE2 = {224: 6.8, 500: 6.5, 700: 6.2, "no_sex": 8.5, "no_preprocess": 7.5, "no_pretrain": 7.4}
# Table 3: other papers' RSNA results as Li et al. quote them (not run here).
PAPER_TABLE3 = [("Escobar et al. 2019 [18]", "bounding box and keypoint", 4.14),
                ("Iglovikov et al. 2018 [17]", "mask and keypoint", 6.4),
                ("Wibisono et al. 2019 [16]", "no", 14.78),
                ("Li et al. 2021 (this method)", "no", 6.2)]


class AgeScaler:
    """Eq. 7: Y' = (Y - mu) / sigma with mu, sigma of the training set's bone ages (months)."""

    def __init__(self, mean: float, sd: float):
        if not sd > 0:
            raise ValueError(f"standard deviation of the training ages is {sd}; need at least two different ages")
        self.mean, self.sd = float(mean), float(sd)

    @classmethod
    def from_ages(cls, ages) -> "AgeScaler":
        ages = np.asarray(ages, float)
        if ages.size < 2 or not np.isfinite(ages).all():
            raise ValueError(f"need >= 2 finite training ages to standardise, got {ages.size} "
                             f"({int((~np.isfinite(ages)).sum())} not finite); check the table's boneage column")
        return cls(ages.mean(), ages.std(ddof=1))

    def to_z(self, months):
        return (months - self.mean) / self.sd

    def to_months(self, z):
        return z * self.sd + self.mean


class SexEmbeddingRegressor(nn.Module):
    """Backbone (timm, pooled) + optional sex embedding + MLP with one hidden layer -> months.

    hidden: width of the MLP's hidden layer; None -> the concatenated width (1,280 + 24 = 1,304).
    """

    def __init__(self, backbone: str = "mobilenetv3_large_100", pretrained: bool = False, pretrained_file: str = "",
                 in_chans: int = 1, use_sex: bool = True, sex_dim: int = SEX_DIM, hidden: int | None = None,
                 age_mean: float = 0.0, age_sd: float = 1.0, backbone_kwargs: dict | None = None):
        super().__init__()
        self.backbone = _pretrained.create(backbone, pretrained=pretrained, pretrained_file=pretrained_file,
                                           num_classes=0, in_chans=in_chans, **dict(backbone_kwargs or {}))
        # timm's MobileNetV3 pools 960 channels, then a 1x1 conv (no BN) + h-swish to 1,280 (Table 1).
        self.feature_dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.use_sex = use_sex
        self.sex = nn.Sequential(nn.Linear(1, sex_dim), nn.ReLU()) if use_sex else None
        self.concat_dim = self.feature_dim + (sex_dim if use_sex else 0)
        hidden = hidden or self.concat_dim
        self.head = nn.Sequential(nn.Linear(self.concat_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].bias)   # start at the training mean (z = 0)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def features(self, x, male):
        """The concatenated vector fed to the MLP: (B, 1,304) with sex, (B, 1,280) without."""
        f = self.backbone(x)
        if self.sex is not None:
            f = torch.cat([f, self.sex(male.reshape(-1, 1).to(f.dtype))], dim=1)
        return f

    def forward(self, x, male):
        z = self.head(self.features(x, male)).squeeze(1)      # standardised age Y'
        return z * self.age_sd + self.age_mean                   # months


def standardised_mse(model: SexEmbeddingRegressor):
    """Eq. 6 on Eq. 7's targets: mean((Y_hat' - Y')^2), using the model's own mu and sigma."""
    def loss(pred, target):
        months = pred[0] if isinstance(pred, (tuple, list)) else pred
        return nn.functional.mse_loss((months.flatten() - model.age_mean) / model.age_sd,
                                      (target.flatten() - model.age_mean) / model.age_sd)
    return loss


def step_schedule(lr: float, epochs: int, every: int, factor: float = 0.1):
    """lr multiplied by `factor` every `every` epochs (paper: / 10 every 30 of 160), as a fastai schedule."""
    drops = [(k * every / epochs, factor ** k) for k in range(1, epochs // max(every, 1) + 1) if k * every < epochs]
    from bac.train import lr_steps
    return lr_steps(lr, epochs, drops)


def table2_grid(cfg) -> list[dict]:
    """Table 2's rows for this config: one per `cfg.sizes` (mapped onto the paper's largest sizes), then the
    ablations at `cfg.size`. Each row: row, sex, pipeline, pretrained, size, paper_size, paper_mae, run, note."""
    sizes = list(cfg["sizes"])
    if not sizes or sizes[-1] != cfg["size"] or len(sizes) > len(PAPER_SIZES):
        raise ValueError(f"li2021 config: `sizes` {sizes} must end with `size` ({cfg['size']}) and hold at most "
                         f"{len(PAPER_SIZES)} sizes (one per Table 2 size); fix li2021.SETTINGS or OVERRIDES")
    base = dict(sex=True, pipeline=cfg["pipeline"], pretrained=cfg["pretrained"], run=True, note="")
    rows = [dict(base, row=f"{ps} px", size=s, paper_size=ps, paper_mae=PAPER_TABLE2[ps])
            for s, ps in zip(sizes, PAPER_SIZES[-len(sizes):])]
    changes = {"no_sex": dict(sex=False), "no_preprocess": dict(pipeline=cfg["plain_pipeline"]),
               "no_pretrain": dict(pretrained=False)}
    for name in cfg["ablations"]:
        if name not in changes:
            raise ValueError(f"li2021 config: unknown ablation {name!r}; choose from {', '.join(changes)}")
        row = dict(rows[len(sizes) - 1], row=f"{PAPER_SIZES[-1]} px, {name.replace('_', ' ')}",
                   paper_mae=PAPER_TABLE2[name],
                   **changes[name])
        if name == "no_pretrain" and not cfg["pretrained"]:
            row.update(run=False, note="not run: no ImageNet weights in this profile, so every row is already "
                                       "trained from scratch (it would repeat the first row at this size)")
        rows.append(row)
    return rows


def build(cfg, use_sex: bool = True, pretrained: bool | None = None, scaler: AgeScaler | None = None,
          in_chans: int | None = None) -> SexEmbeddingRegressor:
    """The paper's model from the config (`backbone`, `backbone_kwargs`, `pretrained`, `pretrained_file`, `hidden`,
    `in_chans`)."""
    scaler = scaler or AgeScaler(0.0, 1.0)
    return SexEmbeddingRegressor(cfg["backbone"], pretrained=cfg["pretrained"] if pretrained is None else pretrained,
                                 pretrained_file=cfg.get("pretrained_file", ""),
                                 in_chans=in_chans or cfg.get("in_chans", 1), use_sex=use_sex,
                                 hidden=cfg.get("hidden"), age_mean=scaler.mean, age_sd=scaler.sd,
                                 backbone_kwargs=cfg.get("backbone_kwargs"))


def build_final(cfg) -> SexEmbeddingRegressor:
    """The architecture saved as `checkpoints/final.safetensors` (with sex; weights come from the checkpoint)."""
    return build(cfg, use_sex=True, pretrained=False)


def final_pipeline(cfg, df=None) -> tuple[str, int, dict]:
    """(pipeline, input size, pipeline parameters) the final model expects (`bac.preprocess.prepare`); the
    unsupervised localisation learns nothing from `df`."""
    from bac import preprocess
    return cfg["pipeline"], int(cfg["size"]), preprocess.pipeline_params(cfg, None, cfg["pipeline"])


def fit(cfg, images: dict, df, use_sex: bool = True, pretrained: bool | None = None, in_chans: int | None = None,
        seed: int | None = None, quiet: bool = True):
    """Train one Table 2 row: SGD (momentum), step lr, standardised MSE. Returns the fastai Learner.

    `images` maps split -> uint8 (N, C, H, W) aligned with `df[df.split == split]` (see `prepare_splits`).
    """
    from fastai.callback.schedule import ParamScheduler
    from fastai.optimizer import SGD
    from bac import train
    seed = cfg["seed"] if seed is None else seed
    train.seed_everything(seed)
    scaler = AgeScaler.from_ages(df[df.split == "train"].boneage)
    model = build(cfg, use_sex=use_sex, pretrained=pretrained, scaler=scaler,
                  in_chans=in_chans or images["train"].shape[1])
    dls = train.dataloaders(images, df, bs=cfg["bs"], augment=train.make_augment(**cfg["augment"]), seed=seed,
                            cfg=cfg)
    one_cycle = cfg.get("opt", "sgd") == "adamw_one_cycle"
    learn = train.learner(dls, model, loss_func=standardised_mse(model), cfg=cfg, wd=cfg["wd"],
                          opt_func=None if one_cycle else partial(SGD, mom=cfg["momentum"], decouple_wd=False),
                          seed=seed)
    quietly = (learn.no_logging(), learn.no_bar()) if quiet else (contextlib.nullcontext(), contextlib.nullcontext())
    with quietly[0], quietly[1]:
        if one_cycle:
            learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
        else:
            learn.fit(cfg["epochs"], cbs=[ParamScheduler({"lr": step_schedule(cfg["lr"], cfg["epochs"],
                                                                               cfg["lr_drop_every"])})])
    return learn


def fit_final(cfg, df, progress: bool = False) -> SexEmbeddingRegressor:
    """The full method (sex embedding, `cfg.pipeline` at `cfg.size`, `cfg.pretrained`) on `df` (any split
    scheme; 'train' rows trained on, 'validation' monitored), exactly as the notebook's final Table 2 row;
    returned in eval mode."""
    from bac import preprocess
    for split in ("train", "validation"):
        if not (df.split == split).any():
            raise ValueError(f"fit_final needs 'train' and 'validation' rows in df.split; it has "
                             f"{sorted(df.split.unique())}: load the data with bac.data.load(cfg, split=...)")
    fit_df = df[df.split.isin(["train", "validation"])]
    pipeline, size, params = final_pipeline(cfg, df)
    images = {s: preprocess.prepare(fit_df[fit_df.split == s], pipeline, size, workers=cfg.get("workers", 1),
                                    progress=progress, device=cfg.get("device", "auto"), **params)
              for s in ("train", "validation")}
    return fit(cfg, images, fit_df, use_sex=True, quiet=not progress).model.eval()


def history(learn):
    """Per-epoch (epoch, train_loss, valid_loss, valid MAE months) from the fastai recorder."""
    import pandas as pd
    rows = [dict(epoch=i + 1, train_loss=v[0], valid_loss=v[1] if len(v) > 1 else np.nan,
                 valid_mae=v[2] if len(v) > 2 else np.nan) for i, v in enumerate(learn.recorder.values)]
    return pd.DataFrame(rows, columns=["epoch", "train_loss", "valid_loss", "valid_mae"])


def latency(model: nn.Module, paths, male, pipeline: str, size: int, params: dict | None = None,
            threads: int = 1, warmup: int = 1) -> dict:
    """Seconds per image on the CPU, `threads` threads: the pipeline from the image file (run afresh) + one
    model forward (batch 1): `bac.predict.latency` for a model not saved yet."""
    from bac.predict import latency as timed
    return timed(model, dict(pipeline=pipeline, size=size, params=params or {}), paths, male, threads=threads,
                 warmup=warmup)


# ------------------------------------------------------------------------------------------ settings, registry
# Table 2: one row per input size in `sizes` (sex, preprocessing, pretraining on), then at `size` (the largest,
# also the final model's) the `ablations`. The segmentation's settings (li_size, li_iters, ...) are notebook 02's
# (`bac.config.SECTIONS["preprocess"]`). The paper: ImageNet MobileNetV3-Large, 224/500/700 px, batch 10, 160
# epochs, SGD momentum 0.9, lr / 10 every 30 epochs, 7:2:1 split of the training set. Not given: the initial lr
# and weight decay (ours: 0.01, 1e-4) and the ranges of "crop, resize, rotation, contrast, brightness" (ours).
_NO_WEIGHTS = "no ImageNet weights offline, so the no-pretraining row is not run"
SETTINGS = Settings(
    full=dict(backbone="mobilenetv3_large_100", backbone_kwargs={}, pretrained=True, pretrained_file="", in_chans=1,
              clahe=False, hidden=None, pipeline="li2021", plain_pipeline="plain", split="li2021",
              sizes=[224, 500, 700], size=700, ablations=["no_sex", "no_preprocess", "no_pretrain"], bs=10,
              epochs=160, lr=0.01, lr_drop_every=30, opt="sgd", momentum=0.9, wd=1e-4,
              augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.2, contrast=0.2), n_show=6,
              latency_n=21),
    smoke=because(_NO_WEIGHTS, pretrained=False)
    | because("CI: the paper's network at 64 px for one epoch", sizes=[64], size=64, bs=16, epochs=1, lr=0.05,
              n_show=3, latency_n=3),
    demo=because(_NO_WEIGHTS, pretrained=False)
    | because("MobileNetV3-Large from scratch does not learn in a CPU budget (SGD lr 0.05 / 0.01: 32.7 / 33.0 months, "
              "AdamW one-cycle 3e-3: 32.6; mean predictor 33.2), a narrow ResNet-10t does (13.3; measured)",
              backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16),
              opt="adamw_one_cycle", lr=3e-3, lr_drop_every=5, augment={})
    | because("global equalisation turns the phantoms' flat soft tissue into noise (31.9 months; CLAHE inside the "
              "hand 14.1, measured)", clahe=True)
    | because("a laptop CPU: 96 px only, batch 32, 8 epochs, fewer figures and timed images", sizes=[96], size=96,
              bs=32, epochs=8, n_show=4, latency_n=11)
    | because("the official split, so notebook 90 reuses the model", split="official"),
    dry_run=because("a CPU check: no weights downloaded, few timed images", pretrained=False, latency_n=3, n_show=2),
)

METHOD = Method(
    id="li2021", notebook="20_li2021_mobilenetv3", title="Unsupervised hand localisation + MobileNetV3, sex embedding",
    citation="Li S, Liu B, Li S, Zhu X, Yan Y, Zhang D. A deep learning-based computer-aided diagnosis method of "
             "X-ray images for bone age assessment. Complex & Intelligent Systems 8:1929-1939 (2022, online 2021), "
             "doi:10.1007/s40747-021-00376-z",
    settings=SETTINGS, split=Split(pool="train", held_out=(0.2, 0.1)),
    headline=(6.2, "Li et al. 2021, RSNA, abstract"),
    quotes={"Table 2": PAPER_TABLE2, "Table 3": {name: mae for name, _, mae in PAPER_TABLE3}},
    build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final)
