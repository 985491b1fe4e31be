"""Chapter 13, sentence embeddings and semantic search: mean pooling over the real tokens, the
in-batch contrastive loss, recall@k."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..embeddings import DEFAULT_SCALE, contrastive_loss, pool, recall_at_k
from ._grading import (
    Case,
    Mistake,
    Problem,
    _random,
    _real_tokens,
    _run_cases,
    _scalar_loss_problem,
    _tensor_comparison,
    _unwrap_scalar,
    _variant,
)

__all__ = [
    "check_mean_pooling",
    "check_in_batch_loss",
    "check_recall_at_k",
]


# ----------------------------------------------------------------------------
# Mean pooling
# ----------------------------------------------------------------------------

PADDING_VALUE = 1000.0  # padded positions hold values near this, so that counting them shows


def _pooling_case(
    g: torch.Generator,
    description: str,
    lengths: list[int],
    length: int,
    hidden: int,
    *,
    left: bool = False,
    bool_mask: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Case:
    """Random token vectors, large values at the padded positions; the answer of `pool`."""
    real = _real_tokens(lengths, length)
    if left:
        real = real.flip(-1)
    states = _random(g, len(lengths), length, hidden, dtype=dtype)
    states = torch.where(real[..., None], states, PADDING_VALUE + 100 * states)
    mask = real if bool_mask else real.long()
    return Case(description, (states, mask), pool(states, mask, "mean"))


def _mean_pooling_cases() -> list[Case]:
    """Right and left padding, one real token, int and bool masks, a batch of one, float64."""
    g = torch.Generator().manual_seed(13)
    return [
        _pooling_case(
            g, "batch 2, length 6, hidden 6, right padding (lengths 6 and 3)", [6, 3], 6, 6
        ),
        _pooling_case(g, "batch 3, length 7, hidden 4, lengths 7, 4 and 2", [7, 4, 2], 7, 4),
        _pooling_case(g, "batch 2, length 5, hidden 8, a row with one real token", [5, 1], 5, 8),
        _pooling_case(
            g,
            "batch 3, length 6, hidden 4, left padding (mask 0 0 1 1 1 1)",
            [6, 4, 3],
            6,
            4,
            left=True,
        ),
        _pooling_case(g, "batch 2, length 4, hidden 3, bool mask", [3, 2], 4, 3, bool_mask=True),
        _pooling_case(g, "batch of one, length 5, hidden 6, no padding", [5], 5, 6),
        _pooling_case(
            g,
            "float64, batch 2, length 7, hidden 5, lengths 7 and 3",
            [7, 3],
            7,
            5,
            dtype=torch.float64,
        ),
    ]


def _token_weights(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)


def _sum_divided(hidden_states, attention_mask, divide_by: str) -> torch.Tensor:
    """The masked sum over the tokens, divided by the wrong count (or not at all)."""
    weights = _token_weights(hidden_states, attention_mask)
    total = (hidden_states * weights).sum(dim=1)  # (B, H)
    if divide_by == "length":
        return total / hidden_states.shape[1]
    if divide_by == "batch":
        return total / weights.sum()
    return total


def _mask_over_features(hidden_states, attention_mask) -> torch.Tensor:
    """The (B, T) mask broadcast as (B, 1, T): it masks features, not tokens (needs T == H)."""
    weights = attention_mask.unsqueeze(1).to(hidden_states.dtype)  # (B, 1, T)
    return (hidden_states * weights).sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)


def _first_tokens_mean(hidden_states, attention_mask) -> torch.Tensor:
    """The mean of the first n positions of a row with n real tokens, wherever they are."""
    lengths = attention_mask.long().sum(dim=1).tolist()
    return torch.stack([row[:n].mean(dim=0) for row, n in zip(hidden_states, lengths, strict=True)])


_MEAN_POOLING_MISTAKES = [
    Mistake(
        "padding counts in your mean: multiply the vectors by the mask "
        "(attention_mask.unsqueeze(-1)) so that only the real tokens are summed.",
        lambda h, m: h.mean(dim=1),
    ),
    Mistake(
        "divide by the number of real tokens of each row, attention_mask.sum(dim=1), not by "
        "the length T, which counts the padding too.",
        lambda h, m: _sum_divided(h, m, "length"),
    ),
    Mistake(
        "that is the sum of the real tokens' vectors: divide it by their number to get the mean.",
        lambda h, m: _sum_divided(h, m, "none"),
    ),
    Mistake(
        "divide each row by its own number of real tokens (the mask summed over dim=1, one "
        "count per row), not by the whole batch's.",
        lambda h, m: _sum_divided(h, m, "batch"),
    ),
    Mistake(
        "the mask multiplies the features instead of the tokens: the (B, T) mask must become "
        "(B, T, 1), attention_mask.unsqueeze(-1), to cover every feature of a token.",
        _mask_over_features,
    ),
    Mistake(
        "that is the first token's vector ([CLS] pooling), not the mean over the real tokens.",
        lambda h, m: h[:, 0],
    ),
    Mistake(
        "your vectors have length 1: mean pooling only averages; normalising is a separate "
        "step, done after the pooling (encode(..., normalize=True)).",
        lambda h, m: F.normalize(pool(h, m, "mean"), dim=-1),
    ),
    Mistake(
        "that is max pooling (the largest value of each feature): take the average instead.",
        lambda h, m: pool(h, m, "max"),
    ),
    Mistake(
        "the real tokens are where the mask is 1, wherever they are: with left padding they "
        "are not the first ones.",
        _first_tokens_mean,
    ),
]


def _pooled_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    return "average over the tokens (dim=1), keeping one vector per text: (B, H)."


def check_mean_pooling(fn: Callable) -> bool:
    """Grade `fn(hidden_states, attention_mask)` -> (B, H), each text's mean token vector.

    hidden_states: (B, T, H); attention_mask: (B, T), 1 (or True) at the real
    tokens, anywhere in the row. Padded positions take no part in the mean,
    and the result is not normalised (as `bertcourse.embeddings.pool(...,
    "mean")`).
    """
    return _run_cases(
        "check_mean_pooling",
        fn,
        _mean_pooling_cases(),
        _tensor_comparison("pooled output", _pooled_shape_hint),
        _MEAN_POOLING_MISTAKES,
        "for one row, average the vectors of its real tokens by hand (hidden_states[i][mask[i] "
        "== 1].mean(0)) and compare with your result.",
    )


# ----------------------------------------------------------------------------
# The in-batch contrastive loss
# ----------------------------------------------------------------------------


def _in_batch_loss(
    query_embeddings: torch.Tensor,
    passage_embeddings: torch.Tensor,
    scale: float,
    *,
    normalize_dim: int | None = -1,
    apply_scale: str = "multiply",
    targets: str = "diagonal",
    transpose: bool = False,
    symmetric: bool = False,
    positive_in_denominator: bool = True,
    softmax_first: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """The reference loss (default switches), or a classic mistake in it (each switch plants one)."""
    queries, passages = query_embeddings, passage_embeddings
    if normalize_dim is not None:
        queries = F.normalize(queries, dim=normalize_dim)
        passages = F.normalize(passages, dim=normalize_dim)
    factor = {
        "multiply": scale,
        "ignore": 1.0,
        "divide": 1 / scale,
        "fixed": DEFAULT_SCALE,
    }[apply_scale]
    scores = factor * queries @ passages.T  # (B, B): query i, passage j
    if transpose:
        scores = scores.T
    batch = len(scores)
    if targets == "diagonal":
        labels = torch.arange(batch)
    else:
        labels = torch.zeros(batch, dtype=torch.long)
    if not positive_in_denominator:  # -s_ii + log Σ_{j≠i} exp(s_ij)
        diagonal = torch.eye(batch, dtype=torch.bool)
        losses = -scores.diagonal() + scores.masked_fill(diagonal, -math.inf).logsumexp(-1)
        return losses.mean() if reduction == "mean" else losses.sum()
    if softmax_first:
        scores = scores.softmax(dim=-1)
    loss = F.cross_entropy(scores, labels, reduction=reduction)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, labels, reduction=reduction)) / 2
    return loss


def _loss_case(
    description: str,
    queries: torch.Tensor,
    passages: torch.Tensor,
    scale: float,
) -> Case:
    args = (queries, passages, scale)
    return Case(description, args, contrastive_loss(queries, passages, scale=scale))


def _loss_cases() -> list[Case]:
    """Random and near-matching pairs, another scale, vectors of very different lengths,
    float64, a single pair."""
    g = torch.Generator().manual_seed(130)
    queries = _random(g, 3, 6)
    close = queries + 0.3 * _random(g, 3, 6)
    lengths = torch.tensor([0.1, 1.0, 10.0, 100.0])[:, None]
    return [
        _loss_case("batch 4, hidden 8, scale 20", _random(g, 4, 8), _random(g, 4, 8), 20.0),
        _loss_case(
            "batch 3, hidden 6, scale 20, each passage close to its query", queries, close, 20.0
        ),
        _loss_case("batch 5, hidden 4, scale 5", _random(g, 5, 4), _random(g, 5, 4), 5.0),
        _loss_case(
            "batch 4, hidden 8, scale 20, vectors of lengths 0.1 to 100",
            lengths * F.normalize(_random(g, 4, 8), dim=-1),
            lengths.flip(0) * F.normalize(_random(g, 4, 8), dim=-1),
            20.0,
        ),
        _loss_case(
            "float64, batch 6, hidden 8, scale 20",
            _random(g, 6, 8, dtype=torch.float64),
            _random(g, 6, 8, dtype=torch.float64),
            20.0,
        ),
        _loss_case(
            "batch 1 (a single pair: no negatives, the loss is 0), hidden 8, scale 20",
            _random(g, 1, 8),
            _random(g, 1, 8),
            20.0,
        ),
    ]


_LOSS_MISTAKES = [
    _variant(
        "the scores are cosine similarities: normalise the queries and the passages first "
        "(F.normalize(x, dim=-1)); a plain dot product rewards long vectors.",
        _in_batch_loss,
        normalize_dim=None,
    ),
    _variant(
        "normalise each vector over its H features (dim=-1), not each feature over the "
        "batch (dim=0).",
        _in_batch_loss,
        normalize_dim=0,
    ),
    _variant(
        "the scale is missing: multiply the cosine similarities by scale (1 / temperature); "
        "cosines lie in [-1, 1], so without it the softmax is nearly flat.",
        _in_batch_loss,
        apply_scale="ignore",
    ),
    _variant(
        "scale is 1 / temperature: multiply the similarities by it, do not divide by it.",
        _in_batch_loss,
        apply_scale="divide",
    ),
    _variant(
        "use the scale argument, not a fixed 20 (sentence-transformers' default).",
        _in_batch_loss,
        apply_scale="fixed",
    ),
    _variant(
        "query i's right passage is passage i: the targets are torch.arange(B), not zeros.",
        _in_batch_loss,
        targets="zeros",
    ),
    _variant(
        "scores[i, j] = query i · passage j, and each query picks among the passages: the "
        "cross-entropy runs over each row (dim=-1), not over each column (the queries).",
        _in_batch_loss,
        transpose=True,
    ),
    _variant(
        "only the queries pick among the passages: this loss has no passage → query term "
        "(that symmetric version is CLIP's).",
        _in_batch_loss,
        symmetric=True,
    ),
    _variant(
        "the right passage belongs in the softmax's denominator too: the cross-entropy over "
        "all B passages of the batch, the query's own included.",
        _in_batch_loss,
        positive_in_denominator=False,
    ),
    _variant(
        "F.cross_entropy applies log-softmax itself: pass it the scaled scores, not probabilities.",
        _in_batch_loss,
        softmax_first=True,
    ),
    _variant(
        "the loss is the mean over the queries (reduction='mean'), not the sum.",
        _in_batch_loss,
        reduction="sum",
    ),
]


def _loss_problem(expected: torch.Tensor, got: Any) -> Problem | None:
    return _scalar_loss_problem(
        expected,
        got,
        one_number="the mean over the queries of their cross-entropies.",
        dtype_source="embeddings",
        not_finite="the loss is not finite: compute it with F.cross_entropy on the scores, "
        "which takes the log-softmax stably.",
    )


def check_in_batch_loss(fn: Callable) -> bool:
    """Grade `fn(query_embeddings, passage_embeddings, scale)` -> the in-batch contrastive loss.

    Rows i of the two (B, H) tensors are a matching pair. The scores are
    scale * cos(query i, passage j); each query's right passage is its own,
    the other B - 1 its negatives; the loss is the cross-entropy of each
    query's scores, averaged over the queries (as
    `bertcourse.embeddings.contrastive_loss`).
    """
    return _run_cases(
        "check_in_batch_loss",
        fn,
        _loss_cases(),
        _loss_problem,
        _LOSS_MISTAKES,
        "print the (B, B) score matrix of case 1: scale times the cosines, the pairs on the "
        "diagonal; then F.cross_entropy(scores, torch.arange(B)).",
    )


# ----------------------------------------------------------------------------
# Recall@k
# ----------------------------------------------------------------------------


def _recall(
    rankings: Sequence[Sequence[int]],
    relevant: Sequence[set[int]],
    k: int,
    *,
    offset: int = 0,
    hit_rate: bool = False,
    divide_by: str = "relevant",
    distinct: bool = True,
    per_query: bool = True,
) -> float:
    """The reference recall@k (default switches), or a classic mistake in it."""
    found_counts, denominators = [], []
    for ranking, rel in zip(rankings, relevant, strict=True):
        top = ranking[: max(k + offset, 0)]
        found = len(set(top) & rel) if distinct else sum(p in rel for p in top)
        if hit_rate:
            found, denominator = min(found, 1), 1
        elif divide_by == "k":
            denominator = k
        elif divide_by == "capped":
            denominator = min(k, len(rel))
        else:
            denominator = len(rel)
        found_counts.append(found)
        denominators.append(denominator)
    if not per_query:
        return sum(found_counts) / sum(denominators)
    return sum(f / d for f, d in zip(found_counts, denominators, strict=True)) / len(rankings)


def _recall_case(description: str, rankings: list[list[int]], relevant: list[set[int]], k: int):
    return Case(description, (rankings, relevant, k), recall_at_k(rankings, relevant, k))


def _random_retrieval(
    g: torch.Generator, queries: int, passages: int, ranked: int
) -> tuple[list[list[int]], list[set[int]]]:
    """Rankings of `ranked` distinct passages, and 1 to 4 relevant passages per query."""
    rankings, relevant = [], []
    for _ in range(queries):
        rankings.append(torch.randperm(passages, generator=g)[:ranked].tolist())
        count = int(torch.randint(1, 5, (1,), generator=g))
        relevant.append(set(torch.randperm(passages, generator=g)[:count].tolist()))
    return rankings, relevant


def _recall_cases() -> list[Case]:
    """Several relevant passages, rank k and k + 1, k past the rankings' end, a repeated
    passage, more relevant passages than k, a larger random set."""
    g = torch.Generator().manual_seed(131)
    return [
        _recall_case(
            "3 queries with 2, 1 and 3 relevant passages, k = 3",
            [[4, 1, 7, 2, 0, 3], [5, 2, 0, 1, 3, 4], [6, 2, 3, 1, 0, 5]],
            [{1, 2}, {5}, {0, 3, 6}],
            3,
        ),
        _recall_case(
            "2 queries, each relevant passage at rank 4 exactly, k = 4",
            [[3, 0, 2, 1, 4], [1, 4, 0, 2, 3]],
            [{1}, {2}],
            4,
        ),
        _recall_case(
            "2 queries, a relevant passage at rank 3, just outside the top k = 2",
            [[0, 3, 1, 2], [2, 1, 0, 3]],
            [{1}, {1, 2}],
            2,
        ),
        _recall_case(
            "k = 10, more than the 5 passages each ranking holds",
            [[2, 0, 4, 1, 3], [1, 3, 0, 2, 4], [4, 2, 1, 0, 3]],
            [{0, 7}, {2}, {5}],
            10,
        ),
        _recall_case(
            "a ranking that lists passage 3 twice (two searches joined), k = 4",
            [[3, 1, 3, 0, 2], [0, 2, 1, 4]],
            [{3, 0, 5}, {4}],
            4,
        ),
        _recall_case("one query with 2 relevant passages, k = 1", [[2, 0, 1]], [{2, 1}], 1),
        _recall_case(
            "40 queries, 1 to 4 relevant passages among 30, rankings of 20, k = 5",
            *_random_retrieval(g, 40, 30, 20),
            5,
        ),
    ]


_RECALL_MISTAKES = [
    _variant(
        "that is the hit rate (1 if any relevant passage is found): recall counts how many of "
        "a query's relevant passages are in its top k, divided by how many it has.",
        _recall,
        hit_rate=True,
    ),
    _variant(
        "that is precision@k: divide by the number of the query's relevant passages, not by k.",
        _recall,
        divide_by="k",
    ),
    _variant(
        "the top k are ranking[:k], ranks 1 to k: a relevant passage at rank k + 1 does not count.",
        _recall,
        offset=1,
    ),
    _variant(
        "the top k are ranking[:k], ranks 1 to k: a relevant passage at rank k counts.",
        _recall,
        offset=-1,
    ),
    _variant(
        "a passage listed twice is still one passage: count the distinct relevant passages "
        "found, len(set(ranking[:k]) & relevant[q]).",
        _recall,
        distinct=False,
    ),
    _variant(
        "compute each query's recall, then the mean over the queries (per query): pooling the "
        "counts of all queries lets the queries with many relevant passages weigh more.",
        _recall,
        per_query=False,
    ),
    _variant(
        "divide by the number of relevant passages even when it is more than k: a query with "
        "3 relevant passages has at most 1/3 of them in its top 1.",
        _recall,
        divide_by="capped",
    ),
]


def _recall_problem(expected: float, answer: Any) -> Problem | None:
    answer = _unwrap_scalar(answer)
    if isinstance(answer, (list, tuple, dict, torch.Tensor)):
        return Problem(
            [f"expected one number, got a {type(answer).__name__} of {len(answer)} values"],
            "return one float: the mean over the queries of each query's recall.",
        )
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a number"],
            "return recall@k as one float in [0, 1].",
        )
    if not math.isfinite(answer):
        return Problem(
            [f"expected {expected:.6f}, got {answer}"],
            "every query here has at least one relevant passage: divide by len(relevant[q]).",
            nonfinite=True,
        )
    if abs(answer - expected) > 1e-9:
        hint = None
        if answer > 1:
            hint = (
                "recall is a fraction of the relevant passages, at most 1: count each "
                "relevant passage found once."
            )
        return Problem([f"expected {expected:.6f}, got {answer:.6f}"], hint)
    return None


def check_recall_at_k(fn: Callable) -> bool:
    """Grade `fn(rankings, relevant, k)` -> recall@k, a float.

    rankings[q] lists query q's passage ids, best first; relevant[q] is the
    set of its relevant ids. Each query's recall is the fraction of its
    relevant passages among the first k of its ranking; recall@k is their
    mean over the queries (as `bertcourse.embeddings.recall_at_k`).
    """
    return _run_cases(
        "check_recall_at_k",
        fn,
        _recall_cases(),
        _recall_problem,
        _RECALL_MISTAKES,
        "work out case 1 by hand: for each query, its relevant passages among ranking[:k] "
        "divided by how many it has; then the mean over the queries.",
    )
