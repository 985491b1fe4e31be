"""Chapter 14, from BERT to ModernBERT: rotary positions, the GeGLU feed-forward block, the
sliding-window mask of the local layers.

The exercises, as the chapter states them:

**Exercise 1 (coding, ★★☆): rotary positions.** Write `apply_rotary(x, positions,
base=10000.0)`: `x` is (..., T, d) (queries or keys, d even) and `positions` (T,) holds each
token's position, an integer. Split the last dimension into halves x1 = x[..., :d/2] and
x2 = x[..., d/2:]; pair i is (x1[i], x2[i]), turned by the angle position * base^(-2i/d) (the
"rotate_half" layout of ModernBERT and `transformers`). Return a tensor of x's shape and dtype.
The checker compares it with `bertcourse.modern.RotaryEmbedding` and `apply_rotary`, with
ModernBERT's two bases, 10,000 (local layers) and 160,000 (global ones).

**Exercise 2 (coding, ★☆☆): GeGLU.** Write `geglu(x, Wi, Wo)`: `x` is (..., H), `Wi` the
(2I, H) weight of the up projection and `Wo` the (H, I) weight of the down projection (as
`nn.Linear` stores them, no biases). Split x @ Wi.T into its two halves along the last dimension,
the value first and the gate second; the exact (erf) GELU of the value times the gate, projected
by Wo, is the answer, as in `bertcourse.modern.ModernBertMLP`.

**Exercise 3 (coding, ★☆☆): the sliding window.** Write `sliding_window_mask(attention_mask,
window)`: `attention_mask` is (B, T), 1 (or True) at real tokens and 0 at padding, on either side;
`window` is ModernBERT's `local_attention`, the whole span, both sides together. Return a
(B, 1, T, T) bool mask, True where query i may attend to key j: key j is a real token and
|i - j| <= window // 2. A padded query keeps its real keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..modern import ModernBertMLP, ModernConfig, RotaryEmbedding, apply_rotary, rotate_half
from ..modern import sliding_window_mask as _window_band
from ._grading import (
    Case,
    Problem,
    _compare_tensor,
    _fmt_index,
    _fmt_shape,
    _random,
    _run_cases,
    _tensor_comparison,
    _variant,
)

__all__ = [
    "check_rotary",
    "check_geglu",
    "check_sliding_window_mask",
]

GLOBAL_BASE = 160_000.0  # ModernBERT's global layers (config.global_rope_theta)
LOCAL_BASE = 10_000.0  # its local layers, and the original RoPE's base


# ----------------------------------------------------------------------------
# Exercise 1: rotary positions
# ----------------------------------------------------------------------------


def _package_rotary(
    x: torch.Tensor, positions: torch.Tensor, base: float = LOCAL_BASE
) -> torch.Tensor:
    """The package's rotation: RotaryEmbedding's cos and sin for `positions`, then apply_rotary."""
    config = ModernConfig(
        hidden_size=x.shape[-1],
        num_attention_heads=1,
        num_hidden_layers=1,
        global_rope_theta=base,
    )
    cos, sin = RotaryEmbedding(config)(positions, "full_attention")  # (T, d) each
    return apply_rotary(x, cos, sin)


def _rotary(
    x: torch.Tensor,
    positions: torch.Tensor,
    base: float = LOCAL_BASE,
    *,
    pairs: str = "halves",
    backwards: bool = False,
    exponent: str = "2i/d",
    first_position: int = 0,
    use_base: bool = True,
    use_positions: bool = True,
    swap_cos_sin: bool = False,
    angle_layout: str = "cat",
    keep_dtype: bool = True,
) -> torch.Tensor:
    """The rotation written out (default switches), or a classic mistake in it."""
    d = x.shape[-1]
    pair_index = torch.arange(d // 2, dtype=torch.float64)
    power = {"2i/d": 2 * pair_index / d, "i/d": pair_index / d}[exponent]
    inv_freq = (base if use_base else LOCAL_BASE) ** -power  # (d/2,)
    if not use_positions:
        positions = torch.arange(x.shape[-2])
    angles = (positions.double() + first_position)[:, None] * inv_freq  # (T, d/2)
    if backwards:
        angles = -angles
    cos, sin = angles.cos().float(), angles.sin().float()
    if swap_cos_sin:
        cos, sin = sin, cos
    x32 = x.float()
    if pairs == "interleaved":  # (2i, 2i + 1), the RoFormer paper's layout
        even, odd = x32[..., 0::2], x32[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        rotated = rotated.flatten(-2)
    else:
        if angle_layout == "cat":  # pair i's angle at i and at i + d/2
            cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        else:  # each angle twice in a row: the interleaved layout's, on halves
            cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        rotated = x32 * cos + rotate_half(x32) * sin
    return rotated.to(x.dtype) if keep_dtype else rotated


def _rotary_case(
    description: str,
    x: torch.Tensor,
    positions: list[int] | torch.Tensor,
    base: float | None = None,
) -> Case:
    """base None: the function is called without it, so its default (10,000) must be right."""
    positions = torch.as_tensor(positions)
    args = (x, positions) if base is None else (x, positions, base)
    return Case(description, args, _package_rotary(*args))


def _rotary_cases() -> list[Case]:
    """Both bases and others, d from 2 to 64, shifted and unordered positions, float64, bf16."""
    g = torch.Generator().manual_seed(17)
    first = _random(g, 6, 8)
    return [
        _rotary_case("one head, length 6, d 8, the default base (10,000)", first, range(6)),
        _rotary_case(
            "batch 2, 3 heads, length 5, d 16, base 160,000 (ModernBERT's global layers)",
            _random(g, 2, 3, 5, 16),
            range(5),
            GLOBAL_BASE,
        ),
        _rotary_case("batch 2, length 7, d 4, base 100", _random(g, 2, 7, 4), range(7), 100.0),
        _rotary_case(
            "case 1's vectors at positions 100 to 105: each turns further, yet their dot "
            "products with each other stay case 1's (they depend on offsets only)",
            first,
            range(100, 106),
            LOCAL_BASE,
        ),
        _rotary_case(
            "length 5, d 6, positions in no order (4, 0, 9, 2, 7), base 10,000",
            _random(g, 5, 6),
            [4, 0, 9, 2, 7],
            LOCAL_BASE,
        ),
        _rotary_case(
            "batch 1, 12 heads, length 8, d 64 (ModernBERT-base's heads), base 160,000",
            _random(g, 1, 12, 8, 64),
            range(8),
            GLOBAL_BASE,
        ),
        _rotary_case(
            "a single token at position 0 (it does not turn), d 8, base 10,000",
            _random(g, 1, 8),
            [0],
            LOCAL_BASE,
        ),
        _rotary_case(
            "d 2: one pair, turning 1 radian per position whatever the base (500 here), length 4",
            _random(g, 3, 4, 2),
            range(4),
            500.0,
        ),
        _rotary_case(
            "float64, batch 2, 2 heads, length 6, d 8, base 160,000",
            _random(g, 2, 2, 6, 8, dtype=torch.float64),
            range(6),
            GLOBAL_BASE,
        ),
        _rotary_case(
            "bfloat16 (ModernBERT's training precision), batch 2, length 6, d 8, base 10,000",
            _random(g, 2, 6, 8).to(torch.bfloat16),
            range(6),
            LOCAL_BASE,
        ),
    ]


# atol = rtol. The reference turns in float32, as ModernBERT does, so an answer computed in
# float64 differs by up to ~5e-6 at position 100; a 16-bit answer rounds once or twice more.
_ROTARY_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 4e-3}
_ROTARY_FLOAT_TOLERANCE = 1e-4


def _rotary_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    return (
        f"the result has x's shape {_fmt_shape(expected)}: every pair is turned in place, "
        "the halves put back together with torch.cat((...), dim=-1)."
    )


def _compare_rotated(expected: torch.Tensor, got: Any) -> Problem | None:
    """As _compare_tensor, with a float32 reference's tolerance (wider for 16-bit answers)."""
    same_kind = (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and got.dtype == expected.dtype
    )
    if not same_kind:
        return _compare_tensor(expected, got, "rotated x", _rotary_shape_hint)
    tolerance = _ROTARY_TOLERANCE.get(expected.dtype, _ROTARY_FLOAT_TOLERANCE)
    got64, expected64 = got.detach().cpu().double(), expected.detach().cpu().double()
    if torch.allclose(got64, expected64, atol=tolerance, rtol=tolerance, equal_nan=True):
        return None
    return _compare_tensor(expected64, got64, "rotated x")


