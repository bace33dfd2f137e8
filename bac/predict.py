"""`bac predict`: bone age of new radiographs with a model trained by one of the paper notebooks.

A final model is saved by its notebook with `save_final(cfg, model, df)`: safetensors weights plus the config,
preprocessing pipeline and input size needed to rebuild it (the method's `build_final(cfg)`, found through the
registry `bac.models.METHODS`), so `load_final` never unpickles anything. Prediction reads PNG, JPEG or DICOM
(sex from the DICOM header when present), applies the model's own preprocessing, and writes the age in months and
years, the 90 % interval for models that output an age distribution, and a Grad-CAM overlay per image.

Used in: notebooks/90_comparison.ipynb, `bac predict`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bac import train
from bac.config import Config
from bac.models import METHODS, method, method_of
from bac.report import _jsonable


class PredictError(ValueError):
    pass


def final_path(out_dir, paper: str) -> Path:
    return Path(out_dir) / paper / "checkpoints" / "final.safetensors"


def save_final(cfg, model, df, name: str = "final") -> Path:
    """Save a notebook's final model, trained on `df`, with what `load_final` needs to rebuild and feed it."""
    from bac.report import report_dir
    return train.save_checkpoint(model, report_dir(cfg) / "checkpoints" / f"{name}.safetensors", _meta(cfg, df))


def _meta(cfg, df) -> dict:
    pipeline, size, params = method(cfg["paper"]).final_pipeline(cfg, df)
    from bac.data import code_version
    return dict(paper=cfg["paper"], config={k: v for k, v in cfg.items() if _jsonable(v)}, pipeline=pipeline,
                size=int(size), params=params, data_source=df.attrs.get("data_source", cfg.get("data_source")),
                split_scheme=df.attrs.get("split_scheme"), profile=cfg.get("profile"), code_version=code_version())


