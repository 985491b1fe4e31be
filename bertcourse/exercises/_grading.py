"""The machinery every checker shares: cases, common mistakes, comparisons, the report.

A checker runs the learner's function on a series of seeded `Case`s,
compares each answer with the reference (`_compare_tensor` and friends, or
the checker's own comparison, which returns a `Problem` or None), and on
the first failure replays the checker's `Mistake`s on the same input: the
one that reproduces the learner's answer gives the hint. `checking` gives
an exercise's own asserts the same short report.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import linecache
import math
import os
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "DEFAULT_HINT",
    "Case",
    "Comparison",
    "ExerciseFailed",
    "Mistake",
    "Problem",
    "checking",
]


class ExerciseFailed(AssertionError):
    """A failed exercise check, carrying a short message meant for the learner.

    IPython calls `_render_traceback_` instead of printing the traceback, so
    in Jupyter the learner sees only the message: the traceback would point
    into this module, which is not where their bug is. Plain Python shows
    the usual exception.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        return self.message.splitlines()


# ----------------------------------------------------------------------------
# The machinery every checker shares
# ----------------------------------------------------------------------------


@dataclass
class Case:
    """One input to try: a description for the message, the arguments, the reference answer."""

    description: str
    args: tuple
    expected: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A common wrong implementation: if it reproduces the learner's answer, `hint` explains it."""

    hint: str
    compute: Callable[..., Any]


@dataclass
class Problem:
    """How an answer differs from the expected one: lines for the message, an optional hint."""

    lines: list[str]
    hint: str | None = None
    nonfinite: bool = False  # NaN or inf where a number was expected: a symptom with its own hints


Comparison = Callable[[Any, Any], "Problem | None"]


def _variant(hint: str, compute: Callable[..., Any], **switches: Any) -> Mistake:
    """A common mistake: `compute`, a reference, with a bug planted by its keyword switches."""
    return Mistake(hint, functools.partial(compute, **switches))


DEFAULT_HINT = "run your function on this case by hand and compare each step with the chapter."

