"""Chapter 2: the attention checkers, their reference solutions and the bugs planted in them."""

from __future__ import annotations

import math

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import (
    ExerciseFailed,
    check_attention,
    check_blockwise_attention,
    check_causal_attention,
    check_local_attention_mask,
    check_softmax,
)


def attention(query, key, value, attention_mask=None, *, scale=True, mask_mode="finfo", dim=-1):
    scores = query @ key.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(query.shape[-1])
    if attention_mask is not None and mask_mode != "ignore":
        if attention_mask.dtype == torch.bool:
            blocked = float("-inf") if mask_mode == "-inf" else torch.finfo(scores.dtype).min
            may_attend = ~attention_mask if mask_mode == "inverted" else attention_mask
            scores = scores.masked_fill(~may_attend, blocked)
        else:
            scores = scores + attention_mask
    probs = scores.softmax(dim=dim)
    return probs @ value, probs


def attention_unscaled(query, key, value, attention_mask=None):
    return attention(query, key, value, attention_mask, scale=False)


def attention_mask_ignored(query, key, value, attention_mask=None):
    return attention(query, key, value, attention_mask, mask_mode="ignore")


def attention_softmax_over_queries(query, key, value, attention_mask=None):
    return attention(query, key, value, attention_mask, dim=-2)


def attention_minus_inf(query, key, value, attention_mask=None):
    return attention(query, key, value, attention_mask, mask_mode="-inf")


def attention_inverted_mask(query, key, value, attention_mask=None):
    return attention(query, key, value, attention_mask, mask_mode="inverted")


def attention_transposed_output(query, key, value, attention_mask=None):
    output, _ = attention(query, key, value, attention_mask)
    return output.transpose(-2, -1)


def attention_mask_after_softmax(query, key, value, attention_mask=None):
    _, probs = attention(query, key, value, None)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        probs = probs * attention_mask
    return probs @ value, probs


def attention_float_mask_as_bool(query, key, value, attention_mask=None):
    if attention_mask is not None:
        attention_mask = attention_mask.bool()  # wrong for a float mask: 0 means "allowed"
    return attention(query, key, value, attention_mask)


def attention_inverts_any_mask(query, key, value, attention_mask=None):
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    if attention_mask is not None:  # wrong for a float mask: ~ only works on bools
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    return probs @ value, probs


def local_attention_mask(attention_mask, window, *, near=None, keys=True, queries=False):
    length = attention_mask.shape[-1]
    positions = torch.arange(length)
    offset = positions[:, None] - positions[None, :]
    band = offset.abs() <= window if near is None else near(offset, window)
    real = attention_mask.bool()
    mask = band.expand(len(real), 1, length, length)
    if keys:
        mask = mask & real[:, None, None, :]
    if queries:
        mask = mask & real[:, None, :, None]
    return mask


def local_window_too_narrow(attention_mask, window):
    return local_attention_mask(attention_mask, window, near=lambda d, w: d.abs() < w)


def local_looks_back_only(attention_mask, window):
    return local_attention_mask(attention_mask, window, near=lambda d, w: (d >= 0) & (d <= w))


def local_ignores_padding(attention_mask, window):
    return local_attention_mask(attention_mask, window, keys=False)


def local_masks_queries(attention_mask, window):
    return local_attention_mask(attention_mask, window, keys=False, queries=True)


def local_masks_queries_and_keys(attention_mask, window):
    return local_attention_mask(attention_mask, window, queries=True)


def local_assumes_right_padding(attention_mask, window):
    lengths = attention_mask.long().sum(-1)
    length = attention_mask.shape[-1]
    return local_attention_mask(torch.arange(length)[None, :] < lengths[:, None], window)


def local_without_head_axis(attention_mask, window):
    return local_attention_mask(attention_mask, window)[:, 0]


def local_float_mask(attention_mask, window):
    positions = torch.arange(attention_mask.shape[-1])
    band = ((positions[:, None] - positions[None, :]).abs() <= window).float()
    return band * attention_mask[:, None, None, :]


def local_inverted(attention_mask, window):
    return ~local_attention_mask(attention_mask, window)


def causal_attention(query, key, value, *, keep=lambda ones: ones.tril(), scale=True):
    length = query.shape[-2]
    mask = keep(torch.ones(length, length, dtype=torch.bool))
    return attention(query, key, value, mask, scale=scale)


def causal_no_mask(query, key, value):
    return attention(query, key, value)


def causal_upper_triangle(query, key, value):
    return causal_attention(query, key, value, keep=lambda ones: ones.triu())


def causal_without_diagonal(query, key, value):
    return causal_attention(query, key, value, keep=lambda ones: ones.tril(diagonal=-1))


def causal_unscaled(query, key, value):
    return causal_attention(query, key, value, scale=False)


def causal_mask_after_softmax(query, key, value):
    length = query.shape[-2]
    return attention_mask_after_softmax(
        query, key, value, torch.ones(length, length, dtype=torch.bool).tril()
    )


def causal_transposed_output(query, key, value):
    return causal_attention(query, key, value)[0].transpose(-2, -1)