def load_final(model: str, reports=None):
    """(model, meta) from a paper id (its notebook's last saved final model) or a .safetensors path."""
    from bac.env import REPO
    from safetensors import safe_open
    if model in METHODS:
        path = final_path(reports or REPO / "reports", model)
        if not path.exists():
            raise PredictError(f"no trained {model} model at {path}: run its notebook first, e.g. "
                               f"`python -m bac run --profile demo --only '*{model}*'`, or pass --model CHECKPOINT")
    else:
        path = Path(model)
        if not path.exists():
            raise PredictError(f"--model {model!r} is neither a method id ({', '.join(METHODS)}) nor an existing "
                               f"checkpoint file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("bac", "{}"))
    except Exception as err:
        raise PredictError(f"{path} is not a safetensors checkpoint written by bac ({err}); only safetensors "
                           f"files are loaded (never pickles)") from err
    if meta.get("paper") not in METHODS:
        raise PredictError(f"{path} carries no bac model metadata (method id); save models with "
                           f"bac.predict.save_final(cfg, model, df)")
    cfg = Config(meta["config"]).replace(pretrained=False)  # the checkpoint holds the weights
    net = method(meta["paper"]).build_final(cfg)
    try:
        train.load_checkpoint(net, path)
    except (ValueError, RuntimeError) as err:
        raise PredictError(f"checkpoint {path} does not match the {meta['paper']} model it claims: {err}") from err
    return net.eval(), meta


def parse_sex(value) -> bool | None:
    if value is None:
        return None
    v = str(value).strip().upper()
    if v in ("M", "MALE", "1", "TRUE"):
        return True
    if v in ("F", "FEMALE", "0", "FALSE"):
        return False
    raise PredictError(f"unknown sex {value!r}: use M or F")


def read_input(path, sex=None) -> tuple[np.ndarray, bool]:
    """The grey image of a PNG/JPEG/DICOM file and the sex to use (the argument, else the DICOM header)."""
    from bac.data import rsna
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        image = rsna.read_image(path)
    except Exception as err:
        raise PredictError(f"{path}: cannot read this image ({err}); PNG, JPEG and DICOM are supported") from err
    male = parse_sex(sex)
    if male is None:
        try:
            male = rsna.read_dicom_sex(path)
        except Exception:
            male = None
    if male is None:
        raise PredictError(f"{path}: the sex is needed (bone age standards differ by sex): pass --sex M or --sex F"
                           f" (DICOM files with PatientSex need none)")
    return image, male


def prepare_input(image: np.ndarray, meta: dict) -> np.ndarray:
    from bac.preprocess import PIPELINES
    return PIPELINES[meta["pipeline"]](image, meta["size"], **meta["params"])


def localised_input(image: np.ndarray, meta: dict) -> tuple[np.ndarray, str]:
    """(`prepare_input(image, meta)`, why its localisation was rejected: '' when it was not, or when the model's
    pipeline does not localise)."""
    from bac.preprocess import run_pipeline
    x, info = run_pipeline(meta["pipeline"], image, meta["size"], **meta["params"])
    return x, str(info.get("reason") or "")


def distribution_of(model, output):
    """Per-image age distribution (B, K) over months 1..K when the model's method outputs one, else None."""
    m = method_of(model)
    return None if m is None or m.age_distribution is None else m.age_distribution(output)


def cam_layer(model):
    """(layer, reshape_transform) for Grad-CAM: the method's `cam_target`, else the last convolution."""
    m = method_of(model)
    if m is not None and m.cam_target is not None:
        return m.cam_target(model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return (convs[-1], None) if convs else (None, None)


def predict_files(files, sex=None, model: str = "li2021", out=None, reports=None, cam: bool = True,
                  force: bool = False) -> pd.DataFrame:
    """Predict every file; writes `<out>/predictions.csv` and one Grad-CAM PNG per image when `out` is set.

    A file that cannot be predicted (unreadable, no sex) gets a row with its `error` instead of an age, so
    a batch reports every input; a model that cannot be loaded raises `PredictError` before any file. A film
    whose hand localisation is rejected (`bac.preprocess.boxes.check_box`: the model would see the whole film,
    not a hand) is refused with the reason, unless `force`: then it is predicted and its `localisation` column
    says "rejected (reason), forced".
    """
    from bac import metrics
    net, meta = load_final(model, reports)
    rows = []
    out = Path(out) if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for f in files:
        t0 = time.perf_counter()
        row = dict(file=str(f), sex="", months=np.nan, years=np.nan, lo90=np.nan, hi90=np.nan, model=meta["paper"],
                   seconds=np.nan, cam_png="", localisation="", error="")
        try:
            image, male = read_input(f, sex)
        except PredictError as err:
            rows.append({**row, "error": str(err)})
            continue
        x, rejected = localised_input(image, meta)
        if rejected and not force:
            rows.append({**row, "localisation": f"rejected ({rejected})",
                         "error": f"{f}: the hand localisation of {meta['pipeline']} was rejected ({rejected}): the "
                                  f"model would see the whole film, not a hand. Check that it is one hand, whole and "
                                  f"exposed; --force predicts anyway"})
            continue
        row["localisation"] = f"rejected ({rejected}), forced" if rejected else ""
        xt = train.normalize(torch.from_numpy(x[None]))
        mt = torch.tensor([float(male)])
        with torch.no_grad():
            output = net(xt, mt)
        months = float(train.age_of(output).reshape(-1)[0])
        row.update(sex="M" if male else "F", months=round(months, 2), years=round(months / 12, 2))
        probs = distribution_of(net, output)
        if probs is not None:
            lo, hi = metrics.distribution_interval(probs.detach().cpu().numpy(), 0.9)
            row.update(lo90=float(lo[0]), hi90=float(hi[0]))
        row["seconds"] = round(time.perf_counter() - t0, 4)
        if out and cam:
            row["cam_png"] = str(_save_cam(net, xt, mt, x, out / f"{Path(f).stem}_gradcam.png", row))
        rows.append(row)
    df = pd.DataFrame(rows)
    if out:
        from bac.report import portable
        df.assign(file=df.file.map(portable), cam_png=df.cam_png.map(portable)).to_csv(out / "predictions.csv",
                                                                                       index=False)
    return df


@torch.no_grad()
def predict_arrays(net, images: np.ndarray, male, bs: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Months (N,) and, for distribution models, the age distributions (N, K) of prepared uint8 images."""
    net.eval()
    device = next(net.parameters()).device
    male = torch.as_tensor(np.asarray(male, np.float32))
    months, probs = [], []
    for i in range(0, len(images), bs):
        x = train.normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + bs]))).to(device)
        output = net(x, male[i:i + bs].to(device))
        months.append(train.age_of(output).float().flatten().cpu())
        p = distribution_of(net, output)
        if p is not None:
            probs.append(p.float().cpu())
    return torch.cat(months).numpy(), (torch.cat(probs).numpy() if probs else None)


def latency(net, meta: dict, paths, male, threads: int = 1, warmup: int = 1) -> dict:
    """Seconds per image on the CPU with `threads` threads: read the file, preprocess (the localiser runs: its
    per-image cache is bypassed), forward (batch 1). Wall-clock means (`*_s`) and this process's CPU time
    (`cpu_*_s`: less inflated when the CPU is shared)."""
    from bac.data.rsna import read_image
    from bac.preprocess import uncached_localisation
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    net = net.cpu().eval()
    times = []      # (preprocess, forward, cpu preprocess, cpu forward) per image after the warm-up
    try:
        with uncached_localisation():
            for i, (path, m) in enumerate(zip(paths, male)):
                t0, c0 = time.perf_counter(), time.process_time()
                x = prepare_input(read_image(path), meta)
                t1, c1 = time.perf_counter(), time.process_time()
                with torch.no_grad():   # (not around the pipeline: Li's segmentation network trains per image)
                    net(train.normalize(torch.from_numpy(x[None])), torch.tensor([float(m)]))
                if i >= warmup:
                    times.append((t1 - t0, time.perf_counter() - t1, c1 - c0, time.process_time() - c1))
    finally:
        torch.set_num_threads(old)
    if not times:
        raise ValueError(f"latency needs more than warmup={warmup} images, got {len(list(paths))}")
    prep, fwd, cpu_prep, cpu_fwd = (float(v) for v in np.mean(times, axis=0))
    return dict(preprocess_s=prep, forward_s=fwd, total_s=prep + fwd, cpu_preprocess_s=cpu_prep,
                cpu_forward_s=cpu_fwd, cpu_total_s=cpu_prep + cpu_fwd, n=len(times), threads=threads)


def same_run(meta: dict, cfg) -> bool:
    """Whether a saved final model is exactly what `fit_final(cfg, ...)` would train now: the same code version
    (`bac.data.code_version`) and every setting of `cfg` (data, profile, seed, dry run, official split, ...)
    equal to the one it was trained with. Anything else is retrained, never reused."""
    from bac.data import code_version
    saved = meta.get("config", {})
    same = lambda v, w: json.loads(json.dumps(v, default=str)) == w  # noqa: E731  (tuples are lists in JSON)
    return (meta.get("code_version") == code_version() and meta.get("split_scheme") == "official"
            and all(same(v, saved.get(k)) for k, v in cfg.items() if k not in RUN_FACTS and _jsonable(v)))


# Config fields that a run fills in from the settings, data and code (fitted localisers' keys) or that do not
# change what is trained: `same_run` does not compare them.
RUN_FACTS = ("command", "out_dir")


def comparison_model(paper: str, cfg, df, progress: bool = False):
    """(model, meta, how, checkpoint path) of `paper`'s final model on the official split `df`, for notebook 90.

    The method's settings are its profile's with the overrides of `cfg` that are its settings (`bac run --set`
    gives every notebook the same). Reuses the paper notebook's checkpoint, or one this notebook saved before, when
    it is exactly what would be trained now (same code and settings: `same_run`); otherwise trains it with the
    module's `fit_final` and saves it under `<out>/comparison/checkpoints/<paper>.safetensors`.
    """
    from bac import config
    known = {**config.COMMON.of(cfg["profile"]), **config.section(paper).of(cfg["profile"])}
    pcfg = config.resolve(cfg["profile"], paper, data_dir=cfg.get("data_dir", ""), seed=cfg["seed"],
                          out_dir=cfg["out_dir"], dry_run=cfg.get("dry_run", False),
                          overrides={k: v for k, v in (cfg.get("overrides") or {}).items() if k in known})
    if df.attrs.get("split_scheme") != "official":
        raise ValueError(f"comparison_model compares on the official split; df has {df.attrs.get('split_scheme')!r}")
    own = final_path(cfg["out_dir"], paper)
    here = Path(cfg["out_dir"]) / "comparison" / "checkpoints" / f"{paper}.safetensors"
    for path, how in ((own, f"checkpoint of notebook {paper}"),
                      (here, "checkpoint of an earlier run of this notebook")):
        if path.exists():
            net, meta = load_final(str(path))
            if same_run(meta, pcfg):
                return net, meta, how, path
    net = method(paper).fit_final(pcfg, df, progress=progress)
    path = train.save_checkpoint(net, here, _meta(pcfg, df))
    net, meta = load_final(str(path))
    return net, meta, "trained here on the official split", path


def _save_cam(net, xt, mt, x, path: Path, row) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bac import cam
    layer, reshape = cam_layer(net)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(x[0], cmap="gray")
    if layer is not None:
        with torch.enable_grad():
            heat = cam.gradcam(net, layer, xt, mt.numpy(), reshape_transform=reshape)[0]
        ax.imshow(heat, cmap="jet", alpha=0.35)
    interval = "" if np.isnan(row["lo90"]) else f" (90 %: {row['lo90']:.0f}-{row['hi90']:.0f})"
    ax.set_title(f"{row['months']:.1f} months{interval}, {row['sex']}", fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(args) -> int:
    """Entry point of `bac predict` (arguments parsed in bac/__main__.py): 0 ok, 1 some files failed or were refused
    (a rejected localisation), 2 no model."""
    import sys
    try:
        df = predict_files(args.images, sex=args.sex, model=args.model, out=args.out, force=args.force)
    except PredictError as err:
        print(f"bac predict: error: {err}", file=sys.stderr)
        return 2
    for r in df.itertuples():
        if r.error:
            print(f"bac predict: error: {r.error}", file=sys.stderr)
            continue
        interval = "" if np.isnan(r.lo90) else f"  90% interval {r.lo90:.0f}-{r.hi90:.0f} months"
        forced = f"  (localisation {r.localisation})" if r.localisation else ""
        print(f"{r.file}: {r.months:.1f} months ({r.years:.1f} years), sex {r.sex}{interval}  [{r.seconds:.2f} s]"
              f"{forced}")
    print(f"wrote {Path(args.out) / 'predictions.csv'}")
    return 1 if (df.error != "").any() else 0
