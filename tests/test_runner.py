"""The headless runner on tiny notebooks: injected parameters, per-notebook timeout, failure report, exit code."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bac import runner

PARAMS = 'PROFILE: str = "smoke"  # profile\nOUT_DIR: str = ""  # where\nMESSAGE: str = "default"  # text'


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbs")
    _notebook(d / "01_ok.ipynb", "from pathlib import Path\nPath(OUT_DIR, 'seen.json').write_text("
                                 "__import__('json').dumps([PROFILE, MESSAGE]))")
    _notebook(d / "02_fails.ipynb", "x = 1", "raise ValueError('the planted failure')")
    _notebook(d / "03_slow.ipynb", "import time\ntime.sleep(120)")
    return d


def test_runner_reports_each_outcome_and_keeps_going(tiny, tmp_path):
    out = tmp_path / "out"
    outcomes = {o.notebook: o for o in runner.run("smoke", out=str(out), notebook_dir=tiny, timeout=25,
                                                     progress=False)}
    assert outcomes["01_ok.ipynb"].status == "ok"
    # injected parameters reach the notebook; a parameter it does not declare (DATA_DIR...) is not injected
    assert json.loads((out / "seen.json").read_text()) == ["smoke", "default"]
    executed = nbformat.read(out / "notebooks" / "01_ok.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    failed = outcomes["02_fails.ipynb"]
    assert failed.status == "failed" and "the planted failure" in failed.detail
    assert "cell 4" in failed.detail and "raise ValueError" in failed.detail
    slow = outcomes["03_slow.ipynb"]
    assert slow.status == "timeout" and slow.seconds < 60
    assert (out / "README.md").exists()


def test_cli_exit_code_is_nonzero_when_a_notebook_fails(tiny, tmp_path):
    run = lambda only: subprocess.run([sys.executable, "-m", "bac", "run", "--profile", "smoke", "--notebooks",
                                       str(tiny), "--only", only, "--out", str(tmp_path), "--no-progress"],
                                      capture_output=True, text=True, timeout=300)
    ok = run("01_*")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run("01_*,02_*")
    assert bad.returncode == 1 and "02_fails.ipynb" in bad.stdout and "the planted failure" in bad.stdout
    assert "Timing (slowest first)" in bad.stdout
