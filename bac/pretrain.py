"""Phantom pretraining: a backbone trained on unlimited procedural hands, a stand-in for ImageNet weights.

No ImageNet weights can be downloaded on many machines (CI, this project's CPU box), so the demo trains every
backbone from scratch. The built-in phantoms are unlimited, labelled, and carry bone age the way the atlases read
it, so a backbone can first learn to see hands on them. `pretrain` renders `images` phantoms once (`rendered`:
`bac.data.synth.render`, ages and sexes drawn as RSNA's training set has them; markers erased as
`bac.data.rsna.read_image` erases a film's; letterboxed to `size` px, the `plain` pipeline; cached, since
rendering costs ~10x a training step) and trains the timm backbone for `epochs` over them, with a head that reads
its pooled features and the sex. Targets, all free from the generator:

- the bone age (L1 on the standardised age: (age - 120) / 50),
- which bones are present (carpals, epiphyses, sesamoid: binary cross-entropy, 30 outputs),
- each epiphysis' stage (absent, narrow, equal, capped, fusing, fused as 0..5: L1 on stage / 5, 21 outputs).

Every image is drawn from its index and the seed (`synth.image_seed`), so the weights depend on the settings and
the seed only, not on the number of loader workers. The backbone's weights (timm's own key names, no classifier:
`num_classes=0`) are saved as safetensors with a manifest (settings, generator and code version, times, the
training loss and a held-out age MAE per epoch)
under `<cache>/pretrained/<name>-<key>/`, the key a hash of everything that determines them.
`bac.models.pretrained.create(name, pretrained="phantom")` loads them the way timm loads ImageNet weights
(pretraining first when they are not there); `bac pretrain` makes them from the command line.

Measured in notebooks/03_phantom_pretraining.ipynb (`benchmarks/pretrain_transfer.py`). Used in:
`bac.models.pretrained`, `bac pretrain`.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

# One budget for every backbone (a CPU's: minutes for the demo's stand-ins; override for a GPU); `key` hashes it.
DEFAULTS = dict(images=20000, epochs=4, held_out=512, size=128, long_side=384, bs=32, lr=2e-3, wd=0.05, seed=0,
                workers=2, device="cuda" if torch.cuda.is_available() else "cpu")
NOT_IN_KEY = ("workers", "held_out", "device")      # how, not what, is trained (a GPU differs in the last bits)
STAGES = ("absent", "narrow", "equal", "capped", "fusing", "fused")
AGE_MEAN, AGE_SD = 120.0, 50.0


def _targets(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    present = np.array([meta["bones_present"][k] for k in sorted(meta["bones_present"])], np.float32)
    stages = np.array([STAGES.index(meta["stages"][k]) / 5 for k in sorted(meta["stages"])], np.float32)
    return present, stages


class Phantoms(torch.utils.data.Dataset):
    """Image `i`: a phantom rendered from (`seed`, `i`), markers erased, letterboxed to `size` px: (uint8
    (1, size, size), male, age, bones present, stages)."""

    def __init__(self, n: int, size: int, long_side: int, seed: int):
        from bac.data.synth import sample_labels
        self.n, self.size, self.long_side, self.seed = n, size, long_side, seed
        self.labels = sample_labels(n, np.random.default_rng([seed, 21]), "train")

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        from bac.data.synth import image_seed, render
        from bac.preprocess import plain
        from bac.preprocess.markers import erase
        row = self.labels.iloc[i]
        ph = render(float(row.true_age), bool(row.male), image_seed(self.seed, i), long_side=self.long_side)
        present, stages = _targets(ph.meta)
        return (torch.from_numpy(plain(erase(ph.image), self.size)), torch.tensor(float(row.male)),
                torch.tensor(float(row.true_age)), torch.from_numpy(present), torch.from_numpy(stages))


class Pretrainer(nn.Module):
    """The backbone (`num_classes=0`: pooled features) and one linear head over [features, sex]."""

    def __init__(self, name: str, in_chans: int = 1, size: int = 224, n_present: int = 30, n_stages: int = 21,
                 **kwargs):
        super().__init__()
        import timm
        self.in_chans, self.n_present = in_chans, n_present
        if "swin" in name:                # its token grid is set by the input size
            kwargs = dict(kwargs, img_size=size)
        self.backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features   # MobileNetV3: 1280
        self.head = nn.Linear(width + 1, 1 + n_present + n_stages)

    def forward(self, x, male):
        from bac.train import normalize
        x = normalize(x.float())
        if self.in_chans != x.shape[1]:
            x = x.expand(-1, self.in_chans, -1, -1)
        out = self.head(torch.cat([self.backbone(x), male[:, None].float()], 1))
        return out[:, 0], out[:, 1:1 + self.n_present], out[:, 1 + self.n_present:]


def loss_of(out, age, present, stages) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, age MAE in months) of a batch: L1 on the standardised age + BCE on the bones present + L1 on stages."""
    age_z, present_logit, stage = out
    err = (age_z - (age - AGE_MEAN) / AGE_SD).abs()
    loss = (err.mean() + nn.functional.binary_cross_entropy_with_logits(present_logit, present)
            + (stage - stages).abs().mean())
    return loss, err.mean().detach() * AGE_SD


