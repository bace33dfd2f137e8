"""Feeding a training (bac.train): batch augmentation on the device, DataLoader workers, memmapped arrays, and
mixed precision / channels-last kept off on a CPU. CPU only."""
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bac import config, train
from bac.models import ren2019

ALL = dict(rotate=15, translate=0.1, scale=0.1, flip=True, brightness=0.2, contrast=0.2, gamma=0.2)


def _batch(n=8, c=1, h=24, w=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8))


def _table(n_train=20, n_val=6):
    rng = np.random.default_rng(0)
    return pd.DataFrame(dict(split=["train"] * n_train + ["validation"] * n_val,
                             boneage=rng.uniform(10, 200, n_train + n_val), male=rng.integers(0, 2, n_train + n_val)))


def _images(n_train=20, n_val=6, c=1, size=24):
    rng = np.random.default_rng(1)
    return {s: rng.integers(0, 256, (n, c, size, size), dtype=np.uint8)
            for s, n in (("train", n_train), ("validation", n_val))}


def _cfg(**changes):
    return config.resolve("smoke", "baseline").replace(**changes)


def _epoch(dls):
    return [tuple(t.clone() for t in b) for b in dls.train]


def test_batch_augment_reads_the_per_image_pipeline():
    aug = train.BatchAugment.of(train.make_augment(**ALL))
    assert aug.degrees == (-15, 15) and aug.translate == (0.1, 0.1) and aug.scale == (0.9, 1.1) and aug.flip == 0.5
    assert aug.brightness == (0.8, 1.2) and aug.contrast == (0.8, 1.2) and aug.gamma == (0.8, 1.2)
    ren = train.BatchAugment.of(ren2019.make_augment(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2))
    assert ren.degrees == (-20, 20) and ren.brightness == (0.8, 1.2) and ren.contrast == (1, 1)
    assert train.BatchAugment.of(train.make_augment()) is None
    with pytest.raises(ValueError, match="batch_augment=False"):
        train.BatchAugment.of(v2.Compose([v2.RandomVerticalFlip()]))


def test_zero_settings_are_the_identity():
    x = _batch()
    assert torch.equal(train.BatchAugment()(x), x.float())
    feed = train.DeviceFeed(train.BatchAugment())
    y = feed((x, torch.ones(8), torch.zeros(8)))
    assert torch.equal(y[0], train.normalize(x)) and torch.equal(y[1], torch.ones(8))


def test_affine_is_torchvisions_affine():
    """Rotation, shift and zoom follow torchvision's conventions (bilinear): the same transform family."""
    x = torch.zeros(1, 1, 40, 60)
    x[..., 10:18, 20:44], x[..., 25:30, 5:12] = 200, 100
    angle, tx, ty, s = 20.0, 0.05, -0.1, 0.8
    ref = TF.affine(x[0], angle=angle, translate=[tx * 60, ty * 40], scale=s, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.BILINEAR)
    out = train._affine(x, *(torch.tensor([v]) for v in (math.radians(angle), tx, ty, s)))[0]
    assert float((out - ref).abs().max()) < 1e-2


def test_flip_mirrors_exactly():
    x = _batch(n=64)
    assert torch.equal(train.BatchAugment(flip=1.0)(x), x.flip(-1).float())
    out = train.BatchAugment(flip=0.5)(x)
    flipped = [torch.equal(o, xi.flip(-1).float()) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi.float()) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_samples_of_a_batch_get_their_own_transforms():
    x = _batch(n=1).repeat(2, 1, 1, 1)
    for settings in (dict(rotate=15), dict(brightness=0.2), dict(contrast=0.2), dict(gamma=0.2), ALL):
        out = train.BatchAugment.of(train.make_augment(**settings))(x)
        assert not torch.equal(out[0], out[1]), settings
        assert out.min() >= 0 and out.max() <= 255


