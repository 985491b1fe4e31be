"""Option types for the commands' parsers, and how a command reports a reader's mistake.

Every number a reader types is checked by argparse itself, before any slow work (a corpus, a
vocabulary, a model), and refused with argparse's one-line usage error that names the flag.
A mistake found later (a file that is not there, a checkpoint that does not fit) ends the
command with one line, `error: ...`, and exit status 2; `--debug` or BERTCOURSE_DEBUG=1 shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator

__all__ = [
    "DEBUG_VARIABLE",
    "USER_ERROR_STATUS",
    "DIVERGED_STATUS",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "fraction",
    "probability",
    "debug_requested",
    "report_errors",
    "about_option",
]

DEBUG_VARIABLE = "BERTCOURSE_DEBUG"
USER_ERROR_STATUS = 2  # as argparse: the command line or an input file is wrong
DIVERGED_STATUS = 1  # the run itself failed (a non-finite loss)


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def _checked(kind: Callable[[str], float], what: str, allowed: Callable[[float], bool],
             rule: str, name: str) -> Callable[[str], float]:  # fmt: skip
    """An argparse type: `kind` of the text, finite, and `allowed`, else the flag's error."""

    def parse(text: str) -> float:
        value = _number(kind, text, what)
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        return value

    parse.__name__ = name
    return parse


WHOLE, FINITE = "a whole number", "a finite number"
positive_int = _checked(int, WHOLE, lambda v: v >= 1, "must be at least 1", "positive_int")
non_negative_int = _checked(int, WHOLE, lambda v: v >= 0, "must be 0 or more", "non_negative_int")
positive_float = _checked(
    float, FINITE, lambda v: v > 0, "must be greater than 0", "positive_float"
)
non_negative_float = _checked(
    float, FINITE, lambda v: v >= 0, "must be 0 or more", "non_negative_float"
)
fraction = _checked(
    float, FINITE, lambda v: 0 <= v < 1, "must be at least 0 and below 1", "fraction"
)
probability = _checked(
    float, FINITE, lambda v: 0 < v < 1, "must be between 0 and 1, e.g. 0.15", "probability"
)


@contextlib.contextmanager
def about_option(flag: str, value: object, hint: str) -> Iterator[None]:
    """Say which option an error from the library is about, and what the command line accepts.

    The library's messages speak Python (`from_hf('minilm')`, `load_corpus("offline")`); the
    reader typed a flag. The error keeps its type (the tests and the exit status depend on it).
    """
    try:
        yield
    except (OSError, ValueError) as error:
        if len(error.args) != 1 or not isinstance(error.args[0], str):
            raise
        raise type(error)(f"{flag} {value}: {error.args[0]} On the command line: {hint}") from error


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether --debug is among the arguments (removed from them) or BERTCOURSE_DEBUG is set."""
    debug = "--debug" in argv
    rest = [argument for argument in argv if argument != "--debug"]
    variable = os.environ.get(DEBUG_VARIABLE, "").strip().lower()
    return debug or variable in ("1", "true", "yes", "on"), rest


def report_errors(run: Callable[[], int], debug: bool, errors: tuple[type[BaseException], ...],
                  diverged: tuple[type[BaseException], ...] = ()) -> int:  # fmt: skip
    """Run a command; a reader's mistake (one of `errors`) becomes one line and exit status 2.

    A run that diverged (one of `diverged`) says so on one line, with status 1. Anything else
    is a bug and keeps its traceback. With debug, every error keeps its traceback.
    """
    try:
        return run()
    except KeyboardInterrupt as stop:  # outside training (which saves and returns by itself)
        if debug:
            raise
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"error: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except diverged + errors as error:
        if debug:
            raise
        message = str(error) or type(error).__name__
        if isinstance(error, UnicodeDecodeError):  # its str() names no file: the reader's site does
            message = f"{type(error).__name__}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return DIVERGED_STATUS if isinstance(error, diverged) else USER_ERROR_STATUS
