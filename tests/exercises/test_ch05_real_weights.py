"""Chapter 5: pooling and [SEP] heads, their reference solutions and the bugs planted in them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from planted import PlantedBugs

from bertcourse.exercises import check_mean_pooling, check_strongest_sep_heads


def mean_pooling(last_hidden_state, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def pooling_plain_mean(last_hidden_state, attention_mask):
    return last_hidden_state.mean(dim=1)


def pooling_divided_by_length(last_hidden_state, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * weights).sum(1) / last_hidden_state.shape[1]


def pooling_normalised(last_hidden_state, attention_mask):
    return F.normalize(mean_pooling(last_hidden_state, attention_mask), dim=-1)


def pooling_sum_only(last_hidden_state, attention_mask):
    return (last_hidden_state * attention_mask.unsqueeze(-1)).sum(1)


def pooling_first_tokens(last_hidden_state, attention_mask):
    lengths = attention_mask.sum(1).tolist()
    return torch.stack(
        [h[: max(n, 1)].mean(0) for h, n in zip(last_hidden_state, lengths, strict=True)]
    )


def pooling_without_clamp(last_hidden_state, attention_mask):
    weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * weights).sum(1) / weights.sum(1)


def pooling_cls(last_hidden_state, attention_mask):
    return last_hidden_state[:, 0]


def strongest_sep_heads(
    attentions, attention_mask, *, sep="real", real_only=True, pooled=True, pick=torch.argmax
):
    lengths = attention_mask.sum(1)
    rows = torch.arange(attention_mask.shape[0])
    positions = {
        "real": lengths - 1,
        "last": torch.full_like(lengths, attention_mask.shape[1] - 1),
        "cls": torch.zeros_like(lengths),
    }[sep]
    result = []
    for layer_probs in attentions:
        to_sep = layer_probs[rows, :, :, positions]  # (B, nh, T)
        queries = attention_mask[:, None, :].to(to_sep.dtype)
        if not real_only:
            queries = torch.ones_like(queries)
        if pooled:
            per_head = (to_sep * queries).sum(dim=(0, 2)) / queries.sum()
        else:
            per_head = ((to_sep * queries).sum(2) / queries.sum(2)).mean(0)
        head = pick(per_head).item()
        result.append((head, per_head[head].item()))
    return result


def sep_heads_last_column(attentions, attention_mask):
    return strongest_sep_heads(attentions, attention_mask, sep="last")


def sep_heads_padded_queries(attentions, attention_mask):
    return strongest_sep_heads(attentions, attention_mask, real_only=False)


def sep_heads_mean_of_means(attentions, attention_mask):
    return strongest_sep_heads(attentions, attention_mask, pooled=False)


def sep_heads_weakest(attentions, attention_mask):
    return strongest_sep_heads(attentions, attention_mask, pick=torch.argmin)


def sep_heads_cls(attentions, attention_mask):
    return strongest_sep_heads(attentions, attention_mask, sep="cls")


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_mean_pooling: (
        mean_pooling,
        [
            (pooling_plain_mean, "padding tokens are included"),
            (pooling_divided_by_length, "not by the length"),
            (pooling_normalised, "unit length"),
            (pooling_sum_only, "divide the masked sum"),
            (pooling_first_tokens, "left padding"),
            (pooling_without_clamp, "clamp"),
            (pooling_cls, "[CLS]"),
        ],
    ),
    check_strongest_sep_heads: (
        strongest_sep_heads,
        [
            (sep_heads_last_column, "last *real* token"),
            (sep_heads_padded_queries, "real queries only"),
            (sep_heads_mean_of_means, "equally"),
            (sep_heads_weakest, "largest"),
            (sep_heads_cls, "[CLS]"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED
