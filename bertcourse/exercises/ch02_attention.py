"""Chapter 2, attention: scaled dot-product attention, causal, a stable softmax, blockwise."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..attention import additive_mask, scaled_dot_product_attention
from ._grading import (
    _MASK_IGNORED,
    _MINUS_INF,
    _WRONG_AXIS,
    Case,
    Mistake,
    _attention_shape_hint,
    _compare_output_and_probs,
    _random,
    _real_tokens,
    _run_cases,
    _tensor_comparison,
)

__all__ = [
    "check_attention",
    "check_causal_attention",
    "check_softmax",
    "check_blockwise_attention",
]


def _padding_mask(lengths: Sequence[int], length: int) -> torch.Tensor:
    """(B, 1, 1, T) bool, True at the real tokens (keys that may be attended to)."""
    return _real_tokens(lengths, length)[:, None, None, :]


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
                additive = additive_mask(mask, scores.dtype)
                if mask_mode == "minus_inf":
                    additive = additive.masked_fill(~mask, float("-inf"))
                scores = scores + additive
        elif mask_mode == "float_as_bool":  # 0 / min read as "False = blocked / True = allowed"
            scores = scores + additive_mask(mask.bool(), scores.dtype)
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
_MASK_INVERTED = (
    "the mask is inverted: in a bool mask True means the query *may* attend to that key "
    "(as in torch.nn.functional.scaled_dot_product_attention)."
)
_MASK_AFTER_SOFTMAX = (
    "zeroing probabilities after the softmax leaves rows that do not sum to 1: apply the mask "
    "to the scores, before the softmax."
)
_SCORES_TRANSPOSED = "scores must be query @ key.transpose(-2, -1): (L_q, L_k), one row per query."
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
    float_mask = _random(g, 3, 1, 1, 5) + additive_mask(_padding_mask([5, 2, 4], 5), torch.float32)
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
