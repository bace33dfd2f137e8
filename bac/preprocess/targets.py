"""Training data and storage for the trained hand localisers (Ren 2019's Faster R-CNN, Zheng 2024's UNet++).

On the synthetic data the targets are the ground-truth hand masks and boxes (`bac.data.synth`). Real RSNA
images have none: the targets are then pseudo-masks from Li 2021's unsupervised segmentation, and boxes
from those masks (notebook 02 says so). A fitted model lives under `<cache>/models/<key>/`, the key a hash
of the training settings and of the training rows, so a new data set or setting trains a new model and
the prepared-image cache (whose parameters carry the key) follows.

Used in: notebooks/02_preprocessing.ipynb, 10_ren2019_regression_cnn, 50_zheng2024_kdaldl (through
`bac.preprocess.pipeline_params`).
"""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np


def model_key(kind: str, spec: dict, train_df) -> str:
    """'<kind>-<hash of spec, training rows and `bac.data.code_version()`>'."""
    from bac.data import code_version
    from bac.preprocess import training_fingerprint
    text = json.dumps(dict(spec=spec, data=training_fingerprint(train_df), code=code_version()), sort_keys=True,
                      default=str)
    return f"{kind}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def model_dir(key: str) -> Path:
    from bac.data import cache_root
    return cache_root() / "models" / key


def _target(row, root: str, synthetic: bool, long_side: int, li: dict):
    """(image, mask, box) of one training row at `long_side` px; None when no pseudo-mask was found."""
    from bac.data.rsna import read_image
    from bac.preprocess import resize, resize_long
    from bac.preprocess.boxes import mask_to_box, scale_box
    image = read_image(row["path"])
    small = resize_long(image, long_side)
    if synthetic:
        from bac.data import synth
        mask = synth.read_mask(root, row["id"]).astype(np.uint8) * 255
    else:
        from bac.preprocess.unsupervised import locate_li
        loc = locate_li(image, **li)
        if loc["reason"]:
            return None
        mask = loc["mask"]
    mask_small = resize(mask, small.shape) > 127
    box = mask_to_box(mask_small)
    if synthetic:  # the annotated box, mapped to the small image
        from bac.data import synth
        box = scale_box(synth.read_annotation(root, row["id"])["boxes"]["hand"], image.shape, small.shape)
    return small, mask_small, box


def training_targets(cfg, df, long_side: int, n: int, workers: int = 1, progress: bool = True) -> dict:
    """Images (long side `long_side`), masks and hand boxes of the first `n` training rows of `df` (by id).

    Returns dict(images, masks, boxes, source, skipped): `source` says 'ground truth' (synthetic) or
    'pseudo-masks (Li 2021 unsupervised)' (real data); `skipped` counts rows without a pseudo-mask. On a GPU
    (`cfg.device`) the pseudo-masks are computed there first, in batches (`unsupervised.locate_li_batch`).
    """
    from tqdm.auto import tqdm
    from bac.data import is_synthetic
    from bac.preprocess import localise_batched, settings
    train = df[df.split == "train"].sort_values("id").head(n)
    if train.empty:
        raise ValueError("no training rows to fit a hand localiser on: the table has no split == 'train' rows")
    root = df.attrs.get("root") or str(Path(train.path.iloc[0]).parent.parent)
    synthetic = is_synthetic(root)
    s = settings(cfg)
    li = dict(seg_size=s.li_size, p=s.li_channels, q=s.li_channels, iterations=s.li_iters)
    if not synthetic:
        from bac.preprocess.unsupervised import locate_li_batch
        localise_batched(list(train.path), partial(locate_li_batch, **li), cfg.get("device") or "auto",
                         workers=workers, progress=progress, desc="pseudo-masks")
    fn = partial(_target, root=root, synthetic=synthetic, long_side=long_side, li=li)
    rows = [dict(id=int(r.id), path=r.path) for r in train.itertuples()]
    bar = dict(total=len(rows), desc="localiser targets", disable=not progress, leave=False)
    if workers > 1 and not synthetic and len(rows) > 8:
        from concurrent.futures import ProcessPoolExecutor
        from bac.preprocess import _one_thread
        with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
            out = list(tqdm(pool.map(fn, rows, chunksize=4), **bar))
    else:
        out = [fn(r) for r in tqdm(rows, **bar)]
    kept = [o for o in out if o is not None]
    return dict(images=[o[0] for o in kept], masks=[o[1] for o in kept], boxes=[o[2] for o in kept],
                source="ground truth (synthetic)" if synthetic else "pseudo-masks (Li 2021 unsupervised)",
                skipped=len(out) - len(kept))


def train_steps(model, loss_of_batch, n_items: int, steps: int, bs: int, lr: float, seed: int = 0,
                desc: str = "fit", progress: bool = True, device: str = "cpu", amp: str = "") -> list[float]:
    """Adam on `loss_of_batch(indices, rng) -> loss` over `steps` random batches of `bs` items; losses.

    The model is moved to `device` (`loss_of_batch` puts its batch there). On CUDA the loss is computed
    under autocast when `amp` is "bf16" or "fp16" (with a loss scaler; "bf16" falls back to it on a GPU
    without bfloat16); on any other device `amp` is ignored and the steps are those of fp32.
    """
    import contextlib
    import torch
    from tqdm.auto import tqdm
    amp = amp or ""
    if amp not in ("", "bf16", "fp16"):
        raise ValueError(f"amp must be 'bf16', 'fp16' or '' (fp32), got {amp!r}")
    cuda = torch.device(device).type == "cuda"
    if cuda and amp == "bf16" and not torch.cuda.is_bf16_supported():
        amp = "fp16"
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16).get(amp) if cuda else None
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    model.to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        with autocast():
            loss = loss_of_batch(rng.choice(n_items, size=min(bs, n_items), replace=False), rng)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    return losses


def save(model, key: str, meta: dict) -> None:
    """Weights as safetensors (no pickle) and the settings needed to rebuild the model as meta.json."""
    from safetensors.torch import save_file
    d = model_dir(key)
    d.mkdir(parents=True, exist_ok=True)
    # written under temporary names and renamed, meta.json last: a notebook running beside this one (--jobs 2)
    # never reads a half-written model
    tmp = d / "model.tmp.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(d / "model.safetensors")
    (d / "meta.tmp.json").write_text(json.dumps(meta, indent=1, default=str))
    (d / "meta.tmp.json").replace(d / "meta.json")


def load(model, key: str):
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(model_dir(key) / "model.safetensors")))
    return model.eval()


def meta_of(key: str) -> dict:
    path = model_dir(key) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"no localiser {key!r} in {path.parent}: it is trained by "
                                "bac.preprocess.pipeline_params(cfg, df, ...) (notebook 02 or the paper's notebook)")
    return json.loads(path.read_text())
