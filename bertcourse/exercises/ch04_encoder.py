"""Chapter 4, the encoder: the parameter count, LayerNorm, GELU."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..config import BertConfig
from ..model import BertModel
from ._grading import (
    Case,
    Mistake,
    Problem,
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
]


def _layer_norm_case(g: torch.Generator, description: str, x: torch.Tensor, eps: float) -> Case:
    """A case with a random weight and bias around 1 and 0, and torch's LayerNorm as the answer."""
    hidden = x.shape[-1]
    weight = 1 + 0.5 * _random(g, hidden, dtype=x.dtype)
    bias = 0.5 * _random(g, hidden, dtype=x.dtype)
    expected = F.layer_norm(x, (hidden,), weight, bias, eps)
    return Case(description, (x, weight, bias, eps), expected)


def _layer_norm_cases() -> list[Case]:
    """Large means, a constant vector, a large eps, 1-D and float64 inputs."""
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
) -> torch.Tensor:
    """LayerNorm written out, or one of its classic mistakes."""
    mean = x.mean(dim=dim, keepdim=True)
    if one_pass:
        variance = (x * x).mean(dim=dim, keepdim=True) - mean**2
    else:
        variance = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    centered = x - mean if center else x
    if eps_inside:
        normalised = centered / torch.sqrt(variance + eps)
    else:
        normalised = centered / (torch.sqrt(variance) + eps)
    if not affine:
        return normalised
    return normalised * bias + weight if swap else normalised * weight + bias


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
        "normalise over the last dimension (dim=-1), the features of one token, with keepdim=True.",
        _layer_norm,
        dim=0,
    ),
]


def check_layer_norm(fn: Callable) -> bool:
    """Grade `fn(x, weight, bias, eps)`: LayerNorm over the last dimension, as `torch.nn.LayerNorm`.

    Biased variance (divide by H), eps inside the square root, weight and
    bias per feature.
    """
    nan_hint = "NaN for a constant vector: its variance is 0; add eps inside the square root."
    return _run_cases(
        "check_layer_norm",
        fn,
        _layer_norm_cases(),
        _tensor_comparison("output", nan_hint=nan_hint),
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


def _parameter_parts(config: BertConfig) -> dict[str, int]:
    """Parameters of BertModel(config), part by part (with the pooler)."""
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
        "pooler": hidden * hidden + hidden,
    }


def _model_parameter_count(config: BertConfig) -> int:
    return _count_model_parameters(json.dumps(config.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _count_model_parameters(config_json: str) -> int:
    """Built once per config (keyed by its JSON): BERT-base takes a moment even on meta."""
    with torch.device("meta"):  # shapes only, no memory
        return BertModel(BertConfig(**json.loads(config_json))).num_parameters()


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
    """The count with LayerNorms that have a weight but no bias."""
    return _count_without()(config) - config.hidden_size * (1 + 2 * config.num_hidden_layers)


_PARAMETER_COUNT_MISTAKES = [
    Mistake(
        "the pooler is missing: dense H×H + bias H on the [CLS] vector.", _count_without("pooler")
    ),
    Mistake(
        "the LayerNorms are missing: each has a weight and a bias of size H; one after "
        "the embeddings and two in every layer.",
        _count_without("embedding_norm", "layer_norms"),
    ),
    Mistake(
        "each layer has two LayerNorms (after attention and after the feed-forward).",
        _count_one_norm_per_layer,
    ),
    Mistake(
        "each LayerNorm has a bias as well as a weight: 2H parameters.", _count_norms_without_bias
    ),
    Mistake(
        "the LayerNorm after the embeddings is missing (2H).", _count_without("embedding_norm")
    ),
    Mistake(
        "the LayerNorms inside the layers are missing (4H per layer).",
        _count_without("layer_norms"),
    ),
    Mistake(
        "the biases of the Linear layers are missing.",
        _count_without("attention_biases", "ffn_biases", extra=lambda c: -c.hidden_size),
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
    """Grade `fn(config)` -> the number of parameters of `BertModel(config)` (with the pooler), an int."""
    return _run_cases(
        "check_parameter_count",
        fn,
        _parameter_count_cases(),
        _parameter_count_problem,
        _PARAMETER_COUNT_MISTAKES,
        "compare part by part: embeddings (V + P + S)·H + 2H; per layer 4H² + 4H (attention), "
        "2HI + I + H (feed-forward), 4H (two LayerNorms); pooler H² + H.",
    )
