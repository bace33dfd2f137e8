"""The readers' edition (issue 22): the published executed notebooks, and the book built from them in a real browser.

- Published notebooks (`reports/executed/`, written by book/publish.py): valid nbformat, under the size budget (10 MB
  together, each under tests/check_repo.py's per-file limit), every code cell that had outputs in the run still has
  them, no progress bars, figures and text outputs within their caps, nothing of the real RSNA sample. Skipped, with
  the command to run, when none are published.
- book/publish.py itself, on small notebooks made here: deterministic, idempotent, refuses what must not be published.
- The book (book/build.py) in headless Chromium driven by Playwright, served from 127.0.0.1: every page loads without
  console errors or failed requests, every image loads, every internal link resolves (file and anchor), every
  equation is typeset when the book has its MathJax copy; screenshots of the landing page and of one paper page go
  to build/book-screenshots/. Skipped when Playwright or Chromium is missing (`book/install_browser.sh`).
"""
from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "reports" / "executed"
EXECUTED = REPO / "reports" / "notebooks"
SCREENSHOTS = REPO / "build" / "book-screenshots"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish = _load("bac_book_publish", REPO / "book" / "publish.py")
check_repo = _load("check_repo", REPO / "tests" / "check_repo.py")


@pytest.fixture(scope="module")
def published() -> list[Path]:
    paths = sorted(PUBLISHED.glob("[0-9]*.ipynb"))
    if not paths:
        pytest.skip(f"no published notebooks in {PUBLISHED.relative_to(REPO)}: `make reference` then `make publish`")
    return paths


# -- the published notebooks ---------------------------------------------------------------------------------------

def test_published_notebooks_fit_the_budget(published):
    sizes = {p.name: p.stat().st_size for p in published}
    assert sum(sizes.values()) < publish.TOTAL_BYTES, f"{sum(sizes.values()) / 1e6:.1f} MB in all: {sizes}"
    assert publish.PER_NOTEBOOK_BYTES <= check_repo.MAX_FILE_BYTES
    too_big = {n: s for n, s in sizes.items() if s > publish.PER_NOTEBOOK_BYTES}
    assert not too_big, f"over {publish.PER_NOTEBOOK_BYTES / 1e6:.0f} MB each (tests/check_repo.py): {too_big}"


def test_published_notebooks_are_valid_and_clean(published):
    for path in published:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert publish.refusal(nb, path.name) is None   # no real RSNA sample, a synthetic run, no failed cell
        assert "widgets" not in nb.metadata, path.name
        outputs = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs]
        assert outputs, f"{path.name}: no outputs at all"
        for i, out in outputs:
            where = f"{path.name}, cell {i}"
            assert out.output_type != "error", where
            assert not publish.is_noise(out), f"{where}: a progress bar"
            texts = [out.text] if out.output_type == "stream" else \
                [v for k, v in out.get("data", {}).items() if k == "text/plain"]
            for t in texts:
                assert len(t.splitlines()) <= publish.LINE_CAP, f"{where}: {len(t.splitlines())} lines"
            if "image/png" in out.get("data", {}):
                im = Image.open(io.BytesIO(base64.b64decode(out.data["image/png"])))
                assert im.width <= publish.MAX_WIDTH, f"{where}: a figure {im.width} px wide"


def test_every_cell_with_outputs_in_the_run_keeps_them(published):
    pairs = [(p, EXECUTED / p.name) for p in published if (EXECUTED / p.name).exists()]
    if not pairs:
        pytest.skip(f"no executed notebooks in {EXECUTED.relative_to(REPO)} to compare with (`make reference`)")
    for pub, run in pairs:
        ours, theirs = nbformat.read(pub, as_version=4), nbformat.read(run, as_version=4)
        cells = {c.id: c for c in ours.cells}
        for i, cell in enumerate(theirs.cells):
            if cell.cell_type != "code" or not any(not publish.is_noise(o) for o in cell.outputs):
                continue
            assert cell.id in cells, f"{pub.name}: cell {i} ({cell.id}) of the run is not published"
            assert cells[cell.id].outputs, f"{pub.name}: cell {i} lost its outputs"
            n_fig = sum("image/png" in o.get("data", {}) for o in cell.outputs)
            assert n_fig == sum("image/png" in o.get("data", {}) for o in cells[cell.id].outputs), \
                f"{pub.name}: cell {i} lost a figure"


