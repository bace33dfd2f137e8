"""Ren et al. 2019: regression CNN on coarse/fine attention maps with the dynamic attention loss, and RAM.

Network (Sec. II.C): a timm backbone (Inception-V3 in the paper) with `in_chans` = 2 (coarse attention map
= hand crop after histogram matching, fine map = its Hessian filtering; `bac.preprocess` pipeline 'ren2019'),
global average pooling to 2,048 features, sex (1 male, 0 female) concatenated, two fully connected layers of
1,024 with BN, ReLU and dropout, one output. The output is months = mu + sigma * z with the training set's
mean and SD (buffers; the paper does not say how it scales its target), so a fresh model starts at the mean.
Loss: AMAE (Eq. 2) with a fixed or a scheduled exponent k (`AttentionMAE`, `DynamicK`). RAM (Sec. II.D):
`regression_activation_map`.

Used in: notebooks/10_ren2019_regression_cnn.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations


import numpy as np
import torch
from fastai.callback.core import Callback
from torch import nn

from bac.config import Settings, because
from bac.models import Method, Split
from bac.models import pretrained as _pretrained

HIDDEN = 1024                      # width of the two fully connected layers (paper: 1,024)
INIT_STD = 0.001                   # "initialized randomly with a Gaussian distribution (mean 0, SD 0.001)"

# Table III configurations: input (pipeline key of the config) and loss ('mae' | 'fixed' k | 'dynamic' k).
CONFIGS = {
    "S1": dict(attention_input=False, loss="mae"),      # RSNA challenge winner: original image, MAE
    "S2": dict(attention_input=True, loss="mae"),       # + coarse/fine attention maps
    "S3": dict(attention_input=False, loss="fixed"),    # + attention loss, fixed k
    "S4": dict(attention_input=False, loss="dynamic"),  # + dynamic attention loss
    "S5": dict(attention_input=True, loss="dynamic"),   # the full method
}

# The paper's numbers (RSNA data, its own split and settings), quoted for the tables: (MAE, SD) in months.
PAPER_TABLE2 = {  # backbone: (parameters, MAE, SD); attention input and dynamic loss disabled
    "Inception-V3": (24_850_841, 6.0, 6.1), "Inception-V4": (43_713_305, 6.6, 6.5),
    "ResNet-50": (26_611_385, 6.4, 6.6), "ResNet-101": (45_682_297, 6.6, 6.6),
    "DenseNet-121": (9_090_297, 6.5, 6.4), "DenseNet-161": (29_925_593, 6.2, 6.1),
}
TIMM_NAMES = {"Inception-V3": "inception_v3", "Inception-V4": "inception_v4", "ResNet-50": "resnet50",
              "ResNet-101": "resnet101", "DenseNet-121": "densenet121", "DenseNet-161": "densenet161"}
PAPER_TABLE3 = {  # configuration: (MAE, SD, p of the paired t-test vs S5)
    "S1": (6.0, 6.1, 1.43e-6), "S2": (5.8, 5.9, 8.22e-5), "S3": (5.5, 5.8, 9.59e-3), "S4": (5.3, 5.3, 4.77e-2),
    "S5": (5.2, 5.1, None),
}
# Table III lower half: per sex, the six age bands [0,3) ... [15,18] years (bac.metrics.BAND_NAMES).
PAPER_TABLE3_N = {"male": (11, 58, 161, 173, 138, 33), "female": (13, 36, 83, 179, 300, 63)}
PAPER_TABLE3_BANDS = {
    "male": {
        "S1": ((6.4, 3.2), (8.6, 6.5), (5.7, 4.0), (5.3, 5.6), (5.4, 6.9), (8.4, 4.8)),
        "S2": ((5.6, 5.4), (8.2, 6.6), (5.5, 4.0), (5.6, 4.6), (5.7, 5.1), (5.4, 4.3)),
        "S3": ((5.0, 3.7), (7.6, 5.8), (6.2, 5.3), (4.9, 5.8), (4.7, 4.2), (5.1, 3.7)),
        "S4": ((4.8, 3.3), (6.6, 5.6), (5.6, 5.5), (5.7, 5.8), (5.2, 4.6), (4.8, 3.8)),
        "S5": ((4.4, 3.7), (6.7, 5.9), (5.6, 4.0), (4.8, 5.0), (4.2, 3.9), (4.7, 3.7)),
    },
    "female": {
        "S1": ((7.2, 9.5), (8.4, 7.5), (7.5, 7.8), (5.4, 4.9), (5.2, 6.7), (8.0, 8.6)),
        "S2": ((7.0, 8.0), (7.1, 5.2), (7.4, 6.4), (5.4, 6.7), (4.9, 6.8), (7.5, 8.9)),
        "S3": ((7.1, 7.5), (8.0, 7.0), (7.1, 6.0), (5.2, 7.2), (4.5, 5.7), (6.9, 7.4)),
        "S4": ((6.7, 6.8), (7.1, 6.1), (7.0, 5.8), (5.0, 5.6), (4.1, 4.8), (5.9, 6.9)),
        "S5": ((6.5, 7.7), (7.0, 6.5), (7.0, 5.4), (5.1, 6.0), (4.4, 5.1), (6.0, 6.9)),
    },
}


# ------------------------------------------------------------------------------------------ the loss
def amae(pred: torch.Tensor, target: torch.Tensor, k: float = 1.0, min_age: float = 1.0) -> torch.Tensor:
    """Eq. 2: mean(alpha_i^k |g_i|), alpha_i = |p_i / g_i - 1|; k = 1 gives the MAE (Eq. 1).

    |g_i| is floored at `min_age` months so a zero label cannot divide by zero (RSNA ages start at 1 month).
    """
    p, g = pred.flatten().float(), target.flatten().float()
    g_abs = g.abs().clamp_min(min_age)
    alpha = (p - g).abs() / g_abs
    return (alpha ** k * g_abs).mean()


class AttentionMAE:
    """fastai loss: AMAE of the age output with exponent `k` (set by `DynamicK` during training)."""

    def __init__(self, k: float = 1.0, min_age: float = 1.0):
        self.k, self.min_age = float(k), float(min_age)

    def __call__(self, pred, target):
        from bac.train import age_of
        return amae(age_of(pred), target, self.k, self.min_age)


def k_schedule(k_start: float, end_frac: float = 1.0, k_end: float = 1.0):
    """k(pos) for pos in [0, 1]: linear from `k_start` to `k_end` over the first `end_frac` of training, then
    constant (our choice: the paper only says "start with a high k and gradually reduce it to 1")."""
    if k_start < k_end:
        raise ValueError(f"k_start ({k_start}) must be >= k_end ({k_end}): the dynamic loss lowers k")

    def fn(pos: float) -> float:
        return float(k_start + (k_end - k_start) * min(1.0, max(0.0, pos) / max(end_frac, 1e-9)))
    return fn


class DynamicK(Callback):
    """Sets `learn.loss_func.k = schedule(fraction of training done)` before each training batch."""
    order = 10

    def __init__(self, schedule):
        self.schedule, self.history = schedule, []

    def before_fit(self):
        if not hasattr(self.learn.loss_func, "k"):
            raise TypeError("DynamicK needs a loss with an exponent attribute `k` (use AttentionMAE)")
        self.history = []

    def before_batch(self):
        if self.training:
            self.learn.loss_func.k = self.schedule(self.pct_train)
            self.history.append(self.learn.loss_func.k)

    def after_fit(self):
        self.learn.loss_func.k = self.schedule(1.0)  # evaluate with the final k


# ------------------------------------------------------------------------------------------ the model
class RegressionCNN(nn.Module):
    """Backbone feature maps -> global average pooling -> [features, sex] -> FC-BN-ReLU-dropout x 2 -> months.

    head='mlp' is the paper's; head='linear' (one regression layer on [features, sex]) makes the RAM exact.
    """

    def __init__(self, backbone: str = "inception_v3", in_chans: int = 2, pretrained: bool = False,
                 pretrained_file: str = "", backbone_kwargs: dict | None = None, hidden: int = HIDDEN,
                 dropout: float = 0.5, head: str = "mlp", use_sex: bool = True, age_mean: float = 0.0,
                 age_sd: float = 1.0):
        super().__init__()
        self.backbone = _pretrained.create(backbone, pretrained=pretrained, pretrained_file=pretrained_file,
                                           num_classes=0, global_pool="", in_chans=in_chans,
                                           **dict(backbone_kwargs or {}))
        self.feature_dim = self.backbone.num_features
        self.use_sex = use_sex
        n_in = self.feature_dim + int(use_sex)
        if head == "mlp":
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, 1))
        elif head == "linear":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, 1))
        else:
            raise ValueError(f"head must be 'mlp' (the paper's) or 'linear', got {head!r}")
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature maps F (B, K, h, w), before global pooling."""
        return self.backbone.forward_features(x)

    def regress(self, pooled: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        """Months from the pooled features (B, K) and sex (B,)."""
        if self.use_sex:
            pooled = torch.cat([pooled, male.reshape(-1, 1).to(pooled.dtype)], dim=1)
        return self.head(pooled).squeeze(1) * self.age_sd + self.age_mean

    def forward(self, x: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        return self.regress(self.feature_maps(x).mean(dim=(2, 3)), male)


def init_gaussian(model: nn.Module, std: float = INIT_STD) -> nn.Module:
    """Every conv and linear weight ~ N(0, std), biases 0 (BN layers keep weight 1, bias 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build(cfg, in_chans: int | None = None, backbone: str | None = None, backbone_kwargs: dict | None = None,
          age_mean: float = 0.0, age_sd: float = 1.0, pretrained: bool | None = None) -> RegressionCNN:
    """The model of the config (`backbone`, `backbone_kwargs`, `pretrained`, `dropout`, `init_std`)."""
    model = RegressionCNN(backbone or cfg["backbone"], in_chans=in_chans or cfg.get("in_chans", 2),
                          pretrained=cfg.get("pretrained", False) if pretrained is None else pretrained,
                          pretrained_file=cfg.get("pretrained_file", ""),
                          backbone_kwargs=cfg.get("backbone_kwargs") if backbone_kwargs is None else backbone_kwargs,
                          dropout=cfg.get("dropout", 0.5), age_mean=age_mean, age_sd=age_sd)
    if not (cfg.get("pretrained", False) if pretrained is None else pretrained) and cfg.get("init_std", INIT_STD):
        init_gaussian(model, cfg.get("init_std", INIT_STD))  # init_std None/0: timm's default (He) init
    return model


def build_final(cfg) -> RegressionCNN:
    """The architecture of `checkpoints/final.safetensors` (S5: attention input; weights from the file)."""
    return build(cfg, in_chans=cfg.get("in_chans", 2), pretrained=False)


def final_pipeline(cfg, df) -> tuple[str, int, dict]:
    """(pipeline, input size, pipeline parameters) of the final model trained on `df`, for
    `bac.preprocess.prepare`: the parameters are the hand detector's cache key and the histogram-matching
    reference (`bac.preprocess.pipeline_params`; the detector is trained once, then read from its cache)."""
    from bac import preprocess
    return cfg["pipeline"], int(cfg["size"]), preprocess.pipeline_params(cfg, df, cfg["pipeline"])


def count_parameters(backbone: str, in_chans: int = 2, backbone_kwargs: dict | None = None) -> int:
    """Parameters of RegressionCNN with this backbone, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = RegressionCNN(backbone, in_chans=in_chans, backbone_kwargs=backbone_kwargs)
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ training
class Brightness(nn.Module):
    """Multiply the whole uint8 image (any channel count) by a factor in [lo, hi] ("brightness shifting")."""

    def __init__(self, lo: float = 0.8, hi: float = 1.2):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = float(torch.empty(()).uniform_(self.lo, self.hi))
        return (x.float() * f).clamp(0, 255).to(x.dtype)


def make_augment(rotate: float = 0, translate: float = 0, scale: float = 0, flip: bool = False,
                 brightness: float = 0):
    """Sec. II.C's augmentation on uint8 (C, H, W) with any C (torchvision's ColorJitter takes 1 or 3)."""
    from torchvision.transforms import v2
    from bac.train import make_augment as geometric
    tfms = [t for t in [geometric(rotate=rotate, translate=translate, scale=scale, flip=flip),
                        Brightness(1 - brightness, 1 + brightness) if brightness else None] if t is not None]
    return v2.Compose(tfms) if tfms else None


def loss_and_callbacks(cfg, loss: str):
    """(loss_func, callbacks) of one Table III loss: 'mae' (Eq. 1), 'fixed' (Eq. 2, k = cfg.k_fixed) or
    'dynamic' (Eq. 2, k from cfg.k_start down to 1 over the first cfg.k_end_frac of training)."""
    if loss == "mae":
        return AttentionMAE(1.0), []
    if loss == "fixed":
        return AttentionMAE(cfg["k_fixed"]), []
    if loss == "dynamic":
        return AttentionMAE(cfg["k_start"]), [DynamicK(k_schedule(cfg["k_start"], cfg["k_end_frac"]))]
    raise ValueError(f"loss must be 'mae', 'fixed' or 'dynamic', got {loss!r}")


def fit(cfg, images: dict, df, loss: str = "dynamic", backbone: str | None = None,
        backbone_kwargs: dict | None = None, seed: int | None = None, quiet: bool = True):
    """Train one configuration: Adam at cfg.lr, flat then cosine annealing, the loss of `loss`.

    `images` maps split -> uint8 (N, C, H, W) aligned with `df[df.split == split]`; returns the Learner.
    """
    from bac import train
    seed = cfg["seed"] if seed is None else seed
    train.seed_everything(seed)
    ages = df[df.split == "train"].boneage.to_numpy(float)
    if len(ages) < 2:
        raise ValueError(f"need at least 2 training images, the table has {len(ages)}; check `split`/`limit`")
    model = build(cfg, in_chans=images["train"].shape[1], backbone=backbone, backbone_kwargs=backbone_kwargs,
                  age_mean=float(ages.mean()), age_sd=float(ages.std(ddof=1)) or 1.0)
    dls = train.dataloaders(images, df, bs=cfg["bs"], augment=make_augment(**cfg["augment"]), seed=seed, cfg=cfg)
    loss_func, cbs = loss_and_callbacks(cfg, loss)
    learn = train.learner(dls, model, loss_func=loss_func, cbs=cbs, cfg=cfg, wd=cfg.get("wd", 0.0),
                          opt_func=train.keras_adam(cfg["beta2"]), seed=seed)
    if quiet:
        with learn.no_logging(), learn.no_bar():
            learn.fit_flat_cos(cfg["epochs"], cfg["lr"], pct_start=cfg.get("pct_flat", 0.75))
    else:
        learn.fit_flat_cos(cfg["epochs"], cfg["lr"], pct_start=cfg.get("pct_flat", 0.75))
    return learn


def fit_final(cfg, df, progress: bool = False) -> RegressionCNN:
    """The full method (S5) on `df` (any split scheme; 'train' rows trained on, 'validation' monitored):
    attention input of `cfg.pipeline` at `cfg.size`, dynamic AMAE, `cfg.epochs`; returned in eval mode.

    Its images come from `final_pipeline(cfg, df)` (which `bac.predict.save_final` stores with the weights).
    """
    from bac import preprocess
    for split in ("train", "validation"):
        if not (df.split == split).any():
            raise ValueError(f"fit_final needs 'train' and 'validation' rows in df.split; it has "
                             f"{sorted(df.split.unique())}: load the data with bac.data.load(cfg, split=...)")
    pipeline, size, params = final_pipeline(cfg, df)  # trains the hand detector once
    fit_df = df[df.split.isin(["train", "validation"])]
    images = {s: preprocess.prepare(fit_df[fit_df.split == s], pipeline, size, workers=cfg.get("workers", 1),
                                    progress=progress, device=cfg.get("device", "auto"), **params)
              for s in ("train", "validation")}
    if images["train"].shape[1] != cfg["in_chans"]:
        raise ValueError(f"pipeline {pipeline!r} gives {images['train'].shape[1]} channels, cfg.in_chans is "
                         f"{cfg['in_chans']}: override both (e.g. OVERRIDES='pipeline=plain,in_chans=1')")
    learn = fit(cfg, images, fit_df, loss=CONFIGS["S5"]["loss"], quiet=not progress)
    return learn.model.eval()


# ------------------------------------------------------------------------------------------ RAM
def regression_activation_map(model: RegressionCNN, x: torch.Tensor, male) -> dict:
    """Regression activation maps (Sec. II.D): feature maps weighted by the regression coefficients.

    The coefficients w_i (B, K) are d months / d pooled features of each image, in eval mode. With one
    regression layer (head='linear') they are that layer's weights (times sigma), as in CAM; with the paper's
    two FC layers (BN, ReLU) the head is piecewise linear and w_i are the coefficients of the linear piece the
    image falls in. Returns maps (B, h, w) = sum_k w_ik F_ik, `offset` (B,) and `pred` (B,), with
    pred = maps.mean((1, 2)) + offset exactly (offset: bias, sex and the head's intercept).
    """
    from bac.cam import class_activation_map
    model.eval()
    male = torch.as_tensor(np.asarray(male, dtype=np.float32), device=x.device).reshape(-1)
    with torch.no_grad():
        fmap = model.feature_maps(x)
    with torch.enable_grad():
        pooled = fmap.mean(dim=(2, 3)).detach().requires_grad_(True)
        pred = model.regress(pooled, male)
        (coef,) = torch.autograd.grad(pred.sum(), pooled)
    maps = class_activation_map(fmap, coef, index=torch.arange(len(x)))
    pred = pred.detach()
    return dict(maps=maps, offset=pred - maps.mean(dim=(1, 2)), pred=pred, coef=coef)


def ram_overlay(model: RegressionCNN, images: np.ndarray, male) -> tuple[np.ndarray, np.ndarray]:
    """(RAM upsampled to the input size and scaled to [0, 1] per image, predictions) for uint8 (N, C, H, W)."""
    from bac.cam import normalize_map, upsample
    from bac.train import normalize
    device = next(model.parameters()).device
    x = normalize(torch.from_numpy(np.ascontiguousarray(images))).to(device)
    out = regression_activation_map(model, x, male)
    up = upsample(out["maps"], images.shape[-2:]).cpu().numpy()
    return np.stack([normalize_map(m, 1.0) for m in up]), out["pred"].cpu().numpy()


# ------------------------------------------------------------------------------------------ settings, registry
# Paper: Inception-V3 from scratch (N(0, 0.001) init), Adam lr 0.01, rotation 20 deg, translation 0.2, scaling
# 0.2, flips, brightness 0.8-1.2, random 80/10/10 split without ages > 216 months. Ours where it is silent: input
# 512 px, 100 epochs, batch 32, dropout 0.5, lr flat then cosine (pct_flat), Adam as in Keras (beta2 0.999), no
# weight decay, S3's fixed k = 2, dynamic k linear from 3 to 1 over the first 75 % of training. `configs`: Table
# III rows (CONFIGS); `backbones`: Table II rows, paper name -> [timm name, kwargs], run on the original image with
# the MAE loss (S1's setting; the row whose backbone is `backbone` reuses S1).
_STANDIN = "a narrow ResNet-10 stand-in for every backbone: Inception-V3 is ~20x too slow on 2 CPU cores"
SETTINGS = Settings(
    full=dict(split="ren2019", pipeline="ren2019", plain_pipeline="plain", size=512, in_chans=2,
              backbone="inception_v3", backbone_kwargs={}, pretrained=False, pretrained_file="", init_std=0.001,
              dropout=0.5, lr=0.01, wd=0.0, beta2=0.999, pct_flat=0.75, epochs=100, bs=32, k_fixed=2.0,
              k_start=3.0, k_end_frac=0.75,
              augment=dict(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2),
              configs=["S1", "S2", "S3", "S4", "S5"],
              backbones={"Inception-V3": ["inception_v3", {}], "Inception-V4": ["inception_v4", {}],
                         "ResNet-50": ["resnet50", {}], "ResNet-101": ["resnet101", {}],
                         "DenseNet-121": ["densenet121", {}], "DenseNet-161": ["densenet161", {}]},
              n_hard=5),
    smoke=because(_STANDIN, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128)),
                  backbones={"Inception-V3": ["resnet10t", dict(channels=(16, 32, 64, 128))],
                             "ResNet-50": ["resnet10t", dict(channels=(8, 16, 32, 64))]})
    | because("CI: 64 px, one epoch of 3 batches, no dropout", size=64, epochs=1, bs=16, max_steps=3, dropout=0.0)
    | because("fastai's Adam (beta2 0.99), with which the small profiles' settings were chosen", beta2=0.99)
    | because("CI: a short figure", n_hard=3),
    demo=because(_STANDIN, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16),
                 backbones={"Inception-V3": ["resnet10t", dict(channels=(16, 32, 64, 128), stem_width=16)]})
    | because("a laptop CPU: 96 px, 10 epochs, no dropout", size=96, epochs=10, dropout=0.0)
    | because("the official split, so notebook 90 reuses the model", split="official")
    | because("with N(0, 0.001), lr 0.01 and the paper's augmentation the stand-in does not beat the mean predictor "
              "in a CPU budget (10 epochs: 29 vs 33 months; He init without augmentation 20, measured)",
              init_std=None, lr=3e-3, augment={}, pct_flat=0.3)
    | because("k from 3 lets the youngest dominate a short schedule: S4 29.1 months vs S1 17.1; from 2 over 30 % "
              "23.3; from 1.5 over half 17.3 (measured)", k_start=1.5, k_end_frac=0.5)
    | because("fastai's Adam (beta2 0.99), with which the small profiles' settings were chosen", beta2=0.99)
    | because("the 30-minute budget: Table III's S1, S4, S5", configs=["S1", "S4", "S5"]),
    dry_run=because("a CPU check: a short figure", n_hard=2),
)

METHOD = Method(
    id="ren2019", notebook="10_ren2019_regression_cnn", title="Regression CNN, coarse/fine attention, dynamic loss",
    citation="Ren et al., Regression Convolutional Neural Network for Automated Pediatric Bone Age Assessment From "
             "Hand Radiograph, IEEE JBHI 23(5), 2019, doi:10.1109/JBHI.2018.2876916",
    settings=SETTINGS, split=Split(pool="train", max_age=216.0, held_out=(0.1, 0.1)),
    headline=(5.2, "Ren et al. 2019, RSNA, abstract/conclusion (S5)"),
    quotes={"Table II": PAPER_TABLE2, "Table III": PAPER_TABLE3, "Table III by sex/age": PAPER_TABLE3_BANDS,
            "Table III n": PAPER_TABLE3_N},
    build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final)