def stable_softmax(scores):
    exponentials = (scores - scores.max(dim=-1, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def softmax_naive(scores):
    exponentials = scores.exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def softmax_global_max(scores):
    exponentials = (scores - scores.max()).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def softmax_first_dim(scores):
    exponentials = (scores - scores.max(dim=0, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=0, keepdim=True)


def softmax_no_keepdim(scores):
    exponentials = (scores - scores.max(dim=-1, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=-1)


def softmax_minus_min(scores):
    exponentials = (scores - scores.min(dim=-1, keepdim=True).values).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def blockwise_attention(
    query,
    key,
    value,
    block_size,
    *,
    rescale=True,
    divide=True,
    scale=True,
    start=float("-inf"),
    skip_partial=False,
    subtract_max=True,
):
    factor = 1 / math.sqrt(query.shape[-1]) if scale else 1.0
    running_max = torch.full(query.shape[:-1] + (1,), start, dtype=query.dtype)
    running_sum = torch.zeros(query.shape[:-1] + (1,), dtype=query.dtype)
    output = torch.zeros(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype)
    length = key.shape[-2]
    stop = length - length % block_size if skip_partial else length
    for first in range(0, stop, block_size):
        scores = query @ key[..., first : first + block_size, :].transpose(-2, -1) * factor
        new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
        correction = torch.exp(running_max - new_max) if rescale else 1.0
        exponentials = torch.exp(scores - new_max) if subtract_max else torch.exp(scores)
        if not subtract_max:
            correction = 1.0
        running_sum = running_sum * correction + exponentials.sum(-1, keepdim=True)
        output = output * correction + exponentials @ value[..., first : first + block_size, :]
        running_max = new_max
    return output / running_sum if divide else output


def blockwise_no_rescaling(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, rescale=False)


def blockwise_no_final_division(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, divide=False)


def blockwise_unscaled(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, scale=False)


def blockwise_drops_last_block(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, skip_partial=True)


def blockwise_max_starts_at_zero(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, start=0.0)


def blockwise_plain_exp(query, key, value, block_size):
    return blockwise_attention(query, key, value, block_size, subtract_max=False)


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_attention: (
        attention,
        [
            (attention_unscaled, "sqrt"),
            (attention_mask_ignored, "padded keys receive attention"),
            (attention_softmax_over_queries, "last dimension"),
            (attention_minus_inf, "finfo"),
            (attention_inverted_mask, "inverted"),
            (attention_transposed_output, "shape"),
            (attention_mask_after_softmax, "before the softmax"),
            (attention_float_mask_as_bool, "added"),
            (attention_inverts_any_mask, "~ inverts bool tensors only"),
        ],
    ),
    check_local_attention_mask: (
        local_attention_mask,
        [
            (local_window_too_narrow, "<= window"),
            (local_looks_back_only, "both ways"),
            (local_ignores_padding, "padded keys receive attention"),
            (local_masks_queries, "last axis"),
            (local_masks_queries_and_keys, "block padded keys only"),
            (local_assumes_right_padding, "padding may sit on the left"),
            (local_without_head_axis, "head axis"),
            (local_float_mask, "bool"),
            (local_inverted, "inverted"),
        ],
    ),
    check_causal_attention: (
        causal_attention,
        [
            (causal_no_mask, "future"),
            (causal_upper_triangle, "lower triangle"),
            (causal_without_diagonal, "diagonal"),
            (causal_unscaled, "sqrt"),
            (causal_mask_after_softmax, "before the softmax"),
            (causal_transposed_output, "shape"),
        ],
    ),
    check_softmax: (
        stable_softmax,
        [
            (softmax_naive, "maximum before exp"),
            (softmax_global_max, "own maximum"),
            (softmax_first_dim, "last dimension"),
            (softmax_no_keepdim, "keepdim"),
            (softmax_minus_min, "exp(0)"),
        ],
    ),
    check_blockwise_attention: (
        blockwise_attention,
        [
            (blockwise_no_rescaling, "rescale"),
            (blockwise_no_final_division, "divide the running output"),
            (blockwise_unscaled, "sqrt"),
            (blockwise_drops_last_block, "last block"),
            (blockwise_max_starts_at_zero, "-inf"),
            (blockwise_plain_exp, "overflow"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_stub_in_a_helper_is_named():
    def causal_mask(length):
        raise NotImplementedError

    def my_causal_attention(query, key, value):
        return attention(query, key, value, causal_mask(query.shape[-2]))

    with pytest.raises(ExerciseFailed, match="in causal_mask with your code"):
        check_causal_attention(my_causal_attention)


def test_missing_default_argument_is_explained():
    def no_default(query, key, value, attention_mask):
        return attention(query, key, value, attention_mask)

    with pytest.raises(ExerciseFailed, match="need a default"):
        check_attention(no_default)


def test_check_attention_leaves_torch_random_state_alone():
    state = torch.random.get_rng_state()
    check_attention(attention)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_learners_in_place_edits_do_not_leak_between_cases():
    def scribbles_on_inputs(query, key, value, attention_mask=None):
        result = attention(query, key, value, attention_mask)
        query.zero_()
        key.fill_(3.0)
        return result

    assert check_attention(scribbles_on_inputs)
