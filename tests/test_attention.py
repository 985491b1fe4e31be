import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bertcourse import BertConfig, MultiHeadSelfAttention, scaled_dot_product_attention
from bertcourse.attention import additive_mask
from bertcourse.model import BertModel


def padding_mask(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """(B, 1, 1, T) bool, True at real tokens; every row keeps at least one key."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    return (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :]


@pytest.mark.parametrize("shape", [(2, 3, 7, 16), (1, 1, 1, 8), (3, 4, 33, 5)])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_matches_torch_sdpa(shape, mask_kind):
    batch, heads, length, head_size = shape
    query, key, value = (torch.randn(shape) for _ in range(3))
    mask = None
    if mask_kind != "none":
        mask = padding_mask(batch, length)
        if mask_kind == "additive":
            mask = additive_mask(mask, query.dtype)
    ours, probs = scaled_dot_product_attention(query, key, value, mask)
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert probs.shape == (batch, heads, length, length)


def test_cross_attention_shapes_and_values():
    query = torch.randn(2, 5, 8)
    key, value = torch.randn(2, 9, 8), torch.randn(2, 9, 3)
    mask = torch.ones(2, 5, 9, dtype=torch.bool)
    mask[1, :, 6:] = False
    ours, probs = scaled_dot_product_attention(query, key, value, mask)
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert ours.shape == (2, 5, 3) and probs.shape == (2, 5, 9)


def test_probabilities_sum_to_one_and_ignore_padding():
    query, key, value = (torch.randn(3, 2, 10, 8) for _ in range(3))
    mask = padding_mask(3, 10, seed=1)
    _, probs = scaled_dot_product_attention(query, key, value, mask)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 10))
    blocked = (~mask).expand_as(probs)
    assert probs[blocked].abs().max() == 0


def test_padded_values_do_not_leak():
    query, key, value = (torch.randn(2, 2, 6, 4) for _ in range(3))
    mask = torch.tensor([True] * 4 + [False] * 2)[None, None, None, :]
    out, _ = scaled_dot_product_attention(query, key, value, mask)
    key2, value2 = key.clone(), value.clone()
    key2[..., 4:, :] = 100 * torch.randn_like(key2[..., 4:, :])
    value2[..., 4:, :] = 100 * torch.randn_like(value2[..., 4:, :])
    out2, _ = scaled_dot_product_attention(query, key2, value2, mask)
    torch.testing.assert_close(out, out2)


def test_fully_masked_row_stays_finite():
    query, key, value = (torch.randn(1, 1, 3, 4) for _ in range(3))
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    out, probs = scaled_dot_product_attention(query, key, value, mask)
    assert torch.isfinite(out).all() and torch.isfinite(probs).all()


def test_scaling_is_one_over_sqrt_dk():
    query, key = torch.randn(1, 4, 64), torch.randn(1, 6, 64)
    _, probs = scaled_dot_product_attention(query, key, torch.randn(1, 6, 2))
    expected = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(64), dim=-1)
    torch.testing.assert_close(probs, expected)


def test_dropout_zeroes_weights_and_keeps_expectation():
    query, key, value = (
        torch.zeros(1, 1, 200, 4),
        torch.zeros(1, 1, 200, 4),
        torch.ones(1, 1, 200, 1),
    )
    out, probs = scaled_dot_product_attention(query, key, value, dropout_p=0.5)
    zero_fraction = (probs == 0).float().mean().item()
    assert 0.45 < zero_fraction < 0.55
    assert abs(out.mean().item() - 1.0) < 0.05  # inverted dropout keeps the mean


def test_shape_errors():
    with pytest.raises(ValueError, match="same last dimension d_k"):
        scaled_dot_product_attention(
            torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(2, 3, 5)
        )
    with pytest.raises(ValueError, match="same length L_k"):
        scaled_dot_product_attention(
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 5, 4)
        )


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 4),
    length=st.integers(1, 20),
    head_size=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_fuzz_against_torch(batch, heads, length, head_size, seed):
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (
        torch.randn(batch, heads, length, head_size, generator=generator) for _ in range(3)
    )
    mask = padding_mask(batch, length, seed)
    ours, _ = scaled_dot_product_attention(query, key, value, mask)
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("heads,hidden", [(2, 32), (3, 96), (12, 48)])
def test_multi_head_eager_equals_sdpa(heads, hidden):
    config = BertConfig(
        hidden_size=hidden, num_attention_heads=heads, attention_probs_dropout_prob=0.0
    )
    attention = MultiHeadSelfAttention(config).eval()
    hidden_states = torch.randn(3, 9, hidden)
    keep = torch.ones(3, 9, dtype=torch.long)
    keep[1, 5:] = 0
    keep[2, 2:] = 0
    mask = BertModel.extended_attention_mask(keep, hidden_states.dtype)
    attention.attn_implementation = "sdpa"
    fused, none = attention(hidden_states, mask)
    attention.attn_implementation = "eager"
    eager, probs = attention(hidden_states, mask, output_attentions=True)
    assert none is None and probs.shape == (3, heads, 9, 9)
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


def test_multi_head_split_merge_inverse():
    attention = MultiHeadSelfAttention(BertConfig(hidden_size=48, num_attention_heads=4))
    x = torch.randn(2, 7, 48)
    split = attention.split_heads(x)
    assert split.shape == (2, 4, 7, 12)
    torch.testing.assert_close(attention.merge_heads(split), x)
    # head h holds the h-th slice of the hidden dimensions
    torch.testing.assert_close(split[:, 1], x[..., 12:24])


def test_sdpa_path_asked_for_probabilities_uses_eager():
    config = BertConfig(hidden_size=32, num_attention_heads=2, attn_implementation="sdpa")
    attention = MultiHeadSelfAttention(config).eval()
    _, probs = attention(torch.randn(1, 5, 32), output_attentions=True)
    assert probs is not None and probs.shape == (1, 2, 5, 5)


def test_eager_path_returns_probabilities_only_when_asked():
    config = BertConfig(hidden_size=32, num_attention_heads=2, attn_implementation="eager")
    attention = MultiHeadSelfAttention(config).eval()
    _, probs = attention(torch.randn(1, 5, 32))
    assert probs is None
