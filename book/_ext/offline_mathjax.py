"""Serve MathJax from the built book itself, so the book read offline shows rendered math.

Sphinx loads MathJax from a CDN by default; without a network a reader would see raw LaTeX.
This extension takes MathJax 3 from the installed `django-static-mathjax` wheel (it holds
nothing but MathJax's own files, under the import name `mathjax`; a dev dependency), copies
the parts a page needs into `_static/mathjax/` and points `mathjax_path` at them.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

# The combined TeX + MathML input / CommonHTML output component, what it loads on demand
# (TeX extensions, the menu, accessibility) and its web fonts. The speech engine (sre, 4 MB)
# is left out: the menu's speech option needs it, the math does not.
COMPONENT = "tex-mml-chtml.js"
PARTS = (COMPONENT, "input", "output/chtml", "output/chtml.js", "a11y", "ui", "adaptors")


def mathjax_source() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "MathJax is not installed, so the book would load it from a CDN and show raw LaTeX "
            "offline: pip install django-static-mathjax (the dev extras install it)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"


def use_local_mathjax(app, config) -> None:
    mathjax_source()  # fail early, before the notebooks run, if it is missing
    config.mathjax_path = f"mathjax/{COMPONENT}"  # relative: served from _static/


def copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def setup(app):
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
