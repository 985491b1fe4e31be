"""Scaled dot-product attention and BERT's multi-head self-attention.

Two paths compute the same thing:

* `eager`: the course's own `scaled_dot_product_attention`, a few lines of
  matrix algebra that can hand back the attention probabilities;
* `sdpa`: `torch.nn.functional.scaled_dot_product_attention`, torch's fused
  kernel (faster, less memory, no probabilities).

Tests prove the two agree with each other and with `transformers`.

Training on a CPU borrows two tools from `bertcourse.speedups`, which change
how fast it runs, not what it computes: `dropout`, a cheaper way to draw
dropout's random mask, and `Packing`, which lets the dense layers skip the
padding tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .speedups import Packing, dropout

__all__ = [
    "additive_mask",
    "scaled_dot_product_attention",
    "MultiHeadSelfAttention",
]


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean "may attend" mask into one that is added to the scores.

    Allowed positions get 0 and blocked positions the most negative finite
    number of `dtype`, so softmax gives them (numerically) zero weight. A
    finite number rather than -inf keeps a row whose keys are all blocked
    from turning into NaN.
    """
    zeros = torch.zeros_like(attention_mask, dtype=dtype)
    return zeros.masked_fill(~attention_mask, torch.finfo(dtype).min)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    probs_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k) + mask) V, written out.

    query: (..., L_q, d_k), key: (..., L_k, d_k), value: (..., L_k, d_v).
    attention_mask, broadcastable to (..., L_q, L_k), as in
    `torch.nn.functional.scaled_dot_product_attention`: a bool mask is True
    where a query may attend to a key; a float mask is added to the scores.
    dropout_p: probability of zeroing an attention weight (pass 0 in eval).
    probs_transform: applied to the probabilities after the softmax, before dropout (an
    intervention such as `bertcourse.interpret.permuted_attention`; None: none).

    Returns (output (..., L_q, d_v), attention_probs (..., L_q, L_k)); the
    probabilities are the ones that multiplied V, i.e. after dropout.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must have the same last dimension d_k, got {query.shape[-1]} "
            f"and {key.shape[-1]}."
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key and value must have the same length L_k, got {key.shape[-2]} and {value.shape[-2]}."
        )
    scores = query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5  # (..., L_q, L_k)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = additive_mask(attention_mask, scores.dtype)
        scores = scores + attention_mask
    attention_probs = scores.softmax(dim=-1)
    if probs_transform is not None:
        attention_probs = probs_transform(attention_probs)
    if dropout_p > 0.0:
        attention_probs = dropout(attention_probs, dropout_p)  # F.dropout, cheaper on a CPU
    return attention_probs @ value, attention_probs


class MultiHeadSelfAttention(nn.Module):
    """The `attention.self` block of a BERT layer: project, split heads, attend, merge.

    Parameter names (`query`, `key`, `value`) are those of `transformers`,
    so the weights of a pretrained BERT load into it unchanged.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.all_head_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.attn_implementation = config.attn_implementation
        # (probs, attention_mask) -> probs, between the softmax and the values; set by
        # interventions (`interpret.permuted_attention`), which need the eager path.
        self.probs_transform: Callable[..., torch.Tensor] | None = None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        x = x.view(batch, length, self.num_attention_heads, self.attention_head_size)
        return x.transpose(1, 2)  # (B, nh, T, hs)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.all_head_size)  # (B, T, H)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
        packing: Packing | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, H), or (N, H) real tokens with `packing` (see
        `bertcourse.speedups`); attention_mask additive or bool, broadcastable to
        (B, nh, T, T).

        Returns the merged context, shaped like hidden_states, and, if asked
        for, the attention probabilities (B, nh, T, T). Asking for them runs
        the eager path even when the config says `sdpa`, since the fused kernel
        never materialises them. So does training on a CPU: there torch's
        kernel falls back to plain matrix products with its slow dropout, and
        the eager path with `speedups.dropout` is the faster of the two.
        """
        query, key, value = (
            self.query(hidden_states),
            self.key(hidden_states),
            self.value(hidden_states),
        )
        if packing is not None:  # the N real tokens back into their sentences
            query, key, value = packing.unpack(query), packing.unpack(key), packing.unpack(value)
        query = self.split_heads(query)  # (B, nh, T, hs)
        key = self.split_heads(key)  # (B, nh, T, hs)
        value = self.split_heads(value)  # (B, nh, T, hs)
        dropout_p = self.dropout_prob if self.training else 0.0
        fused = (
            self.attn_implementation == "sdpa"
            and not output_attentions
            and self.probs_transform is None
        )
        if dropout_p > 0.0 and query.device.type == "cpu":  # eager: cheaper dropout on a CPU
            fused = False

        if fused:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout_p
            )
            attention_probs = None
        else:
            transform = None
            if self.probs_transform is not None:
                transform = functools.partial(self.probs_transform, attention_mask=attention_mask)
            context, attention_probs = scaled_dot_product_attention(
                query, key, value, attention_mask, dropout_p, transform
            )
            if not output_attentions:
                attention_probs = None
        context = self.merge_heads(context)  # (B, T, H)
        return (packing.pack(context) if packing is not None else context), attention_probs