def key(name: str, in_chans: int, kwargs: dict, settings: dict) -> str:
    """`<name>-<hash>` of the backbone, its arguments, the pretraining settings (workers aside) and the code."""
    from bac.data import code_version
    what = dict(name=name, in_chans=in_chans, kwargs=kwargs, code=code_version("pretrain.py", "data/synth.py",
                                                                                "preprocess/markers.py"),
                settings={k: v for k, v in settings.items() if k not in NOT_IN_KEY})
    return f"{name}-{hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]}"


def weights_path(name: str, in_chans: int = 1, kwargs: dict | None = None, **settings) -> Path:
    from bac.data import cache_root
    s = {**DEFAULTS, **settings}
    return cache_root() / "pretrained" / key(name, in_chans, dict(kwargs or {}), s) / "backbone.safetensors"


def rendered(n: int, size: int, long_side: int, seed: int, workers: int = 2, progress: bool = True) -> dict:
    """`Phantoms(n, size, long_side, seed)` as tensors {x, male, age, present, stages}, rendered once (by `workers`
    processes: rendering costs ~10x a training step of the demo's backbones) and kept under
    `<cache>/pretrained/phantoms-<key>.npz`, the key their settings and the generator's code."""
    from tqdm.auto import tqdm

    from bac.data import cache_root, code_version
    what = dict(n=n, size=size, long_side=long_side, seed=seed,
                code=code_version("pretrain.py", "data/synth.py", "preprocess/markers.py"))
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / "pretrained" / f"phantoms-{digest}.npz"
    names = ("x", "male", "age", "present", "stages")
    if not path.exists():
        loader = torch.utils.data.DataLoader(Phantoms(n, size, long_side, seed), batch_size=64, num_workers=workers)
        parts = [b for b in tqdm(loader, desc=f"render {n} phantoms", disable=not progress, leave=False)]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: torch.cat([b[j] for b in parts]).numpy() for j, k in enumerate(names)})
        tmp.replace(path)
    with np.load(path) as z:
        return {k: torch.from_numpy(z[k]) for k in names}


