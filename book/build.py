#!/usr/bin/env python3
"""`make book`: a static HTML site from the published executed notebooks, offline (issue 22).

- every notebook of `reports/executed/` (book/publish.py writes them) becomes one page, in file order, through
  nbconvert's HTML exporter with the template `book/templates/bac` (JupyterLab's page, without the CDN scripts it
  would load, with a navigation bar: previous, contents, next);
- `index.html`, from the small Jinja template `book/templates/landing.html.j2`: the results table of
  `reports/comparison/metrics.json` (our test MAE with its CI beside the paper's quoted MAE, with the data source
  and profile that produced ours), a figure gallery (one key figure per notebook, linked to its cell) and the
  contents;
- equations through MathJax 2, copied from the installed package `jupyter-server-mathjax` (the book extra:
  `pip install -e '.[book]'`) into `build/book/mathjax/`; without it the pages load no MathJax and show the TeX
  source, and the build says so. Nothing is fetched from the network.

Used by: `make book`, tests/test_book.py.
Run: python book/build.py [--src reports/executed] [--out build/book] [--metrics reports/comparison/metrics.json]
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
TEMPLATES = BOOK / "templates"
SRC = REPO / "reports" / "executed"
OUT = REPO / "build" / "book"
METRICS = REPO / "reports" / "comparison" / "metrics.json"
TITLE = "bac: five bone-age papers, executed"
INTRO = ("The reference run of every notebook of bac, with its outputs: read the results in context without "
         "running anything. Each page is one executed notebook; the navigation bar leads through them in order.")
# the gallery's figure per notebook: a name in the source of the cell that draws it (its `save_figure` name);
# a notebook not listed shows its first figure under "## Results", else its first figure
KEY_FIGURES = {
    "01": "sample_grid", "02": "li2021_steps", "10": "fig3_ram", "30": "fig3_attention_crops",
    "50": "fig7_fig8_gradcam", "90": "mae_bars",
}
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # the configurations jupyter-server-mathjax ships
PAPER_COLUMN = "paper MAE (RSNA, quoted, not run here)"


def page_name(path: Path) -> str:
    return f"{path.stem}.html"


def notebook_title(nb, path: Path) -> tuple[str, str]:
    """(full title, short title for the navigation bar) from the notebook's first '# ' heading."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    full = re.sub(r"[*_`]", "", line[2:]).strip()
                    short = full.split(":", 1)[0].strip()
                    number = path.stem.split("_", 1)[0]
                    if not short.startswith(number):
                        short = f"{number} · {short}"
                    return full, short
    return path.stem, path.stem


def figures(nb) -> list[tuple[int, object, str]]:
    """(cell index, cell, base64 PNG) of every figure, in order."""
    return [(i, c, o.data["image/png"]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def key_figure(nb, path: Path):
    """The gallery's figure of a notebook: (cell, base64 PNG), or None when it has no figure."""
    found = figures(nb)
    if not found:
        return None
    hint = KEY_FIGURES.get(path.stem.split("_", 1)[0])
    for _, cell, png in found:
        if hint and hint in cell.source:
            return cell, png
    results = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                    and re.search(r"^## Results\s*$", c.source, re.M)), None)
    after = [(c, p) for i, c, p in found if results is not None and i > results]
    return after[0] if after else found[0][1:]


def cell_anchor(cell) -> str:
    """The id nbconvert's lab template gives a cell's <div> ('cell-id=<id>'); '' for a cell without an id."""
    return f"cell-id={cell.id}" if cell.get("id") else ""


def fmt(value, digits: int | None = 2) -> str:
    """A number for the results table: `digits` decimals, or as quoted (None); '(none)' for a missing value."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "(none)"
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}" if digits is None else f"{value:.{digits}f}"


def results_table(metrics_path: Path, pages: list[dict]) -> dict | None:
    """The landing page's results: one row per method of reports/comparison/metrics.json."""
    if not metrics_path.exists():
        return None
    m = json.loads(metrics_path.read_text())  # Python's json reads the NaN the report writes for "no paper value"
    table = m.get("metrics", {}).get("table", [])
    rows = []
    for r in table:
        page = next((p for p in pages if f"_{r['method']}" in p["name"]), None)
        ci = r.get("MAE 95% CI") or (f"{r['CI lo']:.2f}-{r['CI hi']:.2f}" if "CI lo" in r else "")
        rows.append({"method": r["method"], "href": page["href"] if page else "",
                     "notebook": page["short"] if page else "", "mae": fmt(r.get("MAE")), "ci": ci,
                     "paper": fmt(r.get(PAPER_COLUMN), digits=None)})
    mm = m.get("metrics", {})
    notes = []
    if mm.get("mean_predictor") is not None:
        notes.append(f"mean predictor (always the training set's mean age): {fmt(mm['mean_predictor'])} months")
    if mm.get("floor") is not None:
        notes.append(f"label-noise floor of the synthetic test set: {fmt(mm['floor'])} months")
    config = m.get("config", {})
    try:
        source = metrics_path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        source = str(metrics_path)
    return {"rows": rows, "notes": notes, "data_source": m.get("data_source", "unknown"),
            "profile": m.get("profile", "unknown"), "n_test": mm.get("n_test", "?"),
            "seeds": None, "seed": config.get("seed"), "command": m.get("command", ""),
            "code_version": m.get("code_version", ""), "written": m.get("written", ""), "source": source}


