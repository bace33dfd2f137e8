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

from bac.models import pretrained as _pretrained

N_BINS = 240          # months 1..240, one logit each (Eq. 2)
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
    backbone_kw: extra timm arguments (e.g. a smaller Swin for CPU demos).
    """

    def __init__(self, backbone: str = "swin_small_patch4_window7_224", img_size: int = 512, head: str = "ldl",
                 use_sex: bool = True, pretrained: bool = False, pretrained_file: str = "", n_bins: int = N_BINS,
                 dropout: float = 0.0, init_age: float = 120.0, backbone_kw: dict | None = None):
        super().__init__()
        if head not in ("ldl", "regression"):
            raise ValueError(f"head must be 'ldl' or 'regression', not {head!r}")
        self.head_kind, self.use_sex, self.n_bins = head, use_sex, n_bins
        self.backbone, self.nhwc = _features(backbone, img_size, pretrained, pretrained_file, **(backbone_kw or {}))
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
                 backbone_kw: dict | None = None):
        super().__init__()
        body, nhwc = _features(backbone, img_size, pretrained, pretrained_file, **(backbone_kw or {}))
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
    """`cfg.backbones[label]` -> dict(name=timm name, kw=extra timm arguments)."""
    if label not in cfg["backbones"]:
        raise ValueError(f"backbone {label!r} is not in cfg.backbones ({', '.join(cfg['backbones'])}); add it to "
                         f"PAPERS['zheng2024'] in bac/config.py or pick one of those")
    spec = cfg["backbones"][label]
    return dict(name=spec["name"], kw=dict(spec.get("kw", {})), pretrained_file=spec.get("pretrained_file", ""))


def build(cfg, label: str, head: str = "ldl", use_sex: bool = True, pretrained: bool | None = None) -> KDALDLNet:
    """A KDALDL teacher/student (or Table 3's regression variant) with backbone `cfg.backbones[label]`."""
    spec = backbone_spec(cfg, label)
    return KDALDLNet(spec["name"], img_size=cfg["size"], head=head, use_sex=use_sex,
                     pretrained=cfg["pretrained"] if pretrained is None else pretrained,
                     pretrained_file=spec["pretrained_file"], dropout=cfg.get("dropout", 0.0), backbone_kw=spec["kw"])


def build_cnn_baseline(cfg, pretrained: bool | None = None) -> CNNRegressor:
    spec = backbone_spec(cfg, cfg["cnn_baseline"])
    return CNNRegressor(spec["name"], img_size=cfg["size"], pretrained=cfg["pretrained"] if pretrained is None
                        else pretrained, pretrained_file=spec["pretrained_file"], backbone_kw=spec["kw"])


def build_final(cfg) -> KDALDLNet:
    """The architecture of the notebook's final model (the KDALDL student), without weights."""
    return build(cfg, cfg["student"], head="ldl", use_sex=True, pretrained=False)


def final_pipeline(cfg) -> tuple[str, int, dict]:
    """(preprocessing pipeline, input size, pipeline parameters) the final model expects.

    `fit_final` (and notebook 50) store `bac.preprocess.pipeline_params(cfg, df, cfg.pipeline)` (the UNet++
    cache key) in `cfg.pipeline_params` before the model is saved with `bac.predict.save_final(cfg, model)`.
    """
    params = dict(cfg.get("pipeline_params") or {})
    if cfg["pipeline"] == "zheng2024" and not params.get("unetpp"):
        raise ValueError("cfg.pipeline_params has no UNet++ key: set it to bac.preprocess.pipeline_params(cfg, df, "
                         "'zheng2024') (fit_final and notebook 50 do) before saving or using the final model")
    return cfg["pipeline"], int(cfg["size"]), params


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
                    cfg=cfg, wd=cfg["wd"])
    if cfg.get("fp16") and torch.cuda.is_available():
        learn = learn.to_fp16()
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
    returns the student in eval mode.

    Sets `cfg.pipeline_params` (the UNet++ key), which `final_pipeline` (and `bac.predict.save_final`) need.
    """
    from bac import preprocess
    from bac.train import dataloaders, make_augment
    for split in ("train", "validation"):
        if not (df.split == split).any():
            raise ValueError(f"fit_final needs 'train' and 'validation' rows in df.split; it has "
                             f"{sorted(df.split.unique())}: load the data with bac.data.load(cfg, split=...)")
    cfg.pipeline_params = preprocess.pipeline_params(cfg, df, cfg["pipeline"])    # trains the UNet++ once
    fit_df = df[df.split.isin(["train", "validation"])]
    images = {s: preprocess.prepare(fit_df[fit_df.split == s], cfg["pipeline"], cfg["size"],
                                    workers=cfg.get("workers", 1), progress=progress, **cfg.pipeline_params)
              for s in ("train", "validation")}
    dls = dataloaders(images, fit_df, bs=cfg["bs"], augment=make_augment(**cfg["augment"]), seed=cfg["seed"])
    teacher = fit_teacher(cfg, dls)
    return fit_student(cfg, dls, teacher).eval()


class Run:
    """One trained model of the notebook's tables: its name, model, test predictions, MAE and training time."""

    def __init__(self, name, model, pred, mae, seconds):
        self.name, self.model, self.pred, self.mae, self.seconds = name, model, pred, mae, seconds

    def __repr__(self):
        return f"Run({self.name}: test MAE {self.mae:.2f} months, {self.seconds:.0f} s)"


