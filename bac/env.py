"""`describe()`: versions, code revision, device, profile and data source, printed by every notebook.

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


# What counts as code for the revision: what computes and presents the results (the package, the notebooks and
# the pinned dependencies). Not the reports a run writes, the README, the tests or the docs: committing them
# does not change a result. Pathspecs relative to the repository root.
CODE_PATHSPEC = ("bac", "notebooks", "pyproject.toml", "environment.yml")


def _git(repo, *args) -> str | None:
    """stdout of `git -C repo args`, or None when git is missing, fails or hangs."""
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_revision(repo=REPO) -> str:
    """The code's revision: the short hash of the last commit that changed the code, '-dirty' if it differs now.

    "The code" is `CODE_PATHSPEC` (bac/, notebooks/, pyproject.toml, environment.yml), so

    - the hash is that of the last commit touching the code (`git log -1 -- bac notebooks ...`), not HEAD:
      committing the reports of a run (or tests, docs) on top of the code does not change it, and a second run
      from that commit writes the same revision into every metrics.json as the first;
    - '-dirty' is added only when tracked code files differ from HEAD (`git status --porcelain
      --untracked-files=no -- <code>`): a run that writes its reports does not make the notebooks after the
      first of that run read '-dirty'. Untracked files (data/, build/) never count.

    'unknown' outside a git checkout (or without git).
    """
    rev = _git(repo, "log", "-1", "--format=%h", "--", *CODE_PATHSPEC)
    if not rev:
        return "unknown"
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHSPEC)
    return rev + ("-dirty" if dirty else "")


def device_name(requested: str | None = "auto") -> str:
    """The torch device to compute on: `requested` ('cpu', 'cuda', 'cuda:1'), or for 'auto' (also '' or None,
    which used to come back unchanged and printed an empty device row) 'cuda' when torch sees a GPU, else 'cpu'."""
    import torch
    if not requested or requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use device='cpu' or 'auto'")
    return requested


def cpu_name() -> str:
    """The CPU model, e.g. 'Intel(R) Xeon(R) Processor'.

    `platform.processor()` is '' on many Linux machines (it asks `uname -p`) and only the architecture
    ('x86_64', 'arm', 'i386') elsewhere, so /proc/cpuinfo (Linux) and sysctl (macOS) are asked first.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            if brand:
                return brand
        except (OSError, subprocess.TimeoutExpired):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware_name(device: str) -> str:
    """What `device` ('cpu', 'cuda', 'cuda:1', 'mps') runs on: the GPU's name on CUDA, else the CPU model."""
    if device.startswith("cuda"):
        import torch
        index = torch.device(device).index
        return torch.cuda.get_device_name(index or 0)
    if device == "mps":
        return f"Apple GPU (mps) with {cpu_name()}"
    return cpu_name()


def describe(cfg: dict | None = None, df=None, show: bool = True) -> dict:
    """Collect (and print) what produced a result: versions, revision, device, profile, data (the folder, split
    and label files of the table `df` from `bac.data.load`).

    `device` is what the notebook computes on ('cpu' or 'cuda', `cfg.device` resolved), `device_name` the
    hardware behind it (the GPU's name, or the CPU model). Empty values are printed as '(none)'.
    """
    import torch
    info = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in PACKAGES:
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    dev = device_name((cfg or {}).get("device"))
    info.update(revision=git_revision(), device=dev, device_name=hardware_name(dev),
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    if cfg is not None:
        info.update({k: cfg.get(k) for k in ("profile", "paper", "seed", "dry_run", "data_source", "data_dir")})
    if df is not None:
        info.update(data_root=df.attrs.get("root"), split_scheme=df.attrs.get("split_scheme"))
        if df.attrs.get("label_files"):
            info["label_files"] = df.attrs["label_files"]
    if show:
        width = max(map(len, info))
        print("\n".join(f"{k:<{width}}  {'(none)' if v in ('', None) else v}" for k, v in info.items()))
    return info
