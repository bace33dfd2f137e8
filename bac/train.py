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
import weakref
from pathlib import Path

import numpy as np
import torch
import fastai.callback.all  # noqa: F401  (progress bars, schedulers: fit_one_cycle, ParamScheduler)
from fastai.callback.core import Callback, CancelFitException
from fastai.data.core import ItemTransform, Pipeline, TfmdDL
from fastai.torch_core import to_device
from torch import nn

MEAN, STD = 0.5, 0.25   # intensity normalisation of uint8 grey images: (x/255 - MEAN) / STD


def age_of(pred):
    """The months prediction of a model output (a tensor, or a tuple/list whose first item it is)."""
    return pred[0] if isinstance(pred, (tuple, list)) else pred


def make_augment(rotate: float = 0, translate: float = 0, scale: float = 0, flip: bool = False,
                 brightness: float = 0, contrast: float = 0, gamma: float = 0):
    """A torchvision v2 pipeline on uint8 (C, H, W) tensors; zeros switch a transform off.

    rotate: max degrees; translate/scale: fractions (0.2 -> +/-20 %); brightness/contrast: factor range
    1 +/- value; gamma: exponent range 1 +/- value. `BatchAugment.of` reads its parameters back to run the same
    transforms on whole batches on the device.
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
        tfms.append(RandomGamma(gamma))
    return v2.Compose(tfms) if tfms else None


class RandomGamma(nn.Module):
    """Gamma correction of a uint8 image with an exponent drawn from U(1 - gamma, 1 + gamma) by numpy's global
    generator (as `make_augment` always drew it)."""

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2
        return v2.functional.adjust_gamma(x, float(np.random.uniform(1 - self.gamma, 1 + self.gamma)))


class BatchAugment:
    """`make_augment`'s transforms on a whole float batch (B, C, H, W, grey levels 0..255) on its own device, each
    sample with its own parameters, drawn from a generator on that device seeded by `seed` (`reseed`).

    Ranges are (low, high): `degrees` rotation, `scale` zoom, `brightness`/`contrast` factors, `gamma` exponent;
    `translate` (x, y) max shifts as fractions of the width/height; `flip` the probability of a horizontal flip.
    Differences from the per-image pipeline (same distributions otherwise): bilinear instead of nearest
    resampling, sub-pixel shifts, no rounding to uint8 between steps, brightness always before contrast (the two
    commute up to clipping). A transform whose range is the identity is skipped, so all-zero settings change
    nothing. Build it from a pipeline with `BatchAugment.of(make_augment(...))`.
    """

    def __init__(self, degrees=(0.0, 0.0), translate=(0.0, 0.0), scale=(1.0, 1.0), flip: float = 0.0,
                 brightness=(1.0, 1.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0), seed: int = 0):
        self.degrees, self.translate, self.scale = tuple(degrees), tuple(translate), tuple(scale)
        self.flip, self.brightness, self.contrast, self.gamma = float(flip), tuple(brightness), tuple(contrast), \
            tuple(gamma)
        self.reseed(seed)

    @classmethod
    def of(cls, augment, seed: int = 0) -> "BatchAugment | None":
        """The batch version of a per-image pipeline (`make_augment`, or a `v2.Compose` of its transforms and
        multiplicative brightness modules with `lo`/`hi` such as `ren2019.Brightness`); None for None."""
        from torchvision.transforms import v2
        if augment is None:
            return None
        kw, todo = {}, [augment]
        while todo:
            t = todo.pop(0)
            if isinstance(t, v2.Compose):
                todo = list(t.transforms) + todo
            elif isinstance(t, v2.RandomAffine) and not t.shear:
                kw.update(degrees=t.degrees, translate=t.translate or (0.0, 0.0), scale=t.scale or (1.0, 1.0))
            elif isinstance(t, v2.RandomHorizontalFlip):
                kw["flip"] = t.p
            elif isinstance(t, v2.ColorJitter) and not (t.saturation or t.hue):
                kw.update(brightness=t.brightness or (1.0, 1.0), contrast=t.contrast or (1.0, 1.0))
            elif isinstance(t, RandomGamma):
                kw["gamma"] = (1 - t.gamma, 1 + t.gamma)
            elif hasattr(t, "lo") and hasattr(t, "hi"):
                kw["brightness"] = (t.lo, t.hi)
            else:
                raise ValueError(f"{t!r} has no batch version on the device: use make_augment's transforms, or "
                                 f"batch_augment=False to augment image by image on the CPU")
        return cls(**kw, seed=seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from `seed` (the generator is made on the first batch's device)."""
        self.seed, self._gen = int(seed), None

    def _uniform(self, lo_hi, n: int, device) -> torch.Tensor:
        lo, hi = (float(v) for v in lo_hi)
        return lo + (hi - lo) * torch.rand(n, generator=self._gen, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x, (n, dev) = x.float(), (len(x), x.device)
        if self._gen is None or self._gen.device != dev:
            self._gen = torch.Generator(device=dev).manual_seed(self.seed)
        per = lambda v: v.view(n, 1, 1, 1)  # noqa: E731  (a value per sample, broadcast over C, H, W)
        if self.degrees != (0, 0) or self.translate != (0, 0) or self.scale != (1, 1):
            angle = torch.deg2rad(self._uniform(self.degrees, n, dev))
            tx, ty = (self._uniform((-t, t), n, dev) for t in self.translate)
            x = _affine(x, angle, tx, ty, self._uniform(self.scale, n, dev))
        if self.flip:
            x = torch.where(per(torch.rand(n, generator=self._gen, device=dev) < self.flip), x.flip(-1), x)
        if self.brightness != (1, 1):
            x = (x * per(self._uniform(self.brightness, n, dev))).clamp(0, 255)
        if self.contrast != (1, 1):
            grey = (x * x.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1) if x.shape[1] == 3 else x
            f = per(self._uniform(self.contrast, n, dev))
            x = (f * x + (1 - f) * grey.mean(dim=tuple(range(1, grey.ndim))).view(n, 1, 1, 1)).clamp(0, 255)
        if self.gamma != (1, 1):
            x = 255 * (x / 255).pow(per(self._uniform(self.gamma, n, dev)))
        return x


def _affine(x: torch.Tensor, angle, tx, ty, scale) -> torch.Tensor:
    """Rotate each image of x (B, C, H, W) by `angle` (radians) about its centre, zoom by `scale` and shift by
    (tx * W, ty * H) px (per-sample tensors (B,)); bilinear, zeros outside (as v2.RandomAffine's fill 0)."""
    import torch.nn.functional as F
    h, w = x.shape[-2:]
    c, s = angle.cos() / scale, angle.sin() / scale          # the inverse map: output px -> input px
    m00, m01, m10, m11 = c, s, -s, c
    theta = torch.stack([torch.stack([m00, m01 * h / w, -2 * (m00 * tx + m01 * ty * h / w)], -1),
                         torch.stack([m10 * w / h, m11, -2 * (m10 * tx * w / h + m11 * ty)], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ArrayDataset(torch.utils.data.Dataset):
    """(image, male, age) from a uint8 array (N, C, H, W) of prepared images, optionally augmented; `raw`: the
    image as uint8, not augmented nor normalised (for `DeviceFeed`). The array may be a read-only memmap (its items
    are copied out of it); nothing is written to the array."""

    def __init__(self, images: np.ndarray, ages, male, augment=None, raw: bool = False):
        if images.ndim == 3:
            images = images[:, None]
        if not (len(images) == len(ages) == len(male)):
            raise ValueError(f"images ({len(images)}), ages ({len(ages)}) and male ({len(male)}) differ in length")
        self.images, self.augment, self.raw = images, augment, raw
        self.ages = torch.as_tensor(np.asarray(ages, dtype=np.float32))
        self.male = torch.as_tensor(np.asarray(male, dtype=np.float32))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
        if self.raw:
            return x, self.male[i], self.ages[i]
        if self.augment is not None:
            x = self.augment(x)
        return normalize(x), self.male[i], self.ages[i]


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - MEAN) / STD


class DeviceFeed(ItemTransform):
    """A loader's `after_batch` when batches are augmented on the device: the uint8 images the workers sliced,
    already moved to the device, -> float -> `augment` (a `BatchAugment`; None: none) -> `normalize`."""
    order = 0

    def __init__(self, augment: BatchAugment | None = None):
        super().__init__()
        self.augment = augment

    def encodes(self, b):
        x = b[0].float()
        return (normalize(self.augment(x) if self.augment is not None else x), *b[1:])

    def reseed(self, seed: int) -> None:
        if self.augment is not None:
            self.augment.reseed(seed)


class PersistentLoader(TfmdDL):
    """fastai's loader with worker processes that live as long as the loader (torch's `persistent_workers`).

    fastai 2.8 builds a new torch iterator every epoch, and its workers take the epoch's shuffled order from the
    copy of the loader they were forked with, so it forks them again every epoch (with the prepared images in
    memory, a fork per worker and epoch). Here the order is drawn in this process, as fastai draws it
    (`get_idxs`), and sent to workers forked once, as lists of indices (a torch batch sampler); each batch is
    made as fastai makes it (`do_item`, `do_batch`). Each worker is seeded once (the loader's generator, as
    fastai seeds it: its first epoch is fastai's) and its random stream runs on across epochs. Without workers
    it is fastai's loader."""

    def __iter__(self):
        if self.fake_l.num_workers == 0:
            yield from super().__iter__()
            return
        self.randomize()
        self.before_iter()
        self._order = list(self.get_idxs())
        if getattr(self, "_torch", None) is None:   # (weak references: the workers stop when the loader goes)
            me = weakref.proxy(self)
            self._torch = torch.utils.data.DataLoader(
                _Items(me), batch_sampler=_Batches(me), collate_fn=lambda b: me.do_batch(b),
                num_workers=self.fake_l.num_workers, persistent_workers=True, pin_memory=self.fake_l.pin_memory,
                generator=self.fake_l.generator, worker_init_fn=_worker_init)
            # stop the workers in order when the loader goes: fastai's loaders sit in reference cycles, and torch's
            # iterator left to the cycle collector closes its pipes twice (a reused descriptor of a live loader)
            weakref.finalize(self, _stop_workers, self._torch)
        for b in self._torch:
            if self.device is not None:
                b = to_device(tuple(b) if isinstance(b, list) else b, self.device)
            yield self.after_batch(b)
        self.after_iter()


def _stop_workers(loader) -> None:
    """Shut down the worker processes of a torch DataLoader's persistent iterator, if it has one."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()


class _Items(torch.utils.data.Dataset):
    def __init__(self, dl):
        self.dl = dl

    def __getitem__(self, i):
        return self.dl.do_item(i)


class _Batches:
    """The batches of a `PersistentLoader`'s current epoch, as lists of indices (read in the main process)."""

    def __init__(self, dl):
        self.dl = dl

    def __iter__(self):
        order, bs = self.dl._order, self.dl.bs
        stop = len(order) - len(order) % bs if self.dl.drop_last else len(order)
        return (order[i:i + bs] for i in range(0, stop, bs))

    def __len__(self):
        n, bs = len(self.dl._order), self.dl.bs
        return n // bs if self.dl.drop_last else math.ceil(n / bs)


def _worker_init(worker_id: int) -> None:
    """As fastai seeds a worker: one thread, and every generator from torch's seed for the worker."""
    from fastai.torch_core import set_seed
    torch.set_num_threads(1)
    set_seed(torch.initial_seed())


def feeding(cfg=None, device=None, num_workers: int = 0) -> dict:
    """How `dataloaders` feeds a training: device, worker processes, pinned memory, augmentation on the device.

    With a config: the device `cfg.device`, min(`cfg.loader_workers`, CPU count) workers, pinned memory when
    workers feed a GPU, `cfg.batch_augment`. Without: `device` (default: CUDA if torch sees one), `num_workers`,
    per-image augmentation in the dataset. The workers are forked once per loader (`PersistentLoader`)."""
    import os
    if cfg is not None:
        from bac.env import device_name
        device = device_name(cfg.get("device", "auto"))
        num_workers = min(int(cfg.get("loader_workers", 0) or 0), os.cpu_count() or 1)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return dict(device=device, num_workers=num_workers, pin_memory=bool(num_workers) and device.type == "cuda",
                batch_augment=bool(cfg is not None and cfg.get("batch_augment", False)))


def dataloaders(images: dict, table, bs: int = 32, augment=None, seed: int = 0, device=None, num_workers: int = 0,
                cfg=None):
    """fastai DataLoaders (train shuffled + augmented, validation plain) yielding (image, male) -> age.

    `images` maps split name -> uint8 array (or memmap) aligned with `table[table.split == name]` rows. `augment`:
    a per-image pipeline (`make_augment`). With `cfg`, the feeding follows its settings (`feeding`): its device,
    `cfg.loader_workers` worker processes (their random streams seeded from `seed`, see `reseed`) and, with
    `cfg.batch_augment`, the workers only slice uint8 images, and the device augments whole batches
    (`BatchAugment.of(augment)`, seeded from `seed`) and normalises them (`DeviceFeed`). With no workers and no
    batch augmentation (the CPU profiles) it computes exactly what it did without `cfg`.
    """
    from fastai.data.core import DataLoaders
    feed = feeding(cfg, device, num_workers)
    on_device = feed["batch_augment"]
    sets = {}
    for split in ("train", "validation"):
        rows = table[table.split == split]
        sets[split] = ArrayDataset(images[split], rows.boneage.values, rows.male.values,
                                   augment if split == "train" and not on_device else None, raw=on_device)
    torch.manual_seed(seed)
    dls = DataLoaders.from_dsets(sets["train"], sets["validation"], bs=bs, num_workers=feed["num_workers"],
                                 device=feed["device"], drop_last=len(sets["train"]) > bs, dl_type=PersistentLoader,
                                 **(dict(pin_memory=True) if feed["pin_memory"] else {}))
    if on_device:
        dls.train.after_batch = Pipeline([DeviceFeed(BatchAugment.of(augment, seed))])
        dls.valid.after_batch = Pipeline([DeviceFeed()])
    reseed(dls, seed)
    return dls


def reseed(dls, seed: int) -> None:
    """Give every loader of `dls` its own shuffling generator seeded by `seed`. fastai seeds a loader's
    generator from Python's global `random` when the loader is built, which nothing seeds at start-up: the
    shuffling order (and every number trained from it) would change from one process to the next. Loaders with
    worker processes also get a torch generator seeded by `seed`, from which each epoch's worker seeds are drawn
    (fastai seeds worker k with base + k: per-image augmentation in the workers follows `seed` and the worker
    count), and batch augmentation on the device (`DeviceFeed`) restarts from `seed`."""
    import random
    for dl in dls.loaders:
        dl.rng = random.Random(seed)
        if getattr(dl, "_torch", None) is not None:   # a `PersistentLoader`'s workers start again, seeded anew
            _stop_workers(dl._torch)
        dl._torch = None
        if dl.fake_l.num_workers > 0:   # (without workers the global torch generator is drawn, as it always was)
            dl.fake_l.generator = torch.Generator().manual_seed(seed)
        for tfm in getattr(getattr(dl, "after_batch", None), "fs", []):
            if hasattr(tfm, "reseed"):
                tfm.reseed(seed)


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
    """A fastai Learner with the MAE metric, quiet in logs, honouring `cfg.max_steps` for dry runs and, on a GPU,
    `cfg.amp` and `cfg.channels_last` (`precision_callbacks`); its loaders shuffle from `seed` (default
    `cfg.seed`)."""
    from fastai.learner import Learner
    from fastai.optimizer import Adam
    cbs = list(cbs or [])
    if seed is not None or cfg is not None:  # every run shuffles from its seed, whatever used these loaders before
        reseed(dls, seed if seed is not None else cfg.get("seed", 0))
    if cfg is not None and cfg.get("max_steps"):
        cbs.append(MaxSteps(cfg["max_steps"]))
    if cfg is not None:
        cbs += precision_callbacks(cfg, dls.device)
    learn = Learner(dls, model, loss_func=loss_func, opt_func=opt_func or Adam, metrics=[mae_months], cbs=cbs,
                    path=Path(tempfile.gettempdir()) / "bac-learner", wd=wd)
    if cfg is not None and int(cfg.get("gpus", 1) or 1) > 1 and torch.cuda.device_count() > 1:
        import fastai.distributed  # noqa: F401  (adds Learner.to_parallel)
        learn.to_parallel()
    return learn


AMP_MODES = ("", "bf16", "fp16")


def precision_callbacks(cfg, device) -> list:
    """fastai callbacks for `cfg.amp` (mixed precision: "bf16", "fp16" or "" for fp32) and `cfg.channels_last`
    when training on `device`. Only on CUDA: on a CPU both stay off whatever the config says (autocast there is
    slow and changes the numbers). "bf16" falls back to "fp16" (with a loss scaler) on a GPU without bfloat16."""
    import warnings
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision
    amp = cfg.get("amp", "") or ""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES} ('' = fp32), got {amp!r}")
    if torch.device(device).type != "cuda":
        return []
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        warnings.warn("this GPU has no bfloat16: mixed precision in float16 (amp='fp16') instead")
        amp = "fp16"
    return ([MixedPrecision(amp_mode=amp)] if amp else []) + ([ChannelsLast()] if cfg.get("channels_last") else [])


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
        x = normalize(torch.from_numpy(np.array(images[i:i + bs]))).to(device)   # (a copy: memmaps are read-only)
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
