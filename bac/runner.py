"""`bac run`: execute the notebooks headless with papermill and regenerate the reports index (`<out>/README.md`,
with the command, code revision, machine and wall time of the run; the top-level README is never rewritten).

Each notebook runs in its own process (papermill's timeout is per cell; ours is per notebook), never in
place: the executed copy goes to `<out>/notebooks/`. A failing notebook does not stop the others; the
run exits non-zero at the end and names the failing cell.

Used in: `make reports`, `make test`, CI.
"""
from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bac.env import REPO

NOTEBOOK_DIR = REPO / "notebooks"


@dataclass
class Outcome:
    notebook: str
    status: str          # ok | failed | timeout
    seconds: float
    detail: str = ""


def find_notebooks(notebook_dir=NOTEBOOK_DIR, only: str | None = None) -> list[Path]:
    paths = sorted(Path(notebook_dir).glob("[0-9]*.ipynb"))
    if only:
        globs = [g.strip() for g in only.split(",")]
        paths = [p for p in paths if any(fnmatch.fnmatch(p.name, g) or fnmatch.fnmatch(p.stem, g) for g in globs)]
    return paths


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the cell tagged `parameters`."""
    import ast
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
    return set()


def _run_one(nb: Path, out: Path, params: dict, timeout: float, progress: bool) -> Outcome:
    """Run one notebook in a child process; kill its whole process group at the timeout."""
    executed = out / "notebooks" / nb.name
    status_file = out / "notebooks" / f".{nb.stem}.status.json"
    status_file.unlink(missing_ok=True)
    accepted = notebook_parameters(nb)
    params = {k: v for k, v in params.items() if k in accepted}
    cmd = [sys.executable, "-m", "bac.runner", str(nb), str(executed), json.dumps(params), str(status_file),
           "1" if progress else "0"]
    log = (out / "notebooks" / f"{nb.stem}.log").open("w")
    t0 = time.time()
    # PYTHONHASHSEED: the kernel (papermill starts it with this environment) orders sets the same way every run
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=nb.parent, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"})
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return Outcome(nb.name, "timeout", time.time() - t0,
                       f"killed after {timeout:.0f} s (raise --timeout, or use a smaller --profile)")
    finally:
        log.close()
    seconds = time.time() - t0
    if status_file.exists():
        st = json.loads(status_file.read_text())
        return Outcome(nb.name, st["status"], seconds, st.get("detail", ""))
    tail = (out / "notebooks" / f"{nb.stem}.log").read_text()[-600:]
    return Outcome(nb.name, "failed", seconds, f"runner process died (exit {proc.returncode}): {tail}")


def run(profile: str = "demo", only: str | None = None, data_dir: str = "", out: str | None = None, jobs: int = 1,
        timeout: float = 3600, dry_run_full: bool = False, overrides: str = "", seed: int = 0, seeds: int = 1,
        notebook_dir=NOTEBOOK_DIR, progress: bool = True) -> list[Outcome]:
    """Run the notebooks; with `seeds` N > 1, first with SEED = 1..N-1 into `<out>/seeds/seed-<k>/`, then with
    SEED = 0 and SEEDS = N into `<out>` (so seed 0's reports are a one-seed run's, and read the other seeds')."""
    from tqdm.auto import tqdm
    from bac import report

    if dry_run_full:
        profile = "full"
    if seeds > 1 and seed != 0:
        raise SystemExit("--seeds N runs seeds 0..N-1: leave --seed at 0")
    out = Path(out or REPO / "reports").resolve()
    notebooks = find_notebooks(notebook_dir, only)
    if not notebooks:
        raise SystemExit(f"no notebook matches {only!r} in {notebook_dir}")
    if profile == "full" and not dry_run_full and (data_dir or os.environ.get("BAC_DATA_DIR")):
        from bac import plan   # refuse now, not hours in, when the cache would not fit on the disk
        plan.check_disk(profile, plan.count_images(data_dir or os.environ["BAC_DATA_DIR"]), only)
    command = "python -m bac run " + " ".join(a for a in sys.argv[2:]) if sys.argv[1:2] == ["run"] else \
        f"python -m bac run --profile {profile}"
    print(f"Running {len(notebooks)} notebook(s) x {seeds} seed(s), profile {profile}"
          f"{' (dry run)' if dry_run_full else ''}, {jobs} at a time, timeout {timeout:.0f} s each -> {out}",
          flush=True)
    outcomes, rows, t_start = [], [], time.time()
    bar = tqdm(total=len(notebooks) * seeds, desc="notebooks", unit="nb", disable=not progress)
    for k in [*range(1, seeds), 0]:
        folder = report.seed_dir(out, k) if seeds > 1 else out
        (folder / "notebooks").mkdir(parents=True, exist_ok=True)
        params = dict(PROFILE=profile, DATA_DIR=data_dir, OUT_DIR=str(folder), SEED=seed + k,
                      SEEDS=seeds if k == 0 else 1, DRY_RUN=dry_run_full, OVERRIDES=overrides, COMMAND=command.strip())
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(_run_one, nb, folder, params, timeout, progress and jobs == 1) for nb in notebooks]
            for fut in futures:
                res = fut.result()
                outcomes.append(res)
                rows.append(dict(notebook=res.notebook, seed=seed + k, status=res.status, seconds=res.seconds))
                bar.update(1)
                bar.write(f"  {res.status:>7}  {res.seconds:7.1f} s  {res.notebook} (seed {seed + k})" +
                          (f"\n           {res.detail}" if res.status != "ok" else ""))
    bar.close()
    timings = pd.DataFrame(rows)
    print("\nTiming (slowest first):\n" + timings.sort_values("seconds", ascending=False).to_string(
        index=False, float_format=lambda v: f"{v:.1f}"))
    index = report.write_index(out, timings.assign(profile=profile), provenance=dict(
        command=command.strip(), seconds=time.time() - t_start, jobs=jobs), seeds=seeds)
    print(f"Reports index: {index}")
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed:\n" + "\n".join(f"  {o.notebook}: {o.detail}" for o in failed))
    return outcomes


def _child(nb: str, executed: str, params: str, status_file: str, progress: str) -> None:
    """Executed in the child process: papermill, then a status file the parent reads."""
    import papermill as pm
    status = dict(status="ok")
    try:
        pm.execute_notebook(nb, executed, parameters=json.loads(params), progress_bar=progress == "1",
                            cwd=str(Path(nb).parent), kernel_name="python3", log_output=False)
    except pm.PapermillExecutionError as err:
        first = (err.source or "").strip().splitlines()[:1]
        status = dict(status="failed", detail=f"cell {err.cell_index} of the executed copy (In [{err.exec_count}]) "
                                              f"raised {err.ename}: "
                                              f"{err.evalue} | source: {first[0][:100] if first else ''} "
                                              f"| executed copy: {executed}")
    except Exception as err:  # kernel death, bad notebook JSON, ...
        status = dict(status="failed", detail=f"{type(err).__name__}: {err}")
    Path(status_file).write_text(json.dumps(status))


if __name__ == "__main__":
    _child(*sys.argv[1:6])
