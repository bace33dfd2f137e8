"""Chen et al. 2022: attention-guided region localisation (CAM) and age distribution learning.

Phase I (localisation, no box labels): `CamClassifier` (backbone without top -> GMP or GAP -> FC with 240
outputs, one per month) trained on the softened labels of Eq. 5 (`soft_labels`, `SoftLabelLoss`); its
class activation map (Eq. 2, `attention_maps`) thresholded at tau (Eq. 4) gives a box (`locate`). Fitted
localisers are stored by weight hash (`save_locator`); the registered pipeline 'chen2022-regions' crops the
hand H, Region-1 R1, Region-2 R2 (localised on the image with R1 erased, E) from the full-resolution
radiograph and stacks the requested regions as channels. Each localiser's CAM of an image is computed once and
cached (`cached_map`, `map_dir`; in batches on a GPU: `cache_maps`); `region_images` builds the crops in memory
from the originals and the cached maps, so only the maps and the plain images are stored.
Phase II (regression): `ChenRegressor` (backbone -> conv -> max pool, sex through FC, concatenated, FC) with
the expectation head y = sum_k k p_k (Eq. 6-8) trained with `ChenLoss` = l_MAE + lambda KL(G || p)
(Eq. 9-12), or a one-output regression head trained with l1.
`fit_locators` runs Phase I end to end (stored fits are reused), `fit_final` the whole method; `build_final`,
`final_pipeline` (pipeline 'chen2022-regions', size, JSON params naming the localisers by key),
`age_distribution` and `cam_target` serve `bac.predict`.

Used in: notebooks/30_chen2022_attention_ldl.ipynb, notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bac import cam
from bac.config import Settings, because
from bac.models import Method, Split
from bac.preprocess import letterbox, register

N_AGES = 240                      # one class per month, 1..240 (the paper's T)
REGIONS = ("O", "H", "R1", "E", "R2")

# The paper's numbers (RSNA, its split and settings), quoted for the tables; MAE in months.
PAPER_T1 = {  # Table I: region -> tau -> (mIoU, AP50)
    "hand": {10: (0.576, 0.780), 20: (0.757, 0.995), 30: (0.710, 0.980), 40: (0.695, 0.970), 50: (0.666, 0.920),
             60: (0.633, 0.840), 80: (0.565, 0.685)},
    "carpal": {10: (0.170, 0.0), 20: (0.223, 0.125), 30: (0.545, 0.635), 40: (0.679, 0.880), 50: (0.722, 0.965),
               60: (0.700, 0.945), 80: (0.645, 0.870)},
    "metacarpal": {10: (0.112, 0.0), 20: (0.274, 0.245), 30: (0.521, 0.605), 40: (0.541, 0.695), 50: (0.560, 0.735),
                   60: (0.565, 0.735), 80: (0.553, 0.730)}}
PAPER_T2 = {("vgg19", False): 12.2, ("vgg19", True): 9.3, ("inception_v3", False): 10.9,  # (backbone, ImageNet)
            ("inception_v3", True): 9.2, ("resnet50", False): 11.3, ("resnet50", True): 9.3,
            ("legacy_xception", False): 9.9, ("legacy_xception", True): 8.8}
PAPER_T3 = {(): 8.8, (16,): 7.9, (32,): 7.8, (64,): 7.8, (64, 32): 8.0}   # sex branch layers
PAPER_T4 = {224: 7.8, 336: 7.6, 448: 7.4, 560: 7.3, 720: 7.3}             # input size
PAPER_T5 = {"l1": dict(zip("O H R1 R2 H+R1 R1+R2 O+H+R1 H+R1+E H+R1+R2".split(),   # loss -> regions
                           (7.3, 6.4, 6.1, 7.0, 5.4, 5.6, 5.4, 4.7, 4.8))),
            "ldl": dict(zip("O H R1 R2 H+R1 R1+R2 O+H+R1 H+R1+E H+R1+R2".split(),
                            (6.2, 5.6, 5.3, 6.2, 4.8, 5.1, 4.7, 4.3, 4.3)))}
LOCATORS = ("hand", "r1", "r2")   # the three Phase I classifiers


# ------------------------------------------------------------------------------------ label functions
def ages_axis(n_classes: int = N_AGES, device=None) -> torch.Tensor:
    """The label set k = 1, ..., n_classes (months)."""
    return torch.arange(1, n_classes + 1, dtype=torch.float32, device=device)


def soft_labels(ages, n_classes: int = N_AGES, l: float = 50.0) -> torch.Tensor:
    """Eq. 5: Y_i = max(0, 1 - |i - t| / l) for i = 1..n_classes and true age t (months); (B, n_classes)."""
    t = torch.as_tensor(ages, dtype=torch.float32).reshape(-1, 1)
    return (1 - (ages_axis(n_classes, t.device) - t).abs() / l).clamp(min=0)


def gaussian_distribution(ages, n_classes: int = N_AGES, delta: float = 15.0) -> torch.Tensor:
    """Eq. 11: G_k proportional to exp(-(k - y)^2 / (2 delta^2)), k = 1..n_classes, normalised to sum 1."""
    y = torch.as_tensor(ages, dtype=torch.float32).reshape(-1, 1)
    g = torch.exp(-(ages_axis(n_classes, y.device) - y) ** 2 / (2 * delta ** 2))
    return g / g.sum(1, keepdim=True)


def kl_gaussian_to_p(logits: torch.Tensor, ages, delta: float = 15.0) -> torch.Tensor:
    """Eq. 10 as written: sum_k G_k ln(G_k / p_k) = KL(G || p) with p = softmax(logits); (B,)."""
    g = gaussian_distribution(ages, logits.shape[1], delta).to(logits.device)
    return (torch.special.xlogy(g, g) - g * torch.log_softmax(logits.float(), 1)).sum(1)


def expectation(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7-8: y_hat = sum_k k softmax(z)_k, the expected age in months; (B,)."""
    return (torch.softmax(logits.float(), 1) * ages_axis(logits.shape[1], logits.device)).sum(1)


class SoftLabelLoss:
    """Phase I loss between the 240 outputs and the soft labels of Eq. 5.

    'l1' is what the authors' released code does (mean absolute error on linear outputs; the paper does not
    say); 'bce' treats each output as a logit (binary cross-entropy, targets Y_i in [0, 1]).
    """

    def __init__(self, l: float = 50.0, kind: str = "l1"):
        if kind not in ("l1", "bce"):
            raise ValueError(f"soft-label loss {kind!r} unknown; use 'l1' or 'bce' (config key cls_loss)")
        self.l, self.kind = l, kind

    def __call__(self, pred, target):
        scores = pred[1]
        y = soft_labels(target.flatten(), scores.shape[1], self.l).to(scores.device)
        if self.kind == "bce":
            return nn.functional.binary_cross_entropy_with_logits(scores, y)
        return nn.functional.l1_loss(scores, y)


