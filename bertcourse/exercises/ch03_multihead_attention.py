"""Chapter 3, multi-head attention: splitting and merging heads, a fused Q/K/V projection, the
whole layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..attention import MultiHeadSelfAttention, additive_mask
from ..config import BertConfig
from ._grading import (
    _MASK_IGNORED,
    _MINUS_INF,
    _WRONG_AXIS,
    Case,
    Mistake,
    Problem,
    _compare_output_and_probs,
    _compare_tensor,
    _fmt_shape,
    _random,
    _real_tokens,
    _run_cases,
    _tensor_comparison,
    _variant,
)

__all__ = [
    "check_split_heads",
    "check_merge_heads",
    "check_split_qkv",
    "check_multi_head_attention",
]


def _split(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_size)


def check_split_heads(fn: Callable) -> bool:
    """Grade `fn(x, num_heads)`: (B, T, H) -> (B, nh, T, hs), head i = hidden dims i*hs .. (i+1)*hs - 1."""
    g = torch.Generator().manual_seed(6)
    cases = []
    for description, shape, heads, dtype in [
        ("batch 3, length 5, hidden 12, 4 heads", (3, 5, 12), 4, torch.float32),
        ("batch 2, length 7, hidden 24, 6 heads", (2, 7, 24), 6, torch.float32),
        ("batch 1, length 4, hidden 15, 3 heads (an odd head count)", (1, 4, 15), 3, torch.float32),
        ("batch 2, length 3, hidden 8, 1 head", (2, 3, 8), 1, torch.float32),
        ("batch 2, length 1 (a single token), hidden 12, 3 heads", (2, 1, 12), 3, torch.float32),
        ("float64, batch 2, length 6, hidden 20, 5 heads", (2, 6, 20), 5, torch.float64),
    ]:
        x = _random(g, *shape, dtype=dtype)
        cases.append(Case(description, (x, heads), _split(x, heads)))

    def shape_hint(expected: torch.Size, got: torch.Size) -> str:
        batch, heads, length, head_size = expected
        if tuple(got) == (batch, length, heads, head_size):
            return (
                "the shape (B, T, nh, hs) still needs the head axis moved forward: transpose(1, 2)."
            )
        return f"the result must have shape (B, nh, T, hs) = {_fmt_shape(expected)}."

    def interleaved(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, length, hidden // heads, heads).permute(0, 3, 1, 2)

    def no_transpose(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, heads, length, hidden // heads)

    def wrong_permute(x, heads):
        batch, length, hidden = x.shape
        return x.reshape(batch, length, heads, hidden // heads).permute(0, 2, 3, 1).transpose(2, 3)

    mistakes = [
        Mistake(
            "reshaping straight to (B, nh, T, hs) mixes tokens and heads: reshape to "
            "(B, T, nh, hs) first, then move the head axis forward (transpose(1, 2)).",
            no_transpose,
        ),
        Mistake(
            "head i owns a contiguous chunk of hs hidden dimensions: reshape to "
            "(B, T, nh, hs), not (B, T, hs, nh).",
            interleaved,
        ),
        Mistake(
            "the heads are right but tokens and features are swapped inside each head: "
            "permute(0, 2, 1, 3).",
            wrong_permute,
        ),
    ]
    return _run_cases(
        "check_split_heads",
        fn,
        cases,
        _tensor_comparison("output", shape_hint),
        mistakes,
    )


def check_merge_heads(fn: Callable) -> bool:
    """Grade `fn(x)`: (B, nh, T, hs) -> (B, T, H), heads glued end to end (the inverse of split_heads).

    Most inputs are contiguous, like the context `probs @ value` that an
    attention layer merges; after the transpose they are not, so `view`
    fails there and `reshape` is needed. One input comes straight from a
    split.
    """
    g = torch.Generator().manual_seed(7)
    cases = []
    for description, shape, dtype in [
        ("batch 3, 4 heads, length 5, head size 3", (3, 4, 5, 3), torch.float32),
        ("batch 2, 6 heads, length 7, head size 4", (2, 6, 7, 4), torch.float32),
        (
            "batch 1, 3 heads, length 4, head size 5 (an odd head count)",
            (1, 3, 4, 5),
            torch.float32,
        ),
        ("batch 2, 1 head, length 3, head size 8", (2, 1, 3, 8), torch.float32),
        ("batch 2, 3 heads, length 1 (a single token), head size 4", (2, 3, 1, 4), torch.float32),
        ("float64, batch 2, 5 heads, length 6, head size 4", (2, 5, 6, 4), torch.float64),
    ]:
        x = _random(g, *shape, dtype=dtype)
        cases.append(Case(description, (x,), _merge(x)))
    split = _split(_random(g, 2, 4, 12), 3)
    cases.append(
        Case(
            "the output of split_heads: batch 2, 3 heads, length 4, head size 4",
            (split,),
            _merge(split),
        )
    )

    def shape_hint(expected: torch.Size, got: torch.Size) -> str:
        if len(got) == 4:
            return "glue the heads back together: reshape (B, T, nh, hs) to (B, T, nh * hs)."
        return f"the result must have shape (B, T, H) = {_fmt_shape(expected)}."

    def no_transpose(x):
        batch, heads, length, head_size = x.shape
        return x.reshape(batch, length, heads * head_size)

    def interleaved(x):
        batch, heads, length, head_size = x.shape
        return x.permute(0, 2, 3, 1).reshape(batch, length, heads * head_size)

    mistakes = [
        Mistake(
            "move the head axis back next to the head size before merging: "
            "transpose(1, 2) to (B, T, nh, hs), then reshape.",
            no_transpose,
        ),
        Mistake(
            "glue whole heads end to end: (B, T, nh, hs), i.e. permute(0, 2, 1, 3), "
            "not (B, T, hs, nh).",
            interleaved,
        ),
    ]
    return _run_cases(
        "check_merge_heads",
        fn,
        cases,
        _tensor_comparison("output", shape_hint),
        mistakes,
    )


def _split_qkv(
    qkv: torch.Tensor,
    num_heads: int,
    *,
    layout: str = "projection_first",
    order: tuple[int, int, int] = (0, 1, 2),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused (B, T, 3H) projection split into query, key, value, or a classic mistake."""
    batch, length, width = qkv.shape
    head_size = width // (3 * num_heads)
    if layout == "projection_first":  # columns: [q head 0 .. q head nh-1 | k ... | v ...]
        parts = qkv.reshape(batch, length, 3, num_heads, head_size).permute(2, 0, 3, 1, 4)
    elif layout == "head_first":  # [head 0: q k v | head 1: q k v | ...]
        parts = qkv.reshape(batch, length, num_heads, 3, head_size).permute(3, 0, 2, 1, 4)
    elif layout == "interleaved":  # heads interleaved inside each projection
        parts = qkv.reshape(batch, length, 3, head_size, num_heads).permute(2, 0, 4, 1, 3)
    else:  # "straight": reshaped to the target shape without moving any axis
        parts = qkv.reshape(3, batch, num_heads, length, head_size)
    query, key, value = parts.unbind(0)
    split = (query, key, value)
    return split[order[0]], split[order[1]], split[order[2]]


def _qkv_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    batch, heads, length, head_size = expected
    if tuple(got) == (batch, length, heads, head_size):
        return "(B, T, nh, hs) still needs the head axis moved before the tokens: (B, nh, T, hs)."
    return f"each of query, key and value has shape (B, nh, T, hs) = {_fmt_shape(expected)}."


def _compare_qkv(expected: tuple, got: Any) -> Problem | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        what = f"{len(got)} values" if isinstance(got, (tuple, list)) else type(got).__name__
        return Problem(
            [f"expected three tensors (query, key, value), got {what}"],
            "return the three tensors, e.g. as a tuple: return query, key, value.",
        )
    for name, wanted, answer in zip(("query", "key", "value"), expected, got, strict=True):
        problem = _compare_tensor(wanted, answer, name, _qkv_shape_hint)
        if problem is not None:
            return problem
    return None


def check_split_qkv(fn: Callable) -> bool:
    """Grade `fn(qkv, num_heads)`: (B, T, 3H) -> (query, key, value), each (B, nh, T, hs).

    `qkv` is the output of one Linear(H, 3H) whose weight stacks the query,
    key and value weights, as torch's `in_proj_weight`: columns [0, H) are
    the queries, [H, 2H) the keys, [2H, 3H) the values; inside each, head i
    owns columns i*hs .. (i+1)*hs - 1.
    """
    g = torch.Generator().manual_seed(9)
    cases = []
    for description, (batch, length, hidden, heads), dtype in [
        ("batch 3, length 5, hidden 12, 4 heads", (3, 5, 12, 4), torch.float32),
        ("batch 2, length 7, hidden 24, 6 heads", (2, 7, 24, 6), torch.float32),
        ("batch 1, length 4, hidden 15, 3 heads (an odd head count)", (1, 4, 15, 3), torch.float32),
        ("batch 2, length 3, hidden 8, 1 head", (2, 3, 8, 1), torch.float32),
        ("batch 2, length 1 (a single token), hidden 12, 3 heads", (2, 1, 12, 3), torch.float32),
        ("float64, batch 2, length 6, hidden 20, 5 heads", (2, 6, 20, 5), torch.float64),
    ]:
        qkv = _random(g, batch, length, 3 * hidden, dtype=dtype)
        cases.append(
            Case(
                f"{description}, qkv {(batch, length, 3 * hidden)}",
                (qkv, heads),
                _split_qkv(qkv, heads),
            )
        )
    mistakes = [
        _variant(
            "the fused output holds all the queries, then all the keys, then all the values: "
            "reshape to (B, T, 3, nh, hs), not (B, T, nh, 3, hs).",
            _split_qkv,
            layout="head_first",
        ),
        _variant(
            "head i owns a contiguous chunk of hs columns inside each projection: "
            "(B, T, 3, nh, hs), not (B, T, 3, hs, nh).",
            _split_qkv,
            layout="interleaved",
        ),
        _variant(
            "reshaping straight to (3, B, nh, T, hs) mixes tokens, heads and projections: "
            "reshape the last axis to (3, nh, hs) first, then permute.",
            _split_qkv,
            layout="straight",
        ),
        _variant(
            "return (query, key, value) in that order: the first H columns are the queries.",
            _split_qkv,
            order=(1, 0, 2),
        ),
        _variant(
            "return (query, key, value) in that order: the last H columns are the values.",
            _split_qkv,
            order=(2, 1, 0),
        ),
    ]
    return _run_cases(
        "check_split_qkv",
        fn,
        cases,
        _compare_qkv,
        mistakes,
        "print the shapes of your three tensors, and check which columns of qkv land in head 0 "
        "of the query.",
    )


