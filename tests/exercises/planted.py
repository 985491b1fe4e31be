"""The tests every exercise checker must pass: its reference solution, its planted bugs, a stub.

Each planted bug is a mistake a learner could plausibly make; its test
names the word its hint must contain, so a checker that rejects a bug for
the wrong reason (or with a useless hint) fails here.

Each chapter's test module holds that chapter's reference solutions and,
next to them, the bugs planted in them, in a table

    PLANTED = {checker: (reference solution, [(planted bug, word its hint must contain), ...])}

and runs the shared tests on it with

    class TestPlantedBugs(PlantedBugs):
        planted = PLANTED
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bertcourse.exercises import ExerciseFailed

Planted = dict[Callable, tuple[Callable, list[tuple[Callable, str]]]]


def assert_rejects(checker, bug, keyword, capsys):
    """The checker fails the planted bug with a short report: the case, `keyword`, a hint."""
    with pytest.raises(ExerciseFailed) as failure:
        checker(bug)
    message = failure.value.message
    assert message.startswith(f"✗ {checker.__name__}: case ")
    assert " of " in message.splitlines()[0]
    assert keyword in message, message
    assert "HINT: " in message
    assert len(message.splitlines()) <= 6, message
    assert "✓" not in capsys.readouterr().out
    return message


def _name(function: Callable) -> str:
    return function.__name__


class PlantedBugs:
    """The shared tests, parametrized over the `planted` table of a subclass."""

    planted: Planted = {}

    def pytest_generate_tests(self, metafunc):
        if "bug" in metafunc.fixturenames:
            metafunc.parametrize(
                ("checker", "bug", "keyword"),
                [
                    pytest.param(checker, bug, keyword, id=f"{checker.__name__}-{bug.__name__}")
                    for checker, (_, bugs) in self.planted.items()
                    for bug, keyword in bugs
                ],
            )
        elif "checker" in metafunc.fixturenames:
            metafunc.parametrize("checker", list(self.planted), ids=_name)

    def test_reference_solution_passes(self, checker, capsys):
        solution, _ = self.planted[checker]
        assert checker(solution) is True
        printed = capsys.readouterr().out.strip()
        assert printed.startswith(f"✓ {checker.__name__}: all ") and printed.endswith(
            "cases passed"
        )

    def test_planted_bug_is_rejected_with_its_hint(self, checker, bug, keyword, capsys):
        assert_rejects(checker, bug, keyword, capsys)

    def test_stub_reports_not_implemented(self, checker):
        def my_solution(*args, **kwargs):
            """The student edition's stub."""
            # YOUR CODE HERE
            raise NotImplementedError

        with pytest.raises(ExerciseFailed) as failure:
            checker(my_solution)
        assert failure.value.message == (
            "Not implemented yet: replace the `raise NotImplementedError` in my_solution with "
            "your code, then run this cell again."
        )
