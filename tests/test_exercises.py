"""The exercise checkers pass the reference solutions and reject planted bugs with the right hint.

Each planted bug is a mistake a learner could plausibly make; the test
names the word its hint must contain, so a checker that rejects a bug for
the wrong reason (or with a useless hint) fails here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bertcourse import exercises
from bertcourse.exercises import (
    ExerciseFailed,
    check_attention,
    check_blockwise_attention,
    check_causal_attention,
    check_gelu,
    check_layer_norm,
    check_mean_pooling,
    check_merge_heads,
    check_multi_head_attention,
    check_parameter_count,
    check_softmax,
    check_split_heads,
    check_strongest_sep_heads,
    check_wordpiece,
    checking,
)

# ----------------------------------------------------------------------------
# Reference solutions (as the chapters write them) and the bugs planted in them
# ----------------------------------------------------------------------------


def assert_rejects(checker, bug, keyword, capsys):
    """The checker fails the planted bug with a short report: the case, `keyword`, a hint."""
    with pytest.raises(ExerciseFailed) as failure:
        checker(bug)
    message = failure.value.message
    assert message.startswith(f"✗ {checker.__name__}: case ")
    assert keyword in message, message
    assert "HINT: " in message
    assert len(message.splitlines()) <= 6, message
    assert "✓" not in capsys.readouterr().out
    return message


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


def layer_norm(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(variance + eps) + bias


def layer_norm_unbiased(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) + bias


def layer_norm_eps_outside(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return weight * (x - mean) / (std + eps) + bias


def layer_norm_swapped_affine(x, weight, bias, eps):
    return layer_norm(x, bias, weight, eps)


def layer_norm_not_centred(x, weight, bias, eps):
    variance = x.var(dim=-1, keepdim=True, unbiased=False)
    return weight * x / torch.sqrt(variance + eps) + bias


def layer_norm_one_pass(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    variance = (x**2).mean(dim=-1, keepdim=True) - mean**2
    return weight * (x - mean) / torch.sqrt(variance + eps) + bias


def layer_norm_no_eps(x, weight, bias, eps):
    return layer_norm(x, weight, bias, 0.0)


def gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_relu(x):
    return torch.clamp(x, min=0)


def gelu_erf_unscaled(x):
    return x * 0.5 * (1.0 + torch.erf(x))


def gelu_missing_half(x):
    return x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_cdf_only(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_sigmoid(x):
    return x * torch.sigmoid(1.702 * x)


def count_parameters(
    config,
    *,
    pooler=True,
    norms=True,
    norms_per_layer=2,
    biases=True,
    intermediate=None,
    projections=4,
    segments=True,
):
    hidden, layers = config.hidden_size, config.num_hidden_layers
    inter = intermediate(config) if intermediate else config.intermediate_size
    tables = config.vocab_size + config.max_position_embeddings
    embeddings = (tables + (config.type_vocab_size if segments else 0)) * hidden
    embeddings += 2 * hidden if norms else 0
    attention_block = projections * hidden * hidden + (projections * hidden if biases else 0)
    feed_forward = 2 * hidden * inter + ((inter + hidden) if biases else 0)
    layer_norms = norms_per_layer * 2 * hidden if norms else 0
    pooler_count = (hidden * hidden + (hidden if biases else 0)) if pooler else 0
    return embeddings + layers * (attention_block + feed_forward + layer_norms) + pooler_count


def count_without_pooler(config):
    return count_parameters(config, pooler=False)


def count_without_layer_norms(config):
    return count_parameters(config, norms=False)


def count_one_norm_per_layer(config):
    return count_parameters(config, norms_per_layer=1)


def count_without_biases(config):
    return count_parameters(config, biases=False)


def count_assuming_4h(config):
    return count_parameters(config, intermediate=lambda c: 4 * c.hidden_size)


def count_three_projections(config):
    return count_parameters(config, projections=3)


def count_without_segments(config):
    return count_parameters(config, segments=False)


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


def wordpiece(
    word,
    vocab,
    unk_token="[UNK]",
    max_input_chars_per_word=100,
    *,
    longest=True,
    prefix="##",
    prefix_first=False,
    partial_unk=False,
    too_long=lambda n, m: n > m,
    unk=None,
):
    unk = unk or unk_token
    if too_long(len(word), max_input_chars_per_word):
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        for end in ends:
            piece = word[start:end]
            if start > 0 or prefix_first:
                piece = prefix + piece
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            if not partial_unk:
                return [unk]
            pieces.append(unk)
            start += 1
    return pieces


def wordpiece_shortest_first(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, longest=False)


def wordpiece_no_prefix(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, prefix="")


def wordpiece_prefix_on_first(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, prefix_first=True)


def wordpiece_partial_unknown(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, partial_unk=True)


def wordpiece_no_length_limit(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, too_long=lambda n, m: False)


def wordpiece_limit_off_by_one(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, too_long=lambda n, m: n >= m)


def wordpiece_hard_coded_unk(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, unk="[UNK]")


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
    check_layer_norm: (
        layer_norm,
        [
            (layer_norm_unbiased, "biased variance"),
            (layer_norm_eps_outside, "inside the square root"),
            (layer_norm_swapped_affine, "multiplies"),
            (layer_norm_not_centred, "subtract the mean"),
            (layer_norm_one_pass, "E[x²]"),
            (layer_norm_no_eps, "constant vector"),
        ],
    ),
    check_gelu: (
        gelu,
        [
            (gelu_tanh, "tanh approximation"),
            (gelu_relu, "ReLU"),
            (gelu_erf_unscaled, "sqrt(2)"),
            (gelu_missing_half, "1/2"),
            (gelu_cdf_only, "multiply"),
            (gelu_sigmoid, "sigmoid"),
        ],
    ),
    check_parameter_count: (
        count_parameters,
        [
            (count_without_pooler, "pooler"),
            (count_without_layer_norms, "LayerNorms are missing"),
            (count_one_norm_per_layer, "two LayerNorms"),
            (count_without_biases, "biases"),
            (count_assuming_4h, "intermediate_size"),
            (count_three_projections, "four"),
            (count_without_segments, "segment"),
        ],
    ),
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
    check_wordpiece: (
        wordpiece,
        [
            (wordpiece_shortest_first, "longest"),
            (wordpiece_no_prefix, '"##" prefix'),
            (wordpiece_prefix_on_first, "only continuation"),
            (wordpiece_partial_unknown, "whole word"),
            (wordpiece_no_length_limit, "longer than"),
            (wordpiece_limit_off_by_one, "exactly"),
            (wordpiece_hard_coded_unk, "unk_token argument"),
        ],
    ),
}

BUGS = [
    pytest.param(checker, bug, keyword, id=f"{checker.__name__}-{bug.__name__}")
    for checker, (_, bugs) in PLANTED.items()
    for bug, keyword in bugs
]


def test_every_public_checker_is_tested():
    public = {name for name in exercises.__all__ if name.startswith("check_")}
    assert public == {checker.__name__ for checker in PLANTED}
    assert all(len(bugs) >= 5 for _, bugs in PLANTED.values())


@pytest.mark.parametrize("checker", PLANTED, ids=lambda c: c.__name__)
def test_reference_solution_passes(checker, capsys):
    solution, _ = PLANTED[checker]
    assert checker(solution) is True
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"✓ {checker.__name__}: all ") and printed.endswith("cases passed")


@pytest.mark.parametrize(("checker", "bug", "keyword"), BUGS)
def test_planted_bug_is_rejected_with_its_hint(checker, bug, keyword, capsys):
    message = assert_rejects(checker, bug, keyword, capsys)
    assert " of " in message.splitlines()[0]


@pytest.mark.parametrize("checker", PLANTED, ids=lambda c: c.__name__)
def test_stub_reports_not_implemented(checker):
    def my_solution(*args, **kwargs):
        """The student edition's stub."""
        # YOUR CODE HERE
        raise NotImplementedError

    with pytest.raises(ExerciseFailed) as failure:
        checker(my_solution)
    assert failure.value.message == (
        "Not implemented yet: replace the `raise NotImplementedError` in my_solution with your "
        "code, then run this cell again."
    )


