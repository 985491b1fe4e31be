"""Checkers for the coding exercises: they grade a learner's function like a teaching assistant.

A bare `assert` tells a learner *that* something is wrong. A checker tells
them *where* and *probably why*: it runs their function on a series of
seeded cases (random shapes, padding masks, a single token, a fully padded
row, odd head counts, float64), compares each answer with the package's
reference, and stops at the first case that fails with

* the case ("case 3 of 8: batch 2, 3 heads, length 6, with padding"),
* what was expected and what came back (both shapes, or the largest error
  and where it is),
* a HINT. To find it, the checker replays the mistakes learners commonly
  make (unscaled scores, mask ignored, softmax over the wrong axis, ...) on
  the same input; if one of them reproduces the learner's answer, its hint
  is the diagnosis. Otherwise a hint from the symptom (NaN, rows that do not
  sum to 1, ...).

On success a checker prints one line, "✓ check_attention: all 8 cases
passed", and returns True. On failure it raises `ExerciseFailed`, an
`AssertionError` (so nbval and pytest fail as usual) whose
`_render_traceback_` makes Jupyter show the message instead of a traceback.

`checking` gives the same behaviour to an exercise's own asserts:

    with checking("attention_without_head"):
        assert ...
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import linecache
import math
import os
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .attention import MultiHeadSelfAttention, scaled_dot_product_attention
from .config import BertConfig

__all__ = [
    "ExerciseFailed",
    "check_attention",
    "check_blockwise_attention",
    "check_causal_attention",
    "check_gelu",
    "check_layer_norm",
    "check_mean_pooling",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_parameter_count",
    "check_softmax",
    "check_split_heads",
    "check_strongest_sep_heads",
    "check_wordpiece",
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

DEFAULT_HINT = "run your function on this case by hand and compare each step with the chapter."

_LIBRARY_DIRS = tuple(
    os.path.realpath(path)
    for path in {
        os.path.dirname(torch.__file__),
        os.path.dirname(os.path.abspath(__file__)),
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


def _run_cases(
    check_name: str,
    fn: Callable,
    cases: Sequence[Case],
    compare: Comparison,
    mistakes: Sequence[Mistake] = (),
    default_hint: str = DEFAULT_HINT,
) -> bool:
    """Try every case; on the first failure raise ExerciseFailed with the best hint available."""
    if not callable(fn):
        raise ExerciseFailed(
            f"✗ {check_name} expects your function itself, e.g. {check_name}(my_function), "
            f"got {type(fn).__name__}."
        )
    name = getattr(fn, "__name__", "your function")
    for number, case in enumerate(cases, 1):
        where = f"case {number} of {len(cases)}: {case.description}"
        try:
            got = _call(fn, case)
        except ExerciseFailed:
            raise
        except NotImplementedError as error:
            if _is_stub(error):
                raise _not_implemented(error, name) from None
            raise _raised(check_name, where, name, error) from None
        except Exception as error:  # the learner's code failed: name the case and the error
            raise _raised(check_name, where, name, error) from None
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
# Comparing answers
# ----------------------------------------------------------------------------


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
        index = [int(i) for i in bad_finite.nonzero()[0]]
        return Problem(
            [
                f"{what} contains NaN or inf at {_fmt_index(index)} (and "
                f"{int(bad_finite.sum())} places in all) where a finite number was expected"
            ],
            nonfinite=True,
        )
    error = (got_detached - expected_detached).abs().nan_to_num(nan=math.inf)
    index = [int(i) for i in (error == error.max()).nonzero()[0]]
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
# Attention (chapter: attention)
# ----------------------------------------------------------------------------


def _random(generator: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32):
    return torch.randn(*shape, generator=generator, dtype=dtype)


def _padding_mask(lengths: Sequence[int], length: int) -> torch.Tensor:
    """(B, 1, 1, T) bool, True at the real tokens (keys that may be attended to)."""
    real = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    return real[:, None, None, :]


def _to_additive(mask: torch.Tensor, dtype: torch.dtype, blocked: float | None = None):
    fill = torch.finfo(dtype).min if blocked is None else blocked
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, fill)


def _attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    divide_by: str = "sqrt",
    mask_mode: str = "add",
    softmax_dim: int = -1,
    scores_transposed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention, or one of the classic mistakes (chosen by the keywords)."""
    d_k = query.shape[-1]
    scores = key @ query.transpose(-2, -1) if scores_transposed else query @ key.transpose(-2, -1)
    scores = {"sqrt": scores / math.sqrt(d_k), "d_k": scores / d_k, "none": scores}[divide_by]
    after_softmax = None
    if attention_mask is not None and mask_mode != "ignore":
        mask = attention_mask
        if mask.dtype == torch.bool:
            if mask_mode == "invert":
                mask = ~mask
            if mask_mode == "after_softmax":
                after_softmax = mask.to(scores.dtype)
            else:
                blocked = float("-inf") if mask_mode == "minus_inf" else None
                scores = scores + _to_additive(mask, scores.dtype, blocked)
        elif mask_mode == "float_as_bool":  # 0 / min read as "False = blocked / True = allowed"
            scores = scores + _to_additive(mask.bool(), scores.dtype)
        elif mask_mode == "after_softmax":
            after_softmax = (mask == 0).to(scores.dtype)
        else:
            scores = scores + mask
    probs = scores.softmax(dim=softmax_dim)
    if after_softmax is not None:
        probs = probs * after_softmax
    return probs @ value, probs


def _mistake(hint: str, **variant: Any) -> Mistake:
    return Mistake(
        hint, lambda q, k, v, attention_mask=None: _attention(q, k, v, attention_mask, **variant)
    )


_UNSCALED = "the scores look unscaled: divide Q Kᵀ by sqrt(d_k) before the softmax."
_DIVIDED_BY_DK = "the scores are divided by d_k: divide by sqrt(d_k), its square root."
_MASK_IGNORED = "padded keys receive attention: apply the mask to the scores before the softmax."
_MASK_INVERTED = (
    "the mask is inverted: in a bool mask True means the query *may* attend to that key "
    "(as in torch.nn.functional.scaled_dot_product_attention)."
)
_MASK_AFTER_SOFTMAX = (
    "zeroing probabilities after the softmax leaves rows that do not sum to 1: apply the mask "
    "to the scores, before the softmax."
)
_WRONG_AXIS = "rows do not sum to 1: softmax over the last dimension (keys), dim=-1."
_SCORES_TRANSPOSED = "scores must be query @ key.transpose(-2, -1): (L_q, L_k), one row per query."
_MINUS_INF = (
    "NaN: a row whose keys are all masked gets -inf everywhere, and softmax of all -inf is NaN. "
    "Use torch.finfo(dtype).min, the most negative finite number, as in the chapter."
)
_FLOAT_AS_BOOL = (
    "a float mask is *added* to the scores (0 where allowed, a large negative number where "
    "blocked); only a bool mask means True = may attend."
)


def check_attention(fn: Callable) -> bool:
    """Grade `fn(query, key, value, attention_mask=None)` -> output, or (output, attention_probs).

    query (..., L_q, d_k), key (..., L_k, d_k), value (..., L_k, d_v). The mask
    is broadcastable to (..., L_q, L_k): bool with True where a query may
    attend, or float, added to the scores. Reference:
    `bertcourse.attention.scaled_dot_product_attention` (a fully masked row
    becomes a uniform average, thanks to `torch.finfo(dtype).min`).
    """
    g = torch.Generator().manual_seed(2)
    cases = []

    def add(description, query, key, value, mask=None):
        kwargs = {} if mask is None else {"attention_mask": mask}
        expected = scaled_dot_product_attention(query, key, value, mask)
        cases.append(Case(description, (query, key, value), expected, kwargs))

    add(
        "one head, 5 queries, 7 keys, d_k 8, d_v 3, no mask",
        _random(g, 5, 8),
        _random(g, 7, 8),
        _random(g, 7, 3),
    )
    add("batch 2, 3 heads, length 5, d_k 4, no mask", *_random(g, 3, 2, 3, 5, 4).unbind(0))
    add(
        "batch 2, 3 heads, length 6, with padding (bool mask (B, 1, 1, T))",
        *_random(g, 3, 2, 3, 6, 4).unbind(0),
        _padding_mask([6, 3], 6),
    )
    float_mask = _random(g, 3, 1, 1, 5) + _to_additive(_padding_mask([5, 2, 4], 5), torch.float32)
    add(
        "batch 3, 2 heads, length 5, float mask added to the scores (biases and padding)",
        *_random(g, 3, 3, 2, 5, 8).unbind(0),
        float_mask,
    )
    add(
        "bool mask of shape (T, T) (causal), broadcast over batch 2 and 2 heads",
        *_random(g, 3, 2, 2, 4, 6).unbind(0),
        torch.ones(4, 4, dtype=torch.bool).tril(),
    )
    add(
        "batch 2, 1 head, length 1 (a single token), bool mask",
        *_random(g, 3, 2, 1, 1, 4).unbind(0),
        _padding_mask([1, 1], 1),
    )
    add(
        "batch 2, 2 heads, length 5, the second sequence fully padded (bool mask)",
        *_random(g, 3, 2, 2, 5, 4).unbind(0),
        _padding_mask([4, 0], 5),
    )
    add(
        "float64, batch 2, 4 heads, length 6, with padding (bool mask)",
        *_random(g, 3, 2, 4, 6, 8, dtype=torch.float64).unbind(0),
        _padding_mask([6, 2], 6),
    )

    mistakes = [
        _mistake(_UNSCALED, divide_by="none"),
        _mistake(_DIVIDED_BY_DK, divide_by="d_k"),
        _mistake(_MASK_IGNORED, mask_mode="ignore"),
        _mistake(_MASK_INVERTED, mask_mode="invert"),
        _mistake(_MASK_AFTER_SOFTMAX, mask_mode="after_softmax"),
        _mistake(_WRONG_AXIS, softmax_dim=-2),
        _mistake(_SCORES_TRANSPOSED, scores_transposed=True),
        _mistake(_FLOAT_AS_BOOL, mask_mode="float_as_bool"),
        _mistake(_MINUS_INF, mask_mode="minus_inf"),
    ]
    return _run_cases(
        "check_attention",
        fn,
        cases,
        _compare_output_and_probs(_MINUS_INF),
        mistakes,
        "compare each step with softmax(Q Kᵀ / √d_k + mask) V on this case's shapes.",
    )


def _causal(length: int) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool).tril()


def check_causal_attention(fn: Callable) -> bool:
    """Grade `fn(query, key, value)` -> output (..., T, d_v), or (output, attention_probs).

    Causal self-attention: query i may attend to keys j <= i only. The
    reference is torch's `scaled_dot_product_attention(..., is_causal=True)`.
    """
    g = torch.Generator().manual_seed(3)
    cases = []

    def add(description, query, key, value):
        expected = scaled_dot_product_attention(query, key, value, _causal(query.shape[-2]))
        cases.append(Case(description, (query, key, value), expected))

    add("one head, length 6, d_k 4", *_random(g, 3, 6, 4).unbind(0))
    add("batch 2, 3 heads, length 9, d_k 8", *_random(g, 3, 2, 3, 9, 8).unbind(0))
    add("batch 1, 1 head, length 1 (a single token)", *_random(g, 3, 1, 1, 1, 4).unbind(0))
    add("batch 2, 2 heads, length 2", *_random(g, 3, 2, 2, 2, 4).unbind(0))
    add(
        "batch 2, 3 heads, length 5, d_k 4, d_v 6",
        *_random(g, 2, 2, 3, 5, 4).unbind(0),
        _random(g, 2, 3, 5, 6),
    )
    add(
        "float64, batch 2, 2 heads, length 7",
        *_random(g, 3, 2, 2, 7, 8, dtype=torch.float64).unbind(0),
    )

    def with_mask(hint: str, make_mask: Callable[[int], torch.Tensor], **variant: Any) -> Mistake:
        return Mistake(hint, lambda q, k, v: _attention(q, k, v, make_mask(q.shape[-2]), **variant))

    lower = (
        "query i may attend to keys j <= i: keep the lower triangle (torch.tril), not the upper."
    )
    mistakes = [
        with_mask(
            "future keys receive attention: query i may attend only to keys j <= i "
            "(a causal mask, torch.tril).",
            _causal,
            mask_mode="ignore",
        ),
        with_mask(lower, lambda n: _causal(n).T),
        with_mask(lower, lambda n: ~_causal(n)),
        with_mask(
            "a token must be able to attend to itself: include the diagonal "
            "(torch.tril keeps it; diagonal=-1 drops it).",
            lambda n: _causal(n).tril(-1),
        ),
        with_mask(_UNSCALED, _causal, divide_by="none"),
        with_mask(_DIVIDED_BY_DK, _causal, divide_by="d_k"),
        with_mask(_MASK_AFTER_SOFTMAX, _causal, mask_mode="after_softmax"),
        with_mask(_WRONG_AXIS, _causal, softmax_dim=-2),
    ]
    return _run_cases(
        "check_causal_attention",
        fn,
        cases,
        _compare_output_and_probs(_MINUS_INF),
        mistakes,
        "build a (T, T) bool mask that is True for j <= i and use it like a padding mask.",
    )


def check_softmax(fn: Callable) -> bool:
    """Grade a numerically stable `fn(scores)` -> softmax over the last dimension.

    The cases include scores around +1000 and -1000, where exp() overflows or
    underflows unless each row's maximum is subtracted first.
    """
    g = torch.Generator().manual_seed(4)
    cases = []

    def add(description, scores):
        cases.append(Case(description, (scores,), torch.softmax(scores, dim=-1)))

    add("4 rows of 6 small scores", _random(g, 4, 6))
    add("one row (a 1-D tensor) of 5 scores", _random(g, 5))
    add("scores around +1000 (exp overflows in float32)", 1000 + 10 * _random(g, 3, 5))
    add("scores around -1000 (exp underflows to 0)", -1000 + 10 * _random(g, 3, 5))
    add(
        "rows on very different scales: one around +500, one around -500",
        torch.stack([500 + _random(g, 4), -500 + _random(g, 4)]),
    )
    add(
        "a batch (2, 3, 4) with a masked key (torch.finfo(float32).min)",
        _random(g, 2, 3, 4).index_fill(-1, torch.tensor([3]), torch.finfo(torch.float32).min),
    )
    add("rows of one score each (3, 1)", _random(g, 3, 1))
    add("float64, 3 rows of 6 scores around 300", 300 + _random(g, 3, 6, dtype=torch.float64))
    add("square scores (4, 4)", _random(g, 4, 4))

    def naive(scores):
        exponentials = scores.exp()
        return exponentials / exponentials.sum(dim=-1, keepdim=True)

    def global_max(scores):
        exponentials = (scores - scores.max()).exp()
        return exponentials / exponentials.sum(dim=-1, keepdim=True)

    def no_keepdim(scores):
        exponentials = (scores - scores.max(dim=-1, keepdim=True).values).exp()
        return exponentials / exponentials.sum(dim=-1)

    def first_dim(scores):
        return torch.softmax(scores, dim=0)

    def minus_min(scores):
        exponentials = (scores - scores.min(dim=-1, keepdim=True).values).exp()
        return exponentials / exponentials.sum(dim=-1, keepdim=True)

    mistakes = [
        Mistake(
            "exp overflows (or underflows to 0/0): subtract each row's maximum before exp; "
            "it cancels between numerator and denominator.",
            naive,
        ),
        Mistake(
            "subtract each row's own maximum (max(dim=-1, keepdim=True)), not the maximum "
            "of the whole tensor: rows far below it underflow to 0/0.",
            global_max,
        ),
        Mistake(
            "subtract the row *maximum*, so that the largest exponent is exp(0) = 1; "
            "subtracting the minimum still overflows.",
            minus_min,
        ),
        Mistake(
            "sum with keepdim=True: without it the (rows,) sums broadcast along the wrong axis.",
            no_keepdim,
        ),
        Mistake(
            "normalise over the last dimension (dim=-1): each row is one distribution.", first_dim
        ),
    ]
    nan_hint = "NaN or inf: exp overflowed or 0/0 appeared; subtract each row's maximum before exp."
    return _run_cases(
        "check_softmax",
        fn,
        cases,
        _tensor_comparison("softmax", nan_hint=nan_hint),
        mistakes,
    )


