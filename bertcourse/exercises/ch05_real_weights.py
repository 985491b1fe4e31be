"""Chapter 5, real weights: mean pooling, the heads that attend to [SEP]."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..attention import additive_mask
from ._grading import (
    Case,
    Mistake,
    Problem,
    _random,
    _real_tokens,
    _run_cases,
    _tensor_comparison,
    _variant,
)

__all__ = [
    "check_mean_pooling",
    "check_strongest_sep_heads",
]


def _mean_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)


def _pooling_case(description: str, hidden: torch.Tensor, mask: torch.Tensor) -> Case:
    """A case whose expected answer is the reference mean pooling."""
    return Case(description, (hidden, mask), _mean_pooling(hidden, mask))


def _right_padding(lengths: list[int], length: int) -> torch.Tensor:
    """(B, T) int mask, 1 at the real tokens of right-padded rows of the given lengths."""
    return _real_tokens(lengths, length).long()


def _mean_pooling_cases() -> list[Case]:
    """Int and bool masks, right and left padding, one token, a fully padded row, float64."""
    g = torch.Generator().manual_seed(11)
    return [
        _pooling_case(
            "batch 3, length 6, hidden 4, right padding, int mask",
            _random(g, 3, 6, 4),
            _right_padding([6, 4, 2], 6),
        ),
        _pooling_case(
            "batch 2, length 5, hidden 3, no padding",
            _random(g, 2, 5, 3),
            _right_padding([5, 5], 5),
        ),
        _pooling_case(
            "batch 1, length 1 (a single token), hidden 8",
            _random(g, 1, 1, 8),
            _right_padding([1], 1),
        ),
        _pooling_case(
            "batch 2, length 4, hidden 5, bool mask",
            _random(g, 2, 4, 5),
            _right_padding([3, 1], 4).bool(),
        ),
        _pooling_case(
            "batch 3, length 5, hidden 4, left padding (mask 0 0 1 1 1)",
            _random(g, 3, 5, 4),
            _right_padding([5, 3, 2], 5).flip(-1),
        ),
        _pooling_case(
            "batch 2, length 4, hidden 3, the second row fully padded (no real token)",
            _random(g, 2, 4, 3),
            _right_padding([4, 0], 4),
        ),
        _pooling_case(
            "float64, batch 2, length 7, hidden 6, right padding",
            _random(g, 2, 7, 6, dtype=torch.float64),
            _right_padding([7, 2], 7),
        ),
    ]


def _pooled_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    """The hint for a pooled output of the wrong shape."""
    return "average over the tokens (dim=1), keeping one vector per sequence: (B, H)."


def _masked_sum(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sum over the real tokens, not divided by their number."""
    return (hidden * mask.unsqueeze(-1).to(hidden.dtype)).sum(1)


