"""The repository's promises: clean notebooks, a complete table of contents, matching environments."""

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
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


def _check_book_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_book
    finally:
        sys.path.pop(0)
    return check_book


MATHJAX = '<script src="../_static/mathjax/tex-mml-chtml.js"></script>'
FIGURES = '<img src="../_images/aa.png"><img src="../_images/bb.png">' + MATHJAX


def _write_figures(html_dir, widths=(700, 760)):
    """The two figures FIGURES shows, as PNGs of the given pixel widths, and its MathJax."""
    from PIL import Image

    (html_dir / "_static" / "mathjax").mkdir(parents=True, exist_ok=True)
    (html_dir / "_static" / "mathjax" / "tex-mml-chtml.js").write_text("/* MathJax */")
    (html_dir / "_images").mkdir(exist_ok=True)
    for name, width in zip(("aa", "bb"), widths, strict=True):
        Image.new("RGB", (width, 300), "white").save(html_dir / "_images" / f"{name}.png")


LIVE = "<pre>validation accuracy: 85.3% (chance 20.0%)</pre>"


def test_book_check_flags_pages_without_figures(tmp_path):
    check_book = _check_book_module()
    pages = tmp_path / "notebooks"
    pages.mkdir()
    _write_figures(tmp_path)
    for i, path in enumerate(NOTEBOOKS):
        (pages / f"{path.stem}.html").write_text(
            f"<html>{MATHJAX if i == 0 else FIGURES}{LIVE}</html>"
        )
    problems = check_book.check(tmp_path)
    assert len(problems) == 1 and NOTEBOOKS[0].stem in problems[0] and "0 figure(s)" in problems[0]
    (pages / f"{NOTEBOOKS[1].stem}.html").write_text(
        f"{FIGURES}{LIVE} Traceback (most recent call last)"
    )
    assert len(check_book.check(tmp_path)) == 2


def test_book_check_flags_figures_wider_than_the_column(tmp_path):
    check_book = _check_book_module()
    pages = tmp_path / "notebooks"
    pages.mkdir()
    _write_figures(tmp_path, widths=(700, 1290))  # bb.png: a 12.9-inch figure at 100 dpi
    for path in NOTEBOOKS:
        (pages / f"{path.stem}.html").write_text(f"<html>{FIGURES}{LIVE}</html>")
    problems = check_book.check(tmp_path)
    assert len(problems) == len(NOTEBOOKS)
    assert all("bb.png (1290 px)" in problem and "aa.png" not in problem for problem in problems)


def test_book_check_flags_cdn_mathjax_and_colab_links_to_the_solutions(tmp_path):
    check_book = _check_book_module()
    pages = tmp_path / "notebooks"
    pages.mkdir()
    _write_figures(tmp_path)
    colab = "https://colab.research.google.com/github/o/r/blob/main/{}notebooks/x.ipynb"
    for path in NOTEBOOKS:
        (pages / f"{path.stem}.html").write_text(
            f'<html>{FIGURES}{LIVE}<a href="{colab.format("student/")}"></a>'
            f'<a href="{colab.format("")}"></a></html>'
        )
    assert check_book.check(tmp_path) == []
    cdn = '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
    first, second = NOTEBOOKS[0], NOTEBOOKS[1]
    (pages / f"{first.stem}.html").write_text(FIGURES.replace(MATHJAX, cdn) + LIVE)
    (pages / f"{second.stem}.html").write_text(f'{FIGURES}{LIVE}<a href="{colab.format("")}"></a>')
    problems = check_book.check(tmp_path)
    assert len(problems) == 2
    assert first.stem in problems[0] and "raw LaTeX" in problems[0]
    assert second.stem in problems[1] and "opens the solutions" in problems[1]


def test_book_check_flags_live_results_at_chance(tmp_path):
    check_book = _check_book_module()
    pages = tmp_path / "notebooks"
    pages.mkdir()
    _write_figures(tmp_path)
    for path in NOTEBOOKS:
        (pages / f"{path.stem}.html").write_text(f"<html>{FIGURES}{LIVE}</html>")
    assert check_book.check(tmp_path) == []
    chapter_09 = next(p for p in NOTEBOOKS if p.stem.startswith("09"))
    (pages / f"{chapter_09.stem}.html").write_text(
        f"{FIGURES}{LIVE}<pre>validation accuracy: 20.0% (chance 20.0%)</pre>"
    )
    (problem,) = check_book.check(tmp_path)
    assert chapter_09.stem in problem and "at or below chance" in problem
    # A chapter that trains must state at least one live result; the others need not.
    (pages / f"{chapter_09.stem}.html").write_text(FIGURES)
    chapter_01 = next(p for p in NOTEBOOKS if p.stem.startswith("01"))  # trains nothing
    (pages / f"{chapter_01.stem}.html").write_text(FIGURES)
    (problem,) = check_book.check(tmp_path)
    assert chapter_09.stem in problem and "states no live result" in problem


