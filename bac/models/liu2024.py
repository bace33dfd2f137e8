"""2M-Net (Liu et al., QIMS 2024): jigsaw multi-granularity training + spatial and channel self-attention.

Stages are numbered as in the paper: stage 1 = the stem, stages 2-5 = ResNet's K = 4 convolution groups.
- `jigsaw(x, n)` shuffles each image into an n x n puzzle (Noroozi & Favaro 2016; paper Fig. 1).
- `step_plan(queue)` maps each jigsaw step t to the stage it supervises: (T - 1) - t = K - k.
- `NonLocal` (Eq. 1-2, Fig. 4A) and `ChannelAttention` (Eq. 3, Fig. 4B) are the self-attention blocks.
- `TwoMNet` is one per-sex model; `BySex` routes boys and girls to their own models (the paper trains
  on each sex separately). `JigsawSteps` is the fastai callback that runs the T - 1 jigsaw steps of
  each training iteration before fastai's own step on the original image.

Used in: notebooks/40_liu2024_2mnet.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from torch import nn

from bac.config import Settings, because
from bac.models import Method, Split

K = 4                    # convolution groups of ResNet (paper stages 2-5)
PIPELINE = "plain"       # the paper resizes the whole radiograph; no cropping or enhancement

# The paper's MAE (months, RSNA test set) per experiment: (male, female). Table 3-5 and the abstract.
PAPER_MAE = {
    "q1": (5.55, 4.73), "q21": (4.89, 5.11), "q421": (4.64, 4.49), "q8421": (4.76, 4.62),
    "q421+s2": (4.26, 4.27), "q421+s3": (4.03, 4.09), "q421+s4": (4.30, 4.21), "q421+s5": (4.48, 4.42),
    "q421+c4": (4.43, 4.28), "q421+c5": (4.34, 4.19), "q421+c45": (4.29, 4.12), "q421+s3+c45": (3.89, 4.07),
}
PAPER_OVERALL = 3.98         # the combined model over both sexes
PAPER_PARAMS_M = 11.8        # "estimated parameters" of the feature extractor (Table 6)


# ----------------------------------------------------------------------------------------- jigsaw
def jigsaw(x: torch.Tensor, n: int, generator: torch.Generator | None = None, return_perm: bool = False):
    """Shuffle every image of `x` (B, C, H, W) into an n x n jigsaw, a fresh permutation per image.

    Tiles are (H // n) x (W // n); when H or W is not divisible by n the leftover bottom rows and right
    columns stay where they are (as in progressive multi-granularity training). n = 1 returns `x`.
    With `return_perm`, also returns perm (B, n*n): output tile i is input tile perm[b, i] (row-major).
    """
    b, c, h, w = x.shape
    if n < 1 or n > min(h, w):
        raise ValueError(f"jigsaw granularity n={n} must be between 1 and the image side ({h}x{w})")
    if n == 1:
        return (x, torch.zeros(b, 1, dtype=torch.long)) if return_perm else x
    th, tw = h // n, w // n
    perm = torch.stack([torch.randperm(n * n, generator=generator) for _ in range(b)])
    core = x[:, :, :n * th, :n * tw].reshape(b, c, n, th, n, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, th, tw)
    core = core[torch.arange(b)[:, None], perm.to(x.device)]
    core = core.reshape(b, n, n, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * th, n * tw)
    out = x.clone()
    out[:, :, :n * th, :n * tw] = core
    return (out, perm) if return_perm else out


def step_plan(queue) -> list[tuple[int, int | None]]:
    """[(n, stage)] per training step t = 1..T: jigsaw granularity and the supervised paper stage.

    Step t < T supervises convolution group k with (T - 1) - t = K - k, i.e. stage k + 1; the last step
    (the original image, n = 1) predicts from multi-scale features (stage None).
    """
    queue = tuple(int(n) for n in queue)
    T = len(queue)
    if T == 0 or queue[-1] != 1 or any(n < 1 for n in queue):
        raise ValueError(f"input queue {queue} must be positive granularities ending with 1 (the original image), "
                         f"e.g. (4, 2, 1)")
    if T - 1 > K:
        raise ValueError(f"input queue {queue} has {T} steps; ResNet has K={K} groups, so at most {K + 1} steps")
    plan = []
    for t, n in enumerate(queue, start=1):
        k = K - (T - 1) + t          # (T - 1) - t = K - k
        plan.append((n, k + 1 if t < T else None))
    return plan


# ------------------------------------------------------------------------------------ self-attention
class NonLocal(nn.Module):
    """Spatial self-attention (Wang et al. 2018, embedded Gaussian; paper Eq. 1-2, Fig. 4A).

    h_i = sum_j softmax_j(theta(x_i)^T phi(x_j)) g(x_j); theta, phi, g are 1x1 convs to c/2 channels, phi
    and g are max-pooled 2x2 (subsampling); z = W(h) + x with W a 1x1 conv + BN whose weight starts at
    zero, so the block starts as the identity. `keep_attention` stores the last attention (B, HW, HW/4).
    """

    def __init__(self, channels: int, reduction: int = 2, subsample: bool = True):
        super().__init__()
        inner = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.pool = nn.MaxPool2d(2) if subsample else nn.Identity()
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        self.keep_attention, self.attention = False, None

    def forward(self, x):
        b, c, h, w = x.shape
        pool = self.pool if min(h, w) >= 2 else nn.Identity()
        q = self.theta(x).flatten(2).transpose(1, 2)               # (B, HW, c')
        k = pool(self.phi(x)).flatten(2)                           # (B, c', HW')
        v = pool(self.g(x)).flatten(2).transpose(1, 2)             # (B, HW', c')
        attn = torch.softmax(q @ k, dim=-1)                        # f / C(X), Eq. 1-2
        if self.keep_attention:
            self.attention = attn.detach()
        y = (attn @ v).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class ChannelAttention(nn.Module):
    """Channel self-attention with negative correlation (paper Eq. 3, Fig. 4B).

    x_n in R^{hw} is channel n; h_i = sum_j softmax_j(-x_i^T x_j) x_j (channels that are unlike x_i get
    the weight: complementary information); z = gamma * h + x with gamma a learnt scalar starting at 0.
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.flatten(2)                                        # (B, C, HW)
        attn = torch.softmax(-(flat @ flat.transpose(1, 2)), dim=-1)  # exp(-x_i^T x_j) / C(X)
        return x + self.gamma * (attn @ flat).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------- model
def _head(in_features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ELU(), nn.Linear(hidden, 1))


class TwoMNet(nn.Module):
    """One per-sex 2M-Net: ResNet backbone, attention blocks after chosen stages, one head per stage.

    forward(x, male=None, n=1, stage=None): optional input geometry ('crop' = centre crop to `size`, the
    paper's boys; 'resize' = resize to `size`, its girls; 'none'), then an n x n jigsaw, then the backbone
    up to `stage` and that stage's head; stage None = the multi-scale head (pooled features of the
    `multiscale` stages concatenated), which is the prediction at inference. Returns months (B,).
    """

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, pretrained_file: str = "",
                 backbone_kwargs: dict | None = None, in_chans: int = 1, spatial=(3,), channel=(4, 5),
                 multiscale=(3, 4, 5), supervised=(4, 5), hidden: int = 256, geometry: str = "none",
                 size: int | None = None, age_mean: float = 120.0, age_scale: float = 50.0):
        super().__init__()
        from bac.models.pretrained import create
        net = create(backbone, pretrained=pretrained, pretrained_file=pretrained_file, num_classes=0,
                     in_chans=in_chans, **(backbone_kwargs or {}))
        if not all(hasattr(net, a) for a in ("conv1", "layer1", "layer4")):
            raise ValueError(f"backbone {backbone!r} is not a timm ResNet (needs conv1, layer1..layer4)")
        for s in (*spatial, *channel, *multiscale, *supervised):
            if s not in (2, 3, 4, 5):
                raise ValueError(f"stage {s} is not one of the paper's stages 2-5 (the convolution groups)")
        if geometry not in ("none", "crop", "resize") or (geometry != "none" and not size):
            raise ValueError(f"geometry {geometry!r} must be 'none', or 'crop'/'resize' with a size")
        self.geometry, self.size = geometry, size
        self.stages = nn.ModuleList([nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool),
                                     net.layer1, net.layer2, net.layer3, net.layer4])
        width = {s: info["num_chs"] for s, info in enumerate(net.feature_info, start=1)}  # paper stage -> C
        self.attention = nn.ModuleDict()
        for s in (2, 3, 4, 5):
            blocks = ([NonLocal(width[s])] if s in spatial else []) + ([ChannelAttention()] if s in channel else [])
            if blocks:
                self.attention[str(s)] = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({str(s): _head(width[s], hidden) for s in sorted(set(supervised))})
        self.multiscale = tuple(sorted(multiscale))
        self.head = _head(sum(width[s] for s in self.multiscale), hidden)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_scale", torch.tensor(float(age_scale)))

    def prepare_input(self, x):
        if self.geometry == "crop":
            h, w = x.shape[-2:]
            top, left = (h - self.size) // 2, (w - self.size) // 2
            return x[..., top:top + self.size, left:left + self.size]
        if self.geometry == "resize":
            return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def features(self, x, upto: int = 5) -> dict[int, torch.Tensor]:
        """Feature maps after each stage 1..upto (after that stage's attention blocks)."""
        out = {}
        for s in range(1, upto + 1):
            x = self.stages[s - 1](x)
            if str(s) in self.attention:
                x = self.attention[str(s)](x)
            out[s] = x
        return out

    def forward(self, x, male=None, n: int = 1, stage: int | None = None):
        x = jigsaw(self.prepare_input(x), n)
        if stage is not None:
            if str(stage) not in self.heads:
                raise ValueError(f"stage {stage} has no head; build the model with supervised={stage!r} included")
            pooled = self.features(x, stage)[stage].mean((2, 3))
            return self.age_mean + self.age_scale * self.heads[str(stage)](pooled).flatten()
        feats = self.features(x, max(self.multiscale))
        pooled = torch.cat([feats[s].mean((2, 3)) for s in self.multiscale], 1)
        return self.age_mean + self.age_scale * self.head(pooled).flatten()

    def feature_parameters(self) -> int:
        """Parameters of the feature extractor (backbone + attention blocks, no heads): Table 6's count."""
        return sum(p.numel() for m in (self.stages, self.attention) for p in m.parameters())


