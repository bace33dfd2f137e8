"""Where reports go, and how figures, tables and metrics are written.

`save_figure`, `save_table` (CSV + Markdown) and `save_metrics` (JSON with parameters, data source,
revision and result rows) all write under `<cfg.out_dir>/<cfg.paper>/`. `write_index` regenerates
`<out_dir>/README.md`: one row per reproduced table row, the paper's value beside this run's.

Used in: every notebook, `bac run`.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pandas as pd


def report_dir(cfg) -> Path:
    path = Path(cfg["out_dir"]) / (cfg.get("paper") or "misc")
    path.mkdir(parents=True, exist_ok=True)
    return path


def caption(cfg) -> str:
    """Which data and profile produced a number, e.g. 'synthetic data, demo profile'."""
    src = {"synthetic": "synthetic data", "rsna": "RSNA data"}.get(cfg.get("data_source"), cfg.get("data_source"))
    return f"{src}, {cfg['profile']} profile" + (" (dry run)" if cfg.get("dry_run") else "")


def save_figure(cfg, fig, name: str, dpi: int = 110) -> Path:
    path = report_dir(cfg) / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def portable(value):
    """`value` (a string, or a dict/list of them) with paths inside the repository made relative to it
    ('/home/me/bac/reports/x' -> 'reports/x'): what a run writes into reports/ does not depend on where the
    repository was cloned (paths elsewhere, e.g. a user's data folder, are kept)."""
    from bac.env import REPO
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(v) for v in value)
    if isinstance(value, str) and value.startswith(f"{REPO}/"):
        return value[len(str(REPO)) + 1:]
    return value


