"""Li 2021's hand localisation: unsupervised segmentation by differentiable feature clustering.

Kim, Kanezaki & Tanaka, "Unsupervised learning of image segmentation based on differentiable feature
clustering", IEEE TIP 29:8055 (2020), doi:10.1109/TIP.2020.3011269. Per image, a fresh small CNN (two 3x3
conv layers with p channels, then a 1x1 conv to q responses + batch norm) is trained for a few
iterations on L = lambda L_sim + mu L_con: L_sim is the cross-entropy of the responses y_n against their own
argmax labels c_n, L_con the L1 difference of neighbouring responses (horizontal and vertical). The
labels c_n are the segmentation. Li 2021: p = q = 90, 50 iterations, lambda = 4, mu = 1, SGD lr 0.1,
momentum 0.9.

Choices where the papers are silent (notebook 02 says so): the image is reduced to `size` px (long side)
before segmenting and the box is mapped back to full resolution; the background is the cluster that
holds most of the image border; the hand is the largest 8-connected region of the other clusters (holes
filled); iterations stop early once at most `min_labels` clusters remain (Kim & Kanezaki's code does).

Used in: notebooks/02_preprocessing.ipynb, 20_li2021_mobilenetv3 (pipeline 'li2021'); pseudo-masks for
the trained localisers on real data (`bac.preprocess.pseudo_masks`).
"""
from __future__ import annotations

import numpy as np


def cluster_net(in_ch: int = 1, p: int = 90, q: int = 90, n_conv: int = 2):
    """Kim & Kanezaki's network: `n_conv` x (3x3 conv, ReLU, BN) with p channels, then 1x1 conv + BN to q."""
    from torch import nn
    layers = []
    for i in range(n_conv):
        layers += [nn.Conv2d(in_ch if i == 0 else p, p, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
                   nn.BatchNorm2d(p)]
    return nn.Sequential(*layers, nn.Conv2d(p, q, 1), nn.BatchNorm2d(q))


def _seeded(net, seed: int):
    """`net` with its convolutions initialised from `torch.Generator().manual_seed(seed)` (uniform, PyTorch's
    default bounds), independent of the global torch RNG."""
    import torch
    from torch import nn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                bound = 1 / np.sqrt(m.weight[0].numel())
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 2 * bound - bound)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 2 * bound - bound)
    return net


def _standardised(image: np.ndarray):
    """uint8 (H, W) -> float tensor (H, W) with mean 0 and standard deviation 1."""
    import torch
    x = torch.from_numpy(image.astype(np.float32) / 255.0)
    return (x - x.mean()) / (x.std() + 1e-6)


def cluster(image: np.ndarray, p: int = 90, q: int = 90, iterations: int = 50, lam: float = 4.0, mu: float = 1.0,
            lr: float = 0.1, min_labels: int = 3, seed: int = 0) -> np.ndarray:
    """Cluster labels (H, W) of a small uint8 image by training a fresh `cluster_net` on it (Eq. 1-4)."""
    import torch
    from torch import nn
    net = _seeded(cluster_net(1, p, q), seed)
    x = _standardised(image)[None, None]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    ce = nn.CrossEntropyLoss()
    for _ in range(iterations):
        y = net(x)[0]                                   # (q, H, W) responses y_n
        labels = y.argmax(0)                            # c_n
        sim = ce(y.reshape(q, -1).T, labels.reshape(-1))
        con = (y[:, 1:] - y[:, :-1]).abs().mean() + (y[:, :, 1:] - y[:, :, :-1]).abs().mean()
        opt.zero_grad()
        (lam * sim + mu * con).backward()
        opt.step()
        if len(torch.unique(labels)) <= min_labels:
            break
    with torch.no_grad():
        return net(x)[0].argmax(0).numpy()


def cluster_batch(images: list, p: int = 90, q: int = 90, iterations: int = 50, lam: float = 4.0, mu: float = 1.0,
                  lr: float = 0.1, min_labels: int = 3, seed=0, device: str = "cpu", batch: int = 64) -> list:
    """`cluster` of each image, up to `batch` images of one shape at a time on `device`: as many independent
    networks, side by side in one (grouped convolutions, batch norm over all their channels), trained on the
    sum of their losses, so that each gets its own gradients (SGD is elementwise); each stops on its own
    (`min_labels`). `seed`: one for all images (as `locate_li`) or one per image. Labels as `cluster` gives,
    up to float rounding."""
    seeds = list(seed) if np.ndim(seed) else [seed] * len(images)
    if len(seeds) != len(images):
        raise ValueError(f"{len(seeds)} seeds for {len(images)} images: give one seed, or one per image")
    out = [None] * len(images)
    by_shape: dict = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for idx in by_shape.values():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            labels = _cluster_together([images[i] for i in part], [seeds[i] for i in part], p, q, iterations, lam,
                                       mu, lr, min_labels, device)
            for i, lab in zip(part, labels):
                out[i] = lab
    return out