_ROTARY_MISTAKES = [
    _variant(
        "pair i is (i, i + d/2), the two halves (rotate_half), not neighbours (2i, 2i + 1): "
        "that interleaved layout is the RoFormer paper's; ModernBERT's weights expect halves.",
        _rotary,
        pairs="interleaved",
    ),
    _variant(
        "every pair turns the wrong way: rotate_half(x) is cat(-x2, x1), not cat(x2, -x1), so "
        "that x * cos + rotate_half(x) * sin turns each pair by +angle.",
        _rotary,
        backwards=True,
    ),
    _variant(
        "pair i's frequency is base^(-2i/d): the exponents are torch.arange(0, d, 2) / d, "
        "not torch.arange(d // 2) / d.",
        _rotary,
        exponent="i/d",
    ),
    _variant(
        "positions count from 0, and the angle is the position given times the frequency: "
        "the first token does not turn; do not add 1.",
        _rotary,
        first_position=1,
    ),
    _variant(
        "use the positions argument, not torch.arange(T): a token's angle comes from its own "
        "position, which need not start at 0 or be in order.",
        _rotary,
        use_positions=False,
    ),
    _variant(
        "use the base argument, not a fixed 10,000: ModernBERT's global layers use 160,000.",
        _rotary,
        use_base=False,
    ),
    _variant(
        "cos and sin are swapped: x * cos(angle) + rotate_half(x) * sin(angle); a token at "
        "position 0 must come out unchanged.",
        _rotary,
        swap_cos_sin=True,
    ),
    _variant(
        "pair i's angle belongs at places i and i + d/2: torch.cat((angles, angles), dim=-1), "
        "not angles.repeat_interleave(2, dim=-1).",
        _rotary,
        angle_layout="interleave",
    ),
    _variant(
        "return x's dtype: turn in float32 if you like (ModernBERT does), then .to(x.dtype).",
        _rotary,
        keep_dtype=False,
    ),
]


