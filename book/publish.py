#!/usr/bin/env python3
"""The readers' edition: small, GitHub-renderable copies of the reference run's executed notebooks (issue 22).

`bac run` writes the executed notebooks to `reports/notebooks/` (git-ignored: full-size figures, progress bars,
the paths of the machine that ran them). This script writes what a reader needs into `reports/executed/`
(tracked), one notebook each, every cell and every result kept:

- figures (PNG) at most MAX_WIDTH pixels wide, re-encoded losslessly (grey figures as grey, opaque ones without
  alpha) whenever that is smaller; only a notebook still over PER_NOTEBOOK_BYTES gets its largest colour figures
  reduced to 256 colours, largest first, until it fits;
- a text output longer than LINE_CAP lines keeps its first and last lines around a "... N lines cut" marker
  (MONAI caps a cell's output lines the same way);
- progress bars dropped: tqdm's widgets (their state is not saved, so no reader could render them) and its text
  bars on stderr; consecutive stream outputs merged, carriage returns applied as a terminal would;
- per-cell execution timestamps dropped, and the run's checkout folder ("/tmp/.../clone/") removed from outputs
  and metadata, so that the published copy names `reports/...` as a reader's clone does.

Refused, with the reason: a notebook whose run failed (an error output, papermill's exception flag, a status file
that is not "ok"), one whose outputs or metadata mention the real RSNA sample ('rsna-sample'), and one run on
other data than the built-in synthetic set (DATA_DIR set, or an environment cell whose data_source is not
"synthetic"), or with notebooks 01/02's real-film section (REAL_SAMPLE set): the RSNA images may not be
redistributed, and the published edition is the synthetic reference run.

Deterministic and idempotent: the same input gives byte-identical output, and publishing a published notebook
changes nothing, so that rerunning it does not churn git. `--check` writes nothing and exits 1 when the
published copies are not what this script makes of the executed ones.

Used by: `make publish`, `make book` (book/build.py reads what this writes), tests/test_book.py.
Run: python book/publish.py [--src reports/notebooks] [--dest reports/executed] [--check]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "reports" / "notebooks"
DEST = REPO / "reports" / "executed"
MAX_WIDTH = 900  # px: GitHub's notebook view and the book show figures about this wide
LINE_CAP = 40  # lines of one text output, marker included
HEAD_LINES = 30  # of which the first lines kept (the rest of the cap from the end)
PER_NOTEBOOK_BYTES = 1_000_000  # tests/check_repo.py's MAX_FILE_BYTES: no tracked file may exceed it
TOTAL_BYTES = 10_000_000  # issue 22's budget for all published notebooks together
QUANTIZE_COLORS = 256
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# a tqdm bar: "desc:  42%|####      | 42/100 [00:01<00:02, 20.1it/s]" (also "0/1200 [00:00<?, ?it/s]")
PROGRESS_BAR = re.compile(r"^.*\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[.*\]\s*$")
FORBIDDEN = "rsna-sample"  # the real RSNA sample's folder (../shared/rsna-sample): never in a published notebook
# what notebooks 01/02 print beside real films when $BAC_REAL_SAMPLE was set in the run's environment (papermill does
# not record it, unlike the REAL_SAMPLE parameter): "real (37 hard originals)"
REAL_FILM_MARKERS = (FORBIDDEN, "hard originals")
# the cell timings papermill and Jupyter write per cell: they change on every run and tell a reader nothing
CELL_METADATA_DROPPED = ("execution", "papermill", "ExecuteTime", "collapsed", "scrolled")


class PublishError(ValueError):
    """A notebook that must not be published, with the reason and what to do."""


# -- checks -------------------------------------------------------------------------------------------------------

def refusal(nb, name: str) -> str | None:
    """Why `nb` must not be published, or None."""
    pm = nb.metadata.get("papermill", {})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = json.dumps([outputs, dict(nb.metadata)], ensure_ascii=False).lower()
    for marker in REAL_FILM_MARKERS:
        if marker in text:
            return (f"{name}: its outputs or metadata mention '{marker}' (the real RSNA sample, which may not be "
                    f"redistributed); publish the synthetic reference run (`make reference` without REAL_SAMPLE or "
                    f"$BAC_REAL_SAMPLE), not a real-film run")
    for param in ("DATA_DIR", "REAL_SAMPLE"):   # real data, or notebooks 01/02's section of real films
        if pm.get("parameters", {}).get(param):
            return (f"{name}: run with {param}={pm['parameters'][param]!r}; only the built-in synthetic reference "
                    f"run is published (RSNA images and their derivatives may not be redistributed)")
    for out in outputs:
        if out.output_type == "stream":
            m = re.search(r"^data_source\s+(\S+)", out.text, re.M)
            if m and m.group(1) != "synthetic":
                return (f"{name}: its environment cell reports data_source {m.group(1)}; only the built-in "
                        f"synthetic reference run is published")
    failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.get("outputs", []))]
    if failed or pm.get("exception"):
        where = f"cell {failed[0]}" if failed else "papermill reports an exception"
        return f"{name}: the run failed ({where}); fix it and rerun `make reference` before publishing"
    return None


def status_problem(path: Path) -> str | None:
    """The runner's status file beside an executed notebook (`.<stem>.status.json`) must say "ok" when present."""
    status = path.with_name(f".{path.stem}.status.json")
    if status.exists():
        value = json.loads(status.read_text()).get("status")
        if value != "ok":
            return f"{path.name}: the runner's status is {value!r} ({status.name}); rerun it before publishing"
    return None


