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


# ----------------------------------------------------------------------------
# The CPU training helpers: a faster dropout mask, and packing away padding
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_each_element_with_probability_one_minus_p(p):
    from bertcourse.attention import dropout

    n = 400_000
    out = dropout(torch.ones(n), p)
    kept = out != 0
    # Binomial(n, 1 - p): 5 standard deviations either side.
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    # no pattern between neighbours (the two halves of one 64-bit draw)
    pairs = kept.view(-1, 2).float()
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / (n / 2))


def test_dropout_is_seeded_differentiable_and_the_identity_in_eval():
    from bertcourse.attention import Dropout, dropout

    x = torch.randn(7, 33, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.3))  # torch's generator decides
    grad = torch.randn_like(first)
    first.backward(grad)
    mask = (first / x).detach()  # 0 or 1 / (1 - p)
    torch.testing.assert_close(x.grad, grad * mask)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.3).eval()
    assert module(x) is x and isinstance(module, torch.nn.Dropout)
    # odd sizes, other float types (half precision through torch's own kernel)
    assert dropout(torch.ones(5, 3, dtype=torch.float64), 0.5).dtype == torch.float64
    kept = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.1)
    assert kept.dtype == torch.bfloat16 and set(kept.unique().tolist()) <= {0.0, kept.max().item()}
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        dropout(x, 1.0)


def test_training_attention_on_cpu_uses_the_course_dropout():
    from bertcourse.attention import keep_mask

    config = BertConfig(
        hidden_size=24,
        num_attention_heads=3,
        attention_probs_dropout_prob=0.4,
        attn_implementation="sdpa",
    )
    attention = MultiHeadSelfAttention(config).train()
    hidden_states = torch.randn(2, 9, 24)
    mask = additive_mask(padding_mask(2, 9), torch.float32)  # (B, 1, 1, T)
    torch.manual_seed(5)
    got, _ = attention(hidden_states, mask)
    torch.manual_seed(5)
    q, k, v = (
        attention.split_heads(f(hidden_states))
        for f in (attention.query, attention.key, attention.value)
    )
    probs = (q @ k.transpose(-2, -1) / math.sqrt(8) + mask).softmax(-1)
    probs = probs * keep_mask(probs.shape, 0.4, probs.dtype)
    torch.testing.assert_close(got, attention.merge_heads(probs @ v))


def test_packing_round_trip():
    from bertcourse.attention import Packing

    attention_mask = padding_mask(4, 6, seed=2)[:, 0, 0, :].long()  # (B, T)
    packing = Packing(attention_mask)
    x = torch.randn(4, 6, 5)
    packed = packing.pack(x)
    assert packed.shape == (int(attention_mask.sum()), 5)
    assert torch.equal(packed, x[attention_mask.bool()])  # row by row, in order
    back = packing.unpack(packed)
    assert torch.equal(back, x * attention_mask[..., None])