def test_stub_in_a_helper_is_named():
    def causal_mask(length):
        raise NotImplementedError

    def my_causal_attention(query, key, value):
        return attention(query, key, value, causal_mask(query.shape[-2]))

    with pytest.raises(ExerciseFailed, match="in causal_mask with your code"):
        check_causal_attention(my_causal_attention)


def test_other_exceptions_name_the_case_and_the_error():
    def broken(query, key, value, attention_mask=None):
        raise ValueError("the shapes confuse me")

    with pytest.raises(ExerciseFailed) as failure:
        check_attention(broken)
    first, second = failure.value.message.splitlines()[:2]
    assert first.startswith("✗ check_attention: case 1 of ")
    assert "broken raised ValueError at line " in second and "the shapes confuse me" in second


def test_missing_default_argument_is_explained():
    def no_default(query, key, value, attention_mask):
        return attention(query, key, value, attention_mask)

    with pytest.raises(ExerciseFailed, match="need a default"):
        check_attention(no_default)


def test_a_float32_answer_to_a_float64_case_is_rejected():
    def float32_output(x, num_heads):
        return split_heads(x, num_heads).float()

    with pytest.raises(ExerciseFailed, match="dtype"):
        check_split_heads(float32_output)


def test_checkers_leave_torch_random_state_alone():
    state = torch.random.get_rng_state()
    check_multi_head_attention(multi_head_attention)
    check_attention(attention)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_learners_in_place_edits_do_not_leak_between_cases():
    def scribbles_on_inputs(query, key, value, attention_mask=None):
        result = attention(query, key, value, attention_mask)
        query.zero_()
        key.fill_(3.0)
        return result

    assert check_attention(scribbles_on_inputs)


def test_render_traceback_is_just_the_message():
    error = ExerciseFailed("✗ check_x: case 1 of 2: batch 1\n  values differ\nHINT: look")
    assert error._render_traceback_() == [
        "✗ check_x: case 1 of 2: batch 1",
        "  values differ",
        "HINT: look",
    ]
    assert isinstance(error, AssertionError)
    assert str(error) == error.message


def test_not_a_function():
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_gelu(gelu(torch.ones(3)))


# ----------------------------------------------------------------------------
# checking: an exercise's own asserts
# ----------------------------------------------------------------------------


def test_checking_prints_a_tick_when_every_assert_holds(capsys):
    with checking("my exercise"):
        assert 1 + 1 == 2
    assert capsys.readouterr().out == "✓ my exercise: all checks passed\n"


def test_checking_shows_the_failed_assert_line():
    with pytest.raises(ExerciseFailed) as failure:
        with checking("my exercise"):
            total = 3
            assert total == 4
    message = failure.value.message
    assert message.startswith("✗ my exercise: a check failed in ")
    assert "assert total == 4" in message
    assert len(message.splitlines()) <= 3


def test_checking_reports_a_stub_as_not_implemented():
    def prune(block):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match=r"^Not implemented yet: .* in prune with your code"):
        with checking("prune a head"):
            prune(None)


def test_checking_names_other_errors(capsys):
    with pytest.raises(ExerciseFailed) as failure:
        with checking("my exercise"):
            torch.ones(2, 3) @ torch.ones(2, 3)
    assert "RuntimeError" in failure.value.message and "HINT:" in failure.value.message
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------
# check_mask_tokens (chapter: masked language modelling)
# ----------------------------------------------------------------------------

from bertcourse.data import mask_tokens as package_mask_tokens  # noqa: E402
from bertcourse.exercises import check_mask_tokens  # noqa: E402