_LIBRARY_DIRS = tuple(
    os.path.realpath(path)
    for path in {
        os.path.dirname(torch.__file__),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # all of bertcourse
        os.path.dirname(contextlib.__file__),
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


def _is_library_file(filename: str) -> bool:
    path = os.path.realpath(filename)
    return any(path.startswith(directory + os.sep) for directory in _LIBRARY_DIRS)


def _learner_frame(error: BaseException):
    """The innermost traceback frame in the learner's code (not torch, not this package)."""
    frame = None
    traceback = error.__traceback__
    while traceback is not None:
        if not _is_library_file(traceback.tb_frame.f_code.co_filename):
            frame = traceback
        traceback = traceback.tb_next
    return frame


def _location(error: BaseException, function_name: str | None = None) -> str:
    """Where in the learner's code: ' at line 3' (in function_name), ' in causal_mask, line 3', ''."""
    frame = _learner_frame(error)
    if frame is None:
        return ""
    name = frame.tb_frame.f_code.co_name
    if name == function_name or name.startswith("<"):
        return f" at line {frame.tb_lineno}"
    return f" in {name}, line {frame.tb_lineno}"


def _is_stub(error: NotImplementedError) -> bool:
    """Raised by the learner (a stub not yet replaced), not by a torch operator."""
    if not error.args:
        return True
    innermost = error.__traceback__
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    return innermost is None or not _is_library_file(innermost.tb_frame.f_code.co_filename)


def _not_implemented(error: NotImplementedError, fallback_name: str) -> ExerciseFailed:
    frame = _learner_frame(error)
    name = frame.tb_frame.f_code.co_name if frame is not None else fallback_name
    if name.startswith("<"):
        name = fallback_name
    return ExerciseFailed(
        f"Not implemented yet: replace the `raise NotImplementedError` in {name} with your code, "
        "then run this cell again."
    )


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _exception_hint(error: BaseException) -> str:
    message = str(error)
    if "view size is not compatible" in message:
        return (
            "after a transpose the tensor is no longer contiguous in memory: use reshape "
            "(or .contiguous().view) instead of view."
        )
    if "must match the size" in message or "cannot be multiplied" in message:
        return (
            "two tensors' shapes do not fit: print the shape of each intermediate tensor "
            "(a sum or max without keepdim=True drops an axis)."
        )
    if "operator.invert" in message:
        return (
            "~ inverts bool tensors only: a float mask is added to the scores as it is; "
            "only a bool mask needs converting."
        )
    if isinstance(error, TypeError) and "argument" in message:
        return (
            "the checker calls your function with the arguments the exercise describes; "
            "optional ones need a default (e.g. attention_mask=None)."
        )
    if isinstance(error, IndexError) and "list index" in message:
        return (
            "an index past the end of a list: a slice (ranking[:k]) stops at the end of a "
            "short list, where ranking[i] for i in range(k) fails."
        )
    return "run your function on this case and print the shapes of the intermediate tensors."


def _clone(value: Any) -> Any:
    """A fresh copy for every call, so that in-place edits by the learner cannot leak between cases."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value)
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _call(fn: Callable, case: Case) -> Any:
    with torch.no_grad():
        return fn(*_clone(case.args), **_clone(case.kwargs))


def _header(check_name: str, where: str) -> str:
    return f"✗ {check_name}: {where}"


def _require_callable(check_name: str, fn: object) -> None:
    """Stop at once, naming the fix, when a checker gets something other than a function."""
    if not callable(fn):
        raise ExerciseFailed(
            f"✗ {check_name} expects your function itself, e.g. {check_name}(my_function), "
            f"got {type(fn).__name__}."
        )


def _run_cases(
    check_name: str,
    fn: Callable,
    cases: Sequence[Case],
    compare: Comparison,
    mistakes: Sequence[Mistake] = (),
    default_hint: str = DEFAULT_HINT,
) -> bool:
    """Try every case; on the first failure raise ExerciseFailed with the best hint available."""
    _require_callable(check_name, fn)
    name = getattr(fn, "__name__", "your function")
    for number, case in enumerate(cases, 1):
        where = f"case {number} of {len(cases)}: {case.description}"
        got = _learners_answer(check_name, where, name, lambda case=case: _call(fn, case))
        try:
            problem = compare(case.expected, got)
        except Exception as error:  # an answer too strange to compare
            problem = Problem([f"could not compare your answer: {_first_line(error)}"])
        if problem is None:
            continue
        hint = (
            _known_mistake(fn, cases, number - 1, got, compare, mistakes)
            or problem.hint
            or default_hint
        )
        lines = "\n".join(f"  {line}" for line in problem.lines)
        raise ExerciseFailed(f"{_header(check_name, where)}\n{lines}\nHINT: {hint}")
    print(f"✓ {check_name}: all {len(cases)} cases passed")
    return True


def _learners_answer(check_name: str, where: str, name: str, call: Callable[[], Any]) -> Any:
    """call() runs the learner's function `name`; a stub or an error it raises becomes the
    checker's report (Not implemented yet, or the case and the error), not a traceback."""
    try:
        return call()
    except ExerciseFailed:
        raise
    except NotImplementedError as error:
        if _is_stub(error):
            raise _not_implemented(error, name) from None
        raise _raised(check_name, where, name, error) from None
    except Exception as error:  # the learner's code failed: name the case and the error
        raise _raised(check_name, where, name, error) from None


def _raised(check_name: str, where: str, name: str, error: Exception) -> ExerciseFailed:
    return ExerciseFailed(
        f"{_header(check_name, where)}\n"
        f"  {name} raised {type(error).__name__}{_location(error, name)}: {_first_line(error)}\n"
        f"HINT: {_exception_hint(error)}"
    )


def _known_mistake(
    fn: Callable,
    cases: Sequence[Case],
    failing: int,
    got: Any,
    compare: Comparison,
    mistakes: Sequence[Mistake],
) -> str | None:
    """The hint of the common mistake that reproduces the learner's answers.

    Candidates must reproduce the failing case; where several do (two
    mistakes can coincide on one input), the one that also reproduces the
    learner's answers on the other cases wins.
    """

    def reproduces(mistake: Mistake, case: Case, answer: Any) -> bool:
        try:
            return compare(_call(mistake.compute, case), answer) is None
        except Exception:  # this mistake cannot even run on this case
            return False

    candidates = [m for m in mistakes if reproduces(m, cases[failing], got)]
    if len(candidates) <= 1:
        return candidates[0].hint if candidates else None
    answers = {}
    for index, case in enumerate(cases):
        if index != failing:
            try:
                answers[index] = _call(fn, case)
            except Exception:  # the learner's function fails here: no evidence either way
                continue
    for mistake in candidates:
        if all(reproduces(mistake, cases[i], answer) for i, answer in answers.items()):
            return mistake.hint
    return candidates[0].hint


# ----------------------------------------------------------------------------
# An exercise's own asserts, with the same friendly report
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def checking(name: str) -> Iterator[None]:
    """Run an exercise's own checks: print "✓ name" if they pass, a short message if not.

    A stub that still raises NotImplementedError gives "Not implemented yet";
    a failed assert shows the assert line; any other error its type and
    message, each with the line where it happened. The error raised is
    ExerciseFailed (an AssertionError), so nbval still fails on it.
    """
    try:
        yield
    except ExerciseFailed:
        raise
    except NotImplementedError as error:
        if not _is_stub(error):
            raise _failure(name, error) from None
        raise _not_implemented(error, name) from None
    except Exception as error:
        raise _failure(name, error) from None
    print(f"✓ {name}: all checks passed")


def _failure(name: str, error: Exception) -> ExerciseFailed:
    frame = _learner_frame(error)
    where = _location(error)
    if isinstance(error, AssertionError):
        source = ""
        if frame is not None:
            source = linecache.getline(
                frame.tb_frame.f_code.co_filename, frame.tb_lineno, frame.tb_frame.f_globals
            ).strip()
        detail = _first_line(error) or source or "assert failed"
        lines = [f"✗ {name}: a check failed{where}: {detail}"]
        if source and source not in detail:
            lines.append(f"  {source}")
        return ExerciseFailed("\n".join(lines))
    return ExerciseFailed(
        f"✗ {name}: {type(error).__name__}{where}: {_first_line(error)}\n"
        f"HINT: {_exception_hint(error)}"
    )


# ----------------------------------------------------------------------------
# Comparing answers
# ----------------------------------------------------------------------------

# Hints shared by the attention checkers of chapters 2 and 3.
_MASK_IGNORED = "padded keys receive attention: apply the mask to the scores before the softmax."
_WRONG_AXIS = "rows do not sum to 1: softmax over the last dimension (keys), dim=-1."
_MINUS_INF = (
    "NaN: a row whose keys are all masked gets -inf everywhere, and softmax of all -inf is NaN. "
    "Use torch.finfo(dtype).min, the most negative finite number, as in the chapter."
)


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol): float32 allows for a different order of operations, float64 is strict."""
    if dtype == torch.float64:
        return 1e-10, 1e-8
    return 1e-5, 1e-5


def _fmt_shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def _fmt_index(index: Sequence[int]) -> str:
    """As you would index the tensor: [1, 0, 3]."""
    return "[" + ", ".join(str(i) for i in index) + "]"


def _first_index(mask: torch.Tensor) -> list[int]:
    """The index of the first True of a bool tensor, as a list of ints."""
    return [int(i) for i in mask.nonzero()[0]]


def _unwrap_scalar(value: Any) -> Any:
    """A one-element tensor as the Python number it holds; any other value as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _scalar_loss_problem(
    expected: torch.Tensor, got: Any, *, one_number: str, dtype_source: str, not_finite: str
) -> Problem | None:
    """What is wrong with a loss `got` against the reference's scalar `expected`, or None.

    The hints that differ between losses: `one_number` (how the examples' terms become one
    number), `dtype_source` (the inputs whose dtype the loss keeps) and `not_finite` (how to
    compute it stably).
    """
    if not isinstance(got, torch.Tensor):
        return Problem(
            [f"expected the loss as a tensor, got a {type(got).__name__}"],
            "return the loss tensor itself: .item() or float() cut it off from the gradient.",
        )
    if got.numel() != 1:
        return Problem(
            [f"expected one number, got a tensor of shape {_fmt_shape(got.shape)}"],
            f"the loss is one number: {one_number}",
        )
    if got.dtype != expected.dtype:
        return Problem(
            [f"the loss has dtype {got.dtype}, expected {expected.dtype}"],
            f"the dtype changed on the way: keep the {dtype_source}' dtype (no .float()).",
        )
    value, target = got.item(), expected.item()
    if not math.isfinite(value):
        return Problem([f"expected {target:.6f}, got {value}"], not_finite, nonfinite=True)
    atol, rtol = _tolerance(expected.dtype)
    if abs(value - target) > atol + rtol * abs(target):
        return Problem([f"loss: expected {target:.6f}, got {value:.6f}"])
    return None


def _compare_tensor(
    expected: torch.Tensor,
    got: Any,
    what: str = "output",
    shape_hint: Callable[[torch.Size, torch.Size], str | None] | None = None,
) -> Problem | None:
    if not isinstance(got, torch.Tensor):
        return Problem(
            [
                f"expected the {what} as a tensor of shape {_fmt_shape(expected.shape)}, got a "
                f"{type(got).__name__}"
            ],
            f"return the {what} tensor itself.",
        )
    if got.shape != expected.shape:
        hint = shape_hint(expected.shape, got.shape) if shape_hint else None
        return Problem(
            [
                f"{what} has the wrong shape: expected {_fmt_shape(expected.shape)}, "
                f"got {_fmt_shape(got.shape)}"
            ],
            hint or "wrong shape: check which axes you reshape, transpose or reduce.",
        )
    if got.dtype != expected.dtype:
        return Problem(
            [f"{what} has dtype {got.dtype}, expected {expected.dtype}"],
            "the dtype changed on the way: create new tensors with the input's dtype "
            "(torch.zeros_like, torch.full(..., dtype=x.dtype)).",
        )
    atol, rtol = _tolerance(expected.dtype)
    got_detached, expected_detached = got.detach().cpu(), expected.detach().cpu()
    close = torch.isclose(got_detached, expected_detached, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    bad_finite = ~torch.isfinite(got_detached) & torch.isfinite(expected_detached)
    if bool(bad_finite.any()):
        index = _first_index(bad_finite)
        return Problem(
            [
                f"{what} contains NaN or inf at {_fmt_index(index)} (and "
                f"{int(bad_finite.sum())} places in all) where a finite number was expected"
            ],
            nonfinite=True,
        )
    error = (got_detached - expected_detached).abs().nan_to_num(nan=math.inf)
    index = _first_index(error == error.max())
    return Problem(
        [
            f"{what} values differ: max abs error {error.max().item():.3g} at "
            f"{_fmt_index(index)}: expected {expected_detached[tuple(index)].item():.6g}, "
            f"got {got_detached[tuple(index)].item():.6g}"
        ]
    )


def _tensor_comparison(
    what: str = "output",
    shape_hint: Callable[[torch.Size, torch.Size], str | None] | None = None,
    nan_hint: str | None = None,
) -> Comparison:
    def compare(expected: Any, got: Any) -> Problem | None:
        problem = _compare_tensor(expected, got, what, shape_hint)
        if problem is not None and problem.hint is None and problem.nonfinite:
            problem.hint = nan_hint
        return problem

    return compare


def _rows_sum_to_one(probs: Any) -> bool:
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        return True
    sums = probs.detach().sum(-1)
    return bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4))


