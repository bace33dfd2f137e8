"""Training glue shared by the paper notebooks: datasets of prepared images, fastai Learners, prediction.

Conventions every model follows: `model(x, male)` takes images `x` (B, C, H, W, float, normalised) and
`male` (B,) float 1 = male, 0 = female, and returns the bone age in months (B,), or a tuple whose first
element is that (extra outputs such as distribution logits or auxiliary heads follow). Targets are months.

Used in: notebooks/10_ren2019_regression_cnn.ipynb, 20_li2021_mobilenetv3, 30_chen2022_attention_ldl,
40_liu2024_2mnet, 50_zheng2024_kdaldl, 90_comparison.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import fastai.callback.all  # noqa: F401  (progress bars, schedulers: fit_one_cycle, ParamScheduler)
from fastai.callback.core import Callback, CancelFitException
from torch import nn

MEAN, STD = 0.5, 0.25   # intensity normalisation of uint8 grey images: (x/255 - MEAN) / STD


def age_of(pred):
    """The months prediction of a model output (a tensor, or a tuple/list whose first item it is)."""
    return pred[0] if isinstance(pred, (tuple, list)) else pred


def make_augment(rotate: float = 0, translate: float = 0, scale: float = 0, flip: bool = False,
                 brightness: float = 0, contrast: float = 0, gamma: float = 0):
    """A torchvision v2 pipeline on uint8 (C, H, W) tensors; zeros switch a transform off.

    rotate: max degrees; translate/scale: fractions (0.2 -> +/-20 %); brightness/contrast: factor range
    1 +/- value; gamma: exponent range 1 +/- value.
    """
    from torchvision.transforms import v2
    tfms = []
    if rotate or translate or scale:
        tfms.append(v2.RandomAffine(degrees=rotate, translate=(translate, translate) if translate else None,
                                    scale=(1 - scale, 1 + scale) if scale else None))
    if flip:
        tfms.append(v2.RandomHorizontalFlip())
    if brightness or contrast:
        tfms.append(v2.ColorJitter(brightness=brightness or None, contrast=contrast or None))
    if gamma:
        tfms.append(v2.Lambda(lambda x: v2.functional.adjust_gamma(x, float(np.random.uniform(1 - gamma, 1 + gamma)))))
    return v2.Compose(tfms) if tfms else None


class ArrayDataset(torch.utils.data.Dataset):
    """(image, male, age) from a uint8 array (N, C, H, W) of prepared images, optionally augmented."""

    def __init__(self, images: np.ndarray, ages, male, augment=None):
        if images.ndim == 3:
            images = images[:, None]
        if not (len(images) == len(ages) == len(male)):
            raise ValueError(f"images ({len(images)}), ages ({len(ages)}) and male ({len(male)}) differ in length")
        self.images, self.augment = images, augment
        self.ages = torch.as_tensor(np.asarray(ages, dtype=np.float32))
        self.male = torch.as_tensor(np.asarray(male, dtype=np.float32))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        if self.augment is not None:
            x = self.augment(x)
        return normalize(x), self.male[i], self.ages[i]


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - MEAN) / STD


def dataloaders(images: dict, table, bs: int = 32, augment=None, seed: int = 0, device=None, num_workers: int = 0):
    """fastai DataLoaders (train shuffled + augmented, validation plain) yielding (image, male) -> age.

    `images` maps split name -> uint8 array aligned with `table[table.split == name]` rows.
    """
    from fastai.data.core import DataLoaders
    sets = {}
    for split in ("train", "validation"):
        rows = table[table.split == split]
        sets[split] = ArrayDataset(images[split], rows.boneage.values, rows.male.values,
                                   augment if split == "train" else None)
    torch.manual_seed(seed)
    dls = DataLoaders.from_dsets(sets["train"], sets["validation"], bs=bs, num_workers=num_workers,
                                 device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")),
                                 drop_last=len(sets["train"]) > bs)
    reseed(dls, seed)
    return dls


def reseed(dls, seed: int) -> None:
    """Give every loader of `dls` its own shuffling generator seeded by `seed`. fastai seeds a loader's
    generator from Python's global `random` when the loader is built, which nothing seeds at start-up: the
    shuffling order (and every number trained from it) would change from one process to the next."""
    import random
    for dl in dls.loaders:
        dl.rng = random.Random(seed)


def keras_adam(beta2: float = 0.999):
    """fastai's Adam with Keras's defaults (beta2 0.999, eps 1e-7, no weight decay unless the Learner sets one),
    for the papers that trained in Keras (Ren 2019; Chen 2022, whose released code sets beta_2=0.999). fastai's
    own default beta2 (`sqr_mom`) is 0.99."""
    from functools import partial
    from fastai.optimizer import Adam
    return partial(Adam, sqr_mom=beta2, eps=1e-7)


def mae_months(pred, target):
    """fastai metric: MAE in months of the age prediction."""
    return (age_of(pred).flatten() - target.flatten()).abs().mean()


def l1_loss(pred, target):
    return nn.functional.l1_loss(age_of(pred).flatten(), target.flatten())


class MaxSteps(Callback):
    """Stop training after `n` training batches in total (dry runs of the full profile)."""
    order = 99

    def __init__(self, n: int):
        self.n, self.done = n, 0

    def before_fit(self):
        self.done = 0

    def after_batch(self):
        if self.training:
            self.done += 1
            if self.done >= self.n:
                raise CancelFitException()


def learner(dls, model: nn.Module, loss_func=l1_loss, opt_func=None, cbs=None, cfg=None, wd: float | None = None,
            seed: int | None = None):
    """A fastai Learner with the MAE metric, quiet in logs, honouring `cfg.max_steps` for dry runs; its loaders
    shuffle from `seed` (default `cfg.seed`)."""
    from fastai.learner import Learner
    from fastai.optimizer import Adam
    cbs = list(cbs or [])
    if seed is not None or cfg is not None:  # every run shuffles from its seed, whatever used these loaders before
        reseed(dls, seed if seed is not None else cfg.get("seed", 0))
    if cfg is not None and cfg.get("max_steps"):
        cbs.append(MaxSteps(cfg["max_steps"]))
    learn = Learner(dls, model, loss_func=loss_func, opt_func=opt_func or Adam, metrics=[mae_months], cbs=cbs,
                    path=Path(tempfile.gettempdir()) / "bac-learner", wd=wd)
    if cfg is not None and int(cfg.get("gpus", 1) or 1) > 1 and torch.cuda.device_count() > 1:
        import fastai.distributed  # noqa: F401  (adds Learner.to_parallel)
        learn.to_parallel()
    return learn


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, male, bs: int = 64, device=None) -> np.ndarray:
    """Months predicted for a uint8 image array (N, C, H, W) and the sex of each image."""
    device = device or next(model.parameters()).device
    model.eval()
    if images.ndim == 3:
        images = images[:, None]
    male = torch.as_tensor(np.asarray(male, dtype=np.float32))
    out = []
    for i in range(0, len(images), bs):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + bs]))).to(device)
        out.append(age_of(model(x, male[i:i + bs].to(device))).float().flatten().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def steps_per_epoch(n: int, bs: int) -> int:
    return max(1, n // bs if n > bs else 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The one place that says what is deterministic. On a CPU every kernel bac uses gives the same result for the
# same inputs and thread count (tests/test_reproducible.py checks it across processes), so a result depends
# on code, data, seed and machine type (threads) only; torch's deterministic mode is not switched on there
# (it changes nothing we use and cost 6-11 % of a training step here). On a GPU, cuDNN autotuning is off and
# torch is asked for deterministic kernels; the few ops that have none (e.g. some scatter/index backward
# passes) warn instead of failing, and their results may differ from run to run in the last digits. Every
# metrics.json records this note.
DETERMINISM = ("CPU: deterministic for a fixed thread count (torch_threads in env); CUDA: cudnn.deterministic, "
               "no autotuning, torch.use_deterministic_algorithms(warn_only=True): ops without a deterministic "
               "CUDA kernel warn and may vary in the last digits")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators: called right before a model is built, so that its
    initial weights, dropout and augmentation depend on the seed only, not on what ran before. Also asks torch
    for deterministic kernels (see `DETERMINISM`)."""
    import os
    import random
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with this
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Use all cores by default (torch picks one thread per physical core, which is right on CPUs)."""
    import os
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def save_checkpoint(model: nn.Module, path, meta: dict | None = None) -> Path:
    """Weights as safetensors (never a pickle) with the metadata (model id, config) as strings."""
    from safetensors.torch import save_file
    import json
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"bac": json.dumps(meta or {}, default=str)})
    return path


def load_checkpoint(model: nn.Module, path) -> dict:
    """Load safetensors weights into `model` (strict: a mismatching model raises); returns the metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    import json
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train it with its notebook first")
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}; use the model the checkpoint was trained with")
    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("bac", "{}"))


def lr_steps(base_lr: float, epochs: int, drops: list[tuple[float, float]]):
    """A fastai schedule: `base_lr` multiplied by factor f from fraction p of training on, for (p, f) in drops."""
    def sched(pos):
        lr = base_lr
        for p, f in drops:
            if pos >= p:
                lr = base_lr * f
        return lr
    return sched


def warmup_then(sched, warmup_frac: float, start_lr: float):
    """Linear warm-up from `start_lr` over the first `warmup_frac` of training, then `sched`."""
    def fn(pos):
        if pos < warmup_frac:
            return start_lr + (sched(warmup_frac) - start_lr) * pos / max(warmup_frac, 1e-9)
        return sched(pos)
    return fn


def is_finite(x) -> bool:
    return all(math.isfinite(float(v)) for v in np.ravel(x))