def vendor_mathjax(out: Path) -> str:
    """Copy MathJax 2 from jupyter-server-mathjax into out/mathjax; its page URL, or '' when not installed."""
    try:
        import jupyter_server_mathjax  # optional (the book extra): only its static files are used
    except ImportError:
        return ""
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").exists():
        return ""
    target = out / "mathjax"
    stamp = target / ".from"
    origin = f"{static} {getattr(jupyter_server_mathjax, '__version__', '')}"
    if not (stamp.exists() and stamp.read_text() == origin):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(static, target, ignore=shutil.ignore_patterns("__pycache__"))
        stamp.write_text(origin)
    return f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def build(src=SRC, out=OUT, metrics=METRICS, log=print) -> Path:
    """Build the book from the notebooks in `src` into `out`; returns the landing page. Raises SystemExit."""
    t0 = time.time()
    src, out, metrics = Path(src), Path(out), Path(metrics)
    paths = sorted(src.glob("[0-9]*.ipynb"))
    if not paths:
        raise SystemExit(f"no published notebooks in {src}: run `make publish` after `make reference` "
                         f"(it writes reports/executed/ from reports/notebooks/)")
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.html"), out / "figures"]:   # pages of notebooks since removed must not linger
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    (out / "figures").mkdir()
    shutil.copyfile(TEMPLATES / "book.css", out / "book.css")
    mathjax_url = vendor_mathjax(out)
    if not mathjax_url:
        log("warning: jupyter-server-mathjax is not installed (pip install -e '.[book]'): the pages load no MathJax "
            "and show equations as TeX source")

    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    pages = []
    for path, nb in zip(paths, notebooks):
        full, short = notebook_title(nb, path)
        pages.append({"name": path.name, "href": page_name(path), "title": full, "short": short})
    index = {"href": "index.html", "title": "Contents"}

    exporter = HTMLExporter(template_name="bac", extra_template_basedirs=[str(TEMPLATES)])
    for k, (path, nb) in enumerate(zip(paths, notebooks)):
        nav = {"index": index, "here": pages[k]["short"],
               "prev": {"href": pages[k - 1]["href"], "title": pages[k - 1]["short"]} if k > 0 else index,
               "next": {"href": pages[k + 1]["href"], "title": pages[k + 1]["short"]} if k + 1 < len(pages) else None}
        resources = {"metadata": {"name": pages[k]["title"]},
                     "bac": {"nav": nav, "css": "book.css", "mathjax_url": mathjax_url}}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        (out / pages[k]["href"]).write_text(body, encoding="utf-8")

    gallery = []
    for path, nb, page in zip(paths, notebooks, pages):
        found = key_figure(nb, path)
        if found is None:
            continue
        cell, png = found
        name = f"figures/{path.stem}.png"
        (out / name).write_bytes(base64.b64decode(png))
        anchor = cell_anchor(cell)
        gallery.append({"src": name, "href": page["href"] + (f"#{anchor}" if anchor else ""),
                        "title": page["short"], "alt": html.escape(f"key figure of {page['title']}")})

    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(TEMPLATES), str(TEMPLATES / "bac")]),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True)
    results = results_table(metrics, pages)
    try:
        src_name = src.resolve().relative_to(REPO).as_posix()
    except ValueError:
        src_name = str(src)
    landing = env.get_template("landing.html.j2").render(
        title=TITLE, intro=INTRO, css="book.css", results=results, gallery=gallery, pages=pages, src=src_name,
        missing=f"{metrics} not found (notebook 90 writes it)",
        nav={"index": None, "here": "Contents", "prev": None,
             "next": {"href": pages[0]["href"], "title": pages[0]["short"]}})
    (out / "index.html").write_text(landing, encoding="utf-8")
    log(f"book: {len(pages)} notebook pages, {len(gallery)} gallery figures, "
        f"{'MathJax (local copy)' if mathjax_url else 'no MathJax'} -> {out / 'index.html'} ({time.time() - t0:.1f} s)")
    return out / "index.html"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--src", default=str(SRC), help="published notebooks (default: reports/executed)")
    ap.add_argument("--out", default=str(OUT), help="where the site goes (default: build/book)")
    ap.add_argument("--metrics", default=str(METRICS), help="results table (default: reports/comparison/metrics.json)")
    args = ap.parse_args(argv)
    build(args.src, args.out, args.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
