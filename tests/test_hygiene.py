"""Repository hygiene (tests/check_repo.py): stripped notebooks, no large images outside reports/, no real RSNA files.

The first test checks this repository; the others feed the checker small git repositories that break each rule,
so that a check that silently stopped working would fail here.
"""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_repo", Path(__file__).with_name("check_repo.py"))
check_repo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_repo)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
PNG = b"\x89PNG\r\n\x1a\n"


def _is_git_checkout(path: Path) -> bool:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "--git-dir"], capture_output=True).returncode == 0


def make_repo(root: Path, files: dict, untracked: dict | None = None) -> Path:
    """A git repository at `root` whose index holds `files` (path -> bytes or str); `untracked` are only written."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for rel, content in {**files, **(untracked or {})}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    if files:
        subprocess.run(["git", "-C", str(root), "add", "--", *files], check=True)
    return root


def notebook(outputs=(), execution_count=None) -> str:
    cell = {"cell_type": "code", "metadata": {}, "source": ["print(1)"], "outputs": list(outputs),
            "execution_count": execution_count}
    md = {"cell_type": "markdown", "metadata": {}, "source": ["# Title"]}
    return json.dumps({"cells": [md, cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def image(n_bytes: int) -> bytes:
    """Bytes that start like a PNG, `n_bytes` long."""
    return (PNG + bytes(range(256)) * (n_bytes // 256 + 1))[:n_bytes]


@needs_git
def test_this_repository_is_clean():
    if not _is_git_checkout(REPO):
        pytest.skip("not a git checkout (e.g. an unpacked source archive)")
    problems = check_repo.check(REPO)  # also compares with ../shared/rsna-sample when it is there
    assert not problems, "\n".join(problems)


@needs_git
def test_a_notebook_with_outputs_or_execution_counts_fails(tmp_path):
    output = {"output_type": "stream", "name": "stdout", "text": ["1\n"]}
    repo = make_repo(tmp_path / "r", {"notebooks/10_a.ipynb": notebook([output], 1),
                                      "notebooks/20_b.ipynb": notebook(execution_count=3),
                                      "notebooks/30_c.ipynb": notebook()})
    problems = check_repo.check(repo, rsna_dir=None)
    assert len(problems) == 2, problems
    assert problems[0].startswith("notebooks/10_a.ipynb: cells 1 ") and "stripped" in problems[0]
    assert problems[1].startswith("notebooks/20_b.ipynb: cells 1 ")


@needs_git
def test_a_large_image_outside_reports_fails(tmp_path):
    big = check_repo.MAX_IMAGE_BYTES + 1000
    repo = make_repo(tmp_path / "r", {
        "tests/data/hand.png": image(big),                  # too large for a fixture
        "tests/data/hand_renamed.bin": image(big),          # an image by its first bytes, whatever its name
        "tests/data/tiny.png": image(2000),                 # a small fixture is fine
        "reports/li2021/figure.png": image(big),            # report figures are fine
        "data/table.csv": "x\n" * (big // 2),               # a large file that is not an image is fine below 1 MB
    }, untracked={"build/untracked.png": image(big)})      # untracked files are not checked
    problems = check_repo.check(repo, rsna_dir=None)
    assert sorted(p.split(":")[0] for p in problems) == ["tests/data/hand.png", "tests/data/hand_renamed.bin"]
    assert all("outside reports/" in p for p in problems)


@needs_git
def test_any_file_over_the_size_limit_fails(tmp_path):
    repo = make_repo(tmp_path / "r", {"reports/x/weights.safetensors": b"\0" * (check_repo.MAX_FILE_BYTES + 1)})
    problems = check_repo.check(repo, rsna_dir=None)
    assert len(problems) == 1 and problems[0].startswith("reports/x/weights.safetensors: 1.0 MB")


@needs_git
def test_a_copy_of_a_real_rsna_file_fails_and_the_check_skips_without_the_sample(tmp_path):
    rsna = tmp_path / "shared" / "rsna-sample"
    film = image(5000)
    (rsna / "originals").mkdir(parents=True)
    (rsna / "originals" / "1377.png").write_bytes(film)
    (rsna / "roi_annotations").mkdir()
    (rsna / "roi_annotations" / "1377.xml").write_text("<annotation/>")  # Koitka et al. (MIT): may be used
    repo = make_repo(tmp_path / "repo", {"tests/data/renamed.png": film, "tests/data/boxes.xml": "<annotation/>",
                                         "tests/data/other.png": image(5000)[:-1] + b"\1"})
    problems = check_repo.check(repo, rsna_dir=rsna)
    assert len(problems) == 1 and problems[0].startswith("tests/data/renamed.png: a copy of the real RSNA file")
    assert check_repo.check(repo, rsna_dir=None) == []
    assert check_repo.check(repo, rsna_dir=tmp_path / "absent") == []
    # the command line finds ../shared/rsna-sample next to the repository by itself
    run = subprocess.run([sys.executable, str(REPO / "tests" / "check_repo.py"), "--repo", str(repo)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "tests/data/renamed.png" in run.stderr
    clean = make_repo(tmp_path / "clean", {"README.md": "hello\n"})
    assert subprocess.run([sys.executable, str(REPO / "tests" / "check_repo.py"), "--repo", str(clean)]).returncode == 0
