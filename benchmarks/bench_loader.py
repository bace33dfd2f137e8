"""Loader images/s per CPU core for each paper's full-profile training input, with augmentation per image on the
CPU and with augmentation of whole batches on the device.

    python benchmarks/bench_loader.py [--only ren2019,li2021] [--seconds 4] [--n 192]

Per method: the final model's input (size, channels), batch size and augmentation of `bac.config.resolve("full",
method)`, on random uint8 images memory-mapped from a temporary file (as the prepared-image cache is; the file
was just written, so it is read from the page cache, as a cache that fits in RAM is). Everything runs in this
process on one thread, as one DataLoader worker does (fastai sets workers to one thread each):

- cpu_augment: `cfg.batch_augment=False`: the per-image torchvision pipeline (`make_augment`), normalisation and
  collation on the CPU: what each worker does in that mode.
- batch_slice: `cfg.batch_augment=True`: the CPU only slices uint8 images and collates them (`DeviceFeed` off).
- device_augment_here: the same batches through `DeviceFeed` (`BatchAugment` + normalisation) timed on this CPU
  (one thread). On the training machine this runs on the GPU, not on the loader's cores.

Worker processes add the transfer of each batch through shared memory (not measured here). Writes
benchmarks/results/loader.json and prints a table; images/s x cores is what that many loader workers deliver.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def full_input(method: str, cfg) -> dict:
    """The final model's training input under `full`: size, channels, batch size and the per-image pipeline."""
    from bac import train
    from bac.models import ren2019
    channels = len(cfg.final_regions.split("+")) if method == "chen2022" else int(cfg.get("in_chans", 1) or 1)
    settings = dict(cfg.get("augment") or {})   # chen2022: no augmentation (the paper)
    make = ren2019.make_augment if method == "ren2019" else train.make_augment   # Ren's: brightness on 2 channels
    return dict(size=int(cfg.size), channels=channels, bs=int(cfg.bs), augment=settings, pipeline=make(**settings))


def _rate(epoch, seconds: float, fn=lambda b: b) -> tuple[float, int]:
    """Images/s of `fn` over the batches of `epoch()` (an iterable of batches, repeated for at least `seconds`;
    its first batch is a warm-up) and the number of images timed."""
    it = iter(epoch())
    fn(next(it))
    n, t0 = 0, time.perf_counter()
    while True:
        for b in it:
            fn(b)
            n += len(b[0])
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0), n
        it = iter(epoch())


def bench(method: str, n: int, seconds: float, folder: Path) -> dict:
    import pandas as pd
    from fastai.data.core import Pipeline
    from bac import config, train
    cfg = config.resolve("full", method)
    spec = full_input(method, cfg)
    size, c, bs = spec["size"], spec["channels"], spec["bs"]
    n = max(n, 4 * bs)
    path = folder / f"{method}.u8"
    mm = np.memmap(path, np.uint8, "w+", shape=(n, c, size, size))
    rng = np.random.default_rng(0)
    for i in range(0, n, 16):
        mm[i:i + 16] = rng.integers(0, 256, mm[i:i + 16].shape, dtype=np.uint8)
    mm.flush()
    del mm
    images = {"train": np.memmap(path, np.uint8, "r", shape=(n, c, size, size)),
              "validation": np.memmap(path, np.uint8, "r", shape=(n, c, size, size))[:bs]}
    df = pd.DataFrame(dict(split=["train"] * n + ["validation"] * bs, boneage=100.0, male=1.0))
    here = dict(device="cpu", loader_workers=0, amp="", channels_last=False)
    row = dict(method=method, size=size, channels=c, bs=bs, augment=spec["augment"], n_images=n)

    dls = train.dataloaders(images, df, bs=bs, augment=spec["pipeline"], seed=0,
                            cfg=cfg.replace(batch_augment=False, **here))
    row["cpu_augment"], row["cpu_augment_n"] = _rate(lambda: dls.train, seconds)

    dls = train.dataloaders(images, df, bs=bs, augment=spec["pipeline"], seed=0,
                            cfg=cfg.replace(batch_augment=True, **here))
    feed, dls.train.after_batch = dls.train.after_batch, Pipeline([])   # the CPU's part only: slicing, collating
    row["batch_slice"], row["batch_slice_n"] = _rate(lambda: dls.train, seconds)
    batches = list(dls.train)
    row["device_augment_here"], row["device_augment_here_n"] = _rate(lambda: batches, seconds, feed)
    path.unlink()
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated methods (default: all of bac.models.METHODS)")
    ap.add_argument("--seconds", type=float, default=4.0, help="time of each measurement")
    ap.add_argument("--n", type=int, default=160, help="images in each memory-mapped set (at least 4 batches)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import pandas as pd
    from bac import env
    from bac.models import METHODS
    methods = [m for m in METHODS if not args.only or m in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="bac-bench-loader-") as tmp:
        rows = [bench(m, args.n, args.seconds, Path(tmp)) for m in methods]
    machine = dict(cpu=env.cpu_name(), cores=os.cpu_count(), torch=torch.__version__, threads=1)
    out = dict(
        machine=machine,
        unit="images/s per CPU core (one process, one thread: one DataLoader worker)",
        modes=dict(cpu_augment="per-image augmentation + normalisation on the CPU (batch_augment=False)",
                   batch_slice="the CPU only slices and collates uint8 images (batch_augment=True)",
                   device_augment_here="BatchAugment + normalisation of those batches timed on this CPU, one "
                                       "thread; on a GPU machine it runs on the GPU"),
        methods={r["method"]: {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items() if k != "method"}
                 for r in rows})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(out, indent=1) + "\n")
    table = pd.DataFrame(rows).set_index("method")
    table["augment"] = table["augment"].map(lambda a: ", ".join(f"{k}={v}" for k, v in a.items()) or "none")
    cols = ["size", "channels", "bs", "cpu_augment", "batch_slice", "device_augment_here"]
    print(f"{machine['cpu']} ({machine['cores']} cores), torch {machine['torch']}: images/s per core "
          f"(one thread); x16 = 16 loader workers")
    shown = table[cols].copy()
    for k in ("cpu_augment", "batch_slice"):
        shown[f"{k} x16"] = shown[k] * 16
    print(shown.round(0).to_string())
    print("augmentation (full):\n" + table["augment"].to_string())
    print(f"device_augment_here runs on the GPU in training (timed here on one CPU thread). "
          f"Wrote {RESULTS / 'loader.json'}")


if __name__ == "__main__":
    main()
