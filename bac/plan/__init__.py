"""What a profile costs before it starts: `bac plan --profile full [--data-dir D] [--only GLOB] [--gpu H200]`.

Per notebook: its trainings (`bac.plan.grids.trainings`: count x epochs x images), the disk cache it writes,
host RAM and GPU memory per training, and GPU hours on a named GPU. Where each number comes from:

- **FLOPs and activation memory per image** are counted on the model as built here (torch's
  `FlopCounterMode`; the tensors autograd keeps for the backward pass, an upper bound: a tensor kept twice
  counts twice), built on the meta device (no memory, no weights), or on the CPU at batch 2 where a model
  needs real numbers (`.item()`).
- **GPU images/s**: measured on that GPU by `make bench` when `benchmarks/results/throughput.json` has the
  training; otherwise estimated as `MFU` x the GPU's dense bf16 peak / (3 x forward FLOPs), and the table says
  "estimated". The estimate is the weakest number here: a GPU run replaces it.
- **Preprocessing seconds and cache bytes per image** come from the scale rehearsal
  (`benchmarks/rehearse_full.py`: every notebook's full-profile preprocessing on synthetic radiographs at
  RSNA resolution, `benchmarks/results/rehearsal.json`), scaled by the number of images and CPU cores.

`check_disk(profile, ...)` is what `bac run --profile full` calls first: it refuses to start when the cache would
not fit on the disk, naming what does not fit.
"""
from __future__ import annotations

import fnmatch
import json
import os
from functools import lru_cache

import pandas as pd

from bac.env import REPO
from bac.plan.grids import RSNA, Training, trainings
# name: (dense bf16 tensor TFLOP/s and memory bandwidth TB/s from the vendor's data sheet, memory GiB, CPU cores of
# a typical lent machine)
GPUS = {"H200": (989.0, 4.8, 141, 16), "H100-SXM": (989.0, 3.35, 80, 16), "A100-80GB": (312.0, 2.0, 80, 16),
        "L40S": (362.0, 0.864, 48, 16)}
# Assumed, until `make bench` on the GPU measures it: a training step reaches MFU of the bf16 peak, or, when its
# activations are large for its FLOPs (MobileNet, depthwise convolutions), moves each byte autograd keeps three
# times (written, read back, its gradient) at BW_SHARE of the memory bandwidth: the slower of the two bounds.
MFU, BW_SHARE = 0.35, 0.5
RESULTS = REPO / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------ per-image costs
@lru_cache(maxsize=None)
def _model_cost(method: str, changes: str, size: int, chans: int) -> dict:
    """Forward GFLOPs, activation bytes kept for backward and parameters per image of one training's model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    saved = [0]

    def pack(t):   # activations only: the weights autograd keeps are leaves that require a gradient
        if not (t.is_leaf and t.requires_grad):
            saved[0] += t.numel() * t.element_size()
        return t

    spec = json.loads(changes)
    kind = spec.get("kind") if method == "localiser" else None
    for device in ("meta", "cpu"):   # the meta device is free; a model that needs real numbers runs on the CPU
        saved[0] = 0
        try:
            with torch.device(device):
                model, step = _model(method, kind, spec, size, chans)
            model.train()
            with FlopCounterMode(display=False) as fc, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                step(model)
            return dict(gflops=fc.get_total_flops() / 2e9, act_bytes=saved[0] / 2,
                        params=sum(p.numel() for p in model.parameters()))
        except (RuntimeError, NotImplementedError, ValueError) as e:
            if device == "cpu":
                raise RuntimeError(f"cannot cost {method} {changes} at {size} px: {e}") from e
    raise AssertionError


def _model(method: str, kind: str | None, spec: dict, size: int, chans: int):
    """(model, step(model)): a training's model and one forward pass of a batch of two through it."""
    import torch
    from bac.config import resolve
    from bac.models import method as method_of
    x, male = torch.zeros(2, chans, size, size), torch.zeros(2)   # batch 2: batch norm needs two in training
    if kind == "detector":   # torchvision's Faster R-CNN: images and targets in, losses out
        from bac.preprocess.detect import build_detector
        target = [dict(boxes=torch.tensor([[0.1 * size, 0.1 * size, 0.8 * size, 0.9 * size]]),
                       labels=torch.ones(1, dtype=torch.int64))] * 2
        return build_detector(spec["arch"], size), lambda m: m(list(x[:, :3]), target)
    if kind == "unetpp":
        from bac.preprocess.unetpp import build_unetpp
        return build_unetpp(spec["encoder"], spec["decoder"]), lambda m: m(x)
    if kind == "chen_cls":
        from bac.models.chen2022 import CamClassifier
        return (CamClassifier(spec["backbone"], spec["pool"], chans, backbone_kwargs=spec.get("backbone_kwargs")),
                lambda m: m(x))
    known = {k: v for k, v in spec.items() if k in resolve("full", method)}
    cfg = resolve("full", method).replace(pretrained=False, **known)
    return method_of(method).build_final(cfg), lambda m: m(x, male)


