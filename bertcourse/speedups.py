"""Speed-ups for a training step on a CPU, kept apart from the model they speed up.

The chapters teach BERT from `attention.py` and `model.py`; this module holds
the tools those files borrow to train faster without computing anything
else. Each changes how a result is computed, never which result:

Dropout with a cheaper random mask (`keep_mask`, `dropout`, `Dropout`).
    torch's CPU dropout draws one random float per element through its
    Bernoulli sampler, which costs more than the layer it regularises.
    `keep_mask` splits each 64-bit draw of torch's generator into two 32-bit
    integers and keeps an element when its integer falls below
    (1 - p) * 2**32. Same numbers: each element is kept with probability
    1 - p (to 2**-32) and scaled by 1 / (1 - p), as `F.dropout` does; the
    random stream differs from torch's, so a seed reproduces our run, not
    torch's mask. Used in training on a CPU, for float32 and float64;
    refused (torch's kernel runs) on other devices, where torch's fused
    kernel is already fast, and for half-precision tensors, where the scale
    1 / (1 - p) would be rounded. With p = 0 or in evaluation it is the
    identity. `Dropout` is `nn.Dropout` computed this way; the model uses it
    for every dropout layer, and `attention.scaled_dot_product_attention`
    uses `dropout` on the attention probabilities (which is also why the
    attention module takes the eager path when it trains on a CPU: torch's
    fused kernel would fall back to its slow dropout there).

Skipping padding in the dense layers (`Packing`).
    In a padded batch every layer but attention treats each token on its
    own: the Q/K/V and output projections, the feed-forward block, LayerNorm
    and dropout cost as much at a padding position as at a real token, and
    their result there is thrown away. A `Packing` gathers the N real tokens
    of a (B, T) batch into one (N, ...) tensor and puts them back; the
    encoder runs its dense layers on the N tokens and lays them out as
    (B, T) only around attention, which needs the sentences apart. Same
    numbers: a real token's vector depends on padding only through
    attention, where padding keys are masked, so real tokens get the same
    values up to float rounding (the tests check 1e-5); padding positions
    come out as 0 instead of values no one reads. Used by
    `BertModel(..., skip_padding=True)` when the batch has padding.

When a head may skip padding (`padding_is_ignored`).
    Zeros at padding are harmless only if nothing reads the padding
    positions. The heads ask `padding_is_ignored`: it refuses when attention
    maps are asked for (they would show the skipped rows), when a label sits
    on a padding position (the loss would read it), and, for a head that
    reads [CLS] at position 0, when that position is padding in some row
    (left padding). The sequence classifier skips whenever this allows, the
    token classifier in training, the pretraining and masked-LM heads with
    `masked_only`; question answering never does, since its softmax over
    start and end positions runs over padding too, in `transformers` and
    here.

Imports point down: this module needs only torch, and `attention.py` and
`model.py` import from it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "keep_mask",
    "dropout",
    "Dropout",
    "Packing",
    "padding_is_ignored",
]


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """Dropout's random mask: 1 / (1 - p) with probability 1 - p, else 0.

    Each 64-bit draw of the generator is split into two 32-bit integers, and
    an element is kept when its integer falls below (1 - p) * 2**32 (shifted
    to the signed range): the distribution of a Bernoulli draw, to 2**-32, at
    a third of the cost of torch's CPU sampler. Seeded by torch's default
    generator like every other random op.
    """
    numel = math.prod(shape)
    draws = torch.empty((numel + 1) // 2, dtype=torch.int64).random_(-(2**63), None)
    bits = draws.view(torch.int32)[:numel].view(shape)
    threshold = round((1.0 - p) * 2**32) - 2**31
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    return torch.where(bits < threshold, scale, torch.zeros((), dtype=dtype))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout`, with the faster mask of `keep_mask` on a CPU.

    Zeroes each element with probability p and scales the rest by 1 / (1 - p),
    so the expected value is unchanged; the identity when not training. On
    other devices torch's fused kernel is already fast and is used as is, and
    so it is for half-precision tensors.
    """
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}.")
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        # 1 / (1 - p) in bfloat16 or float16 would be off by up to 0.2%: torch scales in float32
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same name, no parameters) computed with `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Packing:
    """The real tokens of a padded batch, gathered into one (N, ...) tensor and back.

    Built from the (B, T) attention mask (1 at real tokens). The encoder packs
    the embeddings once, runs its dense layers on the N real tokens, and
    unpacks just around attention; see the module docstring for why the real
    tokens get the same values.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,) in the flat batch

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the real tokens, sentence after sentence."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at padding."""
        full = x.new_zeros(self.batch * self.length, *x.shape[1:])
        return full.index_copy(0, self.index, x).view(self.batch, self.length, *x.shape[1:])


def padding_is_ignored(
    attention_mask: torch.Tensor | None,
    output_attentions: bool,
    labels: torch.Tensor | None = None,
    reads_cls: bool = False,
) -> bool:
    """Whether a head's loss and outputs ignore padding, so the encoder may skip it.

    True when there is a mask, no attention maps are asked for (they would
    show the skipped rows), every padding position's label is -100, and, for
    a head that reads [CLS] at position 0, that position is a real token in
    every row.
    """
    if attention_mask is None or output_attentions:
        return False
    padding = attention_mask == 0  # (B, T)
    if reads_cls and bool(padding[:, 0].any()):
        return False
    return labels is None or not bool((labels[padding] != -100).any())