# -- text ---------------------------------------------------------------------------------------------------------

def as_terminal(text: str) -> str:
    """Apply carriage returns as a terminal shows them: each line keeps what follows its last '\\r'."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def cap_lines(text: str, cap: int = LINE_CAP, head: int = HEAD_LINES) -> str:
    """`text` when it has at most `cap` lines; else its first `head` lines, a marker, and its last lines."""
    lines = text.splitlines(keepends=True)
    if len(lines) <= cap:
        return text
    tail = cap - head - 1
    cut = len(lines) - head - tail
    return "".join(lines[:head]) + f"... {cut} lines cut (published copy; the full output is in the run)\n" + \
        "".join(lines[-tail:])


def is_progress(text: str) -> bool:
    """True when every non-empty line of `text` is a progress bar."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and all(PROGRESS_BAR.match(ln) for ln in lines)


def is_noise(output) -> bool:
    """A progress-bar output: a tqdm widget (state not saved) or a text bar on stderr."""
    data = output.get("data", {})
    if WIDGET_MIME in data:
        rest = {k: v for k, v in data.items() if k != WIDGET_MIME}
        return not rest or set(rest) == {"text/plain"} and is_progress(rest["text/plain"])
    return output.output_type == "stream" and output.name == "stderr" and is_progress(as_terminal(output.text))


def clean_outputs(outputs: list, root: str) -> list:
    """Outputs without progress bars, with streams merged and every text output capped and freed of `root`."""
    kept = []
    for out in outputs:
        if is_noise(out):
            continue
        if out.output_type == "stream":
            text = as_terminal(out.text)
            if out.name == "stderr":
                text = "".join(ln for ln in text.splitlines(keepends=True) if not PROGRESS_BAR.match(ln.rstrip()))
            if not text:
                continue
            if kept and kept[-1].output_type == "stream" and kept[-1].name == out.name:
                kept[-1].text += text
                continue
            out.text = text
        else:
            data = out.get("data", {})
            data.pop(WIDGET_MIME, None)
            for mime in list(data):
                if mime.startswith("text/") and isinstance(data[mime], str):
                    data[mime] = unroot(data[mime], root)
            if "text/plain" in data:
                data["text/plain"] = cap_lines(data["text/plain"])
        kept.append(out)
    for out in kept:
        if out.output_type == "stream":
            out.text = cap_lines(unroot(out.text, root))
    return kept


def unroot(text: str, root: str) -> str:
    """`text` with the run's checkout folder removed ('/tmp/x/clone/reports/a' -> 'reports/a')."""
    return text.replace(root + "/", "").replace(root, ".") if root else text


def run_root(nb) -> str:
    """The checkout the notebook ran in: papermill's input path is <root>/notebooks/<name>.ipynb ('' if unknown)."""
    path = nb.metadata.get("papermill", {}).get("input_path") or ""
    parts = Path(path).parts
    if len(parts) >= 4 and parts[0] == "/" and parts[-2] == "notebooks":
        return str(Path(*parts[:-2]))
    return ""


# -- images -------------------------------------------------------------------------------------------------------