def cost(t: Training) -> dict:
    """`_model_cost` of a training's model (and of its teacher, whose forward pass runs every step)."""
    c = dict(_model_cost(t.method, json.dumps(t.changes, sort_keys=True, default=str), t.size, t.chans))
    if t.teacher is not None:
        tc = _model_cost(t.method, json.dumps(t.teacher, sort_keys=True, default=str), t.size, t.chans)
        c["teacher_gflops"] = tc["gflops"]
    return c


def key(t: Training) -> str:
    """How the throughput table names a model: method, changes to its final model, input size and channels."""
    return f"{t.method} {json.dumps(t.changes, sort_keys=True, default=str)} {t.size}px {t.chans}ch"


def throughput_table(gpu: str) -> dict:
    """{`key`: measured training images/s} on `gpu` from `make bench` on that GPU ({} when never measured)."""
    path = RESULTS / "throughput.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    return table.get(gpu, {}).get("train_images_per_s", {})


def rehearsal() -> dict:
    """The scale rehearsal's measurements (`benchmarks/rehearse_full.py`), {} before it ran."""
    path = RESULTS / "rehearsal.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------------ the plan
def plan(profile: str = "full", sizes: dict | None = None, gpu: str = "H200", only: str | None = None,
         dry_run: bool = False, data_dir: str = "") -> pd.DataFrame:
    """One row per training: notebook, what, count, epochs, images, size, GFLOPs, memory, images/s, GPU hours."""
    if gpu not in GPUS:
        raise ValueError(f"GPU class {gpu!r} unknown; choose one of {', '.join(GPUS)}")
    from bac.config import resolve
    from bac.plan.grids import split_sizes
    peak, bandwidth, mem_gib, _ = GPUS[gpu]
    measured = throughput_table(gpu)
    workers = resolve(profile, "baseline").get("loader_workers", 0)
    rows = []
    for t in trainings(profile, sizes or RSNA, dry_run=dry_run, data_dir=data_dir):
        if only and not any(fnmatch.fnmatch(t.notebook, g.strip()) for g in only.split(",")):
            continue
        c = cost(t)
        label = key(t)
        step_gflops = 3 * c["gflops"] + c.get("teacher_gflops", 0.0)   # forward + backward (2x), teacher forward
        traffic = 3 * 0.5 * c["act_bytes"]   # bf16 activations: written, read back, their gradients
        est = 1 / max(step_gflops / (MFU * peak * 1e3), traffic / (BW_SHARE * bandwidth * 1e12))
        ips = measured.get(label, est)
        gpu_mem = (16 * c["params"] + t.bs * c["act_bytes"] * 0.5) / 2**30   # Adam fp32 state; bf16 activations
        held = t.bs if t.method == "localiser" else t.images + split_sizes(t.method, sizes or RSNA)["validation"]
        host = (held + 2 * 2 * workers * t.bs) * t.chans * t.size**2 / 2**30 + 12 * c["params"] / 2**30
        seen = t.count * t.epochs * t.images * t.passes
        rows.append(dict(notebook=t.notebook, method=t.method, what=t.what, count=t.count, epochs=t.epochs,
                         images=t.images, passes=t.passes, size=t.size, chans=t.chans, bs=t.bs,
                         gflops_fwd=round(c["gflops"], 1), params_m=round(c["params"] / 1e6, 1),
                         host_gib=round(host, 1), gpu_mem_gib=round(gpu_mem, 1),
                         fits=gpu_mem < 0.9 * mem_gib, images_per_s=round(ips),
                         source="measured" if label in measured else "estimated",
                         gpu_hours=seen / ips / 3600))
    return pd.DataFrame(rows)


