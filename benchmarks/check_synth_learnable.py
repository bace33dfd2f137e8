"""Is the synthetic data set learnable at small resolution, and does the sex input matter?

Renders ~1500 images at long side 256 (2 workers), pads them square and downsamples to 128 px, then
trains the same tiny CNN twice on CPU: with the sex as an extra input and without. Prints the validation
MAE of both and of the mean predictor. Not a test (minutes of CPU); run it after changing `bac.data.synth`:

    python benchmarks/check_synth_learnable.py [--n-train 1300 --n-val 200 --epochs 25 --out /tmp/synth_check]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from bac.data import rsna, synth


def load_images(df, size: int) -> np.ndarray:
    """Each image padded square (edge colour of its corner) and resized to size x size."""
    out = np.empty((len(df), size, size), np.uint8)
    for i, path in enumerate(df.path):
        im = np.asarray(Image.open(path))
        h, w = im.shape
        side = max(h, w)
        sq = np.full((side, side), im[0, 0], np.uint8)
        sq[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = im
        out[i] = np.asarray(Image.fromarray(sq).resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return out


class TinyNet(nn.Module):
    """Five 3x3 conv layers (stride-2 stem, ~20 MFLOP at 128 px) and global average pooling; the sex (0/1)
    joins the regression head."""

    def __init__(self, use_sex: bool, chans=(8, 16, 32, 64, 96)):
        super().__init__()

        def conv(cin, cout, stride=1):
            return [nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers = conv(1, chans[0], 2)
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += conv(cin, cout) + [nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.use_sex = use_sex
        self.sex = nn.Linear(1, 16)
        self.head = nn.Sequential(nn.Linear(chans[-1] + 16 * use_sex, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))

    def forward(self, x, male):
        f = self.features(x.contiguous(memory_format=torch.channels_last)).mean((2, 3))
        if self.use_sex:
            f = torch.cat([f, torch.relu(self.sex(male[:, None]))], 1)
        return self.head(f)[:, 0]


def train(x_tr, s_tr, y_tr, x_va, s_va, y_va, use_sex, epochs, seed=0, bs=32, lr=2e-3):
    torch.manual_seed(seed)
    mu, sd = y_tr.mean(), y_tr.std()
    net = TinyNet(use_sex).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_tr) / bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.2)
    xt = torch.from_numpy(x_tr)
    g = torch.Generator().manual_seed(seed)
    history = []
    for ep in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=g).split(bs):
            xb = xt[idx].float()[:, None] / 255
            # light augmentation: random shifts and intensity changes (no flips: always a left hand)
            dx, dy = (int(v) for v in torch.randint(-6, 7, (2,), generator=g))
            xb = torch.roll(xb, (dy, dx), (2, 3))
            xb = xb * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1, generator=g))
            pred = net(xb, torch.from_numpy(s_tr[idx.numpy()]).float())
            loss = nn.functional.smooth_l1_loss(pred, torch.from_numpy((y_tr[idx.numpy()] - mu) / sd).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        mae = float(np.abs(predict(net, x_va, s_va) * sd + mu - y_va).mean())
        history.append(mae)
        print(f"  epoch {ep + 1:2d}  val MAE {mae:6.2f}", flush=True)
    return net, history, (mu, sd)


@torch.no_grad()
def predict(net, x, s, bs=128):
    net.eval()
    out = [net(torch.from_numpy(x[i:i + bs]).float()[:, None] / 255, torch.from_numpy(s[i:i + bs]).float())
           for i in range(0, len(x), bs)]
    return torch.cat(out).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1300)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--long-side", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="2 only when nothing else heavy runs")
    ap.add_argument("--out", default="/tmp/synth_check")
    ap.add_argument("--reuse", action="store_true", help="reuse the rendered data set in --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not (args.reuse and (out / "synth.json").exists()):
        shutil.rmtree(out, ignore_errors=True)
        t = time.time()
        synth.make_dataset(out, args.n_train, args.n_val, 0, long_side=args.long_side, seed=0, workers=args.workers)
        print(f"rendered {args.n_train + args.n_val} images in {time.time() - t:.0f} s")
    df = rsna.load_table(out)
    tr, va = df[df.split == "train"], df[df.split == "validation"]
    x_tr, x_va = load_images(tr, args.size), load_images(va, args.size)
    y_tr, y_va = tr.boneage.to_numpy(float), va.boneage.to_numpy(float)
    s_tr, s_va = tr.male.to_numpy(np.float32), va.male.to_numpy(np.float32)
    result = {"mean_predictor_mae": float(np.abs(y_va - y_tr.mean()).mean())}
    print(f"mean predictor: val MAE {result['mean_predictor_mae']:.2f} months")
    errors = {}
    for use_sex in (True, False):
        t = time.time()
        print(f"training {'with' if use_sex else 'without'} the sex input")
        net, hist, (mu, sd) = train(x_tr, s_tr, y_tr, x_va, s_va, y_va, use_sex, args.epochs)
        key = "with_sex" if use_sex else "without_sex"
        errors[key] = np.abs(predict(net, x_va, s_va) * sd + mu - y_va)
        result[key] = dict(final_mae=hist[-1], best_mae=min(hist), seconds=round(time.time() - t))
    # paired bootstrap over validation images of MAE(without sex) - MAE(with sex)
    diff = errors["without_sex"] - errors["with_sex"]
    boot = np.random.default_rng(0).choice(diff, (2000, len(diff))).mean(1)
    result["sex_gain"] = dict(mean=float(diff.mean()), ci95=[float(np.quantile(boot, 0.025)),
                                                             float(np.quantile(boot, 0.975))])
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
