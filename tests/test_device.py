"""The learned and unsupervised hand localisers compute on the device they are given (bac.preprocess): Faster
R-CNN and UNet++ training and inference, Li 2021's clustering batched over images, and the batched
localisation pass that `prepare` runs first on a GPU.

There is no GPU here: the device is 'cpu:0', a name torch accepts that differs from the 'cpu' of the
reference runs, and a spy records where modules and tensors are sent, so that each test fails when the
device is ignored. The batched clustering must give the labels the per-image one gives.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

import bac.preprocess as P  # noqa: E402
from bac.preprocess import detect as D  # noqa: E402
from bac.preprocess import targets as T  # noqa: E402
from bac.preprocess import unetpp as U  # noqa: E402
from bac.preprocess import unsupervised as L  # noqa: E402

DEVICE = "cpu:0"
LI = dict(seg_size=32, p=8, q=8, iterations=6)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "cache"))
    D.load_detector.cache_clear()
    U.load_unetpp.cache_clear()
    yield tmp_path / "cache"
    D.load_detector.cache_clear()
    U.load_unetpp.cache_clear()


@pytest.fixture
def sent(monkeypatch):
    """(class name, device) of every `.to(device)` of a module or tensor while the test runs; a tensor is named
    by its dimensions ('Tensor4d'): data, not the parameters and buffers that a module's `.to` moves."""
    calls, moving = [], []

    def spy(original, kind):
        def to(self, *args, **kwargs):
            dev = kwargs.get("device", args[0] if args else None)
            if isinstance(dev, (str, torch.device)) and not moving:
                calls.append((type(self).__name__ if kind == "module" else f"Tensor{self.ndim}d", str(dev)))
            if kind == "tensor":
                return original(self, *args, **kwargs)
            moving.append(self)
            try:
                return original(self, *args, **kwargs)
            finally:
                moving.pop()
        return to
    monkeypatch.setattr(torch.nn.Module, "to", spy(torch.nn.Module.to, "module"))
    monkeypatch.setattr(torch.Tensor, "to", spy(torch.Tensor.to, "tensor"))
    return calls


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic set (4 training images, long side 128) and its table."""
    from bac import config
    from bac.data import load, synth
    root = tmp_path_factory.mktemp("synth") / "set"
    synth.make_dataset(root, 4, 1, 1, long_side=128, seed=0, workers=1, progress=False)
    cfg = config.resolve("smoke", "zheng2024", data_dir=str(root), dry_run=True).replace(max_steps=1)
    return cfg, load(cfg, progress=False)


def _images(n=4, long_side=128):
    from bac.data import synth
    return [synth.render(age, bool(i % 2), seed=i, long_side=long_side).image
            for i, age in enumerate((40, 100, 160, 210)[:n])]


# ------------------------------------------------------------------------------------------ Li 2021
def test_batched_clustering_gives_the_per_image_labels():
    """B networks side by side (grouped convolutions) = B networks one by one, each with its own seed and its own
    early stop; images of another shape go in another batch."""
    small = [P.resize_long(im, 32) for im in _images()]
    small.append(small[0][:, :20].copy())      # another shape
    for min_labels in (3, 6):                  # 6: some networks stop early, others train on
        kw = dict(p=8, q=8, iterations=8, min_labels=min_labels)
        alone = [L.cluster(im, seed=s, **kw) for s, im in enumerate(small)]
        together = L.cluster_batch(small, seed=list(range(len(small))), batch=3, **kw)
        for a, b in zip(alone, together):
            assert a.shape == b.shape and (a == b).mean() > 0.99
            assert np.array_equal(L.hand_mask(a), L.hand_mask(b))


def test_batched_clustering_runs_on_the_given_device(sent):
    L.cluster_batch([P.resize_long(im, 32) for im in _images(2)], p=8, q=8, iterations=2, device=DEVICE)
    assert ("Sequential", DEVICE) in sent and ("Tensor4d", DEVICE) in sent    # the networks and the images
    with pytest.raises(ValueError, match="seeds"):
        L.cluster_batch([np.zeros((8, 8), np.uint8)], seed=[0, 1])


def test_prepare_localises_first_on_the_device_and_stores_what_the_cpu_would(tmp_path, monkeypatch, sent):
    """On a device other than the CPU, 'li2021' is localised in batches before the per-image pipeline, which
    then only reads the cache; the prepared images are those of the CPU path. On the CPU no batch runs."""
    from PIL import Image
    import pandas as pd
    paths = []
    for i, im in enumerate(_images()):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    df = pd.DataFrame(dict(path=paths))
    devices = []
    batched = P.BATCH_LOCATORS["li2021"]
    monkeypatch.setitem(P.BATCH_LOCATORS, "li2021", lambda images, **kw: devices.append(kw["device"]) or
                        batched(images, **kw))
    cpu = P.prepare(df, "li2021", 32, progress=False, device="cpu", **LI)      # per image
    cpu_notes = P.notes(df, "li2021", 32, **LI)
    assert devices == []
    monkeypatch.setenv("BAC_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setattr(L, "cluster", lambda *a, **k: pytest.fail("the per-image clustering ran"))
    on_device = P.prepare(df, "li2021", 32, progress=False, device=DEVICE, **LI)
    assert devices == [DEVICE] and ("Sequential", DEVICE) in sent
    assert np.array_equal(cpu, on_device) and P.notes(df, "li2021", 32, **LI) == cpu_notes


# ------------------------------------------------------------------------------------------ trained localisers
@pytest.mark.parametrize("kind", ["faster_rcnn", "unetpp"])
def test_a_trained_localiser_trains_and_infers_on_the_given_device(kind, data, monkeypatch, sent):
    import bac.env
    cfg, df = data
    fit, infer, batch, model, images = {
        "faster_rcnn": (D.fit_detector, D.detect, D.detect_batch, "FasterRCNN", "Tensor3d"),
        "unetpp": (U.fit_unetpp, U.predict_mask, U.predict_masks, "UnetPlusPlus", "Tensor4d")}[kind]
    monkeypatch.setattr(bac.env, "device_name", lambda requested="auto": DEVICE)
    key = fit(cfg, df, progress=False)
    assert (model, DEVICE) in sent and (images, DEVICE) in sent   # the model and the images
    sent.clear()
    image = _images(1)[0]
    out = infer(image, key, DEVICE)
    assert (model, DEVICE) in sent and (images, DEVICE) in sent
    if kind == "faster_rcnn":
        assert batch([image], key, DEVICE) == [out]
    else:
        assert np.array_equal(batch([image], key, DEVICE)[0], out)


def test_trained_localisers_are_localised_first_on_the_device(tmp_path, monkeypatch, sent):
    """'ren2019' and 'zheng2024' on a device: the batched pass stores a localisation for every image, the
    per-image detector / UNet++ never runs."""
    from PIL import Image
    import pandas as pd
    from bac.preprocess.detect import build_detector
    from bac.preprocess.intensity import quantiles
    from bac.preprocess.unetpp import build_unetpp
    from bac.data.rsna import read_image
    torch.manual_seed(0)
    T.save(build_unetpp("resnet18", (16, 8, 8, 8, 8)), "unetpp-test", dict(encoder="resnet18",
                                                                            decoder=[16, 8, 8, 8, 8], size=32))
    T.save(build_detector("mobilenet_v3_320", 64), "detector-test", dict(arch="mobilenet_v3_320", size=64))
    images = _images(3)
    paths = []
    for i, im in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    df = pd.DataFrame(dict(path=paths))
    monkeypatch.setattr(D, "detect", lambda *a, **k: pytest.fail("the per-image detector ran"))
    monkeypatch.setattr(U, "predict_mask", lambda *a, **k: pytest.fail("the per-image UNet++ ran"))
    ren = dict(detector="detector-test", reference=quantiles(images, n=64), sigmas=[1.0])
    assert P.prepare(df, "ren2019", 32, progress=False, device=DEVICE, **ren).shape == (3, 2, 32, 32)
    assert ("FasterRCNN", DEVICE) in sent
    assert P.prepare(df, "zheng2024", 32, progress=False, device=DEVICE, unetpp="unetpp-test").shape == (3, 1, 32, 32)
    assert ("UnetPlusPlus", DEVICE) in sent
    for path in paths:   # the films as the pipelines read them (markers erased: `read_image`)
        im = read_image(path)
        assert P.localised("unetpp", dict(key="unetpp-test"), im)
        assert P.localised("detector", dict(key="detector-test", min_score=0.3), D.work_image(im, 32, ren["reference"]))


def test_train_steps_moves_the_model_and_refuses_an_unknown_precision(sent):
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    losses = T.train_steps(model, lambda idx, rng: model(x[idx].to(DEVICE)).pow(2).mean(), 4, 2, 2, 0.1,
                           progress=False, device=DEVICE, amp="bf16")   # amp is ignored off CUDA
    assert len(losses) == 2 and ("Linear", DEVICE) in sent
    with pytest.raises(ValueError, match="amp"):
        T.train_steps(model, lambda idx, rng: model(x).sum(), 4, 1, 2, 0.1, progress=False, amp="fp8")
