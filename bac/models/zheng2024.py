"""Zheng et al. 2024, KDALDL: knowledge distillation-based adaptive label distribution learning.

A Swin Transformer with a skip tap after each of its 4 stages (Fig. 4); the feature refinement module
(Fig. 5: every stage map upsampled bilinearly to 1/4 of the input, concatenated, Squeeze-and-Excitation,
global average pooling); sex mapped to 32 units; FC 1024; FC 240 logits z over the months j = 1..240.
The teacher learns from Gaussian label distributions (Eq. 1, width sigma) with
L = lambda * L_MAE + (1 - lambda) * L_KL (Eq. 6); the student replaces the Gaussian by the teacher's
softened distribution softmax(z_t / tau) (Eq. 7), through the `Distill` callback.

Used in: notebooks/50_zheng2024_kdaldl.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import numpy as np
import torch
from fastai.callback.core import Callback
from torch import nn
from torch.nn import functional as F

from bac.config import Settings, because
from bac.models import Method, Split
from bac.models import pretrained as _pretrained

N_BINS = 240          # months 1..240, one logit each (Eq. 2)
PAPER_TAU = {1.0: 4.65, 2.0: 4.45, 3.0: 4.54, 4.0: 4.73}   # Table 6: student MAE (months, RSNA) by tau
SEX_UNITS = 32        # "we map gender to 32 neurons"
HIDDEN = 1024         # the first of the two fully connected layers


# ---- label distributions (Eqs. 1-5, 7) ---------------------------------------------------------------

def age_bins(n_bins: int = N_BINS, device=None) -> torch.Tensor:
    """The ages j = 1..n_bins (months) of the distribution bins."""
    return torch.arange(1, n_bins + 1, dtype=torch.float32, device=device)


def gaussian_labels(age, sigma: float = 14.0, n_bins: int = N_BINS) -> torch.Tensor:
    """Eq. 1: p_ij proportional to exp(-(y_i - j)^2 / (2 sigma^2)), normalised over the bins j = 1..n_bins."""
    age = torch.as_tensor(age, dtype=torch.float32).reshape(-1, 1)
    logp = -(age - age_bins(n_bins, age.device)) ** 2 / (2 * float(sigma) ** 2)
    return torch.softmax(logp, dim=1)


def temperature_softmax(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Eq. 7: softmax(z / tau); tau = 1 is Eq. 2, a larger tau gives a softer distribution."""
    return torch.softmax(logits.float() / tau, dim=-1)


