"""Chapter 3: the multi-head attention checkers, their reference solutions and planted bugs."""

from __future__ import annotations

import math

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import (
    ExerciseFailed,
    check_merge_heads,
    check_multi_head_attention,
    check_split_heads,
    check_split_qkv,
)


def split_heads(x, num_heads):
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads).permute(0, 2, 1, 3)


def split_heads_without_transpose(x, num_heads):
    batch, length, hidden = x.shape
    return x.reshape(batch, num_heads, length, hidden // num_heads)


def split_heads_interleaved(x, num_heads):
    batch, length, hidden = x.shape
    return x.reshape(batch, length, hidden // num_heads, num_heads).permute(0, 3, 1, 2)


def split_heads_forgot_to_move_heads(x, num_heads):
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads)


def split_heads_features_before_tokens(x, num_heads):
    return split_heads(x, num_heads).transpose(-2, -1)


def split_heads_swapped_sizes(x, num_heads):
    batch, length, hidden = x.shape
    return x.reshape(batch, length, hidden // num_heads, num_heads).transpose(1, 2)


def split_qkv(qkv, num_heads):
    batch, length, width = qkv.shape
    parts = qkv.reshape(batch, length, 3, num_heads, width // (3 * num_heads))
    return tuple(parts.permute(2, 0, 3, 1, 4).unbind(0))


def split_qkv_heads_first(qkv, num_heads):
    batch, length, width = qkv.shape
    parts = qkv.reshape(batch, length, num_heads, 3, width // (3 * num_heads))
    return tuple(parts.permute(3, 0, 2, 1, 4).unbind(0))


def split_qkv_interleaved_heads(qkv, num_heads):
    batch, length, width = qkv.shape
    parts = qkv.reshape(batch, length, 3, width // (3 * num_heads), num_heads)
    return tuple(parts.permute(2, 0, 4, 1, 3).unbind(0))


def split_qkv_straight_reshape(qkv, num_heads):
    batch, length, width = qkv.shape
    return tuple(qkv.reshape(3, batch, num_heads, length, width // (3 * num_heads)).unbind(0))


def split_qkv_key_first(qkv, num_heads):
    query, key, value = split_qkv(qkv, num_heads)
    return key, query, value


def split_qkv_heads_not_moved(qkv, num_heads):
    batch, length, width = qkv.shape
    query, key, value = qkv.chunk(3, dim=-1)
    return tuple(t.reshape(batch, length, num_heads, -1) for t in (query, key, value))


def split_qkv_one_tensor(qkv, num_heads):
    return torch.stack(split_qkv(qkv, num_heads))


def merge_heads(x):
    batch, heads, length, head_size = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, length, heads * head_size)


def merge_heads_without_transpose(x):
    batch, heads, length, head_size = x.shape
    return x.reshape(batch, length, heads * head_size)


def merge_heads_with_view(x):
    batch, heads, length, head_size = x.shape
    return x.transpose(1, 2).view(batch, length, heads * head_size)


def merge_heads_interleaved(x):
    batch, heads, length, head_size = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, length, heads * head_size)


def merge_heads_not_flattened(x):
    return x.transpose(1, 2)


def merge_heads_summed(x):
    return x.sum(dim=1)


def multi_head_attention(
    hidden_states,
    attention,
    token_mask,
    *,
    scale="head",
    mask=True,
    bias=True,
    interleaved=False,
    merge="heads",
    dim=-1,
):
    heads, head_size = attention.num_attention_heads, attention.attention_head_size

    def project(linear):
        if interleaved:
            weight = linear.weight.reshape(head_size, heads, -1).transpose(0, 1)
            offset = linear.bias.reshape(head_size, heads).T[:, None, :]
        else:
            weight = linear.weight.reshape(heads, head_size, -1)  # (nh, hs, H)
            offset = linear.bias.reshape(heads, 1, head_size)
        projected = torch.einsum("bti,hdi->bhtd", hidden_states, weight)
        return projected + offset if bias else projected

    query, key, value = project(attention.query), project(attention.key), project(attention.value)
    scores = torch.einsum("bhqd,bhkd->bhqk", query, key)
    scores = (
        scores
        / {"head": math.sqrt(head_size), "hidden": math.sqrt(heads * head_size), "none": 1.0}[scale]
    )
    if mask:
        scores = scores.masked_fill(~token_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=dim)
    pattern = "bhqk,bhkd->bqhd" if merge == "heads" else "bhqk,bhkd->bqdh"
    return torch.einsum(pattern, probs, value).flatten(start_dim=2), probs


def mha_unscaled(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, scale="none")


def mha_scaled_by_hidden(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, scale="hidden")


def mha_mask_ignored(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, mask=False)


def mha_no_bias(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, bias=False)


def mha_interleaved_heads(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, interleaved=True)


def mha_merged_features_first(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, merge="features")


def mha_softmax_over_queries(hidden_states, attention, token_mask):
    return multi_head_attention(hidden_states, attention, token_mask, dim=-2)


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_split_heads: (
        split_heads,
        [
            (split_heads_without_transpose, "mixes tokens and heads"),
            (split_heads_interleaved, "contiguous chunk"),
            (split_heads_forgot_to_move_heads, "transpose(1, 2)"),
            (split_heads_features_before_tokens, "shape"),
            (split_heads_swapped_sizes, "shape"),
        ],
    ),
    check_merge_heads: (
        merge_heads,
        [
            (merge_heads_without_transpose, "transpose(1, 2)"),
            (merge_heads_with_view, "contiguous"),
            (merge_heads_interleaved, "end to end"),
            (merge_heads_not_flattened, "shape"),
            (merge_heads_summed, "shape"),
        ],
    ),
    check_split_qkv: (
        split_qkv,
        [
            (split_qkv_heads_first, "all the queries, then all the keys"),
            (split_qkv_interleaved_heads, "contiguous chunk"),
            (split_qkv_straight_reshape, "mixes tokens, heads and projections"),
            (split_qkv_key_first, "first H columns are the queries"),
            (split_qkv_heads_not_moved, "head axis moved"),
            (split_qkv_one_tensor, "three tensors"),
        ],
    ),
    check_multi_head_attention: (
        multi_head_attention,
        [
            (mha_unscaled, "sqrt(d_k)"),
            (mha_scaled_by_hidden, "sqrt(H)"),
            (mha_mask_ignored, "padded keys receive attention"),
            (mha_no_bias, "biases"),
            (mha_interleaved_heads, "rows i·d_k"),
            (mha_merged_features_first, "end to end"),
            (mha_softmax_over_queries, "last dimension"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_a_float32_answer_to_a_float64_case_is_rejected():
    def float32_output(x, num_heads):
        return split_heads(x, num_heads).float()

    with pytest.raises(ExerciseFailed, match="dtype"):
        check_split_heads(float32_output)


def test_check_multi_head_attention_leaves_torch_random_state_alone():
    state = torch.random.get_rng_state()
    check_multi_head_attention(multi_head_attention)
    assert torch.equal(torch.random.get_rng_state(), state)
