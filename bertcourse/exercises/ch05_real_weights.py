"""Chapter 5, real weights: max pooling over the real tokens, the entropy of each head."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

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
    "check_max_pooling",
    "check_attention_entropy",
]


def _max_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per feature, the largest value over the real tokens; 0 for a row without any."""
    real = attention_mask.bool().unsqueeze(-1)  # (B, T, 1)
    lowest = torch.finfo(last_hidden_state.dtype).min
    pooled = last_hidden_state.masked_fill(~real, lowest).max(dim=1).values  # (B, H)
    return torch.where(real.any(dim=1), pooled, torch.zeros_like(pooled))


def _pooling_case(description: str, hidden: torch.Tensor, mask: torch.Tensor) -> Case:
    """A case whose expected answer is the reference max pooling."""
    return Case(description, (hidden, mask), _max_pooling(hidden, mask))


def _right_padding(lengths: list[int], length: int) -> torch.Tensor:
    """(B, T) int mask, 1 at the real tokens of right-padded rows of the given lengths."""
    return _real_tokens(lengths, length).long()


def _max_pooling_cases() -> list[Case]:
    """Int and bool masks, negative values, left padding, one token, a fully padded row, float64."""
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
            "batch 2, length 5, hidden 6, every value negative, padding",
            -1 - _random(g, 2, 5, 6).abs(),
            _right_padding([5, 2], 5),
        ),
        _pooling_case(
            "batch 1, length 1 (a single token), hidden 8",
            _random(g, 1, 1, 8),
            _right_padding([1], 1),
        ),
        _pooling_case(
            "batch 2, length 4, hidden 5, bool mask",
            _random(g, 2, 4, 5) - 1,
            _right_padding([3, 1], 4).bool(),
        ),
        _pooling_case(
            "batch 3, length 5, hidden 4, left padding (mask 0 0 1 1 1)",
            _random(g, 3, 5, 4) - 1,
            _right_padding([5, 3, 2], 5).flip(-1),
        ),
        _pooling_case(
            "batch 2, length 4, hidden 3, the second row fully padded (no real token)",
            _random(g, 2, 4, 3),
            _right_padding([4, 0], 4),
        ),
        _pooling_case(
            "float64, batch 2, length 7, hidden 6, right padding",
            _random(g, 2, 7, 6, dtype=torch.float64) - 1,
            _right_padding([7, 2], 7),
        ),
    ]


def _pooled_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    """The hint for a pooled output of the wrong shape."""
    return "take the maximum over the tokens (dim=1), keeping one vector per sequence: (B, H)."


def _zero_filled_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padded positions multiplied by 0 instead of being left out."""
    return (hidden * mask.unsqueeze(-1).to(hidden.dtype)).max(dim=1).values


def _max_without_empty_rows(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Left out with the dtype's minimum, but a row without tokens keeps it."""
    return (
        hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values
    )