def save_table(cfg, df: pd.DataFrame, name: str, title: str = "", floatfmt: str = ".2f") -> Path:
    """Write `name.csv` and `name.md` (with a caption naming the data and profile); returns the CSV path."""
    df = df.map(portable) if len(df) else df
    out = report_dir(cfg)
    df.to_csv(out / f"{name}.csv", index=False)
    head = f"**{title}** ({caption(cfg)})\n\n" if title else f"({caption(cfg)})\n\n"
    (out / f"{name}.md").write_text(head + df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    return out / f"{name}.csv"


class Record(dict):
    """One experiment: (spec, seed) -> its test predictions, MAE (and the rest of `bac.metrics.summary`), training
    seconds, parameter count, the model, and what else a notebook keeps with it; keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"record has no field {name!r}; fields: {', '.join(sorted(self))}") from None


def record(spec: str, pred, table, seconds: float, model=None, seed: int = 0, **extra) -> Record:
    """The run record every notebook keeps: `pred` are the months predicted for the rows of `table` (its `boneage`
    is the truth); `extra` holds what else the notebook needs (settings of the row, history, per-sex MAEs...)."""
    import numpy as np
    from bac import metrics
    from bac.train import count_parameters
    pred = np.asarray(pred, dtype=float)
    s = metrics.summary(table["boneage"].to_numpy(float), pred) if len(pred) else dict(mae=float("nan"))
    return Record(spec=spec, seed=seed, pred=pred, seconds=float(seconds), model=model,
                  parameters=count_parameters(model) if model is not None else None, **s, **extra)


def records_table(records, paper: dict | None = None, label: str = "setting") -> pd.DataFrame:
    """The report table of a list of records: one row each (its spec under `label`), our test MAE and SD, seconds
    and parameters, and the paper's quoted value of that spec (`paper`: spec -> value) when given."""
    rows = [{label: r["spec"], "ours: test MAE (months)": r["mae"], "SD": r.get("sd"), "n (test)": r.get("n"),
             "parameters": r.get("parameters"), "seconds": r["seconds"]} for r in records]
    t = pd.DataFrame(rows)
    if paper is not None:
        t["paper MAE (RSNA, quoted)"] = [paper.get(r["spec"]) for r in records]
    return t


def result(table: str, row: str, ours: float, paper: float | None = None, metric: str = "MAE (months)",
           note: str = "") -> dict:
    """One reproduced number: `paper` is the value the paper reports (None if it gives none)."""
    return dict(table=table, row=row, metric=metric, ours=_num(ours), paper=_num(paper), note=note)


def _num(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, 4)


def save_metrics(cfg, metrics: dict | None = None, results: list[dict] | None = None, env: dict | None = None) -> Path:
    """metrics.json: parameters, environment, data source, label files, metrics and result rows."""
    from bac import env as env_mod
    from bac.data import code_version
    from bac.train import DETERMINISM
    payload = dict(paper=cfg.get("paper"), profile=cfg["profile"], data_source=cfg.get("data_source"),
                   caption=caption(cfg), written=time.strftime("%Y-%m-%d %H:%M:%S"), code_version=code_version(),
                   determinism=DETERMINISM,
                   command=cfg.get("command") or f"python -m bac run --profile {cfg['profile']}",
                   config={k: v for k, v in cfg.items() if _jsonable(v)},
                   env=env or env_mod.describe(cfg, show=False), metrics=metrics or {}, results=results or [])
    path = report_dir(cfg) / "metrics.json"
    path.write_text(json.dumps(portable(json.loads(json.dumps(payload, default=str))), indent=1) + "\n")
    return path


# Keys of metrics.json that hold wall-clock measurements (they differ between two runs of the same code, seed
# and data; every other number must not).
TIMING_KEY = re.compile(r"seconds|latency|throughput|images/s|s/image|\(s\)|_s$|^written$")
# The command line that started the run (`make reports` and the 3-seed reference differ only there).
COMMAND_KEY = re.compile(r"^command$")


def without_timings(obj):
    """`obj` (a loaded metrics.json, or any part of it) without its wall-clock measurements (`TIMING_KEY`) and the
    command line (`COMMAND_KEY`): what two runs of the same code, seed and data must reproduce exactly."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items()
                if not (TIMING_KEY.search(str(k)) or COMMAND_KEY.search(str(k)))}
    if isinstance(obj, list):   # result rows whose metric is a time (latency, throughput) are timings too
        return [without_timings(v) for v in obj
                if not (isinstance(v, dict) and TIMING_KEY.search(str(v.get("metric", ""))))]
    return obj


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def collect_results(out_dir) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(out_dir).glob("*/metrics.json")):
        m = json.loads(path.read_text())
        for r in m.get("results", []):
            rows.append(dict(notebook=m.get("paper"), **r, data=m.get("data_source"), profile=m.get("profile"),
                             command=m.get("command"), seed=m.get("config", {}).get("seed", 0)))
    return pd.DataFrame(rows, columns=["notebook", "table", "row", "metric", "paper", "ours", "note", "data",
                                       "profile", "command", "seed"])


# ------------------------------------------------------------------------------------------ seeds
# `bac run --seeds N` runs every notebook with SEED = 1 .. N-1 into `<out>/seeds/seed-<k>/` first, then with SEED = 0
# and SEEDS = N into `<out>/` itself: the seed-0 reports are exactly a one-seed run's, and each notebook (and the
# index) reads the other seeds' metrics.json to report every result row as mean +/- SD over the seeds.
def seed_dir(out_dir, seed: int) -> Path:
    return Path(out_dir) if seed == 0 else Path(out_dir) / "seeds" / f"seed-{seed}"


def results_by_seed(out_dir, seeds: int, notebook: str | None = None) -> pd.DataFrame:
    """One row per result row (notebook, table, row, metric): the paper's value, the value of each seed
    0..seeds-1 (`seed k`), their mean, SD (ddof 1) and count. A seed whose reports are missing raises."""
    frames = []
    for k in range(seeds):
        folder = seed_dir(out_dir, k)
        if not any(folder.glob("*/metrics.json")):
            raise FileNotFoundError(f"no reports of seed {k} under {folder}: run `python -m bac run --seeds {seeds}` "
                                    f"(it runs seeds 1..{seeds - 1} into {Path(out_dir) / 'seeds'} before seed 0)")
        frames.append(collect_results(folder).assign(seed=k))
    df = pd.concat(frames, ignore_index=True)
    if notebook is not None:
        df = df[df.notebook == notebook]
    keys = ["notebook", "table", "row", "metric"]
    wide = df.groupby(keys + ["seed"], sort=False)["ours"].first().unstack("seed")
    wide.columns = [f"seed {k}" for k in wide.columns]
    per_seed = wide[[f"seed {k}" for k in range(seeds) if f"seed {k}" in wide]]
    out = wide.assign(mean=per_seed.mean(axis=1), SD=per_seed.std(axis=1, ddof=1), n=per_seed.count(axis=1))
    paper = df.drop_duplicates(keys).set_index(keys)["paper"]
    return out.join(paper).reset_index()[keys + ["paper", *per_seed.columns, "mean", "SD", "n"]]


def seed_table(cfg, seeds: int):
    """In a notebook: its result rows over seeds 0..seeds-1 (`results_by_seed`), saved as `results_by_seed.csv`;
    None (and nothing written) for one seed."""
    if seeds <= 1:
        print("one seed (SEEDS = 1): run `python -m bac run --seeds 3` for the spread over seeds")
        return None
    t = results_by_seed(cfg["out_dir"], seeds, notebook=cfg["paper"])
    save_table(cfg, t, "results_by_seed", f"Result rows over seeds 0-{seeds - 1}: mean, SD and each seed")
    return t


def ordering_verdicts(by_seed: pd.DataFrame) -> pd.DataFrame:
    """Per paper table (rows with a paper value, metric MAE): is the paper's ordering of its rows reproduced?
    For each pair adjacent in the paper's order (equal paper values skipped), the per-seed differences of ours are
    tested (one-sample t-test over seeds, p < 0.05): 'reproduced beyond noise' when every pair agrees beyond noise,
    'not reproduced' when one pair is reversed beyond noise, else 'undecided' (always, with one seed). Tables of
    strata ('... by sex/age') are left out."""
    from scipy import stats
    rows = []
    seeds = [c for c in by_seed.columns if c.startswith("seed ")]
    mae = by_seed[by_seed.metric.str.startswith("MAE") & by_seed.paper.notna() & by_seed["mean"].notna()
                  & ~by_seed.table.str.contains(" by ")]   # strata (by sex/age band) are no single ordering
    for (nb, table), g in mae.groupby(["notebook", "table"], sort=False):
        g = g.sort_values("paper")
        pairs = [(a, b) for (_, a), (_, b) in zip(g.iloc[:-1].iterrows(), g.iloc[1:].iterrows())
                 if a.paper < b.paper]
        if not pairs:
            continue
        agree = reversed_ = 0
        for a, b in pairs:
            d = (b[seeds] - a[seeds]).astype(float).dropna()
            if len(d) >= 2 and d.std(ddof=1) > 0:
                p = stats.ttest_1samp(d, 0.0).pvalue
                agree += bool(p < 0.05 and d.mean() > 0)
                reversed_ += bool(p < 0.05 and d.mean() < 0)
        verdict = ("not reproduced" if reversed_ else "reproduced beyond noise" if agree == len(pairs)
                   else "undecided")
        rows.append(dict(notebook=nb, table=table, pairs=len(pairs), **{"agree beyond noise": agree,
                         "reversed beyond noise": reversed_}, seeds=len(seeds), verdict=verdict))
    return pd.DataFrame(rows, columns=["notebook", "table", "pairs", "agree beyond noise", "reversed beyond noise",
                                       "seeds", "verdict"])


def results_markdown(out_dir, seeds: int = 1) -> str:
    df = results_by_seed(out_dir, seeds) if seeds > 1 else None
    base = collect_results(out_dir)
    if base.empty:
        return "_No results yet: run `make reports`._\n"
    fmt = lambda v: "" if v is None or pd.isna(v) else f"{v:.2f}"  # noqa: E731
    if df is None:
        df = base.assign(ours=base.ours.map(fmt)).rename(columns={"ours": "this run (seed 0)"})
        ours_cols = ["this run (seed 0)"]
    else:
        df = df.merge(base[["notebook", "table", "row", "metric", "data", "profile"]], how="left",
                      on=["notebook", "table", "row", "metric"])
        df["ours: mean ± SD"] = [f"{fmt(m)} ± {fmt(s)}" if n > 1 else fmt(m) for m, s, n in
                                 zip(df["mean"], df.SD, df.n)]
        df["seeds"] = df.n.astype(int)
        df["seed 0"] = df["seed 0"].map(fmt)
        ours_cols = ["ours: mean ± SD", "seeds", "seed 0"]
    df = df.assign(paper=df.paper.map(lambda v: "" if v is None or pd.isna(v) else f"{v:g}"))
    df = df.rename(columns={"paper": "paper's value (their data)"})
    cols = ["notebook", "table", "row", "metric", "paper's value (their data)", *ours_cols, "data", "profile"]
    cmds = sorted(set(base.command.dropna()))
    return (df[cols].to_markdown(index=False) + "\n\nProduced by: " + "; ".join(f"`{c}`" for c in cmds) + "\n")


def orderings_markdown(out_dir, seeds: int = 1) -> str:
    by_seed = results_by_seed(out_dir, seeds) if seeds > 1 else collect_results(out_dir).assign(
        **{"seed 0": lambda d: d.ours, "mean": lambda d: d.ours})
    v = ordering_verdicts(by_seed)
    if v.empty:
        return ""
    return ("\n## Is each paper's ordering reproduced?\n\nPer paper table, the rows ordered by the paper's MAE; for "
            "each pair adjacent in that order, our per-seed differences are tested (one-sample t-test over seeds, "
            "p < 0.05). *reproduced beyond noise*: every pair agrees beyond seed noise; *not reproduced*: a pair is "
            "reversed beyond noise; *undecided*: neither (always the case with one seed).\n\n"
            + v.to_markdown(index=False) + "\n")


def write_index(out_dir, timings: pd.DataFrame | None = None, provenance: dict | None = None, seeds: int = 1) -> Path:
    """Regenerate `<out_dir>/README.md` from every `*/metrics.json` under it (and, with `seeds` > 1, the other
    seeds' under `<out_dir>/seeds/`); `provenance` (command, seconds, jobs) says how the run was made, with the
    code revision and the machine."""
    from bac import env
    out_dir = Path(out_dir)
    spread = (f"Each row was trained for seeds 0-{seeds - 1}: mean ± SD over the seeds (ddof 1), and seed 0 alone, "
              "which a one-seed run reproduces." if seeds > 1 else
              "One seed: `python -m bac run --seeds 3` reports the spread over seeds.")
    text = ["# Reports (generated by `bac run`; do not edit by hand)\n",
            "Every number below comes from a run of the notebooks; `data` says whether it ran on the built-in "
            "synthetic phantoms or the real RSNA images. The paper's column quotes the paper (RSNA data, the "
            f"paper's full settings) and was not run here. {spread}\n", results_markdown(out_dir, seeds),
            orderings_markdown(out_dir, seeds)]
    if provenance:
        info = env.describe(None, show=False)
        text += ["\n## How this run was made\n",
                 f"- command: `{provenance.get('command', '')}` ({provenance.get('jobs', 1)} notebook(s) at a time, "
                 f"seeds 0-{seeds - 1})",
                 f"- code revision: `{info['revision']}`",
                 f"- machine: {info['device']} ({info['device_name']}), {info['cpu_count']} CPUs, "
                 f"{info['torch_threads']} torch threads; {info['platform']}; python {info['python']}, "
                 f"torch {info['torch']}",
                 f"- wall time of the notebooks: {provenance.get('seconds', 0) / 60:.1f} min "
                 f"(finished {time.strftime('%Y-%m-%d %H:%M')})\n"]
    if timings is not None and not timings.empty:
        text += ["\n## Notebook timings (last run)\n",
                 timings.sort_values("notebook").to_markdown(index=False, floatfmt=".1f") + "\n"]
    path = out_dir / "README.md"
    path.write_text("\n".join(text))
    return path


def compare_reports(a, b) -> list[str]:
    """Differences between two report folders apart from wall-clock measurements: every `metrics.json` (without
    `TIMING_KEY` fields) and every table CSV (without timing columns) must be equal. [] when they reproduce."""
    a, b = Path(a), Path(b)
    out = []
    def files(d):   # every table and metrics.json, the other seeds' (seeds/seed-k/...) included
        return {p.relative_to(d) for p in d.rglob("*") if p.suffix in (".json", ".csv")
                and "notebooks" not in p.relative_to(d).parts}
    names = sorted(files(a) | files(b))
    for name in names:
        if not (a / name).exists() or not (b / name).exists():
            out.append(f"{name}: only in {a if (a / name).exists() else b}")
        elif name.name == "metrics.json":
            x, y = (without_timings(json.loads((d / name).read_text())) for d in (a, b))
            for key in sorted(set(x) | set(y)):
                if x.get(key) != y.get(key):
                    out.append(f"{name}: '{key}' differs")
        elif name.suffix == ".csv":
            x, y = (pd.read_csv(d / name) for d in (a, b))
            x, y = (t[[c for c in t.columns if not TIMING_KEY.search(c)]] for t in (x, y))
            if not x.equals(y):
                out.append(f"{name}: rows differ")
        elif (a / name).read_bytes() != (b / name).read_bytes():
            out.append(f"{name}: differs")
    return out