def pretrain(name: str, in_chans: int = 1, kwargs: dict | None = None, progress: bool = True, **settings) -> Path:
    """Train `name` (timm, `kwargs`) for `epochs` over `images` phantoms (rendered once, `rendered`); save its
    backbone's weights and a manifest (settings, times, the training loss and the age MAE on `held_out` phantoms of
    another seed after every epoch); their path."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    s, kwargs = {**DEFAULTS, **settings}, dict(kwargs or {})
    path = weights_path(name, in_chans, kwargs, **s)
    t0 = time.time()
    data = rendered(s["images"], s["size"], s["long_side"], s["seed"], s["workers"], progress)
    held = rendered(s["held_out"], s["size"], s["long_side"], s["seed"] + 10_000, s["workers"], progress)
    t_render = time.time() - t0
    steps = s["images"] // s["bs"]
    if steps < 1:
        raise ValueError(f"images={s['images']} is fewer than one batch of bs={s['bs']}: ask for more images")
    torch.manual_seed(s["seed"])
    model = Pretrainer(name, in_chans, s["size"], **kwargs).to(s["device"])
    data, held = ({k: v.to(s["device"]) for k, v in d.items()} for d in (data, held))   # a GPU holds them whole
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["wd"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=steps * s["epochs"])
    order = torch.Generator().manual_seed(s["seed"])
    curve, t1 = [], time.time()
    for epoch in tqdm(range(s["epochs"]), desc=f"pretrain {name} on phantoms", disable=not progress, leave=False):
        model.train()
        losses, maes = [], []
        for idx in torch.randperm(len(data["x"]), generator=order)[:steps * s["bs"]].view(steps, s["bs"]).tolist():
            loss, mae = loss_of(model(data["x"][idx], data["male"][idx]), data["age"][idx], data["present"][idx],
                                data["stages"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            maes.append(float(mae))
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(data_x, male)[0] for data_x, male in
                             zip(held["x"].split(256), held["male"].split(256))])
        curve.append(dict(epoch=epoch + 1, images=(epoch + 1) * steps * s["bs"], loss=round(float(np.mean(losses)), 4),
                          age_mae=round(float(np.mean(maes)), 2),
                          held_out_age_mae=round(float((out * AGE_SD + AGE_MEAN - held["age"]).abs().mean()), 2)))
    model.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(path))
    from bac.data import code_version
    manifest = dict(backbone=name, in_chans=in_chans, kwargs=kwargs, settings=s, steps=steps * s["epochs"],
                    render_seconds=round(t_render, 1), train_seconds=round(time.time() - t1, 1),
                    held_out_mean_predictor=round(float((held["age"] - data["age"].mean()).abs().mean()), 2),
                    generator=code_version("data/synth.py"), code=code_version(), torch=torch.__version__, curve=curve)
    path.with_name("manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return path


def backbones(profile: str = "demo") -> dict[str, tuple[str, int, dict]]:
    """Every method's backbones in `profile` (`bac.models.METHODS`): {'<method>[ <role>]': (timm name, in_chans,
    kwargs)}: its `backbone`, its CAM classifier's (`cls_backbone`) and each of its named `backbones`."""
    from bac.config import resolve
    from bac.models import METHODS
    out = {}
    for paper in METHODS:
        c = resolve(profile, paper)
        if c.get("backbone"):
            out[paper] = (c["backbone"], c.get("in_chans", 1), dict(c.get("backbone_kwargs") or {}))
        if c.get("cls_backbone"):
            out[f"{paper} classifier"] = (c["cls_backbone"], 1, dict(c.get("cls_backbone_kwargs") or {}))
        for label, spec in (c.get("backbones") or {}).items():     # {label: {name, kwargs}} or {label: (name, kwargs)}
            name, kwargs = (spec["name"], spec.get("kwargs")) if isinstance(spec, dict) else spec
            out[f"{paper} {label}"] = (name, c.get("in_chans", 1), dict(kwargs or {}))
    return out


def ensure(name: str, in_chans: int = 1, kwargs: dict | None = None, progress: bool = True, **settings) -> Path:
    """The path of `name`'s phantom weights, pretraining them first if they are not stored."""
    path = weights_path(name, in_chans, kwargs, **settings)
    if not path.exists():
        print(f"no phantom-pretrained weights of {name} at {path.parent}: pretraining now ({DEFAULTS | settings})")
        path = pretrain(name, in_chans, kwargs, progress=progress, **settings)
    return path
