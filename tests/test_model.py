"""BertModel against transformers.BertModel: same names, same numbers."""

import pytest
import torch
import transformers
from conftest import hf_bert_model, random_batch

from bertcourse import BertConfig, BertForSequenceClassification, BertModel

CONFIGS = {
    "tiny": BertConfig.from_name("tiny", vocab_size=300),
    # 3 heads of 32, feed-forward not 4x hidden, three segment types
    "odd": BertConfig(
        vocab_size=211,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=100,
        type_vocab_size=3,
        max_position_embeddings=40,
    ),
    "one-head": BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=7,
    ),
    "tanh-gelu": BertConfig.from_name(
        "mini", vocab_size=97, hidden_act="gelu_new", layer_norm_eps=1e-6, num_hidden_layers=2
    ),
}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_parity_with_transformers(name, implementation):
    config = CONFIGS[name].replace(attn_implementation=implementation)
    reference = hf_bert_model(config, implementation).eval()
    ours = BertModel.from_hf(reference)
    assert ours.config.attn_implementation == implementation
    input_ids, attention_mask, token_type_ids = random_batch(
        config.vocab_size, config.type_vocab_size, batch=4, length=17
    )
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids)
        expected = reference(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        )
    assert max_diff(got.last_hidden_state, expected.last_hidden_state) < 1e-5
    assert max_diff(got.pooler_output, expected.pooler_output) < 1e-5


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_positional_arguments_in_the_order_of_transformers(implementation):
    """model(input_ids, attention_mask, token_type_ids) means the same call in both libraries."""
    config = CONFIGS["odd"].replace(attn_implementation=implementation)
    reference = hf_bert_model(config, implementation).eval()
    ours = BertModel.from_hf(reference)
    # segment ids of 0 and 1, so that swapping them with the mask would still run
    input_ids, attention_mask, token_type_ids = random_batch(config.vocab_size, 2, seed=1)
    assert (attention_mask == 0).any() and (token_type_ids[attention_mask == 1] == 1).any()
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids)
        expected = reference(input_ids, attention_mask, token_type_ids)
        swapped = ours(input_ids, token_type_ids, attention_mask)
    assert max_diff(got.last_hidden_state, expected.last_hidden_state) < 1e-5
    assert max_diff(got.pooler_output, expected.pooler_output) < 1e-5
    # the test can tell: the mask and the segment ids swapped give other vectors
    assert max_diff(swapped.pooler_output, expected.pooler_output) > 1e-3


def test_options_are_keyword_only():
    model = BertModel(CONFIGS["one-head"]).eval()
    input_ids, attention_mask, token_type_ids = random_batch(50)
    with pytest.raises(TypeError):
        model(input_ids, attention_mask, token_type_ids, True)
    layer = model.encoder.layer[0]
    hidden_states = torch.randn(4, 13, 16)
    with pytest.raises(TypeError):
        layer(hidden_states, None, True)
    with pytest.raises(TypeError):
        layer.attention.self(hidden_states, None, True)


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_attention_probabilities_match(name):
    config = CONFIGS[name].replace(attn_implementation="eager")
    reference = hf_bert_model(config, "eager").eval()
    ours = BertModel.from_hf(reference)
    input_ids, attention_mask, token_type_ids = random_batch(
        config.vocab_size, config.type_vocab_size
    )
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, output_attentions=True)
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            output_attentions=True,
        )
    assert len(got.attentions) == config.num_hidden_layers
    for layer_got, layer_expected in zip(got.attentions, expected.attentions, strict=True):
        assert layer_got.shape == (4, config.num_attention_heads, 13, 13)
        assert max_diff(layer_got, layer_expected) < 1e-5


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_train_mode_without_dropout_matches_and_gradients_match(implementation):
    config = CONFIGS["odd"].replace(
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation=implementation,
    )
    reference = hf_bert_model(config, implementation).train()
    ours = BertModel.from_hf(reference).train()
    input_ids, attention_mask, token_type_ids = random_batch(
        config.vocab_size, config.type_vocab_size
    )
    got = ours(input_ids, attention_mask, token_type_ids)
    expected = reference(
        input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
    )
    assert max_diff(got.last_hidden_state, expected.last_hidden_state) < 1e-5
    # the same loss gives the same gradients, parameter by parameter
    weights = torch.randn_like(got.last_hidden_state)
    pooled_weights = torch.randn_like(got.pooler_output)
    (
        (got.last_hidden_state * weights).sum() + (got.pooler_output * pooled_weights).sum()
    ).backward()
    (
        (expected.last_hidden_state * weights).sum()
        + (expected.pooler_output * pooled_weights).sum()
    ).backward()
    reference_grads = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        assert parameter.grad is not None, name
        assert max_diff(parameter.grad, reference_grads[name].grad) < 1e-4, name


