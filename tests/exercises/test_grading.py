"""The package and the machinery its checkers share: the report of a failure, and `checking`."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

from bertcourse import exercises
from bertcourse.exercises import ExerciseFailed, check_attention, checking


def _chapters() -> list[str]:
    """The chapter modules of the package: ch01_tokenization, ..., in chapter order."""
    return sorted(
        m.name for m in pkgutil.iter_modules(exercises.__path__) if m.name.startswith("ch")
    )


def test_every_public_checker_is_tested():
    """Every checker has its planted bugs, at least five, in its chapter's test module."""
    planted = {}
    for chapter in _chapters():
        tests = importlib.import_module(f"test_{chapter}")  # this folder is on sys.path
        module = importlib.import_module(f"bertcourse.exercises.{chapter}")
        assert {checker.__name__ for checker in tests.PLANTED} == set(module.__all__), chapter
        planted.update(tests.PLANTED)
    public = {name for name in exercises.__all__ if name.startswith("check_")}
    assert public == {checker.__name__ for checker in planted}
    assert all(len(bugs) >= 5 for _, bugs in planted.values())


def test_the_package_exports_each_name_once_in_chapter_order():
    chapters = [importlib.import_module(f"bertcourse.exercises.{c}") for c in _chapters()]
    in_order = ["ExerciseFailed", "checking"] + [n for m in chapters for n in m.__all__]
    assert exercises.__all__ == in_order
    assert all(getattr(exercises, name) is not None for name in exercises.__all__)


def test_other_exceptions_name_the_case_and_the_error():
    def broken(query, key, value, attention_mask=None):
        raise ValueError("the shapes confuse me")

    with pytest.raises(ExerciseFailed) as failure:
        check_attention(broken)
    first, second = failure.value.message.splitlines()[:2]
    assert first.startswith("✗ check_attention: case 1 of ")
    assert "broken raised ValueError at line " in second and "the shapes confuse me" in second


def test_render_traceback_is_just_the_message():
    error = ExerciseFailed("✗ check_x: case 1 of 2: batch 1\n  values differ\nHINT: look")
    assert error._render_traceback_() == [
        "✗ check_x: case 1 of 2: batch 1",
        "  values differ",
        "HINT: look",
    ]
    assert isinstance(error, AssertionError)
    assert str(error) == error.message


def test_checking_prints_a_tick_when_every_assert_holds(capsys):
    with checking("my exercise"):
        assert 1 + 1 == 2
    assert capsys.readouterr().out == "✓ my exercise: all checks passed\n"


def test_checking_shows_the_failed_assert_line():
    with pytest.raises(ExerciseFailed) as failure:
        with checking("my exercise"):
            total = 3
            assert total == 4
    message = failure.value.message
    assert message.startswith("✗ my exercise: a check failed in ")
    assert "assert total == 4" in message
    assert len(message.splitlines()) <= 3


def test_checking_reports_a_stub_as_not_implemented():
    def prune(block):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match=r"^Not implemented yet: .* in prune with your code"):
        with checking("prune a head"):
            prune(None)


def test_checking_names_other_errors(capsys):
    with pytest.raises(ExerciseFailed) as failure:
        with checking("my exercise"):
            torch.ones(2, 3) @ torch.ones(2, 3)
    assert "RuntimeError" in failure.value.message and "HINT:" in failure.value.message
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "checker_name", [name for name in exercises.__all__ if name.startswith("check_")]
)
@pytest.mark.parametrize("not_a_function", [None, "my_function", 3])
def test_every_checker_asks_for_the_function_itself(checker_name, not_a_function):
    """Passing a result, a name or nothing gets the fix, not a TypeError from inside the checker."""
    with pytest.raises(ExerciseFailed, match=rf"✗ {checker_name} expects your function itself"):
        getattr(exercises, checker_name)(not_a_function)
