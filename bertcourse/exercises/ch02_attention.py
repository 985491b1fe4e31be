"""Chapter 2, attention: scaled dot-product attention, local and causal masks, a stable softmax,
blockwise attention."""

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
    Problem,
    _attention_shape_hint,
    _compare_output_and_probs,
    _fmt_index,
    _fmt_shape,
    _random,
    _real_tokens,
    _run_cases,
    _tensor_comparison,
    _variant,
)

__all__ = [
    "check_attention",
    "check_causal_attention",
    "check_local_attention_mask",
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


def _attention_case(
    description: str,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> Case:
    """A case whose expected answer is the package's attention; the mask passed by keyword."""
    kwargs = {} if mask is None else {"attention_mask": mask}
    expected = scaled_dot_product_attention(query, key, value, mask)
    return Case(description, (query, key, value), expected, kwargs)


def _attention_cases() -> list[Case]:
    """Shapes with and without batch and heads; bool, float, causal masks; a fully padded row."""
    g = torch.Generator().manual_seed(2)
    cases = [
        _attention_case(
            "one head, 5 queries, 7 keys, d_k 8, d_v 3, no mask",
            _random(g, 5, 8),
            _random(g, 7, 8),
            _random(g, 7, 3),
        ),
        _attention_case(
            "batch 2, 3 heads, length 5, d_k 4, no mask", *_random(g, 3, 2, 3, 5, 4).unbind(0)
        ),
        _attention_case(
            "batch 2, 3 heads, length 6, with padding (bool mask (B, 1, 1, T))",
            *_random(g, 3, 2, 3, 6, 4).unbind(0),
            _padding_mask([6, 3], 6),
        ),
    ]
    float_mask = _random(g, 3, 1, 1, 5) + additive_mask(_padding_mask([5, 2, 4], 5), torch.float32)
    return cases + [
        _attention_case(
            "batch 3, 2 heads, length 5, float mask added to the scores (biases and padding)",
            *_random(g, 3, 3, 2, 5, 8).unbind(0),
            float_mask,
        ),
        _attention_case(
            "bool mask of shape (T, T) (causal), broadcast over batch 2 and 2 heads",
            *_random(g, 3, 2, 2, 4, 6).unbind(0),
            torch.ones(4, 4, dtype=torch.bool).tril(),
        ),
        _attention_case(
            "batch 2, 1 head, length 1 (a single token), bool mask",
            *_random(g, 3, 2, 1, 1, 4).unbind(0),
            _padding_mask([1, 1], 1),
        ),
        _attention_case(
            "batch 2, 2 heads, length 5, the second sequence fully padded (bool mask)",
            *_random(g, 3, 2, 2, 5, 4).unbind(0),
            _padding_mask([4, 0], 5),
        ),
        _attention_case(
            "float64, batch 2, 4 heads, length 6, with padding (bool mask)",
            *_random(g, 3, 2, 4, 6, 8, dtype=torch.float64).unbind(0),
            _padding_mask([6, 2], 6),
        ),
    ]


_ATTENTION_MISTAKES = [
    _variant(_UNSCALED, _attention, divide_by="none"),
    _variant(_DIVIDED_BY_DK, _attention, divide_by="d_k"),
    _variant(_MASK_IGNORED, _attention, mask_mode="ignore"),
    _variant(_MASK_INVERTED, _attention, mask_mode="invert"),
    _variant(_MASK_AFTER_SOFTMAX, _attention, mask_mode="after_softmax"),
    _variant(_WRONG_AXIS, _attention, softmax_dim=-2),
    _variant(_SCORES_TRANSPOSED, _attention, scores_transposed=True),
    _variant(_FLOAT_AS_BOOL, _attention, mask_mode="float_as_bool"),
    _variant(_MINUS_INF, _attention, mask_mode="minus_inf"),
]


def check_attention(fn: Callable) -> bool:
    """Grade `fn(query, key, value, attention_mask=None)` -> output, or (output, attention_probs).

    query (..., L_q, d_k), key (..., L_k, d_k), value (..., L_k, d_v). The mask
    is broadcastable to (..., L_q, L_k): bool with True where a query may
    attend, or float, added to the scores. Reference:
    `bertcourse.attention.scaled_dot_product_attention` (a fully masked row
    becomes a uniform average, thanks to `torch.finfo(dtype).min`).
    """
    return _run_cases(
        "check_attention",
        fn,
        _attention_cases(),
        _compare_output_and_probs(_MINUS_INF),
        _ATTENTION_MISTAKES,
        "compare each step with softmax(Q Kᵀ / √d_k + mask) V on this case's shapes.",
    )


# ----------------------------------------------------------------------------
# Exercise 1: a local (sliding-window) attention mask over a padded batch
# ----------------------------------------------------------------------------


def _local_attention_mask(
    attention_mask: torch.Tensor,
    window: int,
    *,
    distance: str = "both",
    padding: str = "keys",
    invert: bool = False,
) -> torch.Tensor:
    """The reference local mask (B, 1, T, T), or one of its classic mistakes."""
    length = attention_mask.shape[-1]
    positions = torch.arange(length)
    offset = positions[:, None] - positions[None, :]  # (T, T): query i minus key j
    near = {
        "both": offset.abs() <= window,
        "strict": offset.abs() < window,
        "past": (offset >= 0) & (offset <= window),
    }[distance]
    real = attention_mask.bool()
    if padding == "prefix":  # the real tokens assumed to come first
        real = positions[None, :] < attention_mask.long().sum(-1, keepdim=True)
    keys, queries = real[:, None, None, :], real[:, None, :, None]
    blocked = {
        "keys": near & keys,
        "prefix": near & keys,
        "ignored": near.expand(len(real), 1, length, length),
        "queries": near & queries,
        "both": near & keys & queries,
    }
    return ~blocked[padding] if invert else blocked[padding]


def _local_case(description: str, attention_mask: list[list[int]] | torch.Tensor, window: int):
    mask = torch.as_tensor(attention_mask)
    return Case(description, (mask, window), _local_attention_mask(mask, window))


def _local_cases() -> list[Case]:
    """Right and left padding, windows of 0 and beyond the length, a fully padded row, bools."""
    return [
        _local_case("batch 2, length 6, window 1, right padding", [[1] * 6, [1] * 4 + [0] * 2], 1),
        _local_case(
            "batch 3, length 8, window 2, right padding (8, 5 and 1 real tokens)",
            [[1] * 8, [1] * 5 + [0] * 3, [1] + [0] * 7],
            2,
        ),
        _local_case(
            "batch 2, length 7, window 2, the first sentence padded on the LEFT",
            [[0, 0, 0, 1, 1, 1, 1], [1] * 7],
            2,
        ),
        _local_case(
            "batch 2, length 5, window 0 (each token sees itself)", [[1] * 5, [1] * 3 + [0] * 2], 0
        ),
        _local_case(
            "batch 2, length 5, window 9 (wider than the sentence: the padding mask)",
            [[1] * 5, [1] * 2 + [0] * 3],
            9,
        ),
        _local_case(
            "batch 2, length 4, window 1, the second sequence entirely padding",
            [[1, 1, 1, 0], [0, 0, 0, 0]],
            1,
        ),
        _local_case("batch 1, length 1 (a single token), window 3", [[1]], 3),
        _local_case(
            "a bool attention_mask (True = real token), batch 2, length 6, window 2",
            torch.tensor([[True] * 6, [True] * 3 + [False] * 3]),
            2,
        ),
    ]


def _local_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    batch, _, length, _ = expected
    if tuple(got) == (batch, length, length):
        return "add the head axis: (B, 1, T, T), so that the mask broadcasts over the heads."
    return (
        f"the mask has shape (B, 1, T, T) = {_fmt_shape(expected)}: a (T, T) band for every "
        "sentence, with an axis of size 1 for the heads."
    )


def _compare_local_mask(expected: torch.Tensor, got: Any) -> Problem | None:
    if not isinstance(got, torch.Tensor):
        return Problem(
            [
                f"expected a bool tensor of shape {_fmt_shape(expected.shape)}, got {type(got).__name__}"
            ],
            "return the mask tensor itself.",
        )
    if got.shape != expected.shape:
        return Problem(
            [
                f"mask has the wrong shape: expected {_fmt_shape(expected.shape)}, got {_fmt_shape(got.shape)}"
            ],
            _local_shape_hint(expected.shape, got.shape),
        )
    if got.dtype != torch.bool:
        return Problem(
            [f"mask has dtype {got.dtype}, expected torch.bool"],
            "return a bool mask (True = may attend): convert the tokenizer's 1/0 with .bool(), "
            "and combine conditions with &, not + or *.",
        )
    if torch.equal(got.cpu(), expected):
        return None
    wrong = (got.cpu() != expected).nonzero()[0].tolist()
    b, _, i, j = wrong
    should = "may" if bool(expected[b, 0, i, j]) else "may not"
    return Problem(
        [
            f"mask{_fmt_index(wrong)} is {bool(got[b, 0, i, j])}, but in sentence {b} query {i} "
            f"{should} attend to key {j} ({int((got.cpu() != expected).sum())} entries differ)"
        ]
    )


_LOCAL_MISTAKES = [
    _variant(_MASK_INVERTED, _local_attention_mask, invert=True),
    _variant(
        "the window includes the keys exactly `window` positions away: |i - j| <= window.",
        _local_attention_mask,
        distance="strict",
    ),
    _variant(
        "the window looks both ways: keys up to `window` positions before *and* after the query.",
        _local_attention_mask,
        distance="past",
    ),
    _variant(
        "padded keys receive attention: combine the window with the padding mask (&).",
        _local_attention_mask,
        padding="ignored",
    ),
    _variant(
        "the padding mask blocks keys, the last axis: [:, None, None, :], not queries "
        "([:, None, :, None]).",
        _local_attention_mask,
        padding="queries",
    ),
    _variant(
        "block padded keys only: a padded query's row keeps its real keys (see exercise 6 for why "
        "rows are left alone).",
        _local_attention_mask,
        padding="both",
    ),
    _variant(
        "padding may sit on the left: use the mask itself, not a length from its sum.",
        _local_attention_mask,
        padding="prefix",
    ),
]


def check_local_attention_mask(fn: Callable) -> bool:
    """Grade `fn(attention_mask, window)` -> (B, 1, T, T) bool local-attention mask.

    attention_mask: (B, T), 1 (or True) at real tokens and 0 at padding, on
    either side. The result is True where query i may attend to key j:
    |i - j| <= window and key j is a real token; padded queries keep their
    real keys, as with the padding mask of the chapter.
    """
    return _run_cases(
        "check_local_attention_mask",
        fn,
        _local_cases(),
        _compare_local_mask,
        _LOCAL_MISTAKES,
        "print your mask for one sentence, mask[b, 0].int(), and compare it with the band "
        "|i - j| <= window restricted to the real keys.",
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


def _softmax_case(description: str, scores: torch.Tensor) -> Case:
    """A case whose expected answer is torch's softmax over the last dimension."""
    return Case(description, (scores,), torch.softmax(scores, dim=-1))


def _softmax_cases() -> list[Case]:
    """Small scores, scores where exp() overflows or underflows, odd shapes, float64."""
    g = torch.Generator().manual_seed(4)
    return [
        _softmax_case("4 rows of 6 small scores", _random(g, 4, 6)),
        _softmax_case("one row (a 1-D tensor) of 5 scores", _random(g, 5)),
        _softmax_case(
            "scores around +1000 (exp overflows in float32)", 1000 + 10 * _random(g, 3, 5)
        ),
        _softmax_case("scores around -1000 (exp underflows to 0)", -1000 + 10 * _random(g, 3, 5)),
        _softmax_case(
            "rows on very different scales: one around +500, one around -500",
            torch.stack([500 + _random(g, 4), -500 + _random(g, 4)]),
        ),
        _softmax_case(
            "a batch (2, 3, 4) with a masked key (torch.finfo(float32).min)",
            _random(g, 2, 3, 4).index_fill(-1, torch.tensor([3]), torch.finfo(torch.float32).min),
        ),
        _softmax_case("rows of one score each (3, 1)", _random(g, 3, 1)),
        _softmax_case(
            "float64, 3 rows of 6 scores around 300", 300 + _random(g, 3, 6, dtype=torch.float64)
        ),
        _softmax_case("square scores (4, 4)", _random(g, 4, 4)),
    ]


def _softmax_naive(scores: torch.Tensor) -> torch.Tensor:
    """exp() straight away, without subtracting the maximum."""
    exponentials = scores.exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def _softmax_global_max(scores: torch.Tensor) -> torch.Tensor:
    """The maximum of the whole tensor subtracted, not each row's."""
    exponentials = (scores - scores.max()).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def _softmax_no_keepdim(scores: torch.Tensor) -> torch.Tensor:
    """The row sums without keepdim=True, so they broadcast along the wrong axis."""
    exponentials = (scores - scores.max(dim=-1, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=-1)


def _softmax_first_dim(scores: torch.Tensor) -> torch.Tensor:
    """Normalised over the first dimension instead of the last."""
    return torch.softmax(scores, dim=0)


def _softmax_minus_min(scores: torch.Tensor) -> torch.Tensor:
    """Each row's minimum subtracted instead of its maximum."""
    exponentials = (scores - scores.min(dim=-1, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


_SOFTMAX_MISTAKES = [
    Mistake(
        "exp overflows (or underflows to 0/0): subtract each row's maximum before exp; "
        "it cancels between numerator and denominator.",
        _softmax_naive,
    ),
    Mistake(
        "subtract each row's own maximum (max(dim=-1, keepdim=True)), not the maximum "
        "of the whole tensor: rows far below it underflow to 0/0.",
        _softmax_global_max,
    ),
    Mistake(
        "subtract the row *maximum*, so that the largest exponent is exp(0) = 1; "
        "subtracting the minimum still overflows.",
        _softmax_minus_min,
    ),
    Mistake(
        "sum with keepdim=True: without it the (rows,) sums broadcast along the wrong axis.",
        _softmax_no_keepdim,
    ),
    Mistake(
        "normalise over the last dimension (dim=-1): each row is one distribution.",
        _softmax_first_dim,
    ),
]


def check_softmax(fn: Callable) -> bool:
    """Grade a numerically stable `fn(scores)` -> softmax over the last dimension.

    The cases include scores around +1000 and -1000, where exp() overflows or
    underflows unless each row's maximum is subtracted first.
    """
    nan_hint = "NaN or inf: exp overflowed or 0/0 appeared; subtract each row's maximum before exp."
    return _run_cases(
        "check_softmax",
        fn,
        _softmax_cases(),
        _tensor_comparison("softmax", nan_hint=nan_hint),
        _SOFTMAX_MISTAKES,
    )


def _blockwise_case(
    description: str,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_size: int,
) -> Case:
    """A case whose expected answer is full attention, which blockwise attention must equal."""
    expected, _ = scaled_dot_product_attention(query, key, value)
    return Case(description, (query, key, value, block_size), expected)


def _blockwise_cases() -> list[Case]:
    """Block sizes that divide the length or not, one key, one block; extreme scores; float64."""
    g = torch.Generator().manual_seed(5)
    cases = [
        _blockwise_case(
            "batch 2, 4 heads, length 50, d 16, blocks of 16 (the last holds 2 keys)",
            *_random(g, 3, 2, 4, 50, 16).unbind(0),
            16,
        ),
        _blockwise_case(
            "batch 1, 2 heads, length 12, blocks of 4 (divides the length)",
            *_random(g, 3, 1, 2, 12, 8).unbind(0),
            4,
        ),
        _blockwise_case("one head, length 7, blocks of 1 key", *_random(g, 3, 7, 4).unbind(0), 1),
        _blockwise_case(
            "one head, length 10, one block larger than the sequence (64)",
            *_random(g, 3, 10, 4).unbind(0),
            64,
        ),
        _blockwise_case(
            "5 queries, 9 keys, d_k 4, d_v 6, blocks of 4",
            _random(g, 5, 4),
            _random(g, 9, 4),
            _random(g, 9, 6),
            4,
        ),
        _blockwise_case(
            "large scores (about ±400): exp overflows without the running maximum",
            30 * _random(g, 1, 2, 8, 16),
            30 * _random(g, 1, 2, 8, 16),
            _random(g, 1, 2, 8, 16),
            3,
        ),
    ]
    negative_key = 1 + 0.1 * _random(g, 2, 9, 16)
    return cases + [
        _blockwise_case(
            "very negative scores (about -120): exp underflows unless the maximum starts at -inf",
            -30 + 0.5 * _random(g, 2, 6, 16),
            negative_key,
            _random(g, 2, 9, 16),
            4,
        ),
        _blockwise_case(
            "float64, batch 2, 2 heads, length 11, blocks of 5",
            *_random(g, 3, 2, 2, 11, 8, dtype=torch.float64).unbind(0),
            5,
        ),
    ]


def _blockwise(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_size: int,
    *,
    rescale: bool = True,
    divide: bool = True,
    scale: bool = True,
    start_max: float = -math.inf,
    last_block: bool = True,
    track_max: bool = True,
) -> torch.Tensor:
    """Blockwise attention with a running maximum, or one of its classic mistakes."""
    factor = 1 / math.sqrt(query.shape[-1]) if scale else 1.0
    running_max = torch.full(query.shape[:-1] + (1,), start_max, dtype=query.dtype)
    running_sum = torch.zeros(query.shape[:-1] + (1,), dtype=query.dtype)
    output = torch.zeros(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype)
    length = key.shape[-2]
    stop = length if last_block else length - length % block_size
    for start in range(0, stop, block_size):
        block_scores = query @ key[..., start : start + block_size, :].transpose(-2, -1) * factor
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


_BLOCKWISE_MISTAKES = [
    _variant(
        "when the maximum grows, rescale both the running sum and the running output "
        "by exp(old_max - new_max) before adding the new block.",
        _blockwise,
        rescale=False,
    ),
    _variant("divide the running output by the running sum at the end.", _blockwise, divide=False),
    _variant(_UNSCALED, _blockwise, scale=False),
    _variant(
        "the last block is shorter: loop over range(0, L_k, block_size) and slice "
        "key[..., start:start + block_size, :], which stops at the end.",
        _blockwise,
        last_block=False,
    ),
    _variant(
        "start the running maximum at -inf, not 0: with very negative scores exp(s - 0) "
        "underflows to 0 and the result is 0/0.",
        _blockwise,
        start_max=0.0,
    ),
    _variant(
        "subtract the running maximum before exp(): without it large scores overflow.",
        _blockwise,
        track_max=False,
    ),
]


def check_blockwise_attention(fn: Callable) -> bool:
    """Grade `fn(query, key, value, block_size)` -> output (..., L_q, d_v), without a mask.

    It must equal full attention for any block size (one key, a size that
    does not divide the length, one larger than it), and stay finite for very
    large and very negative scores, where the running maximum matters.
    """
    nan_hint = (
        "NaN or inf: exp overflowed or underflowed. Keep a running maximum that starts at -inf "
        "and subtract it before exp()."
    )
    return _run_cases(
        "check_blockwise_attention",
        fn,
        _blockwise_cases(),
        _tensor_comparison("output", _attention_shape_hint, nan_hint),
        _BLOCKWISE_MISTAKES,
    )