def _side_by_side(nets):
    """One network that computes the B `cluster_net`s `nets` at once: (1, B, H, W) -> (1, B * q, H, W)."""
    import torch
    from torch import nn
    layers = []
    for parts in zip(*nets):   # the same layer of every network
        m = parts[0]
        if isinstance(m, nn.Conv2d):
            layer = nn.Conv2d(len(parts) * m.in_channels, len(parts) * m.out_channels, m.kernel_size,
                              padding=m.padding, padding_mode=m.padding_mode, groups=len(parts))
        elif isinstance(m, nn.BatchNorm2d):
            layer = nn.BatchNorm2d(len(parts) * m.num_features, eps=m.eps, momentum=m.momentum)
        else:
            layers.append(m)
            continue
        with torch.no_grad():
            layer.weight.copy_(torch.cat([n.weight for n in parts]))
            layer.bias.copy_(torch.cat([n.bias for n in parts]))
        layers.append(layer)
    return nn.Sequential(*layers)


def _cluster_together(images: list, seeds: list, p: int, q: int, iterations: int, lam: float, mu: float, lr: float,
                      min_labels: int, device: str) -> list:
    """`cluster` of B images of one shape, their networks trained side by side on `device`."""
    import torch
    import torch.nn.functional as F
    b, (h, w) = len(images), images[0].shape
    net = _side_by_side([_seeded(cluster_net(1, p, q), s) for s in seeds]).to(device)
    x = torch.stack([_standardised(im) for im in images])[None].to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    out, running = [None] * b, np.ones(b, bool)

    def keep(labels):   # the labels of the networks that stopped training after their last step
        for i in np.flatnonzero(~running):
            if out[i] is None:
                out[i] = labels[i].cpu().numpy()

    for _ in range(iterations):
        y = net(x).view(b, q, h, w)                     # responses y_n of every network
        labels = y.argmax(1)                            # c_n
        keep(labels)
        if not running.any():
            break
        on = torch.from_numpy(np.flatnonzero(running)).to(device)
        y, labels = y[on], labels[on]
        sim = F.cross_entropy(y, labels, reduction="none").mean((1, 2))
        con = (y[:, :, 1:] - y[:, :, :-1]).abs().mean((1, 2, 3)) + (y[..., 1:] - y[..., :-1]).abs().mean((1, 2, 3))
        opt.zero_grad()
        (lam * sim + mu * con).sum().backward()
        opt.step()
        present = torch.zeros(len(on), q, device=device).scatter_(1, labels.reshape(len(on), -1), 1.0)
        done = (present.sum(1) <= min_labels).cpu().numpy()
        running[np.flatnonzero(running)[done]] = False
    running[:] = False
    with torch.no_grad():
        keep(net(x).view(b, q, h, w).argmax(1))
    return out


def hand_mask(labels: np.ndarray, band: int = 3, share: float = 0.2, max_solidity: float = 0.9,
              max_peel: int = 4) -> np.ndarray:
    """The hand in a cluster map: peel off the outer layer (every cluster holding at least `share` of a
    `band`-px strip along the region's boundary, thin edge clusters included) and keep the largest
    remaining region; again while that region is still convex like a collimation field (solidity >=
    `max_solidity`) rather than a hand. All False when nothing is left."""
    from scipy import ndimage
    from skimage.measure import regionprops
    from bac.preprocess.boxes import largest_component
    region = np.ones(labels.shape, bool)
    for _ in range(max_peel):
        strip = labels[region & ~ndimage.binary_erosion(region, iterations=band, border_value=0)]
        counts = np.bincount(strip, minlength=labels.max() + 1)
        outer = np.flatnonzero(counts >= share * max(len(strip), 1))
        region = largest_component(region & ~np.isin(labels, outer))
        if not region.any() or regionprops(region.astype(np.uint8))[0].solidity < max_solidity:
            break
    return region


