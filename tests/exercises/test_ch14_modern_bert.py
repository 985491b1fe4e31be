"""Chapter 14: the rotary, GeGLU and sliding-window checkers, their solutions and planted bugs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from planted import PlantedBugs
from transformers import ModernBertConfig
from transformers.models.modernbert import modeling_modernbert as hf_modernbert

from bertcourse.exercises import (
    ExerciseFailed,
    check_geglu,
    check_rotary,
    check_sliding_window_mask,
)
from bertcourse.exercises.ch14_modern_bert import (
    GLOBAL_BASE,
    _geglu,
    _geglu_cases,
    _rotary,
    _rotary_cases,
    _window_cases,
    _window_mask,
)

# ----------------------------------------------------------------------------
# Rotary positions
# ----------------------------------------------------------------------------


def apply_rotary(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angles = positions[:, None].float() * inv_freq  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d): pair i at i and i + d/2
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = x.float() * angles.cos() + torch.cat((-x2, x1), dim=-1) * angles.sin()
    return rotated.to(x.dtype)


def apply_rotary_complex(x, positions, base=10000.0):
    """Another correct answer: each pair (x1[i], x2[i]) as the complex number x1 + i x2, times
    e^(i angle), in float64; and in x's own dtype, without going through float32."""
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[:, None].double() * inv_freq
    x1, x2 = x.double().chunk(2, dim=-1)
    turned = torch.complex(x1, x2) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((turned.real, turned.imag), dim=-1).to(x.dtype)