def check_blockwise_attention(fn: Callable) -> bool:
    """Grade `fn(query, key, value, block_size)` -> output (..., L_q, d_v), without a mask.

    It must equal full attention for any block size (one key, a size that
    does not divide the length, one larger than it), and stay finite for very
    large and very negative scores, where the running maximum matters.
    """
    g = torch.Generator().manual_seed(5)
    cases = []

    def add(description, query, key, value, block_size):
        expected, _ = scaled_dot_product_attention(query, key, value)
        cases.append(Case(description, (query, key, value, block_size), expected))

    add(
        "batch 2, 4 heads, length 50, d 16, blocks of 16 (the last holds 2 keys)",
        *_random(g, 3, 2, 4, 50, 16).unbind(0),
        16,
    )
    add(
        "batch 1, 2 heads, length 12, blocks of 4 (divides the length)",
        *_random(g, 3, 1, 2, 12, 8).unbind(0),
        4,
    )
    add("one head, length 7, blocks of 1 key", *_random(g, 3, 7, 4).unbind(0), 1)
    add(
        "one head, length 10, one block larger than the sequence (64)",
        *_random(g, 3, 10, 4).unbind(0),
        64,
    )
    add(
        "5 queries, 9 keys, d_k 4, d_v 6, blocks of 4",
        _random(g, 5, 4),
        _random(g, 9, 4),
        _random(g, 9, 6),
        4,
    )
    add(
        "large scores (about ±400): exp overflows without the running maximum",
        30 * _random(g, 1, 2, 8, 16),
        30 * _random(g, 1, 2, 8, 16),
        _random(g, 1, 2, 8, 16),
        3,
    )
    negative_key = 1 + 0.1 * _random(g, 2, 9, 16)
    add(
        "very negative scores (about -120): exp underflows unless the maximum starts at -inf",
        -30 + 0.5 * _random(g, 2, 6, 16),
        negative_key,
        _random(g, 2, 9, 16),
        4,
    )
    add(
        "float64, batch 2, 2 heads, length 11, blocks of 5",
        *_random(g, 3, 2, 2, 11, 8, dtype=torch.float64).unbind(0),
        5,
    )

    def blockwise(
        query,
        key,
        value,
        block_size,
        *,
        rescale=True,
        divide=True,
        scale=True,
        start_max=-math.inf,
        last_block=True,
        track_max=True,
    ):
        factor = 1 / math.sqrt(query.shape[-1]) if scale else 1.0
        running_max = torch.full(query.shape[:-1] + (1,), start_max, dtype=query.dtype)
        running_sum = torch.zeros(query.shape[:-1] + (1,), dtype=query.dtype)
        output = torch.zeros(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype)
        length = key.shape[-2]
        stop = length if last_block else length - length % block_size
        for start in range(0, stop, block_size):
            block_scores = (
                query @ key[..., start : start + block_size, :].transpose(-2, -1) * factor
            )
            new_max = torch.maximum(running_max, block_scores.amax(-1, keepdim=True))
            if not track_max:
                new_max = torch.zeros_like(new_max)
            correction = torch.exp(running_max - new_max) if rescale else 1.0
            if not track_max:
                correction = 1.0
            exponentials = torch.exp(block_scores - new_max)
            running_sum = running_sum * correction + exponentials.sum(-1, keepdim=True)
            output = output * correction + exponentials @ value[..., start : start + block_size, :]
            running_max = new_max
        return output / running_sum if divide else output

    def variant(**options: Any) -> Callable:
        return lambda q, k, v, b: blockwise(q, k, v, b, **options)

    mistakes = [
        Mistake(
            "when the maximum grows, rescale both the running sum and the running output "
            "by exp(old_max - new_max) before adding the new block.",
            variant(rescale=False),
        ),
        Mistake("divide the running output by the running sum at the end.", variant(divide=False)),
        Mistake(_UNSCALED, variant(scale=False)),
        Mistake(
            "the last block is shorter: loop over range(0, L_k, block_size) and slice "
            "key[..., start:start + block_size, :], which stops at the end.",
            variant(last_block=False),
        ),
        Mistake(
            "start the running maximum at -inf, not 0: with very negative scores exp(s - 0) "
            "underflows to 0 and the result is 0/0.",
            variant(start_max=0.0),
        ),
        Mistake(
            "subtract the running maximum before exp(): without it large scores overflow.",
            variant(track_max=False),
        ),
    ]
    nan_hint = (
        "NaN or inf: exp overflowed or underflowed. Keep a running maximum that starts at -inf "
        "and subtract it before exp()."
    )
    return _run_cases(
        "check_blockwise_attention",
        fn,
        cases,
        _tensor_comparison("output", _attention_shape_hint, nan_hint),
        mistakes,
    )


# ----------------------------------------------------------------------------
# Heads (chapter: multi-head attention)
# ----------------------------------------------------------------------------


def _split(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_size)


