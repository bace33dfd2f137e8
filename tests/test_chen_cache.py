"""Chen 2022's CAM cache: one map per localiser and image, boxes and crops derived from it, nothing stored per
region stack, the batched pre-pass on the configured device."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bac import config
from bac.data.rsna import read_image
from bac.models import chen2022 as C
from bac.preprocess import image_hash, letterbox, one_thread, uncached_localisation

TINY = dict(channels=(8, 8, 16, 16), output_stride=16)  # a narrow ResNet-10 keeps these tests fast
SIZES = dict(hand=32, r1=48, r2=48)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A fresh cache with three tiny untrained localisers, 10 + 2 + 2 small radiograph-like PNGs and a config."""
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    keys = {}
    for name, pool in (("hand", "avg"), ("r1", "max"), ("r2", "max")):
        arch = dict(backbone="resnet10t", pool=pool, in_chans=1, backbone_kwargs=TINY, size=SIZES[name])
        keys[name] = C.save_locator(C.CamClassifier("resnet10t", pool=pool, backbone_kwargs=TINY), arch)
    rng, rows = np.random.default_rng(0), []
    for i in range(14):
        h, w = rng.integers(90, 140), rng.integers(60, 110)
        image = (np.linspace(0, 160, w)[None] + rng.integers(0, 90, (h, w))).astype(np.uint8)
        image[h // 3: h // 2, w // 4: w // 2] = 255   # something bright for the CAM to find
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        rows.append(dict(id=i, path=str(path), boneage=float(12 * i + 6), male=bool(i % 2),
                         split="train" if i < 10 else "validation" if i < 12 else "test"))
    cfg = config.resolve("smoke", "chen2022", overrides=dict(workers=1, device="cpu", size=40))
    return cfg, pd.DataFrame(rows), keys, tmp_path


def spy_cam(monkeypatch, fake: bool = False) -> list:
    """Record (model, number of images, input device, weight device) of every CAM call; `fake`: return zero maps
    on the CPU instead of computing (for devices without data, such as 'meta')."""
    calls, real = [], C.CamClassifier.cam

    def cam(self, x):
        calls.append((self, len(x), x.device.type, next(self.parameters()).device.type))
        if fake:
            return torch.zeros(len(x), 3, 3), torch.zeros(len(x), dtype=torch.long)
        return real(self, x)
    monkeypatch.setattr(C.CamClassifier, "cam", cam)
    return calls


def per_locator(calls, keys) -> dict:
    """{'hand': images, 'r1': ..., 'r2': ...} CAM'd, from `spy_cam`'s record."""
    names, out = {id(C.load_locator(k)[0]): name for name, k in keys.items()}, dict.fromkeys(keys, 0)
    for model, n, *_ in calls:
        out[names[id(model)]] += n
    return out


def test_cam_is_computed_once_per_locator_and_image(setup, monkeypatch):
    cfg, df, keys, _ = setup
    calls = spy_cam(monkeypatch)
    C.region_images(cfg, df, "H", cfg.size, keys)
    assert per_locator(calls, keys) == dict(hand=14, r1=0, r2=0)
    C.region_images(cfg, df, "H+R1", 24, keys)           # another region set and size: only R1 is new
    C.region_images(cfg, df, "H", cfg.size, keys, tau_hand=30.0)   # another tau: nothing new
    C.region_images(cfg.replace(cam_scale="authors"), df, "H+R1", cfg.size, keys)   # another scale: nothing new
    assert per_locator(calls, keys) == dict(hand=14, r1=14, r2=0)
    C.region_images(cfg, df, "H+R1+R2", cfg.size, keys)
    C.region_images(cfg, df, "R1+R2", cfg.size, keys)
    C.locator_images(cfg, df, "r2", keys)
    assert per_locator(calls, keys) == dict(hand=14, r1=14, r2=14)
    C.region_images(cfg, df, "R2", cfg.size, keys, tau_r1=30.0)   # Region-2 runs on a differently erased image
    assert per_locator(calls, keys)["r2"] <= 28 and per_locator(calls, keys)["r1"] == 14
    with uncached_localisation():   # latency measurements (`bac.predict.latency`): the localiser runs every time
        C._locate_one(read_image(df.path[0]), keys["hand"], 20.0)
    assert per_locator(calls, keys)["hand"] == 15


def test_boxes_from_the_cached_map_equal_boxes_computed_directly(setup):
    cfg, df, keys, _ = setup
    for path in df.path[:4]:
        image = read_image(path)
        for name in ("hand", "r1"):
            model, size = C.load_locator(keys[name])[0], SIZES[name]
            for scale in (100.0, "authors"):
                with one_thread():
                    maps = C.attention_maps(model, letterbox(image, size)[None, None], scale=scale)
                direct = C.boxes_from_maps(maps, [image.shape], [10, 50, 80], size)
                for tau in (10, 50, 80):
                    assert C._locate_one(image, keys[name], tau, scale) == direct[tau][0]
        assert (C.map_dir(keys["hand"]) / f"{image_hash(image)}.npy").exists()   # stored by content


def test_region_images_equal_the_stacked_pipeline_and_store_no_stack(setup, monkeypatch):
    cfg, df, keys, tmp_path = setup
    params = C.region_params(cfg, "O+H+R1+E+R2", keys)
    got = C.region_images(cfg.replace(workers=2), df, "O+H+R1+E+R2", cfg.size, keys)   # 10 train rows: 2 processes
    cache = tmp_path / "cache"
    written = sorted(p.name for p in cache.iterdir() if not p.name.startswith("markers-"))  # (films' markers)
    assert written == ["cams", "models"]   # no stacked regions written
    assert sorted(len(list(d.iterdir())) for d in (cache / "cams").iterdir()) == [14, 14, 14]  # a map per image
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "other"))   # an empty cache: every CAM computed again
    for split, a in got.items():
        rows = df[df.split == split]
        want = np.stack([C.regions_pipeline(read_image(p), cfg.size, **params) for p in rows.path])
        assert a.dtype == np.uint8 and a.shape == (len(rows), 5, cfg.size, cfg.size)
        assert np.array_equal(a, want)
    assert C.region_images(cfg, df, "O", cfg.size, keys)["train"].shape == (10, 1, cfg.size, cfg.size)  # plain


