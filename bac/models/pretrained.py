"""Backbones from timm, with ImageNet weights when asked for, and a clear error when they cannot be had.

There is no network at run time on CI and many clusters: `pretrained=True` then needs the weights in
the Hugging Face cache (HF_HOME) or a local file passed as `pretrained_file`. `pretrained="phantom"` loads
weights pretrained on the built-in phantoms instead (`bac.pretrain`; measured in notebook 03, no profile uses it
by default).

Used in: every paper notebook (through `bac.models.<paper id>`).
"""
from __future__ import annotations

import os
from pathlib import Path

import timm


class PretrainedWeightsError(RuntimeError):
    pass


# Arguments that shape only what is built on top of the backbone's weights (its head, its outputs, dropout), or are
# the input channels (a key of their own): the same phantom weights serve every value.
_HEAD_ARGS = ("num_classes", "global_pool", "features_only", "out_indices", "drop_rate", "drop_path_rate",
              "in_chans", "img_size")


def create(name: str, pretrained: bool | str = False, pretrained_file: str = "", **kwargs):
    """`timm.create_model(name, pretrained=..., **kwargs)`; `pretrained_file` loads a local checkpoint;
    `pretrained="phantom"` the backbone's phantom-pretrained weights (`bac.pretrain`, made first if missing; a
    `pretrained_file` that `bac pretrain` wrote, with its manifest beside it, loads the same way)."""
    if pretrained == "phantom":
        from bac import pretrain
        own = {k: v for k, v in kwargs.items() if k not in _HEAD_ARGS}
        pretrained, pretrained_file = True, str(pretrain.ensure(name, kwargs.get("in_chans", 3), own))
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_file:
        path = Path(pretrained_file).expanduser()
        if not path.exists():
            raise PretrainedWeightsError(f"pretrained_file {path} for timm model {name!r} does not exist")
        overlay = dict(file=str(path))
        if path.with_name("manifest.json").exists():      # phantom weights: no classifier, the model's channels
            overlay.update(num_classes=0, input_size=(kwargs.get("in_chans", 3), 224, 224))
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
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