class BySex(nn.Module):
    """Boys' and girls' models behind the common `model(x, male) -> months` convention."""

    def __init__(self, boys: nn.Module, girls: nn.Module):
        super().__init__()
        self.boys, self.girls = boys, girls

    def forward(self, x, male):
        is_male = male.to(x.device) > 0.5
        out = x.new_zeros(len(x))
        for mask, net in ((is_male, self.boys), (~is_male, self.girls)):
            if mask.any():
                out[mask] = net(x[mask]).to(out.dtype)
        return out


def scaled_l1(model, pred, target):
    """L1 loss (Eq. 4) divided by the model's training SD of age: the same minimiser as the L1 in months, with
    gradients of order 1 (the heads' outputs are multiplied by that SD, which would otherwise scale the lr)."""
    return F.l1_loss(pred.flatten(), target.float().flatten()) / model.age_scale


class JigsawSteps(Callback):
    """Progressive jigsaw training: before fastai's own step on the original image, run steps t < T.

    Each step t shuffles the batch into an n x n jigsaw (a fresh shuffle each iteration), predicts from
    its stage's head and takes an optimiser step on the L1 loss (Eq. 4). `losses` keeps the last ones.
    """
    order = 65   # after ParamScheduler (60), so the jigsaw steps use the scheduled learning rate

    def __init__(self, queue):
        self.plan = step_plan(queue)[:-1]
        self.losses = {}

    def before_batch(self):
        if not self.training or not self.plan:
            return
        x, male = self.learn.xb[0], self.learn.xb[1]
        y = self.learn.yb[0].float().flatten()
        for n, stage in self.plan:
            loss = scaled_l1(self.learn.model, self.learn.model(x, male, n=n, stage=stage), y)
            loss.backward()
            self.learn.opt.step()
            self.learn.opt.zero_grad()
            self.losses[n] = float(loss.detach())


