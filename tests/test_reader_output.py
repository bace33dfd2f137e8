"""What a reader sees in an executed notebook: no TqdmWarning, no dependency FutureWarning, each warning once,
a non-empty device row and a truthful revision; and the pieces behind it (`git_revision`, `bac.warn_once`).

The executed notebooks checked are the smoke copies `tests/test_notebooks.py` wrote to `$BAC_OUT_DIR/notebooks/`
earlier in the session (`make test` sets BAC_OUT_DIR; pytest runs that file first), when they are newer than
the code; otherwise this file runs one cheap notebook (Li 2021: loads data, trains three tiny models) itself.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

import bac
from bac import env

REPO = Path(__file__).resolve().parent.parent
OWN_RUN = "20_li2021_mobilenetv3.ipynb"  # the cheapest smoke notebook that loads data and trains (about a minute)
# How Python prints a warning: "<file>:<line>: <Category>: <message>" (then the source line, indented).
WARNING_LINE = re.compile(r"^(?P<where>\S.*?):(?P<line>\d+): (?P<category>\w*Warning): (?P<message>.*)$")
ENV_ROW = re.compile(r"^(?P<key>[a-z_][a-z0-9_-]*)\s{2,}(?P<value>.*)$")


# ----------------------------------------------------------------------------------------- executed notebooks
def _newest_code_mtime(notebook: str) -> float:
    files = [*(REPO / "bac").rglob("*.py"), REPO / "notebooks" / notebook]
    return max(f.stat().st_mtime for f in files if f.exists())


def _fresh_executed_copies() -> list[Path]:
    """Executed notebooks under $BAC_OUT_DIR/notebooks that ran OK and are newer than the code and their source."""
    if not os.environ.get("BAC_OUT_DIR"):
        return []
    folder = Path(os.environ["BAC_OUT_DIR"]) / "notebooks"
    fresh = []
    for path in sorted(folder.glob("[0-9]*.ipynb")):
        status = folder / f".{path.stem}.status.json"
        if not status.exists() or json.loads(status.read_text()).get("status") != "ok":
            continue
        if path.stat().st_mtime >= _newest_code_mtime(path.name):
            fresh.append(path)
    return fresh


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> list[Path]:
    """Executed smoke notebooks to inspect: test_notebooks.py's copies when fresh, else one run here."""
    found = _fresh_executed_copies()
    if found:
        return found
    from bac import runner
    out = tmp_path_factory.mktemp("reader") / "r"
    outcomes = runner.run("smoke", only=OWN_RUN, out=str(out), timeout=900, progress=False)
    assert [o.status for o in outcomes] == ["ok"], [f"{o.notebook}: {o.detail}" for o in outcomes]
    return [out / "notebooks" / OWN_RUN]


def _texts(path: Path) -> list[tuple[int, str, str]]:
    """(cell index, output kind, text) of every textual output: streams, plain-text results, errors."""
    nb = json.loads(path.read_text())
    texts = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "stream":
                texts.append((i, out["name"], "".join(out["text"])))
            elif kind in ("display_data", "execute_result"):
                plain = out.get("data", {}).get("text/plain", "")
                texts.append((i, kind, "".join(plain) if isinstance(plain, list) else plain))
            elif kind == "error":
                texts.append((i, "error", f"{out['ename']}: {out['evalue']}"))
    return texts


def _warnings_shown(path: Path) -> list[tuple[int, str, str, str]]:
    """(cell, category, message, where) of every warning printed in the notebook's outputs."""
    return [(i, m["category"], m["message"].strip(), m["where"]) for i, kind, text in _texts(path)
            if kind == "stderr" for line in text.splitlines() if (m := WARNING_LINE.match(line))]


def _environment(path: Path) -> dict[str, str]:
    """The rows the environment cell (`bac.env.describe`) printed (a cell's stdout may come in several pieces)."""
    stdout: dict[int, str] = {}
    for i, kind, text in _texts(path):
        if kind == "stdout":
            stdout[i] = stdout.get(i, "") + text
    for text in stdout.values():
        rows = dict(m.group("key", "value") for line in text.splitlines() if (m := ENV_ROW.match(line)))
        if "revision" in rows and "torch_threads" in rows:
            return {k: v.strip() for k, v in rows.items()}
    raise AssertionError(f"{path.name}: no environment cell output (bac.env.describe) found")


