"""bac: reproducible pediatric bone age assessment, five papers in numbered notebooks.

Light modules are imported here (`bac.config`, `bac.env`, `bac.report`, `bac.metrics`, `bac.data`);
the heavier ones on use (`from bac import preprocess, train`, `from bac.models import ren2019`).

`warn_once(message)`: a data warning shown at most once per process (notebook kernel), see below.
`show(obj)`: the source of a function or class of `bac`, displayed beside the equation it implements.
Importing `bac` also silences a few deprecation warnings that dependencies raise from their own code
(listed below, each with the dependency that raises it); warnings raised by bac's own code are never hidden.
"""
from __future__ import annotations

import sys
import warnings

__version__ = "0.1.0"

# --------------------------------------------------------------------- dependencies' own deprecations
# Each filter is narrow (message, category and the module that raises it) and names the dependency whose
# code triggers it: a reader of an executed notebook cannot act on them, and they are not about our results.
#
# fastai (fastai/layers.py, imported by `bac.train` through fastai.callback.all) decorates four activation
# functions with `torch.jit.script` at import time; torch 2.10+ warns that torch.jit.script is deprecated
# (the warning is raised in torch/jit/_script.py, so the filter matches that module; bac never calls it).
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")
# fastai (fastai/tabular/core.py, imported through fastai.interpret) sets pandas' 'mode.chained_assignment'
# option, which pandas 3 deprecates (a DeprecationWarning: hidden in notebooks anyway, shown in pytest's summary).
warnings.filterwarnings("ignore", message=r"The 'mode\.chained_assignment' option is deprecated",
                        category=DeprecationWarning, module=r"fastai\.tabular\.core")


# --------------------------------------------------------------------- once-per-process data warnings
_SHOWN: set[tuple[type, str]] = set()


def _action(text: str, category: type, module: str, lineno: int) -> str:
    """The action the current warning filters give this warning (the rule `warnings.warn` applies)."""
    for action, msg, cat, mod, line in warnings.filters:
        if ((msg is None or msg.match(text)) and issubclass(category, cat)
                and (mod is None or mod.match(module)) and (line == 0 or line == lineno)):
            return action
    return warnings.defaultaction


def warn_once(message: str, category: type[Warning] = UserWarning, stacklevel: int = 1,
              record: list | None = None) -> None:
    """`warnings.warn(message, category, stacklevel)`, but each distinct (message, category) at most once per process.

    Python's own "default" rule (once per call site) is not enough in a notebook kernel: every change of the
    warning filters (any `warnings.catch_warnings()` block, which fastai and torch open while training or
    loading) clears the per-module registries, so a warning raised again later (notebook 90 loads the data
    once per method) was printed again each time. Here a module-level set remembers what was shown.

    The caller's filters still apply: under "ignore" nothing is shown (and the message is not marked as
    shown, so it appears at the next unfiltered occurrence); under "always" or "error" (`pytest.warns`,
    `-W error`) it is raised every time. `stacklevel` means what it means to `warnings.warn` at the call
    site. `record`: a list the message is appended to whether or not it is shown (e.g. `df.attrs["warnings"]`).
    """
    message = str(message)
    if record is not None and message not in record:
        record.append(message)
    try:
        frame = sys._getframe(stacklevel)  # the frame warnings.warn(stacklevel=stacklevel) names at the caller
        module, lineno = frame.f_globals.get("__name__", "<string>"), frame.f_lineno
    except ValueError:  # stacklevel above the stack: warnings.warn attributes it to "sys"
        module, lineno = "sys", 1
    action = _action(message, category, module, lineno)
    if action == "ignore":
        return
    key = (category, message)
    if action not in ("always", "error"):
        if key in _SHOWN:
            return
        _SHOWN.add(key)
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def show(obj) -> str:
    """Display the source code of `obj` (a function, class or method of `bac`) with the file and line it comes
    from, so a notebook shows the formula and the code that computes it together (one source of truth).
    Returns the source."""
    import inspect
    from pathlib import Path
    target = inspect.unwrap(obj)
    src = inspect.getsource(target)
    first = inspect.getsourcelines(target)[1]
    where = Path(inspect.getsourcefile(target)).as_posix().split("/bac/", 1)[-1]
    header = f"# bac/{where}, line {first}: {getattr(target, '__qualname__', '')}"
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(f"```python\n{header}\n{src}```"))
            return src
    except ImportError:
        pass
    print(header + "\n" + src)
    return src


from bac import config, data, env, metrics, report  # noqa: E402,F401  (after warn_once: bac.data uses it)