def check_split_heads(fn: Callable) -> bool:
    """Grade `fn(x, num_heads)`: (B, T, H) -> (B, nh, T, hs), head i = hidden dims i*hs .. (i+1)*hs - 1."""
    g = torch.Generator().manual_seed(6)
    cases = []
    for description, shape, heads, dtype in [
        ("batch 3, length 5, hidden 12, 4 heads", (3, 5, 12), 4, torch.float32),
        ("batch 2, length 7, hidden 24, 6 heads", (2, 7, 24), 6, torch.float32),
        ("batch 1, length 4, hidden 15, 3 heads (an odd head count)", (1, 4, 15), 3, torch.float32),
        ("batch 2, length 3, hidden 8, 1 head", (2, 3, 8), 1, torch.float32),
        ("batch 2, length 1 (a single token), hidden 12, 3 heads", (2, 1, 12), 3, torch.float32),
        ("float64, batch 2, length 6, hidden 20, 5 heads", (2, 6, 20), 5, torch.float64),
    ]:
        x = _random(g, *shape, dtype=dtype)
        cases.append(Case(description, (x, heads), _split(x, heads)))

    def shape_hint(expected: torch.Size, got: torch.Size) -> str:
        batch, heads, length, head_size = expected
        if tuple(got) == (batch, length, heads, head_size):
            return (
                "the shape (B, T, nh, hs) still needs the head axis moved forward: transpose(1, 2)."
            )
        return f"the result must have shape (B, nh, T, hs) = {_fmt_shape(expected)}."

    def interleaved(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, length, hidden // heads, heads).permute(0, 3, 1, 2)

    def no_transpose(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, heads, length, hidden // heads)

    def wrong_permute(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, length, heads, hidden // heads).permute(0, 2, 3, 1).transpose(2, 3)

    mistakes = [
        Mistake(
            "reshaping straight to (B, nh, T, hs) mixes tokens and heads: reshape to "
            "(B, T, nh, hs) first, then move the head axis forward (transpose(1, 2)).",
            no_transpose,
        ),
        Mistake(
            "head i owns a contiguous chunk of hs hidden dimensions: reshape to "
            "(B, T, nh, hs), not (B, T, hs, nh).",
            interleaved,
        ),
        Mistake(
            "the heads are right but tokens and features are swapped inside each head: "
            "permute(0, 2, 1, 3).",
            wrong_permute,
        ),
    ]
    return _run_cases(
        "check_split_heads",
        fn,
        cases,
        _tensor_comparison("output", shape_hint),
        mistakes,
    )


def check_merge_heads(fn: Callable) -> bool:
    """Grade `fn(x)`: (B, nh, T, hs) -> (B, T, H), heads glued end to end (the inverse of split_heads).

    Most inputs are contiguous, like the context `probs @ value` that an
    attention layer merges; after the transpose they are not, so `view`
    fails there and `reshape` is needed. One input comes straight from a
    split.
    """
    g = torch.Generator().manual_seed(7)
    cases = []
    for description, shape, dtype in [
        ("batch 3, 4 heads, length 5, head size 3", (3, 4, 5, 3), torch.float32),
        ("batch 2, 6 heads, length 7, head size 4", (2, 6, 7, 4), torch.float32),
        (
            "batch 1, 3 heads, length 4, head size 5 (an odd head count)",
            (1, 3, 4, 5),
            torch.float32,
        ),
        ("batch 2, 1 head, length 3, head size 8", (2, 1, 3, 8), torch.float32),
        ("batch 2, 3 heads, length 1 (a single token), head size 4", (2, 3, 1, 4), torch.float32),
        ("float64, batch 2, 5 heads, length 6, head size 4", (2, 5, 6, 4), torch.float64),
    ]:
        x = _random(g, *shape, dtype=dtype)
        cases.append(Case(description, (x,), _merge(x)))
    split = _split(_random(g, 2, 4, 12), 3)
    cases.append(
        Case(
            "the output of split_heads: batch 2, 3 heads, length 4, head size 4",
            (split,),
            _merge(split),
        )
    )

    def shape_hint(expected: torch.Size, got: torch.Size) -> str:
        if len(got) == 4:
            return "glue the heads back together: reshape (B, T, nh, hs) to (B, T, nh * hs)."
        return f"the result must have shape (B, T, H) = {_fmt_shape(expected)}."

    def no_transpose(x):
        batch, heads, length, head_size = x.shape
        return x.reshape(batch, length, heads * head_size)

    def interleaved(x):
        batch, heads, length, head_size = x.shape
        return x.permute(0, 2, 3, 1).reshape(batch, length, heads * head_size)

    mistakes = [
        Mistake(
            "move the head axis back next to the head size before merging: "
            "transpose(1, 2) to (B, T, nh, hs), then reshape.",
            no_transpose,
        ),
        Mistake(
            "glue whole heads end to end: (B, T, nh, hs), i.e. permute(0, 2, 1, 3), "
            "not (B, T, hs, nh).",
            interleaved,
        ),
    ]
    return _run_cases(
        "check_merge_heads",
        fn,
        cases,
        _tensor_comparison("output", shape_hint),
        mistakes,
    )


def _multi_head_attention(
    hidden_states: torch.Tensor,
    attention: MultiHeadSelfAttention,
    token_mask: torch.Tensor,
    *,
    scale: str = "head_size",
    use_mask: bool = True,
    use_bias: bool = True,
    interleaved_heads: bool = False,
    merge: str = "heads_first",
    softmax_dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference multi-head self-attention, or one of its classic mistakes."""
    batch, length, hidden = hidden_states.shape
    heads = attention.num_attention_heads
    head_size = hidden // heads

    def project(linear: torch.nn.Linear) -> torch.Tensor:
        projected = F.linear(hidden_states, linear.weight, linear.bias if use_bias else None)
        if interleaved_heads:
            return projected.reshape(batch, length, head_size, heads).permute(0, 3, 1, 2)
        return _split(projected, heads)  # (B, nh, T, hs)

    query, key, value = project(attention.query), project(attention.key), project(attention.value)
    scores = query @ key.transpose(-2, -1)  # (B, nh, T, T)
    scores = scores / math.sqrt({"head_size": head_size, "hidden": hidden, "none": 1}[scale])
    if use_mask:
        scores = scores + _to_additive(token_mask[:, None, None, :], scores.dtype)
    probs = scores.softmax(dim=softmax_dim)
    context = probs @ value  # (B, nh, T, hs)
    if merge == "features_first":
        merged = context.permute(0, 2, 3, 1).reshape(batch, length, hidden)
    else:
        merged = _merge(context)
    return merged, probs


def check_multi_head_attention(fn: Callable) -> bool:
    """Grade `fn(hidden_states, attention, token_mask)` -> context (B, T, H), or (context, probs).

    `attention` is a `bertcourse.attention.MultiHeadSelfAttention` whose
    `query`, `key`, `value` layers hold the weights; `token_mask` is (B, T)
    bool, True at real tokens. The reference is the module itself (eager
    path, so it can return the probabilities (B, nh, T, T)).
    """
    g = torch.Generator().manual_seed(8)
    cases = []

    def add(description, batch, length, hidden, heads, lengths, dtype=torch.float32):
        config = BertConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
        )
        with torch.random.fork_rng(devices=[]):  # leave the learner's random state alone
            torch.manual_seed(len(cases))
            module = MultiHeadSelfAttention(config).to(dtype).eval()
        with torch.no_grad():  # non-zero biases, so that forgetting them shows
            for linear in (module.query, module.key, module.value):
                linear.bias.normal_(0.0, 0.5, generator=g)
        hidden_states = _random(g, batch, length, hidden, dtype=dtype)
        token_mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
        additive = _to_additive(token_mask[:, None, None, :], dtype)
        with torch.no_grad():
            expected = module(hidden_states, additive, output_attentions=True)
        cases.append(Case(description, (hidden_states, module, token_mask), expected))

    add("batch 2, length 6, hidden 12, 3 heads, with padding", 2, 6, 12, 3, [6, 4])
    add("batch 3, length 5, hidden 16, 4 heads, no padding", 3, 5, 16, 4, [5, 5, 5])
    add("batch 2, length 4, hidden 15, 3 heads of 5 (odd sizes), with padding", 2, 4, 15, 3, [2, 4])
    add("batch 2, length 5, hidden 8, 1 head, with padding", 2, 5, 8, 1, [5, 3])
    add("batch 1, length 1 (a single token), hidden 12, 2 heads", 1, 1, 12, 2, [1])
    add(
        "batch 2, length 4, hidden 8, 2 heads, the second sequence fully padded", 2, 4, 8, 2, [4, 0]
    )
    add(
        "float64, batch 2, length 7, hidden 24, 6 heads, with padding",
        2,
        7,
        24,
        6,
        [7, 3],
        torch.float64,
    )

    def variant(**options: Any) -> Callable:
        return lambda h, a, m: _multi_head_attention(h, a, m, **options)

    mistakes = [
        Mistake(
            "the scores look unscaled: divide by sqrt(d_k), the head size H / nh.",
            variant(scale="none"),
        ),
        Mistake(
            "the scores are divided by sqrt(H): scale by sqrt(d_k) of one head, d_k = H / nh.",
            variant(scale="hidden"),
        ),
        Mistake(_MASK_IGNORED, variant(use_mask=False)),
        Mistake(
            "the projections' biases are missing: each of query, key, value is a "
            "Linear layer, x Wᵀ + b.",
            variant(use_bias=False),
        ),
        Mistake(
            "head i owns rows i·d_k .. (i+1)·d_k - 1 of each weight: reshape them to "
            "(nh, d_k, H), not (d_k, nh, H).",
            variant(interleaved_heads=True),
        ),
        Mistake(
            "glue the heads end to end: the context must be (B, T, nh, d_k) before it is "
            "flattened to (B, T, H).",
            variant(merge="features_first"),
        ),
        Mistake(_WRONG_AXIS, variant(softmax_dim=-2)),
    ]
    return _run_cases(
        "check_multi_head_attention",
        fn,
        cases,
        _compare_output_and_probs(_MINUS_INF),
        mistakes,
    )


# ----------------------------------------------------------------------------
# LayerNorm, GELU, parameter count (chapter: the encoder)
# ----------------------------------------------------------------------------


def check_layer_norm(fn: Callable) -> bool:
    """Grade `fn(x, weight, bias, eps)`: LayerNorm over the last dimension, as `torch.nn.LayerNorm`.

    Biased variance (divide by H), eps inside the square root, weight and
    bias per feature.
    """
    g = torch.Generator().manual_seed(9)
    cases = []

    def add(description, x, eps):
        hidden = x.shape[-1]
        weight = 1 + 0.5 * _random(g, hidden, dtype=x.dtype)
        bias = 0.5 * _random(g, hidden, dtype=x.dtype)
        expected = F.layer_norm(x, (hidden,), weight, bias, eps)
        cases.append(Case(description, (x, weight, bias, eps), expected))

    add(
        "batch 2, length 3, hidden 8, mean 3 and std 5, eps 1e-12",
        3 + 5 * _random(g, 2, 3, 8),
        1e-12,
    )
    add("one vector (1-D), hidden 16, eps 1e-5", _random(g, 16), 1e-5)
    add(
        "batch 2, length 2, hidden 6, with a constant vector (variance 0), eps 1e-12",
        torch.cat([_random(g, 1, 2, 6), torch.full((1, 2, 6), 2.0)]),
        1e-12,
    )
    add("hidden 10, small variance (std 0.1) and a large eps 0.1", 0.1 * _random(g, 4, 10), 0.1)
    add(
        "float64, batch 2, length 5, hidden 12, eps 1e-12",
        _random(g, 2, 5, 12, dtype=torch.float64),
        1e-12,
    )
    add(
        "float64, batch 3, hidden 32, mean 1e6 and std 1, eps 1e-12",
        1e6 + _random(g, 3, 32, dtype=torch.float64),
        1e-12,
    )
    add("batch 3, length 4, hidden 5", _random(g, 3, 4, 5), 1e-12)

    def norm(
        x,
        weight,
        bias,
        eps,
        *,
        unbiased=False,
        eps_inside=True,
        swap=False,
        dim=-1,
        center=True,
        one_pass=False,
        affine=True,
    ):
        mean = x.mean(dim=dim, keepdim=True)
        if one_pass:
            variance = (x * x).mean(dim=dim, keepdim=True) - mean**2
        else:
            variance = x.var(dim=dim, keepdim=True, unbiased=unbiased)
        centered = x - mean if center else x
        if eps_inside:
            normalised = centered / torch.sqrt(variance + eps)
        else:
            normalised = centered / (torch.sqrt(variance) + eps)
        if not affine:
            return normalised
        return normalised * bias + weight if swap else normalised * weight + bias

    def variant(**options: Any) -> Callable:
        return lambda x, w, b, e: norm(x, w, b, e, **options)

    mistakes = [
        Mistake(
            "use the biased variance: divide by H (unbiased=False), not H - 1.",
            variant(unbiased=True),
        ),
        Mistake(
            "eps belongs inside the square root: (x - mean) / sqrt(var + eps).",
            variant(eps_inside=False),
        ),
        Mistake(
            "weight (the gain) multiplies, bias is added: weight * x_hat + bias.",
            variant(swap=True),
        ),
        Mistake(
            "subtract the mean before dividing by the standard deviation.", variant(center=False)
        ),
        Mistake(
            "var = E[x²] - E[x]² loses all precision when the mean is large: "
            "subtract the mean first, then average the squares.",
            variant(one_pass=True),
        ),
        Mistake("apply the weight and the bias after normalising.", variant(affine=False)),
        Mistake(
            "normalise over the last dimension (dim=-1), the features of one token, "
            "with keepdim=True.",
            variant(dim=0),
        ),
    ]
    nan_hint = "NaN for a constant vector: its variance is 0; add eps inside the square root."
    return _run_cases(
        "check_layer_norm",
        fn,
        cases,
        _tensor_comparison("output", nan_hint=nan_hint),
        mistakes,
    )


def check_gelu(fn: Callable) -> bool:
    """Grade `fn(x)`: the exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), as `F.gelu` and BERT's "gelu"."""
    g = torch.Generator().manual_seed(10)
    cases = []
    for description, x in [
        ("201 points from -6 to 6 (float32)", torch.linspace(-6, 6, 201)),
        ("random (2, 3, 4) tensor with std 3", 3 * _random(g, 2, 3, 4)),
        ("a 0-d tensor, 0.5", torch.tensor(0.5)),
        ("large inputs, ±20 and ±50", torch.tensor([-50.0, -20.0, 20.0, 50.0])),
        ("float64, 2001 points from -8 to 8", torch.linspace(-8, 8, 2001, dtype=torch.float64)),
    ]:
        cases.append(Case(description, (x,), F.gelu(x)))

    def phi(x):
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    mistakes = [
        Mistake(
            "this is the tanh approximation ('gelu_new'); BERT's 'gelu' is the exact form "
            "x·Φ(x) = x/2·(1 + erf(x/√2)).",
            lambda x: F.gelu(x, approximate="tanh"),
        ),
        Mistake(
            "that is the sigmoid approximation x·σ(1.702x); use the exact x/2·(1 + erf(x/√2)).",
            lambda x: x * torch.sigmoid(1.702 * x),
        ),
        Mistake(
            "that is ReLU: GELU multiplies x by Φ(x), the normal CDF, instead of a hard step.",
            torch.relu,
        ),
        Mistake(
            "Φ(x) = (1 + erf(x/√2)) / 2: divide x by sqrt(2) inside erf.",
            lambda x: x * 0.5 * (1 + torch.erf(x)),
        ),
        Mistake(
            "Φ(x) = (1 + erf(x/√2)) / 2: the factor 1/2 is missing.",
            lambda x: x * (1 + torch.erf(x / math.sqrt(2))),
        ),
        Mistake("GELU(x) = x·Φ(x): multiply Φ(x) by x.", phi),
    ]
    return _run_cases(
        "check_gelu",
        fn,
        cases,
        _tensor_comparison("output"),
        mistakes,
        "GELU(x) = x·Φ(x) = x/2·(1 + erf(x/√2)).",
    )


def _parameter_parts(config: BertConfig) -> dict[str, int]:
    """Parameters of BertModel(config), part by part (with the pooler)."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return {
        "word": config.vocab_size * hidden,
        "position": config.max_position_embeddings * hidden,
        "segment": config.type_vocab_size * hidden,
        "embedding_norm": 2 * hidden,
        "attention_weights": layers * 4 * hidden * hidden,
        "attention_biases": layers * 4 * hidden,
        "ffn_weights": layers * 2 * hidden * inter,
        "ffn_biases": layers * (inter + hidden),
        "layer_norms": layers * 2 * 2 * hidden,
        "pooler": hidden * hidden + hidden,
    }


def _model_parameter_count(config: BertConfig) -> int:
    return _count_model_parameters(json.dumps(config.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _count_model_parameters(config_json: str) -> int:
    """Built once per config (keyed by its JSON): BERT-base takes a moment even on meta."""
    from .model import BertModel

    with torch.device("meta"):  # shapes only, no memory
        return BertModel(BertConfig(**json.loads(config_json))).num_parameters()


def check_parameter_count(fn: Callable) -> bool:
    """Grade `fn(config)` -> the number of parameters of `BertModel(config)` (with the pooler), an int."""
    configs = [
        ("the 'tiny' size", BertConfig.from_name("tiny")),
        ("the 'mini' size", BertConfig.from_name("mini")),
        ("BERT-base", BertConfig.from_name("base")),
        (
            "an odd config: vocab 1000, H 96, 3 heads, I 100, 5 layers, 300 positions, 3 segments",
            BertConfig(
                vocab_size=1000,
                hidden_size=96,
                num_attention_heads=3,
                intermediate_size=100,
                num_hidden_layers=5,
                max_position_embeddings=300,
                type_vocab_size=3,
            ),
        ),
        (
            "one layer: vocab 50, H 8, 1 head, I 20, 16 positions, 1 segment",
            BertConfig(
                vocab_size=50,
                hidden_size=8,
                num_attention_heads=1,
                intermediate_size=20,
                num_hidden_layers=1,
                max_position_embeddings=16,
                type_vocab_size=1,
            ),
        ),
    ]
    cases = [Case(d, (config,), _model_parameter_count(config)) for d, config in configs]

    def compare(expected: int, got: Any) -> Problem | None:
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
            return Problem([f"expected a whole number (int), got {got!r}"], "return an int.")
        if int(got) == expected:
            return None
        return Problem(
            [
                f"expected {expected:,} parameters, got {int(got):,} "
                f"(off by {int(got) - expected:+,})"
            ]
        )

    def without(*parts: str, extra: Callable[[BertConfig], int] | None = None) -> Callable:
        def count(config: BertConfig) -> int:
            kept = {k: v for k, v in _parameter_parts(config).items() if k not in parts}
            return sum(kept.values()) + (extra(config) if extra else 0)

        return count

    def ffn_4h(config: BertConfig) -> int:
        return without()(config.replace(intermediate_size=4 * config.hidden_size))

    def one_norm_per_layer(config: BertConfig) -> int:
        return without()(config) - config.num_hidden_layers * 2 * config.hidden_size

    def norms_without_bias(config: BertConfig) -> int:
        return without()(config) - config.hidden_size * (1 + 2 * config.num_hidden_layers)

    mistakes = [
        Mistake(
            "the pooler is missing: dense H×H + bias H on the [CLS] vector.", without("pooler")
        ),
        Mistake(
            "the LayerNorms are missing: each has a weight and a bias of size H; one after "
            "the embeddings and two in every layer.",
            without("embedding_norm", "layer_norms"),
        ),
        Mistake(
            "each layer has two LayerNorms (after attention and after the feed-forward).",
            one_norm_per_layer,
        ),
        Mistake(
            "each LayerNorm has a bias as well as a weight: 2H parameters.", norms_without_bias
        ),
        Mistake("the LayerNorm after the embeddings is missing (2H).", without("embedding_norm")),
        Mistake(
            "the LayerNorms inside the layers are missing (4H per layer).", without("layer_norms")
        ),
        Mistake(
            "the biases of the Linear layers are missing.",
            without("attention_biases", "ffn_biases", extra=lambda c: -c.hidden_size),
        ),
        Mistake(
            "read the feed-forward width from config.intermediate_size; it is not always 4H.",
            ffn_4h,
        ),
        Mistake(
            "the attention block has four H×H projections: query, key, value and the output dense.",
            without(extra=lambda c: -c.num_hidden_layers * (c.hidden_size**2 + c.hidden_size)),
        ),
        Mistake(
            "the position and segment tables are missing: max_position_embeddings × H and "
            "type_vocab_size × H.",
            without("position", "segment"),
        ),
        Mistake(
            "the segment (token type) table is missing: type_vocab_size × H.", without("segment")
        ),
        Mistake(
            "the feed-forward biases are missing: I after the widening, H after the "
            "projection back.",
            without("ffn_biases"),
        ),
    ]
    return _run_cases(
        "check_parameter_count",
        fn,
        cases,
        compare,
        mistakes,
        "compare part by part: embeddings (V + P + S)·H + 2H; per layer 4H² + 4H (attention), "
        "2HI + I + H (feed-forward), 4H (two LayerNorms); pooler H² + H.",
    )


# ----------------------------------------------------------------------------
# Pooling and heads of a real model (chapter: real weights)
# ----------------------------------------------------------------------------


def _mean_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)


def check_mean_pooling(fn: Callable) -> bool:
    """Grade `fn(last_hidden_state, attention_mask)` -> (B, H), the mean over the real tokens only.

    attention_mask is (B, T) with 1 (or True) at real tokens. Not normalised:
    L2-normalising is a separate step. A row without any real token gives
    zeros, not NaN.
    """
    g = torch.Generator().manual_seed(11)
    cases = []

    def add(description, hidden, mask):
        cases.append(Case(description, (hidden, mask), _mean_pooling(hidden, mask)))

    def right_padding(lengths, length):
        return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()

    add(
        "batch 3, length 6, hidden 4, right padding, int mask",
        _random(g, 3, 6, 4),
        right_padding([6, 4, 2], 6),
    )
    add("batch 2, length 5, hidden 3, no padding", _random(g, 2, 5, 3), right_padding([5, 5], 5))
    add("batch 1, length 1 (a single token), hidden 8", _random(g, 1, 1, 8), right_padding([1], 1))
    add(
        "batch 2, length 4, hidden 5, bool mask",
        _random(g, 2, 4, 5),
        right_padding([3, 1], 4).bool(),
    )
    add(
        "batch 3, length 5, hidden 4, left padding (mask 0 0 1 1 1)",
        _random(g, 3, 5, 4),
        right_padding([5, 3, 2], 5).flip(-1),
    )
    add(
        "batch 2, length 4, hidden 3, the second row fully padded (no real token)",
        _random(g, 2, 4, 3),
        right_padding([4, 0], 4),
    )
    add(
        "float64, batch 2, length 7, hidden 6, right padding",
        _random(g, 2, 7, 6, dtype=torch.float64),
        right_padding([7, 2], 7),
    )

    def shape_hint(expected: torch.Size, got: torch.Size) -> str:
        return "average over the tokens (dim=1), keeping one vector per sequence: (B, H)."

    def first_tokens(hidden, mask):
        lengths = mask.long().sum(1)
        return torch.stack(
            [h[: max(int(n), 1)].mean(0) for h, n in zip(hidden, lengths, strict=True)]
        )

    masked_sum = lambda h, m: (h * m.unsqueeze(-1).to(h.dtype)).sum(1)  # noqa: E731
    mistakes = [
        Mistake(
            "padding tokens are included in the average: multiply by the mask, then "
            "divide by the number of real tokens.",
            lambda h, m: h.mean(dim=1),
        ),
        Mistake(
            "divide by the number of real tokens, attention_mask.sum(1), not by the length T.",
            lambda h, m: masked_sum(h, m) / h.shape[1],
        ),
        Mistake("divide the masked sum by the number of real tokens.", masked_sum),
        Mistake(
            "your vectors have unit length: return the plain mean here; L2-normalising is a "
            "separate step (F.normalize).",
            lambda h, m: F.normalize(_mean_pooling(h, m), dim=-1),
        ),
        Mistake(
            "the real tokens are where the mask is 1, wherever they are: with left padding "
            "they are not the first ones.",
            first_tokens,
        ),
        Mistake(
            "that is the first token's vector ([CLS] pooling), not the mean of the real tokens.",
            lambda h, m: h[:, 0],
        ),
    ]
    nan_hint = (
        "NaN for a row without real tokens: 0 / 0. Clamp the token count to at least 1 "
        "(count.clamp(min=1)), which gives a zero vector."
    )
    return _run_cases(
        "check_mean_pooling",
        fn,
        cases,
        _tensor_comparison("pooled output", shape_hint, nan_hint),
        mistakes,
    )


def _sep_heads(
    attentions,
    attention_mask,
    *,
    sep="last_real",
    real_queries_only=True,
    pooled=True,
    pick="argmax",
):
    """Reference strongest [SEP] heads, or a classic mistake."""
    lengths = attention_mask.long().sum(1)  # (B,)
    rows = torch.arange(attention_mask.shape[0])
    length = attention_mask.shape[1]
    sep_position = {
        "last_real": lengths - 1,
        "last": torch.full_like(lengths, length - 1),
        "first": torch.zeros_like(lengths),
    }[sep]
    result = []
    for layer_probs in attentions:  # (B, nh, T, T)
        to_sep = layer_probs[rows, :, :, sep_position]  # (B, nh, T)
        queries = attention_mask[:, None, :].to(to_sep.dtype)  # (B, 1, T)
        if not real_queries_only:
            queries = torch.ones_like(queries)
        if pooled:
            per_head = (to_sep * queries).sum(dim=(0, 2)) / queries.sum()  # (nh,)
        else:
            per_head = ((to_sep * queries).sum(2) / queries.sum(2)).mean(0)  # mean of means
        index = per_head.argmax() if pick == "argmax" else per_head.argmin()
        result.append((int(index), float(per_head[index])))
    return result


def check_strongest_sep_heads(fn: Callable) -> bool:
    """Grade `fn(attentions, attention_mask)` -> [(head, score)] per layer.

    attentions: a tuple with one (B, nh, T, T) tensor of probabilities per
    layer; attention_mask: (B, T) of 1/0. [SEP] is the last real token of
    each row; score = attention on it averaged over every real query of every
    sentence; head = the head with the largest score.
    """
    g = torch.Generator().manual_seed(12)
    cases = []

    def add(description, layers, heads, lengths, length, dtype=torch.float32):
        mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
        attentions = []
        for _ in range(layers):
            scores = 2 * _random(g, len(lengths), heads, length, length, dtype=dtype)
            scores = scores + _to_additive(mask.bool()[:, None, None, :], dtype)
            attentions.append(scores.softmax(-1))
        attentions = tuple(attentions)
        cases.append(Case(description, (attentions, mask), _sep_heads(attentions, mask)))

    add("2 layers, batch 2, 4 heads, lengths 7 and 4 (padded)", 2, 4, [7, 4], 7)
    add("1 layer, batch 1, 3 heads, length 5, no padding", 1, 3, [5], 5)
    add("3 layers, batch 3, 2 heads, lengths 6, 2 and 4", 3, 2, [6, 2, 4], 6)
    add("2 layers, batch 2, 5 heads, lengths 9 and 3", 2, 5, [9, 3], 9)
    add("float64, 2 layers, batch 2, 3 heads, lengths 5 and 5", 2, 3, [5, 5], 5, torch.float64)

    def compare(expected: list, got: Any) -> Problem | None:
        try:
            pairs = [(int(head), float(score)) for head, score in got]
        except (TypeError, ValueError):
            return Problem(
                [f"expected a list of (head, score) pairs, got {type(got).__name__}"],
                "return one (head, score) tuple per layer, e.g. [(3, 0.21), (0, 0.4)].",
            )
        if len(pairs) != len(expected):
            return Problem(
                [f"expected {len(expected)} (head, score) pairs, one per layer, got {len(pairs)}"],
                "loop over the layers: one pair per layer.",
            )
        for layer, ((head, score), (got_head, got_score)) in enumerate(
            zip(expected, pairs, strict=True)
        ):
            if head != got_head or not math.isclose(score, got_score, rel_tol=1e-5, abs_tol=1e-6):
                return Problem(
                    [
                        f"layer {layer}: expected head {head} with score {score:.5f}, "
                        f"got head {got_head} with score {got_score:.5f}"
                    ]
                )
        return None

    def variant(**options: Any) -> Callable:
        return lambda a, m: _sep_heads(a, m, **options)

    mistakes = [
        Mistake(
            "[SEP] is the last *real* token, at position length - 1 of each row; in a padded "
            "row that is not the last column T - 1.",
            variant(sep="last"),
        ),
        Mistake(
            "average over the real queries only: padded query rows must not count.",
            variant(real_queries_only=False),
        ),
        Mistake(
            "weight every real query equally: sum over the real queries of all sentences, "
            "then divide by their number (a mean of per-sentence means favours short "
            "sentences).",
            variant(pooled=False),
        ),
        Mistake(
            "the strongest head is the one with the *largest* average (argmax).",
            variant(pick="argmin"),
        ),
        Mistake(
            "position 0 is [CLS]; [SEP] is the last real token (length - 1).", variant(sep="first")
        ),
    ]
    return _run_cases("check_strongest_sep_heads", fn, cases, compare, mistakes)


# ----------------------------------------------------------------------------
# WordPiece (chapter: tokenization)
# ----------------------------------------------------------------------------

_WORDPIECE_VOCAB = (
    "[UNK]",
    "<unk>",
    "un",
    "##aff",
    "##able",
    "##a",
    "##ff",
    "aff",
    "able",
    "play",
    "##ing",
    "##ed",
    "##s",
    "p",
    "##l",
    "##ay",
    "the",
    "t",
    "##h",
    "##e",
    "x",
    "##x",
    "a",
    "##b",
    "ab",
    "##bc",
    "##c",
    "d",
    "##play",
)


def _wordpiece_reference(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    from .tokenization import WordpieceTokenizer

    tokenizer = WordpieceTokenizer(vocab, unk_token, max_input_chars_per_word)
    return tokenizer.tokenize_word(word)


def _wordpiece_variant(
    word,
    vocab,
    unk_token="[UNK]",
    max_input_chars_per_word=100,
    *,
    longest=True,
    prefix_continuations=True,
    prefix_first=False,
    whole_word_unk=True,
    max_check=">",
    honour_unk_token=True,
):
    """Greedy WordPiece, or one of its classic mistakes."""
    unk = unk_token if honour_unk_token else "[UNK]"
    too_long = (
        len(word) > max_input_chars_per_word
        if max_check == ">"
        else len(word) >= max_input_chars_per_word
        if max_check == ">="
        else False
    )
    if too_long:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        piece = None
        for end in ends:
            candidate = word[start:end]
            if (start > 0 and prefix_continuations) or (start == 0 and prefix_first):
                candidate = "##" + candidate
            if candidate in vocab:
                piece = candidate
                break
        if piece is None:
            if whole_word_unk:
                return [unk]
            pieces.append(unk)
            start += 1
            continue
        pieces.append(piece)
        start = end
    return pieces


def check_wordpiece(fn: Callable) -> bool:
    """Grade `fn(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100)` -> list of pieces.

    Greedy longest-match-first, continuation pieces prefixed with "##"; if
    any part of the word cannot be matched, or the word is longer than
    max_input_chars_per_word, the whole word becomes unk_token. `vocab` may
    be a set or a dict (token -> id). Reference:
    `bertcourse.tokenization.WordpieceTokenizer`.
    """
    vocab_set = set(_WORDPIECE_VOCAB)
    vocab_dict = {token: index for index, token in enumerate(_WORDPIECE_VOCAB)}
    cases = []

    def add(description, word, vocab, **options):
        expected = _wordpiece_reference(word, vocab, **options)
        cases.append(Case(description, (word, vocab), expected, options))

    add('"unaffable" -> un ##aff ##able (vocab as a set)', "unaffable", vocab_set)
    add('"playing", vocab as a dict (token -> id)', "playing", vocab_dict)
    add('a word that is one vocabulary entry: "the"', "the", vocab_set)
    add(
        'greedy longest match first: "abc" (the vocabulary has a, ab, ##b, ##bc, ##c)',
        "abc",
        vocab_set,
    )
    add('a single character: "x"', "x", vocab_set)
    add('"unq": "q" matches nothing, so the whole word is unknown', "unq", vocab_set)
    add(
        '"playedq" ("q" is unknown) with a custom unk_token "<unk>"',
        "playedq",
        vocab_dict,
        unk_token="<unk>",
    )
    add(
        "a word of 11 characters with max_input_chars_per_word=10",
        "playingplay",
        vocab_set,
        max_input_chars_per_word=10,
    )
    add(
        "a word of exactly max_input_chars_per_word=7 characters: still tokenized",
        "playing",
        vocab_set,
        max_input_chars_per_word=7,
    )
    add('repeated pieces: "xxxx"', "xxxx", vocab_set)

    def compare(expected: list[str], got: Any) -> Problem | None:
        if isinstance(got, str) or not isinstance(got, (list, tuple)):
            return Problem(
                [f"expected a list of strings, got {type(got).__name__} {got!r}"],
                "return a list of pieces, e.g. ['un', '##aff', '##able'].",
            )
        if list(got) == expected:
            return None
        return Problem([f"expected {expected}, got {list(got)}"])

    def variant(**options: Any) -> Callable:
        return lambda word, vocab, **kw: _wordpiece_variant(word, vocab, **kw, **options)

    mistakes = [
        Mistake(
            "take the *longest* prefix in the vocabulary first: try end = len(word), "
            "len(word) - 1, ... down to start + 1.",
            variant(longest=False),
        ),
        Mistake(
            'pieces after the first are looked up with the "##" prefix: "##" + word[start:end].',
            variant(prefix_continuations=False),
        ),
        Mistake(
            'only continuation pieces get "##"; the first piece is looked up as it is.',
            variant(prefix_first=True),
        ),
        Mistake(
            "if any part cannot be matched, the *whole word* becomes the unknown token, "
            "not just the unmatched part.",
            variant(whole_word_unk=False),
        ),
        Mistake(
            "words longer than max_input_chars_per_word become the unknown token.",
            variant(max_check="none"),
        ),
        Mistake(
            "a word of exactly max_input_chars_per_word characters is still tokenized: "
            "the test is len(word) > max_input_chars_per_word.",
            variant(max_check=">="),
        ),
        Mistake(
            "use the unk_token argument, not a hard-coded '[UNK]'.", variant(honour_unk_token=False)
        ),
    ]
    return _run_cases(
        "check_wordpiece",
        fn,
        cases,
        compare,
        mistakes,
        "walk through the word by hand: at each position take the longest piece in the "
        "vocabulary, with '##' after the first.",
    )


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
# BERT's masking (chapter: masked language modelling)
# ----------------------------------------------------------------------------

__all__.append("check_mask_tokens")

# The checker's made-up vocabularies: [PAD] 0, [CLS] 2, [SEP] 3, [MASK] 4, ordinary ids from 5.
_PAD_ID, _CLS_ID, _SEP_ID, _MLM_MASK_ID, _FIRST_ORDINARY_ID = 0, 2, 3, 4, 5
_RATE_STANDARD_ERRORS = 6  # a correct answer falls outside 6 standard errors about once in 10^8


@dataclass(frozen=True)
class _MaskingCase:
    """What a masking answer is judged against: the input and the rules it must follow."""

    input_ids: torch.Tensor
    special: torch.Tensor  # bool, True where nothing may be chosen
    special_as_ints: bool  # the learner was given the mask as 0/1 integers
    vocab_size: int
    mlm_probability: float
    check_rates: bool = False
    calls: int = 1  # 2: called twice with generators seeded alike; the answers must be equal


def _masking_batch(
    generator: torch.Generator, batch: int, length: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] [PAD]...: the first row full, the last half padded, others random."""
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    lengths[-1] = max(length // 2, 3)
    lengths[0] = length
    positions = torch.arange(length)[None, :]  # (1, T)
    ids = torch.randint(_FIRST_ORDINARY_ID, vocab_size, (batch, length), generator=generator)
    ids[:, 0] = _CLS_ID
    ids = torch.where(positions == (lengths - 1)[:, None], _SEP_ID, ids)  # (B, T)
    padding = positions >= lengths[:, None]  # (B, T)
    ids = ids.masked_fill(padding, _PAD_ID)
    special = padding | (ids == _CLS_ID) | (ids == _SEP_ID)
    return ids, special


def _masking_problem(spec: _MaskingCase, answer: Any) -> Problem | None:
    """The first rule a masking answer breaks, with a hint that names it."""
    if spec.calls == 1:
        return _single_masking_problem(spec, answer)
    first, second = answer
    problem = _single_masking_problem(spec, first)
    if problem is None and not all(torch.equal(a, b) for a, b in zip(first, second, strict=True)):
        return Problem(
            ["two calls with generators seeded alike gave different results"],
            "draw every random number from the `generator` argument: torch.rand(..., "
            "generator=generator), torch.randint(..., generator=generator).",
        )
    return problem


def _single_masking_problem(spec: _MaskingCase, answer: Any) -> Problem | None:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return Problem(
            [f"expected a pair (inputs, labels), got {type(answer).__name__}"],
            "return two tensors: the corrupted inputs and the labels.",
        )
    original, special = spec.input_ids, spec.special
    for what, value in zip(("inputs", "labels"), answer, strict=True):
        if not isinstance(value, torch.Tensor) or value.shape != original.shape:
            got = (
                _fmt_shape(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            )
            return Problem(
                [f"{what}: expected a tensor of shape {_fmt_shape(original.shape)}, got {got}"],
                f"return {what} with one entry per token: the shape of input_ids.",
            )
        if value.dtype != torch.long:
            return Problem(
                [f"{what} has dtype {value.dtype}, expected torch.int64 (token ids)"],
                "keep the ids as integers (torch.long): masked_fill, torch.where and clone do.",
            )
    inputs, labels = answer
    labelled = labels != -100  # (B, T): the positions chosen for prediction
    candidates = int((~special).sum())
    if candidates >= 10 and labelled.sum() > 0.9 * candidates:
        return Problem(
            [f"{int(labelled.sum()):,} of {original.numel():,} positions have a label (not -100)"],
            "labels must be -100 wherever the token was not chosen, so that the loss ignores "
            "those positions; only the chosen ~15% carry their original id.",
        )
    if bool((labelled & special).any()):
        index = [int(i) for i in (labelled & special).nonzero()[0]]
        as_ints = (
            " (here 0/1 integers: use special_tokens_mask.bool())" if spec.special_as_ints else ""
        )
        return Problem(
            [
                f"the special position {_fmt_index(index)} (id {int(original[tuple(index)])}) was "
                "chosen: [CLS], [SEP] and padding are never predicted"
            ],
            f"never choose a position where special_tokens_mask is True{as_ints}: "
            "exclude those positions from the draw.",
        )
    wrong_label = labelled & (labels != original)
    if bool(wrong_label.any()):
        index = [int(i) for i in wrong_label.nonzero()[0]]
        corrupted = bool((labels[wrong_label] == inputs[wrong_label]).all())
        return Problem(
            [
                f"labels{_fmt_index(index)} = {int(labels[tuple(index)])}, but the original token "
                f"there is {int(original[tuple(index)])}"
            ],
            "labels must hold the original token id, not the corrupted input: take them from "
            "input_ids before replacing anything."
            if corrupted
            else "at a chosen position the label is the original id; elsewhere it is -100.",
        )
    changed = ~labelled & (inputs != original)
    if bool(changed.any()):
        index = [int(i) for i in changed.nonzero()[0]]
        return Problem(
            [
                f"inputs{_fmt_index(index)} changed from {int(original[tuple(index)])} to "
                f"{int(inputs[tuple(index)])} although its label is -100 (not chosen); "
                f"{int(changed.sum()):,} unchosen tokens changed in all"
            ],
            "only chosen tokens may change: apply [MASK] and the random replacement to chosen "
            "positions only (combine each draw with the chosen mask).",
        )
    out_of_range = (inputs < 0) | (inputs >= spec.vocab_size)
    if bool(out_of_range.any()):
        index = [int(i) for i in out_of_range.nonzero()[0]]
        return Problem(
            [
                f"inputs{_fmt_index(index)} = {int(inputs[tuple(index)])} is not an id in "
                f"[0, {spec.vocab_size})"
            ],
            "draw random replacements with torch.randint(vocab_size, shape, generator=generator).",
        )
    if spec.check_rates:
        return _masking_rates_problem(spec, inputs, labelled, candidates)
    return None


def _masking_rates_problem(
    spec: _MaskingCase, inputs: torch.Tensor, labelled: torch.Tensor, candidates: int
) -> Problem | None:
    """The chosen rate and the 80/10/10 split, within a few standard errors."""
    chosen = int(labelled.sum())
    rate = chosen / candidates
    p = spec.mlm_probability
    if abs(rate - p) > _RATE_STANDARD_ERRORS * math.sqrt(p * (1 - p) / candidates):
        fixed_rate = abs(rate - 0.15) < 0.01 and abs(p - 0.15) > 0.05
        return Problem(
            [
                f"{rate:.1%} of the {candidates:,} ordinary tokens were chosen; expected about "
                f"{p:.0%} (mlm_probability={p})"
            ],
            f"use the mlm_probability argument ({p}) instead of a fixed 0.15."
            if fixed_rate
            else "choose each ordinary token with probability mlm_probability: "
            "torch.rand(shape, generator=generator) < mlm_probability.",
        )
    corrupted = inputs[labelled]
    as_mask = corrupted == _MLM_MASK_ID
    kept = corrupted == spec.input_ids[labelled]
    shares = {
        "[MASK]": (float(as_mask.float().mean()), 0.8),
        "random": (float((~as_mask & ~kept).float().mean()), 0.1),
        "unchanged": (float((kept & ~as_mask).float().mean()), 0.1),
    }
    for share, target in shares.values():
        if abs(share - target) > _RATE_STANDARD_ERRORS * math.sqrt(target * (1 - target) / chosen):
            found = ", ".join(f"{share:.1%} {name}" for name, (share, _) in shares.items())
            return Problem(
                [f"of the {chosen:,} chosen tokens: {found}; expected 80% / 10% / 10%"],
                "of the chosen tokens 80% become [MASK], 10% a random token and 10% stay "
                "unchanged: one uniform draw per token, [MASK] below 0.8, random in [0.8, 0.9).",
            )
    random_ids = corrupted[~as_mask & ~kept]
    distinct = random_ids.unique().numel()
    if random_ids.numel() >= 100 and distinct < random_ids.numel() // 4:
        return Problem(
            [f"the {random_ids.numel()} random replacements use only {distinct} different ids"],
            "draw each random replacement uniformly from the whole vocabulary: "
            "torch.randint(vocab_size, shape, generator=generator).",
        )
    return None


def check_mask_tokens(fn: Callable) -> bool:
    """Grade `fn(input_ids, special_tokens_mask, vocab_size, mask_token_id, mlm_probability=0.15,
    generator=None)` -> (inputs, labels): BERT's masking, as `bertcourse.data.mask_tokens`.

    The answer is random, so it is judged by rules rather than compared with
    one reference: shapes and dtype; labels -100 off the chosen positions and
    the original id on them; [CLS], [SEP] and padding never chosen; unchosen
    inputs unchanged; on large batches the rates (mlm_probability chosen; of
    those 80% [MASK], 10% random, 10% unchanged); the same answer from
    generators seeded alike. The learner's global random state is left alone.
    """
    if not callable(fn):
        return _run_cases("check_mask_tokens", fn, [], _masking_problem)

    @functools.wraps(fn)
    def graded(input_ids, special_tokens_mask, vocab_size, mlm_probability, calls, seed):
        answers = []
        with torch.random.fork_rng(devices=[]):  # draws from the global generator leave no trace
            torch.manual_seed(seed)
            for _ in range(calls):
                generator = torch.Generator().manual_seed(seed)
                answers.append(
                    fn(
                        input_ids.clone(),
                        special_tokens_mask.clone(),
                        vocab_size,
                        _MLM_MASK_ID,
                        mlm_probability,
                        generator,
                    )
                )
        return answers[0] if calls == 1 else tuple(answers)

    g = torch.Generator().manual_seed(13)
    cases = []

    def add(description, batch, length, vocab_size, p=0.15, rates=False, calls=1, ints=False):
        ids, special = _masking_batch(g, batch, length, vocab_size)
        spec = _MaskingCase(ids, special, ints, vocab_size, p, rates, calls)
        special_argument = special.long() if ints else special
        args = (ids, special_argument, vocab_size, p, calls, len(cases))
        cases.append(Case(description, args, spec))

    add("batch 2, length 10, vocab 30, the second row padded", 2, 10, 30)
    add(
        "512 × 128 (about 48,000 ordinary tokens), vocab 1,000: labels, specials and the "
        "15% / 80-10-10 rates",
        512,
        128,
        1000,
        rates=True,
    )
    add("512 × 128, vocab 1,000, mlm_probability=0.4", 512, 128, 1000, p=0.4, rates=True)
    add(
        "special_tokens_mask as 0/1 integers (as tokenizers return it), 64 × 32, vocab 500",
        64,
        32,
        500,
        ints=True,
    )
    add("batch 1, length 3 ([CLS] one token [SEP]), vocab 20", 1, 3, 20)
    add(
        "two calls with generators seeded alike (256 × 64, vocab 1,000) must agree",
        256,
        64,
        1000,
        calls=2,
    )
    return _run_cases(
        "check_mask_tokens",
        graded,
        cases,
        _masking_problem,
        (),
        "print the chosen mask, the inputs and the labels of a small batch and compare them "
        "with the chapter's step-by-step masking.",
    )


# ----------------------------------------------------------------------------
# The optimizer's parameter groups and the learning-rate schedule (chapter: the pretraining run)
# ----------------------------------------------------------------------------

__all__.extend(["check_parameter_groups", "check_warmup_schedule"])


def _groups_model(kind: str) -> torch.nn.Module:
    """A small BERT of the kind named (2 layers, 16 wide), built without touching the caller's RNG."""
    from .model import (
        BertForMaskedLM,
        BertForPreTraining,
        BertForSequenceClassification,
        BertModel,
    )

    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=24,
    )
    classes = {
        "BertForPreTraining": BertForPreTraining,
        "BertForMaskedLM": BertForMaskedLM,
        "BertModel": BertModel,
        "BertForSequenceClassification": BertForSequenceClassification,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return classes[kind](config)


_GROUPS_FORMAT_HINT = (
    "return a list of dicts, e.g. [{'params': decay, 'weight_decay': weight_decay}, "
    "{'params': no_decay, 'weight_decay': 0.0}], each 'params' a list of the model's parameters."
)


def _parameter_groups_problem(weight_decay: float, answer: Any) -> Problem | None:
    """The first way the learner's groups would make AdamW decay the wrong parameters."""
    from .train import parameter_groups

    model, groups = answer
    if isinstance(groups, dict) or not isinstance(groups, (list, tuple)):
        return Problem(
            [f"expected a list of parameter-group dicts, got {type(groups).__name__}"],
            _GROUPS_FORMAT_HINT,
        )
    names = {id(p): name for name, p in model.named_parameters()}  # a shared tensor once
    aliases: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    # parameter -> (group, weight decay), once per time the answer lists it
    placed: dict[int, list[tuple[int, float]]] = {}
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            return Problem(
                [f"group {index} is a {type(group).__name__}, not a dict with a 'params' key"],
                _GROUPS_FORMAT_HINT,
            )
        if "weight_decay" not in group:
            return Problem(
                [f"group {index} has no 'weight_decay' entry"],
                "give every group its own 'weight_decay': a group without one gets AdamW's "
                "default (0.01), so the no-decay group would decay after all.",
            )
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            return Problem(
                [f"group {index}'s 'params' is a set"],
                "use a list: a set has no fixed order, so the optimizer's saved state could not be "
                "matched to the parameters when a run resumes (torch refuses sets).",
            )
        if isinstance(params, torch.Tensor):
            params = [params]
        for parameter in params:
            if not isinstance(parameter, torch.Tensor):
                return Problem(
                    [f"group {index} holds a {type(parameter).__name__} ({parameter!r:.40})"],
                    "'params' must hold the parameter tensors themselves (the p of "
                    "`for name, p in model.named_parameters()`), not their names.",
                )
            if id(parameter) not in names:
                return Problem(
                    [
                        f"group {index} holds a tensor of shape {_fmt_shape(parameter.shape)} that "
                        "is not a parameter of the model"
                    ],
                    "put the model's own parameter objects in the groups (not p.data, p.clone() "
                    "or another model's parameters): the optimizer updates what it is given.",
                )
            decay = group["weight_decay"]
            placed.setdefault(id(parameter), []).append((index, float(decay)))

    repeated = {key: where for key, where in placed.items() if len(where) > 1}
    if repeated:
        key, where = next(iter(repeated.items()))
        groups_text = " and ".join(str(index) for index, _ in where)
        line = f"{names[key]} is listed {len(where)} times (groups {groups_text})"
        if len(aliases[key]) > 1:
            return Problem(
                [line, f"it has {len(aliases[key])} names: {', '.join(aliases[key])}"],
                "that is one tied tensor (the MLM decoder shares the word embeddings): list each "
                "parameter once. model.named_parameters() skips repeats; "
                "named_parameters(remove_duplicate=False) and state_dict() do not.",
            )
        return Problem(
            [line],
            "each parameter belongs in exactly one group: decide decay or no decay with one "
            "if/else per parameter, so no parameter lands in both lists.",
        )

    missing = [name for key, name in names.items() if key not in placed]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return Problem(
            [f"{len(missing)} of the model's {len(names)} parameters are in no group: {shown}"],
            "a parameter in no group is never updated: every parameter of "
            "model.named_parameters() must go to exactly one of the groups.",
        )

    expected = {}
    for group in parameter_groups(model, weight_decay):
        for parameter in group["params"]:
            expected[id(parameter)] = group["weight_decay"]
    wrong = [
        (names[key], where[0][1], expected[key])
        for key, where in placed.items()
        if not math.isclose(where[0][1], expected[key], rel_tol=1e-9, abs_tol=1e-12)
    ]
    if not wrong:
        try:
            torch.optim.AdamW(list(groups), lr=1e-3)
        except Exception as error:
            return Problem([f"torch.optim.AdamW(your_groups) fails: {_first_line(error)}"])
        return None

    def problem(selected: list[tuple[str, float, float]], hint: str) -> Problem:
        name, got, want = selected[0]
        lines = [f"{name} has weight_decay {got:g}; expected {want:g}"]
        if len(selected) > 1:
            lines.append(f"({len(selected)} parameters like it)")
        return Problem(lines, hint)

    layer_norms = [w for w in wrong if "LayerNorm" in w[0] and w[1] != 0.0]
    if layer_norms:
        return problem(
            layer_norms,
            "LayerNorm parameters must not decay: pulling a LayerNorm gain towards 0 switches its "
            "unit off. Exclude every parameter of an nn.LayerNorm, its weight too, not only biases.",
        )
    biases = [w for w in wrong if w[0].endswith("bias") and w[1] != 0.0]
    if biases:
        return problem(
            biases,
            "biases must not decay (they shift, they do not scale): exclude every parameter whose "
            "name ends in 'bias', cls.predictions.bias included.",
        )
    undecayed = [w for w in wrong if w[1] == 0.0]
    if undecayed:
        return problem(
            undecayed,
            "weight matrices and embeddings do decay: only biases and LayerNorm parameters go to "
            "the group with weight_decay 0.",
        )
    return problem(
        wrong,
        f"use the weight_decay argument ({weight_decay:g}) for the decaying group instead of a "
        "fixed number.",
    )


def check_parameter_groups(fn: Callable) -> bool:
    """Grade `fn(model, weight_decay)` -> AdamW parameter groups, as `bertcourse.train.parameter_groups`.

    Every parameter must be in exactly one group (the tied MLM decoder once);
    biases and LayerNorm parameters get weight_decay 0, every other parameter
    the weight_decay given. Any number of groups is accepted.
    """

    @functools.wraps(fn)
    def graded(kind, weight_decay):
        model = _groups_model(kind)
        return model, fn(model, weight_decay)

    cases = [
        Case(
            "BertForPreTraining (2 layers, 16 wide; the MLM decoder tied to the word embeddings), "
            "weight_decay=0.01",
            ("BertForPreTraining", 0.01),
            0.01,
        ),
        Case("BertForMaskedLM, weight_decay=0.1", ("BertForMaskedLM", 0.1), 0.1),
        Case("BertModel (encoder and pooler only), weight_decay=0.05", ("BertModel", 0.05), 0.05),
        Case(
            "BertForSequenceClassification, weight_decay=0.01",
            ("BertForSequenceClassification", 0.01),
            0.01,
        ),
    ]
    return _run_cases(
        "check_parameter_groups",
        graded,
        cases,
        _parameter_groups_problem,
        (),
        "print, for every name in model.named_parameters(), the group it went to.",
    )


@dataclass(frozen=True)
class _ScheduleCase:
    warmup_steps: int
    total_steps: int
    steps: tuple[int, ...]
    expected: tuple[float, ...]


@dataclass(frozen=True)
class _RaisedZeroDivision:
    """The learner's function divided by zero at this step (returned, not raised, to give a hint)."""

    step: int
    where: str
    message: str


def _linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


_SCHEDULE_TOLERANCE = 1e-6  # a multiplier computed in float32 is fine
_ZERO_WARMUP_HINT = (
    "warmup_steps=0 (no warm-up) must work too: guard the division, e.g. "
    "step / max(1, warmup_steps), or return the decay alone when there is no warm-up."
)


def _schedule_problem(spec: _ScheduleCase, answer: Any) -> Problem | None:
    """Where the learner's multipliers leave BERT's schedule, with a hint that names the bug."""
    w, total = spec.warmup_steps, spec.total_steps
    values = []
    for step, value in zip(spec.steps, answer, strict=True):
        if isinstance(value, _RaisedZeroDivision):
            return Problem(
                [
                    f"at step {step} your function raised ZeroDivisionError{value.where}: "
                    f"{value.message}"
                ],
                _ZERO_WARMUP_HINT,
            )
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            return Problem(
                [f"at step {step} your function returned a {type(value).__name__}, not a number"],
                "return the multiplier as a Python float (e.g. 0.5), not a list or None.",
            )
    steps, expected = spec.steps, spec.expected
    for step, value in zip(steps, values, strict=True):
        if not math.isfinite(value):
            hint = _ZERO_WARMUP_HINT if w == 0 else "a multiplier is a finite number in [0, 1]."
            return Problem([f"at step {step} your function returned {value}"], hint, nonfinite=True)
    wrong = [i for i in range(len(steps)) if abs(values[i] - expected[i]) > _SCHEDULE_TOLERANCE]
    if not wrong:
        return None

    def lines(indices: list[int]) -> list[str]:
        shown = [
            f"step {steps[i]}: expected {expected[i]:.6g}, got {values[i]:.6g}" for i in indices
        ]
        return ["; ".join(shown[:3])]

    in_warmup = [i for i in wrong if steps[i] < w]
    if in_warmup:
        warmup_indices = [i for i in range(len(steps)) if steps[i] < w]
        if all(abs(values[i] - (steps[i] + 1) / w) <= _SCHEDULE_TOLERANCE for i in warmup_indices):
            return Problem(
                lines(in_warmup),
                "off by one: the warm-up multiplier is step / warmup_steps, 0 at step 0 and exactly "
                "1.0 at step warmup_steps; (step + 1) / warmup_steps peaks one step early.",
            )
        if values[in_warmup[0]] >= 1.0 - _SCHEDULE_TOLERANCE:
            return Problem(
                lines(in_warmup),
                "there is no warm-up: for step < warmup_steps the multiplier must rise linearly "
                "from 0 (step / warmup_steps) before the decay starts.",
            )
        return Problem(
            lines(in_warmup),
            "during the warm-up (step < warmup_steps) the multiplier is step / warmup_steps: "
            "0 at step 0, rising linearly to 1.",
        )
    at_peak = [i for i in wrong if steps[i] == w]
    if at_peak:
        return Problem(
            lines(at_peak),
            f"off by one at the end of the warm-up: at step warmup_steps ({w}) the multiplier is "
            "exactly 1.0, and the decay (total_steps - step) / (total_steps - warmup_steps) "
            "starts from there.",
        )
    decaying = [i for i in wrong if w < steps[i] <= total]
    if decaying:
        decay_indices = [i for i in range(len(steps)) if w < steps[i] <= total]

        def cosine(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * (step - w) / max(1, total - w)))

        if all(abs(values[i] - cosine(steps[i])) <= _SCHEDULE_TOLERANCE for i in decay_indices):
            return Problem(
                lines(decaying),
                "this is a cosine decay; BERT's schedule decays linearly: "
                "(total_steps - step) / (total_steps - warmup_steps).",
            )
        at_end = [i for i in decay_indices if steps[i] == total]
        if at_end and values[at_end[0]] > _SCHEDULE_TOLERANCE:
            return Problem(
                lines(sorted({decaying[0], at_end[0]})),
                f"the multiplier must reach exactly 0 at step total_steps; yours stops at "
                f"{values[at_end[0]]:.3g} (a floor). BERT's schedule decays all the way to 0.",
            )
        return Problem(
            lines(decaying),
            "after the warm-up the multiplier falls linearly from 1 at step warmup_steps to 0 at "
            "step total_steps: (total_steps - step) / (total_steps - warmup_steps).",
        )
    after = [i for i in wrong if steps[i] > total]
    if any(values[i] < 0 for i in after):
        negative = [i for i in after if values[i] < 0]
        return Problem(
            lines(negative),
            "past total_steps the linear formula goes negative, and a negative learning rate "
            "climbs the loss: clamp it, max(0.0, ...).",
        )
    return Problem(lines(after), "past total_steps the multiplier stays 0.")


def check_warmup_schedule(fn: Callable) -> bool:
    """Grade `fn(step, warmup_steps, total_steps)` -> the learning-rate multiplier of BERT's schedule.

    Linear warm-up from 0 to 1 over warmup_steps, then linear decay to 0 at
    total_steps, and 0 afterwards (as `bertcourse.train.linear_warmup_decay`
    and `transformers.get_linear_schedule_with_warmup`); warmup_steps=0 must
    work.
    """

    @functools.wraps(fn)
    def graded(warmup_steps, total_steps, steps):
        answers = []
        for step in steps:
            try:
                answers.append(fn(step, warmup_steps, total_steps))
            except ZeroDivisionError as error:
                where = _location(error, getattr(fn, "__name__", None))
                answers.append(_RaisedZeroDivision(step, where, _first_line(error)))
        return answers

    def case(description: str, warmup_steps: int, total_steps: int, steps) -> Case:
        steps = tuple(steps)
        expected = tuple(_linear_warmup_decay(s, warmup_steps, total_steps) for s in steps)
        spec = _ScheduleCase(warmup_steps, total_steps, steps, expected)
        return Case(description, (warmup_steps, total_steps, steps), spec)

    bert_steps = (0, 1, 5_000, 9_999, 10_000, 10_001, 500_000, 999_999, 1_000_000, 1_000_001)
    cases = [
        case("warmup_steps=10, total_steps=100, steps 0 to 104", 10, 100, range(105)),
        case("warmup_steps=4, total_steps=12, steps 0 to 15", 4, 12, range(16)),
        case("no warm-up: warmup_steps=0, total_steps=20, steps 0 to 22", 0, 20, range(23)),
        case(
            "BERT's own: warmup_steps=10,000, total_steps=1,000,000, ten steps from 0 to 1,000,001",
            10_000,
            1_000_000,
            bert_steps,
        ),
    ]
    return _run_cases(
        "check_warmup_schedule",
        graded,
        cases,
        _schedule_problem,
        (),
        "print your multiplier for steps 0 to 12 with warmup_steps=4, total_steps=10 and compare "
        "with the chapter's plot.",
    )


# ----------------------------------------------------------------------------
# Sentence pairs for next sentence prediction (chapter: next sentence prediction)
# ----------------------------------------------------------------------------

__all__.append("check_nsp_pairs")

# Token ids of the synthetic documents say where they come from:
# 10_000 * document + 100 * sentence + position, so every token of an answer can be traced back.
_NSP_DOCUMENT_STRIDE, _NSP_SENTENCE_STRIDE = 10_000, 100
_NSP_LABEL_NAMES = ("IsNext", "NotNext")
_NSP_MIN_PAIRS_FOR_BALANCE = 100  # fewer pairs say too little about a 50% rate
_NSP_BALANCE_STANDARD_ERRORS = 4.5  # a fair coin falls outside 4.5 standard errors ~1 in 150,000


@dataclass(frozen=True)
class _NspCase:
    """What an answer of nsp_pairs is judged against."""

    documents: list
    max_tokens: int


def _nsp_documents(seed: int, num_documents: int, sentences: tuple, lengths: tuple) -> list:
    """Documents of (min, max) sentences of (min, max) tokens whose ids encode their origin."""
    import random

    rng = random.Random(seed)
    return [
        [
            [
                _NSP_DOCUMENT_STRIDE * d + _NSP_SENTENCE_STRIDE * s + k
                for k in range(rng.randint(*lengths))
            ]
            for s in range(rng.randint(*sentences))
        ]
        for d in range(num_documents)
    ]


def _nsp_origin(spec: _NspCase, tokens: Sequence[int]) -> tuple[int, int] | None:
    """(document, sentence) of a contiguous piece of one sentence, or None."""
    places = set()
    positions = []
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, int):
            return None
        document, rest = divmod(token, _NSP_DOCUMENT_STRIDE)
        sentence, position = divmod(rest, _NSP_SENTENCE_STRIDE)
        places.add((document, sentence))
        positions.append(position)
    if len(places) != 1:
        return None
    document, sentence = places.pop()
    if not (0 <= document < len(spec.documents) and 0 <= sentence < len(spec.documents[document])):
        return None
    source = spec.documents[document][sentence]
    if list(tokens) != source[positions[0] : positions[0] + len(tokens)]:
        return None
    return document, sentence


def _nsp_longest_first(length_a: int, length_b: int, max_tokens: int) -> list[int]:
    while length_a + length_b > max_tokens:
        if length_a > length_b:
            length_a -= 1
        else:
            length_b -= 1
    return sorted((length_a, length_b))


def _nsp_where(place: tuple[int, int]) -> str:
    return f"sentence {place[1]} of document {place[0]}"


def _nsp_problem(spec: _NspCase, answer: Any) -> Problem | None:
    """The first rule an answer of nsp_pairs breaks, with a hint that names it."""
    if not isinstance(answer, (list, tuple)):
        return Problem(
            [f"expected a list of (tokens_a, tokens_b, label) tuples, got {type(answer).__name__}"],
            "collect the pairs in a list and return it.",
        )
    pairs = []
    for number, pair in enumerate(answer):
        if not isinstance(pair, (list, tuple)) or len(pair) != 3:
            return Problem(
                [f"pair {number} is {pair!r:.80}, not a (tokens_a, tokens_b, label) tuple"],
                "append (tokens_a, tokens_b, label) for each pair.",
            )
        tokens_a, tokens_b, label = pair
        if isinstance(label, torch.Tensor) and label.numel() == 1:
            label = label.item()
        if label not in (0, 1) or isinstance(label, float):
            return Problem(
                [f"pair {number} has label {label!r}; labels are the ints 0 and 1"],
                "0 means IsNext (B follows A), 1 means NotNext.",
            )
        if not isinstance(tokens_a, (list, tuple)) or not isinstance(tokens_b, (list, tuple)):
            return Problem(
                [f"pair {number}: tokens_a and tokens_b must be lists of token ids"],
                "copy the sentences as lists: list(document[i]).",
            )
        if not tokens_a or not tokens_b:
            side = "A" if not tokens_a else "B"
            return Problem(
                [
                    f"pair {number}: segment {side} is empty ({len(tokens_a)} + {len(tokens_b)} tokens)"
                ],
                "every side needs at least one token. An empty side usually comes from the "
                "truncation: remove tokens from the longer side, one at a time, until the pair "
                "fits; that never empties a side.",
            )
        origin_a, origin_b = _nsp_origin(spec, tokens_a), _nsp_origin(spec, tokens_b)
        if origin_a is None or origin_b is None:
            return Problem(
                [
                    f"pair {number}: segment {'A' if origin_a is None else 'B'} is not a piece of one "
                    "sentence of the documents"
                ],
                "each side is one sentence (or what truncation leaves of it), copied from the "
                "documents you were given.",
            )
        pairs.append((number, tokens_a, tokens_b, int(label), origin_a, origin_b))

    expected_firsts = {
        (d, s) for d, document in enumerate(spec.documents) for s in range(len(document) - 1)
    }
    firsts = [origin_a for _, _, _, _, origin_a, _ in pairs]
    if sorted(firsts) != sorted(expected_firsts):
        missing = sorted(expected_firsts - set(firsts))
        extra = sorted(set(firsts) - expected_firsts) or sorted(
            {f for f in firsts if firsts.count(f) > 1}
        )
        detail = (
            f"no pair starts with {_nsp_where(missing[0])}"
            if missing
            else f"A = {_nsp_where(extra[0])} is not expected (or comes twice)"
        )
        return Problem(
            [
                f"expected {len(expected_firsts)} pairs, one per sentence that has a next "
                f"sentence; got {len(pairs)}: {detail}"
            ],
            "loop over every document and over position in range(len(document) - 1): A is "
            "document[position]; the last sentence of a document has no next sentence.",
        )

    def is_next(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] == b[0] and b[1] == a[1] + 1

    next_but_labelled_1 = [p for p in pairs if p[3] == 1 and is_next(p[4], p[5])]
    other_but_labelled_0 = [p for p in pairs if p[3] == 0 and p[4][0] != p[5][0]]
    if next_but_labelled_1 and other_but_labelled_0:
        number, _, _, _, a, b = next_but_labelled_1[0]
        return Problem(
            [
                f"pair {number}: B = {_nsp_where(b)} follows A = {_nsp_where(a)}, "
                "but the label is 1 (NotNext)"
            ],
            "the labels are swapped: 0 means IsNext (B is the next sentence), 1 means NotNext "
            "(B from another document).",
        )
    for number, _, _, label, a, b in pairs:
        if label == 1 and b[0] == a[0]:
            return Problem(
                [
                    f"pair {number} is NotNext (label 1), but A = {_nsp_where(a)} and "
                    f"B = {_nsp_where(b)} come from the same document"
                ],
                "a NotNext B comes from another document: draw its index among the others, "
                "e.g. other = rng.randrange(len(documents) - 1), plus 1 if other >= index.",
            )
        if label == 0 and not is_next(a, b):
            where = "the same document" if b[0] == a[0] else "another document"
            return Problem(
                [
                    f"pair {number} is IsNext (label 0), but B = {_nsp_where(b)} ({where}) is not "
                    f"the sentence after A = {_nsp_where(a)}"
                ],
                "an IsNext B is the sentence right after A: document[position + 1], not a "
                "random sentence.",
            )
    for number, tokens_a, tokens_b, _, a, b in pairs:
        total = len(tokens_a) + len(tokens_b)
        if total > spec.max_tokens:
            return Problem(
                [
                    f"pair {number} has {len(tokens_a)} + {len(tokens_b)} = {total} tokens, "
                    f"more than max_tokens = {spec.max_tokens}"
                ],
                "truncate each pair: while len(tokens_a) + len(tokens_b) > max_tokens, remove "
                "one token from the longer side.",
            )
        full_a = len(spec.documents[a[0]][a[1]])
        full_b = len(spec.documents[b[0]][b[1]])
        expected = _nsp_longest_first(full_a, full_b, spec.max_tokens)
        if sorted((len(tokens_a), len(tokens_b))) != expected:
            return Problem(
                [
                    f"pair {number}: sentences of {full_a} and {full_b} tokens became "
                    f"{len(tokens_a)} + {len(tokens_b)} with max_tokens = {spec.max_tokens}; "
                    f"longest-first truncation keeps {expected[1]} + {expected[0]}"
                ],
                "truncate longest-first, one token at a time from the longer side, and only "
                "while the pair is too long (a pair that fits keeps every token).",
            )
    if len(pairs) >= _NSP_MIN_PAIRS_FOR_BALANCE:
        rate = sum(p[3] for p in pairs) / len(pairs)
        tolerance = _NSP_BALANCE_STANDARD_ERRORS * 0.5 / math.sqrt(len(pairs))
        if abs(rate - 0.5) > tolerance:
            return Problem(
                [
                    f"{rate:.1%} of the {len(pairs)} pairs are NotNext; expected 50% "
                    f"(± {tolerance:.1%})"
                ],
                "flip a fair coin for each pair with the rng you are given: IsNext if "
                "rng.random() < 0.5, else NotNext.",
            )
    return None


def check_nsp_pairs(fn: Callable) -> bool:
    """Grade `fn(documents, rng, max_tokens)` -> [(tokens_a, tokens_b, label)], a simple NSP builder.

    documents: lists of sentences of token ids; rng: a random.Random. One pair for every
    sentence that has a next sentence: A is that sentence; B is the next sentence (label 0,
    IsNext) or, with probability 1/2, a random sentence of another document (label 1,
    NotNext); then longest-first truncation to max_tokens. The pairs are random, so the
    checker checks rules instead of comparing with one answer: every token id of its
    synthetic documents says which document and sentence it comes from.
    """
    if not callable(fn):
        return _run_cases("check_nsp_pairs", fn, [], _nsp_problem)
    import random

    @functools.wraps(fn)
    def with_fresh_rng(documents: list, seed: int, max_tokens: int) -> Any:
        return fn(documents, random.Random(seed), max_tokens)

    def add(description: str, seed: int, documents: list, max_tokens: int) -> Case:
        return Case(description, (documents, seed, max_tokens), _NspCase(documents, max_tokens))

    cases = [
        add(
            "3 documents of 6 to 10 sentences of 2 to 12 tokens, max_tokens 30",
            1,
            _nsp_documents(11, 3, (6, 10), (2, 12)),
            30,
        ),
        add(
            "2 documents: a NotNext B must come from the other one; max_tokens 64",
            2,
            _nsp_documents(12, 2, (4, 8), (1, 20)),
            64,
        ),
        add(
            "300 documents of 1 to 12 sentences of 1 to 30 tokens, max_tokens 24 (many pairs "
            "are truncated)",
            3,
            _nsp_documents(13, 300, (1, 12), (1, 30)),
            24,
        ),
        add(
            "sentences of 3 to 6 tokens, max_tokens 3 (every pair is truncated)",
            4,
            _nsp_documents(14, 20, (2, 6), (3, 6)),
            3,
        ),
        add(
            "one long document and many one-sentence ones, max_tokens 40",
            5,
            [_nsp_documents(15, 1, (30, 30), (5, 25))[0]]
            + [[[_NSP_DOCUMENT_STRIDE * d + k for k in range(7)]] for d in range(1, 6)],
            40,
        ),
    ]
    return _run_cases(
        "check_nsp_pairs",
        with_fresh_rng,
        cases,
        _nsp_problem,
        (),
        "print a few of your pairs for a small document by hand and check each rule of the "
        "exercise.",
    )


# ----------------------------------------------------------------------------
# Chapter 11: word labels on sub-words, and the best answer span
# ----------------------------------------------------------------------------

__all__ += ["check_align_labels", "check_best_span"]

_IGNORE = -100  # the label the loss and the metric skip


def _align(
    word_ids,
    word_labels,
    *,
    subwords="first",
    special=_IGNORE,
    zero_is_word=True,
    keep_unknown=True,
):
    """Token labels from word labels, the reference way or with one of the learners' mistakes."""
    labels = []
    for position, word in enumerate(word_ids):
        if word is None or (not zero_is_word and not word):
            labels.append(special)
            continue
        label = word_labels[word]
        if not keep_unknown and label == _IGNORE:
            label = 0
        previous = word_ids[position - 1] if position > 0 else None
        following = word_ids[position + 1] if position + 1 < len(word_ids) else None
        if (
            subwords == "all"
            or (subwords == "first" and word != previous)
            or (subwords == "last" and word != following)
        ):
            labels.append(label)
        else:
            labels.append(_IGNORE)
    return labels


def _align_problem(expected: list[int], got: Any) -> Problem | None:
    if not isinstance(got, (list, tuple)) and not isinstance(got, torch.Tensor):
        return Problem([f"expected a list of ints, one label per token; got {type(got).__name__}"])
    got = [int(x) for x in got]
    if len(got) != len(expected):
        return Problem(
            [f"expected {len(expected)} labels (one per token), got {len(got)}"],
            "return one label per entry of word_ids, special tokens and padding included.",
        )
    if got == expected:
        return None
    first = next(i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b)
    return Problem(
        [
            f"expected {expected}",
            f"got      {got}  (first difference at token {first})",
        ]
    )


def check_align_labels(fn: Callable) -> bool:
    """Grade `fn(word_ids, word_labels)` -> one label per token: the word's label on its first
    sub-word, -100 on the later sub-words and on special tokens and padding (word id None).

    A word label of -100 (unknown) passes through. As `bertcourse.finetune.align_word_labels`.
    """
    import random

    def case(description: str, word_ids: list, word_labels: list) -> Case:
        return Case(description, (word_ids, word_labels), _align(word_ids, word_labels))

    generator = random.Random(11)
    many_ids: list = [None]
    for word in range(30):
        many_ids += [word] * generator.randint(1, 4)
    many_ids.append(None)
    many_labels = [generator.randrange(5) for _ in range(30)]
    cases = [
        case(
            "[CLS] 4 words, the second split into 3 sub-words [SEP]",
            [None, 0, 1, 1, 1, 2, 3, None],
            [1, 0, 3, 0],
        ),
        case(
            "the first word (word id 0) split into 2 sub-words", [None, 0, 0, 1, 2, None], [3, 0, 1]
        ),
        case("padding after [SEP] (word id None)", [None, 0, 1, 1, 2, None, None, None], [0, 1, 2]),
        case(
            "a word whose label is -100 (unknown) stays -100",
            [None, 0, 0, 1, 2, 2, None],
            [_IGNORE, 1, 2],
        ),
        case("truncated: the last word lost", [None, 0, 1, 1, 2, None], [0, 3, 4, 1]),
        case("30 words of 1 to 4 sub-words", many_ids, many_labels),
    ]
    mistakes = [
        Mistake(
            "only the first sub-word of a word gets the word's label; the later sub-words get "
            "-100, so each word counts once in the loss and the metric.",
            functools.partial(_align, subwords="all"),
        ),
        Mistake(
            "the label goes on the *first* sub-word of each word (a new word id, different from "
            "the previous token's), not on its last.",
            functools.partial(_align, subwords="last"),
        ),
        Mistake(
            "word id 0 is the first word, not a special token: test `word is None`, not "
            "`not word`.",
            functools.partial(_align, zero_is_word=False),
        ),
        Mistake(
            "special tokens and padding (word id None) get -100, not 0: 0 is the label 'O', and "
            "the loss would learn to predict it on [CLS] and [SEP].",
            functools.partial(_align, special=0),
        ),
        Mistake(
            "a word label of -100 (unknown) passes through unchanged: the loss must skip that word.",
            functools.partial(_align, keep_unknown=False),
        ),
    ]
    return _run_cases(
        "check_align_labels",
        fn,
        cases,
        _align_problem,
        mistakes,
        "walk through word_ids by hand: None -> -100; a new word id -> that word's label; the "
        "same id as the token before -> -100.",
    )


def _spans(
    start_logits,
    end_logits,
    context_mask,
    max_answer_length,
    *,
    ordered=True,
    length_check="<",
    use_mask=True,
    softmax_over="context",
    score="product",
):
    """(start, end, score) by brute force, the reference way or with one of the mistakes."""
    start_logits, end_logits = start_logits.double(), end_logits.double()
    if softmax_over == "context":
        low = torch.finfo(torch.float64).min
        start_probs = start_logits.masked_fill(~context_mask, low).softmax(-1)
        end_probs = end_logits.masked_fill(~context_mask, low).softmax(-1)
    else:
        start_probs, end_probs = start_logits.softmax(-1), end_logits.softmax(-1)
    best = None
    length = len(start_logits)
    for start in range(length):
        for end in range(length):
            if ordered and end < start:
                continue
            tokens = end - start + 1
            if length_check == "<" and tokens > max_answer_length:
                continue
            if length_check == "<=" and tokens > max_answer_length + 1:
                continue
            if use_mask and not (context_mask[start] and context_mask[end]):
                continue
            if score == "product":
                value = float(start_probs[start] * end_probs[end])
            else:
                value = float(start_logits[start] + end_logits[end])
            if best is None or value > best[2]:
                best = (start, end, value)
    return best


def _independent_argmax(start_logits, end_logits, context_mask, max_answer_length):
    start = int(start_logits.masked_fill(~context_mask, -1e9).argmax())
    end = int(end_logits.masked_fill(~context_mask, -1e9).argmax())
    low = torch.finfo(torch.float32).min
    probs = [
        x.float().masked_fill(~context_mask, low).softmax(-1) for x in (start_logits, end_logits)
    ]
    return start, end, float(probs[0][start] * probs[1][end])


def _span_problem(expected: tuple, got: Any) -> Problem | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return Problem(["expected a tuple (start, end, score)"])
    start, end, score = int(got[0]), int(got[1]), float(got[2])
    if (start, end) != expected[:2]:
        return Problem(
            [
                f"expected the span ({expected[0]}, {expected[1]}) with score {expected[2]:.4f}",
                f"got the span ({start}, {end}) with score {score:.4f}",
            ]
        )
    if not math.isclose(score, expected[2], rel_tol=1e-4, abs_tol=1e-7):
        return Problem(
            [
                f"the span ({start}, {end}) is right, but its score is {score:.6g}, expected "
                f"{expected[2]:.6g}"
            ],
            "the score is p_start(start) * p_end(end), each a softmax over the context tokens.",
        )
    return None


def check_best_span(fn: Callable) -> bool:
    """Grade `fn(start_logits, end_logits, context_mask, max_answer_length)` -> (start, end, score).

    The best span of one window: start <= end, at most max_answer_length tokens, both ends context
    tokens (context_mask True), maximising p_start(start) * p_end(end) with each p a softmax over
    the context tokens; the score is that product. As `bertcourse.finetune.best_span`.
    """

    def window(question: int, context: int) -> torch.Tensor:
        """[CLS] question [SEP] context [SEP]: True on the context tokens."""
        mask = torch.zeros(question + context + 3, dtype=torch.bool)
        mask[question + 2 : question + 2 + context] = True
        return mask

    def case(description, start_logits, end_logits, mask, max_answer_length) -> Case:
        start_logits = torch.tensor(start_logits, dtype=torch.float32)
        end_logits = torch.tensor(end_logits, dtype=torch.float32)
        args = (start_logits, end_logits, mask, max_answer_length)
        return Case(description, args, _spans(*args))

    def logits(length, peaks, base=0.0):
        values = [base] * length
        for position, value in peaks.items():
            values[position] = value
        return values

    mask = window(3, 10)  # context tokens 5..14
    generator = torch.Generator().manual_seed(11)
    random_mask = window(6, 30)
    cases = [
        case(
            "a clear answer: start peak at 7, end peak at 9",
            logits(16, {7: 5.0}),
            logits(16, {9: 5.0}),
            mask,
            30,
        ),
        case(
            "the best end (6) lies before the best start (10)",
            logits(16, {10: 6.0, 7: 4.0}),
            logits(16, {6: 6.0, 12: 4.0}),
            mask,
            30,
        ),
        case(
            "the best pair (5, 14) is 10 tokens long, max_answer_length 4",
            logits(16, {5: 6.0, 11: 3.0}),
            logits(16, {14: 6.0, 13: 3.0}),
            mask,
            4,
        ),
        case(
            "the best span is exactly max_answer_length 4 tokens long (6 to 9), one more would "
            "score higher",
            logits(16, {6: 6.0, 5: 6.5}),
            logits(16, {9: 6.0}),
            mask,
            4,
        ),
        case(
            "the highest logits are on question tokens (1 and 2) and [CLS]",
            logits(16, {0: 9.0, 1: 9.0, 8: 3.0}),
            logits(16, {0: 9.0, 2: 9.0, 10: 3.0}),
            mask,
            30,
        ),
        case(
            "random logits, 6 question and 30 context tokens, max_answer_length 5",
            torch.randn(39, generator=generator).mul(3).tolist(),
            torch.randn(39, generator=generator).mul(3).tolist(),
            random_mask,
            5,
        ),
        case(
            "random logits, 6 question and 30 context tokens, max_answer_length 30",
            torch.randn(39, generator=generator).mul(2).tolist(),
            torch.randn(39, generator=generator).mul(2).tolist(),
            random_mask,
            30,
        ),
    ]
    mistakes = [
        Mistake(
            "the best start and the best end taken separately need not form a span: search the "
            "pairs (start, end) with start <= end < start + max_answer_length.",
            _independent_argmax,
        ),
        Mistake(
            "an answer cannot end before it starts: only pairs with end >= start are spans.",
            functools.partial(_spans, ordered=False),
        ),
        Mistake(
            "spans longer than max_answer_length tokens are not allowed.",
            functools.partial(_spans, length_check="none"),
        ),
        Mistake(
            "a span from start to end has end - start + 1 tokens: it must be at most "
            "max_answer_length, so end < start + max_answer_length (one token too many allowed).",
            functools.partial(_spans, length_check="<="),
        ),
        Mistake(
            "both ends must be context tokens (context_mask): an answer never starts or ends in "
            "the question, [CLS] or [SEP].",
            functools.partial(_spans, use_mask=False, softmax_over="all"),
        ),
        Mistake(
            "take each softmax over the context tokens only (mask the others out first), so the "
            "question's logits do not change the score.",
            functools.partial(_spans, softmax_over="all"),
        ),
        Mistake(
            "the score is a probability, p_start(start) * p_end(end), not the sum of the logits "
            "(the argmax is the same, the score is not).",
            functools.partial(_spans, score="logits"),
        ),
    ]
    return _run_cases(
        "check_best_span",
        fn,
        cases,
        _span_problem,
        mistakes,
        "print your candidate spans and their scores for a small window and check each rule.",
    )


# ----------------------------------------------------------------------------
# Chapter 09/10: fine-tuning for classification, sentence pairs
# ----------------------------------------------------------------------------

__all__ += ["check_classification_head", "check_macro_f1"]


def _classification_head(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias  # (B, num_labels)
    if labels is None:
        return logits, None
    if weight.shape[0] == 1:  # regression
        return logits, F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return logits, F.cross_entropy(logits, labels)


def _head_problem(expected: Any, answer: Any) -> Problem | None:
    expected_logits, expected_loss = expected
    if not isinstance(answer, tuple) or len(answer) != 2:
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a (logits, loss) tuple"],
            "return two things: the logits and the loss (None when labels is None).",
        )
    logits, loss = answer
    if not isinstance(logits, torch.Tensor) or logits.shape != expected_logits.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return Problem(
            [f"logits: expected shape {tuple(expected_logits.shape)}, got {shape}"],
            "logits = pooled_output @ weight.T + bias: one score per class, (batch, num_labels).",
        )
    if not torch.allclose(logits.double(), expected_logits.double(), atol=1e-5, rtol=1e-4):
        error = (logits.double() - expected_logits.double()).abs().max().item()
        return Problem([f"logits differ from the expected ones by up to {error:.3g}"])
    if expected_loss is None:
        if loss is not None:
            return Problem(
                ["without labels the loss must be None"],
                "compute a loss only when labels are given (labels=None at prediction time).",
            )
        return None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return Problem(
            [f"loss: expected a scalar tensor, got {type(loss).__name__}"],
            "the loss is one number, the mean over the batch.",
        )
    if not torch.allclose(loss.double(), expected_loss.double(), atol=1e-5, rtol=1e-4):
        return Problem(
            [f"loss: expected {expected_loss.item():.6f}, got {loss.item():.6f}"],
            "cross-entropy on the raw logits (F.cross_entropy applies log-softmax itself), the "
            "mean over the batch; with one label, the mean squared error of logits[:, 0].",
        )
    return None


def check_classification_head(fn: Callable) -> bool:
    """Grade `fn(pooled_output, weight, bias, labels=None)` -> (logits, loss).

    The linear head of BertForSequenceClassification (after the pooler and
    dropout): logits = pooled_output @ weight.T + bias, shape (batch,
    num_labels); the loss is cross-entropy (mean over the batch), or with
    num_labels == 1 the mean squared error of logits[:, 0] against float
    labels (regression); loss None when labels is None.
    """

    def case(description, seed, batch, hidden, num_labels, with_labels=True, dtype=torch.float32):
        generator = torch.Generator().manual_seed(seed)
        pooled = torch.randn(batch, hidden, generator=generator, dtype=dtype).tanh()
        weight = torch.randn(num_labels, hidden, generator=generator, dtype=dtype)
        bias = torch.randn(num_labels, generator=generator, dtype=dtype)
        labels = None
        if with_labels:
            labels = (
                torch.rand(batch, generator=generator, dtype=dtype) * 5
                if num_labels == 1
                else torch.randint(num_labels, (batch,), generator=generator)
            )
        args = (pooled, weight, bias, labels)
        return Case(description, args, _classification_head(*args))

    cases = [
        case("batch 4, hidden 8, 3 labels", 0, 4, 8, 3),
        case("batch 5, hidden 16, 2 labels, no labels given", 1, 5, 16, 2, with_labels=False),
        case("batch 7, hidden 12, 5 labels, float64", 2, 7, 12, 5, dtype=torch.float64),
        case("regression: batch 6, hidden 8, num_labels 1, float labels in [0, 5]", 3, 6, 8, 1),
        case("batch 1, hidden 4, 4 labels", 4, 1, 4, 4),
    ]
    mistakes = [
        Mistake(
            "the bias is missing: logits = pooled_output @ weight.T + bias.",
            lambda p, w, b, y=None: _classification_head(p, w, torch.zeros_like(b), y),
        ),
        Mistake(
            "softmax applied before F.cross_entropy, which applies log-softmax itself: pass the "
            "raw logits.",
            lambda p, w, b, y=None: (
                p @ w.T + b,
                None if y is None else F.cross_entropy((p @ w.T + b).softmax(-1), y),
            ),
        ),
        Mistake(
            "the loss is summed over the batch; BERT's loss is the mean (reduction='mean').",
            lambda p, w, b, y=None: (
                p @ w.T + b,
                None if y is None else F.cross_entropy(p @ w.T + b, y, reduction="sum"),
            ),
        ),
        Mistake(
            "with num_labels == 1, compare logits[:, 0] (shape (B,)) with the labels: a (B, 1) "
            "minus (B,) broadcasts to (B, B), which averages the wrong differences.",
            lambda p, w, b, y=None: (
                p @ w.T + b,
                None
                if y is None
                else F.mse_loss((p @ w.T + b).expand(-1, len(y)), y.expand(len(y), -1)),
            ),
        ),
    ]
    return _run_cases(
        "check_classification_head",
        fn,
        cases,
        _head_problem,
        mistakes,
        "print the shapes: pooled_output (B, H), weight (num_labels, H), logits (B, num_labels).",
    )


def _macro_f1(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> float:
    from .metrics import classification_report

    return classification_report(
        list(labels), list(predictions), [str(i) for i in range(num_labels)]
    )["macro_f1"]


def _macro_f1_problem(expected: float, answer: Any) -> Problem | None:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a number"],
            "return the macro-F1 as one float in [0, 1].",
        )
    if not math.isfinite(answer):
        return Problem(
            [f"expected {expected:.6f}, got {answer}"],
            "a class never predicted has precision 0/0: count it as 0, as scikit-learn "
            "does, instead of dividing by zero.",
            nonfinite=True,
        )
    if abs(answer - expected) > 1e-9:
        return Problem([f"expected {expected:.6f}, got {answer:.6f}"])
    return None


def check_macro_f1(fn: Callable) -> bool:
    """Grade `fn(labels, predictions, num_labels)` -> macro-F1 (a float).

    The unweighted mean of the per-class F1 over the classes that occur in
    `labels` (as bertcourse.metrics.classification_report); a class's
    precision or recall with a zero denominator is 0 (scikit-learn's rule).
    """

    def case(description, labels, predictions, num_labels):
        return Case(
            description,
            (labels, predictions, num_labels),
            _macro_f1(labels, predictions, num_labels),
        )

    generator = torch.Generator().manual_seed(0)
    many_labels = torch.randint(4, (200,), generator=generator).tolist()
    noisy = [y if torch.rand(1, generator=generator).item() < 0.6 else 0 for y in many_labels]
    cases = [
        case("3 classes, 8 examples", [0, 0, 1, 1, 2, 2, 2, 0], [0, 1, 1, 1, 2, 0, 2, 0], 3),
        case("unbalanced: 9 of class 0, 1 of class 1, all predicted 0", [0] * 9 + [1], [0] * 10, 2),
        case("200 examples, 4 classes, many predicted 0", many_labels, noisy, 4),
        case("class 2 of 3 never occurs and is never predicted", [0, 1, 1, 0], [0, 1, 0, 0], 3),
        case("class 2 never occurs but is predicted once", [0, 1, 1, 0, 1], [0, 1, 2, 0, 0], 3),
    ]

    def per_class(labels, predictions, num_labels):
        out = []
        for c in range(num_labels):
            tp = sum(1 for y, p in zip(labels, predictions, strict=True) if y == p == c)
            pred = sum(1 for p in predictions if p == c)
            true = sum(1 for y in labels if y == c)
            precision = tp / pred if pred else 0.0
            recall = tp / true if true else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append((precision, recall, f1, true))
        return out

    mistakes = [
        Mistake(
            "this is the accuracy (micro-F1 in single-label classification); macro-F1 is "
            "the mean of the per-class F1 scores.",
            lambda y, p, k: sum(a == b for a, b in zip(y, p, strict=True)) / len(y),
        ),
        Mistake(
            "this is the support-weighted mean of the F1 scores; macro-F1 gives every class "
            "the same weight.",
            lambda y, p, k: sum(f * n for _, _, f, n in per_class(y, p, k)) / len(y),
        ),
        Mistake(
            "average only over the classes that occur in labels, not over all num_labels.",
            lambda y, p, k: sum(f for *_, f, _ in per_class(y, p, k)) / k,
        ),
        Mistake(
            "F1 is the harmonic mean 2PR/(P+R), not the arithmetic mean (P+R)/2.",
            lambda y, p, k: (
                sum((pr + r) / 2 for pr, r, _, n in per_class(y, p, k) if n)
                / sum(1 for *_, n in per_class(y, p, k) if n)
            ),
        ),
        Mistake(
            "this is the mean F1 of the predicted classes: average over the classes in labels.",
            lambda y, p, k: sum(per_class(y, p, k)[c][2] for c in set(p)) / len(set(p)),
        ),
    ]
    return _run_cases(
        "check_macro_f1",
        fn,
        cases,
        _macro_f1_problem,
        mistakes,
        "compute precision, recall and F1 of each class by hand for case 1.",
    )


__all__ += ["check_pair_encoding"]


def _pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id):
    """[CLS] A [SEP] B [SEP] after longest-first truncation (BertTokenizer.truncate's rule)."""
    budget = max_length - 3
    a, b = list(ids_a), list(ids_b)
    if len(a) + len(b) > budget:
        shorter, longer = sorted((len(a), len(b)))
        keep_longer = shorter if shorter > budget else max(shorter, budget - shorter)
        keep_shorter = shorter
        if keep_shorter + keep_longer > budget:
            keep_shorter = budget // 2
            keep_longer = keep_shorter + budget % 2
        n_a, n_b = (keep_shorter, keep_longer) if len(a) <= len(b) else (keep_longer, keep_shorter)
        a, b = a[:n_a], b[:n_b]
    input_ids = [cls_id, *a, sep_id, *b, sep_id]
    return input_ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def _pair_problem(expected: Any, answer: Any) -> Problem | None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return Problem(
            [f"your function returned a {type(answer).__name__}, not (input_ids, token_type_ids)"],
            "return two lists: the input ids and the segment ids.",
        )
    ids, segments = (list(map(int, part)) for part in answer)
    expected_ids, expected_segments = expected
    if ids != expected_ids:
        return Problem(
            [
                f"input ids: expected {len(expected_ids)} ids {expected_ids[:12]}...",
                f"got {len(ids)} ids {ids[:12]}...",
            ],
        )
    if segments != expected_segments:
        return Problem(
            [f"segment ids: expected {expected_segments}", f"got {segments}"],
            "segment 0 is [CLS] A [SEP] (the first [SEP] included), segment 1 is B [SEP].",
        )
    return None


def check_pair_encoding(fn: Callable) -> bool:
    """Grade `fn(ids_a, ids_b, max_length, cls_id, sep_id)` -> (input_ids, token_type_ids).

    [CLS] A [SEP] B [SEP] with segment ids 0 for [CLS] A [SEP] and 1 for
    B [SEP]; if the pair does not fit in max_length (special tokens
    included), longest-first truncation from the end as the package's
    BertTokenizer.truncate (and transformers' fast tokenizers): the shorter
    side is kept whole when the longer one can take the rest, else each gets
    half of the room, the odd token to the longer one.
    """
    cls_id, sep_id = 101, 102

    def case(description, length_a, length_b, max_length):
        ids_a = list(range(1000, 1000 + length_a))
        ids_b = list(range(2000, 2000 + length_b))
        args = (ids_a, ids_b, max_length, cls_id, sep_id)
        return Case(description, args, _pair_encoding(*args))

    cases = [
        case("A of 5 and B of 4 tokens, max_length 20 (fits)", 5, 4, 20),
        case("A of 30, B of 6, max_length 24: only A is cut", 30, 6, 24),
        case("A of 4, B of 40, max_length 20: only B is cut", 4, 40, 20),
        case("A of 20, B of 20, max_length 16: both cut, half each", 20, 20, 16),
        case("A of 9, B of 9, max_length 12 (room 9, odd): the odd token", 9, 9, 12),
        case("A of 30, B of 12, max_length 17 (both cut, B longer than half)", 30, 12, 17),
    ]

    def one_at_a_time(a, b, max_length, c, s):
        a, b = list(a), list(b)
        while len(a) + len(b) > max_length - 3:
            (a if len(a) > len(b) else b).pop()
        return [c, *a, s, *b, s], [0] * (len(a) + 2) + [1] * (len(b) + 1)

    def cut_from_the_start(a, b, max_length, c, s):
        ids, segments = _pair_encoding(a[::-1], b[::-1], max_length, c, s)
        n_a = segments.count(0) - 2
        return [c, *ids[1 : 1 + n_a][::-1], s, *ids[2 + n_a : -1][::-1], s], segments

    def pair(a, b, c, s, segment_of_middle=0):
        segments = [0] * (len(a) + 1) + [segment_of_middle] + [1] * (len(b) + 1)
        return [c, *a, s, *b, s], segments

    mistakes = [
        Mistake(
            "the pair is not truncated to max_length: cut the longer side first.",
            lambda a, b, m, c, s: pair(a, b, c, s),
        ),
        Mistake(
            "max_length counts the 3 special tokens too: the room for A and B is max_length - 3.",
            lambda a, b, m, c, s: _pair_encoding(a, b, m + 3, c, s),
        ),
        Mistake(
            "tokens are cut from the end of a sequence, not from its start.",
            cut_from_the_start,
        ),
        Mistake(
            "only B is truncated: longest-first cuts the longer side (and both when needed).",
            lambda a, b, m, c, s: pair(a, b[: max(0, m - 3 - len(a))], c, s),
        ),
        Mistake(
            "removing one token at a time from the longer side gives the odd token to B on a "
            "tie; the reference rule gives each half of the room and the odd token to the "
            "longer one (to A when they tie).",
            one_at_a_time,
        ),
        Mistake(
            "the first [SEP] belongs to segment 0: segment 1 is B [SEP].",
            lambda a, b, m, c, s: (
                _pair_encoding(a, b, m, c, s)[0],
                [0]
                * (
                    len(_pair_encoding(a, b, m, c, s)[0])
                    - len([x for x in _pair_encoding(a, b, m, c, s)[1] if x])
                    - 1
                )
                + [1] * (len([x for x in _pair_encoding(a, b, m, c, s)[1] if x]) + 1),
            ),
        ),
    ]
    return _run_cases(
        "check_pair_encoding",
        fn,
        cases,
        _pair_problem,
        mistakes,
        "print your ids for case 1 next to [CLS] A [SEP] B [SEP].",
    )


__all__ += ["check_segment_ids"]


def _segment_ids(input_ids: torch.Tensor, sep_id: int, pad_id: int = 0) -> torch.Tensor:
    after_first_sep = ((input_ids == sep_id).cumsum(-1) - (input_ids == sep_id).long()) >= 1
    return (after_first_sep & (input_ids != pad_id)).long()


def _segment_problem(expected: torch.Tensor, answer: Any) -> Problem | None:
    if not isinstance(answer, torch.Tensor):
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a tensor"],
            "return a LongTensor of the shape of input_ids.",
        )
    if answer.shape != expected.shape:
        return Problem([f"expected shape {tuple(expected.shape)}, got {tuple(answer.shape)}"])
    if not torch.equal(answer.long(), expected):
        row = int((answer.long() != expected).any(-1).nonzero()[0])
        return Problem(
            [f"row {row}: expected {expected[row].tolist()}", f"got {answer[row].long().tolist()}"]
        )
    return None


def check_segment_ids(fn: Callable) -> bool:
    """Grade `fn(input_ids, sep_id, pad_id)` -> token_type_ids for a padded batch of pairs.

    input_ids (B, T) hold [CLS] A [SEP] B [SEP] [PAD]...: segment 0 up to
    and including the first [SEP], 1 after it up to the second [SEP], and 0
    on padding (as transformers' tokenizers pad token_type_ids). A row with
    a single [SEP] (one text, no pair) is all 0.
    """
    cls_id, sep_id, pad_id = 101, 102, 0

    def row(length_a, length_b, total):
        ids = [cls_id, *range(1000, 1000 + length_a), sep_id]
        if length_b is not None:
            ids += [*range(2000, 2000 + length_b), sep_id]
        return ids + [pad_id] * (total - len(ids))

    def case(description, shapes, total):
        input_ids = torch.tensor([row(a, b, total) for a, b in shapes])
        return Case(
            description, (input_ids, sep_id, pad_id), _segment_ids(input_ids, sep_id, pad_id)
        )

    cases = [
        case("one pair, no padding", [(3, 4)], 10),
        case("three pairs of different lengths, padded", [(2, 3), (5, 1), (1, 1)], 12),
        case("a single text (one [SEP]) next to a pair", [(4, None), (2, 2)], 9),
        case("empty A and empty B", [(0, 0), (1, 0)], 6),
        case("long batch, mostly padding", [(6, 9), (1, 2), (3, 3), (2, 7)], 30),
    ]
    mistakes = [
        Mistake(
            "the first [SEP] closes segment A: it belongs to segment 0.",
            lambda x, s, p: (
                ((x == s).cumsum(-1) >= 1).long()
                * (x != p).long()
                * ((x == s).cumsum(-1) - (x == s).long() <= 1).long()
            ),
        ),
        Mistake(
            "padding gets segment 0 (transformers' tokenizers pad token_type_ids with 0).",
            lambda x, s, p: (((x == s).cumsum(-1) - (x == s).long()) >= 1).long(),
        ),
        Mistake(
            "every token is segment 0: B's tokens must be 1.", lambda x, s, p: torch.zeros_like(x)
        ),
        Mistake(
            "only the tokens of B are segment 1: its closing [SEP] belongs to B too.",
            lambda x, s, p: (
                (((x == s).cumsum(-1) - (x == s).long()) >= 1) & (x != s) & (x != p)
            ).long(),
        ),
    ]
    return _run_cases(
        "check_segment_ids",
        fn,
        cases,
        _segment_problem,
        mistakes,
        "write the segment id under each token of case 1 by hand.",
    )
