"""Chapter 4, the encoder: the parameter count, LayerNorm in any precision, GELU and its slope."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..config import BertConfig
from ..model import BertForPreTraining
from ._grading import (
    Case,
    Mistake,
    Problem,
    _compare_tensor,
    _first_index,
    _fmt_index,
    _fmt_shape,
    _random,
    _run_cases,
    _tensor_comparison,
    _unwrap_scalar,
    _variant,
)

__all__ = [
    "check_parameter_count",
    "check_layer_norm",
    "check_gelu",
    "check_gelu_derivative",
]


def _layer_norm_case(g: torch.Generator, description: str, x: torch.Tensor, eps: float) -> Case:
    """A case with a random weight and bias around 1 and 0, and torch's LayerNorm as the answer.

    The answer is computed in float32 at least: for a float16 input it is rounded
    back to float16 at the end, as mixed-precision training does.
    """
    hidden = x.shape[-1]
    drawn = torch.promote_types(x.dtype, torch.float32)  # float16 values drawn in float32
    weight = (1 + 0.5 * _random(g, hidden, dtype=drawn)).to(x.dtype)
    bias = (0.5 * _random(g, hidden, dtype=drawn)).to(x.dtype)
    compute = torch.promote_types(x.dtype, torch.float32)
    wide = F.layer_norm(x.to(compute), (hidden,), weight.to(compute), bias.to(compute), eps)
    return Case(description, (x, weight, bias, eps), wide.to(x.dtype))


def _layer_norm_cases() -> list[Case]:
    """Large means, a constant vector, a large eps, 1-D, float64 and float16 inputs."""
    g = torch.Generator().manual_seed(9)
    return [
        _layer_norm_case(
            g,
            "batch 2, length 3, hidden 8, mean 3 and std 5, eps 1e-12",
            3 + 5 * _random(g, 2, 3, 8),
            1e-12,
        ),
        _layer_norm_case(g, "one vector (1-D), hidden 16, eps 1e-5", _random(g, 16), 1e-5),
        _layer_norm_case(
            g,
            "batch 2, length 2, hidden 6, with a constant vector (variance 0), eps 1e-12",
            torch.cat([_random(g, 1, 2, 6), torch.full((1, 2, 6), 2.0)]),
            1e-12,
        ),
        _layer_norm_case(
            g,
            "hidden 10, small variance (std 0.1) and a large eps 0.1",
            0.1 * _random(g, 4, 10),
            0.1,
        ),
        _layer_norm_case(
            g,
            "float64, batch 2, length 5, hidden 12, eps 1e-12",
            _random(g, 2, 5, 12, dtype=torch.float64),
            1e-12,
        ),
        _layer_norm_case(
            g,
            "float64, batch 3, hidden 32, mean 1e6 and std 1, eps 1e-12",
            1e6 + _random(g, 3, 32, dtype=torch.float64),
            1e-12,
        ),
        _layer_norm_case(g, "batch 3, length 4, hidden 5", _random(g, 3, 4, 5), 1e-12),
        _layer_norm_case(
            g,
            "float16, batch 2, hidden 64, std 300 (squares above float16's 65,504), eps 1e-12",
            (300 * _random(g, 2, 64)).half(),
            1e-12,
        ),
        _layer_norm_case(
            g,
            "float16, batch 2, hidden 8, with a constant vector, eps 1e-12 (0 in float16)",
            torch.cat([_random(g, 1, 8), torch.full((1, 8), 2.0)]).half(),
            1e-12,
        ),
    ]


def _layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    unbiased: bool = False,
    eps_inside: bool = True,
    swap: bool = False,
    dim: int = -1,
    center: bool = True,
    one_pass: bool = False,
    affine: bool = True,
    compute_dtype: torch.dtype | None = None,
    cast_back: bool = True,
) -> torch.Tensor:
    """LayerNorm written out, or one of its classic mistakes.

    compute_dtype: the dtype of the arithmetic; None = the wider of x's dtype and float32.
    """
    input_dtype = x.dtype
    compute = compute_dtype or torch.promote_types(x.dtype, torch.float32)
    x, weight, bias = x.to(compute), weight.to(compute), bias.to(compute)
    mean = x.mean(dim=dim, keepdim=True)
    if one_pass:
        variance = (x * x).mean(dim=dim, keepdim=True) - mean**2
    else:
        variance = ((x - mean) ** 2).sum(dim=dim, keepdim=True) / (x.shape[dim] - unbiased)
    centered = x - mean if center else x
    if eps_inside:
        normalised = centered / torch.sqrt(variance + eps)
    else:
        normalised = centered / (torch.sqrt(variance) + eps)
    if not affine:
        output = normalised
    else:
        output = normalised * bias + weight if swap else normalised * weight + bias
    return output.to(input_dtype) if cast_back else output


_LAYER_NORM_MISTAKES = [
    _variant(
        "use the biased variance: divide by H (unbiased=False), not H - 1.",
        _layer_norm,
        unbiased=True,
    ),
    _variant(
        "eps belongs inside the square root: (x - mean) / sqrt(var + eps).",
        _layer_norm,
        eps_inside=False,
    ),
    _variant(
        "weight (the gain) multiplies, bias is added: weight * x_hat + bias.",
        _layer_norm,
        swap=True,
    ),
    _variant(
        "subtract the mean before dividing by the standard deviation.", _layer_norm, center=False
    ),
    _variant(
        "var = E[x²] - E[x]² loses all precision when the mean is large: "
        "subtract the mean first, then average the squares.",
        _layer_norm,
        one_pass=True,
    ),
    _variant("apply the weight and the bias after normalising.", _layer_norm, affine=False),
    _variant(
        "in float16, eps = 1e-12 rounds to 0 and a square above 65,504 becomes inf: "
        "compute in float32 (x.float(), and the weight and bias too), then round the "
        "result back to float16.",
        _layer_norm,
        compute_dtype=torch.float16,
    ),
    _variant(
        "the statistics are right, but return the result in the input's dtype: output.to(x.dtype).",
        _layer_norm,
        cast_back=False,
    ),
]


_HALF_TOLERANCE = (2e-3, 4e-3)  # (atol, rtol): a few float16 rounding steps


def _compare_layer_norm(expected: torch.Tensor, got: Any) -> Problem | None:
    """As `_tensor_comparison`, with a tolerance of a few rounding steps for float16 answers."""
    if expected.dtype != torch.float16:
        problem = _tensor_comparison("output", nan_hint=_LAYER_NORM_NAN)(expected, got)
        if problem is not None and problem.hint is None and expected.dtype == torch.float64:
            error = (got.detach().cpu().double() - expected).abs().max().item()
            if error < 1e-3:  # float32-sized: the arithmetic left float64
                problem.hint = _STAY_FLOAT64
        return problem
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return _compare_tensor(expected, got)
    if got.dtype != expected.dtype:
        return Problem([f"output has dtype {got.dtype}, expected {expected.dtype}"])
    got_float, expected_float = got.detach().float().cpu(), expected.float()
    atol, rtol = _HALF_TOLERANCE
    if bool(torch.isclose(got_float, expected_float, rtol, atol, equal_nan=True).all()):
        return None
    if bool((~torch.isfinite(got_float)).any()):
        index = _first_index(~torch.isfinite(got_float))
        return Problem(
            [f"output contains NaN or inf at {_fmt_index(index)}, shape {_fmt_shape(got.shape)}"],
            "NaN or inf in float16: 1e-12 is 0 there, and squares above 65,504 overflow; "
            "compute in float32 and round the result back to float16.",
            nonfinite=True,
        )
    error = (got_float - expected_float).abs()
    index = _first_index(error == error.max())
    return Problem(
        [
            f"output values differ: max abs error {error.max().item():.3g} at "
            f"{_fmt_index(index)}: expected {expected_float[tuple(index)].item():.6g}, "
            f"got {got_float[tuple(index)].item():.6g}"
        ]
    )


_STAY_FLOAT64 = (
    "errors of float32's size on a float64 input: float32 is the least precision to compute "
    "in, not the only one; a float64 input stays float64 "
    "(torch.promote_types(x.dtype, torch.float32))."
)
_LAYER_NORM_NAN = "NaN for a constant vector: its variance is 0; add eps inside the square root."


def check_layer_norm(fn: Callable) -> bool:
    """Grade `fn(x, weight, bias, eps)`: LayerNorm over the last dimension, in any precision.

    Biased variance (divide by H), eps inside the square root, weight and
    bias per feature, as `torch.nn.LayerNorm`. The arithmetic is done in the
    wider of x's dtype and float32, and the result has x's dtype: a float16
    input is normalised in float32 and rounded back to float16.
    """
    return _run_cases(
        "check_layer_norm",
        fn,
        _layer_norm_cases(),
        _compare_layer_norm,
        _LAYER_NORM_MISTAKES,
    )


def check_gelu(fn: Callable) -> bool:
    """Grade `fn(x)`: the exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), as `F.gelu` and BERT's "gelu"."""
    g = torch.Generator().manual_seed(10)
    cases = []
    for description, x in [
        ("201 points from -6 to 6 (float32)", torch.linspace(-6, 6, 201)),
        ("random (2, 3, 4) tensor with std 3", 3 * _random(g, 2, 3, 4)),
        ("a 0-d tensor, 0.5", torch.tensor(0.5)),
        ("large inputs, ±20 and ±50", torch.tensor([-50.0, -20.0, 20.0, 50.0])),
        ("float64, 2001 points from -8 to 8", torch.linspace(-8, 8, 2001, dtype=torch.float64)),
    ]:
        cases.append(Case(description, (x,), F.gelu(x)))

    def phi(x):
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    mistakes = [
        Mistake(
            "this is the tanh approximation ('gelu_new'); BERT's 'gelu' is the exact form "
            "x·Φ(x) = x/2·(1 + erf(x/√2)).",
            lambda x: F.gelu(x, approximate="tanh"),
        ),
        Mistake(
            "that is the sigmoid approximation x·σ(1.702x); use the exact x/2·(1 + erf(x/√2)).",
            lambda x: x * torch.sigmoid(1.702 * x),
        ),
        Mistake(
            "that is ReLU: GELU multiplies x by Φ(x), the normal CDF, instead of a hard step.",
            torch.relu,
        ),
        Mistake(
            "Φ(x) = (1 + erf(x/√2)) / 2: divide x by sqrt(2) inside erf.",
            lambda x: x * 0.5 * (1 + torch.erf(x)),
        ),
        Mistake(
            "Φ(x) = (1 + erf(x/√2)) / 2: the factor 1/2 is missing.",
            lambda x: x * (1 + torch.erf(x / math.sqrt(2))),
        ),
        Mistake("GELU(x) = x·Φ(x): multiply Φ(x) by x.", phi),
    ]
    return _run_cases(
        "check_gelu",
        fn,
        cases,
        _tensor_comparison("output"),
        mistakes,
        "GELU(x) = x·Φ(x) = x/2·(1 + erf(x/√2)).",
    )


