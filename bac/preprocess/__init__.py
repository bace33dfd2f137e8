"""Preprocessing pipelines of the five papers, and the prepared-image cache every notebook reads from.

`prepare(df, pipeline, size)` returns a uint8 array (N, C, size, size), one prepared image per table
row (memory-mapped when it is large: `_stack`). Each image is prepared once per (content hash of the file,
pipeline, parameters) and stored under `<cache>/prepared/`; later calls (other notebooks, epochs, runs) read
the small arrays back instead of decoding full-size radiographs. A pipeline is a function
`fn(image uint8 HxW, size, **params) -> uint8 (C, size, size)` registered with
`@register("name", locate=..., params=...)`: one that localises the hand registers its
`locate(image, size, **params)` too and records where it cropped (and whether it fell back to the whole image)
with `note` (`notes(df, pipeline, size, **params)` reads them back, cache hits included); `params` says what it
needs under the profile's preprocessing settings (`pipeline_params`).

Pipelines: 'plain' (whole image), 'equalize' (+ CLAHE option), 'li2021' (unsupervised segmentation crop),
'zheng2024' (UNet++ segmentation), 'ren2019' (Faster R-CNN crop + Hessian ridge map, 2 channels).
`pipeline_params(cfg, df, name)` gives what `prepare` needs for a paper's pipeline (it trains the
localisers once per data set and profile).

Used in: notebooks/02_preprocessing.ipynb and every paper notebook.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

PIPELINES: dict[str, Callable] = {}
LOCATORS: dict[str, Callable] = {}
FALLBACKS: Counter = Counter()   # pipeline -> distinct images that fell back to the whole image, this session
_FELL_BACK: set = set()          # (cache folder, file) already counted in FALLBACKS
_NOTES: dict = {}


PARAMS: dict[str, Callable] = {}
BATCH_LOCATORS: dict[str, Callable] = {}


def register(name: str, locate: Callable | None = None, params: Callable | None = None,
             batch_locate: Callable | None = None):
    """Register a pipeline `fn(image, size, **params)`, its localiser `locate(image, size, **params)` and
    `params(s, cfg, df)` -> the keyword arguments it needs under the preprocessing settings `s`.

    `batch_locate(images, size, device=..., **params)` localises a list of images at once on a device and
    stores in the cache what `locate` would store for each (`prepare` runs it first on a GPU)."""
    def deco(fn):
        PIPELINES[name] = fn
        if locate is not None:
            LOCATORS[name] = locate
        if batch_locate is not None:
            BATCH_LOCATORS[name] = batch_locate
        PARAMS[name] = params or (lambda s, cfg, df: {})
        return fn
    return deco


def note(**info) -> None:
    """Record facts about the image being prepared (box, fallback reason); stored beside the cached array."""
    _NOTES.update(info)


def run_pipeline(pipeline: str, image: np.ndarray, size: int, **params) -> tuple[np.ndarray, dict]:
    """(`pipeline`'s output for `image`, what its localiser noted on the way: box, fallback reason)."""
    _NOTES.clear()
    out = PIPELINES[pipeline](image, size, **params)
    return out, dict(_NOTES)


# ------------------------------------------------------------------------------------------ geometry
def resize(image: np.ndarray, shape) -> np.ndarray:
    """uint8 HxW -> `shape` (H, W), bilinear and anti-aliased (Pillow's resampling: fast on 2000 px images)."""
    from PIL import Image
    h, w = int(shape[0]), int(shape[1])
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))


