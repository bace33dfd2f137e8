"""Zheng 2024's hand segmentation: UNet++ (segmentation-models-pytorch), then the segmented hand, equalised.

UNet++ (Zhou et al. 2018) with a ResNet encoder (no pretrained weights here), trained once per data set on
hand masks: the synthetic ground truth, or Li 2021 pseudo-masks on real RSNA data (`targets`). The image is
squashed to `size` x `size` for the network and the probability map stretched back.

Used in: notebooks/02_preprocessing.ipynb, 50_zheng2024_kdaldl (pipeline 'zheng2024').
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def build_unetpp(encoder: str = "resnet18", decoder_channels=(256, 128, 64, 32, 16)):
    """UNet++, 1 input channel, 1 output logit, random initialisation (encoder_weights=None)."""
    import segmentation_models_pytorch as smp
    return smp.UnetPlusPlus(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=1,
                            decoder_channels=tuple(decoder_channels))


def _batch(images, size):
    import torch
    from bac.preprocess import resize
    x = np.stack([resize(im, (size, size)) for im in images]).astype(np.float32)[:, None] / 255.0
    return (torch.from_numpy(x) - 0.5) / 0.25


def fit_unetpp(cfg, df, progress: bool = True) -> str:
    """Train UNet++ on the training rows of `df` unless the cache has it; returns its key. It trains on
    `cfg.device` (mixed precision `cfg.amp` on CUDA)."""
    import torch
    from bac.env import device_name
    from bac.preprocess import settings
    from bac.preprocess import targets as T
    s = settings(cfg)
    steps = s.unet_steps if not cfg.get("max_steps") else min(s.unet_steps, cfg["max_steps"])
    spec = dict(encoder=s.unet_encoder, decoder=list(s.unet_decoder), size=s.unet_size, steps=steps, bs=s.unet_bs,
                lr=s.unet_lr, n=s.unet_train_n, seed=cfg.get("seed", 0))
    train = df[df.split == "train"]
    key = T.model_key("unetpp", spec, train.sort_values("id").head(s.unet_train_n))
    if (T.model_dir(key) / "meta.json").exists():
        return key
    data = T.training_targets(cfg, df, s.unet_size, s.unet_train_n, workers=cfg.get("workers", 1), progress=progress)
    torch.manual_seed(spec["seed"])
    model = build_unetpp(s.unet_encoder, s.unet_decoder)
    x_all = _batch(data["images"], s.unet_size)
    y_all = _batch([m.astype(np.uint8) * 255 for m in data["masks"]], s.unet_size) > 0
    bce = torch.nn.BCEWithLogitsLoss()
    device = device_name(cfg.get("device"))

    def loss_of_batch(idx, rng):
        x, y = x_all[idx].to(device), y_all[idx].float().to(device)
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        logits = model(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        return bce(logits, y) + dice

    losses = T.train_steps(model, loss_of_batch, len(x_all), steps, s.unet_bs, s.unet_lr, spec["seed"],
                           desc="fit UNet++", progress=progress, device=device, amp=cfg.get("amp", ""))
    T.save(model, key, dict(spec, kind="unetpp", targets=data["source"], n_images=len(x_all),
                            skipped=data["skipped"], final_loss=float(np.mean(losses[-10:])) if losses else None))
    return key


@lru_cache(maxsize=4)
def load_unetpp(key: str, device: str = "cpu"):
    """(the UNet++ `key` in eval mode on `device`, its meta), kept per process for each (key, device)."""
    from bac.preprocess import targets as T
    meta = T.meta_of(key)
    return T.load(build_unetpp(meta["encoder"], meta["decoder"]), key).to(device), meta


def predict_mask(image: np.ndarray, key: str, device: str = "cpu") -> np.ndarray:
    """Hand probability (uint8 0..255) at the network's `size` x `size`, covering the whole image."""
    return predict_masks([image], key, device)[0]


def predict_masks(images: list, key: str, device: str = "cpu", batch: int = 32) -> list:
    """`predict_mask` of each image, computed on `device` `batch` images at a time."""
    import torch
    model, meta = load_unetpp(key, device)
    out = []
    for i in range(0, len(images), batch):
        with torch.no_grad():
            p = torch.sigmoid(model(_batch(images[i:i + batch], meta["size"]).to(device)))[:, 0].cpu().numpy()
        out += list(np.clip(np.rint(p * 255), 0, 255).astype(np.uint8))
    return out


def locate_zheng(image: np.ndarray, size: int = 0, unetpp: str = "", **_) -> dict:
    """UNet++ mask -> largest region -> its box in `image`'s pixels (cached per image)."""
    from bac.preprocess import cached_localisation
    if not unetpp:
        raise ValueError("pipeline 'zheng2024' needs unetpp=<key>: use "
                         "bac.preprocess.pipeline_params(cfg, df, 'zheng2024')")
    return cached_localisation("unetpp", dict(key=unetpp), image,
                               lambda img: _zheng_result(img, predict_mask(img, unetpp)))


def _zheng_result(image: np.ndarray, prob: np.ndarray):
    """What `locate_zheng` caches for `image` with the UNet++ probabilities `prob`: (box, mask, score)."""
    from bac.preprocess.boxes import largest_component, mask_to_box, scale_box
    mask = largest_component(prob > 127)
    box = mask_to_box(mask)
    score = float(prob[mask].mean()) / 255 if mask.any() else 0.0
    return (scale_box(box, mask.shape, image.shape) if box else None), np.where(mask, prob, 0), score


def locate_zheng_batch(images: list, size: int = 0, unetpp: str = "", device: str = "cpu", batch: int = 32,
                       **_) -> None:
    """`locate_zheng` of the images not localised yet, UNet++ run on `device` `batch` images at a time
    (`predict_masks`); stores what `locate_zheng` would, which then reads it back."""
    from bac.preprocess import cached_localisation, localised
    if not unetpp:
        raise ValueError("pipeline 'zheng2024' needs unetpp=<key>: use "
                         "bac.preprocess.pipeline_params(cfg, df, 'zheng2024')")
    todo = [im for im in images if not localised("unetpp", dict(key=unetpp), im)]
    for im, prob in zip(todo, predict_masks(todo, unetpp, device, batch)):
        cached_localisation("unetpp", dict(key=unetpp), im, lambda img, prob=prob: _zheng_result(img, prob))


def _register():
    from bac.preprocess import note, register
    from bac.preprocess.boxes import crop_to_box
    from bac.preprocess.intensity import equalised_crop

    def params(s, cfg, df):   # trains the UNet++ on df's training rows once (cached)
        return dict(unetpp=fit_unetpp(cfg, df), margin=s.margin, clahe=s.clahe)

    @register("zheng2024", locate=locate_zheng, params=params, batch_locate=locate_zheng_batch)
    def zheng2024(image: np.ndarray, size: int, unetpp: str = "", margin: float = 0.02, clahe: bool = False
                  ) -> np.ndarray:
        """UNet++ mask -> hand crop (+ margin) with the background zeroed -> equalised inside the hand."""
        loc = locate_zheng(image, unetpp=unetpp)
        used = crop_to_box(image, loc["used"], margin)[1]   # checks the box lies in the image
        note(box=loc["box"], crop=used, reason=loc["reason"], score=loc["score"])
        return equalised_crop(image, used, size, loc["mask"], clahe)   # mask: the UNet++ probability map


_register()
