"""Chapter 13: the mean-pooling, in-batch-loss and recall@k checkers, their solutions and planted
bugs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from planted import PlantedBugs, assert_rejects

from bertcourse.embeddings import contrastive_loss, pool, recall_at_k
from bertcourse.exercises import check_in_batch_loss, check_mean_pooling, check_recall_at_k
from bertcourse.exercises.ch13_embeddings_and_search import (
    PADDING_VALUE,
    _in_batch_loss,
    _loss_cases,
    _mean_pooling_cases,
    _recall,
    _recall_cases,
)

# ----------------------------------------------------------------------------
# Mean pooling
# ----------------------------------------------------------------------------


def mean_pooling(hidden_states, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1)


def mean_pooling_by_loop(hidden_states, attention_mask):
    """Another correct answer: one row at a time, its real tokens picked by the mask."""
    rows = [h[m.bool()].mean(dim=0) for h, m in zip(hidden_states, attention_mask, strict=True)]
    return torch.stack(rows)


def mean_pooling_clamped(hidden_states, attention_mask):
    """Another correct answer: sentence-transformers' way, the count clamped away from 0."""
    mask = attention_mask.unsqueeze(-1).expand(hidden_states.size()).to(hidden_states.dtype)
    return torch.sum(hidden_states * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)


def pooling_with_padding(hidden_states, attention_mask):
    return hidden_states.mean(dim=1)


def pooling_divided_by_length(hidden_states, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1) / hidden_states.shape[1]


def pooling_sum(hidden_states, attention_mask):
    return (hidden_states * attention_mask.unsqueeze(-1)).sum(dim=1)


def pooling_divided_by_batch_count(hidden_states, attention_mask):
    weights = attention_mask.unsqueeze(-1).float()
    return (hidden_states * weights).sum(dim=1) / weights.sum()


def pooling_mask_on_features(hidden_states, attention_mask):
    masked = hidden_states * attention_mask.unsqueeze(1)  # (B, 1, T): broadcasts over H
    return masked.sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)


def pooling_cls(hidden_states, attention_mask):
    return hidden_states[:, 0]


def pooling_normalized(hidden_states, attention_mask):
    return F.normalize(mean_pooling(hidden_states, attention_mask), p=2, dim=-1)


def pooling_max(hidden_states, attention_mask):
    masked = hidden_states.masked_fill(attention_mask.unsqueeze(-1) == 0, -1e9)
    return masked.max(dim=1).values


def pooling_first_tokens(hidden_states, attention_mask):
    lengths = attention_mask.sum(dim=1)
    rows = [h[: int(n)].mean(dim=0) for h, n in zip(hidden_states, lengths, strict=True)]
    return torch.stack(rows)


def pooling_keepdim(hidden_states, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True)


MEAN_POOLING_BUGS = [
    (pooling_with_padding, "padding counts"),
    (pooling_divided_by_length, "not by the length T"),
    (pooling_sum, "divide it by their number"),
    (pooling_divided_by_batch_count, "its own number of real tokens"),
    (pooling_mask_on_features, "multiplies the features"),
    (pooling_cls, "[CLS]"),
    (pooling_normalized, "length 1"),
    (pooling_max, "max pooling"),
    (pooling_first_tokens, "left padding"),
    (pooling_keepdim, "(B, H)"),
]


# ----------------------------------------------------------------------------
# The in-batch contrastive loss
# ----------------------------------------------------------------------------


def in_batch_loss(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T  # (B, B): query i, passage j
    targets = torch.arange(len(scores))  # query i's passage is passage i
    return F.cross_entropy(scores, targets)


def in_batch_loss_by_hand(query_embeddings, passage_embeddings, scale=20.0):
    """Another correct answer: cosine_similarity and the log-softmax written out."""
    cosines = F.cosine_similarity(
        query_embeddings[:, None, :], passage_embeddings[None, :, :], dim=-1
    )
    log_probs = (scale * cosines).log_softmax(dim=-1)
    return -log_probs.diagonal().mean()


def loss_dot_product(query_embeddings, passage_embeddings, scale=20.0):
    scores = scale * query_embeddings @ passage_embeddings.T
    return F.cross_entropy(scores, torch.arange(len(scores)))


def loss_normalized_over_batch(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=0)
    passages = F.normalize(passage_embeddings, dim=0)
    scores = scale * queries @ passages.T
    return F.cross_entropy(scores, torch.arange(len(scores)))


def loss_without_scale(query_embeddings, passage_embeddings, scale=20.0):
    scores = F.normalize(query_embeddings, dim=-1) @ F.normalize(passage_embeddings, dim=-1).T
    return F.cross_entropy(scores, torch.arange(len(scores)))


def loss_scale_divides(query_embeddings, passage_embeddings, scale=20.0):
    scores = F.normalize(query_embeddings, dim=-1) @ F.normalize(passage_embeddings, dim=-1).T
    return F.cross_entropy(scores / scale, torch.arange(len(scores)))


def loss_fixed_scale(query_embeddings, passage_embeddings, scale=20.0):
    return in_batch_loss(query_embeddings, passage_embeddings, 20.0)


def loss_zero_targets(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T
    return F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long))