def expected_age(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Eq. 3: y_hat = sum_j j * p_hat_j (months)."""
    return temperature_softmax(logits, tau) @ age_bins(logits.shape[-1], logits.device)


def kl_to(target: torch.Tensor, logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Mean over the batch of KL(target || softmax(logits / tau)) (Eq. 4 without its stray factor j)."""
    return F.kl_div(F.log_softmax(logits.float() / tau, dim=-1), target.float(), reduction="batchmean")


class LDLLoss:
    """Teacher loss, Eq. 6: lambda * MAE(y_hat, y) + (1 - lambda) * KL(Gaussian(y, sigma) || p_hat)."""

    def __init__(self, sigma: float = 14.0, lam: float = 0.5):
        self.sigma, self.lam = sigma, lam

    def __call__(self, pred, target):
        months, logits = pred[0], pred[1]
        target = target.float().flatten()
        mae = (months.flatten() - target).abs().mean()
        kl = kl_to(gaussian_labels(target, self.sigma, logits.shape[-1]), logits)
        return self.lam * mae + (1 - self.lam) * kl


class DistillLoss:
    """Student loss: lambda * MAE + (1 - lambda) * KL(softmax(z_t / tau) || softmax(z_s / tau)).

    `teacher_logits` is filled for each batch by the `Distill` callback. The age in the MAE term is the
    student's own prediction at tau = 1 (as at test time).
    """

    def __init__(self, tau: float = 2.0, lam: float = 0.5):
        self.tau, self.lam, self.teacher_logits = tau, lam, None

    def __call__(self, pred, target):
        if self.teacher_logits is None:
            raise RuntimeError("DistillLoss has no teacher logits: train with cbs=[Distill(teacher)]")
        months, logits = pred[0], pred[1]
        mae = (months.flatten() - target.float().flatten()).abs().mean()
        kl = kl_to(temperature_softmax(self.teacher_logits, self.tau), logits, self.tau)
        return self.lam * mae + (1 - self.lam) * kl


class Distill(Callback):
    """Runs the frozen teacher on each batch and hands its logits to the learner's `DistillLoss`."""
    order = 5

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher

    def before_fit(self):
        if not isinstance(self.learn.loss_func, DistillLoss):
            raise TypeError("Distill needs the learner's loss_func to be a DistillLoss")
        self.teacher.to(self.dls.device).eval().requires_grad_(False)

    def after_pred(self):
        with torch.no_grad():
            self.learn.loss_func.teacher_logits = self.teacher(*self.xb)[1].float()


# ---- the network (Figs. 3-5) -------------------------------------------------------------------------

class FeatureRefinement(nn.Module):
    """Fig. 5: stage maps (B, C_k, h_k, w_k) -> bilinear to (out_h, out_w) -> concat -> SE channel attention.

    Returns the refined map (B, sum C_k, out_h, out_w); the network pools it (global average pooling).
    """

    def __init__(self, channels, rd_ratio: float = 1 / 16):
        super().__init__()
        from timm.layers import SEModule
        self.channels = sum(channels)
        self.se = SEModule(self.channels, rd_ratio=rd_ratio)

    def forward(self, features, out_size) -> torch.Tensor:
        maps = [f if tuple(f.shape[-2:]) == tuple(out_size) else
                F.interpolate(f, size=tuple(out_size), mode="bilinear", align_corners=False) for f in features]
        return self.se(torch.cat(maps, dim=1))


class _LastMap(nn.Module):
    """The last feature map (NCHW) of a timm feature extractor: a Grad-CAM target for CNN regressors."""

    def __init__(self, body: nn.Module, nhwc: bool):
        super().__init__()
        self.body, self.nhwc = body, nhwc

    def forward(self, x):
        f = self.body(x)[-1]
        return f.permute(0, 3, 1, 2) if self.nhwc else f


def _features(backbone: str, img_size: int, pretrained: bool, pretrained_file: str, **kw):
    """A timm feature extractor; Swin models are told the input size (their token grid depends on it)."""
    if "swin" in backbone:
        kw.setdefault("img_size", img_size)
    body = _pretrained.create(backbone, pretrained=pretrained, pretrained_file=pretrained_file, features_only=True,
                              **kw)
    nhwc = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")
    return body, nhwc


def _sex_branch(use_sex: bool):
    return nn.Sequential(nn.Linear(1, SEX_UNITS), nn.ReLU()) if use_sex else None


class KDALDLNet(nn.Module):
    """Teacher/student of KDALDL (Fig. 3): `model(x, male) -> (months, logits)`.

    backbone: a timm name (Swin-T/S/B: 'swin_{tiny,small,base}_patch4_window7_224'; CNNs such as
    'resnet50' work too, using their last 4 levels at strides 4..32). head 'ldl' gives 240 logits and
    y_hat = sum_j j p_hat_j; head 'regression' (Table 3's plain regression) one output (logits = None).
    backbone_kwargs: extra timm arguments (e.g. a smaller Swin for CPU demos).
    """

    def __init__(self, backbone: str = "swin_small_patch4_window7_224", img_size: int = 512, head: str = "ldl",
                 use_sex: bool = True, pretrained: bool = False, pretrained_file: str = "", n_bins: int = N_BINS,
                 dropout: float = 0.0, init_age: float = 120.0, backbone_kwargs: dict | None = None):
        super().__init__()
        if head not in ("ldl", "regression"):
            raise ValueError(f"head must be 'ldl' or 'regression', not {head!r}")
        self.head_kind, self.use_sex, self.n_bins = head, use_sex, n_bins
        self.backbone, self.nhwc = _features(backbone, img_size, pretrained, pretrained_file, **(backbone_kwargs or {}))
        chans = self.backbone.feature_info.channels()
        if len(chans) < 4:
            raise ValueError(f"backbone {backbone!r} has {len(chans)} feature levels; KDALDL taps 4 stages")
        self.levels = list(range(len(chans)))[-4:]      # the 4 deepest levels (strides 4, 8, 16, 32)
        self.refine = FeatureRefinement([chans[i] for i in self.levels])
        self.sex = _sex_branch(use_sex)
        width = self.refine.channels + (SEX_UNITS if use_sex else 0)
        out = n_bins if head == "ldl" else 1
        self.head = nn.Sequential(nn.Linear(width, HIDDEN), nn.ReLU(), nn.Dropout(dropout), nn.Linear(HIDDEN, out))
        if head == "regression":        # start at a typical age, as the LDL head does (uniform p_hat: 120.5)
            nn.init.constant_(self.head[-1].bias, init_age)

    def stage_maps(self, x):
        """The 4 skip taps (Fig. 4) as NCHW maps."""
        if x.shape[1] == 1:             # grey -> 3 channels, as for ImageNet weights
            x = x.expand(-1, 3, -1, -1)
        feats = self.backbone(x)
        feats = [feats[i] for i in self.levels]
        return [f.permute(0, 3, 1, 2) for f in feats] if self.nhwc else feats

    def forward(self, x, male=None):
        refined = self.refine(self.stage_maps(x), (x.shape[-2] // 4, x.shape[-1] // 4))
        v = refined.mean((2, 3))       # global average pooling
        if self.use_sex:
            if male is None:
                raise ValueError("this model uses the sex input: call model(x, male)")
            v = torch.cat([v, self.sex(male.float().reshape(-1, 1).to(v.dtype))], dim=1)
        z = self.head(v)
        if self.head_kind == "regression":
            return z[:, 0], None
        return expected_age(z), z


class CNNRegressor(nn.Module):
    """A plain regression CNN (Fig. 8's Inception-V3 baseline, Ozdemir et al.): GAP features + sex -> months."""

    def __init__(self, backbone: str = "inception_v3", img_size: int = 512, use_sex: bool = True,
                 pretrained: bool = False, pretrained_file: str = "", init_age: float = 120.0,
                 backbone_kwargs: dict | None = None):
        super().__init__()
        body, nhwc = _features(backbone, img_size, pretrained, pretrained_file, **(backbone_kwargs or {}))
        self.body = _LastMap(body, nhwc)
        self.use_sex = use_sex
        self.sex = _sex_branch(use_sex)
        width = body.feature_info.channels()[-1] + (SEX_UNITS if use_sex else 0)
        self.head = nn.Sequential(nn.Linear(width, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))
        nn.init.constant_(self.head[-1].bias, init_age)

    def forward(self, x, male=None):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        v = self.body(x).mean((2, 3))
        if self.use_sex:
            v = torch.cat([v, self.sex(male.float().reshape(-1, 1).to(v.dtype))], dim=1)
        return self.head(v)[:, 0]


# ---- building from the config, training, prediction --------------------------------------------------

def backbone_spec(cfg, label: str) -> dict:
    """`cfg.backbones[label]` -> dict(name=timm name, kwargs=extra timm arguments, pretrained_file)."""
    if label not in cfg["backbones"]:
        raise ValueError(f"backbone {label!r} is not in cfg.backbones ({', '.join(cfg['backbones'])}); add it to "
                         f"zheng2024.SETTINGS or pick one of those")
    spec = cfg["backbones"][label]
    return dict(name=spec["name"], kwargs=dict(spec.get("kwargs", {})), pretrained_file=spec.get("pretrained_file", ""))


def build(cfg, label: str, head: str = "ldl", use_sex: bool = True, pretrained: bool | None = None) -> KDALDLNet:
    """A KDALDL teacher/student (or Table 3's regression variant) with backbone `cfg.backbones[label]`."""
    spec = backbone_spec(cfg, label)
    return KDALDLNet(spec["name"], img_size=cfg["size"], head=head, use_sex=use_sex,
                     pretrained=cfg["pretrained"] if pretrained is None else pretrained,
                     pretrained_file=spec["pretrained_file"], dropout=cfg.get("dropout", 0.0),
                     backbone_kwargs=spec["kwargs"])


def build_cnn_baseline(cfg, pretrained: bool | None = None) -> CNNRegressor:
    spec = backbone_spec(cfg, cfg["cnn_baseline"])
    return CNNRegressor(spec["name"], img_size=cfg["size"], pretrained=cfg["pretrained"] if pretrained is None
                        else pretrained, pretrained_file=spec["pretrained_file"], backbone_kwargs=spec["kwargs"])


def build_final(cfg) -> KDALDLNet:
    """The architecture of the notebook's final model (the KDALDL student), without weights."""
    return build(cfg, cfg["student"], head="ldl", use_sex=True, pretrained=False)


def final_pipeline(cfg, df) -> tuple[str, int, dict]:
    """(preprocessing pipeline, input size, pipeline parameters) the final model trained on `df` expects: the
    parameters name the UNet++ fitted on `df` (`bac.preprocess.pipeline_params`: trained once, then cached)."""
    from bac import preprocess
    return cfg["pipeline"], int(cfg["size"]), preprocess.pipeline_params(cfg, df, cfg["pipeline"])


def age_distribution(output):
    """p_hat (B, 240) of a KDALDL output (months, logits); None for the regression head (`bac predict`)."""
    logits = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
    return None if logits is None else temperature_softmax(logits, 1.0)


def train(model: nn.Module, dls, loss_func, cfg, cbs=(), epochs: int | None = None):
    """A fastai Learner (AdamW, weight decay cfg.wd), fit_one_cycle(cfg.epochs, cfg.lr); returns the learner."""
    from functools import partial
    from fastai.optimizer import Adam
    from bac.train import learner
    learn = learner(dls, model, loss_func=loss_func, opt_func=partial(Adam, decouple_wd=True), cbs=list(cbs),
                    cfg=cfg, wd=cfg["wd"])   # (mixed precision on a GPU: cfg.amp)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs or cfg["epochs"], cfg["lr"])
    return learn


def fit_teacher(cfg, dls, backbone: str | None = None, sigma: float | None = None, lam: float | None = None,
                use_sex: bool = True) -> KDALDLNet:
    """A teacher trained from seed `cfg.seed` on Gaussian labels (Eq. 1) by lambda * MAE + (1 - lambda) * KL."""
    from bac.train import seed_everything
    seed_everything(cfg["seed"])
    model = build(cfg, backbone or cfg["teacher"], use_sex=use_sex)
    train(model, dls, LDLLoss(cfg["sigma"] if sigma is None else sigma, cfg["lam"] if lam is None else lam), cfg)
    return model


def fit_student(cfg, dls, teacher: nn.Module, backbone: str | None = None, tau: float | None = None,
                use_sex: bool = True) -> KDALDLNet:
    """A student trained from seed `cfg.seed` on the teacher's softmax(z_t / tau) (Eq. 7) + MAE."""
    from bac.train import seed_everything
    seed_everything(cfg["seed"])
    model = build(cfg, backbone or cfg["student"], use_sex=use_sex)
    train(model, dls, DistillLoss(cfg["tau"] if tau is None else tau, cfg["lam"]), cfg, cbs=[Distill(teacher)])
    return model


def fit_final(cfg, df, progress: bool = False) -> KDALDLNet:
    """The full method on `df` (any split scheme; 'train' rows trained on, 'validation' monitored): the teacher
    `cfg.teacher` (sigma, lambda), then the KDALDL student `cfg.student` (tau), as notebook 50 trains them;
    returns the student in eval mode. Its images come from `final_pipeline(cfg, df)`.
    """
    from bac import preprocess
    from bac.train import dataloaders, make_augment
    for split in ("train", "validation"):
        if not (df.split == split).any():
            raise ValueError(f"fit_final needs 'train' and 'validation' rows in df.split; it has "
                             f"{sorted(df.split.unique())}: load the data with bac.data.load(cfg, split=...)")
    pipeline, size, params = final_pipeline(cfg, df)    # trains the UNet++ once
    fit_df = df[df.split.isin(["train", "validation"])]
    images = {s: preprocess.prepare(fit_df[fit_df.split == s], pipeline, size, workers=cfg.get("workers", 1),
                                    progress=progress, device=cfg.get("device", "auto"), **params)
              for s in ("train", "validation")}
    dls = dataloaders(images, fit_df, bs=cfg["bs"], augment=make_augment(**cfg["augment"]), seed=cfg["seed"], cfg=cfg)
    teacher = fit_teacher(cfg, dls)
    return fit_student(cfg, dls, teacher).eval()


class Experiments:
    """Trains (once) and evaluates on the test split the models the notebook's tables ask for.

    `images`: split -> uint8 (N, C, H, W) aligned with `df[df.split == split]`. Every run starts from
    seed `cfg.seed`; asking for a run twice (e.g. sigma = 14 in Fig. 9 and Table 3) returns the first.
    """

    def __init__(self, cfg, images: dict, df, verbose: bool = True):
        from bac.train import dataloaders, make_augment
        self.cfg, self.images, self.verbose = cfg, images, verbose
        self.test = df[df.split == "test"]
        self.dls = dataloaders(images, df, bs=cfg["bs"], augment=make_augment(**cfg["augment"]), seed=cfg["seed"],
                               cfg=cfg)
        self.runs: dict = {}   # key -> `bac.report.record` (spec = the run's name)

    def _fit(self, key: tuple, name: str, fit):
        """Train `fit(dls) -> model` once for `key`, then predict the test split: the run's record."""
        import time
        from bac.report import record
        from bac.train import predict
        if key not in self.runs:
            t0 = time.time()
            model = fit(self.dls)
            pred = predict(model, self.images["test"], self.test.male.values)
            run = record(name, pred, self.test, time.time() - t0, model, seed=self.cfg["seed"], name=name)
            self.runs[key] = run
            if self.verbose:
                print(f"{name:<48} test MAE {run.mae:6.2f} months  ({run.seconds:.0f} s)")
        return self.runs[key]

    def _plain(self, make, loss):
        from bac.train import seed_everything

        def fit(dls):
            seed_everything(self.cfg["seed"])
            model = make()
            train(model, dls, loss, self.cfg)
            return model
        return fit

    def regression(self, backbone: str | None = None):
        """Table 3, row 1: the same network with one output, trained by the MAE."""
        from bac.train import l1_loss
        b = backbone or self.cfg["teacher"]
        return self._fit(("regression", b), f"regression, {b}",
                         self._plain(lambda: build(self.cfg, b, head="regression"), l1_loss))

    def teacher(self, backbone: str | None = None, sigma: float | None = None, lam: float | None = None,
                use_sex: bool = True):
        """A teacher (`fit_teacher`): Gaussian labels of width sigma, lambda * MAE + (1 - lambda) * KL (Eq. 6)."""
        c = self.cfg
        b, s, l = backbone or c["teacher"], float(sigma if sigma is not None else c["sigma"]), \
            float(lam if lam is not None else c["lam"])
        name = f"teacher {b}, sigma {s:g}, lambda {l:g}" + ("" if use_sex else ", no sex")
        return self._fit(("teacher", b, s, l, use_sex), name,
                         lambda dls: fit_teacher(c, dls, b, sigma=s, lam=l, use_sex=use_sex))

    def student(self, backbone: str | None = None, tau: float | None = None, teacher: str | None = None,
                use_sex: bool = True):
        """A student (`fit_student`) distilled at temperature tau from the main-setting teacher `teacher`."""
        c = self.cfg
        b, t = backbone or c["student"], float(tau if tau is not None else c["tau"])
        teach = self.teacher(teacher, use_sex=use_sex)
        name = f"student {b} <- {teacher or c['teacher']}, tau {t:g}" + ("" if use_sex else ", no sex")
        return self._fit(("student", b, t, teacher or c["teacher"], use_sex), name,
                         lambda dls: fit_student(c, dls, teach.model, b, tau=t, use_sex=use_sex))

    def cnn_baseline(self):
        """Fig. 8's plain regression CNN (`cfg.cnn_baseline`), trained by the MAE."""
        from bac.train import l1_loss
        b = self.cfg["cnn_baseline"]
        return self._fit(("cnn", b), f"plain regression CNN, {b}", self._plain(lambda: build_cnn_baseline(self.cfg),
                                                                                l1_loss))

    def table(self):
        """Every run so far: name, test MAE, SD, training seconds, parameters (`bac.report.records_table`)."""
        from bac.report import records_table
        return records_table(list(self.runs.values()), label="run")


@torch.no_grad()
def predict_distribution(model: KDALDLNet, images: np.ndarray, male, tau: float = 1.0, bs: int = 64):
    """(months (N,), p_hat (N, 240) = softmax(z / tau)) for uint8 images (N, C, H, W)."""
    from bac.train import normalize
    device = next(model.parameters()).device
    model.eval()
    male = torch.as_tensor(np.asarray(male, dtype=np.float32))
    ages, probs = [], []
    for i in range(0, len(images), bs):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + bs]))).to(device)
        months, z = model(x, male[i:i + bs].to(device))
        ages.append(months.float().cpu())
        probs.append(temperature_softmax(z, tau).cpu())
    return torch.cat(ages).numpy(), torch.cat(probs).numpy()


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    """Grad-CAM reshape_transform for timm Swin stage outputs (B, H, W, C)."""
    return t.permute(0, 3, 1, 2)


