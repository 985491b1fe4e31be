"""The student edition: every chapter with its exercise solutions replaced by stubs.

    python -m bertcourse student [--source notebooks] [--out student/notebooks]

The teacher notebooks (the book) hold each coding exercise as two cells: a
cell tagged "solution" that only defines the learner's function(s), and an
untagged cell that grades them (`check_causal_attention(causal_attention)`).
The student edition keeps everything and changes only the solution cells:
each top-level function keeps its signature and docstring, and its body
becomes

    # YOUR CODE HERE
    raise NotImplementedError

so the grading cell answers "Not implemented yet" until the learner has
written the function, and then grades it. The cell's "solution" tag becomes
"exercise", and "hide-input" goes, since students must see the cell. The
written answer of a reading or experiment exercise, a folded block
`<details><summary>Answer</summary> ... </details>` in a markdown cell, is
removed (its hints stay).

Notebooks are read and written as plain JSON (the format of
scripts/clean_notebooks.py), so this needs nothing beyond the standard
library, and outputs are stripped.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SOLUTION_TAG",
    "EXERCISE_TAG",
    "HIDDEN_TAGS",
    "STUB_BODY",
    "NO_FUNCTION_STUB",
    "StudentEdition",
    "stub_function",
    "stub_source",
    "is_solution",
    "student_cell",
    "without_answers",
    "student_notebook",
    "make_student_edition",
    "main",
]

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
HIDDEN_TAGS = ("hide-input",)
STUB_BODY = ("# YOUR CODE HERE", "raise NotImplementedError")
NO_FUNCTION_STUB = (
    "# YOUR CODE HERE\n"
    'raise NotImplementedError("Exercise not done yet: write your solution in this cell.")'
)


@dataclass
class StudentEdition:
    """What `make_student_edition` wrote."""

    notebooks: list[Path] = field(default_factory=list)
    exercises: int = 0  # solution cells turned into stubs


def _header_end(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(line, column) of the colon that ends a def's signature, 1-based line.

    Found with the tokenizer, because a signature can span lines and hold
    colons of its own (annotations, lambdas in defaults) inside brackets.
    """
    text = "".join(line + "\n" for line in lines[node.lineno - 1 :])
    depth = 0
    seen_def = False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string == "def":
            seen_def = True
        elif token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif seen_def and depth == 0 and token.type == tokenize.OP and token.string == ":":
            return node.lineno + token.start[0] - 1, token.start[1]
    raise ValueError(f"no end of signature found for {node.name}")  # pragma: no cover


def stub_function(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The def's decorators, signature and docstring, with the body replaced by the stub."""
    lines = source.splitlines()
    first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
    colon_line, colon_column = _header_end(lines, node)
    header = lines[first - 1 : colon_line]
    header[-1] = header[-1][: colon_column + 1]
    first_statement = node.body[0]
    on_own_line = first_statement.lineno > colon_line
    indent = " " * (first_statement.col_offset if on_own_line else node.col_offset + 4)
    body = []
    if ast.get_docstring(node, clean=False) is not None:
        body.append(indent + ast.get_source_segment(source, first_statement))
    body.extend(indent + line for line in STUB_BODY)
    return "\n".join(header + body)


def stub_source(source: str) -> str:
    """A solution cell's source -> the student's stub.

    Top-level functions become stubs (signature and docstring kept), imports
    stay (a stub may need them for its annotations), anything else goes: it
    would give the answer away. A cell with no function, or one that is not
    plain Python, becomes a single `raise NotImplementedError(...)`.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return NO_FUNCTION_STUB
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        return NO_FUNCTION_STUB
    imports = [
        ast.get_source_segment(source, node)
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    blocks = ["\n".join(imports)] if imports else []
    blocks += [stub_function(source, node) for node in functions]
    return "\n\n\n".join(blocks)


def _source_text(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


ANSWER_BLOCK = re.compile(r"<details>\s*<summary>\s*Answer\s*</summary>.*?</details>\n?", re.S)
ANSWER_REMOVED = "*The answer is in the edition with solutions.*\n"


def without_answers(markdown: str) -> str:
    """A markdown cell's text with every folded Answer block replaced by a one-line note."""
    return ANSWER_BLOCK.sub(ANSWER_REMOVED, markdown)


def is_solution(cell: dict[str, Any]) -> bool:
    return cell.get("cell_type") == "code" and SOLUTION_TAG in _tags(cell)


def student_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A solution cell -> its stub, tagged "exercise" and visible."""
    cell = json.loads(json.dumps(cell))  # a deep copy
    cell["source"] = stub_source(_source_text(cell))
    tags = [EXERCISE_TAG if tag == SOLUTION_TAG else tag for tag in _tags(cell)]
    cell["metadata"]["tags"] = [tag for tag in tags if tag not in HIDDEN_TAGS]
    return cell


def student_notebook(notebook: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(the student's notebook, number of stubbed cells); outputs stripped, all else unchanged."""
    notebook = json.loads(json.dumps(notebook))
    stubbed = 0
    for index, cell in enumerate(notebook.get("cells", [])):
        if is_solution(cell):
            cell = notebook["cells"][index] = student_cell(cell)
            stubbed += 1
        elif cell.get("cell_type") == "markdown" and ANSWER_BLOCK.search(_source_text(cell)):
            cell["source"] = without_answers(_source_text(cell))
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return notebook, stubbed


def _dumps(notebook: dict[str, Any]) -> str:
    # The layout of scripts/clean_notebooks.py, so that the two editions diff cleanly.
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def make_student_edition(
    source_dir: str | Path = "notebooks", out_dir: str | Path = "student/notebooks"
) -> StudentEdition:
    """Write the student edition of every notebook in source_dir into out_dir."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if source_dir.resolve() == out_dir.resolve():
        raise ValueError(
            f"The student edition would overwrite the teacher notebooks in {source_dir}: "
            "choose another --out directory."
        )
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source_dir}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    edition = StudentEdition()
    for path in sources:
        notebook, stubbed = student_notebook(json.loads(path.read_text(encoding="utf-8")))
        target = out_dir / path.name
        target.write_text(_dumps(notebook), encoding="utf-8")
        edition.notebooks.append(target)
        edition.exercises += stubbed
    count = len(edition.notebooks)
    print(
        f"wrote {count} notebook{'s' if count != 1 else ''} to {out_dir} "
        f"({edition.exercises} exercise{'s' if edition.exercises != 1 else ''} stubbed)"
    )
    return edition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse student",
        description="Write the student edition: the chapters with exercise solutions as stubs.",
    )
    parser.add_argument(
        "--source", default="notebooks", help="teacher notebooks (default: %(default)s)"
    )
    parser.add_argument(
        "--out", default="student/notebooks", help="where to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        make_student_edition(args.source, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    return 0