def apply_rotary_native_dtype(x, positions, base=10000.0):
    """Another correct answer: cos and sin cast to x's dtype, the products in that dtype."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def rotary_interleaved(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq  # (T, d/2)
    even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
    rotated = torch.stack(
        (even * angles.cos() - odd * angles.sin(), even * angles.sin() + odd * angles.cos()),
        dim=-1,
    )
    return rotated.flatten(-2).to(x.dtype)


def rotary_sign_error(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = x.float() * angles.cos() + torch.cat((x2, -x1), dim=-1) * angles.sin()
    return rotated.to(x.dtype)


def rotary_exponent_i_over_d(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(d // 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = x.float() * angles.cos() + torch.cat((-x2, x1), dim=-1) * angles.sin()
    return rotated.to(x.dtype)


def rotary_positions_from_one(x, positions, base=10000.0):
    return apply_rotary(x, positions + 1, base)


def rotary_base_ignored(x, positions, base=10000.0):
    return apply_rotary(x, positions, 10000.0)


def rotary_cos_sin_swapped(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = x.float() * angles.sin() + torch.cat((-x2, x1), dim=-1) * angles.cos()
    return rotated.to(x.dtype)


def rotary_float32_result(x, positions, base=10000.0):
    return apply_rotary(x, positions, base).float()


def rotary_arange_positions(x, positions, base=10000.0):
    return apply_rotary(x, torch.arange(x.shape[-2]), base)


def rotary_repeat_interleaved_angles(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = (positions[:, None].float() * inv_freq).repeat_interleave(2, dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = x.float() * angles.cos() + torch.cat((-x2, x1), dim=-1) * angles.sin()
    return rotated.to(x.dtype)


def rotary_halves_not_joined(x, positions, base=10000.0):
    rotated = apply_rotary(x, positions, base)
    return torch.stack(rotated.chunk(2, dim=-1))


ROTARY_BUGS = [
    (rotary_interleaved, "(2i, 2i + 1)"),
    (rotary_sign_error, "cat(-x2, x1)"),
    (rotary_exponent_i_over_d, "base^(-2i/d)"),
    (rotary_positions_from_one, "do not add 1"),
    (rotary_base_ignored, "160,000"),
    (rotary_cos_sin_swapped, "cos and sin are swapped"),
    (rotary_float32_result, ".to(x.dtype)"),
    (rotary_arange_positions, "not torch.arange(T)"),
    (rotary_repeat_interleaved_angles, "repeat_interleave"),
    (rotary_halves_not_joined, "torch.cat"),
]


# ----------------------------------------------------------------------------
# GeGLU
# ----------------------------------------------------------------------------


def geglu(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)  # (..., I) each
    return (F.gelu(value) * gate) @ Wo.T


def geglu_with_linear(x, Wi, Wo):
    """Another correct answer: the weights split first, F.linear, GELU written with erf."""
    value_weight, gate_weight = Wi.chunk(2, dim=0)
    value, gate = F.linear(x, value_weight), F.linear(x, gate_weight)
    gelu = value * 0.5 * (1.0 + torch.erf(value / 2**0.5))
    return F.linear(gelu * gate, Wo)


def geglu_halves_swapped(x, Wi, Wo):
    gate, value = (x @ Wi.T).chunk(2, dim=-1)
    return (F.gelu(value) * gate) @ Wo.T


def geglu_gelu_on_gate(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (value * F.gelu(gate)) @ Wo.T


def geglu_tanh(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (F.gelu(value, approximate="tanh") * gate) @ Wo.T


def geglu_sum(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (F.gelu(value) + gate) @ Wo.T


def geglu_silu(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (F.silu(value) * gate) @ Wo.T


def geglu_every_other_feature(x, Wi, Wo):
    projected = x @ Wi.T
    value, gate = projected[..., 0::2], projected[..., 1::2]
    return (F.gelu(value) * gate) @ Wo.T


def geglu_chunk_without_dim(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2)  # dim=0 by default: the batch is split
    return (F.gelu(value) * gate) @ Wo.T


def geglu_gelu_of_product(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return F.gelu(value * gate) @ Wo.T


def geglu_no_activation(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (value * gate) @ Wo.T


def geglu_wo_not_transposed(x, Wi, Wo):
    value, gate = (x @ Wi.T).chunk(2, dim=-1)
    return (F.gelu(value) * gate) @ Wo.T.T


GEGLU_BUGS = [
    (geglu_halves_swapped, "the first half of x @ Wi.T is the value"),
    (geglu_gelu_on_gate, "the first half of x @ Wi.T is the value"),
    (geglu_tanh, "approximate='tanh'"),
    (geglu_sum, "not added"),
    (geglu_silu, "SwiGLU"),
    (geglu_every_other_feature, "chunk(2, dim=-1)"),
    (geglu_chunk_without_dim, "shapes do not fit"),
    (geglu_gelu_of_product, "not gelu(value * gate)"),
    (geglu_no_activation, "goes through GELU"),
    (geglu_wo_not_transposed, "shapes do not fit"),
]


# ----------------------------------------------------------------------------
# The sliding-window mask
# ----------------------------------------------------------------------------


def sliding_window_mask(attention_mask, window, *, near=None, keys=True, queries=False):
    length = attention_mask.shape[-1]
    positions = torch.arange(length)
    offset = positions[:, None] - positions[None, :]  # (T, T): query i minus key j
    band = offset.abs() <= window // 2 if near is None else near(offset, window)
    real = attention_mask.bool()
    mask = band.expand(len(real), 1, length, length)
    if keys:
        mask = mask & real[:, None, None, :]
    if queries:
        mask = mask & real[:, None, :, None]
    return mask


def window_strict(attention_mask, window):
    return sliding_window_mask(attention_mask, window, near=lambda d, w: d.abs() < w // 2)


def window_whole_span_each_side(attention_mask, window):
    return sliding_window_mask(attention_mask, window, near=lambda d, w: d.abs() <= w)


def window_rounded_up(attention_mask, window):
    return sliding_window_mask(attention_mask, window, near=lambda d, w: d.abs() <= (w + 1) // 2)


def window_ignores_padding(attention_mask, window):
    return sliding_window_mask(attention_mask, window, keys=False)


def window_masks_queries(attention_mask, window):
    return sliding_window_mask(attention_mask, window, keys=False, queries=True)


def window_causal(attention_mask, window):
    return sliding_window_mask(attention_mask, window, near=lambda d, w: (d >= 0) & (d <= w // 2))


def window_masks_queries_and_keys(attention_mask, window):
    return sliding_window_mask(attention_mask, window, queries=True)


def window_inverted(attention_mask, window):
    return ~sliding_window_mask(attention_mask, window)


def window_without_head_axis(attention_mask, window):
    return sliding_window_mask(attention_mask, window)[:, 0]


def window_float(attention_mask, window):
    return sliding_window_mask(attention_mask, window).float()


def window_assumes_right_padding(attention_mask, window):
    lengths = attention_mask.long().sum(-1)
    length = attention_mask.shape[-1]
    return sliding_window_mask(torch.arange(length)[None, :] < lengths[:, None], window)


WINDOW_BUGS = [
    (window_strict, "not <"),
    (window_whole_span_each_side, "both sides together"),
    (window_rounded_up, "rounded down"),
    (window_ignores_padding, "padded keys receive attention"),
    (window_masks_queries, "the last axis"),
    (window_causal, "looks both ways"),
    (window_masks_queries_and_keys, "block padded keys only"),
    (window_inverted, "inverted"),
    (window_without_head_axis, "head axis"),
    (window_float, "bool"),
    (window_assumes_right_padding, "padding may sit on the left"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_rotary: (apply_rotary, ROTARY_BUGS),
    check_geglu: (geglu, GEGLU_BUGS),
    check_sliding_window_mask: (sliding_window_mask, WINDOW_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_rotary, apply_rotary_complex, 10),
        (check_rotary, apply_rotary_native_dtype, 10),
        (check_geglu, geglu_with_linear, 6),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_14_checkers_pass_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"


def test_a_planted_bug_gets_the_case_and_the_hint():
    """Even windows hide the rounding; the first odd one shows it. 22 entries: the pairs exactly
    3 apart, 2 x 6 in the 9-token sentence and 6 + 4 with the 7 real keys of the other."""
    with pytest.raises(ExerciseFailed) as failure:
        check_sliding_window_mask(window_rounded_up)
    assert failure.value.message.splitlines() == [
        "✗ check_sliding_window_mask: case 2 of 9: batch 2, length 9, window 5 (odd: still 2 "
        "keys on each side)",
        "  mask[0, 0, 0, 3] is True, but in sentence 0 query 0 may not attend to key 3, 3 away "
        "(22 entries differ)",
        "HINT: an odd window has the query in its middle: window // 2 keys on each side, rounded "
        "down (2 for a window of 5), not (window + 1) // 2.",
    ]


# ----------------------------------------------------------------------------
# The cases against transformers and the rotary property
# ----------------------------------------------------------------------------


def _hf_rotary(x, positions, base):
    """transformers' ModernBERT rotation of x (as the query), in float32."""
    d = x.shape[-1]
    config = ModernBertConfig(
        hidden_size=d, num_attention_heads=1, num_hidden_layers=1, global_rope_theta=base
    )
    config.rope_parameters["full_attention"]["rope_theta"] = base
    rotary = hf_modernbert.ModernBertRotaryEmbedding(config)
    cos, sin = rotary(x.float(), positions[None], "full_attention")  # (1, T, d) each
    rotated, _ = hf_modernbert.apply_rotary_pos_emb(
        x.float(), x.float(), cos[0], sin[0], unsqueeze_dim=0
    )
    return rotated.reshape(x.shape)  # (1, ..., T, d) for a 2-D x