class ChenLoss:
    """Eq. 12: l = l_MAE + lambda * l_reg with l_reg = KL(G || p) (Eq. 10-11), both averaged over the batch."""

    def __init__(self, lam: float = 0.5, delta: float = 15.0):
        self.lam, self.delta = float(lam), float(delta)

    def __call__(self, pred, target):
        age, logits = pred[0], pred[1]
        loss = (age.flatten() - target.flatten()).abs().mean()
        if self.lam:
            loss = loss + self.lam * kl_gaussian_to_p(logits, target.flatten(), self.delta).mean()
        return loss


# ------------------------------------------------------------------------------------------- models
class Backbone(nn.Module):
    """A timm network without top whose forward gives its last feature map (B, K, h, w); `kwargs` go to
    timm (e.g. narrower `channels` or `output_stride=16` for a cheaper stand-in with a finer map)."""

    def __init__(self, name: str, in_chans: int = 1, pretrained: bool = False, kwargs: dict | None = None,
                 pretrained_file: str = ""):
        super().__init__()
        from bac.models.pretrained import create
        self.net = create(name, pretrained=pretrained, pretrained_file=pretrained_file, in_chans=in_chans,
                          num_classes=0, global_pool="", **(kwargs or {}))
        self.num_features = self.net.feature_info[-1]["num_chs"]

    def forward(self, x):
        return self.net.forward_features(x)


class CamClassifier(nn.Module):
    """Phase I: backbone -> global max (GMP) or average (GAP) pooling -> FC with 240 outputs (Eq. 1).

    forward(x, male) -> (predicted age = argmax class t in months, the 240 scores); `male` is unused.
    """

    def __init__(self, backbone: str = "inception_v3", pool: str = "max", in_chans: int = 1,
                 n_classes: int = N_AGES, pretrained: bool = False, backbone_kwargs: dict | None = None,
                 pretrained_file: str = ""):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool {pool!r} unknown; use 'max' (GMP) or 'avg' (GAP)")
        self.backbone = Backbone(backbone, in_chans, pretrained, backbone_kwargs, pretrained_file)
        self.pool = pool
        self.fc = nn.Linear(self.backbone.num_features, n_classes)

    def scores(self, features):
        pooled = features.amax((2, 3)) if self.pool == "max" else features.mean((2, 3))
        return self.fc(pooled)

    def forward(self, x, male=None):
        s = self.scores(self.backbone(x))
        return s.argmax(1).float() + 1, s

    @torch.no_grad()
    def cam(self, x):
        """(A_t (B, h, w) of Eq. 2 for the predicted class t, t (B,) as a class index 0..239)."""
        f = self.backbone(x)
        t = self.scores(f).argmax(1)
        return cam.class_activation_map(f, self.fc.weight, t), t


class ChenRegressor(nn.Module):
    """Phase II (Fig. 2b): backbone -> conv 3x3 -> global max pooling; sex (+1 male / -1 female) through FC
    layers (`sex_layers`, e.g. (32,)); concatenated; FC to 240 logits -> softmax -> expectation (head
    'expectation', returns (age, logits)), or FC to one output (head 'regression', returns age)."""

    def __init__(self, backbone: str = "legacy_xception", in_chans: int = 3, head: str = "expectation",
                 sex_layers=(32,), conv_channels: int = 256, n_classes: int = N_AGES, pretrained: bool = False,
                 backbone_kwargs: dict | None = None, pretrained_file: str = ""):
        super().__init__()
        if head not in ("expectation", "regression"):
            raise ValueError(f"head {head!r} unknown; use 'expectation' (Eq. 8) or 'regression' (l1)")
        self.backbone = Backbone(backbone, in_chans, pretrained, backbone_kwargs, pretrained_file)
        self.conv = nn.Conv2d(self.backbone.num_features, conv_channels, 3, padding=1)
        layers, width = [], 1
        for n in sex_layers or ():
            layers += [nn.Linear(width, n), nn.ReLU(inplace=True)]
            width = n
        self.sex = nn.Sequential(*layers) if layers else None
        self.head = head
        self.fc = nn.Linear(conv_channels + (width if layers else 0), n_classes if head == "expectation" else 1)
        if head == "regression":  # start where the uniform softmax of the other head starts (mid-range age)
            nn.init.constant_(self.fc.bias, (n_classes + 1) / 2)

    def forward(self, x, male):
        f = self.conv(self.backbone(x)).amax((2, 3))
        if self.sex is not None:
            g = (2 * male.to(f.dtype) - 1).reshape(-1, 1)  # 1 = male, -1 = female (the paper's coding)
            f = torch.cat([f, self.sex(g)], 1)
        z = self.fc(f)
        return (expectation(z), z) if self.head == "expectation" else z[:, 0]


# ------------------------------------------------------------------------------- maps, boxes, crops
@torch.no_grad()
def coarse_maps(model: CamClassifier, images: np.ndarray, device=None) -> np.ndarray:
    """CAMs (Eq. 2) of uint8 images (N, C, S, S) as the network gives them, before upsampling: float32 (N, h, w),
    computed on `device` (default: where the model is)."""
    from bac.train import normalize
    device = device or next(model.parameters()).device
    x = normalize(torch.from_numpy(np.ascontiguousarray(images))).to(device)
    maps, _ = model.eval().cam(x)
    return maps.float().cpu().numpy()


def maps_from_coarse(coarse: np.ndarray, shape, scale: float | str = 100.0) -> np.ndarray:
    """Coarse CAMs (N, h, w) upsampled to `shape` (S, S) on the threshold scale `scale` (`bac.cam.normalize_map`:
    "authors" or min-max to [0, scale]); (N, S, S), as `attention_maps` gives them."""
    up = cam.upsample(torch.from_numpy(np.ascontiguousarray(coarse, np.float32)), tuple(shape)).numpy()
    return np.stack([cam.normalize_map(m, scale) for m in up]) if len(up) else np.zeros((0,) + tuple(shape))


def attention_maps(model: CamClassifier, images: np.ndarray, bs: int = 32, scale: float | str = 100.0) -> np.ndarray:
    """CAMs of uint8 images (N, C, S, S): upsampled to S x S, on the threshold scale `scale`
    (`bac.cam.normalize_map`: "authors" or min-max to [0, scale]); (N, S, S)."""
    out = [maps_from_coarse(coarse_maps(model, images[i:i + bs]), images.shape[-2:], scale)
           for i in range(0, len(images), bs)]
    return np.concatenate(out) if out else np.zeros((0,) + tuple(images.shape[-2:]))