def cache_bytes(profile: str = "full", sizes: dict | None = None, only: str | None = None) -> pd.DataFrame:
    """Disk cache per notebook: the rehearsal's measured bytes per image of each cache folder it wrote x the
    images of the notebook's split; a folder several notebooks write (same pipeline, size and parameters, e.g.
    the plain images at 512 px) is counted once, with the first, for the most images any of them prepares."""
    from bac.models import METHODS, method
    from bac.plan.grids import split_sizes
    reh, rows = rehearsal().get("cache_folders", {}), []
    picked = [(method(m).notebook, sum(split_sizes(m, sizes or RSNA).values())) for m in METHODS
              if method(m).notebook in reh and (not only or any(fnmatch.fnmatch(method(m).notebook, g.strip())
                                                                 for g in only.split(",")))]
    most = {}
    for nb, n in picked:
        for f in reh[nb]:
            most[f] = max(most.get(f, 0), n)
    for nb, n in picked:
        mine = {f: b for f, b in reh[nb].items() if f in most}
        total = sum(b * most.pop(f) for f, b in mine.items())
        rows.append(dict(notebook=nb, bytes_per_image=total / n, images=n, bytes=total))
    return pd.DataFrame(rows, columns=["notebook", "bytes_per_image", "images", "bytes"])


def preprocessing_hours(sizes: dict | None = None, cores: int = 16, only: str | None = None) -> pd.DataFrame:
    """CPU hours of each notebook's preprocessing from the rehearsal's seconds per image on one core."""
    n = sum((sizes or RSNA).values())
    reh = rehearsal().get("cpu_seconds_per_image", {})
    return pd.DataFrame([dict(notebook=nb, seconds_per_image=s, hours_on_cores=s * n / cores / 3600)
                         for nb, s in reh.items()
                         if not only or any(fnmatch.fnmatch(nb, g.strip()) for g in only.split(","))],
                        columns=["notebook", "seconds_per_image", "hours_on_cores"])


def feeding(table: pd.DataFrame, cores: int, batch_augment: bool = True) -> pd.DataFrame:
    """Per method: the fastest GPU images/s its trainings need against what `cores` loader processes deliver
    (`benchmarks/bench_loader.py`'s images/s per core, slicing only with batch augmentation on the device, and
    augmenting per image on the CPU)."""
    path = RESULTS / "loader.json"
    loader = json.loads(path.read_text())["methods"] if path.exists() else {}
    rows = []
    for m, need in table[table.method != "localiser"].groupby("method", sort=False)["images_per_s"].max().items():
        per = loader.get(m, {})
        rows.append(dict(method=m, gpu_images_per_s=need, cpu_slicing=cores * per.get("batch_slice", float("nan")),
                         cpu_augmenting=cores * per.get("cpu_augment", float("nan"))))
    out = pd.DataFrame(rows, columns=["method", "gpu_images_per_s", "cpu_slicing", "cpu_augmenting"])
    out["fed"] = out["cpu_slicing" if batch_augment else "cpu_augmenting"] >= out.gpu_images_per_s
    return out


