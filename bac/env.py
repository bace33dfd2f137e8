"""`describe()`: versions, git revision, device, profile and data source, printed by every notebook.

Used in: every notebook (environment cell), `bac.report.save_metrics`.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "torchvision", "timm", "fastai", "numpy", "scikit-image", "segmentation-models-pytorch",
            "grad-cam", "papermill")
REPO = Path(__file__).resolve().parent.parent


def git_revision() -> str:
    """The checkout's commit (with '-dirty' if files changed), or 'unknown' outside a git checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (rev + ("-dirty" if dirty else "")) if rev else "unknown"


def device_name(requested: str = "auto") -> str:
    import torch
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use device='cpu' or 'auto'")
    return requested


def describe(cfg: dict | None = None, show: bool = True) -> dict:
    """Collect (and print) what produced a result: versions, revision, device, profile, data."""
    import torch
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in PACKAGES:
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    dev = device_name((cfg or {}).get("device", "auto"))
    info.update(revision=git_revision(), device=dev,
                device_name=torch.cuda.get_device_name(0) if dev.startswith("cuda") else platform.processor() or "cpu",
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    if cfg is not None:
        info.update({k: cfg.get(k) for k in ("profile", "paper", "seed", "dry_run", "data_source", "data_dir")})
        if cfg.get("label_files"):
            info["label_files"] = cfg["label_files"]
    if show:
        width = max(map(len, info))
        print("\n".join(f"{k:<{width}}  {v}" for k, v in info.items()))
    return info