def loss_over_queries(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T
    log_probs = scores.log_softmax(dim=0)  # over the queries of each passage
    return -log_probs.diagonal().mean()


def loss_symmetric(query_embeddings, passage_embeddings, scale=20.0):
    forward = in_batch_loss(query_embeddings, passage_embeddings, scale)
    return (forward + in_batch_loss(passage_embeddings, query_embeddings, scale)) / 2


def loss_negatives_only_in_denominator(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T
    positives = scores.diagonal()
    eye = torch.eye(len(scores), dtype=torch.bool)
    negatives = scores.masked_fill(eye, float("-inf")).exp().sum(dim=-1)
    return (-positives + negatives.log()).mean()


def loss_softmax_first(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    probs = (scale * queries @ passages.T).softmax(dim=-1)
    return F.cross_entropy(probs, torch.arange(len(probs)))


def loss_summed(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T
    return F.cross_entropy(scores, torch.arange(len(scores)), reduction="sum")


def loss_per_query(query_embeddings, passage_embeddings, scale=20.0):
    queries = F.normalize(query_embeddings, dim=-1)
    passages = F.normalize(passage_embeddings, dim=-1)
    scores = scale * queries @ passages.T
    return F.cross_entropy(scores, torch.arange(len(scores)), reduction="none")


def loss_as_float(query_embeddings, passage_embeddings, scale=20.0):
    return in_batch_loss(query_embeddings, passage_embeddings, scale).item()


LOSS_BUGS = [
    (loss_dot_product, "plain dot product"),
    (loss_normalized_over_batch, "(dim=0)"),
    (loss_without_scale, "scale is missing"),
    (loss_scale_divides, "do not divide"),
    (loss_fixed_scale, "not a fixed 20"),
    (loss_zero_targets, "torch.arange(B)"),
    (loss_over_queries, "each row"),
    (loss_symmetric, "symmetric"),
    (loss_negatives_only_in_denominator, "denominator"),
    (loss_softmax_first, "log-softmax itself"),
    (loss_summed, "not the sum"),
    (loss_per_query, "one number"),
    (loss_as_float, "gradient"),
]


# ----------------------------------------------------------------------------
# Recall@k
# ----------------------------------------------------------------------------


def recall(rankings, relevant, k):
    per_query = [
        len(set(ranking[:k]) & rel) / len(rel)
        for ranking, rel in zip(rankings, relevant, strict=True)
    ]
    return sum(per_query) / len(per_query)


def recall_by_loop(rankings, relevant, k):
    """Another correct answer: a loop that skips a passage already counted."""
    total = 0.0
    for ranking, rel in zip(rankings, relevant, strict=True):
        found = []
        for passage in ranking[:k]:
            if passage in rel and passage not in found:
                found.append(passage)
        total += len(found) / len(rel)
    return total / len(rankings)


def recall_hit_rate(rankings, relevant, k):
    hits = [any(p in rel for p in r[:k]) for r, rel in zip(rankings, relevant, strict=True)]
    return sum(hits) / len(hits)


def recall_divided_by_k(rankings, relevant, k):
    per_query = [len(set(r[:k]) & rel) / k for r, rel in zip(rankings, relevant, strict=True)]
    return sum(per_query) / len(per_query)


def recall_top_k_plus_one(rankings, relevant, k):
    return recall(rankings, relevant, k + 1)


def recall_top_k_minus_one(rankings, relevant, k):
    per_query = [
        len(set(r[: k - 1]) & rel) / len(rel) for r, rel in zip(rankings, relevant, strict=True)
    ]
    return sum(per_query) / len(per_query)


def recall_counts_duplicates(rankings, relevant, k):
    per_query = [
        sum(p in rel for p in r[:k]) / len(rel) for r, rel in zip(rankings, relevant, strict=True)
    ]
    return sum(per_query) / len(per_query)


def recall_pooled(rankings, relevant, k):
    found = sum(len(set(r[:k]) & rel) for r, rel in zip(rankings, relevant, strict=True))
    return found / sum(len(rel) for rel in relevant)


def recall_capped(rankings, relevant, k):
    per_query = [
        len(set(r[:k]) & rel) / min(k, len(rel)) for r, rel in zip(rankings, relevant, strict=True)
    ]
    return sum(per_query) / len(per_query)


def recall_indexes_past_the_end(rankings, relevant, k):
    total = 0.0
    for ranking, rel in zip(rankings, relevant, strict=True):
        total += sum(ranking[i] in rel for i in range(k)) / len(rel)
    return total / len(rankings)


def recall_per_query_list(rankings, relevant, k):
    return [len(set(r[:k]) & rel) / len(rel) for r, rel in zip(rankings, relevant, strict=True)]


RECALL_BUGS = [
    (recall_hit_rate, "hit rate"),
    (recall_divided_by_k, "precision@k"),
    (recall_top_k_plus_one, "rank k + 1 does not"),
    (recall_top_k_minus_one, "rank k counts"),
    (recall_counts_duplicates, "listed twice"),
    (recall_pooled, "per query"),
    (recall_capped, "more than k"),
    (recall_indexes_past_the_end, "IndexError"),
    (recall_per_query_list, "one float"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_mean_pooling: (mean_pooling, MEAN_POOLING_BUGS),
    check_in_batch_loss: (in_batch_loss, LOSS_BUGS),
    check_recall_at_k: (recall, RECALL_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_mean_pooling, mean_pooling_by_loop, 7),
        (check_mean_pooling, mean_pooling_clamped, 7),
        (check_in_batch_loss, in_batch_loss_by_hand, 6),
        (check_recall_at_k, recall_by_loop, 7),
        (check_recall_at_k, recall_at_k, 7),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_13_checkers_pass_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"


# ----------------------------------------------------------------------------
# The cases and the planted mistakes against references and hand-computed values
# ----------------------------------------------------------------------------


def test_mean_pooling_cases_hide_large_values_in_the_padding():
    for case in _mean_pooling_cases():
        states, mask = case.args
        padded = states[~mask.bool()]
        assert bool((padded > PADDING_VALUE / 2).all())
        torch.testing.assert_close(case.expected, mean_pooling_by_loop(states, mask))
        assert case.expected.abs().max() < 10  # no padded value leaked into the answer
    assert any((~case.args[1].bool()).any() for case in _mean_pooling_cases())


def test_mean_pooling_by_hand():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [500.0, 600.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pooling(states, mask), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(pool(states, mask, "mean"), torch.tensor([[2.0, 3.0]]))


def test_the_loss_variant_without_switches_is_the_package_loss():
    for case in _loss_cases():
        queries, passages, scale = case.args
        torch.testing.assert_close(_in_batch_loss(queries, passages, scale), case.expected)
        torch.testing.assert_close(case.expected, contrastive_loss(queries, passages, scale=scale))


def test_in_batch_loss_by_hand():
    # Equal scores: every passage is as likely, the loss is log B.
    same = torch.ones(4, 3)
    torch.testing.assert_close(in_batch_loss(same, same, 20.0), torch.tensor(math.log(4)))
    # Two orthogonal pairs, scale 2: each query scores 2 on its passage and 0 on the other.
    eye = torch.eye(2) * 5.0  # lengths do not matter: cosines
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    torch.testing.assert_close(in_batch_loss(eye, eye, 2.0), torch.tensor(expected))
    # A single pair has no negative: the loss is 0.
    assert in_batch_loss(torch.randn(1, 4), torch.randn(1, 4)).item() == 0.0


def test_the_transposed_loss_differs_on_the_first_case():
    """The query → passage loss and its passage → query twin differ only when the scores are
    not symmetric, which the first case's random pairs ensure; on identical pairs they agree."""
    queries, passages, scale = _loss_cases()[0].args
    scores = queries @ passages.T
    assert not torch.allclose(scores, scores.T)
    difference = loss_over_queries(queries, passages, scale) - in_batch_loss(
        queries, passages, scale
    )
    assert abs(difference.item()) > 0.1
    torch.testing.assert_close(
        loss_over_queries(queries, queries, scale), in_batch_loss(queries, queries, scale)
    )


def test_recall_variant_without_switches_is_the_package_recall():
    for case in _recall_cases():
        assert _recall(*case.args) == pytest.approx(case.expected, abs=1e-12)


def test_recall_cases_by_hand():
    cases = _recall_cases()
    assert cases[0].expected == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert cases[1].expected == 1.0  # each relevant passage at rank k exactly counts
    assert cases[2].expected == 0.5  # the one at rank k + 1 does not
    assert cases[3].expected == 0.5  # k past the end: (1/2 + 1 + 0) / 3
    assert cases[4].expected == pytest.approx((2 / 3 + 1) / 2)  # passage 3 counted once
    assert cases[5].expected == 0.5


def test_a_wrong_recall_above_one_gets_a_hint_from_the_symptom(capsys):
    def recall_counting_each_rank(rankings, relevant, k):
        return recall_counts_duplicates(rankings, relevant, k) + 1

    message = assert_rejects(check_recall_at_k, recall_counting_each_rank, "at most 1", capsys)
    assert "case 1 of 7" in message