def mask_tokens(
    input_ids,
    special_tokens_mask,
    vocab_size,
    mask_token_id,
    mlm_probability=0.15,
    generator=None,
    *,
    fixed_probability=None,
    exclude_specials=True,
    invert_with_tilde=False,
    label_everything=False,
    mask_share=0.8,
    random_share=0.1,
    corrupt_unchosen=False,
    random_vocab_size=None,
    labels_from_inputs=False,
    use_generator=True,
):
    """The chapter's masking, with switches that plant one bug each."""
    generator = generator if use_generator else None
    probability = fixed_probability or mlm_probability
    shape = input_ids.shape
    chosen = torch.rand(shape, generator=generator) < probability  # (B, T)
    if invert_with_tilde:  # on 0/1 integers ~ gives -1/-2, both nonzero: nothing is excluded
        chosen &= (~special_tokens_mask) != 0
    elif exclude_specials:
        chosen &= ~special_tokens_mask.bool()
    action = torch.rand(shape, generator=generator)  # (B, T)
    to_mask = chosen & (action < mask_share)
    to_random = (action >= mask_share) & (action < mask_share + random_share)
    if not corrupt_unchosen:
        to_random &= chosen
    random_ids = torch.randint(random_vocab_size or vocab_size, shape, generator=generator)
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    source = inputs if labels_from_inputs else input_ids
    labels = source.clone() if label_everything else source.masked_fill(~chosen, -100)
    return inputs, labels


def mask_tokens_conditional(
    input_ids, special_tokens_mask, vocab_size, mask_token_id, mlm_probability=0.15, generator=None
):
    """The transformers recipe: Bernoulli draws, [MASK] with 0.8, then random with 0.1 / 0.2."""
    probabilities = torch.full(input_ids.shape, mlm_probability)
    probabilities.masked_fill_(special_tokens_mask.bool(), 0.0)
    chosen = torch.bernoulli(probabilities, generator=generator).bool()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    to_mask &= chosen
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    to_random &= chosen & ~to_mask
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, input_ids.masked_fill(~chosen, -100)


