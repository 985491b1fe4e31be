"""Chapter 17, making BERT fast: the arithmetic intensity of a product, the padding of batches.

The exercises, as the chapter states them:

**Exercise 1 (coding, ★☆☆): arithmetic intensity.** Write `flops_per_byte(m, k, n,
bytes_per_element)`: the FLOPs per byte moved of the product of an (m, k) matrix by a
(k, n) matrix whose elements take `bytes_per_element` bytes each (4 for float32, 2 for
bfloat16). Count 2 FLOPs per multiply-add, and as bytes moved the least a product must move:
both inputs read once and the (m, n) output written once. Return a float.

**Exercise 2 (coding, ★★☆): the padding of a batching.** Write `padding_share(lengths,
batch_size)`. `lengths` are the token counts of the examples in the order a loader takes
them; it cuts them into consecutive batches of `batch_size` (the last batch holds what is
left, possibly fewer) and pads each batch to its own longest example (dynamic padding).
Return the fraction of all the positions of the padded batches that are padding, a float in
[0, 1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from ._grading import Case, Problem, _require_callable, _run_cases, _unwrap_scalar, _variant

__all__ = [
    "check_arithmetic_intensity",
    "check_padding_fraction",
]


def _number_problem(expected: float, got: Any, what: str) -> Problem | None:
    """A plain number within 1e-6 (relative) of the expected one."""
    value = _unwrap_scalar(got)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Problem(
            [f"expected {what} as a number, got a {type(got).__name__}"],
            "return a plain number (float(...) or tensor.item()).",
        )
    if math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9):  # float32 rounds at ~1e-7
        return None
    return Problem([f"{what}: expected {expected:.6g}, got {value:.6g}"])


# ----------------------------------------------------------------------------
# Exercise 1: arithmetic intensity
# ----------------------------------------------------------------------------


def _intensity(
    m: int,
    k: int,
    n: int,
    bytes_per_element: int,
    *,
    flops_per_multiply_add: int = 2,
    output: str = "m n",
    element_bytes: bool = True,
    invert: bool = False,
    sizes: str = "products",
    floor: bool = False,
) -> float:
    """The intensity (default switches), or a classic mistake in it."""
    flops = flops_per_multiply_add * m * k * n
    output_elements = {"m n": m * n, "none": 0, "m k": m * k}[output]
    elements = m * k + k * n + output_elements if sizes == "products" else m + k + n
    moved = elements * (bytes_per_element if element_bytes else 1)
    if invert:
        return moved / flops
    return flops // moved if floor else flops / moved


def _intensity_case(description: str, m: int, k: int, n: int, bytes_per_element: int) -> Case:
    args = (m, k, n, bytes_per_element)
    return Case(description, args, _intensity(*args))


def _intensity_cases() -> list[Case]:
    """Small and square products, BERT's projections and decoder, one attention head, a
    matrix-vector product, float64."""
    return [
        _intensity_case("a (2, 3) @ (3, 4) product in float32", 2, 3, 4, 4),
        _intensity_case("a square 512 x 512 x 512 product in float32", 512, 512, 512, 4),
        _intensity_case(
            "tiny BERT's query projection, 4,096 tokens x 128 -> 128, in bfloat16",
            4096, 128, 128, 2,
        ),
        _intensity_case(
            "the MLM decoder, 4,096 tokens x 128 -> 30,522 words, in float32",
            4096, 128, 30522, 4,
        ),
        _intensity_case("one head's scores, (128, 64) @ (64, 128), in bfloat16", 128, 64, 128, 2),
        _intensity_case("a matrix-vector product, (1, 768) @ (768, 3072), float32", 1, 768, 3072, 4),
        _intensity_case("a (64, 32) @ (32, 96) product in float64", 64, 32, 96, 8),
    ]  # fmt: skip


_INTENSITY_MISTAKES = [
    _variant(
        "a multiply-add is 2 FLOPs (a multiply and an add): the product does 2 m k n FLOPs.",
        _intensity,
        flops_per_multiply_add=1,
    ),
    _variant(
        "the (m, n) output is written to memory too: the bytes are those of m k + k n + m n "
        "elements.",
        _intensity,
        output="none",
    ),
    _variant(
        "the output is an (m, n) matrix: its elements are m n, not m k.",
        _intensity,
        output="m k",
    ),
    _variant(
        "intensity is per byte, not per element: multiply the elements moved by bytes_per_element.",
        _intensity,
        element_bytes=False,
    ),
    _variant(
        "intensity is FLOPs per byte: divide the FLOPs by the bytes, not the bytes by the FLOPs.",
        _intensity,
        invert=True,
    ),
    _variant(
        "count the elements of each matrix (m k, k n and m n), not the sum of the dimensions.",
        _intensity,
        sizes="dimensions",
    ),
    _variant(
        "use true division (/): floor division (//) drops the fraction of a FLOP per byte.",
        _intensity,
        floor=True,
    ),
]


def check_arithmetic_intensity(fn: Any) -> bool:
    """Grade `fn(m, k, n, bytes_per_element)` -> FLOPs per byte of an (m, k) @ (k, n) product:
    2 m k n / (bytes_per_element (m k + k n + m n))."""
    _require_callable("check_arithmetic_intensity", fn)
    return _run_cases(
        "check_arithmetic_intensity",
        fn,
        _intensity_cases(),
        lambda expected, got: _number_problem(expected, got, "FLOPs per byte"),
        _INTENSITY_MISTAKES,
        "work out case 1 by hand: 2 x 2 x 3 x 4 = 48 FLOPs; the two inputs and the output "
        "hold 6 + 12 + 8 elements of 4 bytes.",
    )


# ----------------------------------------------------------------------------
# Exercise 2: the padding of a batching
# ----------------------------------------------------------------------------


def _padding_fraction(
    lengths: Sequence[int],
    batch_size: int,
    *,
    width: str = "batch",
    denominator: str = "positions",
    last: str = "keep",
    order: str = "given",
    average: str = "pooled",
    complement: bool = False,
    scale: float = 1.0,
) -> float:
    """The fraction (default switches), or a classic mistake in it."""
    lengths = list(lengths)
    if order == "sorted":
        lengths = sorted(lengths, reverse=True)
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    if last == "drop" and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches = batches[:-1]
    fractions, padding, positions, real = [], 0, 0, 0
    for batch in batches:
        rows = batch_size if last == "full" else len(batch)
        longest = max(lengths) if width == "global" else max(batch)
        batch_positions = rows * longest
        fractions.append(1 - sum(batch) / batch_positions)
        padding += batch_positions - sum(batch)
        positions += batch_positions
        real += sum(batch)
    if average == "batches":
        fraction = sum(fractions) / len(fractions)
    else:
        fraction = padding / (positions if denominator == "positions" else real)
    return scale * ((1 - fraction) if complement else fraction)


def _padding_cases() -> list[Case]:
    """Two full batches, a short last batch, no padding, batches of one, one batch for all,
    a few hundred random lengths at random and sorted."""
    rng = random.Random(17)
    lengths = [max(3, int(rng.lognormvariate(3.0, 0.6))) for _ in range(200)]
    cases = [
        ("4 examples in 2 batches of 2", ([5, 3, 8, 2], 2)),
        ("7 examples in batches of 3: the last batch holds 1", ([4, 4, 4, 9, 1, 2, 7], 3)),
        ("6 examples of one length: no padding", ([12] * 6, 4)),
        ("batches of 1: each example is its own longest", ([7, 1, 30, 2, 9], 1)),
        ("5 examples, batch_size 8: one batch of 5", ([3, 17, 6, 11, 2], 8)),
        ("200 random lengths in batches of 16 (the last holds 8)", (lengths, 16)),
        (
            "the same 200 lengths sorted longest first, batches of 16",
            (sorted(lengths, reverse=True), 16),
        ),
    ]
    return [Case(text, args, _padding_fraction(*args)) for text, args in cases]


_PADDING_MISTAKES = [
    _variant(
        "pad each batch to its own longest example (dynamic padding), not every batch to the "
        "longest example of all.",
        _padding_fraction,
        width="global",
    ),
    _variant(
        "divide the padding by all positions of the padded batches (real tokens + padding), "
        "not by the real tokens alone.",
        _padding_fraction,
        denominator="real",
    ),
    _variant(
        "return the fraction of padding, not of real tokens: padding / positions.",
        _padding_fraction,
        complement=True,
    ),
    _variant(
        "keep the last, smaller batch: the loader runs it too (range(0, len(lengths), "
        "batch_size) reaches it).",
        _padding_fraction,
        last="drop",
    ),
    _variant(
        "the last batch holds only the examples left (len(lengths) % batch_size rows): do not "
        "count missing rows as padding.",
        _padding_fraction,
        last="full",
    ),
    _variant(
        "batches are consecutive runs of lengths in the order given: do not sort them (that "
        "is grouping by length, another batching).",
        _padding_fraction,
        order="sorted",
    ),
    _variant(
        "add up the padding and the positions of all batches, then divide once: the mean of "
        "the batches' fractions gives a short last batch as much weight as a full one.",
        _padding_fraction,
        average="batches",
    ),
    _variant(
        "return a fraction in [0, 1), not a percentage.",
        _padding_fraction,
        scale=100.0,
    ),
]


def check_padding_fraction(fn: Any) -> bool:
    """Grade `fn(lengths, batch_size)` -> the fraction of padding positions when the lengths,
    in the order given, are cut into consecutive batches of batch_size (the last may be
    smaller) and each batch is padded to its own longest example."""
    _require_callable("check_padding_fraction", fn)
    return _run_cases(
        "check_padding_fraction",
        fn,
        _padding_cases(),
        lambda expected, got: _number_problem(expected, got, "padding fraction"),
        _PADDING_MISTAKES,
        "work out case 2 by hand: batches [4, 4, 4], [9, 1, 2] and [7] are 12, 27 and 7 "
        "positions; how many of them are padding?",
    )