def test_prepass_runs_on_the_configured_device(setup, monkeypatch):
    """A device other than the CPU gets the CAMs of every image in batches before the crops ('meta': a device
    without data, the spy returns zero maps), so no crop computes a CAM on the CPU."""
    cfg, df, keys, _ = setup
    calls = spy_cam(monkeypatch, fake=True)
    out = C.region_images(cfg.replace(device="meta"), df, "H+R1+R2", cfg.size, keys)
    assert calls and {(x, w) for _, _, x, w in calls} == {("meta", "meta")}   # inputs and weights on the device
    assert sum(n for _, n, _, _ in calls) == 3 * 14 and max(n for _, n, _, _ in calls) == 14   # batched, once
    image = read_image(df.path[0])
    assert np.array_equal(out["train"][0, 0], letterbox(image, cfg.size))   # zero map: no box, the whole image
    assert C.load_locator(keys["hand"])[0].fc.weight.device.type == "cpu"   # the shared CPU model is not moved
    calls.clear()
    C.region_images(cfg.replace(device="meta"), df, "H+R1+R2", cfg.size, keys)
    assert not calls   # all cached


def test_batched_maps_equal_per_image_maps(setup, monkeypatch):
    cfg, df, keys, tmp_path = setup
    paths = list(df.path)
    assert C.cache_maps(paths, keys["r1"], "cpu", bs=4) == 14
    assert C.cache_maps(paths, keys["r1"], "cpu", bs=4) == 0   # cached: nothing again
    batched = {p: C.cached_map(keys["r1"], read_image(p)) for p in paths}   # read back from the cache
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "other"))   # the localisers stay loaded (`load_locator`)
    for p in paths:
        single = C.cached_map(keys["r1"], read_image(p))   # computed on one image, one thread
        assert np.allclose(batched[p], single, rtol=1e-4, atol=1e-5 * np.abs(single).max())
    erase = (keys["r1"], 50.0, 0, 100.0)   # Region-2 on the erased images: the same maps as the pipeline's
    C.cache_maps(paths, keys["r2"], "cpu", bs=5, erase=erase)
    calls = spy_cam(monkeypatch)
    C.region_images(cfg, df, "R2", cfg.size, keys)
    assert not calls


def test_cache_bytes_per_image_counts_plain_images_and_maps():
    cfg = config.resolve("smoke", "chen2022", overrides=dict(cls_backbone_kwargs=TINY))
    r = C.cache_bytes_per_image(cfg, n=2, long_side=120)
    plain = sum(128 + s * s for s in C.plain_sizes(cfg))   # .npy header + uint8 (1, s, s)
    maps = [v for k, v in r["folders"].items() if k.startswith("cams/")]
    assert len(maps) == 3 and all(v < 1000 for v in maps)
    marks = sum(v for k, v in r["folders"].items() if k.startswith("markers-"))   # each film's erased pixels
    assert r["per_image"] == pytest.approx(plain + sum(maps) + marks) and r["fixed"] > 0