def resize_long(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the long side is `size` px (aspect kept)."""
    h, w = image.shape[:2]
    s = size / max(h, w)
    return resize(image, (max(1, round(h * s)), max(1, round(w * s))))


def pad_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre an image whose long side is at most `size` on a zero (size, size) canvas."""
    h, w = image.shape[:2]
    out = np.zeros((size, size), np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the long side to `size` (anti-aliased) and pad to a square, centred, with zeros."""
    return pad_square(resize_long(image, size), size)


@register("plain")
def plain(image: np.ndarray, size: int) -> np.ndarray:
    """The whole radiograph, letterboxed to a square (the 'original image' O of the papers)."""
    return letterbox(image, size)[None]


# ------------------------------------------------------------------------------------------ localisation
def image_hash(image: np.ndarray) -> str:
    return hashlib.sha1(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()[:20]


_UNCACHED: list = []


@contextlib.contextmanager
def one_thread():
    """Run a cached computation on one torch thread, in the main process as in a worker, so that a stored
    result does not depend on where (or with how many threads) it was first computed."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def uncached_localisation():
    """Within this block `cached_localisation` runs the localiser on every image and `read_image` searches every
    film for markers (`markers.erase_file`), reading and storing nothing (latency measurements)."""
    _UNCACHED.append(True)
    try:
        yield
    finally:
        _UNCACHED.pop()


def uncached() -> bool:
    """Whether this runs inside `uncached_localisation()`."""
    return bool(_UNCACHED)


def localisation_path(method: str, params: dict, image: np.ndarray) -> Path:
    """Where `cached_localisation(method, params, image, ...)` stores its result."""
    from bac.data import cache_root
    return cache_root() / "localised" / pipeline_key(method, 0, params) / f"{image_hash(image)}.npz"


def localised(method: str, params: dict, image: np.ndarray) -> bool:
    """Whether `cached_localisation(method, params, image, ...)` would read its result from the cache."""
    return not _UNCACHED and localisation_path(method, params, image).exists()


def cached_localisation(method: str, params: dict, image: np.ndarray, fn: Callable, check: dict | None = None) -> dict:
    """Localise once per image content and `params`, stored under `<cache>/localised/`.

    `fn(image) -> (box or None, mask or None, score)` with the box in `image`'s pixels and the mask (uint8
    0..255, any resolution) covering the whole image. Returns dict(box, used, reason, mask, score): `used`
    is the box to crop, the whole image when `reason` says the localisation failed (`boxes.check_box`).
    """
    from bac.preprocess.boxes import check_box
    path = localisation_path(method, params, image)
    def stored(box, mask, score):   # the form the cache keeps: computed and cached results are the same objects
        return ([int(v) for v in box] if box is not None and len(box) else None,
                None if mask is None or not np.size(mask) else np.asarray(mask, np.uint8), float(score))

    if _UNCACHED:                   # inside `uncached_localisation()`: compute, neither read nor store
        with one_thread():
            box, mask, score = stored(*fn(image))
    elif path.exists():
        with np.load(path) as z:
            box = [int(v) for v in z["box"]] or None
            mask = z["mask"] if z["mask"].size else None
            score = float(z["score"])
    else:
        with one_thread():
            box, mask, score = stored(*fn(image))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, box=np.asarray(box or [], np.int64), score=np.float64(score),
                            mask=np.zeros(0, np.uint8) if mask is None else np.asarray(mask, np.uint8))
        tmp.replace(path)
    h, w = image.shape[:2]
    reason = check_box(box, image.shape, **(check or {}))
    return dict(box=box, used=[0, 0, w, h] if reason else box, reason=reason, mask=None if reason else mask,
                score=score)


def locate(image: np.ndarray, pipeline: str, size: int, **params) -> dict:
    """Where pipeline `pipeline` localises the hand in `image`: dict(box, used, reason, mask, score), boxes in
    `image`'s pixels (`used` = the whole image after a failure, `reason` = why, '' when it worked)."""
    if pipeline not in LOCATORS:
        raise ValueError(f"pipeline {pipeline!r} does not localise; localising pipelines: "
                         f"{', '.join(sorted(LOCATORS))}")
    return LOCATORS[pipeline](image, size, **params)


def fallback_stats(infos: list[dict]) -> dict:
    """{'n', 'fallbacks', 'reasons': {reason: count}} of a list of `notes` entries."""
    reasons = Counter(i.get("reason") for i in infos if i.get("reason"))
    return dict(n=len(infos), fallbacks=sum(reasons.values()), reasons=dict(reasons))


# ------------------------------------------------------------------------------------------ cache
def file_hash(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def pipeline_key(pipeline: str, size: int, params: dict) -> str:
    """The cache folder of a pipeline's outputs: a hash of everything that determines them (pipeline, size,
    parameters, which name any upstream fit by its own key, and `bac.data.code_version()`)."""
    from bac.data import code_version
    key = dict(pipeline=pipeline, size=size, params=params, code=code_version())
    text = json.dumps(key, sort_keys=True, default=str)
    return f"{pipeline}-{size}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _prepare_one(path: str, cache_dir: Path, pipeline: str, size: int, params: dict) -> tuple[np.ndarray, bool, dict]:
    from bac.data.rsna import read_image
    target = cache_dir / f"{file_hash(path)}.npy"
    side = target.with_suffix(".json")
    if target.exists():
        return np.load(target), True, json.loads(side.read_text()) if side.exists() else {}
    with one_thread():
        out, info = run_pipeline(pipeline, read_image(path), size, **params)
    if out.dtype != np.uint8 or out.ndim != 3 or out.shape[1:] != (size, size):
        raise ValueError(f"pipeline {pipeline!r} returned {out.dtype} {out.shape} for {path}; "
                         f"expected uint8 (C, {size}, {size})")
    if info:
        side.write_text(json.dumps(info, default=str))
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(target)
    return out, False, info


def _one_thread() -> None:
    """Worker initialiser: one torch thread per process (the workers are the parallelism)."""
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def prepare(df, pipeline: str = "plain", size: int = 256, workers: int = 1, progress: bool = True,
            cache: bool = True, device: str = "cpu", **params) -> np.ndarray:
    """Prepared images for every row of `df` (column `path`), from the cache when present; `notes` gives each
    row's notes (box, fallback reason) afterwards.

    `device` ('cpu', 'cuda', 'auto'; not part of the cache key): on a GPU a pipeline registered with a
    `batch_locate` first localises the images not prepared yet there, in batches in this process
    (`localise_batched`); the per-image pipeline (in CPU worker processes) then reads the results back."""
    from tqdm.auto import tqdm
    from bac.env import device_name
    cache_dir = _cache_dir(pipeline, size, params)
    paths = list(df["path"])
    if pipeline in BATCH_LOCATORS and device_name(device) != "cpu":
        todo = [p for p in paths if not (cache_dir / f"{file_hash(p)}.npy").exists()]
        localise_batched(todo, partial(BATCH_LOCATORS[pipeline], size=size, **params), device, workers=workers,
                         progress=progress, desc=f"localise {pipeline}")
    fn = partial(_prepare_one, cache_dir=cache_dir, pipeline=pipeline, size=size, params=params)
    bar = dict(total=len(paths), desc=f"prepare {pipeline}@{size}", disable=not progress, leave=False)
    out, infos = None, []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(paths) > 8:
            from concurrent.futures import ProcessPoolExecutor
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=_one_thread))
            results = pool.map(fn, paths, chunksize=8)
        else:
            results = map(fn, paths)
        for i, (image, _, info) in enumerate(tqdm(results, **bar)):   # each row goes straight into the stack
            out = _stack((len(paths), *image.shape)) if out is None else out
            if image.shape != out.shape[1:]:
                raise ValueError(f"pipeline {pipeline!r} gave {paths[i]} the shape {image.shape}, the rows before "
                                 f"it {out.shape[1:]}")
            out[i] = image
            infos.append(info)
    if not cache:
        for p in paths:
            for suffix in (".npy", ".json"):
                (cache_dir / f"{file_hash(p)}{suffix}").unlink(missing_ok=True)
    for p, info in zip(paths, infos):   # cache hits count too: the count must not depend on the cache
        if info.get("reason") and (cache_dir.name, str(p)) not in _FELL_BACK:
            _FELL_BACK.add((cache_dir.name, str(p)))
            FALLBACKS[pipeline] += 1
    return out if out is not None else np.zeros((0, 1, size, size), np.uint8)


