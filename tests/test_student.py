"""The student edition: solutions become stubs, nothing else changes, and the checks stay friendly.

The last test executes a chapter in both editions: in the student edition
every grading cell must answer with a short "Not implemented yet" (no
traceback wall), in the teacher edition with a ✓.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bertcourse.commands.student import (
    EXERCISE_TAG,
    NO_FUNCTION_STUB,
    is_solution,
    main,
    make_student_edition,
    stub_source,
    without_answers,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Executed in both editions: the quickest chapter in the ci profile (about 10 s per run).
EXECUTED = "02_attention.ipynb"


def source(cell: dict) -> str:
    text = cell["source"]
    return "".join(text) if isinstance(text, list) else text


def top_level_functions(code: str) -> list[ast.FunctionDef]:
    return [node for node in ast.parse(code).body if isinstance(node, ast.FunctionDef)]


def grading_cells(cells: list[dict]) -> list[int]:
    """Indices of the cells right after each solution cell: the ones that grade it."""
    return [i + 1 for i, cell in enumerate(cells) if is_solution(cell)]


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "notebooks"
    result = make_student_edition(ROOT / "notebooks", out)
    return out, result


def test_every_notebook_is_written_and_counted(edition):
    out, result = edition
    assert [p.name for p in result.notebooks] == [p.name for p in NOTEBOOKS]
    solutions = sum(
        is_solution(cell) for path in NOTEBOOKS for cell in json.loads(path.read_text())["cells"]
    )
    assert result.exercises == solutions >= 2 * len(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_become_stubs_and_nothing_else_changes(edition, path):
    out, _ = edition
    teacher = json.loads(path.read_text())
    student = json.loads((out / path.name).read_text())
    assert student["metadata"] == teacher["metadata"]
    assert len(student["cells"]) == len(teacher["cells"])
    for before, after in zip(teacher["cells"], student["cells"], strict=True):
        assert after.get("id") == before.get("id") and after["cell_type"] == before["cell_type"]
        if after["cell_type"] == "code":
            assert after["outputs"] == [] and after["execution_count"] is None
        if not is_solution(before):
            text = source(before)
            if before["cell_type"] == "markdown" and "<summary>Answer</summary>" in text:
                assert source(after) == without_answers(text) != text  # the answer goes
                assert "<summary>Answer</summary>" not in source(after)
            else:
                assert after["source"] == before["source"]
            assert after["metadata"] == before["metadata"]
            continue
        tags = after["metadata"]["tags"]
        assert EXERCISE_TAG in tags and "solution" not in tags and "hide-input" not in tags
        stub = source(after)
        assert "# YOUR CODE HERE" in stub
        solution_functions = top_level_functions(source(before))
        stub_functions = top_level_functions(stub)  # parses
        assert solution_functions, (
            f"{path.name}: a solution cell must define the learner's function"
        )
        assert [f.name for f in stub_functions] == [f.name for f in solution_functions]
        for solved, stubbed in zip(solution_functions, stub_functions, strict=True):
            assert ast.dump(stubbed.args) == ast.dump(solved.args)
            assert ast.get_docstring(stubbed) == ast.get_docstring(solved)
            body = stubbed.body[1:] if ast.get_docstring(stubbed) is not None else stubbed.body
            assert len(body) == 1 and isinstance(body[0], ast.Raise)
            assert ast.unparse(body[0].exc) == "NotImplementedError"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_teacher_solution_cells_only_define_functions(path):
    """So that the stub gives nothing away and the grading cell does all the checking."""
    for cell in json.loads(path.read_text())["cells"]:
        if is_solution(cell):
            for node in ast.parse(source(cell)).body:
                assert isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)), (
                    f"{path.name}: {ast.unparse(node)[:60]!r} in a solution cell"
                )


def test_stub_keeps_signature_decorators_and_docstring():
    code = '''import math


@decorate(option=1)
def blockwise(query, key,
              value=None, pick=lambda x: x[1:2], *, sizes: dict[str, int] = {"a": 1}) -> float:
    """Exact attention.

    Second paragraph.
    """
    def helper(x):
        return x
    return helper(query)


limit = 3


def short(x): return x * limit
'''
    stub = stub_source(code)
    assert "helper" not in stub and "limit" not in stub and "return" not in stub
    assert stub.startswith("import math\n\n\n@decorate(option=1)\ndef blockwise(query, key,\n")
    assert (
        '    """Exact attention.\n\n    Second paragraph.\n    """\n    # YOUR CODE HERE\n' in stub
    )
    assert stub.endswith("def short(x):\n    # YOUR CODE HERE\n    raise NotImplementedError")
    assert [f.name for f in top_level_functions(stub)] == ["blockwise", "short"]


def test_cells_without_a_function_become_a_single_raise():
    assert stub_source("x = compute()\nassert x > 0") == NO_FUNCTION_STUB
    assert stub_source("%timeit compute()") == NO_FUNCTION_STUB  # IPython syntax
    ast.parse(NO_FUNCTION_STUB)


def test_refuses_to_overwrite_the_teacher_notebooks(tmp_path):
    with pytest.raises(ValueError, match="overwrite"):
        make_student_edition(ROOT / "notebooks", ROOT / "notebooks")
    with pytest.raises(FileNotFoundError):
        make_student_edition(tmp_path / "empty", tmp_path / "out")


def test_main_writes_and_reports(tmp_path, capsys):
    source_dir = tmp_path / "teacher"
    source_dir.mkdir()
    (source_dir / "02_attention.ipynb").write_text((ROOT / "notebooks" / EXECUTED).read_text())
    assert main(["--source", str(source_dir), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote 1 notebook to {tmp_path / 'out'} (")
    assert "stubbed)" in printed
    assert (tmp_path / "out" / "02_attention.ipynb").exists()
    assert main(["--source", str(source_dir), "--out", str(source_dir)]) == 2


def execute(path: Path) -> list[dict]:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    return notebook.cells


def test_student_checks_say_not_implemented_and_teacher_checks_pass(edition, monkeypatch):
    monkeypatch.setenv("BERTCOURSE_PROFILE", "ci")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, _ = edition
    teacher = execute(ROOT / "notebooks" / EXECUTED)
    student = execute(out / EXECUTED)
    graded = grading_cells([dict(cell) for cell in teacher])
    assert len(graded) >= 2

    for index in graded:
        errors = [o for o in student[index].outputs if o.output_type == "error"]
        assert len(errors) == 1, f"cell {index}: {student[index].source[:60]!r}"
        error = errors[0]
        shown = "\n".join(error.traceback)
        assert error.ename == "ExerciseFailed"
        assert "Not implemented yet" in shown
        assert len(error.traceback) <= 5, shown  # the message, not a traceback wall

        teacher_errors = [o for o in teacher[index].outputs if o.output_type == "error"]
        printed = "".join(
            o.get("text", "") for o in teacher[index].outputs if o.output_type == "stream"
        )
        assert not teacher_errors and "✓" in printed, printed

    # Only the grading cells fail in the student edition; the chapter itself runs.
    failing = [
        i
        for i, cell in enumerate(student)
        if cell.cell_type == "code" and any(o.output_type == "error" for o in cell.outputs)
    ]
    assert failing == graded


def test_written_answers_are_removed_and_hints_kept():
    text = (
        "**Exercise 4 (reading, ★☆☆): why?**\n\n"
        "<details><summary>Hint 1</summary>\n\nLook at the mask.\n\n</details>\n\n"
        "<details><summary>Answer</summary>\n\nBecause the $T^2$ scores.\n\n</details>\n"
        "After the answer.\n"
    )
    student = without_answers(text)
    assert "Look at the mask." in student and "<summary>Hint 1</summary>" in student
    assert "Because" not in student and "<summary>Answer</summary>" not in student
    assert student.endswith("edition with solutions.*\nAfter the answer.\n")


def test_the_committed_student_edition_is_current(tmp_path):
    """Colab and Binder open student/notebooks (book/_ext/student_launch.py): it must be the
    edition of the notebooks as they are. After changing a notebook: make student."""
    make_student_edition(ROOT / "notebooks", tmp_path)
    committed = ROOT / "student" / "notebooks"
    expected = sorted(path.name for path in tmp_path.glob("*.ipynb"))
    assert sorted(path.name for path in committed.glob("*.ipynb")) == expected, "run make student"
    stale = [
        name
        for name in expected
        if (committed / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    assert not stale, f"student/notebooks is out of date for {stale}: run make student"