def test_rotary_cases_agree_with_transformers_and_the_variant():
    for case in _rotary_cases():
        x, positions, *base = case.args
        base = base[0] if base else 10000.0
        assert case.expected.dtype == x.dtype
        # Both turn in float32 and round to x's dtype at the end: equal up to that rounding.
        tolerance = dict(atol=1e-5, rtol=1e-5) if x.dtype != torch.bfloat16 else {}
        hf = _hf_rotary(x, positions, base).to(x.dtype)
        torch.testing.assert_close(hf, case.expected, **tolerance)
        torch.testing.assert_close(_rotary(*case.args), case.expected, **tolerance)
    bases = {case.args[2] for case in _rotary_cases() if len(case.args) == 3}
    assert GLOBAL_BASE in bases and 10000.0 in bases


def test_rotary_scores_depend_on_the_offset_only():
    """Case 4 holds case 1's vectors 100 positions further: every vector turns, the dot products
    between them (what attention scores see) do not."""
    first, shifted = _rotary_cases()[0], _rotary_cases()[3]
    assert torch.equal(first.args[0], shifted.args[0])
    assert not torch.allclose(first.expected, shifted.expected, atol=1e-2)
    torch.testing.assert_close(
        first.expected @ first.expected.T, shifted.expected @ shifted.expected.T
    )