def segment(image: np.ndarray, size: int = 64, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(labels, hand mask) of `image` reduced to `size` px on its long side; `kw` go to `cluster`."""
    from bac.preprocess import one_thread, resize_long
    with one_thread():  # a tiny network per image: one thread each; parallelism comes from workers
        labels = cluster(resize_long(image, size), **kw)
    return labels, hand_mask(labels)


def locate_li(image: np.ndarray, size: int = 0, seg_size: int = 64, p: int = 90, q: int = 90, iterations: int = 50,
              lam: float = 4.0, mu: float = 1.0, min_labels: int = 3, **_) -> dict:
    """Li 2021's hand box in `image`'s pixels (see `bac.preprocess.cached_localisation`), cached per image."""
    from bac.preprocess import cached_localisation
    args = dict(size=seg_size, p=p, q=q, iterations=iterations, lam=lam, mu=mu, min_labels=min_labels)
    return cached_localisation("unsupervised", args, image, lambda img: _li_result(img, segment(img, **args)[1]),
                               check=CHECK)


# A hand box from the clustering that covers under 15 % of the film is a failure (the default `check_box` takes
# 6 %): on the 37 real originals the two such boxes held a strip of a landscape film and part of a hand (IoU 0.0
# and 0.4 with the annotated hand); the smallest annotated hand box covers 36 % of its film, the smallest
# phantom's 17 %.
CHECK = dict(min_area=0.15)


def _li_result(image: np.ndarray, mask: np.ndarray):
    """What `locate_li` caches for `image` with the hand `mask`: (box in `image`'s pixels, mask, score)."""
    from bac.preprocess.boxes import mask_to_box, scale_box
    box = mask_to_box(mask)
    return (scale_box(box, mask.shape, image.shape) if box else None), mask.astype(np.uint8) * 255, 1.0


def locate_li_batch(images: list, size: int = 0, seg_size: int = 64, p: int = 90, q: int = 90, iterations: int = 50,
                    lam: float = 4.0, mu: float = 1.0, min_labels: int = 3, device: str = "cpu", batch: int = 64,
                    **_) -> None:
    """`locate_li` of the images not localised yet, their networks trained `batch` at a time on `device`
    (`cluster_batch`); stores what `locate_li` would, which then reads it back."""
    from bac.preprocess import cached_localisation, localised, resize_long
    args = dict(size=seg_size, p=p, q=q, iterations=iterations, lam=lam, mu=mu, min_labels=min_labels)
    todo = [im for im in images if not localised("unsupervised", args, im)]
    labels = cluster_batch([resize_long(im, seg_size) for im in todo], p=p, q=q, iterations=iterations, lam=lam,
                           mu=mu, min_labels=min_labels, device=device, batch=batch)
    for im, lab in zip(todo, labels):
        cached_localisation("unsupervised", args, im, lambda img, lab=lab: _li_result(img, hand_mask(lab)), check=CHECK)


def _register():
    from bac.preprocess import note, register
    from bac.preprocess.boxes import crop_to_box
    from bac.preprocess.intensity import equalised_crop

    def params(s, cfg, df):   # nothing is learned from df: each image trains its own segmentation network
        return dict(seg_size=s.li_size, p=s.li_channels, q=s.li_channels, iterations=s.li_iters, margin=s.margin,
                    clahe=s.clahe)

    @register("li2021", locate=locate_li, params=params, batch_locate=locate_li_batch)
    def li2021(image: np.ndarray, size: int, seg_size: int = 64, p: int = 90, q: int = 90, iterations: int = 50,
               lam: float = 4.0, mu: float = 1.0, min_labels: int = 3, margin: float = 0.02, clahe: bool = False
               ) -> np.ndarray:
        """Unsupervised segmentation -> largest region -> remove the background (outside the region, grown by
        one segmentation pixel) -> crop its box (+ margin) -> equalise the hand's histogram -> letterbox.

        Equalising the whole crop instead spends half the grey levels on background noise and flattens the
        bones to white (the synthetic demo then does not learn: 31.9 vs 13.3 months for the plain image).
        After a failed localisation the whole image is equalised, unmasked.
        """
        from scipy import ndimage
        loc = locate_li(image, seg_size=seg_size, p=p, q=q, iterations=iterations, lam=lam, mu=mu,
                        min_labels=min_labels)
        used = crop_to_box(image, loc["used"], margin)[1]   # checks the box lies in the image
        note(box=loc["box"], crop=used, reason=loc["reason"])
        mask = loc["mask"]
        if mask is not None:
            mask = ndimage.binary_dilation(mask > 127).astype(np.uint8) * 255
        return equalised_crop(image, used, size, mask, clahe)


_register()
