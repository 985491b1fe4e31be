"""A pytest plugin: the notebooks nbval executed go into the book's execution cache.

    pytest -p nbval_book_cache --nbval-lax notebooks/      (with scripts/ on PYTHONPATH)

`make test` runs every notebook under nbval and then builds the book, which executes
them again unless its jupyter-cache (`execute_notebooks: cache` in _config.yml) already
holds a run of the same code. This plugin fills that cache from nbval's run: for each
notebook whose every cell passed, the outputs nbval collected go back into the cells and
the notebook is stored under the hash jupyter-cache computes from its code, so the book
build renders those outputs instead of executing the chapter a second time. A notebook
with a failed or skipped cell is not stored, and a notebook whose code changed after the
run hashes differently, so the book build executes it itself.

The cache folder comes from BERTCOURSE_BOOK_CACHE (the Makefile sets it to the book's
_build/.jupyter_cache); without it the plugin does nothing.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict

import pytest

_ran: dict[object, dict] = defaultdict(lambda: {"cells": [], "seconds": 0.0, "ok": True})


def _is_notebook_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_notebook_cell(item):
        return
    report = outcome.get_result()
    record = _ran[item.parent]
    record["seconds"] += report.duration
    if report.failed or report.skipped:
        record["ok"] = False
    elif report.when == "call":
        record["cells"].append((item.cell_num, item.test_outputs))


def executed_notebook(notebook, cells: list[tuple[int, list]]):
    """A copy of `notebook` with each code cell's outputs (in the order nbval ran them) and
    an execution count; None unless every code cell ran."""
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if [number for number, _ in cells] != list(range(len(code_cells))):
        return None
    executed = copy.deepcopy(notebook)
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    for count, (cell, (_, outputs)) in enumerate(zip(code_cells, cells, strict=True), start=1):
        cell.execution_count = count
        cell.outputs = []
        for output in outputs or []:
            output = copy.deepcopy(output)
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
            cell.outputs.append(output)
    return executed


def pytest_sessionfinish(session, exitstatus):
    cache_path = os.environ.get("BERTCOURSE_BOOK_CACHE")
    if not cache_path or not _ran:
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_path)
    stored = []
    for notebook_file, record in _ran.items():
        if not record["ok"]:
            continue
        executed = executed_notebook(notebook_file.nb, record["cells"])
        if executed is None:
            continue
        cache.cache_notebook_bundle(
            CacheBundleIn(
                executed,
                str(notebook_file.path),
                data={"execution_seconds": record["seconds"]},
            ),
            check_validity=False,
            overwrite=True,
        )
        stored.append(notebook_file.path.name)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            f"nbval_book_cache: {len(stored)} executed notebook(s) stored in {cache_path} "
            "for the book build"
        )
