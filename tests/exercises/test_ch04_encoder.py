"""Chapter 4: the encoder's checkers, their reference solutions and the bugs planted in them."""

from __future__ import annotations

import math

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed, check_gelu, check_layer_norm, check_parameter_count


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


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
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
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_not_a_function():
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_gelu(gelu(torch.ones(3)))