@pytest.mark.notebooks
def test_no_tqdm_or_dependency_future_warnings(executed):
    problems = []
    for path in executed:
        for i, kind, text in _texts(path):
            for bad in ("TqdmWarning", "IProgress not found", "FutureWarning"):
                if bad in text:
                    problems.append(f"{path.name} cell {i} ({kind}): {bad}: {text.strip()[:300]}")
        for i, category, message, where in _warnings_shown(path):
            if "DeprecationWarning" in category and "site-packages" in where:
                problems.append(f"{path.name} cell {i}: a dependency's {category} ({where}): {message[:200]}")
    assert not problems, "\n".join(problems)


@pytest.mark.notebooks
def test_each_distinct_warning_at_most_once_per_notebook(executed):
    problems = []
    for path in executed:
        seen: dict[tuple[str, str], list[int]] = {}
        for i, category, message, _ in _warnings_shown(path):
            seen.setdefault((category, message), []).append(i)
        problems += [f"{path.name}: {cat}: {msg[:160]} printed {len(cells)} times (cells {cells})"
                     for (cat, msg), cells in seen.items() if len(cells) > 1]
    assert not problems, "\n".join(problems)


@pytest.mark.notebooks
def test_environment_cell_names_the_device(executed):
    for path in executed:
        rows = _environment(path)
        assert rows.get("device") not in (None, "", "(none)"), f"{path.name}: empty device row: {rows}"
        assert rows.get("device_name") not in (None, "", "(none)"), f"{path.name}: empty device_name row: {rows}"
        if rows["device"] == "cpu":
            assert rows["device_name"] == env.cpu_name(), f"{path.name}: device_name {rows['device_name']!r}"


@pytest.mark.notebooks
def test_revision_is_clean_when_the_code_is_committed(executed):
    now = env.git_revision()
    if now == "unknown":
        pytest.skip("not a git checkout (or no git): the revision reads 'unknown'")
    if now.endswith("-dirty"):
        pytest.skip(f"the code has uncommitted changes (revision {now}): run on a committed tree to check that "
                    "executed notebooks read a clean revision")
    for path in executed:
        assert _environment(path)["revision"] == now, (
            f"{path.name}: revision {_environment(path)['revision']!r}, but the committed code is {now!r} "
            "(a run must not make its own code read '-dirty')")


def test_the_checks_find_what_they_look_for(tmp_path):
    """The parsers above on a notebook with the outputs the issue reported (so a pass above means something)."""
    warn = ("/x/site-packages/torch/jit/_script.py:1491: FutureWarning: `torch.jit.script` is deprecated.\n"
            "  warnings.warn(\n")
    data = "/r/bac/data/__init__.py:72: UserWarning: The test labels are all integers: ...\n  df = load(root)\n"
    stream = lambda name, text: {"output_type": "stream", "name": name, "text": [text]}
    cells = [{"cell_type": "code", "source": [], "metadata": {}, "execution_count": 1,
              "outputs": [stream("stderr", warn), stream("stdout", "revision     1004f4a-dirty\ndevice       \n"
                                                                    "torch_threads  2\n")]},
             {"cell_type": "code", "source": [], "metadata": {}, "execution_count": 2,
              "outputs": [stream("stderr", data), stream("stderr", data)]}]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    shown = _warnings_shown(path)
    assert [(i, c) for i, c, _, _ in shown] == [(0, "FutureWarning"), (1, "UserWarning"), (1, "UserWarning")]
    assert _environment(path) == {"revision": "1004f4a-dirty", "device": "", "torch_threads": "2"}
    for check in (test_no_tqdm_or_dependency_future_warnings, test_each_distinct_warning_at_most_once_per_notebook,
                  test_environment_cell_names_the_device):
        with pytest.raises(AssertionError):
            check([path])


