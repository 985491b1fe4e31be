"""scripts/nbval_book_cache.py: nbval's run of a notebook is what the book build finds in its cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, sources: list[str]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_markdown_cell("# A chapter")] + [
        nbformat.v4.new_code_cell(source) for source in sources
    ]
    nbformat.write(notebook, path)
    return notebook


def _run_nbval(notebooks: list[Path], cache: Path | None) -> subprocess.CompletedProcess:
    """nbval with the plugin on `notebooks`; the cache variable set only if `cache` is given."""
    env = {key: value for key, value in os.environ.items() if key != "BERTCOURSE_BOOK_CACHE"}
    env["PYTHONPATH"] = str(ROOT / "scripts")
    if cache is not None:
        env["BERTCOURSE_BOOK_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "nbval_book_cache", "--nbval-lax", "-q"]
        + ["-p", "no:cacheprovider", *map(str, notebooks)],
        capture_output=True,
        text=True,
        env=env,
        cwd=notebooks[0].parent,
        timeout=300,
    )


def test_passing_notebooks_are_cached_with_their_outputs_and_failing_ones_are_not(tmp_path):
    good = _notebook(
        tmp_path / "good.ipynb",
        ["print('hello')", "x = 6 * 7\nx", "import sys\nprint('note', file=sys.stderr)"],
    )
    bad = _notebook(tmp_path / "bad.ipynb", ["print('before')", "raise ValueError('broken')"])
    result = _run_nbval([tmp_path / "good.ipynb", tmp_path / "bad.ipynb"], tmp_path / "cache")
    assert result.returncode == 1, result.stdout + result.stderr  # bad.ipynb fails
    assert "1 executed notebook(s) stored" in result.stdout, result.stdout

    cache = get_cache(str(tmp_path / "cache"))
    cache.match_cache_notebook(good)  # the book build's lookup: no KeyError
    _, merged = cache.merge_match_into_notebook(good)
    cells = [cell for cell in merged.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in cells] == [1, 2, 3]
    assert cells[0].outputs[0]["text"] == "hello\n"
    assert cells[1].outputs[0]["output_type"] == "execute_result"
    assert cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert cells[1].outputs[0]["execution_count"] == 2
    assert (cells[2].outputs[0]["name"], cells[2].outputs[0]["text"]) == ("stderr", "note\n")
    with pytest.raises(KeyError):
        cache.match_cache_notebook(bad)

    # Changed code hashes differently: the book build would execute it itself.
    good.cells[1].source = "print('changed')"
    with pytest.raises(KeyError):
        cache.match_cache_notebook(good)


def test_without_the_cache_variable_nothing_is_stored(tmp_path):
    _notebook(tmp_path / "good.ipynb", ["print('hello')"])
    result = _run_nbval([tmp_path / "good.ipynb"], cache=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stored" not in result.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "good.ipynb"]