# ------------------------------------------------------------------------------------- experiments
def parse_experiment(name: str) -> dict:
    """'q421+s3+c45' -> dict(queue=(4, 2, 1), spatial=(3,), channel=(4, 5)); single-digit N and stages."""
    parts = name.split("+")
    if not parts[0].startswith("q") or not parts[0][1:].isdigit():
        raise ValueError(f"experiment {name!r} must start with the input queue, e.g. 'q421' or 'q421+s3+c45'")
    out = dict(queue=tuple(int(c) for c in parts[0][1:]), spatial=(), channel=())
    for p in parts[1:]:
        key = {"s": "spatial", "c": "channel"}.get(p[:1])
        if key is None or not p[1:].isdigit():
            raise ValueError(f"experiment {name!r}: part {p!r} must be s<stages> or c<stages>, e.g. s3 or c45")
        out[key] = tuple(int(c) for c in p[1:])
    step_plan(out["queue"])
    return out


def experiment_label(name: str) -> str:
    """Human label, e.g. 'q421+s3+c45' -> '(4, 2, 1) + spatial@3 + channel@4&5'."""
    e = parse_experiment(name)
    text = str(e["queue"]).replace(",)", ")")
    if e["spatial"]:
        text += " + spatial@" + "&".join(map(str, e["spatial"]))
    if e["channel"]:
        text += " + channel@" + "&".join(map(str, e["channel"]))
    return text