def masking_bug(name, **bug):
    """mask_tokens with one bug planted, under a name that says which."""

    def masking(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return mask_tokens(
            input_ids,
            special_tokens_mask,
            vocab_size,
            mask_token_id,
            mlm_probability,
            generator,
            **bug,
        )

    masking.__name__ = masking.__qualname__ = name
    return masking


MASKING_BUGS = [
    (masking_bug("chooses_specials", exclude_specials=False), "special_tokens_mask is True"),
    (masking_bug("labels_everywhere", label_everything=True), "-100 wherever"),
    (masking_bug("always_mask", mask_share=1.0, random_share=0.0), "80% become [MASK]"),
    (masking_bug("half_of_the_tokens", fixed_probability=0.5), "probability mlm_probability"),
    (masking_bug("ignores_mlm_probability", fixed_probability=0.15), "mlm_probability argument"),
    (masking_bug("random_ids_everywhere", corrupt_unchosen=True), "only chosen tokens may change"),
    (masking_bug("labels_from_corrupted_inputs", labels_from_inputs=True), "original token id"),
    (masking_bug("ignores_generator", use_generator=False), "`generator` argument"),
    (masking_bug("random_ids_from_five", random_vocab_size=5), "uniformly from the whole vocab"),
    (masking_bug("int_mask_inverted", invert_with_tilde=True), ".bool()"),
]
PLANTED[check_mask_tokens] = (mask_tokens, MASKING_BUGS)


@pytest.mark.parametrize(
    "solution",
    [mask_tokens, mask_tokens_conditional, package_mask_tokens],
    ids=lambda f: f.__name__,
)
def test_check_mask_tokens_passes_correct_masking(solution, capsys):
    assert check_mask_tokens(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_mask_tokens: all 6 cases passed"


@pytest.mark.parametrize(("bug", "keyword"), MASKING_BUGS, ids=lambda b: getattr(b, "__name__", ""))
def test_check_mask_tokens_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_mask_tokens, bug, keyword, capsys)


def test_check_mask_tokens_reports_stubs_and_odd_answers():
    def my_mask_tokens(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_mask_tokens with"):
        check_mask_tokens(my_mask_tokens)

    def returns_one_tensor(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return input_ids

    with pytest.raises(ExerciseFailed, match="expected a pair"):
        check_mask_tokens(returns_one_tensor)
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_mask_tokens(None)


def test_check_mask_tokens_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    with pytest.raises(ExerciseFailed):
        check_mask_tokens(masking_bug("ignores_generator", use_generator=False))
    check_mask_tokens(mask_tokens)
    assert torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------------------
# check_parameter_groups and check_warmup_schedule (chapter: the pretraining run)
# ----------------------------------------------------------------------------

from bertcourse.train import linear_warmup_decay, parameter_groups  # noqa: E402

from bertcourse.exercises import check_parameter_groups, check_warmup_schedule  # noqa: E402


def weight_decay_groups(
    model,
    weight_decay,
    *,
    exempt_layer_norms=True,
    exempt_biases=True,
    every_name=False,
    drop_layer_norms=False,
    layer_norms_in_both=False,
    fixed_decay=None,
):
    """The chapter's two AdamW groups by parameter name, with switches that plant one bug each."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters(remove_duplicate=not every_name):
        is_layer_norm = "LayerNorm" in name
        if (exempt_biases and name.endswith("bias")) or (exempt_layer_norms and is_layer_norm):
            if drop_layer_norms and is_layer_norm:
                continue
            no_decay.append(parameter)
            if layer_norms_in_both and is_layer_norm:
                decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay if fixed_decay is None else fixed_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def groups_by_module_type(model, weight_decay):
    """Another correct answer: one group per parameter, LayerNorm found by its module type."""
    layer_norm_ids = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    }
    return [
        {
            "params": [parameter],
            "weight_decay": 0.0
            if name.endswith("bias") or id(parameter) in layer_norm_ids
            else weight_decay,
        }
        for name, parameter in model.named_parameters()
    ]


def groups_bug(name, **bug):
    def groups(model, weight_decay):
        return weight_decay_groups(model, weight_decay, **bug)

    groups.__name__ = groups.__qualname__ = name
    return groups


def groups_as_names(model, weight_decay):
    groups = weight_decay_groups(model, weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    return [{**g, "params": [names[id(p)] for p in g["params"]]} for g in groups]


def groups_without_decay_key(model, weight_decay):
    decay, no_decay = weight_decay_groups(model, weight_decay)
    return [decay, {"params": no_decay["params"]}]


def groups_of_copies(model, weight_decay):
    return [
        {**g, "params": [p.detach().clone() for p in g["params"]]}
        for g in weight_decay_groups(model, weight_decay)
    ]


PARAMETER_GROUP_BUGS = [
    (groups_bug("decays_layer_norms", exempt_layer_norms=False), "LayerNorm parameters must not"),
    (groups_bug("decays_biases", exempt_biases=False), "biases must not decay"),
    (groups_bug("forgets_layer_norms", drop_layer_norms=True), "in no group"),
    (groups_bug("layer_norms_in_both", layer_norms_in_both=True), "exactly one group"),
    (groups_bug("ignores_weight_decay", fixed_decay=0.01), "weight_decay argument"),
    (groups_bug("tied_decoder_twice", every_name=True), "tied tensor"),
    (groups_bug("nothing_decays", fixed_decay=0.0), "weight matrices and embeddings do decay"),
    (groups_as_names, "not their names"),
    (groups_without_decay_key, "no 'weight_decay' entry"),
    (groups_of_copies, "not a parameter of the model"),
]
PLANTED[check_parameter_groups] = (weight_decay_groups, PARAMETER_GROUP_BUGS)


@pytest.mark.parametrize(
    "solution",
    [weight_decay_groups, groups_by_module_type, parameter_groups],
    ids=lambda f: f.__name__,
)
def test_check_parameter_groups_passes_correct_groups(solution, capsys):
    assert check_parameter_groups(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_parameter_groups: all 4 cases passed"


@pytest.mark.parametrize(
    ("bug", "keyword"), PARAMETER_GROUP_BUGS, ids=lambda b: getattr(b, "__name__", "")
)
def test_check_parameter_groups_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_parameter_groups, bug, keyword, capsys)


def test_check_parameter_groups_names_the_tied_parameter():
    with pytest.raises(ExerciseFailed) as failure:
        check_parameter_groups(groups_bug("tied_decoder_twice", every_name=True))
    assert "cls.predictions.decoder.weight" in failure.value.message


def test_check_parameter_groups_reports_stubs_and_keeps_the_random_state():
    def my_parameter_groups(model, weight_decay):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_parameter_groups"):
        check_parameter_groups(my_parameter_groups)
    state = torch.random.get_rng_state()
    check_parameter_groups(weight_decay_groups)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ExerciseFailed, match="list of parameter-group dicts"):
        check_parameter_groups(lambda model, weight_decay: {"params": list(model.parameters())})


def warmup_schedule(step, warmup_steps, total_steps):
    """The chapter's multiplier: linear warm-up, then linear decay to 0."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def warmup_schedule_as_transformers(step, warmup_steps, total_steps):
    """Another correct answer: the lambda inside transformers.get_linear_schedule_with_warmup."""
    import transformers

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    return schedule.lr_lambdas[0](step)


def warmup_schedule_float32_tensor(step, warmup_steps, total_steps):
    """Also correct: computed with float32 tensors (LambdaLR accepts a 0-d tensor's value)."""
    step = torch.tensor(step, dtype=torch.float32)
    warmup = torch.tensor(max(1, warmup_steps), dtype=torch.float32)
    if step < warmup_steps:
        return step / warmup
    return torch.clamp((total_steps - step) / max(1, total_steps - warmup_steps), min=0.0)


def schedule_no_warmup(step, warmup_steps, total_steps):
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def schedule_warmup_one_early(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return warmup_schedule(step, warmup_steps, total_steps)


def schedule_decay_off_by_one(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps + 1))


def schedule_with_floor(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.1, (total_steps - step) / max(1, total_steps - warmup_steps))


def schedule_cosine(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def schedule_goes_negative(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return (total_steps - step) / max(1, total_steps - warmup_steps)


def schedule_divides_by_zero(step, warmup_steps, total_steps):
    return max(0.0, min(step / warmup_steps, (total_steps - step) / (total_steps - warmup_steps)))


def schedule_as_tensor_without_guard(step, warmup_steps, total_steps):
    step, warmup = torch.tensor(float(step)), torch.tensor(float(warmup_steps))
    return torch.clamp(
        torch.minimum(step / warmup, (total_steps - step) / (total_steps - warmup)), 0
    )


WARMUP_BUGS = [
    (schedule_no_warmup, "there is no warm-up"),
    (schedule_warmup_one_early, "off by one"),
    (schedule_decay_off_by_one, "off by one at the end of the warm-up"),
    (schedule_with_floor, "a floor"),
    (schedule_cosine, "cosine"),
    (schedule_goes_negative, "max(0.0, ...)"),
    (schedule_divides_by_zero, "warmup_steps=0"),
    (schedule_as_tensor_without_guard, "warmup_steps=0"),
]
PLANTED[check_warmup_schedule] = (warmup_schedule, WARMUP_BUGS)


@pytest.mark.parametrize(
    "solution",
    [
        warmup_schedule,
        warmup_schedule_as_transformers,
        warmup_schedule_float32_tensor,
        linear_warmup_decay,
    ],
    ids=lambda f: f.__name__,
)
def test_check_warmup_schedule_passes_correct_schedules(solution, capsys):
    assert check_warmup_schedule(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_warmup_schedule: all 4 cases passed"


@pytest.mark.parametrize(("bug", "keyword"), WARMUP_BUGS, ids=lambda b: getattr(b, "__name__", ""))
def test_check_warmup_schedule_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_warmup_schedule, bug, keyword, capsys)


def test_check_warmup_schedule_names_the_line_that_divides_by_zero():
    with pytest.raises(ExerciseFailed) as failure:
        check_warmup_schedule(schedule_divides_by_zero)
    assert "case 3 of 4" in failure.value.message
    assert "ZeroDivisionError at line " in failure.value.message


def test_check_warmup_schedule_reports_stubs_and_odd_answers():
    def lr_multiplier(step, warmup_steps, total_steps):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in lr_multiplier with"):
        check_warmup_schedule(lr_multiplier)
    with pytest.raises(ExerciseFailed, match="not a number"):
        check_warmup_schedule(lambda step, warmup_steps, total_steps: None)


# ----------------------------------------------------------------------------
# check_nsp_pairs (chapter: next sentence prediction)
# ----------------------------------------------------------------------------

from bertcourse.exercises import check_nsp_pairs  # noqa: E402


def nsp_pairs(
    documents,
    rng,
    max_tokens,
    *,
    not_next_from="other",
    is_next_b="next",
    swap_labels=False,
    truncate="longest",
    not_next_rate=0.5,
):
    """The chapter's simple pair builder, with switches that plant one bug each."""
    pairs = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            tokens_a = list(document[position])
            if rng.random() >= not_next_rate:
                label = 0
                b = document[position + 1] if is_next_b == "next" else rng.choice(document)
            else:
                label = 1
                if not_next_from == "other":
                    other = rng.randrange(len(documents) - 1)
                    other += other >= index
                    b = rng.choice(documents[other])
                else:
                    b = rng.choice(document)
            tokens_b = list(b)
            if truncate == "longest":
                while len(tokens_a) + len(tokens_b) > max_tokens:
                    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    del longer[0 if rng.random() < 0.5 else -1]  # either end, as the original
            elif truncate == "b_only":
                tokens_b = tokens_b[: max(0, max_tokens - len(tokens_a))]
            elif truncate == "a_only":
                tokens_a = tokens_a[: max(0, max_tokens - len(tokens_b))]
            if swap_labels:
                label = 1 - label
            pairs.append((tokens_a, tokens_b, label))
    return pairs


def nsp_pairs_by_sampling(documents, rng, max_tokens):
    """Another correct answer: labels drawn first, B from a shuffled list of other documents."""
    labels = {}
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            labels[index, position] = int(rng.random() < 0.5)
    pairs = []
    for (index, position), label in labels.items():
        if label == 0:
            b = documents[index][position + 1]
        else:
            others = [d for d in range(len(documents)) if d != index]
            b = rng.choice(documents[rng.choice(others)])
        a, b = list(documents[index][position]), list(b)
        while len(a) + len(b) > max_tokens:
            (a if len(a) > len(b) else b).pop()
        pairs.append((a, b, label))
    return pairs[::-1]


def nsp_bug(name, **bug):
    def pairs(documents, rng, max_tokens):
        return nsp_pairs(documents, rng, max_tokens, **bug)

    pairs.__name__ = pairs.__qualname__ = name
    return pairs


def nsp_pairs_skip_last_document(documents, rng, max_tokens):
    return nsp_pairs(documents[:-1], rng, max_tokens)


NSP_PAIR_BUGS = [
    (nsp_bug("not_next_from_same_document", not_next_from="same"), "another document"),
    (nsp_bug("is_next_random_sentence", is_next_b="random"), "right after A"),
    (nsp_bug("labels_swapped", swap_labels=True), "labels are swapped"),
    (nsp_bug("no_truncation", truncate="none"), "truncate each pair"),
    (nsp_bug("always_is_next", not_next_rate=0.0), "fair coin"),
    (nsp_bug("b_truncated_to_what_is_left", truncate="b_only"), "is empty"),
    (nsp_bug("a_truncated_only", truncate="a_only"), "longer side"),
    (nsp_bug("mostly_not_next", not_next_rate=0.7), "expected 50%"),
    (nsp_pairs_skip_last_document, "one per sentence that has a next sentence"),
]
PLANTED[check_nsp_pairs] = (nsp_pairs, NSP_PAIR_BUGS)


@pytest.mark.parametrize("solution", [nsp_pairs, nsp_pairs_by_sampling], ids=lambda f: f.__name__)
def test_check_nsp_pairs_passes_correct_builders(solution, capsys):
    assert check_nsp_pairs(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_nsp_pairs: all 5 cases passed"


@pytest.mark.parametrize(
    ("bug", "keyword"), NSP_PAIR_BUGS, ids=lambda b: getattr(b, "__name__", "")
)
def test_check_nsp_pairs_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_nsp_pairs, bug, keyword, capsys)


def test_check_nsp_pairs_gives_each_call_a_fresh_rng():
    calls = []

    def records_first_draw(documents, rng, max_tokens):
        calls.append(rng.random())
        return nsp_pairs(documents, rng, max_tokens)

    check_nsp_pairs(records_first_draw)
    assert len(calls) == 5 and len(set(calls)) == 5  # one seeded Random per case, not shared


def test_check_nsp_pairs_reports_stubs_and_odd_answers():
    def my_nsp_pairs(documents, rng, max_tokens):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_nsp_pairs with"):
        check_nsp_pairs(my_nsp_pairs)
    with pytest.raises(ExerciseFailed, match="list of \\(tokens_a, tokens_b, label\\) tuples"):
        check_nsp_pairs(lambda documents, rng, max_tokens: None)
    with pytest.raises(ExerciseFailed, match="labels are the ints 0 and 1"):
        check_nsp_pairs(
            lambda documents, rng, max_tokens: [
                (a, b, "IsNext") for a, b, _ in nsp_pairs(documents, rng, max_tokens)
            ]
        )
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_nsp_pairs(None)


# ----------------------------------------------------------------------------
# Chapter 11: word labels on sub-words, and the best answer span
# ----------------------------------------------------------------------------

from bertcourse.exercises import check_align_labels, check_best_span  # noqa: E402


def align_labels(word_ids, word_labels):
    """The chapter's solution: the word's label on its first sub-word, -100 elsewhere."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(-100)
        previous = word
    return labels


def align_every_subword(word_ids, word_labels):
    return [-100 if word is None else word_labels[word] for word in word_ids]


def align_last_subword(word_ids, word_labels):
    labels = []
    for position, word in enumerate(word_ids):
        following = word_ids[position + 1] if position + 1 < len(word_ids) else None
        labels.append(-100 if word is None or word == following else word_labels[word])
    return labels


def align_zero_is_special(word_ids, word_labels):
    labels, previous = [], None
    for word in word_ids:
        if not word:  # word 0 is falsy too
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(-100)
        previous = word
    return labels


def align_specials_zero(word_ids, word_labels):
    return [
        0 if label == -100 and word is None else label
        for word, label in zip(word_ids, align_labels(word_ids, word_labels), strict=True)
    ]


def align_unknown_to_zero(word_ids, word_labels):
    return align_labels(word_ids, [max(label, 0) for label in word_labels])


def align_drops_padding(word_ids, word_labels):
    while word_ids and word_ids[-1] is None:
        word_ids = word_ids[:-1]
    return align_labels(word_ids, word_labels) + [-100]


ALIGN_BUGS = [
    (align_every_subword, "only the first sub-word"),
    (align_last_subword, "*first* sub-word"),
    (align_zero_is_special, "word id 0"),
    (align_specials_zero, "special tokens and padding"),
    (align_unknown_to_zero, "passes through"),
    (align_drops_padding, "one label per entry of word_ids"),
]
PLANTED[check_align_labels] = (align_labels, ALIGN_BUGS)


def span_search(start_logits, end_logits, context_mask, max_answer_length=30, *, bug=None):
    """The chapter's solution (bug=None) and the planted bugs: scores of every valid pair."""
    low = torch.finfo(torch.float32).min
    over = torch.ones_like(context_mask) if bug in ("softmax_all", "question") else context_mask
    start_probs = start_logits.masked_fill(~over, low).softmax(-1)
    end_probs = end_logits.masked_fill(~over, low).softmax(-1)
    best = (0, 0, -1.0)
    for start in range(len(start_logits)):
        for end in range(len(end_logits)):
            if end < start and bug != "unordered":
                continue
            limit = {"no_limit": 10**9, "off_by_one": max_answer_length + 1}.get(
                bug, max_answer_length
            )
            if end - start + 1 > limit:
                continue
            if bug != "question" and not (context_mask[start] and context_mask[end]):
                continue
            if bug == "logit_sum":
                score = float(start_logits[start] + end_logits[end])
            else:
                score = float(start_probs[start] * end_probs[end])
            if score > best[2]:
                best = (start, end, score)
    return best


def span_bug(name, bug):
    def spans(start_logits, end_logits, context_mask, max_answer_length):
        return span_search(start_logits, end_logits, context_mask, max_answer_length, bug=bug)

    spans.__name__ = spans.__qualname__ = name
    return spans


def span_independent_argmax(start_logits, end_logits, context_mask, max_answer_length):
    low = torch.finfo(torch.float32).min
    start_probs = start_logits.masked_fill(~context_mask, low).softmax(-1)
    end_probs = end_logits.masked_fill(~context_mask, low).softmax(-1)
    start, end = int(start_probs.argmax()), int(end_probs.argmax())
    return start, end, float(start_probs[start] * end_probs[end])


SPAN_BUGS = [
    (span_independent_argmax, "taken separately"),
    (span_bug("end_before_start", "unordered"), "cannot end before it starts"),
    (span_bug("no_length_limit", "no_limit"), "longer than max_answer_length"),
    (span_bug("length_off_by_one", "off_by_one"), "end - start + 1"),
    (span_bug("spans_in_the_question", "question"), "context tokens"),
    (span_bug("softmax_over_the_window", "softmax_all"), "context tokens only"),
    (span_bug("score_is_logit_sum", "logit_sum"), "not the sum of the logits"),
]
PLANTED[check_best_span] = (span_search, SPAN_BUGS)


def test_chapter_11_reference_solutions_and_package_pass(capsys):
    from bertcourse.finetune import align_word_labels, best_span

    for checker, solution in [
        (check_align_labels, align_labels),
        (check_align_labels, align_word_labels),
        (check_best_span, span_search),
        (check_best_span, best_span),
    ]:
        assert checker(solution) is True
        assert capsys.readouterr().out.startswith(f"✓ {checker.__name__}: all ")


@pytest.mark.parametrize(
    ("checker", "bug", "keyword"),
    [(check_align_labels, *bug) for bug in ALIGN_BUGS]
    + [(check_best_span, *bug) for bug in SPAN_BUGS],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_chapter_11_planted_bug_is_rejected_with_its_hint(checker, bug, keyword, capsys):
    assert_rejects(checker, bug, keyword, capsys)


def test_chapter_11_checkers_report_stubs_and_odd_answers():
    def my_align(word_ids, word_labels):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_align with"):
        check_align_labels(my_align)
    with pytest.raises(ExerciseFailed, match="expected a list of ints"):
        check_align_labels(lambda word_ids, word_labels: None)
    with pytest.raises(ExerciseFailed, match="expected a tuple \\(start, end, score\\)"):
        check_best_span(lambda start_logits, end_logits, context_mask, max_answer_length: 3)


# ----------------------------------------------------------------------------
# Chapter 09/10: check_classification_head and check_macro_f1
# ----------------------------------------------------------------------------

from bertcourse.exercises import check_classification_head, check_macro_f1  # noqa: E402
from bertcourse.metrics import classification_report  # noqa: E402


def classification_head(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return logits, F.cross_entropy(logits, labels)


def classification_head_as_module(pooled_output, weight, bias, labels=None):
    """Another correct answer: an nn.Linear holding the weights, and the losses as modules."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    linear.weight.data, linear.bias.data = weight, bias
    logits = linear(pooled_output)
    if labels is None:
        return logits, None
    if weight.shape[0] == 1:
        return logits, torch.nn.MSELoss()(logits.view(-1), labels.view(-1).to(logits.dtype))
    return logits, torch.nn.CrossEntropyLoss()(logits, labels)


def head_without_bias(pooled_output, weight, bias, labels=None):
    return classification_head(pooled_output, weight, torch.zeros_like(bias), labels)


def head_softmax_then_cross_entropy(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels)
    return logits, F.cross_entropy(logits.softmax(-1), labels)


def head_summed_loss(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
    return logits, F.cross_entropy(logits, labels, reduction="sum")


def head_regression_broadcast(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, ((logits - labels) ** 2).mean()  # (B, 1) - (B,) -> (B, B)
    return logits, F.cross_entropy(logits, labels)


def head_loss_always(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        labels = logits.argmax(-1)
    return logits, F.cross_entropy(logits, labels)


def head_weight_not_transposed(pooled_output, weight, bias, labels=None):
    return classification_head(pooled_output, weight.reshape(weight.shape[1], -1).T, bias, labels)


HEAD_BUGS = [
    (head_without_bias, "bias is missing"),
    (head_softmax_then_cross_entropy, "raw logits"),
    (head_summed_loss, "mean"),
    (head_regression_broadcast, "broadcasts"),
    (head_loss_always, "must be None"),
    (head_weight_not_transposed, "logits differ"),
]
PLANTED[check_classification_head] = (classification_head, HEAD_BUGS)


def macro_f1(labels, predictions, num_labels):
    f1_scores = []
    for c in range(num_labels):
        true_positives = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        predicted = sum(p == c for p in predictions)
        actual = sum(y == c for y in labels)
        if actual == 0:
            continue
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / actual
        f1_scores.append(2 * precision * recall / (precision + recall) if true_positives else 0.0)
    return sum(f1_scores) / len(f1_scores)


def macro_f1_by_report(labels, predictions, num_labels):
    names = [str(i) for i in range(num_labels)]
    return classification_report(list(labels), list(predictions), names)["macro_f1"]


def macro_f1_is_accuracy(labels, predictions, num_labels):
    return sum(y == p for y, p in zip(labels, predictions, strict=True)) / len(labels)


def macro_f1_weighted(labels, predictions, num_labels):
    names = [str(i) for i in range(num_labels)]
    per_class = classification_report(list(labels), list(predictions), names)["per_class"]
    return sum(c["f1"] * c["support"] for c in per_class.values()) / len(labels)


def macro_f1_over_all_classes(labels, predictions, num_labels):
    present = len(set(labels))
    return macro_f1(labels, predictions, num_labels) * present / num_labels


def macro_f1_arithmetic_mean(labels, predictions, num_labels):
    scores = []
    for c in sorted(set(labels)):
        tp = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        predicted = sum(p == c for p in predictions)
        precision = tp / predicted if predicted else 0.0
        scores.append((precision + tp / sum(y == c for y in labels)) / 2)
    return sum(scores) / len(scores)


def macro_f1_divides_by_zero(labels, predictions, num_labels):
    scores = []
    for c in sorted(set(labels)):
        tp = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        precision = tp / sum(p == c for p in predictions)
        recall = tp / sum(y == c for y in labels)
        scores.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return sum(scores) / len(scores)


MACRO_F1_BUGS = [
    (macro_f1_is_accuracy, "accuracy"),
    (macro_f1_weighted, "support-weighted"),
    (macro_f1_over_all_classes, "classes that occur in labels"),
    (macro_f1_arithmetic_mean, "harmonic mean"),
    (macro_f1_divides_by_zero, "ZeroDivisionError"),
]
PLANTED[check_macro_f1] = (macro_f1, MACRO_F1_BUGS)


@pytest.mark.parametrize(
    ("checker", "solution"),
    [
        (check_classification_head, classification_head),
        (check_classification_head, classification_head_as_module),
        (check_macro_f1, macro_f1),
        (check_macro_f1, macro_f1_by_report),
    ],
    ids=lambda f: f.__name__,
)
def test_chapter_09_checkers_pass_correct_solutions(checker, solution, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all 5 cases passed"


@pytest.mark.parametrize(
    ("checker", "bug", "keyword"),
    [(check_classification_head, *bug) for bug in HEAD_BUGS]
    + [(check_macro_f1, *bug) for bug in MACRO_F1_BUGS],
    ids=lambda b: getattr(b, "__name__", ""),
)
def test_chapter_09_checkers_reject_planted_bugs(checker, bug, keyword, capsys):
    assert_rejects(checker, bug, keyword, capsys)


# check_pair_encoding (chapter: sentence pairs)

from bertcourse.exercises import check_pair_encoding  # noqa: E402


def pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id):
    a, b = list(ids_a), list(ids_b)
    room = max_length - 3
    if len(a) + len(b) > room:
        shorter = min(len(a), len(b))
        if shorter <= room // 2:
            keep = (shorter, room - shorter)
        else:
            keep = (room // 2, room - room // 2)
        n_a, n_b = keep if len(a) <= len(b) else keep[::-1]
        a, b = a[:n_a], b[:n_b]
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_encoding_by_the_tokenizer(ids_a, ids_b, max_length, cls_id, sep_id):
    """Another correct answer: the package tokenizer's own truncation rule."""
    from bertcourse.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained("minilm")
    a, b = tokenizer.truncate(list(ids_a), list(ids_b), max_length)
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_not_truncated(ids_a, ids_b, max_length, cls_id, sep_id):
    return pair_encoding(ids_a, ids_b, 10**6, cls_id, sep_id)


def pair_budget_without_specials(ids_a, ids_b, max_length, cls_id, sep_id):
    return pair_encoding(ids_a, ids_b, max_length + 3, cls_id, sep_id)


def pair_cut_from_the_start(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, segments = pair_encoding(ids_a[::-1], ids_b[::-1], max_length, cls_id, sep_id)
    n_a = segments.count(0) - 2
    a, b = ids[1 : 1 + n_a][::-1], ids[2 + n_a : -1][::-1]
    return [cls_id, *a, sep_id, *b, sep_id], segments


def pair_truncates_b_only(ids_a, ids_b, max_length, cls_id, sep_id):
    b = list(ids_b)[: max(0, max_length - 3 - len(ids_a))]
    return [cls_id, *ids_a, sep_id, *b, sep_id], [0] * (len(ids_a) + 2) + [1] * (len(b) + 1)


def pair_one_token_at_a_time(ids_a, ids_b, max_length, cls_id, sep_id):
    a, b = list(ids_a), list(ids_b)
    while len(a) + len(b) > max_length - 3:
        (a if len(a) > len(b) else b).pop()
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_middle_sep_in_segment_b(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, segments = pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id)
    first_sep = ids.index(sep_id)
    segments[first_sep] = 1
    return ids, segments


def pair_all_segment_zero(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, _ = pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id)
    return ids, [0] * len(ids)


PAIR_BUGS = [
    (pair_not_truncated, "not truncated"),
    (pair_budget_without_specials, "3 special tokens"),
    (pair_cut_from_the_start, "from the end"),
    (pair_truncates_b_only, "only B is truncated"),
    (pair_one_token_at_a_time, "one token at a time"),
    (pair_middle_sep_in_segment_b, "first [SEP] belongs to segment 0"),
    (pair_all_segment_zero, "segment 1 is B [SEP]"),
]
PLANTED[check_pair_encoding] = (pair_encoding, PAIR_BUGS)


@pytest.mark.parametrize(
    "solution", [pair_encoding, pair_encoding_by_the_tokenizer], ids=lambda f: f.__name__
)
def test_check_pair_encoding_passes_correct_encoders(solution, capsys):
    assert check_pair_encoding(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_pair_encoding: all 6 cases passed"


@pytest.mark.parametrize(("bug", "keyword"), PAIR_BUGS, ids=lambda b: getattr(b, "__name__", ""))
def test_check_pair_encoding_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_pair_encoding, bug, keyword, capsys)


# check_segment_ids (chapter: sentence pairs)

from bertcourse.exercises import check_segment_ids  # noqa: E402


def segment_ids(input_ids, sep_id, pad_id=0):
    segments = torch.zeros_like(input_ids)
    for row in range(input_ids.shape[0]):
        seps_seen = 0
        for position, token in enumerate(input_ids[row].tolist()):
            if token == pad_id:
                break
            segments[row, position] = 1 if seps_seen >= 1 else 0
            seps_seen += token == sep_id
    return segments


def segment_ids_by_cumsum(input_ids, sep_id, pad_id=0):
    is_sep = (input_ids == sep_id).long()
    return (((is_sep.cumsum(-1) - is_sep) >= 1) & (input_ids != pad_id)).long()


def segments_first_sep_in_b(input_ids, sep_id, pad_id=0):
    return (((input_ids == sep_id).cumsum(-1) >= 1) & (input_ids != pad_id)).long()


def segments_padding_in_b(input_ids, sep_id, pad_id=0):
    is_sep = (input_ids == sep_id).long()
    return ((is_sep.cumsum(-1) - is_sep) >= 1).long()


def segments_all_zero(input_ids, sep_id, pad_id=0):
    return torch.zeros_like(input_ids)


def segments_without_closing_sep(input_ids, sep_id, pad_id=0):
    return segment_ids_by_cumsum(input_ids, sep_id, pad_id) * (input_ids != sep_id).long()


def segments_as_list(input_ids, sep_id, pad_id=0):
    return segment_ids(input_ids, sep_id, pad_id).tolist()


SEGMENT_BUGS = [
    (segments_first_sep_in_b, "first [SEP] closes segment A"),
    (segments_padding_in_b, "padding gets segment 0"),
    (segments_all_zero, "B's tokens must be 1"),
    (segments_without_closing_sep, "closing [SEP] belongs to B"),
    (segments_as_list, "not a tensor"),
]
PLANTED[check_segment_ids] = (segment_ids, SEGMENT_BUGS)


@pytest.mark.parametrize("solution", [segment_ids, segment_ids_by_cumsum], ids=lambda f: f.__name__)
def test_check_segment_ids_passes_correct_solutions(solution, capsys):
    assert check_segment_ids(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_segment_ids: all 5 cases passed"


@pytest.mark.parametrize(("bug", "keyword"), SEGMENT_BUGS, ids=lambda b: getattr(b, "__name__", ""))
def test_check_segment_ids_rejects_planted_bug(bug, keyword, capsys):
    assert_rejects(check_segment_ids, bug, keyword, capsys)


def test_segment_ids_match_the_tokenizers():
    """The checker's reference equals the package tokenizer's segment ids on padded real pairs."""
    from bertcourse.exercises import _segment_ids
    from bertcourse.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained("minilm")
    encoded = tokenizer(
        ["A short one.", "Two sentences here"],
        ["And its pair, longer.", "B"],
        padding=True,
        return_tensors="pt",
    )
    torch.testing.assert_close(
        _segment_ids(encoded["input_ids"], tokenizer.sep_token_id, tokenizer.pad_token_id),
        encoded["token_type_ids"],
    )
