"""Chapter 4: the encoder's checkers, their reference solutions and the bugs planted in them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from planted import PlantedBugs

from bertcourse.exercises import (
    ExerciseFailed,
    check_gelu,
    check_gelu_derivative,
    check_layer_norm,
    check_parameter_count,
)


def layer_norm_in_input_dtype(x, weight, bias, eps):
    """The chapter's formula, computed in whatever dtype x has."""
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(variance + eps) + bias


def layer_norm(x, weight, bias, eps):
    wide = torch.promote_types(x.dtype, torch.float32)
    output = layer_norm_in_input_dtype(x.to(wide), weight.to(wide), bias.to(wide), eps)
    return output.to(x.dtype)


def layer_norm_by_torch(x, weight, bias, eps):
    """Another correct answer: torch's own kernel on the widened input."""
    wide = torch.promote_types(x.dtype, torch.float32)
    hidden = (x.shape[-1],)
    return F.layer_norm(x.to(wide), hidden, weight.to(wide), bias.to(wide), eps).to(x.dtype)


def layer_norm_returns_float32(x, weight, bias, eps):
    wide = torch.promote_types(x.dtype, torch.float32)
    return layer_norm_in_input_dtype(x.to(wide), weight.to(wide), bias.to(wide), eps)


def layer_norm_always_float32(x, weight, bias, eps):
    output = layer_norm_in_input_dtype(x.float(), weight.float(), bias.float(), eps)
    return output.to(x.dtype)


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


def normal_pdf(x):
    return torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def gelu_derivative(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * normal_pdf(x)


def slope_cdf_only(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def slope_pdf_term_only(x):
    return x * normal_pdf(x)


def slope_of_tanh_approximation(x):
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    inner_slope = math.sqrt(2.0 / math.pi) * (1 + 3 * 0.044715 * x**2)
    tanh = torch.tanh(inner)
    return 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh**2) * inner_slope


def slope_unnormalised_density(x):
    return slope_cdf_only(x) + x * torch.exp(-0.5 * x**2)


def slope_wrong_exponent(x):
    return slope_cdf_only(x) + x * torch.exp(-(x**2)) / math.sqrt(2 * math.pi)


def slope_of_relu(x):
    return (x > 0).to(x.dtype)


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
    heads=True,
    tied=True,
    decoder_bias=True,
    nsp=True,
    transform=True,
):
    """BertForPreTraining's parameters: BertModel, the MLM head and the NSP classifier."""
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = intermediate(config) if intermediate else config.intermediate_size
    tables = vocab + config.max_position_embeddings
    embeddings = (tables + (config.type_vocab_size if segments else 0)) * hidden
    embeddings += 2 * hidden if norms else 0
    attention_block = projections * hidden * hidden + (projections * hidden if biases else 0)
    feed_forward = 2 * hidden * inter + ((inter + hidden) if biases else 0)
    layer_norms = norms_per_layer * 2 * hidden if norms else 0
    pooler_count = (hidden * hidden + (hidden if biases else 0)) if pooler else 0
    encoder = embeddings + layers * (attention_block + feed_forward + layer_norms) + pooler_count
    if not heads:
        return encoder
    mlm = 0
    if transform:
        mlm += hidden * hidden + (hidden if biases else 0) + (2 * hidden if norms else 0)
    mlm += vocab if decoder_bias and biases else 0
    mlm += 0 if tied else vocab * hidden
    nsp_count = (2 * hidden + (2 if biases else 0)) if nsp else 0
    return encoder + mlm + nsp_count


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


def count_bert_model_only(config):
    return count_parameters(config, heads=False)


def count_untied_decoder(config):
    return count_parameters(config, tied=False)


def count_without_decoder_bias(config):
    return count_parameters(config, decoder_bias=False)


def count_without_nsp(config):
    return count_parameters(config, nsp=False)


def count_without_transform(config):
    return count_parameters(config, transform=False)


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_layer_norm: (
        layer_norm,
        [
            (layer_norm_in_input_dtype, "float16"),
            (layer_norm_returns_float32, "input's dtype"),
            (layer_norm_always_float32, "stays float64"),
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
            (count_bert_model_only, "BertModel's count"),
            (count_untied_decoder, "tied"),
            (count_without_decoder_bias, "its own bias"),
            (count_without_nsp, "NSP classifier"),
            (count_without_transform, "transform"),
        ],
    ),
    check_gelu_derivative: (
        gelu_derivative,
        [
            (slope_cdf_only, "product rule"),
            (slope_pdf_term_only, "also gives the term"),
            (slope_of_tanh_approximation, "tanh approximation"),
            (slope_unnormalised_density, "1/√(2π)"),
            (slope_wrong_exponent, "-x²/2"),
            (slope_of_relu, "ReLU"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_layer_norm_accepts_torch_on_the_widened_input(capsys):
    assert check_layer_norm(layer_norm_by_torch) is True
    assert capsys.readouterr().out.strip() == "✓ check_layer_norm: all 9 cases passed"


def test_parameter_count_is_bert_for_pretraining():
    """The checker's reference is BertForPreTraining: BERT-base as released, 110,106,428."""
    from bertcourse import BertConfig
    from bertcourse.exercises.ch04_encoder import _model_parameter_count

    assert _model_parameter_count(BertConfig.from_name("base")) == 110_106_428
    assert count_parameters(BertConfig.from_name("base")) == 110_106_428
    assert count_bert_model_only(BertConfig.from_name("base")) == 109_482_240


def test_not_a_function():
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_gelu(gelu(torch.ones(3)))
