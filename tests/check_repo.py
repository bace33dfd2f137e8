#!/usr/bin/env python3
"""Repository hygiene: what `git ls-files` tracks must not hold notebook outputs, large files or real RSNA images.

- every tracked notebook is stripped: no cell outputs, no execution counts (numbers come from runs, into `reports/`),
  except the readers' edition of the reference run under `reports/executed/` (book/publish.py; executed on purpose,
  its size and contents checked by tests/test_book.py);
- a tracked image (by suffix or by its first bytes: PNG, JPEG, TIFF, GIF, BMP, DICOM) larger than a small test
  fixture (MAX_IMAGE_BYTES) lives only under `reports/`; no tracked file of any kind exceeds MAX_FILE_BYTES;
- no tracked file is a byte-for-byte copy of a file of the real RSNA sample (`../shared/rsna-sample`, next to the
  repository, when it is there: the RSNA data may not be redistributed). Koitka et al.'s ROI boxes (MIT) and the
  sample's README are not RSNA data and are not compared.

Standard library only, so that it runs with any Python 3 before the project is installed.
Used by: .pre-commit-config.yaml (hook `repo-hygiene`), `make test`, tests/test_hygiene.py.
Run: `python tests/check_repo.py [--repo DIR] [--rsna-dir DIR]`; exit status 1 lists every problem.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RSNA_SAMPLE = REPO.parent / "shared" / "rsna-sample"
MAX_IMAGE_BYTES = 200_000  # larger than any test fixture, smaller than a real radiograph
MAX_FILE_BYTES = 1_000_000  # any tracked file; report figures stay well below it
IMAGES_ALLOWED_UNDER = ("reports/",)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2"}
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM")
NOT_RSNA_DATA = ("roi_annotations/", "README.md")  # Koitka et al.'s boxes (MIT) and the sample's own README
EXECUTED_ALLOWED_UNDER = ("reports/executed/",)  # the published executed notebooks (book/publish.py, issue 22)


def tracked_files(repo) -> list[str]:
    """Paths (relative, '/'-separated) that git tracks in `repo`, staged additions included."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def is_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head.startswith(IMAGE_MAGIC) or head[128:132] == b"DICM"


def notebook_problems(path: Path, name: str) -> list[str]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return [f"{name}: not a readable notebook ({err})"]
    bad = [i for i, c in enumerate(nb.get("cells", []))
           if c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    if not bad:
        return []
    cells = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
    return [f"{name}: cells {cells} hold outputs or execution counts; commit notebooks stripped (Jupyter: "
            f"Edit > Clear All Outputs, then save; executed copies belong in reports/ via `bac run`)"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rsna_files_by_size(rsna_dir: Path) -> dict[int, list[Path]]:
    by_size: dict[int, list[Path]] = {}
    for p in sorted(rsna_dir.rglob("*")):
        rel = p.relative_to(rsna_dir).as_posix()
        if p.is_file() and not rel.startswith(NOT_RSNA_DATA):
            by_size.setdefault(p.stat().st_size, []).append(p)
    return by_size


def check(repo=REPO, rsna_dir=RSNA_SAMPLE) -> list[str]:
    """Every hygiene problem of `repo`'s tracked files, as messages naming the file; [] when clean.

    rsna_dir: the real RSNA sample to compare against; None, or a folder that does not exist, skips that part.
    """
    repo = Path(repo)
    rsna = rsna_files_by_size(Path(rsna_dir)) if rsna_dir and Path(rsna_dir).is_dir() else {}
    problems = []
    for name in tracked_files(repo):
        path = repo / name
        if not path.is_file() or path.is_symlink():  # deleted in the work tree, a submodule or a link
            continue
        size = path.stat().st_size
        if name.endswith(".ipynb") and not name.startswith(EXECUTED_ALLOWED_UNDER):
            problems += notebook_problems(path, name)
        if size > MAX_FILE_BYTES:
            problems.append(f"{name}: {size / 1e6:.1f} MB; no tracked file may exceed {MAX_FILE_BYTES / 1e6:.0f} MB "
                            f"(data and checkpoints stay out of git)")
        elif size > MAX_IMAGE_BYTES and not name.startswith(IMAGES_ALLOWED_UNDER) and is_image(path):
            problems.append(f"{name}: a {size / 1e3:.0f} kB image outside reports/; test fixtures must be small "
                            f"(at most {MAX_IMAGE_BYTES / 1e3:.0f} kB) or generated by the test")
        if size in rsna:
            digest = sha256(path)
            twins = [p for p in rsna[size] if sha256(p) == digest]
            if twins:
                problems.append(f"{name}: a copy of the real RSNA file {twins[0]}; the RSNA data may not be "
                                f"redistributed: tests read it from ../shared/rsna-sample and skip when it is absent")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repo", default=str(REPO), help="repository to check (default: this one)")
    ap.add_argument("--rsna-dir", default=None,
                    help="real RSNA sample to compare against (default: <repo>/../shared/rsna-sample, if present)")
    args = ap.parse_args(argv)
    repo = Path(args.repo).resolve()
    rsna_dir = args.rsna_dir or repo.parent / "shared" / "rsna-sample"
    problems = check(repo, rsna_dir)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