def _max_without_empty_rows_inf(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Left out with -inf, but a row without tokens keeps -inf."""
    return hidden.masked_fill(~mask.bool().unsqueeze(-1), -math.inf).max(dim=1).values


def _max_first_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The maximum over the first tokens, as many as the row has real ones, wherever they are."""
    lengths = mask.long().sum(1)
    rows = [
        h[: int(n)].max(0).values if int(n) else torch.zeros_like(h[0])
        for h, n in zip(hidden, lengths, strict=True)
    ]
    return torch.stack(rows)


def _mean_over_real(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


_MAX_POOLING_MISTAKES = [
    Mistake(
        "padded positions take part in the maximum: leave them out, e.g. fill them with "
        "torch.finfo(dtype).min (masked_fill) before taking the max.",
        lambda h, m: h.max(dim=1).values,
    ),
    Mistake(
        "multiplying by the mask puts 0 at the padded positions, and 0 beats every negative "
        "value: fill them with the dtype's minimum (or -inf) instead.",
        _zero_filled_max,
    ),
    Mistake(
        "a row without any real token must give zeros: after the max, replace its row "
        "(torch.where(mask.any(1, keepdim=True), pooled, 0)).",
        _max_without_empty_rows,
    ),
    Mistake(
        "a row without any real token must give zeros, not -inf: replace its row after the "
        "max (torch.where(mask.any(1, keepdim=True), pooled, 0)).",
        _max_without_empty_rows_inf,
    ),
    Mistake(
        "the real tokens are where the mask is 1, wherever they are: with left padding "
        "they are not the first ones.",
        _max_first_tokens,
    ),
    Mistake(
        "that is mean pooling: take the largest value per feature (max), not the average.",
        _mean_over_real,
    ),
    Mistake(
        "that is the first token's vector ([CLS] pooling), not the maximum over the real tokens.",
        lambda h, m: h[:, 0],
    ),
]


def check_max_pooling(fn: Callable) -> bool:
    """Grade `fn(last_hidden_state, attention_mask)` -> (B, H), the maximum over the real tokens.

    attention_mask is (B, T) with 1 (or True) at real tokens, anywhere in
    the row. Padded positions take no part (values can be negative), and a
    row without any real token gives zeros.
    """
    nan_hint = (
        "inf or NaN: a row without real tokens has nothing to take the maximum of; give it "
        "zeros (torch.where on mask.any(dim=1))."
    )
    compare_tensors = _tensor_comparison("pooled output", _pooled_shape_hint, nan_hint)

    def compare(expected: torch.Tensor, got: Any) -> Problem | None:
        if isinstance(got, tuple) and hasattr(got, "values") and hasattr(got, "indices"):
            return Problem(
                ["expected the pooled output as a tensor, got the (values, indices) of a max"],
                "torch.max(x, dim=1) returns (values, indices): take its .values.",
            )
        return compare_tensors(expected, got)

    return _run_cases("check_max_pooling", fn, _max_pooling_cases(), compare, _MAX_POOLING_MISTAKES)


def _entropy(
    attentions,
    attention_mask,
    *,
    real_queries_only=True,
    pooled=True,
    sign=-1.0,
    base=None,
    key_mean=False,
    average_first=False,
):
    """Reference (layers, nh) mean entropy of each head's attention, or a classic mistake."""
    queries = attention_mask.bool()  # (B, T)
    if not real_queries_only:
        queries = torch.ones_like(queries)
    per_layer = []
    for layer_probs in attentions:  # (B, nh, T, T)
        weights = queries[:, None, :].to(layer_probs.dtype)  # (B, 1, T)
        if average_first:  # the entropy of the averaged distribution
            mean_probs = (layer_probs * weights[..., None]).sum(dim=(0, 2)) / weights.sum()
            per_layer.append(sign * torch.xlogy(mean_probs, mean_probs).sum(-1))
            continue
        terms = torch.xlogy(layer_probs, layer_probs)  # (B, nh, T, T), 0 where p = 0
        per_query = sign * (terms.mean(-1) if key_mean else terms.sum(-1))  # (B, nh, T)
        if base is not None:
            per_query = per_query / math.log(base)
        if pooled:
            per_head = (per_query * weights).sum(dim=(0, 2)) / weights.sum()  # (nh,)
        else:
            per_head = ((per_query * weights).sum(2) / weights.sum(2)).mean(0)
        per_layer.append(per_head)
    return torch.stack(per_layer)  # (layers, nh)


def _entropy_case(
    g: torch.Generator,
    description: str,
    layers: int,
    heads: int,
    lengths: list[int],
    length: int,
    dtype: torch.dtype = torch.float32,
    one_hot_head: bool = False,
) -> Case:
    """Random attention probabilities per layer, padded keys masked (p = 0 exactly)."""
    mask = _real_tokens(lengths, length).long()
    attentions = []
    for _ in range(layers):
        scores = 2 * _random(g, len(lengths), heads, length, length, dtype=dtype)
        scores = scores + additive_mask(mask.bool()[:, None, None, :], dtype)
        probs = scores.softmax(-1)
        if one_hot_head:  # head 0 puts everything on [CLS]: entropy 0
            probs[:, 0] = 0
            probs[:, 0, :, 0] = 1
        attentions.append(probs)
    attentions = tuple(attentions)
    return Case(description, (attentions, mask), _entropy(attentions, mask))


def _entropy_cases() -> list[Case]:
    """One to three layers, padded and unpadded batches, a one-hot head, float64."""
    g = torch.Generator().manual_seed(12)
    return [
        _entropy_case(g, "2 layers, batch 2, 4 heads, lengths 7 and 4 (padded)", 2, 4, [7, 4], 7),
        _entropy_case(g, "1 layer, batch 1, 3 heads, length 5, no padding", 1, 3, [5], 5),
        _entropy_case(
            g,
            "1 layer, batch 2, 2 heads, lengths 6 and 3; head 0 attends only to [CLS]",
            1,
            2,
            [6, 3],
            6,
            one_hot_head=True,
        ),
        _entropy_case(g, "3 layers, batch 3, 2 heads, lengths 6, 2 and 4", 3, 2, [6, 2, 4], 6),
        _entropy_case(
            g,
            "float64, 2 layers, batch 2, 3 heads, lengths 9 and 3",
            2,
            3,
            [9, 3],
            9,
            torch.float64,
        ),
    ]


def _entropy_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    return (
        "one number per head of every layer: (layers, nh). Stack the layers, and average over "
        "the batch and the queries, not over the heads."
    )


_ENTROPY_MISTAKES = [
    _variant(
        "average over the real queries only: padded query rows must not count.",
        _entropy,
        real_queries_only=False,
    ),
    _variant(
        "weight every real query equally: sum over the real queries of all sentences, "
        "then divide by their number (a mean of per-sentence means favours short "
        "sentences).",
        _entropy,
        pooled=False,
    ),
    _variant(
        "entropy is -Σ p log p, a positive number: the minus sign is missing.", _entropy, sign=1.0
    ),
    _variant(
        "use the natural logarithm (torch.log): the entropy here is in nats, not bits.",
        _entropy,
        base=2,
    ),
    _variant(
        "sum p log p over the keys (dim=-1); only the queries are averaged.",
        _entropy,
        key_mean=True,
    ),
    _variant(
        "take the entropy of each query's distribution first, then average: the entropy of "
        "the averaged distribution is a different (larger) number.",
        _entropy,
        average_first=True,
    ),
]


def check_attention_entropy(fn: Callable) -> bool:
    """Grade `fn(attentions, attention_mask)` -> (layers, nh): each head's mean attention entropy.

    attentions: a tuple with one (B, nh, T, T) tensor of probabilities per
    layer; attention_mask: (B, T) of 1/0. For every real query i, the
    entropy -Σ_j a_ij log a_ij in nats (a key with a_ij = 0 contributes 0),
    averaged over every real query of every sentence.
    """
    nan_hint = (
        "NaN: a padded key has probability 0, and 0 · log 0 is 0 · (-inf) = NaN in floating "
        "point, though its limit is 0. torch.xlogy(p, p) computes p · log p with 0 there."
    )
    return _run_cases(
        "check_attention_entropy",
        fn,
        _entropy_cases(),
        _tensor_comparison("entropy", _entropy_shape_hint, nan_hint),
        _ENTROPY_MISTAKES,
        "for one query, -(p * p.log()).sum() over its keys; then average those over the "
        "real queries of every sentence.",
    )