# Stacks of prepared images larger than this are memory-mapped (`_stack`); $BAC_MMAP_BYTES sets it (0: always).
MMAP_BYTES = int(__import__("os").environ.get("BAC_MMAP_BYTES", 2 << 30))


def _stack(shape) -> np.ndarray:
    """An empty uint8 array of `shape` for `prepare` to fill: in memory up to `MMAP_BYTES`, above that a
    memory map of a file under `<cache>/stacks/` that is unlinked as soon as it is created (Linux keeps the
    space until the array and the loader workers forked with it are gone). The operating system pages it
    in and out like any cached file, so a training holds its prepared images in the page cache, shared with
    its loader workers, not in its own memory; the values are the same either way. Where the disk lacks the
    space (with 1 GiB to spare), the stack stays in memory."""
    import shutil
    import tempfile
    from bac.data import cache_root
    folder = cache_root() / "stacks"
    folder.mkdir(parents=True, exist_ok=True)
    if int(np.prod(shape)) <= MMAP_BYTES or shutil.disk_usage(folder).free < int(np.prod(shape)) + (1 << 30):
        return np.empty(shape, np.uint8)
    with tempfile.TemporaryFile(dir=folder) as f:   # the map keeps its own handle on the (nameless) file
        return np.memmap(f, np.uint8, "w+", shape=shape)


