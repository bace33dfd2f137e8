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


def without_timings(obj):
    """`obj` (a loaded metrics.json, or any part of it) without its wall-clock measurements (`TIMING_KEY`):
    what two runs of the same code, seed and data must reproduce exactly."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not TIMING_KEY.search(str(k))}
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
                             command=m.get("command")))
    return pd.DataFrame(rows, columns=["notebook", "table", "row", "metric", "paper", "ours", "note", "data",
                                       "profile", "command"])


def results_markdown(out_dir) -> str:
    df = collect_results(out_dir)
    if df.empty:
        return "_No results yet: run `make reports`._\n"
    df = df.assign(paper=df.paper.map(lambda v: "" if v is None or pd.isna(v) else f"{v:g}"),
                   ours=df.ours.map(lambda v: "" if v is None or pd.isna(v) else f"{v:.2f}"))
    df = df.rename(columns={"paper": "paper's value (their data)", "ours": "this run"})
    cols = ["notebook", "table", "row", "metric", "paper's value (their data)", "this run", "data", "profile"]
    cmds = sorted(set(df.command.dropna()))
    return (df[cols].to_markdown(index=False) + "\n\nProduced by: " + "; ".join(f"`{c}`" for c in cmds) + "\n")


def write_index(out_dir, timings: pd.DataFrame | None = None, provenance: dict | None = None) -> Path:
    """Regenerate `<out_dir>/README.md` from every `*/metrics.json` under it; `provenance` (command, seconds,
    jobs) says how the run was made, with the code revision and the machine."""
    from bac import env
    out_dir = Path(out_dir)
    text = ["# Reports (generated by `bac run`; do not edit by hand)\n",
            "Every number below comes from a run of the notebooks; `data` says whether it ran on the built-in "
            "synthetic phantoms or the real RSNA images. The paper's column quotes the paper (RSNA data, the "
            "paper's full settings) and was not run here.\n", results_markdown(out_dir)]
    if provenance:
        info = env.describe(None, show=False)
        text += ["\n## How this run was made\n",
                 f"- command: `{provenance.get('command', '')}` ({provenance.get('jobs', 1)} notebook(s) at a time)",
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
    names = sorted({p.relative_to(a) for p in a.glob("*/*") if p.suffix in (".json", ".csv")}
                   | {p.relative_to(b) for p in b.glob("*/*") if p.suffix in (".json", ".csv")})
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