# -- book/publish.py on notebooks made here ------------------------------------------------------------------------

def _png(width: int, height: int, grey: bool = False) -> str:
    im = Image.linear_gradient("L").resize((width, height)).convert("L" if grey else "RGBA")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _executed(extra_output=None) -> nbformat.NotebookNode:
    """A small executed notebook as papermill leaves it: a progress widget, a stderr bar, a long log, a figure."""
    outputs = [
        new_output("display_data", data={publish.WIDGET_MIME: {"model_id": "x", "version_major": 2,
                                                               "version_minor": 0},
                                         "text/plain": "prepare:   0%|          | 0/10 [00:00<?, ?it/s]"}),
        new_output("stream", name="stderr", text="fit:  50%|#####     | 5/10 [00:01<00:01, 4.2it/s]\r"
                                                 "fit: 100%|##########| 10/10 [00:02<00:00, 4.5it/s]\n"),
        new_output("stream", name="stdout", text="".join(f"epoch {k}\n" for k in range(60))),
        new_output("stream", name="stdout", text="saved to /tmp/run/clone/reports/x/final.safetensors\n"),
        new_output("display_data", data={"image/png": _png(1800, 600), "text/plain": "<Figure>"}),
        new_output("display_data", data={"image/png": _png(300, 200, grey=True), "text/plain": "<Figure>"}),
    ]
    if extra_output is not None:
        outputs.append(extra_output)
    nb = new_notebook(cells=[new_markdown_cell("# 99 · Test: a notebook", id="title"),
                             new_code_cell("run()", outputs=outputs, execution_count=1, id="run",
                                           metadata={"tags": [], "execution": {"iopub.status.idle": "now"}})])
    nb.metadata["papermill"] = {"input_path": "/tmp/run/clone/notebooks/99_test.ipynb",
                                "parameters": {"DATA_DIR": "", "OUT_DIR": "/tmp/run/clone/reports"}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    return nb


def test_publish_shrinks_caps_and_cleans():
    nb = publish.publish_notebook(_executed(), "99_test.ipynb")
    outs = nb.cells[1].outputs
    assert [o.output_type for o in outs] == ["stream", "display_data", "display_data"]
    assert len(outs[0].text.splitlines()) == publish.LINE_CAP and "lines cut" in outs[0].text
    assert outs[0].text.rstrip().endswith("saved to reports/x/final.safetensors")
    widths = [Image.open(io.BytesIO(base64.b64decode(o.data["image/png"]))).size for o in outs[1:]]
    assert widths == [(publish.MAX_WIDTH, 300), (300, 200)]
    assert "widgets" not in nb.metadata and "execution" not in nb.cells[1].metadata
    assert nb.metadata.papermill.parameters.OUT_DIR == "reports"
    nbformat.validate(nb)


def test_publish_is_deterministic_and_idempotent():
    once = publish.to_text(publish.publish_notebook(_executed(), "99_test.ipynb"))
    again = publish.to_text(publish.publish_notebook(_executed(), "99_test.ipynb"))
    twice = publish.to_text(publish.publish_notebook(nbformat.reads(once, as_version=4), "99_test.ipynb"))
    assert once == again == twice


def test_publish_is_deterministic_on_a_real_run():
    runs = sorted(EXECUTED.glob("[0-9]*.ipynb"), key=lambda p: p.stat().st_size)
    if not runs:
        pytest.skip(f"no executed notebooks in {EXECUTED.relative_to(REPO)} (`make reference`)")
    once = publish.publish_file(runs[0])
    assert once == publish.publish_file(runs[0])
    assert once == publish.to_text(publish.publish_notebook(nbformat.reads(once, as_version=4), runs[0].name))


@pytest.mark.parametrize("output, reason", [
    (new_output("stream", name="stdout", text="read ../shared/rsna-sample/1377.png\n"), "rsna-sample"),
    (new_output("execute_result", data={"text/plain": "films  real (37 hard originals)"}, execution_count=2),
     "hard originals"),
    (new_output("error", ename="ValueError", evalue="bad", traceback=["ValueError: bad"]), "failed"),
    (new_output("stream", name="stdout", text="data_source                  rsna\n"), "data_source rsna"),
])
def test_publish_refuses(output, reason):
    with pytest.raises(publish.PublishError, match=reason):
        publish.publish_notebook(_executed(output), "99_test.ipynb")


@pytest.mark.parametrize("param", ["DATA_DIR", "REAL_SAMPLE"])
def test_publish_refuses_a_real_data_run(param):
    nb = _executed()
    nb.metadata.papermill.parameters[param] = "/data/bone-age"
    with pytest.raises(publish.PublishError, match=param):
        publish.publish_notebook(nb, "99_test.ipynb")


# -- the book in a real browser ------------------------------------------------------------------------------------

def _chromium() -> str | None:
    for candidate in (os.environ.get("BAC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: `.venv/bin/pip install -e '.[book]'` (or book/install_browser.sh)")
    with sync_playwright() as p:
        executable = _chromium()
        if executable is None and not Path(p.chromium.executable_path).exists():
            pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome, $BAC_CHROMIUM or Playwright's "
                        "own): `book/install_browser.sh` installs Debian's chromium as root")
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def served_book(published, tmp_path_factory):
    """The book built from the published notebooks into a temporary folder, served on 127.0.0.1."""
    build = _load("bac_book_build", REPO / "book" / "build.py")
    out = tmp_path_factory.mktemp("book")
    build.build(PUBLISHED, out, log=lambda *a: None)
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _visit(page, url: str, mathjax: bool) -> dict:
    """Load `url` and collect what the test checks: errors, images, links, ids and equations."""
    errors = []
    handlers = {
        "console": lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        "pageerror": lambda e: errors.append(f"page error: {e}"),
        "requestfailed": lambda r: errors.append(f"request failed: {r.url[:120]} ({r.failure})"),
        "response": lambda r: errors.append(f"HTTP {r.status}: {r.url[:120]}") if r.status >= 400 else None,
    }
    for event, handler in handlers.items():
        page.on(event, handler)
    try:
        page.goto(url, wait_until="load")
        has_math = mathjax and page.evaluate("() => !!window.MathJax")
        if has_math:
            page.wait_for_function("() => document.body.getAttribute('data-mathjax') === 'done'", timeout=30_000)
        found = page.evaluate("""() => ({
            images: document.images.length,
            broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
                         .map(i => i.src.slice(0, 100)),
            links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
            ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)
                      .concat(Array.from(document.querySelectorAll('a[name]')).map(a => a.name)),
            tex: document.querySelectorAll('script[type^="math/tex"]').length,
            typeset: document.querySelectorAll('span.MathJax[id$="-Frame"]').length,
            tex_errors: Array.from(document.querySelectorAll('.noError, .merror, .MathJax_Error'))
                             .map(e => e.textContent.slice(0, 80)),
        })""")
    finally:
        for event, handler in handlers.items():
            page.remove_listener(event, handler)
    return {**found, "errors": errors, "mathjax": has_math}


@pytest.fixture(scope="module")
def browsed(browser, served_book) -> dict:
    """Every page of the book visited once in Chromium: what each test below checks, per page."""
    out, base = served_book
    mathjax = (out / "mathjax" / "MathJax.js").exists()
    names = ["index.html"] + sorted(p.name for p in out.glob("[0-9]*.html"))
    paper = next((n for n in names if n[:1] in "12345"), names[-1])   # the first paper's notebook
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = {}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            seen[name] = _visit(page, base + name, mathjax)
            if name == "index.html":
                page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
            elif name == paper:   # its top, its first display equation and its first figure
                page.screenshot(path=str(SCREENSHOTS / f"{Path(name).stem}.png"))
                for what, selector in (("equation", ".MathJax_Display"), ("figure", ".jp-RenderedImage img")):
                    if page.locator(selector).count():
                        page.locator(selector).first.scroll_into_view_if_needed()
                        page.screenshot(path=str(SCREENSHOTS / f"{Path(name).stem}-{what}.png"))
    finally:
        context.close()
    return {"out": out, "base": base, "mathjax": mathjax, "paper": paper, "pages": seen}


def test_book_pages_load_without_errors(browsed):
    problems = [f"{name}: {e}" for name, found in browsed["pages"].items() for e in found["errors"]]
    assert not problems, "\n".join(problems[:40])


def test_book_images_load(browsed):
    pages = browsed["pages"]
    problems = [f"{name}: image not loaded: {src}" for name, found in pages.items() for src in found["broken"]]
    assert not problems, "\n".join(problems[:40])
    assert pages["index.html"]["images"] >= 1, "the landing page's gallery shows no figure"
    assert all(found["images"] >= 1 for name, found in pages.items() if name[:1] in "12345"), \
        {name: found["images"] for name, found in pages.items()}


def test_book_internal_links_resolve(browsed):
    out, base, pages = browsed["out"], browsed["base"], browsed["pages"]
    ids = {name: set(found["ids"]) for name, found in pages.items()}
    problems = []
    for name, found in pages.items():
        for link in found["links"]:
            if not link.startswith(base):
                continue                       # the papers' DOIs: not fetched offline
            parts = urlsplit(link)
            target = unquote(parts.path[len(urlsplit(base).path):]) or "index.html"
            if not (out / target).is_file():
                problems.append(f"{name}: link to a missing file: {target}")
            elif parts.fragment and target in pages and not {parts.fragment, unquote(parts.fragment)} & ids[target]:
                # a browser looks for the fragment as written, then percent-decoded (nbconvert's heading ids are
                # percent-encoded: "01-%C2%B7-Data-exploration")
                problems.append(f"{name}: link to a missing anchor: {target}#{parts.fragment}")
    assert not problems, "\n".join(problems[:40])
    paper = browsed["paper"]
    assert base + "index.html" in pages[paper]["links"], f"{paper} links back to the contents"
    assert any(link.startswith(base + paper + "#") for link in pages["index.html"]["links"]), \
        "the gallery links to a figure's cell in its notebook"


def test_book_equations_typeset(browsed):
    if not browsed["mathjax"]:
        pytest.skip("the book has no MathJax copy (jupyter-server-mathjax not installed: pip install -e '.[book]'); "
                    "its equations show as TeX source")
    pages = browsed["pages"]
    problems = [f"{name}: TeX error in: {e}" for name, found in pages.items() for e in found["tex_errors"]]
    problems += [f"{name}: {f['tex'] - f['typeset']} of {f['tex']} equations not typeset"
                 for name, f in pages.items() if f["typeset"] < f["tex"]]
    assert sum(f["typeset"] for f in pages.values()) > 0, "MathJax typeset no equation anywhere"
    assert not problems, "\n".join(problems[:40])


def test_book_screenshots_saved(browsed):
    shots = [SCREENSHOTS / "index.png", SCREENSHOTS / f"{Path(browsed['paper']).stem}.png"]
    for shot in shots:
        assert shot.exists() and shot.stat().st_size > 10_000, shot