def build(cfg, experiment: str, male: bool, age_mean: float = 120.0, age_scale: float = 50.0,
          pretrained: bool | None = None) -> TwoMNet:
    """The per-sex model of `experiment` from the config (boys: crop; girls: resize, as in the paper)."""
    e = parse_experiment(experiment)
    supervised = sorted({s for _, s in step_plan(e["queue"]) if s is not None})
    return TwoMNet(backbone=cfg["backbone"], backbone_kwargs=cfg.get("backbone_kwargs") or {},
                   pretrained=cfg["pretrained"] if pretrained is None else pretrained,
                   pretrained_file=cfg.get("pretrained_file", ""), spatial=e["spatial"], channel=e["channel"],
                   multiscale=tuple(cfg["multiscale"]), supervised=supervised, hidden=cfg["hidden"],
                   geometry=cfg["boys_geometry"] if male else cfg["girls_geometry"], size=cfg["size"],
                   age_mean=age_mean, age_scale=age_scale)


def build_final(cfg) -> BySex:
    """The architecture of the notebook's final model (cfg.final), untrained: load its checkpoint into it."""
    return BySex(build(cfg, cfg["final"], True, pretrained=False), build(cfg, cfg["final"], False, pretrained=False))


def final_pipeline(cfg, df=None) -> tuple[str, int, dict]:
    """(pipeline, size, params) of the images the final model expects: whole image at `resize` pixels."""
    return cfg.get("pipeline", PIPELINE), int(cfg["resize"]), {}


# ----------------------------------------------------------------------------------------- training
def lr_schedule(cfg):
    """The paper's schedule as a fastai function of progress: linear warm-up from `warmup_lr` over
    `warmup_epochs`, then `lr` divided by 10 every `lr_drop_every` epochs (counted from epoch 0)."""
    from bac.train import lr_steps, warmup_then
    epochs = cfg["epochs"]
    drops = [(e / epochs, 0.1 ** i) for i, e in enumerate(range(cfg["lr_drop_every"], epochs, cfg["lr_drop_every"]), 1)]
    sched = lr_steps(cfg["lr"], epochs, drops)
    return warmup_then(sched, cfg["warmup_epochs"] / epochs, cfg["warmup_lr"]) if cfg["warmup_epochs"] else sched


def sex_subset(images: dict, df, male: bool) -> tuple[dict, object]:
    """The images (split -> array aligned with `df` rows of that split) and rows of one sex."""
    keep = {s: (df[df.split == s].male.astype(bool) == male).values for s in images}
    return {s: images[s][keep[s]] for s in images}, df[df.male.astype(bool) == male]


def fit(cfg, experiment: str, male: bool, images: dict, df, progress: bool = False):
    """Train the per-sex model of `experiment` (SGD, the paper's schedule, `JigsawSteps`); returns the Learner.

    `images` maps split -> uint8 array aligned with the rows of `df` in that split (both sexes).
    """
    from functools import partial
    from fastai.callback.schedule import ParamScheduler
    from fastai.optimizer import SGD
    from bac import train
    imgs, rows = sex_subset(images, df, male)
    ages = rows[rows.split == "train"].boneage.values
    if len(ages) == 0:
        raise ValueError(f"no {'male' if male else 'female'} training rows in the table; 2M-Net trains one model "
                         f"per sex, so both sexes must be present in the 'train' split")
    train.seed_everything(cfg.get("seed", 0))
    model = build(cfg, experiment, male, age_mean=float(ages.mean()), age_scale=float(max(ages.std(), 1.0)))
    dls = train.dataloaders(imgs, rows, bs=cfg["bs"], augment=train.make_augment(**cfg["augment"]),
                            seed=cfg.get("seed", 0), cfg=cfg)
    one_cycle = cfg.get("opt", "sgd") == "adamw_one_cycle"
    learn = train.learner(dls, model, loss_func=lambda pred, y: scaled_l1(model, pred, y), cfg=cfg, wd=cfg["wd"],
                          opt_func=None if one_cycle else partial(SGD, mom=cfg["momentum"], decouple_wd=False),
                          cbs=[JigsawSteps(parse_experiment(experiment)["queue"])])
    with learn.no_logging(), (learn.no_bar() if not progress else contextlib.nullcontext()):
        if one_cycle:
            learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
        else:
            learn.fit(cfg["epochs"], lr=cfg["lr"], cbs=[ParamScheduler({"lr": lr_schedule(cfg)})])
    return learn