def _compare_output_and_probs(nan_hint: str) -> Comparison:
    """For functions that may return `output` or `(output, attention_probs)`."""

    def compare(expected: Any, got: Any) -> Problem | None:
        expected_output, expected_probs = expected
        got_output, got_probs = got, None
        if isinstance(got, (tuple, list)):
            if len(got) not in (1, 2):
                return Problem(
                    [f"expected output or (output, probs), got {len(got)} values"],
                    "return the output, or the pair (output, attention_probs).",
                )
            got_output, got_probs = got[0], (got[1] if len(got) == 2 else None)
        problem = _compare_tensor(expected_output, got_output, "output", _attention_shape_hint)
        if problem is None and got_probs is not None:
            problem = _compare_tensor(expected_probs, got_probs, "attention probabilities")
            if problem is not None and problem.hint is None:  # the output is right, the probs not
                problem.hint = (
                    "the second value must be the attention probabilities that multiplied V: "
                    "after the mask and the softmax, each row summing to 1."
                )
        if problem is not None and problem.hint is None:
            if problem.nonfinite:
                problem.hint = nan_hint
            elif not _rows_sum_to_one(got_probs):
                problem.hint = _WRONG_AXIS
        return problem

    return compare


def _attention_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    if len(got) == len(expected) >= 2 and tuple(got[-2:]) == tuple(expected[-2:])[::-1]:
        return "the last two axes are swapped: the output is (..., L_q, d_v) = probs @ value."
    return "the output has shape (..., L_q, d_v): one blended value of width d_v per query."


# ----------------------------------------------------------------------------
# Inputs shared by several chapters
# ----------------------------------------------------------------------------


def _random(generator: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32):
    return torch.randn(*shape, generator=generator, dtype=dtype)


def _real_tokens(lengths: Sequence[int], length: int) -> torch.Tensor:
    """(B, T) bool, True at the real tokens of right-padded rows of the given lengths."""
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