def letterbox_to_original(box, shape, size: int):
    """Map a box in a `size` letterboxed image (`bac.preprocess.letterbox`) back to the original of `shape`."""
    if box is None:
        return None
    h, w = shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    top, left = (size - nh) // 2, (size - nw) // 2
    x0, y0, x1, y1 = box
    out = [int(np.floor(max(0, (x0 - left) * w / nw))), int(np.floor(max(0, (y0 - top) * h / nh))),
           int(np.ceil(min(w, (x1 - left) * w / nw))), int(np.ceil(min(h, (y1 - top) * h / nh)))]
    return out if out[2] > out[0] and out[3] > out[1] else None


def boxes_from_maps(maps, shapes, taus, size: int) -> dict:
    """{tau: [box in original pixels or None]} for each map (Eq. 4 mask -> largest region -> box)."""
    taus = [taus] if np.isscalar(taus) else list(taus)
    return {t: [letterbox_to_original(cam.threshold_box(m, t), sh, size) for m, sh in zip(maps, shapes)]
            for t in taus}


def erase_region(image: np.ndarray, box, seed: int = 0) -> np.ndarray:
    """A copy of `image` with the pixels inside `box` replaced by uniform random values ("erased", E)."""
    out = np.array(image, copy=True)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    patch = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.random.default_rng(seed).integers(0, 256, patch.shape, dtype=np.uint8)
    return out


def crop_region(image: np.ndarray, box, size: int) -> np.ndarray:
    """The full-resolution crop inside `box`, letterboxed to `size` (the whole image when `box` is None)."""
    from bac.preprocess.boxes import crop_to_box
    return letterbox(image if box is None else crop_to_box(image, box)[0], size)


def localization_scores(pred_boxes, gt_boxes) -> dict:
    """mIoU and AP50 = #(IoU > 0.5) / N (Sec. IV-A); a missing prediction scores IoU 0."""
    ious = np.array([0.0 if p is None else cam.box_iou(p, g) for p, g in zip(pred_boxes, gt_boxes)])
    return dict(miou=float(ious.mean()) if len(ious) else float("nan"),
                ap50=float((ious > 0.5).mean()) if len(ious) else float("nan"),
                missed=int(sum(p is None for p in pred_boxes)), n=len(ious))


# ------------------------------------------------------------------ fitted localisers, stored by hash
_LOADED: dict[str, tuple] = {}


def locator_path(key: str) -> Path:
    from bac.data import cache_root
    return cache_root() / "models" / f"chen2022-locator-{key}.safetensors"


def save_locator(model: CamClassifier, arch: dict) -> str:
    """Store a fitted Phase I classifier under its weight hash; returns the hash (the pipelines' cache key)."""
    from bac.train import save_checkpoint
    state = model.state_dict()
    h = hashlib.sha1(json.dumps(arch, sort_keys=True).encode())
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    key = h.hexdigest()[:16]
    path = locator_path(key)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        save_checkpoint(model, tmp, meta=dict(arch=arch, key=key))
        tmp.replace(path)
    return key


def load_locator(key: str) -> tuple[CamClassifier, dict]:
    """(model on CPU in eval mode, arch) of a stored localiser; cached per process."""
    if key in _LOADED:
        return _LOADED[key]
    from safetensors import safe_open
    from bac.train import load_checkpoint
    path = locator_path(key)
    if not path.exists():
        _restore_locator(key)
    if not path.exists():
        raise FileNotFoundError(
            f"Chen 2022 localiser {key} is not at {path}. Run notebooks/30_chen2022_attention_ldl.ipynb (it fits "
            f"and stores the localisers), or copy reports/chen2022/checkpoints/locator-*.safetensors to {path.parent}.")
    with safe_open(str(path), "pt") as f:
        arch = json.loads(f.metadata()["bac"])["arch"]
    model = CamClassifier(**{k: v for k, v in arch.items() if k != "size"})
    load_checkpoint(model, path)
    _LOADED[key] = (model.eval(), arch)
    return _LOADED[key]


def _restore_locator(key: str) -> None:
    """Copy a localiser saved beside a final checkpoint (`final_pipeline`) into the cache, when there is one."""
    import os
    import shutil
    from bac.env import REPO
    for root in (os.environ.get("BAC_OUT_DIR", ""), str(REPO / "reports")):
        src = Path(root) / "chen2022" / "checkpoints" / f"locator-{key}.safetensors" if root else None
        if src is not None and src.exists():
            locator_path(key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, locator_path(key))
            return


# ------------------------------------------------------------ the CAM cache: one map per localiser and image
CAM_BS = 64          # images per batch of the pre-pass on the device (`cache_maps`)
_CODE: list = []     # `bac.data.code_version()`, computed once per process
_MAPPED: set = set()  # (map folder, path, erase) the pre-pass has cached in this process


def map_dir(key: str) -> Path:
    """Where localiser `key`'s CAMs are cached: `<cache>/cams/chen2022-<key>-<code>/<image hash>.npy`, one float32
    (h, w) map before upsampling (`coarse_maps`) per content hash (`bac.preprocess.image_hash`) of the image it
    ran on (the original, or for Region-2 the original with Region-1 erased). A few hundred bytes each: boxes for
    any tau and scale are derived from it (`_locate_one`), crops are not stored."""
    from bac.data import cache_root, code_version
    if not _CODE:
        _CODE.append(hashlib.sha1(code_version().encode()).hexdigest()[:10])
    return cache_root() / "cams" / f"chen2022-{key}-{_CODE[0]}"


