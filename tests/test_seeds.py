"""Seed spread: `bac run --seeds N` runs seeds 1..N-1 before seed 0, and every result row is reported over them."""
import json

import pytest

from bac import report, runner


def write_run(folder, seed, values, notebook="x"):
    """A metrics.json with one result row per (row, ours, paper) of `values`, as a notebook of seed `seed`."""
    (folder / notebook).mkdir(parents=True, exist_ok=True)
    results = [report.result("Table 1", row, ours, paper) for row, ours, paper in values]
    (folder / notebook / "metrics.json").write_text(json.dumps(dict(paper=notebook, profile="demo", config=dict(
        seed=seed), data_source="synthetic", results=results)))


def three_seeds(tmp_path, a, b):
    for k in range(3):
        write_run(report.seed_dir(tmp_path, k), k, [("A", a[k], 5.0), ("B", b[k], 6.0)])
    return report.results_by_seed(tmp_path, 3)


def test_results_by_seed_holds_each_seed_mean_and_sd(tmp_path):
    t = three_seeds(tmp_path, [10.0, 11.0, 12.0], [20.0, 20.0, 20.0])
    a = t[t.row == "A"].iloc[0]
    assert (a["seed 0"], a["seed 2"], a["mean"], a["n"], a.paper) == (10.0, 12.0, 11.0, 3, 5.0)
    assert a.SD == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="--seeds 4"):
        report.results_by_seed(tmp_path, 4)


@pytest.mark.parametrize("a, b, verdict", [
    ([10.0, 10.5, 9.8], [12.0, 12.4, 11.9], "reproduced beyond noise"),   # the paper's A < B, clearly
    ([12.0, 12.4, 11.9], [10.0, 10.5, 9.8], "not reproduced"),            # reversed beyond noise
    ([10.0, 12.0, 9.0], [11.0, 10.0, 12.0], "undecided"),                 # within noise
])
def test_orderings_are_judged_against_seed_noise(tmp_path, a, b, verdict):
    v = report.ordering_verdicts(three_seeds(tmp_path, a, b))
    assert v.verdict.tolist() == [verdict]


def test_one_seed_never_decides_an_ordering(tmp_path):
    write_run(tmp_path, 0, [("A", 1.0, 5.0), ("B", 30.0, 6.0)])
    assert "undecided" in report.orderings_markdown(tmp_path, 1)


def test_run_with_seeds_runs_the_other_seeds_first_and_the_index_reports_the_spread(tmp_path):
    nb = tmp_path / "nb"
    nb.mkdir()
    code = ("from bac import report\nimport json, pathlib\n"
            "p = pathlib.Path(OUT_DIR) / 'x'\np.mkdir(parents=True, exist_ok=True)\n"
            "(p / 'metrics.json').write_text(json.dumps(dict(paper='x', profile='smoke', config=dict(seed=SEED),"
            " results=[report.result('T', 'r', 10.0 + SEED, 9.0)])))\n"
            "if SEEDS > 1:\n    assert (pathlib.Path(OUT_DIR) / 'seeds' / 'seed-1' / 'x' / 'metrics.json').exists()\n")
    params = ("SEED: int = 0  # seed\nSEEDS: int = 1  # seeds\nOUT_DIR: str = ''  # out\nPROFILE: str = 'smoke'  # p\n")
    cells = [dict(cell_type="code", metadata=dict(tags=["parameters"]), source=params, outputs=[],
                  execution_count=None, id="p"),
             dict(cell_type="code", metadata={}, source=code, outputs=[], execution_count=None, id="a")]
    (nb / "01_x.ipynb").write_text(json.dumps(dict(nbformat=4, nbformat_minor=5, metadata=dict(
        kernelspec=dict(name="python3", display_name="Python 3", language="python")), cells=cells)))
    outcomes = runner.run("smoke", out=str(tmp_path / "r"), notebook_dir=nb, progress=False, seeds=2)
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.detail for o in outcomes]
    t = report.results_by_seed(tmp_path / "r", 2)
    assert t[["seed 0", "seed 1"]].values.tolist() == [[10.0, 11.0]]
    assert "10.50 ± 0.71" in (tmp_path / "r" / "README.md").read_text()