def localise_batched(paths, batch_locate: Callable, device: str, chunk: int = 128, workers: int = 1,
                     progress: bool = True, desc: str = "localise") -> None:
    """Run `batch_locate(images, device=...)` over the images of `paths`, `chunk` at a time (read by `workers`
    threads), in this process on `device` (resolved by `bac.env.device_name`; nothing to do on the CPU,
    where the per-image localisers run). CUDA cannot be used in forked worker processes: this is how the
    GPU computes what they would, and they find it in the cache. The images go in order of aspect ratio, so
    that a chunk holds images of few shapes (Li's networks are batched per shape)."""
    from concurrent.futures import ThreadPoolExecutor
    from tqdm.auto import tqdm
    from bac.data.rsna import read_image
    from bac.env import device_name
    device = device_name(device)
    if device == "cpu" or not len(paths) or _UNCACHED:   # uncached: nothing stored for the per-image path to read
        return
    paths = sorted(paths, key=_aspect)
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(paths), desc=f"{desc} on {device}", disable=not progress, leave=False) as bar:
        for i in range(0, len(paths), chunk):
            images = list(pool.map(read_image, paths[i:i + chunk]))
            batch_locate(images, device=device)
            bar.update(len(images))


def _aspect(path) -> float:
    """Height / width of an image file from its header (0 when Pillow cannot tell, e.g. DICOM)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.height / im.width
    except Exception:   # noqa: BLE001  (only an ordering hint)
        return 0.0


def _cache_dir(pipeline: str, size: int, params: dict) -> Path:
    from bac.data import cache_root
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(sorted(PIPELINES))}")
    path = cache_root() / "prepared" / pipeline_key(pipeline, size, params)
    path.mkdir(parents=True, exist_ok=True)
    return path


def notes(df, pipeline: str = "plain", size: int = 256, **params) -> list[dict]:
    """Each row's notes (box, fallback reason; {} when there are none) from the cache of
    `prepare(df, pipeline, size, **params)`, which must have run (with `cache=True`)."""
    cache_dir, out = _cache_dir(pipeline, size, params), []
    for path in df["path"]:
        stem = cache_dir / file_hash(path)
        if not stem.with_suffix(".npy").exists():
            raise ValueError(f"{path} is not prepared for {pipeline}@{size} with these parameters: call "
                             f"bac.preprocess.prepare first")
        side = stem.with_suffix(".json")
        out.append(json.loads(side.read_text()) if side.exists() else {})
    return out


def cached(df, pipeline: str = "plain", size: int = 256, **params) -> int:
    """How many rows of `df` `prepare(df, pipeline, size, **params)` would read from the cache."""
    cache_dir = _cache_dir(pipeline, size, params)
    return sum((cache_dir / f"{file_hash(p)}.npy").exists() for p in df["path"])


def prepare_splits(df, pipeline: str = "plain", size: int = 256, **kw) -> dict[str, np.ndarray]:
    """`prepare` for each split: {'train': array, 'validation': ..., 'test': ...} aligned with df rows."""
    return {s: prepare(df[df.split == s], pipeline, size, **kw) for s in ("train", "validation", "test")
            if (df.split == s).any()}


# ------------------------------------------------------------------------------------------ settings
def settings(cfg):
    """The preprocessing settings (`bac.config.SECTIONS['preprocess']`) of `cfg`'s profile; keys that `cfg`
    itself has (a paper notebook's own section or overrides) win."""
    from bac.config import resolve
    s = resolve(cfg["profile"], "preprocess", dry_run=bool(cfg.get("dry_run")), data_dir=cfg.get("data_dir", ""),
                out_dir=cfg.get("out_dir", ""))
    return s.replace(**{key: cfg[key] for key in s if key in cfg and key in PARAM_KEYS})


PARAM_KEYS = ("clahe", "margin", "li_size", "li_channels", "li_iters", "det_arch", "det_size", "det_steps",
              "det_bs", "det_lr", "det_train_n", "unet_encoder", "unet_decoder", "unet_size", "unet_steps", "unet_bs",
              "unet_lr",
              "unet_train_n", "ridge", "ridge_sigmas", "ref_n", "ren_matched_crop")


def pipeline_params(cfg, df, name: str) -> dict:
    """What `prepare(df, name, size, **params)` needs for pipeline `name` under `cfg`'s profile.

    'zheng2024' and 'ren2019' train their localiser on the training split of `df` when it is not in the
    cache yet (progress bar), so the returned params carry the model's key; 'ren2019' also carries the
    reference histogram (quantiles of training images).
    """
    if name not in PARAMS:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PARAMS))}")
    return PARAMS[name](settings(cfg), cfg, df)


def training_fingerprint(df) -> str:
    """A short hash of the rows a localiser is trained on (ids, file names and sizes, labels)."""
    rows = sorted((int(r.id), Path(r.path).name, Path(r.path).stat().st_size, float(r.boneage))
                  for r in df.itertuples())
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]


# Submodules register their pipelines on import.
from bac.preprocess import intensity, boxes, ridge, unsupervised, unetpp, detect  # noqa: E402,F401
