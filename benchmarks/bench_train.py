"""Training images/s of each method's full-profile model, through the real loader (`bac.train.dataloaders` and
`bac.train.learner` with the profile's workers, batch augmentation and mixed precision), on this machine.

    python benchmarks/bench_train.py [--steps 50] [--only ren2019,li2021] [--device auto]   (make bench)

Inputs are random uint8 images of the final model's input shape, memory-mapped from a temporary file as the
prepared-image cache is. On a GPU: images/s over the steps after two warm-up steps, peak GPU memory and the
share of the time the GPU waited for the loader; the results go into benchmarks/results/throughput.json under
the GPU's name (what `bac plan` uses instead of its estimate). On a CPU: a few steps at batch 2, recorded under
"cpu" (the plan never uses them for a GPU).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def final_input(method: str, cfg) -> tuple[int, int]:
    """(size, channels) of the images a method's final model trains on."""
    if method == "ren2019":   # S5: the attention input (image + ridge map)
        return int(cfg.size), 2
    if method == "chen2022":  # the stacked regions
        return int(cfg.size), len(cfg.final_regions.split("+"))
    return int(cfg.get("resize", cfg.size)), 1   # (Liu's model crops or resizes its `resize` input itself)


def bench(method: str, steps: int, device: str, bs: int | None) -> dict:
    import pandas as pd
    import torch
    from fastai.callback.core import Callback
    from bac import train
    from bac.config import resolve
    from bac.models import method as method_of
    cfg = resolve("full", method).replace(pretrained=False, device=device, max_steps=steps + 2)
    cpu = device == "cpu"
    bs = bs or (2 if cpu else int(cfg.bs))
    size, chans = final_input(method, cfg)
    n = bs * (steps + 2)
    path = Path(tempfile.mkdtemp()) / "images.npy"
    arr = np.lib.format.open_memmap(path, "w+", np.uint8, (n, chans, size, size))
    arr[:] = np.random.default_rng(0).integers(0, 256, arr.shape, dtype=np.uint8)
    arr.flush()
    images = {"train": np.load(path, mmap_mode="r"), "validation": np.load(path, mmap_mode="r")[:bs]}
    df = pd.DataFrame(dict(split=["train"] * n + ["validation"] * bs, boneage=np.linspace(1, 228, n + bs),
                           male=np.arange(n + bs) % 2))
    augment = cfg.get("augment") or {}
    dls = train.dataloaders(images, df, bs=bs, augment=train.make_augment(**augment) if augment else None,
                            seed=0, cfg=cfg)
    model = method_of(method).build_final(cfg)

    class Clock(Callback):   # wall time of each step, and the part spent waiting for the next batch
        order = 0

        def before_fit(self):
            self.t, self.wait, self.times, self.last = time.perf_counter(), [], [], None

        def before_batch(self):
            if self.training:
                now = time.perf_counter()
                self.wait.append(now - (self.last or self.t))

        def after_batch(self):
            if self.training:
                if torch.cuda.is_available() and not cpu:
                    torch.cuda.synchronize()
                self.last = time.perf_counter()
                self.times.append(self.last)

    clock = Clock()
    learn = train.learner(dls, model, cfg=cfg, cbs=[clock])
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-4)
    t = np.array(clock.times)
    timed = max(1, len(t) - 3)   # after two warm-up steps
    seconds = t[-1] - t[2] if len(t) > 3 else t[-1] - clock.t
    return dict(method=method, size=size, chans=chans, bs=bs, steps=len(t),
                images_per_s=bs * timed / seconds, loader_wait=float(np.sum(clock.wait[3:]) / seconds)
                if len(t) > 3 else float("nan"),
                gpu_mem_gib=None if cpu else torch.cuda.max_memory_allocated() / 2**30, amp=cfg.amp if not cpu else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 50 on a GPU, 2 on a CPU)")
    ap.add_argument("--bs", type=int, default=0, help="batch size (default: the profile's on a GPU, 2 on a CPU)")
    ap.add_argument("--only", default="", help="method ids, comma-separated")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    import torch
    from bac.env import device_name
    from bac.models import METHODS
    from bac.plan import key
    from bac.plan.grids import Training
    device = device_name(args.device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    gpu = next((g for g in ("H200", "H100", "A100", "L40S") if g in name), name)
    steps = args.steps or (2 if device == "cpu" else 50)
    rows = []
    for m in [m for m in METHODS if not args.only or m in args.only.split(",")]:
        r = bench(m, steps, device, args.bs or None)
        rows.append(r)
        print(f"{m:>10}: {r['images_per_s']:8.1f} images/s at {r['size']} px x {r['chans']} ch, batch {r['bs']}"
              + (f", {r['gpu_mem_gib']:.1f} GiB, loader wait {r['loader_wait']:.0%}" if r["gpu_mem_gib"] else ""))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "throughput.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    entry = table.setdefault(gpu, {"device": name, "train_images_per_s": {}, "runs": {}})
    for r in rows:
        k = key(Training(notebook="", method=r["method"], what="final", changes={}, size=r["size"],
                         chans=r["chans"], epochs=1, images=0, bs=r["bs"]))
        entry["train_images_per_s"][k] = r["images_per_s"]
        entry["runs"][k] = dict(r, date=time.strftime("%Y-%m-%d"))
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {path} [{gpu}]")


if __name__ == "__main__":
    main()