def _normal_pdf(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = exp(-x²/2) / √(2π), the standard normal density."""
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) = (1 + erf(x/√2)) / 2."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _autograd_slope(activation: Callable, x: torch.Tensor) -> torch.Tensor:
    """d activation(x) / dx, element by element, by autograd."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(activation(leaf).sum(), leaf)
    return slope


def check_gelu_derivative(fn: Callable) -> bool:
    """Grade `fn(x)` -> GELU'(x) = Φ(x) + x·φ(x), the slope of the exact GELU, element by element.

    The reference is autograd's gradient of `F.gelu`; the answer has x's shape and dtype.
    """
    g = torch.Generator().manual_seed(12)
    cases = []
    for description, x in [
        ("201 points from -6 to 6 (float32)", torch.linspace(-6, 6, 201)),
        ("random (2, 3, 4) tensor with std 3", 3 * _random(g, 2, 3, 4)),
        ("a 0-d tensor, -0.75", torch.tensor(-0.75)),
        ("large inputs, ±20 and ±50", torch.tensor([-50.0, -20.0, 20.0, 50.0])),
        ("float64, 2001 points from -8 to 8", torch.linspace(-8, 8, 2001, dtype=torch.float64)),
    ]:
        cases.append(Case(description, (x,), _autograd_slope(F.gelu, x)))

    mistakes = [
        Mistake(
            "that is Φ(x) alone: GELU(x) = x·Φ(x) is a product, so its derivative has two "
            "terms, Φ(x) + x·φ(x) (the product rule).",
            _normal_cdf,
        ),
        Mistake(
            "that is x·φ(x) alone: the product rule also gives the term Φ(x).",
            lambda x: x * _normal_pdf(x),
        ),
        Mistake(
            "that is the slope of the tanh approximation ('gelu_new'); differentiate the "
            "exact x·Φ(x).",
            lambda x: _autograd_slope(lambda t: F.gelu(t, approximate="tanh"), x),
        ),
        Mistake(
            "φ(x), the normal density, is exp(-x²/2) / √(2π): the 1/√(2π) is missing.",
            lambda x: _normal_cdf(x) + x * torch.exp(-0.5 * x * x),
        ),
        Mistake(
            "φ(x) = exp(-x²/2) / √(2π): the exponent is -x²/2, not -x².",
            lambda x: _normal_cdf(x) + x * torch.exp(-x * x) / math.sqrt(2 * math.pi),
        ),
        Mistake(
            "that is ReLU's slope, a step from 0 to 1; GELU's slope is smooth, Φ(x) + x·φ(x).",
            lambda x: (x > 0).to(x.dtype),
        ),
    ]
    return _run_cases(
        "check_gelu_derivative",
        fn,
        cases,
        _tensor_comparison("slope"),
        mistakes,
        "d/dx [x·Φ(x)] = Φ(x) + x·φ(x), with φ(x) = exp(-x²/2) / √(2π).",
    )


def _parameter_parts(config: BertConfig) -> dict[str, int]:
    """Parameters of BertForPreTraining(config), part by part."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return {
        "word": config.vocab_size * hidden,
        "position": config.max_position_embeddings * hidden,
        "segment": config.type_vocab_size * hidden,
        "embedding_norm": 2 * hidden,
        "attention_weights": layers * 4 * hidden * hidden,
        "attention_biases": layers * 4 * hidden,
        "ffn_weights": layers * 2 * hidden * inter,
        "ffn_biases": layers * (inter + hidden),
        "layer_norms": layers * 2 * 2 * hidden,
        "pooler_weight": hidden * hidden,
        "pooler_bias": hidden,
        "transform_weight": hidden * hidden,
        "transform_bias": hidden,
        "transform_norm": 2 * hidden,
        "decoder_bias": config.vocab_size,
        "nsp_weight": 2 * hidden,
        "nsp_bias": 2,
    }


def _model_parameter_count(config: BertConfig) -> int:
    return _count_model_parameters(json.dumps(config.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _count_model_parameters(config_json: str) -> int:
    """Built once per config (keyed by its JSON): BERT-base takes a moment even on meta."""
    with torch.device("meta"):  # shapes only, no memory
        return BertForPreTraining(BertConfig(**json.loads(config_json))).num_parameters()


def _parameter_count_cases() -> list[Case]:
    """The package's sizes, BERT-base, an odd config and a one-layer one."""
    configs = [
        ("the 'tiny' size", BertConfig.from_name("tiny")),
        ("the 'mini' size", BertConfig.from_name("mini")),
        ("BERT-base", BertConfig.from_name("base")),
        (
            "an odd config: vocab 1000, H 96, 3 heads, I 100, 5 layers, 300 positions, 3 segments",
            BertConfig(
                vocab_size=1000,
                hidden_size=96,
                num_attention_heads=3,
                intermediate_size=100,
                num_hidden_layers=5,
                max_position_embeddings=300,
                type_vocab_size=3,
            ),
        ),
        (
            "one layer: vocab 50, H 8, 1 head, I 20, 16 positions, 1 segment",
            BertConfig(
                vocab_size=50,
                hidden_size=8,
                num_attention_heads=1,
                intermediate_size=20,
                num_hidden_layers=1,
                max_position_embeddings=16,
                type_vocab_size=1,
            ),
        ),
    ]
    return [Case(d, (config,), _model_parameter_count(config)) for d, config in configs]


def _parameter_count_problem(expected: int, got: Any) -> Problem | None:
    """A count that is not a whole number, or one that is off, and by how much."""
    got = _unwrap_scalar(got)
    if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
        return Problem([f"expected a whole number (int), got {got!r}"], "return an int.")
    if int(got) == expected:
        return None
    return Problem(
        [f"expected {expected:,} parameters, got {int(got):,} (off by {int(got) - expected:+,})"]
    )


def _count_without(
    *parts: str, extra: Callable[[BertConfig], int] | None = None
) -> Callable[[BertConfig], int]:
    """A count that leaves out the parts named (see `_parameter_parts`), plus `extra` if given."""

    def count(config: BertConfig) -> int:
        kept = {k: v for k, v in _parameter_parts(config).items() if k not in parts}
        return sum(kept.values()) + (extra(config) if extra else 0)

    return count


def _count_assuming_4h(config: BertConfig) -> int:
    """The count with a feed-forward width of 4H instead of config.intermediate_size."""
    return _count_without()(config.replace(intermediate_size=4 * config.hidden_size))


def _count_one_norm_per_layer(config: BertConfig) -> int:
    """The count with one LayerNorm per layer instead of two."""
    return _count_without()(config) - config.num_hidden_layers * 2 * config.hidden_size


def _count_norms_without_bias(config: BertConfig) -> int:
    """The count with LayerNorms that have a weight but no bias (2L + 2 of them)."""
    return _count_without()(config) - config.hidden_size * (2 + 2 * config.num_hidden_layers)


_MLM_HEAD = ("transform_weight", "transform_bias", "transform_norm", "decoder_bias")
_HEADS = (*_MLM_HEAD, "nsp_weight", "nsp_bias")
_ALL_BIASES = (
    "attention_biases",
    "ffn_biases",
    "pooler_bias",
    "transform_bias",
    "decoder_bias",
    "nsp_bias",
)

_PARAMETER_COUNT_MISTAKES = [
    Mistake(
        "that is BertModel's count: BertForPreTraining adds the two heads (the MLM head's "
        "transform and decoder bias, the NSP classifier).",
        _count_without(*_HEADS),
    ),
    Mistake(
        "the decoder's weight is the word-embedding table itself (tied): count it once.",
        _count_without(extra=lambda c: c.vocab_size * c.hidden_size),
    ),
    Mistake(
        "the decoder has its own bias, one per vocabulary entry (V), though its weight is tied.",
        _count_without("decoder_bias"),
    ),
    Mistake(
        "the NSP classifier is missing: a linear layer from H to 2 classes, 2H + 2.",
        _count_without("nsp_weight", "nsp_bias"),
    ),
    Mistake(
        "an H×H dense layer with its bias (H² + H) is missing: the pooler, which the NSP "
        "classifier reads, or the MLM head's transform.",
        _count_without("pooler_weight", "pooler_bias"),
    ),
    Mistake(
        "the pooler and the MLM transform are both missing: each is a dense H×H + bias H.",
        _count_without("pooler_weight", "pooler_bias", "transform_weight", "transform_bias"),
    ),
    Mistake(
        "the MLM head's transform is missing: dense H×H + bias, GELU, then a LayerNorm (2H).",
        _count_without("transform_weight", "transform_bias", "transform_norm"),
    ),
    Mistake(
        "the LayerNorms are missing: each has a weight and a bias of size H; one after "
        "the embeddings, two in every layer and one in the MLM head's transform.",
        _count_without("embedding_norm", "layer_norms", "transform_norm"),
    ),
    Mistake(
        "each layer has two LayerNorms (after attention and after the feed-forward).",
        _count_one_norm_per_layer,
    ),
    Mistake(
        "each LayerNorm has a bias as well as a weight: 2H parameters.", _count_norms_without_bias
    ),
    Mistake(
        "a LayerNorm (2H) is missing: the one after the embeddings or the one in the MLM "
        "head's transform.",
        _count_without("embedding_norm"),
    ),
    Mistake(
        "the LayerNorms inside the layers are missing (4H per layer).",
        _count_without("layer_norms"),
    ),
    Mistake(
        "the biases of the Linear layers are missing (the decoder's bias of V included).",
        _count_without(*_ALL_BIASES),
    ),
    Mistake(
        "read the feed-forward width from config.intermediate_size; it is not always 4H.",
        _count_assuming_4h,
    ),
    Mistake(
        "the attention block has four H×H projections: query, key, value and the output dense.",
        _count_without(extra=lambda c: -c.num_hidden_layers * (c.hidden_size**2 + c.hidden_size)),
    ),
    Mistake(
        "the position and segment tables are missing: max_position_embeddings × H and "
        "type_vocab_size × H.",
        _count_without("position", "segment"),
    ),
    Mistake(
        "the segment (token type) table is missing: type_vocab_size × H.",
        _count_without("segment"),
    ),
    Mistake(
        "the feed-forward biases are missing: I after the widening, H after the projection back.",
        _count_without("ffn_biases"),
    ),
]


def check_parameter_count(fn: Callable) -> bool:
    """Grade `fn(config)` -> the number of parameters of `BertForPreTraining(config)`, an int.

    BertModel (with the pooler), the MLM head (transform dense + LayerNorm,
    a decoder tied to the word embeddings with its own bias) and the NSP
    classifier; a tied weight counts once.
    """
    return _run_cases(
        "check_parameter_count",
        fn,
        _parameter_count_cases(),
        _parameter_count_problem,
        _PARAMETER_COUNT_MISTAKES,
        "compare part by part: embeddings (V + P + S)·H + 2H; per layer 4H² + 4H (attention), "
        "2HI + I + H (feed-forward), 4H (two LayerNorms); pooler H² + H; MLM head H² + H + 2H "
        "+ V (the decoder weight is tied); NSP 2H + 2.",
    )