def test_augmentation_follows_the_seed():
    x = _batch(c=3)
    aug = lambda seed: train.BatchAugment.of(train.make_augment(**ALL), seed=seed)  # noqa: E731
    a, b = aug(1)(x), aug(1)(x)
    assert torch.equal(a, b) and not torch.equal(a, aug(2)(x))
    one = aug(1)
    first, second = one(x), one(x)
    assert not torch.equal(first, second)            # the stream moves on from batch to batch
    one.reseed(1)
    assert torch.equal(one(x), first)


@pytest.mark.parametrize("profile", ["smoke", "demo"])
def test_cpu_profiles_feed_exactly_as_without_a_config(profile):
    """The reference reports were computed with per-image augmentation in the main process: with the CPU
    profiles' settings, `cfg` changes no batch and no draw from the global generators."""
    images, df = _images(), _table()
    cfg = config.resolve(profile, "baseline")
    assert cfg.loader_workers == 0 and not cfg.batch_augment and cfg.amp == "" and not cfg.channels_last
    runs = []
    for kw in ({}, dict(cfg=cfg)):
        train.seed_everything(0)
        dls = train.dataloaders(images, df, bs=4, augment=train.make_augment(**ALL), seed=0, **kw)
        runs.append((_epoch(dls), _epoch(dls), torch.rand(3), np.random.rand(3)))
    (a1, a2, ta, na), (b1, b2, tb, nb) = runs
    assert all(torch.equal(u, v) for x, y in zip(a1 + a2, b1 + b2) for u, v in zip(x, y))
    assert torch.equal(ta, tb) and np.array_equal(na, nb)


def test_dataloaders_follow_the_config(monkeypatch):
    images, df = _images(), _table()
    dls = train.dataloaders(images, df, bs=4, seed=0, cfg=_cfg(loader_workers=2))
    for dl in dls.loaders:
        assert dl.fake_l.num_workers == min(2, os.cpu_count()) and not dl.pin_memory and dl.device.type == "cpu"
    plain = train.dataloaders(images, df, bs=4, seed=0, cfg=_cfg())
    assert plain.train.fake_l.num_workers == 0 and plain.train.fake_l.generator is None
    with pytest.raises(RuntimeError, match="no GPU") if not torch.cuda.is_available() else warnings.catch_warnings():
        train.dataloaders(images, df, bs=4, cfg=_cfg(device="cuda"))
    # on a GPU machine: pinned memory for the workers, the device from the config (nothing is moved here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = train.dataloaders(images, df, bs=4, seed=0, cfg=_cfg(loader_workers=2, device="auto"))
    for dl in gpu.loaders:
        assert dl.pin_memory and dl.fake_l.pin_memory and dl.device.type == "cuda"
    assert not train.feeding(_cfg(loader_workers=0, device="cuda"))["pin_memory"]


@pytest.mark.parametrize("batch_augment", [False, True])
def test_workers_are_seeded(batch_augment):
    images, df = _images(), _table()
    make = lambda seed: train.dataloaders(images, df, bs=4, augment=train.make_augment(**ALL), seed=seed,  # noqa
                                          cfg=_cfg(loader_workers=2, batch_augment=batch_augment))
    a, b, c = _epoch(make(0)), _epoch(make(0)), _epoch(make(1))
    assert len(a) == 5 and a[0][0].shape == (4, 1, 24, 24) and a[0][0].dtype == torch.float32
    assert all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x, y))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    # the validation images come normalised, unaugmented and in order, whichever path (the loaders drop a last
    # partial batch: 4 of 6 here)
    valid = torch.cat([b[0] for b in make(0).valid])
    assert torch.equal(valid, train.normalize(torch.from_numpy(images["validation"][:len(valid)])))