def test_rotary_by_hand_for_one_pair():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    positions = torch.tensor([0, 1, 2])
    expected = torch.tensor(
        [
            [1.0, 0.0],
            [torch.cos(torch.tensor(1.0)), torch.sin(torch.tensor(1.0))],
            [-2 * torch.sin(torch.tensor(2.0)), 2 * torch.cos(torch.tensor(2.0))],
        ]
    )
    torch.testing.assert_close(apply_rotary(x, positions, base=5.0), expected)


def test_geglu_cases_agree_with_transformers_and_the_variant():
    for case in _geglu_cases():
        x, Wi, Wo = case.args
        config = ModernBertConfig(
            hidden_size=Wo.shape[0],
            intermediate_size=Wo.shape[1],
            num_attention_heads=1,
            mlp_bias=False,
        )
        mlp = hf_modernbert.ModernBertMLP(config).to(x.dtype).eval()
        mlp.load_state_dict({"Wi.weight": Wi, "Wo.weight": Wo})
        with torch.no_grad():
            torch.testing.assert_close(mlp(x), case.expected)
        torch.testing.assert_close(_geglu(*case.args), case.expected)


def test_the_tanh_gelu_is_caught_on_the_first_case():
    """The approximation differs by up to 5e-4 before the projection: far above the checker's
    1e-5 tolerance for float32, because the values before GELU reach the region where it is
    largest."""
    case = _geglu_cases()[0]
    difference = (geglu_tanh(*case.args) - case.expected).abs().max().item()
    assert difference > 1e-4
    value, _ = (case.args[0] @ case.args[1].T).chunk(2, dim=-1)
    assert value.abs().max() > 2


def test_window_cases_agree_with_transformers_masks():
    """The band and padding of transformers' bidirectional sliding-window mask for ModernBERT,
    whose config.sliding_window is local_attention // 2."""
    from transformers.masking_utils import (
        and_masks,
        padding_mask_function,
        sliding_window_bidirectional_overlay,
    )

    for case in _window_cases():
        attention_mask, window = case.args
        config = ModernBertConfig(local_attention=window)
        rule = and_masks(
            sliding_window_bidirectional_overlay(config.sliding_window),
            padding_mask_function(attention_mask.bool()),
        )
        batch, length = attention_mask.shape
        b, i, j = torch.arange(batch)[:, None, None], torch.arange(length), torch.arange(length)
        expected = rule(b, 0, i[None, :, None], j[None, None, :])[:, None]  # (B, 1, T, T)
        assert torch.equal(case.expected, expected), case.description
        assert torch.equal(_window_mask(*case.args), case.expected)


def test_window_by_hand():
    mask = sliding_window_mask(torch.tensor([[0, 1, 1, 1, 1]]), 5)[0, 0].int()
    assert mask.tolist() == [
        [0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 1, 1, 1],
        [0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1],
    ]