def check_rotary(fn: Callable) -> bool:
    """Grade `fn(x, positions, base=10000.0)` -> x turned by rotary position embeddings.

    x: (..., T, d), d even; positions: (T,) integers. Pair i, dimensions
    (i, i + d/2), turns by the angle position * base^(-2i/d):
    x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1). The result
    has x's shape and dtype (as `bertcourse.modern.RotaryEmbedding` with
    `apply_rotary`, which turn in float32).
    """
    return _run_cases(
        "check_rotary",
        fn,
        _rotary_cases(),
        _compare_rotated,
        _ROTARY_MISTAKES,
        "check d = 2 by hand: one pair (x1, x2) at position p comes out as "
        "(x1 cos p - x2 sin p, x1 sin p + x2 cos p), whatever the base.",
    )


# ----------------------------------------------------------------------------
# Exercise 2: GeGLU
# ----------------------------------------------------------------------------


def _package_geglu(x: torch.Tensor, Wi: torch.Tensor, Wo: torch.Tensor) -> torch.Tensor:
    """ModernBertMLP (GLU, exact GELU, no biases) with the weights Wi and Wo."""
    hidden, width = Wo.shape
    config = ModernConfig(
        hidden_size=hidden,
        intermediate_size=width,
        num_attention_heads=1,
        num_hidden_layers=1,
        position_embedding_type="absolute",  # no rotary, so any hidden size will do
    )
    mlp = ModernBertMLP(config).to(x.dtype).eval()
    mlp.load_state_dict({"Wi.weight": Wi, "Wo.weight": Wo})
    with torch.no_grad():
        return mlp(x)


def _geglu(
    x: torch.Tensor,
    Wi: torch.Tensor,
    Wo: torch.Tensor,
    *,
    gate_first: bool = False,
    activation: str = "gelu",
    combine: str = "product",
    split: str = "halves",
) -> torch.Tensor:
    """GeGLU written out (default switches), or a classic mistake in it."""
    projected = x @ Wi.T  # (..., 2I)
    if split == "halves":
        value, gate = projected.chunk(2, dim=-1)  # (..., I) each
    else:  # every other feature
        value, gate = projected.unflatten(-1, (-1, 2)).unbind(-1)
    if gate_first:
        value, gate = gate, value
    act = {
        "gelu": F.gelu,
        "tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "relu": F.relu,
        "none": lambda t: t,
    }[activation]
    if combine == "product":
        gated = act(value) * gate
    elif combine == "sum":
        gated = act(value) + gate
    elif combine == "gelu_of_product":
        gated = act(value * gate)
    else:  # "both": the activation on the gate too
        gated = act(value) * act(gate)
    return gated @ Wo.T  # (..., H)


