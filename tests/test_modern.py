"""bertcourse.modern: each piece and the whole model against transformers' ModernBERT, the ladder
from BERT (rung 1 gives the course BERT's outputs) to ModernBERT, unpadding, saving and loading,
and the `pretrain --arch modern` and fine-tuning commands on a tiny corpus."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
import transformers
from conftest import mlm_labels, random_batch
from safetensors.torch import load_file
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
    sliding_window_bidirectional_overlay,
)
from transformers.models.modernbert import modeling_modernbert as reference

from bertcourse import (
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    CheckpointMismatchError,
    commands,
)
from bertcourse.config import ConfigError
from bertcourse.finetune import load_for_task
from bertcourse.modern import (
    LADDER,
    ModernBertAttention,
    ModernBertEmbeddings,
    ModernBertForMaskedLM,
    ModernBertForPreTraining,
    ModernBertForSequenceClassification,
    ModernBertMLP,
    ModernBertModel,
    ModernConfig,
    RotaryEmbedding,
    apply_rotary,
    glu_intermediate_size,
    ladder_config,
    layer_pattern,
    local_attention,
    rotate_half,
    sliding_window_mask,
)

TOLERANCE = 1e-5  # float32 parity

# Two small ModernBERT shapes of uneven sizes. The local window (8: 4 tokens each side) is much
# shorter than the batches (33 tokens), so the local layers really differ from the global ones.
# "biased" switches on every bias, another activation and other rotary bases.
HF_CONFIGS = {
    "plain": dict(hidden_size=36, num_hidden_layers=4, global_attn_every_n_layers=2),
    "biased": dict(
        hidden_size=48,
        num_hidden_layers=3,
        global_attn_every_n_layers=3,
        attention_bias=True,
        mlp_bias=True,
        norm_bias=True,
        classifier_bias=True,
        hidden_activation="gelu_pytorch_tanh",
        global_rope_theta=5_000.0,
        local_rope_theta=300.0,
    ),
}


def hf_config(name: str = "plain", **overrides) -> transformers.ModernBertConfig:
    """A small transformers.ModernBertConfig (ids of the special tokens inside the vocabulary)."""
    fields = dict(
        vocab_size=100,
        num_attention_heads=3,
        intermediate_size=70,
        local_attention=8,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    )
    fields.update(HF_CONFIGS[name])
    fields.update(overrides)
    return transformers.ModernBertConfig(**fields)


def hf_model(class_name: str, config: transformers.ModernBertConfig, implementation: str):
    """A randomly initialised transformers ModernBERT model (eval mode)."""
    model_class = getattr(transformers, class_name)
    return randomize(model_class._from_config(config, attn_implementation=implementation).eval())


def randomize(model: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Weights far from their small initial values (norm gains near 1), so attention is sharp
    and a wrong position, window or mask changes the outputs by much more than the tolerance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            is_gain = "norm" in name.lower() and name.endswith("weight")
            parameter.copy_(1 + 0.1 * noise if is_gain else std * noise)
    return model


def batch(length: int = 33, rows: int = 4, seed: int = 0):
    """input_ids, attention_mask: rows of decreasing length, the first one unpadded."""
    input_ids, attention_mask, _ = random_batch(100, batch=rows, length=length, seed=seed)
    assert attention_mask[0].all() and not attention_mask[-1].all()
    return input_ids, attention_mask


def assert_close_on_tokens(got, expected, attention_mask, tolerance=TOLERANCE):
    """Equal within `tolerance` at the real tokens; finite everywhere."""
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    real = attention_mask.bool()
    assert (got[real] - expected[real]).abs().max() < tolerance


# How transformers' ModernBertModel.forward builds each layer type's mask.
HF_MASKS = {
    "full_attention": create_bidirectional_mask,
    "sliding_attention": create_bidirectional_sliding_window_mask,
}


def small_config(**overrides) -> ModernConfig:
    """A ModernBERT-shaped ModernConfig: 3 layers (global, local, local), a window of 8."""
    fields = dict(
        vocab_size=100,
        hidden_size=48,
        num_attention_heads=3,
        num_hidden_layers=3,
        intermediate_size=70,
        local_attention=8,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    fields.update(overrides)
    return ModernConfig(**fields)


def same_weights(first: nn.Module, second: nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------
# 1. The whole model against transformers
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HF_CONFIGS))
@pytest.mark.parametrize("hf_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_model_and_masked_lm_equal_transformers_with_padding_padded_or_unpadded(
    name, hf_implementation, implementation
):
    config = hf_config(name)
    input_ids, attention_mask = batch()
    labels = mlm_labels(input_ids, attention_mask)
    hf_encoder = hf_model("ModernBertModel", config, hf_implementation)
    hf_mlm = hf_model("ModernBertForMaskedLM", config, hf_implementation)
    encoder = ModernBertModel.from_hf(hf_encoder, attn_implementation=implementation)
    mlm = ModernBertForMaskedLM.from_hf(hf_mlm, attn_implementation=implementation)
    assert encoder.config.layer_types == config.layer_types
    assert "sliding_attention" in encoder.config.layer_types
    assert encoder.config.local_attention == 8 and encoder.config.sliding_window == 4
    with torch.no_grad():
        expected = hf_encoder(input_ids=input_ids, attention_mask=attention_mask)
        expected_mlm = hf_mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        for unpad in (False, True):
            got = encoder(input_ids, attention_mask, unpad=unpad).last_hidden_state
            assert_close_on_tokens(got, expected.last_hidden_state, attention_mask)
        for unpad in (False, True):
            mlm.model.config.unpad = unpad  # the masked-LM forward follows the config
            got_mlm = mlm(input_ids, attention_mask, labels=labels)
            assert_close_on_tokens(got_mlm.logits, expected_mlm.logits, attention_mask)
            assert abs(got_mlm.loss - expected_mlm.loss) < TOLERANCE
            sparse = mlm(input_ids, attention_mask, labels=labels, masked_only=True)
            assert (sparse.logits - expected_mlm.logits[labels != -100]).abs().max() < TOLERANCE
            assert abs(sparse.loss - expected_mlm.loss) < TOLERANCE


@pytest.mark.parametrize("name", list(HF_CONFIGS))
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_model_and_masked_lm_equal_transformers_without_an_attention_mask(name, implementation):
    config = hf_config(name)
    input_ids, _ = batch(length=29, rows=2, seed=1)
    hf_encoder = hf_model("ModernBertModel", config, implementation)
    hf_mlm = hf_model("ModernBertForMaskedLM", config, implementation)
    encoder = ModernBertModel.from_hf(hf_encoder, attn_implementation=implementation)
    mlm = ModernBertForMaskedLM.from_hf(hf_mlm, attn_implementation=implementation)
    everywhere = torch.ones_like(input_ids)
    with torch.no_grad():
        for unpad in (False, True):
            assert_close_on_tokens(
                encoder(input_ids, unpad=unpad).last_hidden_state,
                hf_encoder(input_ids=input_ids).last_hidden_state,
                everywhere,
            )
        assert_close_on_tokens(
            mlm(input_ids).logits, hf_mlm(input_ids=input_ids).logits, everywhere
        )


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_sequence_classifier_equals_transformers_with_cls_or_mean_pooling(pooling, implementation):
    config = hf_config("biased", classifier_pooling=pooling, num_labels=3)
    reference_model = hf_model("ModernBertForSequenceClassification", config, implementation)
    ours = ModernBertForSequenceClassification.from_hf(
        reference_model, attn_implementation=implementation
    )
    assert ours.config.classifier_pooling == pooling and ours.num_labels == 3
    assert ours.newly_initialized_keys == []
    input_ids, attention_mask = batch()
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        got = ours(input_ids, attention_mask, labels=labels)
        expected = reference_model(
            input_ids=input_ids, attention_mask=attention_mask, labels=labels
        )
        assert (got.logits - expected.logits).abs().max() < TOLERANCE
        assert abs(got.loss - expected.loss) < TOLERANCE
        unmasked = ours(input_ids).logits
        assert (unmasked - reference_model(input_ids=input_ids).logits).abs().max() < TOLERANCE
    if pooling == "mean":  # padding changes the mean: the mask is really used
        assert (unmasked - got.logits).abs().max() > 1e-3


# ----------------------------------------------------------------------------
# 2. Each piece against the reference's own function or module
# ----------------------------------------------------------------------------


def test_rotate_half_and_apply_rotary_equal_transformers():
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 2, 3, 7, 12, generator=generator)  # (B, heads, T, d) each
    angles = torch.randn(2, 7, 6, generator=generator).repeat(1, 1, 2)  # one per pair (i, i + 6)
    cos, sin = angles.cos(), angles.sin()  # (B, T, d)
    assert torch.equal(rotate_half(query), reference.rotate_half(query))
    expected_query, expected_key = reference.apply_rotary_pos_emb(query, key, cos, sin)
    torch.testing.assert_close(apply_rotary(query, cos[:, None], sin[:, None]), expected_query)
    torch.testing.assert_close(apply_rotary(key, cos[:, None], sin[:, None]), expected_key)
    # In bfloat16 both rotate in float32 and round once: the same bits.
    low = query.bfloat16()
    rotated = apply_rotary(low, cos[:, None], sin[:, None])
    assert rotated.dtype == torch.bfloat16
    assert torch.equal(rotated, reference.apply_rotary_pos_emb(low, low, cos, sin)[0])
    # Rotating by angle 0 changes nothing; a rotation keeps each pair's length.
    zero = torch.zeros(12)
    assert torch.equal(apply_rotary(query, zero.cos(), zero.sin()), query)
    pair_lengths = query[..., :6] ** 2 + query[..., 6:] ** 2
    rotated = apply_rotary(query, cos[:, None], sin[:, None])
    torch.testing.assert_close(rotated[..., :6] ** 2 + rotated[..., 6:] ** 2, pair_lengths)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
@pytest.mark.parametrize("layer_type", ["full_attention", "sliding_attention"])
def test_rotary_cos_and_sin_equal_transformers_for_both_layer_types(name, layer_type):
    config = hf_config(name)
    ours = RotaryEmbedding(ModernConfig.from_hf(config))
    theirs = reference.ModernBertRotaryEmbedding(config)
    position_ids = torch.stack([torch.arange(40), torch.arange(40) * 3 + 5])  # (2, 40)
    cos, sin = ours(position_ids, layer_type)
    expected_cos, expected_sin = theirs(torch.zeros(1), position_ids, layer_type)
    assert cos.shape == (2, 40, config.hidden_size // 3)
    torch.testing.assert_close(cos, expected_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, expected_sin, rtol=0, atol=1e-6)


def test_rotary_bases_are_modernberts_by_default():
    config = ModernConfig()
    assert (config.global_rope_theta, config.local_rope_theta) == (160_000.0, 10_000.0)
    rotary = RotaryEmbedding(small_config())
    head_size = 16
    exponents = torch.arange(0, head_size, 2).float() / head_size
    torch.testing.assert_close(rotary.full_attention_inv_freq, 160_000.0**-exponents)
    torch.testing.assert_close(rotary.sliding_attention_inv_freq, 10_000.0**-exponents)
    assert not dict(rotary.named_parameters()) and not rotary.state_dict()  # buffers, not saved


@pytest.mark.parametrize("local_attention", [1, 2, 7, 8, 9, 128])
def test_sliding_window_mask_equals_transformers_overlay_on_every_pair(local_attention):
    length = 21
    reference_window = sliding_window_bidirectional_overlay(local_attention // 2)
    expected = torch.tensor(
        [[reference_window(0, 0, q, kv) for kv in range(length)] for q in range(length)]
    )
    allowed = sliding_window_mask(length, local_attention)
    assert allowed.dtype == torch.bool and torch.equal(allowed, expected)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_masks_allow_what_transformers_masks_allow(implementation):
    config = hf_config("plain")
    config._attn_implementation = implementation
    ours = ModernBertModel(ModernConfig.from_hf(config))
    input_ids, attention_mask = batch()
    embeddings = torch.zeros(*input_ids.shape, config.hidden_size)
    masks = ours.attention_masks(attention_mask, input_ids.shape[1], torch.float32, None)
    kwargs = dict(config=config, inputs_embeds=embeddings, attention_mask=attention_mask)
    for layer_type, build in HF_MASKS.items():
        expected = build(**kwargs)
        expected = expected if expected.dtype == torch.bool else expected == 0
        got = (masks[layer_type] == 0).expand(expected.shape)
        assert torch.equal(got, expected), layer_type
    # Without padding the global layers need no mask at all; the local ones still do.
    unpadded = ours.attention_masks(None, 33, torch.float32, None)
    assert unpadded["full_attention"] is None
    assert torch.equal(unpadded["sliding_attention"][0, 0] == 0, sliding_window_mask(33, 8))


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_mlp_equals_transformers_with_copied_weights(name):
    config = hf_config(name)
    theirs = reference.ModernBertMLP(config)
    ours = ModernBertMLP(ModernConfig.from_hf(config))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert ours.Wi.out_features == 2 * 70  # the GLU's value and gate halves
    hidden = torch.randn(2, 5, config.hidden_size)
    torch.testing.assert_close(ours(hidden), theirs(hidden), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_embeddings_equal_transformers_and_have_no_position_table(name):
    config = hf_config(name)
    theirs = reference.ModernBertEmbeddings(config).eval()
    ours = ModernBertEmbeddings(ModernConfig.from_hf(config)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not hasattr(ours, "position_embeddings") and not hasattr(ours, "token_type_embeddings")
    input_ids, _ = batch()
    positions = torch.arange(33).expand(4, 33)
    torch.testing.assert_close(ours(input_ids, positions), theirs(input_ids), rtol=0, atol=1e-6)


def layer_inputs(hf_encoder, encoder, layer_index: int):
    """The inputs each implementation gives layer `layer_index`: hidden states, masks, rotary."""
    input_ids, attention_mask = batch()
    layer_type = encoder.config.layer_types[layer_index]
    hidden = torch.randn(*input_ids.shape, encoder.config.hidden_size)
    kwargs = dict(config=hf_encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
    hf_mask = HF_MASKS[layer_type](**kwargs)
    mask = encoder.attention_masks(attention_mask, input_ids.shape[1], hidden.dtype, None)[
        layer_type
    ]
    positions = torch.arange(input_ids.shape[1])[None]
    hf_rotary = hf_encoder.rotary_emb(hidden, positions, layer_type)
    rotary = encoder.rotary_emb(positions.expand(input_ids.shape), layer_type)
    return hidden, attention_mask, (mask, rotary), (hf_mask, hf_rotary)


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_encoder_layer_equals_transformers_first_global_and_local(layer_index):
    config = hf_config("biased")  # layers: global, local, local
    hf_encoder = hf_model("ModernBertModel", config, "eager")
    encoder = ModernBertModel.from_hf(hf_encoder, attn_implementation="eager")
    hidden, attention_mask, (mask, rotary), (hf_mask, hf_rotary) = layer_inputs(
        hf_encoder, encoder, layer_index
    )
    layer, hf_layer = encoder.layers[layer_index], hf_encoder.layers[layer_index]
    # The first pre-LN layer has no attention norm: the embeddings end with one.
    assert isinstance(layer.attn_norm, nn.Identity) == (layer_index == 0)
    with torch.no_grad():
        got, _ = layer(hidden, mask, rotary)
        expected = hf_layer(hidden, attention_mask=hf_mask, position_embeddings=hf_rotary)
    assert_close_on_tokens(got, expected, attention_mask)


@pytest.mark.parametrize("layer_index", [0, 1])
def test_attention_output_and_weights_equal_transformers_global_and_local(layer_index):
    config = hf_config("plain")  # layers: global, local, global, local
    hf_encoder = hf_model("ModernBertModel", config, "eager")
    encoder = ModernBertModel.from_hf(hf_encoder, attn_implementation="eager")
    hidden, attention_mask, (mask, rotary), (hf_mask, hf_rotary) = layer_inputs(
        hf_encoder, encoder, layer_index
    )
    attention, hf_attention = encoder.layers[layer_index].attn, hf_encoder.layers[layer_index].attn
    assert isinstance(attention, ModernBertAttention)
    with torch.no_grad():
        got, probs = attention(hidden, mask, rotary)
        expected, expected_probs = hf_attention(
            hidden, position_embeddings=hf_rotary, attention_mask=hf_mask
        )
    assert_close_on_tokens(got, expected, attention_mask)
    real_queries = attention_mask.bool()
    from_real = probs.transpose(1, 2)[real_queries]  # (real tokens, heads, T)
    expected_from_real = expected_probs.transpose(1, 2)[real_queries]
    assert (from_real - expected_from_real).abs().max() < TOLERANCE
    # A real token puts no weight on padding, nor, on a local layer, beyond 4 tokens either side.
    assert from_real.shape[0] == int(attention_mask.sum())
    key_is_padding = attention_mask[:, None, :].expand(-1, 33, -1)[real_queries] == 0
    assert from_real.masked_select(key_is_padding[:, None, :]).abs().max() == 0
    if layer_index == 1:
        outside = ~sliding_window_mask(33, 8)[None].expand(4, -1, -1)[real_queries]
        assert from_real.masked_select(outside[:, None, :]).abs().max() == 0
    else:
        assert probs[0, :, 0, -1].min() > 0  # a global layer reaches the far end


@pytest.mark.parametrize("layer_index", [0, 1])
def test_fused_attention_equals_transformers_global_and_blockwise_local(layer_index):
    """sdpa: a local layer on a sequence longer than 4 half-windows attends block by block."""
    config = hf_config("plain")
    hf_encoder = hf_model("ModernBertModel", config, "sdpa")
    encoder = ModernBertModel.from_hf(hf_encoder, attn_implementation="sdpa")
    hidden, attention_mask, (mask, rotary), (hf_mask, hf_rotary) = layer_inputs(
        hf_encoder, encoder, layer_index
    )
    assert hidden.shape[1] > 4 * encoder.config.sliding_window
    with torch.no_grad():
        got, probs = encoder.layers[layer_index].attn(
            hidden, mask, rotary, key_mask=attention_mask.bool()
        )
        expected, _ = hf_encoder.layers[layer_index].attn(
            hidden, position_embeddings=hf_rotary, attention_mask=hf_mask
        )
    assert probs is None
    assert_close_on_tokens(got, expected, attention_mask)


@pytest.mark.parametrize(("half", "length"), [(1, 7), (2, 3), (4, 33), (5, 33), (4, 32)])
@pytest.mark.parametrize("padded", [False, True])
def test_blockwise_local_attention_equals_attention_with_the_window_mask(half, length, padded):
    generator = torch.Generator().manual_seed(half * 100 + length)
    query, key, value = torch.randn(3, 2, 3, length, 8, generator=generator)  # (B, heads, T, d)
    lengths = torch.tensor([length, max(1, length // 3)] if padded else [length, length])
    key_mask = torch.arange(length)[None] < lengths[:, None]  # (B, T)
    allowed = sliding_window_mask(length, 2 * half)[None, None] & key_mask[:, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=allowed
    )
    got = local_attention(query, key, value, half, key_mask if padded else None)
    assert got.shape == query.shape and torch.isfinite(got).all()
    real = key_mask[:, None, :, None].expand_as(got)
    assert (got[real] - expected[real]).abs().max() < TOLERANCE


# ----------------------------------------------------------------------------
# 3. Round trips: to_hf, save_pretrained, from_hf
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [ModernBertModel, ModernBertForMaskedLM])
def test_to_hf_gives_a_transformers_twin_with_the_same_outputs(model_class):
    ours = model_class(small_config(attn_implementation="eager", norm_bias=True)).eval()
    theirs = ours.to_hf().eval()
    assert type(theirs).__name__ == model_class.__name__
    assert theirs.config.layer_types == ours.config.layer_types
    assert theirs.config.sliding_window == 4
    input_ids, attention_mask = batch()
    with torch.no_grad():
        got = ours(input_ids, attention_mask)
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask)
    name = "last_hidden_state" if model_class is ModernBertModel else "logits"
    assert_close_on_tokens(getattr(got, name), getattr(expected, name), attention_mask)


def test_sequence_classifier_to_hf_keeps_its_labels_and_outputs():
    ours = ModernBertForSequenceClassification(
        small_config(classifier_pooling="mean"), num_labels=3, id2label={0: "a", 1: "b", 2: "c"}
    ).eval()
    theirs = ours.to_hf().eval()
    assert theirs.config.id2label == {0: "a", 1: "b", 2: "c"}
    input_ids, attention_mask = batch()
    with torch.no_grad():
        expected = theirs(input_ids=input_ids, attention_mask=attention_mask).logits
        assert (ours(input_ids, attention_mask).logits - expected).abs().max() < TOLERANCE


def test_save_pretrained_loads_in_transformers_and_back_identically(tmp_path):
    ours = ModernBertForMaskedLM(small_config()).eval()
    with torch.no_grad():  # a decoder bias that is not zero, so its round trip is tested
        ours.decoder.bias.normal_()
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "modernbert"
    assert saved["architectures"] == ["ModernBertForMaskedLM"]
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "ModernBertForMaskedLM"
    reloaded = ModernBertForMaskedLM.from_hf(tmp_path)
    assert reloaded.config == ours.config and same_weights(reloaded, ours)
    assert reloaded.decoder.weight is reloaded.model.embeddings.tok_embeddings.weight  # tied
    input_ids, attention_mask = batch()
    with torch.no_grad():
        got = ours(input_ids, attention_mask).logits
        assert_close_on_tokens(
            got, theirs(input_ids=input_ids, attention_mask=attention_mask).logits, attention_mask
        )
        assert torch.equal(reloaded(input_ids, attention_mask).logits, got)
        # The encoder alone loads from the masked-LM folder.
        encoder = ModernBertModel.from_hf(tmp_path)
        assert torch.equal(
            encoder(input_ids, attention_mask).last_hidden_state,
            ours.model(input_ids, attention_mask).last_hidden_state,
        )


@pytest.mark.parametrize(
    ("rung", "model_class"), [(1, ModernBertForPreTraining), (4, ModernBertForMaskedLM)]
)
def test_a_ladder_rung_saves_and_reloads_identically_but_has_no_transformers_twin(
    rung, model_class, tmp_path
):
    config = ladder_config(rung, "tiny", vocab_size=100, pad_token_id=0)
    assert not config.is_modernbert
    with pytest.raises(ConfigError, match="save_pretrained"):
        config.to_hf()
    ours = model_class(config).eval()
    with pytest.raises(ConfigError, match="save_pretrained"):
        ours.to_hf()
    ours.save_pretrained(tmp_path)
    reloaded = model_class.from_hf(tmp_path)
    assert reloaded.config == config and same_weights(reloaded, ours)
    assert reloaded.newly_initialized_keys == []
    input_ids, attention_mask, token_type_ids = random_batch(100, length=17)
    with torch.no_grad():
        got = reloaded(input_ids, attention_mask, token_type_ids=token_type_ids)
        expected = ours(input_ids, attention_mask, token_type_ids=token_type_ids)
    for name in ("logits", "prediction_logits", "seq_relationship_logits"):
        if hasattr(expected, name):
            assert torch.equal(getattr(got, name), getattr(expected, name))


def test_loading_the_wrong_kind_of_model_names_the_problem(tmp_path):
    with pytest.raises(TypeError, match="ModernConfig"):
        ModernBertModel(BertConfig(vocab_size=100, hidden_size=48, num_attention_heads=3))
    bert = BertModel(BertConfig(vocab_size=100, hidden_size=48, num_attention_heads=3))
    with pytest.raises(TypeError, match="transformers ModernBERT"):
        ModernBertModel.from_hf(bert.to_hf())
    bert.save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="from_bert"):
        ModernBertModel.from_hf(tmp_path)


# ----------------------------------------------------------------------------
# 4. The ladder: rung 1 is BERT, each rung changes only its own switches
# ----------------------------------------------------------------------------

BERT = BertConfig(
    vocab_size=100,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=70,
    max_position_embeddings=40,
)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("unpad", [False, True])
def test_rung_one_from_bert_pretraining_gives_berts_mlm_and_nsp_logits(implementation, unpad):
    bert = randomize(BertForPreTraining(BERT).eval())  # nonzero biases, sharp attention
    ours = ModernBertForPreTraining.from_bert(bert, attn_implementation=implementation, unpad=unpad)
    assert ours.config.norm_position == "post" and ours.config.type_vocab_size == 2
    input_ids, attention_mask, token_type_ids = random_batch(100, length=17)
    labels = mlm_labels(input_ids, attention_mask)
    targets = dict(labels=labels, next_sentence_label=torch.tensor([0, 1, 1, 0]))
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids=token_type_ids, **targets)
        expected = bert(input_ids, attention_mask, token_type_ids, **targets)
    assert_close_on_tokens(got.prediction_logits, expected.prediction_logits, attention_mask)
    assert (got.seq_relationship_logits - expected.seq_relationship_logits).abs().max() < TOLERANCE
    assert abs(got.loss - expected.loss) < TOLERANCE


def test_modern_model_from_bert_model_gives_the_same_hidden_states():
    bert = randomize(BertModel(BERT).eval())
    ours = ModernBertModel.from_bert(bert)
    input_ids, attention_mask, token_type_ids = random_batch(100, length=17)
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids=token_type_ids).last_hidden_state
        expected = bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        assert_close_on_tokens(got, expected, attention_mask)
        # Segments matter: the segment table was copied, not left at its initial values.
        other_segments = ours(
            input_ids, attention_mask, token_type_ids=1 - token_type_ids
        ).last_hidden_state
    assert (other_segments - got).abs().max() > 1e-3


# What each rung changes beyond the switches it names: pre-LN takes ModernBERT's norm epsilon,
# and the GLU block narrows so that its parameter count stays BERT's.
IMPLIED_CHANGES = {"pre_ln": {"norm_eps"}, "geglu": {"intermediate_size"}}


@pytest.mark.parametrize("rung", range(2, len(LADDER) + 1))
def test_each_rung_changes_only_the_switches_it_names(rung):
    before, after = ladder_config(rung - 1), ladder_config(rung)
    changed = {
        f.name
        for f in dataclasses.fields(ModernConfig)
        if getattr(before, f.name) != getattr(after, f.name)
    }
    step = LADDER[rung - 1]
    assert changed == set(step.config) | IMPLIED_CHANGES.get(step.name, set())
    assert ladder_config(step.name) == after  # by name or by number


def test_ladder_starts_at_bert_and_ends_at_modernbert():
    assert len(LADDER) == 7
    first, last = ladder_config(1, vocab_size=100, pad_token_id=0), ladder_config(7)
    assert first == ModernConfig.from_bert(BertConfig.from_name("tiny", vocab_size=100))
    assert first.describe() == "post-LN, absolute positions, plain FFN, biases, 0/2 layers local"
    assert last.describe() == (
        "pre-LN, rotary positions, glu FFN, no biases, 1/2 layers local (window 128), unpadded"
    )
    assert not any(ladder_config(k).is_modernbert for k in range(1, 5))
    assert all(ladder_config(k).is_modernbert for k in range(5, 8))
    assert last.layer_types == layer_pattern(2) == ["full_attention", "sliding_attention"]
    assert LADDER[0].training == {"nsp": True, "mlm_probability": 0.15}
    assert LADDER[2].training == {"nsp": False, "mlm_probability": 0.3}


@pytest.mark.parametrize("size", ["tiny", "mini", "small"])
def test_the_glu_rung_keeps_the_plain_feed_forward_parameter_count(size):
    plain = ModernBertMLP(ladder_config(3, size))
    glu = ModernBertMLP(ladder_config(4, size))
    assert plain.Wi.out_features == 4 * plain.Wi.in_features
    assert glu.Wi.out_features == 2 * glu_intermediate_size(glu.Wi.in_features)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert abs(count(glu) / count(plain) - 1) < 0.01


@pytest.mark.parametrize(
    ("rung", "size", "message"),
    [(0, "tiny", "Unknown rung 0"), (8, "tiny", "Unknown rung 8"), ("nsp", "tiny", "pre_ln"),
     (1, "huge", "Unknown model size 'huge'")],
)  # fmt: skip
def test_an_unknown_rung_or_size_is_refused(rung, size, message):
    with pytest.raises(ConfigError, match=message):
        ladder_config(rung, size)


# ----------------------------------------------------------------------------
# 5. Unpadding computes the same numbers
# ----------------------------------------------------------------------------

UNPAD_CONFIGS = {
    "modernbert": small_config(),
    "bert rung": ladder_config(
        1, "tiny", vocab_size=100, pad_token_id=0, hidden_size=48, num_attention_heads=3
    ),
}


def skewed_batch():
    """One long sentence and three short ones: most of the batch is padding."""
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([40, 6, 3, 2])
    attention_mask = (torch.arange(40)[None] < lengths[:, None]).long()
    input_ids = torch.randint(1, 100, (4, 40), generator=generator) * attention_mask
    token_type_ids = (torch.arange(40)[None] >= lengths[:, None] // 2).long() * attention_mask
    return input_ids, attention_mask, token_type_ids


@pytest.mark.parametrize("name", list(UNPAD_CONFIGS))
def test_unpadding_gives_the_same_hidden_states_and_zeros_at_padding(name):
    model = randomize(ModernBertModel(UNPAD_CONFIGS[name]).eval())
    input_ids, attention_mask, token_type_ids = skewed_batch()
    with torch.no_grad():
        padded = model(
            input_ids, attention_mask, token_type_ids=token_type_ids, unpad=False
        ).last_hidden_state
        unpadded = model(
            input_ids, attention_mask, token_type_ids=token_type_ids, unpad=True
        ).last_hidden_state
    assert_close_on_tokens(unpadded, padded, attention_mask)
    at_padding = unpadded[attention_mask == 0]  # (109, H)
    assert at_padding.shape[0] == 160 - 51 and torch.equal(at_padding, torch.zeros_like(at_padding))


@pytest.mark.parametrize("masked_only", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("name", list(UNPAD_CONFIGS))
def test_unpadding_gives_the_same_masked_lm_gradients(name, masked_only):
    """Sparse and dense prediction; dense with unpadding runs the head on real tokens only and
    fills padding rows with the logits of a zero vector, what the head gives there."""
    input_ids, attention_mask, token_type_ids = skewed_batch()
    labels = mlm_labels(input_ids, attention_mask)
    losses, gradients, logits = [], [], []
    for unpad in (False, True):
        torch.manual_seed(0)
        model = randomize(ModernBertForMaskedLM(UNPAD_CONFIGS[name].replace(unpad=unpad)))
        out = model(
            input_ids,
            attention_mask,
            token_type_ids=token_type_ids,
            labels=labels,
            masked_only=masked_only,
        )
        out.loss.backward()
        losses.append(out.loss.detach())
        logits.append(out.logits.detach())
        gradients.append({k: p.grad for k, p in model.named_parameters()})
    assert abs(losses[0] - losses[1]) < TOLERANCE
    if not masked_only:
        real = attention_mask.bool()
        assert logits[1].shape == logits[0].shape
        assert (logits[0][real] - logits[1][real]).abs().max() < TOLERANCE
        with torch.no_grad():  # padding rows: the head's output for a zero vector
            zero = model.predict(torch.zeros(1, model.config.hidden_size))
        assert torch.equal(logits[1][~real], zero.expand(int((~real).sum()), -1))
    assert gradients[0].keys() == gradients[1].keys()
    for key, gradient in gradients[0].items():
        assert gradient.abs().max() > 0 or "token_type" in key or "position" in key, key
        assert (gradient - gradients[1][key]).abs().max() < TOLERANCE, key


# ----------------------------------------------------------------------------
# 6. Config validation
# ----------------------------------------------------------------------------

BAD_FIELDS = [
    (dict(hidden_size=36, num_attention_heads=4), "head size \\(9\\) must be even"),
    (dict(hidden_size=50), "hidden_size \\(50\\) must be divisible by num_attention_heads"),
    (dict(layer_types=["full_attention"] * 2), "layer_types must list 3 entries"),
    (dict(layer_types=["full_attention", "local", "full_attention"]), "layer_types"),
    (dict(norm_position="middle"), "norm_position must be one of 'post', 'pre'"),
    (dict(position_embedding_type="relative"), "position_embedding_type must be one of"),
    (dict(mlp_type="swiglu"), "mlp_type must be one of"),
    (dict(hidden_activation="tanh"), "hidden_activation must be one of"),
    (dict(classifier_pooling="max"), "classifier_pooling must be one of 'cls', 'mean'"),
    (dict(attn_implementation="flash_attention_2"), "attn_implementation must be one of"),
    (dict(pad_token_id=100), "pad_token_id \\(100\\)"),
    (dict(attention_dropout=1.0), "attention_dropout is a probability"),
    (dict(type_vocab_size=-1), "type_vocab_size must be >= 0"),
    (dict(num_hidden_layers=0, layer_types=[]), "num_hidden_layers must be a positive integer"),
    (dict(local_attention=0), "local_attention must be a positive integer"),
    (dict(vocab_size=True), "vocab_size must be a positive integer"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_a_bad_config_value_is_refused_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**fields)


def test_an_odd_head_size_is_fine_with_absolute_positions():
    config = small_config(hidden_size=36, num_attention_heads=4, position_embedding_type="absolute")
    assert config.head_size == 9
    model = ModernBertModel(config).eval()
    assert model(torch.ones(1, 5, dtype=torch.long)).last_hidden_state.shape == (1, 5, 36)


def test_config_from_hf_and_back_keeps_every_field():
    config = hf_config("biased", classifier_pooling="mean")
    ours = ModernConfig.from_hf(config)
    assert ours.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert (ours.global_rope_theta, ours.local_rope_theta) == (5_000.0, 300.0)
    assert (ours.hidden_activation, ours.classifier_pooling) == ("gelu_pytorch_tanh", "mean")
    back = ours.to_hf()
    assert back.rope_parameters == config.rope_parameters
    for name in ("layer_types", "local_attention", "attention_bias", "norm_bias"):
        assert getattr(back, name) == getattr(config, name), name
    assert ModernConfig.from_hf(back) == ours


# ----------------------------------------------------------------------------
# 7. The commands: pretrain --arch modern, then fine-tuning from its checkpoint
# ----------------------------------------------------------------------------

SUBJECTS = ["The old farmer", "A young girl", "My brother", "The teacher", "Our neighbour",
            "The tired dog", "A small bird", "The captain", "Her grandmother", "The baker",
            "Every student", "The quiet musician"]  # fmt: skip
VERBS = ["carried", "painted", "found", "watched", "repaired", "sold", "borrowed", "cleaned",
         "opened", "described", "forgot", "noticed"]  # fmt: skip
OBJECTS = ["a wooden boat", "the red door", "an old map", "three green apples", "the broken clock",
           "a heavy basket", "the quiet garden", "a letter from home", "the bright lamp",
           "some fresh bread", "a pair of boots", "the last train ticket"]  # fmt: skip
ENDINGS = ["before the rain started", "near the river", "after dinner", "in the morning",
           "on a cold winter day", "while the children slept", "at the market",
           "under the tall trees", "without saying a word", "for the first time",
           "because nobody else could", "and then went home"]  # fmt: skip


def write_corpus(path: Path) -> Path:
    """About 200 varied sentences in 40 paragraphs (documents, separated by blank lines)."""
    rng = random.Random(0)
    paragraphs = [
        " ".join(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
            f"{rng.choice(ENDINGS)}."
            for _ in range(5)
        )
        for _ in range(40)
    ]
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def pretrain_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "--arch", "modern", "--corpus", str(corpus), "--out", str(out),
        "--steps", "4", "--seq-len", "32", "--batch-size", "8", "--vocab", "train:200",
        "--eval-examples", "16", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def modern_run(corpus, tmp_path_factory) -> Path:
    """A 4-step ModernBERT run (rung 7) with a local window shorter than its sequences."""
    out = tmp_path_factory.mktemp("modern") / "run"
    assert commands.main(pretrain_argv(corpus, out, "--rung", "7", "--local-attention", "8")) == 0
    return out


def test_pretrain_rung_seven_exports_a_modernbert_that_transformers_loads(modern_run):
    final = modern_run / "final"
    saved = json.loads((final / "config.json").read_text())
    assert saved["model_type"] == "modernbert"
    assert saved["architectures"] == ["ModernBertForMaskedLM"]
    assert saved["local_attention"] == 8 and saved["unpad"] is True
    ours = ModernBertForMaskedLM.from_hf(final)
    assert ours.config == ladder_config(
        7, "tiny", vocab_size=ours.config.vocab_size, pad_token_id=0, local_attention=8
    )
    # The export holds the trained weights of the last checkpoint, not a fresh initialisation.
    trained = load_file(modern_run / "checkpoint-4" / "model.safetensors")
    embeddings = ours.model.embeddings.tok_embeddings.weight
    assert torch.equal(embeddings, trained["model.embeddings.tok_embeddings.weight"])
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(final).eval()
    input_ids, attention_mask = batch()
    input_ids = input_ids % ours.config.vocab_size
    with torch.no_grad():
        assert_close_on_tokens(
            ours(input_ids, attention_mask).logits,
            theirs(input_ids=input_ids, attention_mask=attention_mask).logits,
            attention_mask,
        )


def test_pretrain_rung_one_with_nsp_exports_bert_layers_with_both_heads(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert commands.main(pretrain_argv(corpus, out, "--rung", "1", "--nsp")) == 0
    assert "ModernBertForPreTraining (tiny, rung 1: post-LN" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "eval_nsp_accuracy" in rows[-1]
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["model_type"] == "modernbert" and saved["norm_position"] == "post"
    assert saved["type_vocab_size"] == 2
    model = ModernBertForPreTraining.from_hf(out / "final")
    assert model.newly_initialized_keys == []  # the NSP head was saved too
    assert ModernBertForMaskedLM.from_hf(out / "final").config == model.config


def test_pretrain_rung_without_arch_modern_is_refused_before_any_work(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = pretrain_argv(corpus, out, "--rung", "3")
    argv.remove("--arch"), argv.remove("modern")
    with pytest.raises(SystemExit) as stopped:
        commands.main(argv)
    assert stopped.value.code == 2
    assert "--rung needs --arch modern" in capsys.readouterr().err
    assert not out.exists()


def test_pretrain_an_unknown_rung_is_refused_listing_the_rungs(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        commands.main(pretrain_argv(corpus, out, "--rung", "9"))
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--rung: '9' is not a rung: use 1-7 or one of" in error
    assert all(rung.name in error for rung in LADDER)
    assert not out.exists()


def test_load_for_task_gives_a_modern_classifier_with_a_new_head_only(modern_run):
    final = str(modern_run / "final")
    model, tokenizer = load_for_task(BertForSequenceClassification, final, num_labels=3)
    assert isinstance(model, ModernBertForSequenceClassification) and model.training
    assert sorted(model.newly_initialized_keys) == ["classifier.bias", "classifier.weight"]
    assert model.num_labels == 3 and model.classifier.out_features == 3
    pretrained = ModernBertForMaskedLM.from_hf(final)
    assert same_weights(model.model, pretrained.model) and same_weights(model.head, pretrained.head)
    assert len(tokenizer) == model.config.vocab_size
    twin, _ = load_for_task(BertForSequenceClassification, "random:" + final, num_labels=3)
    assert type(twin) is ModernBertForSequenceClassification and twin.config == model.config
    assert twin.classifier.out_features == 3
    assert not torch.equal(
        twin.model.embeddings.tok_embeddings.weight, model.model.embeddings.tok_embeddings.weight
    )
    with pytest.raises(ValueError, match="sequence classification only"):
        load_for_task(BertForTokenClassification, final, num_labels=3)