# ----------------------------------------------------------------------------------------- git_revision
def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org",
           "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_is_the_codes(tmp_path):
    repo = tmp_path / "repo"
    (repo / "bac").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    (repo / "bac" / "x.py").write_text("A = 1\n")
    (repo / "notebooks" / "10_a.ipynb").write_text("{}\n")
    (repo / "README.md").write_text("# readme\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "code")
    code = _git(repo, "rev-parse", "--short", "HEAD")
    assert env.git_revision(repo) == code

    # a run writes its reports and (formerly) the README's results: neither makes the code dirty
    (repo / "reports").mkdir()
    (repo / "reports" / "metrics.json").write_text("{}\n")
    (repo / "README.md").write_text("# readme\nresults\n")
    assert env.git_revision(repo) == code
    # committing them: the revision stays the code's commit (a second run writes the same revision)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "reports")
    assert _git(repo, "rev-parse", "--short", "HEAD") != code
    assert env.git_revision(repo) == code
    (repo / "reports" / "metrics.json").write_text('{"again": 1}\n')  # the reports regenerated, not committed
    assert env.git_revision(repo) == code

    # untracked files (data, build outputs) do not count, nor committed tests or docs; code or notebooks do
    (repo / "scratch.txt").write_text("x\n")
    assert env.git_revision(repo) == code
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("def test(): pass\n")
    _git(repo, "add", "tests")
    _git(repo, "commit", "-q", "-m", "a test")
    assert env.git_revision(repo) == code
    (repo / "notebooks" / "10_a.ipynb").write_text('{"cells": []}\n')
    assert env.git_revision(repo) == code + "-dirty"
    _git(repo, "checkout", "--", "notebooks")
    (repo / "bac" / "x.py").write_text("A = 2\n")
    assert env.git_revision(repo) == code + "-dirty"
    _git(repo, "commit", "-q", "-am", "more code")
    assert env.git_revision(repo) == _git(repo, "rev-parse", "--short", "HEAD") != code

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert env.git_revision(outside) == "unknown"


def test_describe_names_device_and_hardware(capsys):
    info = env.describe({"device": "cpu", "profile": "smoke", "data_dir": ""})
    assert info["device"] == "cpu" and info["device_name"] == env.cpu_name() and env.cpu_name()
    assert info["data_dir"] == ""  # the returned values are what metrics.json stores; only the print says (none)
    printed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert printed["device"] == "cpu" and printed["device_name"] == env.cpu_name() and printed["data_dir"] == "(none)"
    assert env.describe({"device": ""}, show=False)["device"] in ("cpu", "cuda")  # '' means auto, never an empty row


# ----------------------------------------------------------------------------------------- warn_once
def test_data_warning_once_per_process_even_when_filters_change(make_official, monkeypatch):
    """Every `warnings.catch_warnings()` (fastai and torch open them) clears Python's once-per-call-site registry;
    notebook 90 loads the data once per method and printed the same warning five times."""
    from bac.data import rsna
    monkeypatch.setattr(bac, "_SHOWN", set())
    root = make_official(integer_test_ages=True)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # what a notebook kernel does with a UserWarning
        for _ in range(5):
            df = rsna.load_table(root)
            with warnings.catch_warnings():  # what a library call in between does
                pass
    assert [str(w.message)[:26] for w in shown] == ["The test labels are all in"]
    assert shown[0].filename == __file__  # still attributed to the caller's line (stacklevel kept)
    assert len(df.attrs["warnings"]) == 1 and "not the official RSNA ground truth" in df.attrs["warnings"][0]


def test_warn_once_respects_ignore_always_and_error(monkeypatch):
    monkeypatch.setattr(bac, "_SHOWN", set())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("ignore")
        bac.warn_once("hidden first")  # ignored: not marked as shown
        warnings.simplefilter("default")
        bac.warn_once("hidden first")
        bac.warn_once("hidden first")
        warnings.simplefilter("always")  # pytest.warns, or a reader who asks for every occurrence
        bac.warn_once("hidden first")
    assert [str(w.message) for w in shown] == ["hidden first", "hidden first"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="hidden first"):
            bac.warn_once("hidden first")


def test_split_warnings_are_recorded_in_the_table():
    import numpy as np
    import pandas as pd

    from bac.data import splits
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": np.arange(400), "boneage": rng.uniform(0, 228, 400), "male": rng.random(400) < 0.5,
                       "split": "train"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = splits.make_split(df, "ren2019", seed=0)
    assert out.attrs["split_warnings"] and all(w.startswith("split: dropped") for w in out.attrs["split_warnings"])