def cam_target(model: nn.Module, stage: int | None = None):
    """(layer, reshape_transform) for `bac.cam.gradcam`.

    KDALDL: the refined multi-scale map before pooling (stage=None), or Swin stage k (0..3, NHWC, with
    `nhwc_to_nchw`). CNN regressor: its last feature map.
    """
    if isinstance(model, CNNRegressor):
        return model.body, None
    if stage is None:
        return model.refine, None
    layer = getattr(model.backbone, f"layers_{stage}", None)
    if layer is None:
        raise ValueError(f"stage {stage} not found in the backbone (Swin stages are 0..3)")
    return layer, (nhwc_to_nchw if model.nhwc else None)


# ------------------------------------------------------------------------------------------ settings, registry
# `backbones`: label -> dict(name=timm name, kwargs=extra timm arguments[, pretrained_file=local weights]);
# `teacher`/`student`/`cnn_baseline` and the grids name labels from it. Grids: Table 4 `teacher_grid`, Table 5
# `student_grid`, Fig. 9 `sigmas`, the lambda sweep `lambdas`, Table 6 `taus`; a grid value equal to the main
# setting reuses the main model. `sex_ablation`: 'kdaldl' retrains teacher and student without sex, 'teacher'
# only the teacher. `cam_ages`: the four stages of Fig. 7 (months). Paper: Swin-S teacher and student at 512,
# sigma 14, lambda 0.5, tau 2, ImageNet weights. Table 1 (optimiser, lr, epochs, batch, augmentation) was lost in
# the text extraction; ours: AdamW, one-cycle lr 1e-4, wd 0.05, 50 epochs, batch 16, mild affine/intensity
# augmentation, SE reduction 16; mixed precision on a GPU is the common `amp` setting (bf16), as for every paper.
_SWIN_MINI = dict(name="swin_tiny_patch4_window7_224",   # a 4-block Swin, ~0.8 M parameters
                  kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4))