def test_dropout_is_active_in_train_mode_only():
    model = BertModel(CONFIGS["tiny"].replace(hidden_dropout_prob=0.3))
    input_ids, attention_mask, token_type_ids = random_batch(300)
    model.train()
    a = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    b = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    assert max_diff(a, b) > 1e-3
    model.eval()
    c = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    d = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    assert max_diff(c, d) == 0


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_padding_does_not_change_real_tokens(implementation):
    model = BertModel(CONFIGS["odd"].replace(attn_implementation=implementation)).eval()
    input_ids, attention_mask, token_type_ids = random_batch(211, 3, batch=3, length=12)
    with torch.no_grad():
        padded = model(input_ids, attention_mask, token_type_ids).last_hidden_state
        changed = input_ids.masked_fill(attention_mask == 0, 57)  # other tokens at padding
        changed_types = token_type_ids.masked_fill(attention_mask == 0, 2)
        again = model(changed, attention_mask, changed_types).last_hidden_state
        # and each sequence alone, unpadded, gives the same vectors
        for row in range(3):
            n = int(attention_mask[row].sum())
            alone = model(
                input_ids[row : row + 1, :n], token_type_ids=token_type_ids[row : row + 1, :n]
            )
            assert max_diff(alone.last_hidden_state[0], padded[row, :n]) < 1e-5
    real = attention_mask.bool()
    assert max_diff(padded[real], again[real]) < 1e-5


def test_state_dict_keys_and_strict_load_both_ways():
    config = CONFIGS["odd"]
    ours = BertModel(config)
    reference = hf_bert_model(config, "sdpa")
    assert list(ours.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(ours.state_dict(), strict=True)
    BertModel(config).load_state_dict(reference.state_dict(), strict=True)
    no_pooler = BertModel(config, add_pooling_layer=False)
    hf_no_pooler = transformers.BertModel(config.to_hf(), add_pooling_layer=False)
    assert list(no_pooler.state_dict()) == list(hf_no_pooler.state_dict())


def test_module_tree_names_match():
    config = CONFIGS["tiny"]
    ours = {name for name, _ in BertModel(config).named_modules()}
    reference = {name for name, _ in hf_bert_model(config, "eager").named_modules()}
    # transformers also registers its activation and dropout modules inside attention
    assert ours <= reference, ours - reference
    for name in [
        "embeddings.word_embeddings",
        "encoder.layer.1.attention.self.query",
        "encoder.layer.1.attention.output.LayerNorm",
        "encoder.layer.1.intermediate.dense",
        "encoder.layer.1.output.dense",
        "pooler.dense",
    ]:
        assert name in ours


def test_to_hf_round_trip_gives_same_outputs():
    config = CONFIGS["odd"]
    ours = BertModel(config).eval()
    reference = ours.to_hf().eval()
    assert isinstance(reference, transformers.BertModel)
    input_ids, attention_mask, token_type_ids = random_batch(
        config.vocab_size, config.type_vocab_size
    )
    with torch.no_grad():
        a = ours(input_ids, attention_mask, token_type_ids).last_hidden_state
        b = reference(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
    assert max_diff(a, b) < 1e-5
    back = BertModel.from_hf(reference)
    for (name, p), (name2, q) in zip(
        ours.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert name == name2 and torch.equal(p, q)


def test_bert_base_parameter_count():
    with torch.device("meta"):
        ours = BertModel(BertConfig.from_name("base"))
        reference = transformers.BertModel(BertConfig.from_name("base").to_hf())
    assert ours.num_parameters() == reference.num_parameters() == 109_482_240


def test_initialisation_follows_bert():
    config = BertConfig.from_name("mini", vocab_size=5000)
    model = BertModel(config)
    weight = model.encoder.layer[0].attention.self.query.weight
    assert abs(weight.std().item() - config.initializer_range) < 0.002
    assert model.encoder.layer[0].attention.self.query.bias.abs().max() == 0
    assert torch.all(model.embeddings.LayerNorm.weight == 1)
    assert model.embeddings.word_embeddings.weight[config.pad_token_id].abs().max() == 0


def test_set_attn_implementation_switches_every_layer():
    model = BertModel(CONFIGS["odd"].replace(attn_implementation="sdpa")).eval()
    input_ids, attention_mask, token_type_ids = random_batch(211, 3)
    with torch.no_grad():
        fused = model(input_ids, attention_mask, token_type_ids).last_hidden_state
        model.set_attn_implementation("eager")
        assert all(
            layer.attention.self.attn_implementation == "eager" for layer in model.encoder.layer
        )
        eager = model(input_ids, attention_mask, token_type_ids).last_hidden_state
    assert model.config.attn_implementation == "eager"
    assert max_diff(fused, eager) < 1e-5


def test_clear_input_errors():
    model = BertModel(CONFIGS["odd"])
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(torch.ones(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model(torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.zeros(2, 1, 5))
    with pytest.raises(TypeError, match="BertConfig.from_hf"):
        BertModel(transformers.BertConfig())


def test_encoder_of_finds_the_encoder_under_any_head():
    from bertcourse.model import encoder_of

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    encoder = BertModel(config)
    classifier = BertForSequenceClassification(config)
    assert encoder_of(encoder) is encoder
    assert encoder_of(classifier) is classifier.bert
    with pytest.raises(TypeError, match="task model with a `bert` encoder"):
        encoder_of(torch.nn.Linear(2, 2))
