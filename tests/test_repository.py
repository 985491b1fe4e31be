"""The repository's promises: clean notebooks, a complete table of contents, matching environments."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_chapter_notebooks():
    assert len(NOTEBOOKS) >= 4, "expected the four foundation chapters in notebooks/"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name


def test_notebooks_are_stored_without_outputs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "clean_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


def test_clean_check_catches_outputs(tmp_path):
    dirty = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": 3,
                "id": "a",
                "metadata": {},
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi\n"}],
                "source": "print('hi')",
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "99_dirty.ipynb"
    path.write_text(json.dumps(dirty))
    script = str(ROOT / "scripts" / "clean_notebooks.py")
    assert subprocess.run([sys.executable, script, "--check", str(path)]).returncode == 1
    assert subprocess.run([sys.executable, script, str(path)]).returncode == 0
    assert subprocess.run([sys.executable, script, "--check", str(path)]).returncode == 0


def _toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        yield from _toc_files(entry.get("chapters", []) + entry.get("sections", []))


def test_every_chapter_is_in_the_toc_and_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("parts", []))]
    for name in files:
        assert (ROOT / f"{name}.md").exists() or (ROOT / f"{name}.ipynb").exists(), name
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in files, f"{path.name} is missing from _toc.yml"


def test_notebooks_follow_the_chapter_conventions():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"])
        assert "google.colab" in first, f"{path.name}: the first cell sets up Colab"
        markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert re.search(r"^# ", markdown, re.M), f"{path.name}: a title"
        assert "Learning objectives" in markdown, f"{path.name}: learning objectives"
        assert "## Exercises" in markdown, f"{path.name}: exercises"
        solutions = [c for c in cells if "solution" in c.get("metadata", {}).get("tags", [])]
        assert len(solutions) >= 2, f"{path.name}: at least two coding exercises with solutions"
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "assert" in code, f"{path.name}: results are checked with assert"
        assert "get_profile" in code, f"{path.name}: sizes come from the run profile"


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = []
    for entry in environment["dependencies"]:
        listed.extend(entry["pip"] if isinstance(entry, dict) else [entry])
    names = {re.split(r"[<>=!~ ]", item)[0].lower() for item in listed}
    conda_names = {"torch": "pytorch"}
    for requirement in wanted:
        name = re.split(r"[<>=!~ \[]", requirement)[0].lower()
        assert conda_names.get(name, name) in names, (
            f"{name} is in pyproject but not environment.yml"
        )


def test_makefile_installs_torch_before_the_package():
    makefile = (ROOT / "Makefile").read_text()
    torch_line = makefile.index('pip install --quiet "$(TORCH_SPEC)"')
    package_line = makefile.index('pip install --quiet -e ".[dev]"')
    assert torch_line < package_line
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_book_check_flags_pages_without_figures(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_book
    finally:
        sys.path.pop(0)
    pages = tmp_path / "notebooks"
    pages.mkdir()
    for i, path in enumerate(NOTEBOOKS):
        figures = "" if i == 0 else '<img src="../_images/aa.png"><img src="../_images/bb.png">'
        (pages / f"{path.stem}.html").write_text(f"<html>{figures}</html>")
    problems = check_book.check(tmp_path)
    assert len(problems) == 1 and NOTEBOOKS[0].stem in problems[0] and "0 figure(s)" in problems[0]
    (pages / f"{NOTEBOOKS[1].stem}.html").write_text(
        '<img src="../_images/aa.png"><img src="../_images/bb.png"> Traceback (most recent call last)'
    )
    assert len(check_book.check(tmp_path)) == 2