class Experiments:
    """Trains (once) and evaluates on the test split the models the notebook's tables ask for.

    `images`: split -> uint8 (N, C, H, W) aligned with `df[df.split == split]`. Every run starts from
    seed `cfg.seed`; asking for a run twice (e.g. sigma = 14 in Fig. 9 and Table 3) returns the first.
    """

    def __init__(self, cfg, images: dict, df, verbose: bool = True):
        from bac.train import dataloaders, make_augment
        self.cfg, self.images, self.verbose = cfg, images, verbose
        self.test = df[df.split == "test"]
        self.dls = dataloaders(images, df, bs=cfg["bs"], augment=make_augment(**cfg["augment"]), seed=cfg["seed"])
        self.runs: dict[tuple, Run] = {}

    def _fit(self, key: tuple, name: str, fit) -> Run:
        """Train `fit(dls) -> model` once for `key`, then predict the test split."""
        import time
        from bac.metrics import summary
        from bac.train import predict
        if key not in self.runs:
            t0 = time.time()
            model = fit(self.dls)
            pred = predict(model, self.images["test"], self.test.male.values)
            run = Run(name, model, pred, summary(self.test.boneage.values, pred)["mae"], time.time() - t0)
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

    def regression(self, backbone: str | None = None) -> Run:
        """Table 3, row 1: the same network with one output, trained by the MAE."""
        from bac.train import l1_loss
        b = backbone or self.cfg["teacher"]
        return self._fit(("regression", b), f"regression, {b}",
                         self._plain(lambda: build(self.cfg, b, head="regression"), l1_loss))

    def teacher(self, backbone: str | None = None, sigma: float | None = None, lam: float | None = None,
                use_sex: bool = True) -> Run:
        """A teacher (`fit_teacher`): Gaussian labels of width sigma, lambda * MAE + (1 - lambda) * KL (Eq. 6)."""
        c = self.cfg
        b, s, l = backbone or c["teacher"], float(sigma if sigma is not None else c["sigma"]), \
            float(lam if lam is not None else c["lam"])
        name = f"teacher {b}, sigma {s:g}, lambda {l:g}" + ("" if use_sex else ", no sex")
        return self._fit(("teacher", b, s, l, use_sex), name,
                         lambda dls: fit_teacher(c, dls, b, sigma=s, lam=l, use_sex=use_sex))

    def student(self, backbone: str | None = None, tau: float | None = None, teacher: str | None = None,
                use_sex: bool = True) -> Run:
        """A student (`fit_student`) distilled at temperature tau from the main-setting teacher `teacher`."""
        c = self.cfg
        b, t = backbone or c["student"], float(tau if tau is not None else c["tau"])
        teach = self.teacher(teacher, use_sex=use_sex)
        name = f"student {b} <- {teacher or c['teacher']}, tau {t:g}" + ("" if use_sex else ", no sex")
        return self._fit(("student", b, t, teacher or c["teacher"], use_sex), name,
                         lambda dls: fit_student(c, dls, teach.model, b, tau=t, use_sex=use_sex))

    def cnn_baseline(self) -> Run:
        """Fig. 8's plain regression CNN (`cfg.cnn_baseline`), trained by the MAE."""
        from bac.train import l1_loss
        b = self.cfg["cnn_baseline"]
        return self._fit(("cnn", b), f"plain regression CNN, {b}", self._plain(lambda: build_cnn_baseline(self.cfg),
                                                                                l1_loss))

    def table(self):
        """Every run so far: name, test MAE, training seconds, parameters."""
        import pandas as pd
        from bac.train import count_parameters
        return pd.DataFrame([dict(run=r.name, test_mae=r.mae, seconds=r.seconds, parameters=count_parameters(r.model))
                             for r in self.runs.values()])


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