def summary(table: pd.DataFrame, cache: pd.DataFrame, prep: pd.DataFrame) -> pd.DataFrame:
    """Per notebook: trainings, images seen, GPU hours, peak GPU memory, cache GB, preprocessing hours; a total."""
    per = table.groupby("notebook", sort=False).agg(
        trainings=("count", "sum"), images_seen=("images", lambda s: int((s * table.loc[s.index, "epochs"]
                                                                          * table.loc[s.index, "count"]).sum())),
        gpu_hours=("gpu_hours", "sum"), peak_gpu_mem_gib=("gpu_mem_gib", "max"))
    per = per.join(cache.set_index("notebook")["bytes"].rename("cache_gb") / 1e9, how="outer")
    per = per.join(prep.set_index("notebook")["hours_on_cores"].rename("preprocess_hours"), how="outer")
    per.loc["total"] = per.sum(numeric_only=True)
    per.loc["total", "peak_gpu_mem_gib"] = per["peak_gpu_mem_gib"].iloc[:-1].max()
    return per


def print_plan(profile: str = "full", sizes: dict | None = None, gpu: str = "H200", only: str | None = None,
               dry_run: bool = False, data_dir: str = "") -> pd.DataFrame:
    """`bac plan`: the tables, and the assumptions they rest on."""
    sizes = sizes or (count_images(data_dir) if data_dir else RSNA)
    table = plan(profile, sizes, gpu, only, dry_run, data_dir)
    cores = GPUS[gpu][3]
    per = summary(table, cache_bytes(profile, sizes, only), preprocessing_hours(sizes, cores, only))
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 30):
        print(f"# plan: profile {profile}{' (dry run)' if dry_run else ''}, images {sizes}, one {gpu}, "
              f"{cores} CPU cores\n")
        print(table.drop(columns=["method"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print("\n# per notebook\n")
        print(per.to_string(float_format=lambda v: f"{v:.3g}"))
        print(f"\n# feeding: images/s the GPU needs vs {cores} loader cores (benchmarks/results/loader.json)\n")
        print(feeding(table, cores).to_string(index=False, float_format=lambda v: f"{v:.0f}"))
    from bac.preprocess import MMAP_BYTES
    reh = rehearsal()
    print(f"\nGPU images/s where 'estimated': the slower of {MFU} x {GPUS[gpu][0]:g} bf16 TFLOP/s / (3 x forward "
          f"FLOPs) and {BW_SHARE} x {GPUS[gpu][1]:g} TB/s / (3 x bf16 activation bytes) (assumed shares; "
          f"`make bench` on a {gpu} measures them); GPU memory: Adam fp32 state + bf16 activations kept for "
          f"backward x batch (an upper bound); host memory: the training's prepared train and validation images "
          f"(uint8; memory-mapped above {MMAP_BYTES / 2**30:g} GiB, then held in the page cache and shared with the "
          f"loader workers), the batches the workers have in flight, and a copy of the weights.")
    print("cache and preprocessing: " + (f"measured by the rehearsal ({reh.get('source', '?')})" if reh else
                                         "no rehearsal yet: run `python benchmarks/rehearse_full.py`"))
    return per


def count_images(data_dir: str) -> dict:
    """{'train', 'validation', 'test'}: images of the official sets in `data_dir` (RSNA layout)."""
    from bac.data.rsna import load_table
    df = load_table(data_dir)
    return {s: int((df.split == s).sum()) for s in ("train", "validation", "test")}


def check_disk(profile: str, sizes: dict | None = None, only: str | None = None, free: int | None = None) -> None:
    """Refuse to start (RuntimeError naming what does not fit) when the planned cache exceeds the free disk."""
    from bac.data import cache_root
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    free = free if free is not None else __import__("shutil").disk_usage(root).free
    cache = cache_bytes(profile, sizes, only)
    need = int(cache["bytes"].sum())
    if need > free:
        big = cache.sort_values("bytes", ascending=False)
        what = ", ".join(f"{r.notebook} {r.bytes / 1e9:.1f} GB" for r in big.itertuples())
        raise RuntimeError(f"the {profile} profile's cache needs {need / 1e9:.1f} GB ({what}) but {root} has "
                           f"{free / 1e9:.1f} GB free: free space, point BAC_CACHE_DIR at a larger disk, or run "
                           f"fewer notebooks (--only); `bac plan --profile {profile}` shows the plan")
    if os.environ.get("BAC_VERBOSE"):
        print(f"disk: the cache needs {need / 1e9:.1f} GB of {free / 1e9:.1f} GB free at {root}")
