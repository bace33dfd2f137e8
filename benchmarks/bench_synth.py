"""Throughput of the synthetic data set writer: images/s at long side 256, 512 and 1600 for 1 and 2 workers.

Times `bac.data.synth.make_dataset` end to end (render, PNG encoding, annotations) into a temporary folder.
A benchmark, not a test; the machine's load average is printed beside the numbers because it skews them.

    python benchmarks/bench_synth.py [--sizes 256 512 1600] [--workers 1 2] [--images 48 24 8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bac.data import synth


def bench(long_side: int, workers: int, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        synth.make_dataset(Path(tmp) / "d", n_train=n, n_val=0, n_test=0, long_side=long_side, seed=0,
                           workers=workers, progress=False)
        return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1600])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, nargs="+", default=[48, 24, 8], help="images per run, one per size")
    args = ap.parse_args(argv)
    synth.render(100, True, 0, 64)  # warm imports
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'long side':>9} {'workers':>7} {'images':>6} {'images/s':>9}")
    for size, n in zip(args.sizes, args.images):
        for workers in args.workers:
            print(f"{size:>9} {workers:>7} {n:>6} {bench(size, workers, n):>9.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
