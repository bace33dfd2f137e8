"""Backbones from timm, with ImageNet weights when asked for, and a clear error when they cannot be had.

There is no network at run time on CI and many clusters: `pretrained=True` then needs the weights in
the Hugging Face cache (HF_HOME) or a local file passed as `pretrained_file`.

Used in: every paper notebook (through `bac.models.<paper id>`).
"""
from __future__ import annotations

import os
from pathlib import Path

import timm


class PretrainedWeightsError(RuntimeError):
    pass


def create(name: str, pretrained: bool = False, pretrained_file: str = "", **kwargs):
    """`timm.create_model(name, pretrained=..., **kwargs)`; `pretrained_file` loads a local checkpoint."""
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_file:
        path = Path(pretrained_file).expanduser()
        if not path.exists():
            raise PretrainedWeightsError(f"pretrained_file {path} for timm model {name!r} does not exist")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # hub unreachable, cache empty, offline mode, ...
        hub = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise PretrainedWeightsError(
            f"could not load the ImageNet weights of timm model {name!r} ({type(err).__name__}: {err}).\n"
            f"No network here? Either (1) on a machine with internet run\n"
            f"    python -c \"import timm; timm.create_model('{name}', pretrained=True)\"\n"
            f"and copy its Hugging Face cache ({hub}) to this machine (or point HF_HOME at it), or (2) pass a "
            f"local weights file: OVERRIDES=\"pretrained_file='/path/to/{name}.safetensors'\" (or .pth), or "
            f"(3) train from scratch with OVERRIDES=\"pretrained=False\".") from err
