"""Ren 2019's coarse attention: histogram matching, a Faster R-CNN hand box, the crop; fine attention from
`ridge`. The pipeline 'ren2019' returns both as 2 channels (coarse, fine).

Faster R-CNN (torchvision) with no pretrained weights (none can be downloaded here): the MobileNetV3-FPN
320 variant at a small size in smoke/demo, the ResNet-50-FPN in `full`. Trained once per data set on hand
boxes (synthetic ground truth, or boxes of Li 2021 pseudo-masks on real data); Ren et al. drew boxes on
1,000 images. The box with the highest score is the hand (one hand per film; a second hand is ignored).

Used in: notebooks/02_preprocessing.ipynb, 10_ren2019_regression_cnn (pipeline 'ren2019').
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

ARCHS = {"mobilenet_v3_320": "fasterrcnn_mobilenet_v3_large_320_fpn", "resnet50": "fasterrcnn_resnet50_fpn"}


def build_detector(arch: str = "mobilenet_v3_320", size: int = 320):
    """Faster R-CNN with 2 classes (background, hand) taking images whose long side is `size` px."""
    from torchvision.models import detection
    if arch not in ARCHS:
        raise ValueError(f"unknown detector {arch!r}; choose one of {', '.join(ARCHS)}")
    # One object per image: far fewer proposals and sampled RoIs than the COCO defaults (2000 / 512) suffice
    # and make a training step several times cheaper on a CPU.
    return getattr(detection, ARCHS[arch])(
        weights=None, weights_backbone=None, num_classes=2, min_size=size, max_size=size, image_mean=[0.5] * 3,
        image_std=[0.25] * 3, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
        box_batch_size_per_image=32, box_detections_per_img=5)


def _tensor(image: np.ndarray, device: str = "cpu"):
    import torch
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None].to(device).expand(3, -1, -1)


def reference_histogram(cfg, df, n: int | None = None) -> list[int]:
    """The histogram-matching reference: grey-level quantiles pooled over the first `ref_n` training images."""
    from bac.data.rsna import read_image
    from bac.preprocess import settings
    from bac.preprocess.intensity import quantiles
    train = df[df.split == "train"].sort_values("id").head(n or settings(cfg).ref_n)
    return quantiles([read_image(p) for p in train.path], n=64)


def fit_detector(cfg, df, progress: bool = True) -> str:
    """Train the hand detector on the training rows of `df` unless the cache has it; returns its key. It trains
    on `cfg.device` (mixed precision `cfg.amp` on CUDA)."""
    import torch
    from bac.env import device_name
    from bac.preprocess import settings
    from bac.preprocess import targets as T
    from bac.preprocess.intensity import match_histogram
    s = settings(cfg)
    steps = s.det_steps if not cfg.get("max_steps") else min(s.det_steps, cfg["max_steps"])
    reference = reference_histogram(cfg, df)
    spec = dict(arch=s.det_arch, size=s.det_size, steps=steps, bs=s.det_bs, lr=s.det_lr, n=s.det_train_n,
                reference=reference, seed=cfg.get("seed", 0))
    train = df[df.split == "train"]
    key = T.model_key("detector", spec, train.sort_values("id").head(s.det_train_n))
    if (T.model_dir(key) / "meta.json").exists():
        return key
    data = T.training_targets(cfg, df, s.det_size, s.det_train_n, workers=cfg.get("workers", 1), progress=progress)
    images = [_tensor(match_histogram(im, reference)) for im in data["images"]]
    boxes = [torch.tensor([b], dtype=torch.float32) for b in data["boxes"]]
    torch.manual_seed(spec["seed"])
    model = build_detector(s.det_arch, s.det_size)
    device = device_name(cfg.get("device"))

    def loss_of_batch(idx, rng):
        xs, ts = [], []
        for i in idx:
            x, b = images[i], boxes[i].clone()
            if rng.random() < 0.5:  # horizontal flip (a right hand, or a mirrored film)
                w = x.shape[-1]
                x, b = x.flip(-1), b[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([w, 0, w, 0])
            xs.append(x.to(device))
            ts.append(dict(boxes=b.to(device), labels=torch.ones(1, dtype=torch.int64, device=device)))
        return sum(model(xs, ts).values())

    losses = T.train_steps(model, loss_of_batch, len(images), steps, s.det_bs, s.det_lr, spec["seed"],
                           desc="fit Faster R-CNN", progress=progress, device=device, amp=cfg.get("amp", ""))
    T.save(model, key, dict(spec, kind="detector", targets=data["source"], n_images=len(images),
                            skipped=data["skipped"], final_loss=float(np.mean(losses[-10:])) if losses else None))
    return key


@lru_cache(maxsize=4)
def load_detector(key: str, device: str = "cpu"):
    """(the detector `key` in eval mode on `device`, its meta), kept per process for each (key, device)."""
    from bac.preprocess import targets as T
    meta = T.meta_of(key)
    return T.load(build_detector(meta["arch"], meta["size"]), key).to(device), meta


def detect(image: np.ndarray, key: str, device: str = "cpu") -> tuple[list[int] | None, float]:
    """(best hand box in `image`'s pixels or None, its score) from the detector `key`, run on `device`."""
    import torch
    from bac.preprocess import resize_long
    model, meta = load_detector(key, device)
    small = resize_long(image, meta["size"])
    with torch.no_grad():
        out = model([_tensor(small, device)])[0]
    return _best(out, small.shape, image.shape)


def detect_batch(images: list, key: str, device: str = "cpu", batch: int = 16) -> list:
    """`detect` of each image, `batch` at a time (torchvision pads a batch to its largest image, so a box can
    differ slightly from the one `detect` finds alone)."""
    import torch
    from bac.preprocess import resize_long
    model, meta = load_detector(key, device)
    found = []
    for i in range(0, len(images), batch):
        small = [resize_long(im, meta["size"]) for im in images[i:i + batch]]
        with torch.no_grad():
            outs = model([_tensor(im, device) for im in small])
        found += [_best(out, sm.shape, im.shape) for out, sm, im in zip(outs, small, images[i:i + batch])]
    return found


def _best(out: dict, small_shape, shape) -> tuple[list[int] | None, float]:
    """The best box of a detector output on an image of `small_shape`, in pixels of `shape`, and its score."""
    from bac.preprocess.boxes import scale_box
    if len(out["boxes"]) == 0:
        return None, 0.0
    x0, y0, x1, y1 = out["boxes"][0].tolist()  # sorted by score
    box = scale_box([x0, y0, x1, y1], small_shape, shape)
    return box, float(out["scores"][0])


def reduced(image: np.ndarray, size: int) -> np.ndarray:
    """The copy Ren's steps work on: long side 2 x `size`, or the original if smaller."""
    from bac.preprocess import resize_long
    return resize_long(image, min(max(image.shape), 2 * size))


def work_image(image: np.ndarray, size: int, reference, small: np.ndarray | None = None) -> np.ndarray:
    """Ren's first step on the reduced copy (`small`, made here if not given): histogram matching to the
    reference; the detector runs on it and the crop is taken from it."""
    from bac.preprocess.intensity import match_histogram
    return match_histogram(reduced(image, size) if small is None else small, reference)


def locate_ren(image: np.ndarray, size: int = 256, detector: str = "", reference=None, min_score: float = 0.3,
               **_) -> dict:
    """Faster R-CNN box on the histogram-matched image, in `image`'s pixels (cached per image); also the
    reduced copy (`small`) and its matched version (`work`)."""
    from bac.preprocess import cached_localisation
    from bac.preprocess.boxes import scale_box
    if not detector or reference is None:
        raise ValueError("pipeline 'ren2019' needs detector=<key> and reference=<quantiles>: use "
                         "bac.preprocess.pipeline_params(cfg, df, 'ren2019')")
    small = reduced(image, size)
    work = work_image(image, size, reference, small)

    def run(img):
        box, score = detect(img, detector)
        return (box if score >= min_score else None), None, score
    loc = cached_localisation("detector", _ren_args(detector, min_score), work, run)
    for k in ("box", "used"):
        loc[k] = scale_box(loc[k], work.shape, image.shape) if loc[k] else loc[k]
    loc["work"], loc["small"] = work, small
    return loc


def _ren_args(detector: str, min_score: float) -> dict:
    """The parameters of Ren's localisations in the cache."""
    return dict(key=detector, min_score=min_score)


def locate_ren_batch(images: list, size: int = 256, detector: str = "", reference=None, min_score: float = 0.3,
                     device: str = "cpu", batch: int = 16, **_) -> None:
    """`locate_ren` of the images not localised yet, the detector run on `device` `batch` images at a time
    (`detect_batch`); stores what `locate_ren` would, which then reads it back."""
    from bac.preprocess import cached_localisation, localised
    if not detector or reference is None:
        raise ValueError("pipeline 'ren2019' needs detector=<key> and reference=<quantiles>: use "
                         "bac.preprocess.pipeline_params(cfg, df, 'ren2019')")
    args = _ren_args(detector, min_score)
    works = [work_image(im, size, reference) for im in images]
    todo = [w for w in works if not localised("detector", args, w)]
    for work, (box, score) in zip(todo, detect_batch(todo, detector, device, batch)):
        cached_localisation("detector", args, work,
                            lambda img, box=box, score=score: ((box if score >= min_score else None), None, score))


def _register():
    from bac.preprocess import note, pad_square, register, resize_long
    from bac.preprocess.boxes import crop_to_box, scale_box
    from bac.preprocess.ridge import ridge_map

    def params(s, cfg, df):   # trains the detector on df's training rows once (cached), pools the reference
        return dict(detector=fit_detector(cfg, df), reference=reference_histogram(cfg, df), ridge=s.ridge,
                    sigmas=list(s.ridge_sigmas), margin=s.margin, matched_crop=s.ren_matched_crop)

    @register("ren2019", locate=locate_ren, params=params, batch_locate=locate_ren_batch)
    def ren2019(image: np.ndarray, size: int, detector: str = "", reference=None, ridge: str = "frangi",
                sigmas=(1.0, 2.0, 4.0), margin: float = 0.02, min_score: float = 0.3, matched_crop: bool = True
                ) -> np.ndarray:
        """Histogram matching -> Faster R-CNN crop (coarse attention) and its Hessian ridge map (fine
        attention), each letterboxed: (2, size, size). `sigmas` are in pixels at size 256 (scaled, >= 1 px).
        `matched_crop=False` detects on the matched image but crops the original grey levels."""
        loc = locate_ren(image, size, detector=detector, reference=reference, min_score=min_score)
        work = loc["work"] if matched_crop else loc["small"]
        crop, used = crop_to_box(work, scale_box(loc["used"], image.shape, work.shape), margin)
        note(box=loc["box"], crop=scale_box(used, work.shape, image.shape), reason=loc["reason"], score=loc["score"])
        coarse = resize_long(crop, size)
        # a Hessian below 1 px measures the detector noise, not bone: scales are floored at 1 px
        fine = ridge_map(coarse, ridge, sorted({max(1.0, s * size / 256) for s in sigmas}))
        return np.stack([pad_square(coarse, size), pad_square(fine, size)])


_register()