def _store(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` (.npy) through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def cached_map(key: str, image: np.ndarray) -> np.ndarray:
    """The coarse CAM (h, w) of localiser `key` on a full-resolution `image` (letterboxed to the localiser's size):
    read from `map_dir(key)`, or computed on the CPU on one thread (as in preprocessing workers) and stored. Inside
    `bac.preprocess.uncached_localisation()` it is computed every time and neither read nor stored."""
    from bac.preprocess import _UNCACHED, image_hash, one_thread
    model, arch = load_locator(key)
    path = map_dir(key) / f"{image_hash(image)}.npy"
    if not _UNCACHED and path.exists():
        return np.load(path)
    with one_thread():
        m = coarse_maps(model, letterbox(image, arch["size"])[None, None])[0]
    if not _UNCACHED:
        _store(path, m)
    return m


def _locate_one(image: np.ndarray, key: str, tau: float, scale: float | str = 100.0):
    """Box (original pixels) of one localiser's thresholded CAM on one full-resolution image, or None; the CAM
    comes from the cache (`cached_map`), so another tau, scale or region set does not run the localiser again."""
    size = load_locator(key)[1]["size"]
    maps = maps_from_coarse(cached_map(key, image)[None], (size, size), scale)
    return boxes_from_maps(maps, [image.shape], tau, size)[tau][0]


def _imap(fn, items: list, workers: int = 1):
    """`fn` over `items`, in order: in `workers` processes of one torch thread each (as `bac.preprocess.prepare`
    runs its pipelines), or here on one thread."""
    from bac.preprocess import _one_thread, one_thread
    if workers > 1 and len(items) > 8:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
            yield from pool.map(fn, items, chunksize=8)
    else:
        with one_thread():
            for item in items:
                yield fn(item)


def _map_input(path: str, size: int, folder: Path, erase: tuple = ()):
    """(content hash, localiser input (1, size, size) or None when its map is cached) of the image at `path`;
    with `erase` = (r1 key, tau_r1, erase_seed, scale), of the image with Region-1 erased."""
    from bac.data.rsna import read_image
    from bac.preprocess import image_hash
    image = read_image(path)
    if erase:
        r1, tau_r1, seed, scale = erase
        image = erase_region(image, _locate_one(image, r1, tau_r1, scale), seed)
    name = image_hash(image)
    return name, None if (folder / f"{name}.npy").exists() else letterbox(image, size)[None]


def cache_maps(paths, key: str, device, bs: int = CAM_BS, workers: int = 1, progress: bool = False,
               erase: tuple = ()) -> int:
    """The pre-pass: the CAMs of localiser `key` on the images at `paths`, in batches of `bs` on `device`, into
    the cache that `cached_map` reads (maps already there are skipped; `workers` processes read and letterbox the
    images). `erase` = (r1 key, tau_r1, erase_seed, scale): on the images with Region-1 erased (Region-2's input).
    Returns how many maps it computed. Batched maps on a GPU equal the per-image CPU maps within float rounding."""
    import copy
    from functools import partial
    from tqdm.auto import tqdm
    model, arch = load_locator(key)
    folder = map_dir(key)
    todo = [p for p in map(str, paths) if (folder, p, erase) not in _MAPPED]
    net, names, batch, done = None, [], [], 0

    def flush():
        nonlocal net, done
        if batch:
            net = net or copy.deepcopy(model).to(device).eval()
            for name, m in zip(names, coarse_maps(net, np.stack(batch), device)):
                _store(folder / f"{name}.npy", m)
            done += len(batch)
            names.clear()
            batch.clear()

    bar = dict(total=len(todo), desc=f"CAMs {key[:8]} on {device}", disable=not progress, leave=False)
    fn = partial(_map_input, size=arch["size"], folder=folder, erase=tuple(erase))
    for name, small in tqdm(_imap(fn, todo, workers), **bar):
        if small is not None and name not in names:
            names.append(name)
            batch.append(small)
        if len(batch) >= bs:
            flush()
    flush()
    _MAPPED.update((folder, p, erase) for p in todo)
    return done


def locate_all(cfg, df, params: dict, device, progress: bool = False) -> None:
    """The CAMs that the region parameters `params` (`region_params`) need, for every row of `df`, computed in
    batches on `device` (`cache_maps`): hand and Region-1 on the originals, then Region-2 on the originals with
    Region-1 erased."""
    paths, scale = list(df["path"]), params.get("scale", 100.0)
    for name in ("hand", "r1"):
        if params.get(name):
            cache_maps(paths, params[name], device, workers=cfg.workers, progress=progress)
    if params.get("r2"):
        cache_maps(paths, params["r2"], device, workers=cfg.workers, progress=progress,
                   erase=(params["r1"], params["tau_r1"], params["erase_seed"], scale))


@register("chen2022-regions")
def regions_pipeline(image: np.ndarray, size: int, regions: str = "R1", hand: str = "", r1: str = "", r2: str = "",
                     tau_hand: float = 20.0, tau_r1: float = 50.0, tau_r2: float = 50.0, erase_seed: int = 0,
                     scale: float | str = 100.0) -> np.ndarray:
    """Regions stacked as channels, e.g. regions='H+R1+R2' -> uint8 (3, size, size).

    O: the whole image; H: hand box of the `hand` localiser; R1: Region-1 box of `r1`; E: the image with R1
    erased; R2: box of `r2` on E, cropped from the original. Localisers are given by their hash
    (`save_locator`); a CAM with no pixel above tau falls back to the whole image.
    """
    boxes: dict = {}

    def box(name):
        if name not in boxes:
            if name == "H":
                boxes[name] = _locate_one(image, hand, tau_hand, scale)
            elif name == "R1":
                boxes[name] = _locate_one(image, r1, tau_r1, scale)
            elif name == "R2":
                boxes[name] = _locate_one(erased(), r2, tau_r2, scale)
        return boxes[name]

    def erased():
        if "E" not in boxes:
            boxes["E"] = erase_region(image, box("R1"), erase_seed)
        return boxes["E"]

    out = []
    for name in regions.split("+"):
        if name not in REGIONS:
            raise ValueError(f"region {name!r} in {regions!r} unknown; use {'+'.join(REGIONS)} joined by '+'")
        if name == "O":
            out.append(letterbox(image, size))
        elif name == "E":
            out.append(letterbox(erased(), size))
        else:
            out.append(crop_region(image, box(name), size))
    return np.stack(out)


def region_params(cfg, regions: str, locators: dict, **taus) -> dict:
    """The parameters of 'chen2022-regions' for `regions`, only those it depends on (so the cache of H does
    not change when the R2 localiser is retrained). `taus` override tau_hand / tau_r1 / tau_r2."""
    names = set(regions.split("+"))
    p = dict(regions=regions)
    get = lambda k: taus.get(k, cfg[k])  # noqa: E731
    if "H" in names:
        p.update(hand=locators["hand"], tau_hand=get("tau_hand"))
    if names & {"R1", "E", "R2"}:
        p.update(r1=locators["r1"], tau_r1=get("tau_r1"))
    if names & {"E", "R2"}:
        p.update(erase_seed=cfg["erase_seed"])
    if "R2" in names:
        p.update(r2=locators["r2"], tau_r2=get("tau_r2"))
    if cfg.get("cam_scale", 100) != 100:
        p.update(scale=cfg["cam_scale"])
    return p


def _regions_one(path: str, size: int, params: dict) -> np.ndarray:
    from bac.data.rsna import read_image
    return regions_pipeline(read_image(path), size, **params)


def region_stack(df, size: int, params: dict, workers: int = 1, progress: bool = False) -> np.ndarray:
    """uint8 (N, C, size, size): 'chen2022-regions' with `params` on each row of `df`, built in memory from the
    originals (`workers` processes) and the cached CAMs; nothing is written but the CAMs it had to compute."""
    from functools import partial
    from tqdm.auto import tqdm
    paths = [str(p) for p in df["path"]]
    out = np.zeros((len(paths), len(params["regions"].split("+")), size, size), np.uint8)
    bar = dict(total=len(paths), desc=f"regions {params['regions']}@{size}", disable=not progress, leave=False)
    for i, a in enumerate(tqdm(_imap(partial(_regions_one, size=size, params=params), paths, workers), **bar)):
        out[i] = a
    return out


def region_images(cfg, df, regions: str, size: int, locators: dict | None = None, progress: bool = False,
                  **taus) -> dict[str, np.ndarray]:
    """{'train', 'validation', 'test'}: uint8 (N, C, size, size) of the stacked `regions`.

    'O' is the plain pipeline's cached images (shared with the other notebooks). Other regions are cropped in
    memory from the full-resolution originals (as the authors' `data/crop_patches.py` does) with boxes from the
    cached CAMs (`cached_map`: one per localiser and image, whatever the regions, tau or size); on a device
    other than the CPU (`cfg.device`) the missing CAMs are first computed there in batches (`locate_all`)."""
    from bac import env
    from bac.preprocess import prepare_splits
    if regions == "O":  # the whole image: share the plain pipeline's cache with the other notebooks
        return prepare_splits(df, "plain", size, workers=cfg.workers, progress=progress)
    params = region_params(cfg, regions, locators or {}, **taus)
    device = env.device_name(cfg.get("device", "auto"))
    if torch.device(device).type != "cpu":
        locate_all(cfg, df, params, device, progress)
    return {s: region_stack(df[df.split == s], size, params, cfg.workers, progress)
            for s in ("train", "validation", "test") if (df.split == s).any()}


def plain_sizes(cfg) -> list[int]:
    """The sizes at which notebook 30 trains on plain images (stored by the 'plain' pipeline): the hand and
    Region-1 localisers, Table V's O, Table II / III's O and Table IV's sizes."""
    sizes = {cfg.hand_size, cfg.r1_size} | ({cfg.size} if "O" in cfg.inputs else set()) | set(cfg.table4_sizes)
    return sorted(int(s) for s in sizes | ({cfg.table2_size} if cfg.table2_backbones or cfg.table3_sex else set()))


def cache_bytes_per_image(cfg, n: int = 3, long_side: int = 2000) -> dict:
    """Chen's disk cache per image under `cfg`'s profile, measured on the files this code writes.

    In a temporary cache: `n` synthetic radiographs (long side `long_side`), three untrained localisers of the
    profile's architecture and sizes, then what notebook 30 prepares for each image: the plain images at
    `plain_sizes`, the Table V inputs, the tau sweep (`sens_taus` on `sens_tau_regions`) and Region-2's input (E)
    on the CPU (the crops stay in memory; the CAMs are stored). Returns dict(per_image: bytes (file sizes) per
    image, per_image_disk: in filesystem blocks, fixed: the localisers' bytes (once per fit), folders: {folder:
    bytes per image}). The `full` profile: `cache_bytes_per_image(bac.config.resolve('full', 'chen2022'))`."""
    import tempfile
    from collections import Counter
    from bac.data import rsna, synth
    from bac.preprocess import prepare
    cfg = cfg.replace(workers=1, device="cpu")
    old = os.environ.get("BAC_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bac-chen-bytes-") as tmp:
        os.environ["BAC_CACHE_DIR"] = str(Path(tmp) / "cache")
        try:
            df = rsna.load_table(synth.make_dataset(Path(tmp) / "data", n, 0, 0, long_side=long_side, workers=1,
                                                    progress=False)).assign(split="train")
            torch.manual_seed(0)
            keys = {}
            for name, pool, size in (("hand", cfg.hand_pool, cfg.hand_size), ("r1", cfg.r1_pool, cfg.r1_size),
                                     ("r2", cfg.r1_pool, cfg.r1_size)):
                arch = dict(backbone=cfg.cls_backbone, pool=pool, in_chans=1, backbone_kwargs=cfg.cls_backbone_kwargs,
                            size=int(size))
                keys[name] = save_locator(CamClassifier(**{k: v for k, v in arch.items() if k != "size"}), arch)
            for size in plain_sizes(cfg):
                prepare(df, "plain", size, progress=False)
            locator_images(cfg, df, "r2", keys)
            for regions in cfg.inputs:
                region_images(cfg, df, regions, cfg.size, keys)
            for regions in cfg.sens_tau_regions if cfg.sens_taus else []:
                for tau in cfg.sens_taus:   # as notebook 30's Fig. 5a sweep
                    region_images(cfg, df, regions, cfg.size, keys,
                                  **{"tau_hand" if regions == "H" else "tau_r1": float(tau)})
            sizes, blocks = Counter(), Counter()
            root = Path(os.environ["BAC_CACHE_DIR"])
            for f in root.rglob("*"):
                if f.is_file():
                    folder = "/".join(f.relative_to(root).parts[:2])
                    sizes[folder] += f.stat().st_size
                    blocks[folder] += f.stat().st_blocks * 512
        finally:
            if old is None:
                del os.environ["BAC_CACHE_DIR"]
            else:
                os.environ["BAC_CACHE_DIR"] = old
    fixed = sum(v for k, v in sizes.items() if k.startswith("models"))
    per = {k: v / n for k, v in sorted(sizes.items()) if not k.startswith("models")}
    return dict(per_image=sum(per.values()), fixed=fixed, folders=per,
                per_image_disk=sum(v for k, v in blocks.items() if not k.startswith("models")) / n)


# ------------------------------------------------------------------------------------------ training
def lr_schedule(lr: float, drops):
    """fastai schedule: `lr`, then each (fraction of training, new lr) in `drops` from that fraction on."""
    from bac.train import lr_steps
    return lr_steps(lr, 1, [(float(p), float(v) / lr) for p, v in drops])


def fit(cfg, model: nn.Module, images: dict, df, loss_func, epochs: int, lr: float, drops, bs: int):
    """Keras's Adam (beta2 `cfg.beta2`, no weight decay) with the paper's step schedule; quiet; the Learner."""
    from fastai.callback.schedule import ParamScheduler
    from bac import train
    dls = train.dataloaders(images, df, bs=bs, seed=cfg.seed, cfg=cfg)
    learn = train.learner(dls, model, loss_func, opt_func=train.keras_adam(cfg.beta2), cfg=cfg, wd=0.0)
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, lr=lr, cbs=[ParamScheduler({"lr": lr_schedule(lr, drops)})])
    return learn


def weights(cfg, name: str, pretrained: bool | None = None) -> dict:
    """The weight arguments of timm backbone `name`: `cfg.pretrained` (or `pretrained`) and, for a machine
    without network, its local weights file `cfg.pretrained_files[name]` (timm name -> .safetensors/.pth)."""
    return dict(pretrained=cfg.pretrained if pretrained is None else pretrained,
                pretrained_file=(cfg.get("pretrained_files") or {}).get(name, ""))


def train_locator(cfg, df, images: dict, pool: str, size: int) -> tuple[CamClassifier, str, dict]:
    """Fit one Phase I classifier on soft labels; store it; returns (model, hash, stats)."""
    from bac import train
    train.seed_everything(cfg.seed)
    arch = dict(backbone=cfg.cls_backbone, pool=pool, in_chans=int(images["train"].shape[1]),
                backbone_kwargs=cfg.cls_backbone_kwargs, size=int(size))
    model = CamClassifier(**weights(cfg, cfg.cls_backbone), **{k: v for k, v in arch.items() if k != "size"})
    t0 = time.time()
    fit(cfg, model, images, df, SoftLabelLoss(cfg.soft_l, cfg.cls_loss), cfg.cls_epochs, cfg.cls_lr,
        cfg.cls_lr_drops, cfg.cls_bs)
    test = df[df.split == "test"]
    mae = (float(np.mean(np.abs(train.predict(model, images["test"], test.male.values) - test.boneage.values)))
           if len(test) else float("nan"))
    return model.eval(), save_locator(model, arch), dict(seconds=time.time() - t0, test_mae_argmax=mae)


def train_regressor(cfg, df, images: dict, loss: str = "ldl", lam: float | None = None, backbone: str | None = None,
                    sex_layers=None, pretrained: bool | None = None) -> dict:
    """Fit one Phase II model on stacked region images; returns model, test predictions, MAE and seconds.

    loss 'ldl': expectation head with l_MAE + lambda KL(G || p); 'l1': one-output regression with l1.
    """
    from bac import train
    if loss not in ("ldl", "l1"):
        raise ValueError(f"loss {loss!r} unknown; use 'ldl' (Eq. 12) or 'l1' (general regression)")
    train.seed_everything(cfg.seed)
    model = ChenRegressor(backbone or cfg.backbone, in_chans=int(images["train"].shape[1]),
                          head="expectation" if loss == "ldl" else "regression",
                          sex_layers=cfg.sex_layers if sex_layers is None else sex_layers,
                          conv_channels=cfg.conv_channels,
                          backbone_kwargs=cfg.backbone_kwargs if backbone is None else None,
                          **weights(cfg, backbone or cfg.backbone, pretrained))
    lam = cfg.lam if lam is None else lam
    t0 = time.time()
    fit(cfg, model, images, df, ChenLoss(lam, cfg.delta) if loss == "ldl" else train.l1_loss,
        cfg.epochs, cfg.lr, cfg.lr_drops, cfg.bs)
    test = df[df.split == "test"]
    pred = train.predict(model, images["test"], test.male.values) if len(test) else np.zeros(0)
    from bac.report import record
    return record(f"Phase II, {loss}", pred, test, time.time() - t0, model.cpu().eval(), seed=cfg.seed, loss=loss,
                  lam=lam if loss == "ldl" else None)


@torch.no_grad()
def predict_distribution(model: ChenRegressor, images: np.ndarray, male, bs: int = 64) -> np.ndarray:
    """The learned age distributions p (N, 240) of an expectation-head model."""
    from bac.train import normalize
    model.eval()
    male = torch.as_tensor(np.asarray(male, dtype=np.float32))
    out = []
    for i in range(0, len(images), bs):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + bs])))
        out.append(torch.softmax(model(x, male[i:i + bs])[1].float(), 1))
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------------- ground truth
def ground_truth_boxes(cfg, df) -> dict:
    """{id: {'hand', 'carpal', 'metacarpal': box}} in original pixels: the synthetic annotations, or Pascal VOC
    files `<cfg.gt_boxes_dir>/<id>.xml` (e.g. Koitka et al.'s RSNA ROI labels) whose classes `cfg.voc_classes`
    maps to the three regions (several boxes of a region are joined); {} when neither is there."""
    from bac import data
    if cfg.get("data_source") == "synthetic":
        ann = data.annotations(df, df["id"])
        return {i: {k: a["boxes"][k] for k in ("hand", "carpal", "metacarpal")} for i, a in ann.items()}
    folder = Path(cfg.get("gt_boxes_dir") or "")
    if not cfg.get("gt_boxes_dir") or not folder.is_dir():
        return {}
    import xml.etree.ElementTree as ET
    out = {}
    for i in df["id"]:
        path = folder / f"{int(i)}.xml"
        if not path.exists():
            continue
        found: dict = {}
        for obj in ET.parse(path).getroot().iter("object"):
            name = obj.findtext("name", "").strip().lower()
            bb = obj.find("bndbox")
            b = [int(float(bb.findtext(t))) for t in ("xmin", "ymin", "xmax", "ymax")]
            for region, classes in cfg["voc_classes"].items():
                if name in [c.lower() for c in classes]:
                    old = found.get(region, b)
                    found[region] = [min(old[0], b[0]), min(old[1], b[1]), max(old[2], b[2]), max(old[3], b[3])]
        if len(found) == 3:
            out[int(i)] = found
    return out


def image_shapes(df) -> list[tuple[int, int]]:
    """(H, W) of each row's original image (read from the file header when possible)."""
    from PIL import Image
    from bac.data.rsna import read_image
    shapes = []
    for p in df["path"]:
        try:
            with Image.open(p) as im:
                shapes.append((im.size[1], im.size[0]))
        except Exception:  # DICOM and other formats PIL cannot open
            shapes.append(read_image(p).shape[:2])
    return shapes


# ------------------------------------------------------------------ Phase I end to end, the final model
def locator_images(cfg, df, name: str, locators: dict | None = None, progress: bool = False) -> dict:
    """The input of localiser `name` for each split: 'hand' plain @ hand_size, 'r1' plain @ r1_size, 'r2' the
    image with Region-1 erased (E) @ r1_size (needs `locators['r1']`)."""
    from bac.preprocess import prepare_splits
    if name == "r2":
        return region_images(cfg, df, "E", cfg.r1_size, locators, progress)
    size = {"hand": cfg.hand_size, "r1": cfg.r1_size}[name]
    return prepare_splits(df, "plain", size, workers=cfg.workers, progress=progress)


def _fit_id(cfg, df, name: str, pool: str, size: int, after: str = "") -> str:
    """Identity of one localiser fit (settings, training rows, code version): a second call with the same
    reuses it."""
    from bac.data import code_version
    from bac.preprocess import training_fingerprint
    keys = ("cls_backbone", "cls_backbone_kwargs", "cls_loss", "soft_l", "cls_epochs", "cls_lr", "cls_lr_drops",
            "cls_bs", "pretrained", "max_steps", "seed", "erase_seed", "tau_r1", "cam_scale")
    text = json.dumps(dict({k: cfg.get(k) for k in keys}, name=name, pool=pool, size=int(size), after=after,
                           code=code_version(),
                           rows=training_fingerprint(df[df.split.isin(["train", "validation"])])),
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fit_locators(cfg, df, progress: bool = False, reuse: bool = True) -> dict:
    """Phase I: fit the hand (GAP, hand_size), Region-1 (GMP, r1_size) and Region-2 (GMP, r1_size, on images
    with Region-1 erased) classifiers on `df`'s training rows. Returns {'keys', 'models', 'stats', 'reused'}; the
    keys name the localisers for `region_images` and `final_pipeline`. A fit with the same
    settings, rows and code that is already stored is reused (`reuse=False` retrains); `reused` names those,
    and `stats` are the same either way (a warm cache must not change a reported number)."""
    keys, models, stats, reused = {}, {}, {}, []
    specs = (("hand", cfg.hand_pool, cfg.hand_size), ("r1", cfg.r1_pool, cfg.r1_size), ("r2", cfg.r1_pool, cfg.r1_size))
    for name, pool, size in specs:
        fid = _fit_id(cfg, df, name, pool, size, after=keys.get("r1", "") if name == "r2" else "")
        index = locator_path(f"fit-{fid}").with_suffix(".json")
        if reuse and index.exists() and locator_path(json.loads(index.read_text())["key"]).exists():
            rec = json.loads(index.read_text())
            models[name] = load_locator(rec["key"])[0]
            keys[name], stats[name] = rec["key"], rec["stats"]
            reused.append(name)
            continue
        images = locator_images(cfg, df, name, keys, progress)
        models[name], keys[name], stats[name] = train_locator(cfg, df, images, pool, size)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps(dict(key=keys[name], stats=stats[name])))
    return dict(keys=keys, models=models, stats=stats, reused=reused)


def fit_final(cfg, df, progress: bool = False) -> nn.Module:
    """The full method on `df` (any split scheme): the three Phase I localisers, then the Phase II expectation
    model with l_MAE + lambda KL(G || p) on the stacked regions `cfg.final_regions`; in eval mode."""
    keys = fit_locators(cfg, df, progress)["keys"]
    images = region_images(cfg, df, cfg.final_regions, cfg.size, keys, progress)
    return train_regressor(cfg, df, images, loss="ldl")["model"].eval()


def build_final(cfg) -> nn.Module:
    """The notebook's final model (Phase II, expectation head, regions `cfg.final_regions`), untrained."""
    return ChenRegressor(cfg.backbone, in_chans=len(cfg.final_regions.split("+")), head="expectation",
                         sex_layers=cfg.sex_layers, conv_channels=cfg.conv_channels,
                         backbone_kwargs=cfg.backbone_kwargs)


def final_pipeline(cfg, df) -> tuple[str, int, dict]:
    """(pipeline, size, JSON params) that prepare the final model's input from a radiograph: the localisers fitted
    on `df` (`fit_locators`: stored fits are reused) are named by their keys, and copied beside the final
    checkpoint so that folder is self-contained (`load_locator` looks there too)."""
    import shutil
    from bac.report import report_dir
    if cfg.final_regions == "O":
        return "plain", int(cfg.size), {}
    keys = fit_locators(cfg, df)["keys"]
    params = region_params(cfg, cfg.final_regions, {k: keys.get(k, "") for k in LOCATORS})
    folder = report_dir(cfg) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for k in LOCATORS:
        if params.get(k) and not (folder / f"locator-{params[k]}.safetensors").exists():
            shutil.copyfile(locator_path(params[k]), folder / f"locator-{params[k]}.safetensors")
    return "chen2022-regions", int(cfg.size), params


def age_distribution(output):
    """p (B, 240) over months 1..240 of an expectation-head output (age, logits); None for the l1 head."""
    if isinstance(output, (tuple, list)) and len(output) > 1:
        return torch.softmax(output[1].float(), 1)
    return None


def cam_target(model: nn.Module):
    """(layer, None) for Grad-CAM: the conv layer after the backbone (Phase II) or the backbone (Phase I)."""
    return (model.conv if isinstance(model, ChenRegressor) else model.backbone), None


# ------------------------------------------------------------------------------------------ settings, registry
# Phase I (cls_*): a classifier with 240 outputs on soft labels (l = soft_l), GAP at hand_size for the hand, GMP
# at r1_size for Region-1 and on Region-1-erased images for Region-2; boxes where the CAM on the scale `cam_scale`
# >= tau. The paper gives tau (20 hand, 50 regions), not its scale; the authors' released code reads it on the
# grey level of the Jet-coloured 8-bit max-normalised map (`bac.cam.normalize_map`, "authors"). Phase II: backbone
# -> conv -> max pool (+ sex FC `sex_layers`) -> 240-way softmax expectation, loss l_MAE + lam * KL(G || p)
# (delta), or one-output l1 regression. Paper: Inception-V3 / Xception, ImageNet weights, Adam (Keras: beta2
# 0.999, as the authors' code), lr 3e-4 -> 1e-4 after 50 of 70 epochs (batch 32) / 3e-4, 1e-4, 1e-5 for 60/30/30
# of 120 epochs (batch 16), 560 px (hand 300 px), tau 20 / 50, delta 15, no augmentation, random 500/500
# validation/test split. Ours where it is silent: lam 0.5 (best range 0.1-1), the Phase I loss (l1 on the 240
# outputs, as in the authors' code), conv 256 channels + global max pooling. `pretrained_files`: timm name ->
# local weights file, for a GPU machine without network. Grids: inputs x losses (Table V), table2_* (II),
# table3_sex (III), table4_sizes (IV), sens_* (Fig. 5); an empty list skips a table.
_STANDIN = ("a narrow ResNet-10 stand-in (output stride 16) for Inception-V3 and Xception (~100x too slow on 2 CPU "
            "cores), no ImageNet weights offline")
_GRIDS = "the CPU budget: Table V's O and H+R1+R2 rows with both losses and the lambda sweep (0, 0.5) on H+R1+R2"
_ADAM = "fastai's Adam (beta2 0.99), with which the small profiles' settings were chosen (not re-measured)"
_SCALE = "min-max 0..100, with which the small profiles' taus were chosen on the phantoms (not re-measured)"
SETTINGS = Settings(
    full=dict(split="chen2022", pretrained=True, pretrained_files={}, beta2=0.999, cls_backbone="inception_v3",
              cls_backbone_kwargs={}, cls_loss="l1", soft_l=50.0, cls_epochs=70, cls_lr=3e-4,
              cls_lr_drops=[[50 / 70, 1e-4]], cls_bs=32, hand_size=300, hand_pool="avg", tau_hand=20.0, r1_size=560,
              r1_pool="max", tau_r1=50.0, tau_r2=50.0, cam_scale="authors", erase_seed=0,
              taus=[10, 20, 30, 40, 50, 60, 80], backbone="legacy_xception", backbone_kwargs={}, size=560,
              conv_channels=256, sex_layers=[32], epochs=120, lr=3e-4, lr_drops=[[0.5, 1e-4], [0.75, 1e-5]], bs=16,
              delta=15.0, lam=0.5, inputs=["O", "H", "R1", "R2", "H+R1", "R1+R2", "O+H+R1", "H+R1+E", "H+R1+R2"],
              losses=["l1", "ldl"], final_regions="H+R1+R2",
              table2_backbones=["vgg19", "inception_v3", "resnet50", "legacy_xception"], table2_size=224,
              table2_pretrained=[False, True], table3_sex=[[], [16], [32], [64], [64, 32]],
              table4_sizes=[224, 336, 448, 560, 720], sens_lambdas=[0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
              sens_lambda_inputs=["H", "R1"], sens_taus=[20, 30, 40, 50, 60, 70, 80], sens_tau_regions=["H", "R1"],
              fig4_n=4, fig3_n=6, gt_boxes_dir="",
              voc_classes=dict(hand=["hand"], carpal=["wrist"], metacarpal=["mcp"])),
    smoke=because(_STANDIN, pretrained=False, cls_backbone="resnet10t", backbone="resnet10t",
                  cls_backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16),
                  backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16), conv_channels=64)
    | because("CI: 48 / 64 px, one epoch per phase, lr 3e-3", cls_epochs=1, cls_lr=3e-3, cls_lr_drops=[[50 / 70, 1e-3]],
              cls_bs=16, hand_size=48, r1_size=64, size=64, epochs=1, lr=3e-3, lr_drops=[[0.5, 1e-3], [0.75, 1e-4]],
              taus=[10, 20, 50, 80], fig3_n=3)
    | because(_GRIDS, inputs=["O", "H+R1+R2"], table2_backbones=[], table3_sex=[], table4_sizes=[],
              sens_lambdas=[0.0, 0.5], sens_lambda_inputs=["H+R1+R2"], sens_taus=[])
    | because(_ADAM, beta2=0.99) | because(_SCALE, cam_scale=100),
    demo=because(_STANDIN, pretrained=False, cls_backbone="resnet10t", backbone="resnet10t",
                 cls_backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16, stem_width=16),
                 backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16, stem_width=16), conv_channels=64)
    | because("with 'l1' the Region-1/2 classifiers do not learn on the phantoms (argmax 31.7 / 30.0 months vs the "
              "mean's 33.2), their CAMs box nearly the whole image and H+R1+R2 reaches 31.0; with 'bce' 15.4 "
              "(measured)", cls_loss="bce")
    | because("a laptop CPU: 64 / 112 px, 96 px regions, lr 3e-3; Phase I 8 and Phase II 10 epochs (6 / 8: the "
              "regions no longer helped, H+R1+R2 20.1 vs O 15.6 months, measured)", cls_epochs=8, cls_lr=3e-3,
              cls_lr_drops=[[50 / 70, 1e-3]], hand_size=64, r1_size=112, size=96, epochs=10, lr=3e-3,
              lr_drops=[[0.5, 1e-3], [0.75, 1e-4]], bs=32)
    | because(_GRIDS, inputs=["O", "H+R1+R2"], table2_backbones=[], table3_sex=[], table4_sizes=[],
              sens_lambdas=[0.0, 0.5], sens_lambda_inputs=["H+R1+R2"], sens_taus=[])
    | because("the official split, so notebook 90 reuses the model", split="official")
    | because(_ADAM, beta2=0.99) | because(_SCALE, cam_scale=100),
    # every architecture and the 300/560 px resolutions, one point of each grid (cheap on CPU)
    dry_run=because("a CPU check: no weights downloaded", pretrained=False)
    | because("a CPU check: Table V's H+R1+R2 with both losses, the four Table II backbones at 224 px, one sex "
              "branch, the lambda path at the main lambda (reused) and one tau (a second 560 px run)",
              inputs=["H+R1+R2"], table3_sex=[[64, 32]], table4_sizes=[224], sens_lambdas=[0.5],
              sens_lambda_inputs=["H+R1+R2"],
              sens_taus=[30], sens_tau_regions=["H"], fig3_n=2, fig4_n=2),
)

METHOD = Method(
    id="chen2022", notebook="30_chen2022_attention_ldl", title="CAM region localisation + age distribution learning",
    citation="Chen C, Chen Z, Jin X, Li L, Speier W, Arnold CW. Attention-Guided Discriminative Region Localization "
             "and Label Distribution Learning for Bone Age Assessment. IEEE JBHI 26(3):1208-1218 (2022), "
             "doi:10.1109/JBHI.2021.3095128",
    settings=SETTINGS, split=Split(pool="labelled", held_out=(500, 500), full_pool=5000),
    headline=(4.3, "Chen et al. 2022, Table V, H+R1+R2, l_MAE + l_reg"),
    quotes={"Table I": PAPER_T1, "Table II": PAPER_T2, "Table III": PAPER_T3, "Table IV": PAPER_T4,
            "Table V": PAPER_T5},
    build_final=build_final, final_pipeline=final_pipeline, fit_final=fit_final,
    age_distribution=age_distribution, cam_target=cam_target)
