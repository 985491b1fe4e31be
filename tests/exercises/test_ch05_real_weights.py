"""Chapter 5: max pooling and head entropy, their reference solutions and the bugs planted in them."""

from __future__ import annotations

import math

import torch
from planted import PlantedBugs

from bertcourse.exercises import check_attention_entropy, check_max_pooling


def max_pooling(last_hidden_state, attention_mask):
    real = attention_mask.bool().unsqueeze(-1)
    lowest = torch.finfo(last_hidden_state.dtype).min
    pooled = last_hidden_state.masked_fill(~real, lowest).max(dim=1).values
    return torch.where(real.any(dim=1), pooled, torch.zeros_like(pooled))


def max_pooling_by_loop(last_hidden_state, attention_mask):
    """Another correct answer: one row at a time, its real tokens picked by the mask."""
    rows = []
    for hidden, mask in zip(last_hidden_state, attention_mask.bool(), strict=True):
        real = hidden[mask]
        rows.append(real.max(dim=0).values if len(real) else torch.zeros_like(hidden[0]))
    return torch.stack(rows)


def pooling_unmasked(last_hidden_state, attention_mask):
    return last_hidden_state.max(dim=1).values


def pooling_zero_filled(last_hidden_state, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    pooled = (last_hidden_state * weights).max(dim=1).values
    return pooled


def pooling_empty_row_minus_inf(last_hidden_state, attention_mask):
    real = attention_mask.bool().unsqueeze(-1)
    return last_hidden_state.masked_fill(~real, -math.inf).max(dim=1).values


def pooling_first_tokens(last_hidden_state, attention_mask):
    rows = []
    for hidden, n in zip(last_hidden_state, attention_mask.sum(1).tolist(), strict=True):
        rows.append(hidden[:n].max(dim=0).values if n else torch.zeros_like(hidden[0]))
    return torch.stack(rows)


def pooling_mean(last_hidden_state, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def pooling_cls(last_hidden_state, attention_mask):
    return last_hidden_state[:, 0]


def pooling_with_indices(last_hidden_state, attention_mask):
    real = attention_mask.bool().unsqueeze(-1)
    return last_hidden_state.masked_fill(~real, -1e9).max(dim=1)


def attention_entropy(attentions, attention_mask):
    real = attention_mask.bool()
    per_layer = []
    for probs in attentions:
        per_query = -torch.xlogy(probs, probs).sum(-1)  # (B, nh, T)
        per_layer.append(per_query.permute(1, 0, 2)[:, real].mean(-1))  # (nh,)
    return torch.stack(per_layer)


def entropy_by_loop(attentions, attention_mask):
    """Another correct answer: plain loops, skipping the zero probabilities."""
    lengths = attention_mask.sum(1).tolist()
    result = torch.zeros(len(attentions), attentions[0].shape[1], dtype=attentions[0].dtype)
    for layer, probs in enumerate(attentions):
        for head in range(probs.shape[1]):
            total, count = 0.0, 0
            for row, n in enumerate(lengths):
                for query in range(n):
                    p = probs[row, head, query]
                    p = p[p > 0]
                    total += float(-(p * p.log()).sum())
                    count += 1
            result[layer, head] = total / count
    return result


def entropy_naive_log(attentions, attention_mask):
    real = attention_mask.bool()
    return torch.stack(
        [(-(p * p.log()).sum(-1)).permute(1, 0, 2)[:, real].mean(-1) for p in attentions]
    )


def entropy_all_queries(attentions, attention_mask):
    return torch.stack([-torch.xlogy(p, p).sum(-1).mean(dim=(0, 2)) for p in attentions])


def entropy_mean_of_means(attentions, attention_mask):
    weights = attention_mask[:, None, :].to(attentions[0].dtype)
    per_layer = []
    for probs in attentions:
        per_query = -torch.xlogy(probs, probs).sum(-1)
        per_layer.append(((per_query * weights).sum(2) / weights.sum(2)).mean(0))
    return torch.stack(per_layer)


def entropy_without_minus(attentions, attention_mask):
    return -attention_entropy(attentions, attention_mask)


def entropy_in_bits(attentions, attention_mask):
    return attention_entropy(attentions, attention_mask) / math.log(2)


def entropy_heads_averaged(attentions, attention_mask):
    return attention_entropy(attentions, attention_mask).mean(-1)


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_max_pooling: (
        max_pooling,
        [
            (pooling_unmasked, "padded positions take part"),
            (pooling_zero_filled, "0 beats every negative"),
            (pooling_empty_row_minus_inf, "not -inf"),
            (pooling_first_tokens, "left padding"),
            (pooling_mean, "mean pooling"),
            (pooling_cls, "[CLS]"),
            (pooling_with_indices, ".values"),
        ],
    ),
    check_attention_entropy: (
        attention_entropy,
        [
            (entropy_naive_log, "xlogy"),
            (entropy_all_queries, "real queries only"),
            (entropy_mean_of_means, "equally"),
            (entropy_without_minus, "minus sign"),
            (entropy_in_bits, "nats"),
            (entropy_heads_averaged, "(layers, nh)"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_other_correct_answers_pass(capsys):
    assert check_max_pooling(max_pooling_by_loop) is True
    assert check_attention_entropy(entropy_by_loop) is True
    printed = capsys.readouterr().out
    assert "✓ check_max_pooling: all 8 cases passed" in printed
    assert "✓ check_attention_entropy: all 5 cases passed" in printed


def test_entropy_bounds():
    """A one-hot head has entropy 0; a uniform one over n keys, log n."""
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    uniform = torch.zeros(1, 2, 5, 5)
    uniform[..., :4] = 0.25
    uniform[:, 1] = 0
    uniform[:, 1, :, 0] = 1
    entropy = attention_entropy((uniform,), mask)
    torch.testing.assert_close(entropy, torch.tensor([[math.log(4), 0.0]]))
