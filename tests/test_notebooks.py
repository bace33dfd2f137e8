"""Every notebook follows the house skeleton (STYLE.md), and every notebook runs headless once (smoke)."""
import ast
import json
import re
from pathlib import Path

import pytest

from bac import runner

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
REQUIRED_PARAMS = {"PROFILE", "DATA_DIR", "SEED", "OUT_DIR"}
# 01 runs through nbval (see the Makefile); every other notebook runs here, once, through the runner.
NBVAL = {"01_data_exploration.ipynb"}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"
    assert all(re.fullmatch(r"\d\d[a-z]?_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_skeleton(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    src = lambda c: "".join(c["source"])
    assert cells[0]["cell_type"] == "markdown" and src(cells[0]).lstrip().startswith("# "), "title cell first"
    params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(src(params[0]))
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant), \
            f"parameters cell holds scalars with type hints only, got: {ast.unparse(node)}"
    names = {n.target.id for n in tree.body}
    assert REQUIRED_PARAMS <= names, f"missing parameters {REQUIRED_PARAMS - names}"
    # papermill must parse every parameter, or it warns "Passed unknown parameter" and a reader cannot tell
    import nbformat
    from papermill.translators import PythonTranslator
    parsed = {p.name for p in PythonTranslator.inspect(nbformat.from_dict({**params[0], "source": src(params[0])}))}
    assert parsed == names, f"papermill cannot parse the parameters {names - parsed} (an '=' in a comment?)"
    lines = src(params[0]).splitlines()
    assert all("#" in line for line in lines if line.strip()), "each parameter has a comment"
    code = "\n".join(src(c) for c in cells if c["cell_type"] == "code")
    assert "bac.config.resolve(" in code and "describe(" in code
    heads = [line.strip() for c in cells if c["cell_type"] == "markdown" for line in src(c).splitlines()
             if line.startswith("## ")]
    assert "## Results" in heads and "## Deviations from the paper" in heads and "## Exercises" in heads
    assert heads.index("## Results") < heads.index("## Deviations from the paper") < heads.index("## Exercises")
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "commit notebooks with outputs stripped"
    everything = "\n".join(src(c) for c in cells)
    assert not re.search(r"(?m)^\s*[!%]\s*pip install", everything), "no pip install in notebooks"
    assert not re.search(r"['\"]/(home|root|tmp|work|Users)/", everything), "no absolute paths"


@pytest.mark.notebooks
def test_every_notebook_runs_headless_under_smoke(tmp_path):
    """The suite once through `bac run` (papermill), smoke profile; output under build/test-reports."""
    import os
    out = Path(os.environ.get("BAC_OUT_DIR", tmp_path / "reports"))
    names = [p.name for p in NOTEBOOKS if p.name not in NBVAL]
    if not names:
        pytest.skip("only nbval notebooks so far")
    outcomes = runner.run("smoke", only=",".join(names), out=str(out), timeout=900, progress=False)
    failed = [f"{o.notebook}: {o.status}: {o.detail}" for o in outcomes if o.status != "ok"]
    assert not failed, "\n".join(failed)
    assert (out / "README.md").exists()