def test_live_result_states_the_baseline_and_refuses_a_run_that_did_not_learn(capsys):
    from bertcourse.metrics import LIVE_RESULT_PATTERN, live_result

    line = live_result("held-out MLM accuracy", 0.131, 0.055, factor=2, kind="baseline")
    assert line == "held-out MLM accuracy: 13.1% (baseline 5.5%)"
    assert line in capsys.readouterr().out
    assert re.findall(LIVE_RESULT_PATTERN, line) == [("13.1", "baseline", "5.5")]
    with pytest.raises(AssertionError, match="did not learn"):
        live_result("held-out MLM accuracy", 0.10, 0.055, factor=2, kind="baseline")
    with pytest.raises(AssertionError, match="course-tiny"):
        live_result("validation accuracy", 0.22, 0.20)


# ----------------------------------------------------------------------------
# The package's imports: no circle, the library never imports a command,
# and an import inside a function says why it is deferred
# ----------------------------------------------------------------------------

PACKAGE = ROOT / "bertcourse"


def _module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`, code that runs only when the file is a script."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _imports(tree: ast.AST):
    """(import node, inside a function?) for every import, except under a __main__ guard."""

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from walk(child, inner)

    yield from walk(tree, False)


def import_graph(package_root: Path) -> tuple[dict[str, set[str]], dict[str, Path]]:
    """{module: modules of the package it imports}, and each module's file."""
    files = {_module_name(p, package_root): p for p in sorted(package_root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node, _ in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from pkg import sub` imports the submodule; `from pkg import name`, pkg itself.
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in files else module
                    for alias in node.names
                ]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph, files


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_problems(package_root: Path) -> list[str]:
    graph, files = import_graph(package_root)
    top = package_root.name
    problems = [
        "import circle: " + " <-> ".join(str(files[m].relative_to(package_root.parent)) for m in c)
        for c in import_cycles(graph)
    ]
    commands = f"{top}.commands"
    for name, targets in sorted(graph.items()):
        if name == commands or name.startswith(commands + ".") or name == f"{top}.__main__":
            continue
        for target in sorted(targets):
            if target == commands or target.startswith(commands + "."):
                problems.append(
                    f"{files[name].relative_to(package_root.parent)} (library) imports {target} "
                    "(a command): commands sit on top of the library, never below it"
                )
    for path in files.values():
        lines = path.read_text().splitlines()
        for node, in_function in _imports(ast.parse(path.read_text())):
            said = " ".join(lines[max(0, node.lineno - 2) : node.end_lineno])
            if in_function and "deferred" not in said:
                problems.append(
                    f"{path.relative_to(package_root.parent)}:{node.lineno} imports inside a "
                    "function: move it to the top, or say why it is deferred in a comment"
                )
    return problems


def test_package_imports_point_down():
    problems = import_problems(PACKAGE)
    assert not problems, "\n".join(problems)
    graph, _ = import_graph(PACKAGE)
    assert "bertcourse.config" in graph["bertcourse.model"]  # the parser sees relative imports
    assert "bertcourse.data.corpus" in graph["bertcourse.data.labelled"]


def test_import_check_finds_circles_command_imports_and_hidden_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "commands").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "commands" / "__init__.py").write_text("")
    (package / "commands" / "run.py").write_text("from ..a import f\n")
    (package / "a.py").write_text("from . import b\n\ndef f():\n    return b\n")
    (package / "b.py").write_text(
        "def g():\n    from .a import f\n    return f\n\n"
        "def h():\n    from .commands import run  # deferred: planted\n    return run\n\n"
        'if __name__ == "__main__":\n    from .commands.run import f\n'
    )
    problems = import_problems(package)
    assert any("import circle" in p and "a.py" in p and "b.py" in p for p in problems), problems
    assert any("pkg/b.py (library) imports pkg.commands.run" in p for p in problems), problems
    assert any("pkg/b.py:2 imports inside a function" in p for p in problems), problems
    # b.py:6 says why it is deferred (but still imports a command); the import under the
    # __main__ guard is a script's, not the library's.
    assert len(problems) == 3, problems


def test_every_module_names_its_public_api_once():
    """One `__all__` per module, set in one statement, naming things the module really has."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        settings = [
            node
            for node in ast.walk(tree)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
            and any(
                isinstance(target, ast.Name) and target.id == "__all__"
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ]
        extended = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "__all__"
        ]
        where = path.relative_to(ROOT)
        assert len(settings) == 1 and not extended, f"{where}: set __all__ once, as one list"
        module = importlib.import_module(_module_name(path, PACKAGE))
        names = list(module.__all__)
        assert len(names) == len(set(names)), f"{where}: __all__ repeats a name"
        missing = [name for name in names if not hasattr(module, name)]
        assert not missing, f"{where}: __all__ names {missing}, which it does not define"