def prepare_images(cfg, df, splits=("train", "validation", "test"), progress: bool = False) -> dict:
    """split -> uint8 images of `cfg.pipeline` at `cfg.resize` (the models crop/resize to `cfg.size`), cached."""
    from bac import preprocess
    pipeline, size, params = final_pipeline(cfg, df)
    return {s: preprocess.prepare(df[df.split == s], pipeline, size, workers=cfg.get("workers", 1),
                                  progress=progress, device=cfg.get("device", "auto"), **params)
            for s in splits if (df.split == s).any()}


def fit_final(cfg, df, progress: bool = False) -> BySex:
    """The full method (`cfg.final`, the paper's (4, 2, 1) + spatial@3 + channel@4&5) on `df` (any split
    scheme; 'train' rows trained on, 'validation' monitored): one model per sex; returned in eval mode."""
    for split in ("train", "validation"):
        if not (df.split == split).any():
            raise ValueError(f"fit_final needs 'train' and 'validation' rows in df.split; it has "
                             f"{sorted(df.split.unique())}: load the data with bac.data.load(cfg, split=...)")
    fit_df = df[df.split.isin(["train", "validation"])]
    images = prepare_images(cfg, fit_df, ("train", "validation"), progress)
    boys, girls = (fit(cfg, cfg["final"], male, images, fit_df, progress).model for male in (True, False))
    return BySex(boys, girls).eval()