_NO_WEIGHTS = "no ImageNet weights offline"
SETTINGS = Settings(
    full=dict(pipeline="zheng2024", size=512, pretrained=True, clahe=False,
              backbones={"Swin-T": dict(name="swin_tiny_patch4_window7_224", kwargs={}),
                         "Swin-S": dict(name="swin_small_patch4_window7_224", kwargs={}),
                         "Swin-B": dict(name="swin_base_patch4_window7_224", kwargs={}),
                         "ResNet-50": dict(name="resnet50", kwargs={}),
                         "Inception-V3": dict(name="inception_v3", kwargs={})},
              teacher="Swin-S", student="Swin-S", cnn_baseline="Inception-V3", sigma=14.0, lam=0.5, tau=2.0,
              dropout=0.0, lr=1e-4, wd=0.05, epochs=50, bs=16,
              augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1),
              teacher_grid=["Swin-T", "Swin-S", "Swin-B"], student_grid=["Swin-T", "Swin-S", "ResNet-50"],
              sigmas=[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0], lambdas=[0.0, 0.25, 0.5, 0.75, 1.0],
              taus=[1.0, 2.0, 3.0, 4.0], sex_ablation="kdaldl", cam_ages=[18, 84, 144, 192], n_dist=4),
    smoke=because(_NO_WEIGHTS, pretrained=False)
    | because("CI: a Swin-mini (embed 16, one block per stage, window 4) for every Swin and MobileNetV3-Small for "
              "the CNNs, at 64 px, one epoch at a higher lr", size=64, epochs=1, lr=3e-3, wd=0.01, n_dist=3,
              backbones={"Swin-mini": _SWIN_MINI, "MobileNetV3-S": dict(name="mobilenetv3_small_100", kwargs={})},
              teacher="Swin-mini", student="Swin-mini", cnn_baseline="MobileNetV3-S", teacher_grid=["Swin-mini"],
              student_grid=["Swin-mini", "MobileNetV3-S"], sigmas=[10.0, 14.0], lambdas=[0.5, 1.0], taus=[1.0, 2.0]),
    demo=because(_NO_WEIGHTS, pretrained=False)
    | because("the Swin-mini does not learn from scratch in a CPU budget (10 epochs: 32.0 months vs the mean "
              "predictor's 33.2; a ResNet-10t in the same KDALDL head 13.4, measured): teacher, student and CNN "
              "baseline are a narrow ResNet-10t, the Swin-mini is Table 4's second row",
              backbones={"Swin-mini": _SWIN_MINI,
                         "ResNet-10t": dict(name="resnet10t", kwargs=dict(channels=(16, 32, 64, 128), stem_width=16))},
              teacher="ResNet-10t", student="ResNet-10t", cnn_baseline="ResNet-10t",
              teacher_grid=["ResNet-10t", "Swin-mini"])
    | because("global equalisation turns the phantoms' flat soft tissue into noise (see li2021)", clahe=True)
    | because("a laptop CPU: 96 px, 6 epochs at lr 3e-3, no augmentation", size=96, epochs=6, bs=32, lr=3e-3, wd=0.01,
              augment={})
    | because("the 30-minute budget: Table 3, tau 1 and 2, the sex ablation of the teacher", student_grid=[],
              sigmas=[], lambdas=[], taus=[1.0, 2.0], sex_ablation="teacher"),
    dry_run=because(_NO_WEIGHTS, pretrained=False)
    | because("a CPU check at 512 px: Table 3's three models, a CNN student and the CNN baseline",
              teacher_grid=["Swin-S"], student_grid=["Swin-S", "ResNet-50"], sigmas=[14.0], lambdas=[0.5], taus=[2.0],
              sex_ablation="none"),
)

METHOD = Method(
    id="zheng2024", notebook="50_zheng2024_kdaldl",
    title="KDALDL: Swin multi-scale + label distribution + distillation",
    citation="Zheng H-D, Yu L, Lu Y-T, Zhang W-H, Yu Y-J. KDALDL: Knowledge Distillation-Based Adaptive Label "
             "Distribution Learning Network for Bone Age Assessment. IEEE Access 12:17679-17689 (2024), "
             "doi:10.1109/ACCESS.2024.3358821",
    settings=SETTINGS, split=Split(pool="official"), headline=(4.45, "Zheng et al. 2024, RSNA test set, conclusion"),
    quotes={"Table 6": PAPER_TAU},
    build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final,
    age_distribution=age_distribution, cam_target=cam_target)