def test_workers_persist_and_the_first_epoch_is_fastais():
    from fastai.data.core import DataLoaders
    images, df = _images(), _table()
    cfg = _cfg(loader_workers=2)
    dls = train.dataloaders(images, df, bs=4, augment=train.make_augment(**ALL), seed=0, cfg=cfg)
    assert isinstance(dls.train, train.PersistentLoader)
    first = _epoch(dls)
    pids = [w.pid for w in dls.train._torch._iterator._workers]
    second = _epoch(dls)
    assert [w.pid for w in dls.train._torch._iterator._workers] == pids   # the same processes, not forked again
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(first, second))   # a new order and new draws
    # fastai's own loader (forking every epoch) over the same datasets, order and seeds yields the same first epoch
    plain = DataLoaders.from_dsets(dls.train.dataset, dls.valid.dataset, bs=4, num_workers=2, device="cpu",
                                   drop_last=True)
    train.reseed(plain, 0)
    torch.manual_seed(0)   # (what `dataloaders` does before it builds the loaders)
    assert all(torch.equal(u, v) for x, y in zip(first, _epoch(plain)) for u, v in zip(x, y))
    assert len(first) == len(plain.train) == 5


def test_batch_augmentation_runs_after_the_workers():
    images, df = _images(), _table()
    dls = train.dataloaders(images, df, bs=4, augment=train.make_augment(flip=True), seed=0,
                            cfg=_cfg(batch_augment=True))
    assert dls.train.dataset.augment is None and dls.train.dataset.raw      # the workers only slice
    assert isinstance(dls.train.dataset[0][0], torch.Tensor) and dls.train.dataset[0][0].dtype == torch.uint8
    x, male, age = next(iter(dls.train))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 24, 24) and male.shape == age.shape == (4,)
    originals = train.normalize(torch.from_numpy(images["train"]))
    for xi in x:   # each sample is a training image, mirrored or not
        assert any(torch.equal(xi, o) or torch.equal(xi, o.flip(-1)) for o in originals)


def test_memmapped_arrays(tmp_path):
    arrays, df = _images(), _table()
    images = {}
    for split, a in arrays.items():
        np.save(tmp_path / f"{split}.npy", a)
        images[split] = np.load(tmp_path / f"{split}.npy", mmap_mode="r")
        assert not images[split].flags.writeable
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writ.*")
        for batch_augment in (False, True):
            def epoch(imgs):
                dls = train.dataloaders(imgs, df, bs=4, augment=train.make_augment(**ALL), seed=0,
                                        cfg=_cfg(batch_augment=batch_augment))
                train.seed_everything(0)   # (per-image augmentation draws from the global generators)
                return _epoch(dls)
            mapped, ref = epoch(images), epoch(arrays)
            assert len(mapped) == 5 and all(torch.equal(u[0], v[0]) for u, v in zip(mapped, ref))
        model = torch.nn.Sequential()
        model.forward = lambda x, male: x.mean((1, 2, 3))
        assert train.predict(model, images["validation"], np.ones(6), device="cpu").shape == (6,)


def test_amp_and_channels_last_only_on_a_gpu(monkeypatch):
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision
    dls = train.dataloaders(_images(), _table(), bs=4, cfg=_cfg(device="cpu"))
    learn = train.learner(dls, torch.nn.Linear(1, 1), cfg=_cfg(amp="bf16", channels_last=True))
    assert not any(isinstance(cb, (MixedPrecision, ChannelsLast)) for cb in learn.cbs)
    assert train.precision_callbacks(_cfg(amp="fp16", channels_last=True), "cpu") == []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cbs = train.precision_callbacks(_cfg(amp="bf16", channels_last=True), "cuda")
    assert [type(cb) for cb in cbs] == [MixedPrecision, ChannelsLast] and cbs[0].amp_mode.value == "bf16"
    assert train.precision_callbacks(_cfg(amp="", channels_last=False), "cuda") == []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.warns(UserWarning, match="float16"):
        assert train.precision_callbacks(_cfg(amp="bf16"), "cuda")[0].amp_mode.value == "fp16"
    with pytest.raises(ValueError, match="amp must be"):
        train.precision_callbacks(_cfg(amp="fp8"), "cpu")