# ------------------------------------------------------------------------------------ visualisation
@torch.no_grad()
def attention_maps(model: TwoMNet, x: torch.Tensor, n_queries: int = 4, stage: int | None = None):
    """Spatial attention of the non-local block for `n_queries` query positions on one image x (1, C, H, W).

    Queries are the brightest feature-grid positions (bone is bright), at least a quarter of the grid apart.
    Returns (image after the model's input geometry (H', W'), [(row, col) of each query on the feature
    grid], maps (n_queries, h', w') on the subsampled key grid, feature grid shape (h, w)).
    """
    blocks = {int(s): b for s, seq in model.attention.items() for b in seq if isinstance(b, NonLocal)}
    if not blocks:
        raise ValueError("this model has no spatial self-attention block (build it with spatial=(3,) or similar)")
    stage = stage or min(blocks)
    block = blocks[stage]
    model.eval()
    block.keep_attention = True
    try:
        img = model.prepare_input(x)
        feats = model.features(img, stage)
    finally:
        block.keep_attention = False
    h, w = feats[stage].shape[-2:]
    hk, wk = (h // 2, w // 2) if min(h, w) >= 2 else (h, w)
    brightness = F.adaptive_avg_pool2d(img[:, :1], (h, w))[0, 0].flatten()
    queries, min_dist = [], max(1.0, min(h, w) / 4)
    for idx in torch.argsort(brightness, descending=True).tolist():
        r, c = divmod(idx, w)
        if all((r - r2) ** 2 + (c - c2) ** 2 >= min_dist ** 2 for r2, c2 in queries):
            queries.append((r, c))
        if len(queries) == n_queries:
            break
    maps = torch.stack([block.attention[0, r * w + c].reshape(hk, wk) for r, c in queries])
    return img[0, 0].cpu(), queries, maps.cpu(), (h, w)


def confusion_years(y_true, y_pred, max_year: int = 19):
    """Counts of (true age in whole years, predicted age in whole years), a (max_year+1)^2 DataFrame."""
    import numpy as np
    import pandas as pd
    t = np.clip(np.floor(np.asarray(y_true, float) / 12), 0, max_year).astype(int)
    p = np.clip(np.floor(np.asarray(y_pred, float) / 12), 0, max_year).astype(int)
    m = np.zeros((max_year + 1, max_year + 1), int)
    np.add.at(m, (p, t), 1)
    years = list(range(max_year + 1))
    return pd.DataFrame(m, index=pd.Index(years, name="predicted (years)"),
                        columns=pd.Index(years, name="true (years)"))


# ------------------------------------------------------------------------------------------ settings, registry
# Experiments are named q<input queue>[+s<spatial stages>][+c<channel stages>] (`parse_experiment`); stages as in
# the paper: 1 = stem, 2-5 = ResNet's groups. Boys: resize to `resize`, centre-crop `size`; girls: resize to `size`
# (the paper's 512/448 and 448). The paper: ImageNet ResNet-18, 448 x 448, SGD momentum 0.9, wd 1e-4, batch 64,
# 130 epochs, warm-up 5 epochs from 0.001, lr 0.0025 divided by 10 every 30 epochs; Tables 3-5 and the combined
# model. Ours where it is silent: the attention head's width (`hidden`), the augmentation ranges.
_NO_WEIGHTS = "no ImageNet weights offline"
_GRID = "the CPU budget: the subset (1) vs (4, 2, 1) vs the full model"
SETTINGS = Settings(
    full=dict(backbone="resnet18", backbone_kwargs={}, pretrained=True, pretrained_file="", pipeline=PIPELINE,
              resize=512, size=448, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5), hidden=256,
              bs=64, epochs=130, lr=0.0025, warmup_epochs=5, warmup_lr=0.001, lr_drop_every=30, opt="sgd",
              momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
              experiments=["q1", "q21", "q421", "q8421", "q421+s2", "q421+s3", "q421+s4", "q421+s5", "q421+c4",
                           "q421+c5", "q421+c45", "q421+s3+c45"],
              final="q421+s3+c45", n_queries=4),
    smoke=because(_NO_WEIGHTS + ": a ResNet-18 stand-in (1 block per group, 16-128 channels) from scratch",
                  pretrained=False,
                  backbone_kwargs=dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), stem_width=16))
    | because("CI: 64 px from 80 px, four batches of one epoch, no warm-up", resize=80, size=64, hidden=64, bs=16,
              epochs=1, max_steps=4, lr=0.02, warmup_epochs=0, warmup_lr=0.002, n_queries=3)
    | because(_GRID, experiments=["q1", "q421", "q421+s3+c45"]),
    demo=because(_NO_WEIGHTS + ": a narrow ResNet-10t (deep stem of width 16, 16-128 channels) from scratch; the "
                 "ResNet-18 stand-in with SGD reached 31.5 months, the ResNet-10t 23.0 (measured)", pretrained=False,
                 backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16))
    | because("AdamW one-cycle lr 3e-3 without augmentation learns in a CPU budget (lr 1e-2: 29.9 months, "
              "measured)", opt="adamw_one_cycle", lr=3e-3, warmup_epochs=0, warmup_lr=0.002, augment={})
    | because("a laptop CPU: 96 px from 112 px, 10 epochs (8: the girls' full model did not learn, 33.9 months)",
              resize=112, size=96, hidden=64, bs=32, epochs=10, n_queries=3)
    | because(_GRID, experiments=["q1", "q421", "q421+s3+c45"]),
    dry_run=because("a CPU check at full size, no weights downloaded: every queue length, the heaviest spatial block, "
                    "the full model", pretrained=False, experiments=["q1", "q8421", "q421+s2", "q421+s3+c45"]),
)

METHOD = Method(
    id="liu2024", notebook="40_liu2024_2mnet", title="2M-Net: jigsaw multi-granularity + self-attention",
    citation="Liu B, Huang Y, Li S, He J, Zhang D. Bone age assessment by multi-granularity and multi-attention "
             "feature encoding. Quant Imaging Med Surg 2024, doi:10.21037/qims-23-806",
    settings=SETTINGS, split=Split(pool="official"), headline=(3.98, "Liu et al. 2024, RSNA test set, abstract"),
    quotes={"Tables 3-5 (male, female)": PAPER_MAE, "overall": {"q421+s3+c45": PAPER_OVERALL}},
    build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final)