def _pool_first_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the first tokens, as many as the row has real ones, wherever they are."""
    lengths = mask.long().sum(1)
    return torch.stack([h[: max(int(n), 1)].mean(0) for h, n in zip(hidden, lengths, strict=True)])


_MEAN_POOLING_MISTAKES = [
    Mistake(
        "padding tokens are included in the average: multiply by the mask, then "
        "divide by the number of real tokens.",
        lambda h, m: h.mean(dim=1),
    ),
    Mistake(
        "divide by the number of real tokens, attention_mask.sum(1), not by the length T.",
        lambda h, m: _masked_sum(h, m) / h.shape[1],
    ),
    Mistake("divide the masked sum by the number of real tokens.", _masked_sum),
    Mistake(
        "your vectors have unit length: return the plain mean here; L2-normalising is a "
        "separate step (F.normalize).",
        lambda h, m: F.normalize(_mean_pooling(h, m), dim=-1),
    ),
    Mistake(
        "the real tokens are where the mask is 1, wherever they are: with left padding "
        "they are not the first ones.",
        _pool_first_tokens,
    ),
    Mistake(
        "that is the first token's vector ([CLS] pooling), not the mean of the real tokens.",
        lambda h, m: h[:, 0],
    ),
]


def check_mean_pooling(fn: Callable) -> bool:
    """Grade `fn(last_hidden_state, attention_mask)` -> (B, H), the mean over the real tokens only.

    attention_mask is (B, T) with 1 (or True) at real tokens. Not normalised:
    L2-normalising is a separate step. A row without any real token gives
    zeros, not NaN.
    """
    nan_hint = (
        "NaN for a row without real tokens: 0 / 0. Clamp the token count to at least 1 "
        "(count.clamp(min=1)), which gives a zero vector."
    )
    return _run_cases(
        "check_mean_pooling",
        fn,
        _mean_pooling_cases(),
        _tensor_comparison("pooled output", _pooled_shape_hint, nan_hint),
        _MEAN_POOLING_MISTAKES,
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


def _sep_heads_case(
    g: torch.Generator,
    description: str,
    layers: int,
    heads: int,
    lengths: list[int],
    length: int,
    dtype: torch.dtype = torch.float32,
) -> Case:
    """Random attention probabilities per layer, padded keys masked, and the reference heads."""
    mask = _real_tokens(lengths, length).long()
    attentions = []
    for _ in range(layers):
        scores = 2 * _random(g, len(lengths), heads, length, length, dtype=dtype)
        scores = scores + additive_mask(mask.bool()[:, None, None, :], dtype)
        attentions.append(scores.softmax(-1))
    attentions = tuple(attentions)
    return Case(description, (attentions, mask), _sep_heads(attentions, mask))


def _sep_heads_cases() -> list[Case]:
    """One to three layers, padded and unpadded batches, float64."""
    g = torch.Generator().manual_seed(12)
    return [
        _sep_heads_case(g, "2 layers, batch 2, 4 heads, lengths 7 and 4 (padded)", 2, 4, [7, 4], 7),
        _sep_heads_case(g, "1 layer, batch 1, 3 heads, length 5, no padding", 1, 3, [5], 5),
        _sep_heads_case(g, "3 layers, batch 3, 2 heads, lengths 6, 2 and 4", 3, 2, [6, 2, 4], 6),
        _sep_heads_case(g, "2 layers, batch 2, 5 heads, lengths 9 and 3", 2, 5, [9, 3], 9),
        _sep_heads_case(
            g,
            "float64, 2 layers, batch 2, 3 heads, lengths 5 and 5",
            2,
            3,
            [5, 5],
            5,
            torch.float64,
        ),
    ]


def _sep_heads_problem(expected: list, got: Any) -> Problem | None:
    """Not a list of (head, score) pairs, one per layer, or the first layer that differs."""
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


_SEP_HEADS_MISTAKES = [
    _variant(
        "[SEP] is the last *real* token, at position length - 1 of each row; in a padded "
        "row that is not the last column T - 1.",
        _sep_heads,
        sep="last",
    ),
    _variant(
        "average over the real queries only: padded query rows must not count.",
        _sep_heads,
        real_queries_only=False,
    ),
    _variant(
        "weight every real query equally: sum over the real queries of all sentences, "
        "then divide by their number (a mean of per-sentence means favours short "
        "sentences).",
        _sep_heads,
        pooled=False,
    ),
    _variant(
        "the strongest head is the one with the *largest* average (argmax).",
        _sep_heads,
        pick="argmin",
    ),
    _variant(
        "position 0 is [CLS]; [SEP] is the last real token (length - 1).", _sep_heads, sep="first"
    ),
]


def check_strongest_sep_heads(fn: Callable) -> bool:
    """Grade `fn(attentions, attention_mask)` -> [(head, score)] per layer.

    attentions: a tuple with one (B, nh, T, T) tensor of probabilities per
    layer; attention_mask: (B, T) of 1/0. [SEP] is the last real token of
    each row; score = attention on it averaged over every real query of every
    sentence; head = the head with the largest score.
    """
    return _run_cases(
        "check_strongest_sep_heads",
        fn,
        _sep_heads_cases(),
        _sep_heads_problem,
        _SEP_HEADS_MISTAKES,
    )