def _multi_head_attention(
    hidden_states: torch.Tensor,
    attention: MultiHeadSelfAttention,
    token_mask: torch.Tensor,
    *,
    scale: str = "head_size",
    use_mask: bool = True,
    use_bias: bool = True,
    interleaved_heads: bool = False,
    merge: str = "heads_first",
    softmax_dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference multi-head self-attention, or one of its classic mistakes."""
    batch, length, hidden = hidden_states.shape
    heads = attention.num_attention_heads
    head_size = hidden // heads

    def project(linear: torch.nn.Linear) -> torch.Tensor:
        projected = F.linear(hidden_states, linear.weight, linear.bias if use_bias else None)
        if interleaved_heads:
            return projected.reshape(batch, length, head_size, heads).permute(0, 3, 1, 2)
        return _split(projected, heads)  # (B, nh, T, hs)

    query, key, value = project(attention.query), project(attention.key), project(attention.value)
    scores = query @ key.transpose(-2, -1)  # (B, nh, T, T)
    scores = scores / math.sqrt({"head_size": head_size, "hidden": hidden, "none": 1}[scale])
    if use_mask:
        scores = scores + additive_mask(token_mask[:, None, None, :], scores.dtype)
    probs = scores.softmax(dim=softmax_dim)
    context = probs @ value  # (B, nh, T, hs)
    if merge == "features_first":
        merged = context.permute(0, 2, 3, 1).reshape(batch, length, hidden)
    else:
        merged = _merge(context)
    return merged, probs


def _mha_case(
    g: torch.Generator,
    seed: int,
    description: str,
    batch: int,
    length: int,
    hidden: int,
    heads: int,
    lengths: list[int],
    dtype: torch.dtype = torch.float32,
) -> Case:
    """A layer with non-zero biases, padded inputs, and the layer's own answer (eager attention)."""
    config = BertConfig(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):  # leave the learner's random state alone
        torch.manual_seed(seed)
        module = MultiHeadSelfAttention(config).to(dtype).eval()
    with torch.no_grad():  # non-zero biases, so that forgetting them shows
        for linear in (module.query, module.key, module.value):
            linear.bias.normal_(0.0, 0.5, generator=g)
    hidden_states = _random(g, batch, length, hidden, dtype=dtype)
    token_mask = _real_tokens(lengths, length)  # (B, T)
    additive = additive_mask(token_mask[:, None, None, :], dtype)
    with torch.no_grad():
        expected = module(hidden_states, additive, output_attentions=True)
    return Case(description, (hidden_states, module, token_mask), expected)


def _mha_cases() -> list[Case]:
    """Padding or not, odd sizes, one head, one token, a fully padded row, float64."""
    g = torch.Generator().manual_seed(8)
    layouts = [  # description, (batch, length, hidden, heads, lengths[, dtype])
        ("batch 2, length 6, hidden 12, 3 heads, with padding", (2, 6, 12, 3, [6, 4])),
        ("batch 3, length 5, hidden 16, 4 heads, no padding", (3, 5, 16, 4, [5, 5, 5])),
        (
            "batch 2, length 4, hidden 15, 3 heads of 5 (odd sizes), with padding",
            (2, 4, 15, 3, [2, 4]),
        ),
        ("batch 2, length 5, hidden 8, 1 head, with padding", (2, 5, 8, 1, [5, 3])),
        ("batch 1, length 1 (a single token), hidden 12, 2 heads", (1, 1, 12, 2, [1])),
        (
            "batch 2, length 4, hidden 8, 2 heads, the second sequence fully padded",
            (2, 4, 8, 2, [4, 0]),
        ),
        (
            "float64, batch 2, length 7, hidden 24, 6 heads, with padding",
            (2, 7, 24, 6, [7, 3], torch.float64),
        ),
    ]
    return [
        _mha_case(g, seed, description, *layout)
        for seed, (description, layout) in enumerate(layouts)
    ]


_MHA_MISTAKES = [
    _variant(
        "the scores look unscaled: divide by sqrt(d_k), the head size H / nh.",
        _multi_head_attention,
        scale="none",
    ),
    _variant(
        "the scores are divided by sqrt(H): scale by sqrt(d_k) of one head, d_k = H / nh.",
        _multi_head_attention,
        scale="hidden",
    ),
    _variant(_MASK_IGNORED, _multi_head_attention, use_mask=False),
    _variant(
        "the projections' biases are missing: each of query, key, value is a "
        "Linear layer, x Wᵀ + b.",
        _multi_head_attention,
        use_bias=False,
    ),
    _variant(
        "head i owns rows i·d_k .. (i+1)·d_k - 1 of each weight: reshape them to "
        "(nh, d_k, H), not (d_k, nh, H).",
        _multi_head_attention,
        interleaved_heads=True,
    ),
    _variant(
        "glue the heads end to end: the context must be (B, T, nh, d_k) before it is "
        "flattened to (B, T, H).",
        _multi_head_attention,
        merge="features_first",
    ),
    _variant(_WRONG_AXIS, _multi_head_attention, softmax_dim=-2),
]


def check_multi_head_attention(fn: Callable) -> bool:
    """Grade `fn(hidden_states, attention, token_mask)` -> context (B, T, H), or (context, probs).

    `attention` is a `bertcourse.attention.MultiHeadSelfAttention` whose
    `query`, `key`, `value` layers hold the weights; `token_mask` is (B, T)
    bool, True at real tokens. The reference is the module itself (eager
    path, so it can return the probabilities (B, nh, T, T)).
    """
    return _run_cases(
        "check_multi_head_attention",
        fn,
        _mha_cases(),
        _compare_output_and_probs(_MINUS_INF),
        _MHA_MISTAKES,
    )
