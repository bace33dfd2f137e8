"""The control every paper's gain is measured against: a plain regression CNN on the whole radiograph.

`Baseline`: a timm backbone (globally pooled) -> features, the sex (1 male, 0 female) appended, one linear layer
-> z, months = mu + sigma * z with the training set's mean and SD (so a fresh model starts at the mean age). L1
loss (the MAE), AdamW with a one-cycle schedule, the whole image letterboxed (pipeline 'plain'). No localisation,
no attention, no distribution, no distillation: whatever a paper adds on top must beat this at the same budget.

Used in: notebooks/60_baseline_regression.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import torch
from torch import nn

from bac.config import Settings, because
from bac.models import Method, Split
from bac.models import pretrained as _pretrained


class Baseline(nn.Module):
    """Backbone (timm, pooled) + sex -> one linear layer -> months = mean + sd * z."""

    def __init__(self, backbone: str = "resnet50", pretrained: bool = False, pretrained_file: str = "",
                 in_chans: int = 1, backbone_kwargs: dict | None = None, age_mean: float = 120.0,
                 age_sd: float = 50.0):
        super().__init__()
        self.backbone = _pretrained.create(backbone, pretrained=pretrained, pretrained_file=pretrained_file,
                                           num_classes=0, in_chans=in_chans, **dict(backbone_kwargs or {}))
        self.head = nn.Linear(self.backbone.num_features + 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)   # starts at the training mean
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def forward(self, x, male):
        f = torch.cat([self.backbone(x), male.reshape(-1, 1).to(x.dtype)], dim=1)
        return self.age_mean + self.age_sd * self.head(f).squeeze(1)


def build(cfg, age_mean: float = 120.0, age_sd: float = 50.0, pretrained: bool | None = None) -> Baseline:
    return Baseline(cfg["backbone"], pretrained=cfg["pretrained"] if pretrained is None else pretrained,
                    pretrained_file=cfg["pretrained_file"], backbone_kwargs=cfg["backbone_kwargs"],
                    age_mean=age_mean, age_sd=age_sd)


def build_final(cfg) -> Baseline:
    return build(cfg, pretrained=False)


def final_pipeline(cfg, df=None) -> tuple[str, int, dict]:
    """The whole radiograph letterboxed to `cfg.size` (nothing is learned from `df`)."""
    return "plain", int(cfg["size"]), {}


def fit(cfg, images: dict, df, seed: int | None = None, progress: bool = False):
    """Train on `images['train']` (uint8 (N, 1, H, W) aligned with `df[df.split == 'train']`), monitor
    'validation': L1 loss, AdamW one-cycle at `cfg.lr`. Returns the fastai Learner."""
    import contextlib
    from bac import train
    seed = cfg["seed"] if seed is None else seed
    train.seed_everything(seed)
    ages = df[df.split == "train"].boneage
    model = build(cfg, age_mean=float(ages.mean()), age_sd=float(ages.std(ddof=0)) or 1.0)
    dls = train.dataloaders(images, df, bs=cfg["bs"], augment=train.make_augment(**cfg["augment"]), seed=seed,
                            cfg=cfg)
    learn = train.learner(dls, model, cfg=cfg, wd=cfg["wd"], seed=seed)
    with learn.no_logging(), (contextlib.nullcontext() if progress else learn.no_bar()):
        learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
    return learn


def fit_final(cfg, df, progress: bool = False) -> Baseline:
    """The baseline on `df`'s 'train' rows (monitoring 'validation'); returned in eval mode."""
    from bac import preprocess
    pipeline, size, params = final_pipeline(cfg, df)
    fit_df = df[df.split.isin(["train", "validation"])]
    images = preprocess.prepare_splits(fit_df, pipeline, size, workers=cfg["workers"], progress=progress,
                                       device=cfg.get("device", "auto"), **params)
    return fit(cfg, images, fit_df, progress=progress).model.eval()


# ------------------------------------------------------------------------------------------ settings, registry
# No paper: our control. full: an ImageNet ResNet-50 at 512 px (the papers' CNN class and resolution), AdamW
# one-cycle lr 1e-3, wd 1e-4, 50 epochs, batch 32, mild affine/intensity augmentation, on the official split.
_STANDIN = "the paper stand-ins' narrow ResNet-10t from scratch (no ImageNet weights offline; a CPU budget)"
SETTINGS = Settings(
    full=dict(split="official", backbone="resnet50", backbone_kwargs={}, pretrained=True, pretrained_file="",
              size=512, lr=1e-3, wd=1e-4, epochs=50, bs=32,
              augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1)),
    smoke=because(_STANDIN, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128)), pretrained=False)
    | because("CI: 64 px, one epoch", size=64, epochs=1, bs=16, lr=3e-3, augment={}),
    demo=because(_STANDIN, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16),
                 pretrained=False)
    | because("the other methods' demo budget: 96 px, 8 epochs at lr 3e-3, no augmentation", size=96, epochs=8,
              lr=3e-3, augment={}),
    dry_run=because("a CPU check: no weights downloaded", pretrained=False),
)

METHOD = Method(
    id="baseline", notebook="60_baseline_regression", title="Plain regression CNN (whole image, L1, sex input)",
    citation="no paper: the control of this collection", settings=SETTINGS, split=Split(pool="official"),
    headline=(None, "no paper"), build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final)
