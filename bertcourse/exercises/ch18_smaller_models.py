"""Chapter 18, smaller models: the distillation loss, int8 quantization of a weight matrix.

The exercises, as the chapter states them:

**Exercise 1 (coding, ★★☆): the distillation loss.** Write
`distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)`:
`student_logits` and `teacher_logits` are (B, C), `labels` (B,) class ids. With p the
teacher's and q the student's probabilities at temperature T (softmax of logits / T), return
the scalar tensor

    alpha * T^2 * KL(p || q) + (1 - alpha) * cross_entropy(student_logits, labels)

where KL(p || q) = sum over the classes of p (log p - log q), averaged over the B examples
("batchmean"), and the cross-entropy is the usual one, at temperature 1, averaged over the
examples. Compute the log-probabilities stably (the checker's teachers can be very sure of
themselves). The checker compares with `bertcourse.compress.distillation_loss`.

**Exercise 2 (coding, ★☆☆): int8 weights.** Write `quantize_int8(weight)`: `weight` is a
float (out_features, in_features) matrix. Quantize each row (each output channel) on its
own, symmetrically: scale = (the row's largest absolute value) / 127, q = the row divided
by its scale, rounded to the nearest integer, clamped to [-127, 127] and stored as
torch.int8, so that weight ≈ q * scale[:, None]. A row of zeros gets scale 1 (any positive
scale will do) and q = 0. Return the pair (q (out, in) int8, scale (out,) float). The
checker compares with `bertcourse.compress.quantize_symmetric`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._grading import (
    Case,
    Problem,
    _fmt_shape,
    _random,
    _require_callable,
    _run_cases,
    _scalar_loss_problem,
    _variant,
)

__all__ = [
    "check_distillation_loss",
    "check_int8_quantize",
]


# ----------------------------------------------------------------------------
# Exercise 1: the distillation loss
# ----------------------------------------------------------------------------


def _distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    *,
    power: int = 2,
    reverse: bool = False,
    student_probs: bool = False,
    unstable_log: bool = False,
    swap_alpha: bool = False,
    reduction: str = "batchmean",
    soften_teacher: bool = True,
    hard_at_temperature: bool = False,
) -> torch.Tensor:
    """The reference loss (default switches), or a classic mistake in it (each switch plants one)."""
    teacher_temperature = temperature if soften_teacher else 1.0
    if unstable_log:  # log(softmax(x)): -inf where a probability underflows to 0
        log_q = torch.log(F.softmax(student_logits / temperature, dim=-1))
        log_p = torch.log(F.softmax(teacher_logits / teacher_temperature, dim=-1))
    else:
        log_q = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
        log_p = F.log_softmax(teacher_logits / teacher_temperature, dim=-1)  # (B, C)
    if student_probs:  # F.kl_div(softmax(student), p): probabilities where it wants logs
        log_q = log_q.exp()
    if reverse:  # KL(q || p)
        log_p, log_q = log_q, log_p
    terms = log_p.exp() * (log_p - log_q)  # (B, C)
    batch = student_logits.shape[0]
    kl = {
        "batchmean": terms.sum() / batch,
        "mean": terms.mean(),  # F.kl_div's "mean": over B x C elements
        "sum": terms.sum(),
    }[reduction]
    soft = temperature**power * kl
    hard_logits = student_logits / temperature if hard_at_temperature else student_logits
    hard = F.cross_entropy(hard_logits, labels)
    weight = 1.0 - alpha if swap_alpha else alpha
    return weight * soft + (1.0 - weight) * hard


def _loss_case(
    description: str,
    generator: torch.Generator,
    batch: int,
    classes: int,
    temperature: float,
    alpha: float,
    *,
    spread: float = 3.0,
    dtype: torch.dtype = torch.float32,
) -> Case:
    student = spread * _random(generator, batch, classes, dtype=dtype)
    teacher = spread * _random(generator, batch, classes, dtype=dtype)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    args = (student, teacher, labels, temperature, alpha)
    return Case(description, args, _distillation_loss(*args))


def _loss_cases() -> list[Case]:
    """T of 2, 4 and 1, alpha 0.7, 0.25, 1 and 0, float64, a very sure teacher, batch 1."""
    g = torch.Generator().manual_seed(180)
    return [
        _loss_case("batch 4, 3 classes, T = 2, alpha = 0.7", g, 4, 3, 2.0, 0.7),
        _loss_case("batch 6, 10 classes, T = 4, alpha = 0.25", g, 6, 10, 4.0, 0.25),
        _loss_case("batch 3, 5 classes, T = 1 (no softening), alpha = 0.5", g, 3, 5, 1.0, 0.5),
        _loss_case("batch 5, 4 classes, T = 3, alpha = 1 (the teacher alone)", g, 5, 4, 3.0, 1.0),
        _loss_case("batch 5, 4 classes, T = 3, alpha = 0 (the labels alone)", g, 5, 4, 3.0, 0.0),
        _loss_case(
            "float64, batch 5, 4 classes, T = 2.5, alpha = 0.6",
            g,
            5,
            4,
            2.5,
            0.6,
            dtype=torch.float64,
        ),
        _loss_case(
            "batch 4, 6 classes, T = 1, alpha = 0.5, logits about 100 apart (a very sure "
            "teacher and student)",
            g,
            4,
            6,
            1.0,
            0.5,
            spread=60.0,
        ),
        _loss_case("a single example, 3 classes, T = 2, alpha = 0.5", g, 1, 3, 2.0, 0.5),
    ]


_LOSS_MISTAKES = [
    _variant(
        "multiply the soft term by T²: softening by T shrinks its gradient by 1 / T², and T² "
        "gives it back its scale.",
        _distillation_loss,
        power=0,
    ),
    _variant(
        "the factor is T² (temperature ** 2), not T.",
        _distillation_loss,
        power=1,
    ),
    _variant(
        "KL(p || q) = Σ p (log p - log q) with p the teacher's probabilities: the teacher is "
        "the target. F.kl_div(input, target) computes KL(target || input): pass the student's "
        "log-probabilities as input and the teacher's probabilities as target.",
        _distillation_loss,
        reverse=True,
    ),
    _variant(
        "F.kl_div expects log-probabilities as its first argument: "
        "F.log_softmax(student_logits / T, dim=-1), not softmax.",
        _distillation_loss,
        student_probs=True,
    ),
    _variant(
        "alpha weighs the soft (teacher) term and 1 - alpha the hard-label cross-entropy, "
        "not the other way round.",
        _distillation_loss,
        swap_alpha=True,
    ),
    _variant(
        "average the KL divergence over the examples only (reduction='batchmean'): "
        "reduction='mean' divides by B × C, the number of elements.",
        _distillation_loss,
        reduction="mean",
    ),
    _variant(
        "average the KL divergence over the examples (reduction='batchmean'), not the sum.",
        _distillation_loss,
        reduction="sum",
    ),
    _variant(
        "soften the teacher too: p = softmax(teacher_logits / T), at the same temperature as "
        "the student.",
        _distillation_loss,
        soften_teacher=False,
    ),
    _variant(
        "the cross-entropy with the labels uses the student's own logits, at temperature 1: "
        "F.cross_entropy(student_logits, labels).",
        _distillation_loss,
        hard_at_temperature=True,
    ),
]

_STABLE_LOG = (
    "compute log-probabilities with F.log_softmax: torch.log(F.softmax(x)) turns a "
    "probability that underflows to 0 into log 0 = -inf, and 0 · -inf = NaN."
)


def _loss_problem(expected: torch.Tensor, got: Any) -> Problem | None:
    return _scalar_loss_problem(
        expected,
        got,
        one_number="average the KL divergence and the cross-entropy over the examples.",
        dtype_source="logits",
        not_finite=_STABLE_LOG,
    )


def check_distillation_loss(fn: Callable) -> bool:
    """Grade `fn(student_logits, teacher_logits, labels, temperature, alpha)` -> the loss.

    alpha * T² * KL(softmax(teacher / T) || softmax(student / T)), the KL summed over the
    classes and averaged over the examples, plus (1 - alpha) * cross_entropy(student_logits,
    labels); a scalar tensor (`bertcourse.compress.distillation_loss`).
    """
    _require_callable("check_distillation_loss", fn)
    return _run_cases(
        "check_distillation_loss",
        fn,
        _loss_cases(),
        _loss_problem,
        _LOSS_MISTAKES,
        "compute the two terms of case 1 apart and compare each with your formula: "
        "T² · KL first (alpha = 1), then the cross-entropy (alpha = 0).",
    )


# ----------------------------------------------------------------------------
# Exercise 2: int8 weights
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Quantized:
    """An answer of quantize_int8 (the reference's or a mistake's), with the weight it came from."""

    weight: torch.Tensor  # (out, in)
    q: torch.Tensor  # (out, in) int8
    scale: torch.Tensor  # (out,)


def _quantize_int8(
    weight: torch.Tensor,
    *,
    per_row: bool = True,
    magnitude: bool = True,
    divisor: float = 127.0,
    rounding: str = "round",
    negative_limit: int = 127,
    inverse: bool = False,
) -> _Quantized:
    """The reference quantization (default switches), or a classic mistake in it."""
    values = weight.abs() if magnitude else weight
    largest = values.amax(dim=1) if per_row else values.amax().expand(weight.shape[0])  # (out,)
    scale = torch.where(largest != 0, largest / divisor, torch.ones_like(largest))
    if negative_limit == 128:  # [-128, 127]: the negatives get their own step
        negative = (-weight).clamp_min(0).amax(dim=1) / 128
        scale = torch.maximum(weight.clamp_min(0).amax(dim=1) / 127, negative)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    ratio = weight / scale[:, None]
    rounded = {
        "round": torch.round,
        "floor": torch.floor,
        "truncate": torch.trunc,  # what .to(torch.int8) does to a float
    }[rounding](ratio)
    q = rounded.clamp(-negative_limit, 127).to(torch.int8)
    return _Quantized(weight, q, 1.0 / scale if inverse else scale)


def _quantize_case(description: str, weight: torch.Tensor) -> Case:
    return Case(description, (weight,), _quantize_int8(weight))


def _quantize_cases() -> list[Case]:
    """By hand, rows of magnitudes 0.001 to 10, a row of zeros, float64, one row, a tall matrix."""
    g = torch.Generator().manual_seed(181)
    by_hand = torch.tensor(
        [
            [0.5, -0.26, 0.1, 0.3],
            [-2.0, 0.9, 0.3, 1.1],
            [0.011, 0.02, -0.015, 0.005],
        ]
    )
    magnitudes = torch.logspace(-3, 1, 8)[:, None]
    with_zeros = _random(g, 4, 6)
    with_zeros[2] = 0.0
    return [
        _quantize_case(
            "a 3 x 4 weight by hand: rows of different sizes; row 1's largest magnitude is "
            "negative (-2.0)",
            by_hand,
        ),
        _quantize_case(
            "8 x 16, random rows of magnitudes 0.001 to 10", _random(g, 8, 16) * magnitudes
        ),
        _quantize_case("4 x 6 with row 2 all zeros (a channel pruned away)", with_zeros),
        _quantize_case("float64, 5 x 7", _random(g, 5, 7, dtype=torch.float64)),
        _quantize_case("1 x 300: one output channel, many inputs", _random(g, 1, 300)),
        _quantize_case("16 x 3: more outputs than inputs", _random(g, 16, 3)),
    ]


_QUANTIZE_MISTAKES = [
    _variant(
        "one scale per output channel: the largest magnitude of each row "
        "(weight.abs().amax(dim=1)), not one for the whole matrix; a row of small weights "
        "would keep only a few levels.",
        _quantize_int8,
        per_row=False,
    ),
    _variant(
        "the scale comes from the largest magnitude, negative values included: "
        "weight.abs().amax(dim=1), not weight.amax(dim=1).",
        _quantize_int8,
        magnitude=False,
    ),
    _variant(
        "divide by 127, the largest int8 value used: scale = max|w| / 127 maps the largest "
        "weight to exactly ±127; with 128 the largest would need 128, which int8 lacks.",
        _quantize_int8,
        divisor=128.0,
    ),
    _variant(
        "round to the nearest integer (torch.round): floor moves every value down, a "
        "systematic error of half a step on average.",
        _quantize_int8,
        rounding="floor",
    ),
    _variant(
        "round before converting: .to(torch.int8) truncates toward zero (2.9 becomes 2), so "
        "round(x / scale) first, then clamp, then convert.",
        _quantize_int8,
        rounding="truncate",
    ),
    _variant(
        "symmetric means one scale for both signs and the range [-127, 127]: -128 has no "
        "positive twin, so clamp at -127 and use scale = max|w| / 127.",
        _quantize_int8,
        negative_limit=128,
    ),
    _variant(
        "return the step size scale = max|w| / 127, so that weight ≈ q * scale[:, None]; "
        "127 / max|w| is its inverse.",
        _quantize_int8,
        inverse=True,
    ),
]

_ZERO_ROW = (
    "a row of zeros has max|w| = 0, and a scale of 0 divides 0 by 0 (NaN): give such rows a "
    "positive scale, e.g. torch.where(largest > 0, largest / 127, 1.0), so that q = 0."
)
_ROW_SCALES = (
    "one scale per output channel, i.e. per row: reduce over the input features, "
    "weight.abs().amax(dim=1), shape (out,)."
)


def _quantize_problem(expected: _Quantized, got: Any) -> Problem | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return Problem(
            [f"expected the pair (q, scale), got a {type(got).__name__}"],
            "return two tensors: q, the int8 weight, and scale, one per row.",
        )
    q, scale = got
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        return Problem(
            [f"expected two tensors, got a {type(q).__name__} and a {type(scale).__name__}"],
            "return two tensors: q, the int8 weight, and scale, one per row.",
        )
    rows, columns = expected.weight.shape
    if tuple(q.shape) != (rows, columns):
        return Problem(
            [f"q has shape {_fmt_shape(q.shape)}, expected {_fmt_shape((rows, columns))}"],
            "q has the weight's shape: one integer per weight.",
        )
    if tuple(scale.shape) not in ((rows,), (rows, 1)):
        return Problem(
            [f"scale has shape {_fmt_shape(scale.shape)}, expected {_fmt_shape((rows,))}"],
            _ROW_SCALES,
        )
    if q.dtype != torch.int8:
        return Problem(
            [f"q has dtype {q.dtype}, expected torch.int8"],
            "store q as int8: .to(torch.int8) after rounding and clamping.",
        )
    if not scale.is_floating_point():
        return Problem(
            [f"scale has dtype {scale.dtype}, expected a float dtype"],
            "the scales are fractions (max|w| / 127): keep them as floats.",
        )
    scale = scale.detach().reshape(rows).double()
    zero_rows = (expected.weight == 0).all(dim=1)
    bad = ~torch.isfinite(scale) | (zero_rows & ~(scale > 0))
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        return Problem([f"scale of row {row} (all zeros) is {scale[row].item():.6g}"], _ZERO_ROW)
    target = expected.scale.double()
    wrong = ~zero_rows & ~torch.isclose(scale, target, rtol=1e-5, atol=0.0)
    if bool(wrong.any()):
        row = int(wrong.nonzero()[0])
        return Problem(
            [f"scale of row {row}: expected {target[row].item():.6g}, got {scale[row].item():.6g}"]
        )
    # At an exact tie (x.5) either neighbour is a fair rounding.
    ratio = expected.weight.double() / target[:, None]
    tie = (ratio - ratio.floor() - 0.5).abs() < 1e-4
    difference = q.long() - expected.q.long()
    wrong = (difference != 0) & ~(tie & (difference.abs() == 1))
    if bool(wrong.any()):
        i, j = (int(v) for v in wrong.nonzero()[0])
        return Problem(
            [
                f"q[{i}, {j}]: expected {int(expected.q[i, j])}, got {int(q[i, j])} "
                f"(weight {expected.weight[i, j].item():.6g}, scale {target[i].item():.6g})"
            ]
        )
    return None


def check_int8_quantize(fn: Callable) -> bool:
    """Grade `fn(weight)` -> (q, scale): symmetric int8 quantization, one scale per row.

    scale = max |row| / 127 (a row of zeros: any positive scale), q = round(weight / scale)
    clamped to [-127, 127], int8 (`bertcourse.compress.quantize_symmetric`). Exact ties
    (x.5) may round either way.
    """
    _require_callable("check_int8_quantize", fn)
    return _run_cases(
        "check_int8_quantize",
        fn,
        _quantize_cases(),
        _quantize_problem,
        _QUANTIZE_MISTAKES,
        "work out row 1 of case 1 by hand: its largest magnitude, the scale, then each "
        "weight / scale rounded.",
    )