def encode_png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def shrink_png(raw: bytes, max_width: int = MAX_WIDTH) -> bytes:
    """A PNG at most `max_width` wide, losslessly re-encoded (grey as 'L', opaque without alpha) when smaller."""
    im = Image.open(io.BytesIO(raw))
    im.load()
    resized = im.width > max_width
    if resized:
        im = im.convert("RGBA").resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
    if im.mode not in ("P", "L", "1"):
        px = np.asarray(im.convert("RGBA"))
        if (px[..., 3] == 255).all():
            im, px = im.convert("RGB"), px[..., :3]
            if (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all():
                im = im.convert("L")
    out = encode_png(im)
    return out if resized or len(out) < len(raw) else raw


def quantize_png(raw: bytes, colors: int = QUANTIZE_COLORS) -> bytes:
    """`raw` reduced to a palette of `colors` (no dithering); `raw` itself when that is not smaller."""
    im = Image.open(io.BytesIO(raw))
    im.load()
    if im.mode in ("P", "L", "1"):
        return raw
    rgba = im.mode == "RGBA"
    q = im.quantize(colors, method=Image.Quantize.FASTOCTREE if rgba else Image.Quantize.MEDIANCUT,
                    dither=Image.Dither.NONE)
    out = encode_png(q)
    return out if len(out) < len(raw) else raw


def png_outputs(nb) -> list[dict]:
    return [o.data for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


# -- one notebook -------------------------------------------------------------------------------------------------

def publish_notebook(nb, name: str, source_name: str | None = None):
    """The published form of executed notebook `nb` (a NotebookNode, changed in place and returned).

    Raises PublishError when it must not be published (see `refusal`) or does not fit PER_NOTEBOOK_BYTES.
    """
    reason = refusal(nb, name)
    if reason:
        raise PublishError(reason)
    root = run_root(nb)
    for cell in nb.cells:
        for key in CELL_METADATA_DROPPED:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        cell.source = unroot(cell.source, root) if "injected-parameters" in cell.metadata.get("tags", []) \
            else cell.source
        cell.outputs = clean_outputs(cell.outputs, root)
        for out in cell.outputs:
            data = out.get("data", {})
            if "image/png" in data:
                data["image/png"] = base64.b64encode(shrink_png(base64.b64decode(data["image/png"]))).decode()
    nb.metadata.pop("widgets", None)
    pm = nb.metadata.get("papermill")
    if pm:
        for key in ("input_path", "output_path"):
            if pm.get(key):
                pm[key] = unroot(pm[key], root)
        pm["parameters"] = {k: unroot(v, root) if isinstance(v, str) else v
                            for k, v in pm.get("parameters", {}).items()}
    nb.metadata["bac_published"] = {
        "by": "book/publish.py (issue 22): the readers' edition of an executed notebook",
        "from": f"reports/notebooks/{source_name or name}",
        "figures": f"PNG at most {MAX_WIDTH} px wide",
        "text outputs": f"at most {LINE_CAP} lines each",
        "removed": "progress bars, per-cell timestamps, the run's checkout folder",
    }
    text = to_text(nb)
    if len(text.encode()) > PER_NOTEBOOK_BYTES:   # the largest colour figures to 256 colours until it fits
        for data in sorted(png_outputs(nb), key=lambda d: (-len(d["image/png"]), d["image/png"][:64])):
            data["image/png"] = base64.b64encode(quantize_png(base64.b64decode(data["image/png"]))).decode()
            text = to_text(nb)
            if len(text.encode()) <= PER_NOTEBOOK_BYTES:
                break
    if len(text.encode()) > PER_NOTEBOOK_BYTES:
        raise PublishError(f"{name}: {len(text.encode()) / 1e6:.2f} MB even with its figures reduced; no tracked "
                           f"file may exceed {PER_NOTEBOOK_BYTES / 1e6:.0f} MB (tests/check_repo.py): save fewer "
                           f"or smaller figures in the notebook")
    nbformat.validate(nb)
    return nb


def to_text(nb) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def publish_file(src: Path) -> str:
    """The published text of the executed notebook at `src`; raises PublishError."""
    problem = status_problem(src)
    if problem:
        raise PublishError(problem)
    nb = nbformat.read(src, as_version=4)
    return to_text(publish_notebook(nb, src.name))


def executed_notebooks(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("[0-9]*.ipynb"))


def publish(src=SRC, dest=DEST, check: bool = False, log=print) -> list[str]:
    """Publish every executed notebook of `src` into `dest` (or, with `check`, compare only).

    Returns the problems found ([] when all went well): refusals, the size budget, and with `check` every
    published copy that is missing, stale or extra.
    """
    src, dest = Path(src), Path(dest)
    sources = executed_notebooks(src)
    if not sources:
        return [f"no executed notebooks in {src}: run `make reference` (or `make reports`) first"]
    problems, texts = [], {}
    for path in sources:
        try:
            texts[path.name] = publish_file(path)
        except PublishError as err:
            problems.append(str(err))
    total = sum(len(t.encode()) for t in texts.values())
    if total > TOTAL_BYTES:
        problems.append(f"the published notebooks take {total / 1e6:.1f} MB together; the budget is "
                        f"{TOTAL_BYTES / 1e6:.0f} MB")
    if problems:
        return problems
    stale = sorted(p.name for p in executed_notebooks(dest) if p.name not in texts)
    if check:
        changed = [n for n, t in texts.items() if not (dest / n).exists() or (dest / n).read_text() != t]
        return [f"{dest / n}: not what book/publish.py makes of {src / n}; run `make publish`" for n in changed] + \
            [f"{dest / n}: no executed notebook {src / n}; run `make publish`" for n in stale]
    dest.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (dest / name).unlink()
        log(f"removed {dest / name} (no executed notebook of that name)")
    before = sum(p.stat().st_size for p in sources)
    for name, text in texts.items():
        target = dest / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        log(f"{name:40s} {(src / name).stat().st_size / 1e6:6.2f} MB -> {len(text.encode()) / 1e6:5.2f} MB")
    log(f"{len(texts)} notebooks: {before / 1e6:.1f} MB -> {total / 1e6:.1f} MB in {dest}")
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--src", default=str(SRC), help="executed notebooks (default: reports/notebooks)")
    ap.add_argument("--dest", default=str(DEST), help="published copies (default: reports/executed)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when the published copies differ")
    args = ap.parse_args(argv)
    problems = publish(args.src, args.dest, check=args.check)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
