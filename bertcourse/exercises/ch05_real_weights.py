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
)

__all__ = [
    "check_mean_pooling",
    "check_strongest_sep_heads",
]


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
        return _real_tokens(lengths, length).long()

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
        mask = _real_tokens(lengths, length).long()
        attentions = []
        for _ in range(layers):
            scores = 2 * _random(g, len(lengths), heads, length, length, dtype=dtype)
            scores = scores + additive_mask(mask.bool()[:, None, None, :], dtype)
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