def _geglu_case(
    g: torch.Generator,
    description: str,
    x_shape: tuple[int, ...],
    width: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> Case:
    """Random x and weights sized so that the values before GELU spread over about ±4."""
    hidden = x_shape[-1]
    x = _random(g, *x_shape, dtype=dtype)
    Wi = _random(g, 2 * width, hidden, dtype=dtype) * (2.0 / hidden**0.5)
    Wo = _random(g, hidden, width, dtype=dtype) / width**0.5
    return Case(description, (x, Wi, Wo), _package_geglu(x, Wi, Wo))


def _geglu_cases() -> list[Case]:
    """Batches of tokens, one token, ModernBERT's width (2/3 of BERT's 4H), float64."""
    g = torch.Generator().manual_seed(1717)
    return [
        _geglu_case(g, "batch 2, length 5, hidden 8, intermediate 12", (2, 5, 8), 12),
        _geglu_case(g, "4 tokens (a 2-D x), hidden 6, intermediate 6", (4, 6), 6),
        _geglu_case(g, "a single token vector (H,), hidden 8, intermediate 10", (8,), 10),
        _geglu_case(
            g,
            "batch 1, length 4, hidden 24, intermediate 64 (2/3 of BERT's 4 x 24, ModernBERT's "
            "choice for the same parameter count)",
            (1, 4, 24),
            64,
        ),
        _geglu_case(g, "batch 3, length 1, hidden 4, intermediate 3", (3, 1, 4), 3),
        _geglu_case(
            g,
            "float64, batch 2, length 3, hidden 8, intermediate 12",
            (2, 3, 8),
            12,
            dtype=torch.float64,
        ),
    ]


_VALUE_FIRST = (
    "the first half of x @ Wi.T is the value, which goes through GELU, and the second half the "
    "gate, which multiplies it as it is: value, gate = (x @ Wi.T).chunk(2, dim=-1), then "
    "gelu(value) * gate. ModernBERT's weights expect this order."
)

_GEGLU_MISTAKES = [
    _variant(_VALUE_FIRST, _geglu, gate_first=True),
    _variant(
        "ModernBERT's GELU is the exact one, x * Φ(x) with erf (F.gelu(x)); "
        "approximate='tanh' differs by up to 5e-4.",
        _geglu,
        activation="tanh",
    ),
    _variant(
        "that is SwiGLU (LLaMA's feed-forward block): GeGLU puts GELU on the value, not SiLU.",
        _geglu,
        activation="silu",
    ),
    _variant(
        "a ReLU: GeGLU puts GELU (F.gelu, the exact one) on the value.",
        _geglu,
        activation="relu",
    ),
    _variant(
        "the value goes through GELU before the gate multiplies it: gelu(value) * gate.",
        _geglu,
        activation="none",
    ),
    _variant(
        "the gate multiplies (elementwise *), it is not added: gelu(value) * gate.",
        _geglu,
        combine="sum",
    ),
    _variant(
        "GELU goes on the value alone, before the product: gelu(value) * gate, "
        "not gelu(value * gate).",
        _geglu,
        combine="gelu_of_product",
    ),
    _variant(
        "the gate multiplies as it is, without GELU: gelu(value) * gate.",
        _geglu,
        combine="both",
    ),
    _variant(
        "split x @ Wi.T into two halves along the last dimension, chunk(2, dim=-1): the first "
        "I features are the value, the last I the gate, not every other feature.",
        _geglu,
        split="pairs",
    ),
]


def _geglu_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    return (
        f"the output has x's shape {_fmt_shape(expected)}: (..., H) -> (..., 2I) by Wi, "
        "two halves of I, their product (..., I), back to (..., H) by Wo. nn.Linear's "
        "weights are (out, in): multiply by Wi.T and Wo.T."
    )


def check_geglu(fn: Callable) -> bool:
    """Grade `fn(x, Wi, Wo)` -> ModernBERT's feed-forward block (GeGLU), (..., H).

    x: (..., H); Wi: (2I, H); Wo: (H, I), nn.Linear's layout, no biases.
    value, gate = (x @ Wi.T).chunk(2, dim=-1); the answer is
    (gelu(value) * gate) @ Wo.T with the exact GELU (as
    `bertcourse.modern.ModernBertMLP` and `transformers`' ModernBertMLP).
    """
    return _run_cases(
        "check_geglu",
        fn,
        _geglu_cases(),
        _tensor_comparison("output", _geglu_shape_hint),
        _GEGLU_MISTAKES,
        "print the shapes on the way: x @ Wi.T is (..., 2I); its two halves (..., I); "
        "gelu(value) * gate (..., I); the output (..., H).",
    )


# ----------------------------------------------------------------------------
# Exercise 3: the sliding-window mask of ModernBERT's local layers
# ----------------------------------------------------------------------------


def _package_window_mask(attention_mask: torch.Tensor, window: int) -> torch.Tensor:
    """The package's band (T, T) for `window`, with the padded keys blocked: (B, 1, T, T)."""
    band = _window_band(attention_mask.shape[-1], window)  # (T, T)
    return band[None, None] & attention_mask.bool()[:, None, None, :]


def _window_mask(
    attention_mask: torch.Tensor,
    window: int,
    *,
    reach: str = "half",
    compare: str = "<=",
    direction: str = "both",
    padding: str = "keys",
    invert: bool = False,
) -> torch.Tensor:
    """The mask written out (default switches), or a classic mistake in it."""
    length = attention_mask.shape[-1]
    positions = torch.arange(length)
    offset = positions[:, None] - positions[None, :]  # (T, T): query i minus key j
    side = {"half": window // 2, "whole": window, "ceil": (window + 1) // 2}[reach]
    near = offset.abs() <= side if compare == "<=" else offset.abs() < side
    if direction == "past":
        near = near & (offset >= 0)
    real = attention_mask.bool()
    if padding == "prefix":  # the real tokens assumed to come first
        real = positions[None, :] < attention_mask.long().sum(-1, keepdim=True)
    keys, queries = real[:, None, None, :], real[:, None, :, None]
    mask = {
        "keys": near & keys,
        "prefix": near & keys,
        "ignored": near.expand(len(real), 1, length, length),
        "queries": near & queries,
        "both": near & keys & queries,
    }[padding]
    return ~mask if invert else mask


def _window_case(description: str, attention_mask: list[list[int]] | torch.Tensor, window: int):
    mask = torch.as_tensor(attention_mask)
    return Case(description, (mask, window), _package_window_mask(mask, window))


def _window_cases() -> list[Case]:
    """Even and odd windows, windows of 1 and beyond the length, padding on either side."""
    return [
        _window_case(
            "batch 2, length 8, window 4 (2 keys on each side), right padding",
            [[1] * 8, [1] * 6 + [0] * 2],
            4,
        ),
        _window_case(
            "batch 2, length 9, window 5 (odd: still 2 keys on each side)",
            [[1] * 9, [1] * 7 + [0] * 2],
            5,
        ),
        _window_case(
            "batch 3, length 10, window 6, the first sentence padded on the LEFT",
            [[0, 0, 0] + [1] * 7, [1] * 10, [1] * 4 + [0] * 6],
            6,
        ),
        _window_case(
            "batch 2, length 6, window 2 (1 key on each side)", [[1] * 6, [1] * 3 + [0] * 3], 2
        ),
        _window_case(
            "batch 2, length 5, window 1 (each token sees only itself)",
            [[1] * 5, [1] * 4 + [0]],
            1,
        ),
        _window_case(
            "batch 2, length 7, window 128 (ModernBERT's local_attention, wider than the "
            "sentence: only the padding mask is left)",
            [[1] * 7, [1] * 3 + [0] * 4],
            128,
        ),
        _window_case(
            "batch 2, length 4, window 3, the second sequence entirely padding",
            [[1, 1, 1, 0], [0, 0, 0, 0]],
            3,
        ),
        _window_case("batch 1, length 1 (a single token), window 4", [[1]], 4),
        _window_case(
            "a bool attention_mask (True = real token), batch 2, length 9, window 7",
            torch.tensor([[True] * 9, [True] * 5 + [False] * 4]),
            7,
        ),
    ]


def _window_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    batch, _, length, _ = expected
    if tuple(got) == (batch, length, length):
        return "add the head axis: (B, 1, T, T), so that the mask broadcasts over the heads."
    return (
        f"the mask has shape (B, 1, T, T) = {_fmt_shape(expected)}: a (T, T) band for every "
        "sentence, with an axis of size 1 for the heads."
    )


def _compare_window_mask(expected: torch.Tensor, got: Any) -> Problem | None:
    if not isinstance(got, torch.Tensor):
        return Problem(
            [
                f"expected a bool tensor of shape {_fmt_shape(expected.shape)}, "
                f"got {type(got).__name__}"
            ],
            "return the mask tensor itself.",
        )
    if got.shape != expected.shape:
        return Problem(
            [
                f"mask has the wrong shape: expected {_fmt_shape(expected.shape)}, "
                f"got {_fmt_shape(got.shape)}"
            ],
            _window_shape_hint(expected.shape, got.shape),
        )
    if got.dtype != torch.bool:
        return Problem(
            [f"mask has dtype {got.dtype}, expected torch.bool"],
            "return a bool mask (True = may attend): convert the 1/0 attention_mask with .bool(), "
            "and combine conditions with &, not + or *.",
        )
    got = got.cpu()
    if torch.equal(got, expected):
        return None
    wrong = (got != expected).nonzero()[0].tolist()
    b, _, i, j = wrong
    should = "may" if bool(expected[b, 0, i, j]) else "may not"
    return Problem(
        [
            f"mask{_fmt_index(wrong)} is {bool(got[b, 0, i, j])}, but in sentence {b} query {i} "
            f"{should} attend to key {j}, {abs(i - j)} away ({int((got != expected).sum())} "
            "entries differ)"
        ]
    )


_WINDOW_MISTAKES = [
    _variant(
        "keys exactly window // 2 away are inside the window: |i - j| <= window // 2, not <.",
        _window_mask,
        compare="<",
    ),
    _variant(
        "window (local_attention) is the whole span, both sides together: each side sees "
        "window // 2 keys, |i - j| <= window // 2, not |i - j| <= window.",
        _window_mask,
        reach="whole",
    ),
    _variant(
        "an odd window has the query in its middle: window // 2 keys on each side, rounded "
        "down (2 for a window of 5), not (window + 1) // 2.",
        _window_mask,
        reach="ceil",
    ),
    _variant(
        "the window looks both ways: ModernBERT reads the whole sentence, so keys up to "
        "window // 2 before *and* after the query; only a causal model stops at j <= i.",
        _window_mask,
        direction="past",
    ),
    _variant(
        "padded keys receive attention: combine the window with the padding mask of the keys (&).",
        _window_mask,
        padding="ignored",
    ),
    _variant(
        "the padding mask blocks keys, the last axis: attention_mask[:, None, None, :], not "
        "queries ([:, None, :, None]).",
        _window_mask,
        padding="queries",
    ),
    _variant(
        "block padded keys only: a padded query's row keeps its real keys, as in transformers' "
        "masks (its output is never used anyway).",
        _window_mask,
        padding="both",
    ),
    _variant(
        "padding may sit on the left: use the mask itself, not a length from its sum.",
        _window_mask,
        padding="prefix",
    ),
    _variant(
        "the mask is inverted: in a bool mask True means the query *may* attend to that key "
        "(as in torch.nn.functional.scaled_dot_product_attention).",
        _window_mask,
        invert=True,
    ),
]


def check_sliding_window_mask(fn: Callable) -> bool:
    """Grade `fn(attention_mask, window)` -> (B, 1, T, T) bool mask of a local layer.

    attention_mask: (B, T), 1 (or True) at real tokens and 0 at padding, on
    either side; window: `local_attention`, both sides together. True where
    key j is a real token and |i - j| <= window // 2 (as
    `bertcourse.modern.sliding_window_mask` with the padding of the keys).
    """
    return _run_cases(
        "check_sliding_window_mask",
        fn,
        _window_cases(),
        _compare_window_mask,
        _WINDOW_MISTAKES,
        "print your mask for one sentence, mask[b, 0].int(), and compare it with the band "
        "|i - j| <= window // 2 restricted to the real keys.",
    )
