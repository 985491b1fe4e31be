"""inputs_embeds: the word embeddings given directly, as transformers' BertModel takes them."""

import pytest
import torch

from bertcourse import BertConfig, BertForSequenceClassification, BertModel

CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 97, (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    segments = torch.zeros_like(ids)
    segments[0, 6:] = 1
    return ids, mask, segments


@pytest.mark.parametrize("model_class", [BertModel, BertForSequenceClassification])
def test_inputs_embeds_equal_looking_up_the_ids(model_class):
    torch.manual_seed(0)
    model = model_class(CONFIG).eval()
    ids, mask, segments = _batch()
    encoder = model if model_class is BertModel else model.bert
    embeds = encoder.embeddings.word_embeddings(ids)
    with torch.no_grad():
        by_ids = model(ids, mask, segments)
        by_embeds = model(None, mask, segments, inputs_embeds=embeds)
    if model_class is BertModel:
        torch.testing.assert_close(by_embeds.last_hidden_state, by_ids.last_hidden_state)
        torch.testing.assert_close(by_embeds.pooler_output, by_ids.pooler_output)
    else:
        torch.testing.assert_close(by_embeds.logits, by_ids.logits)


def test_inputs_embeds_match_transformers():
    torch.manual_seed(1)
    model = BertModel(CONFIG).eval()
    reference = model.to_hf().eval()
    ids, mask, segments = _batch()
    embeds = torch.randn(3, 11, CONFIG.hidden_size)
    with torch.no_grad():
        ours = model(None, mask, segments, inputs_embeds=embeds).last_hidden_state
        theirs = reference(
            attention_mask=mask, token_type_ids=segments, inputs_embeds=embeds
        ).last_hidden_state
    real = mask.bool()
    assert (ours - theirs)[real].abs().max().item() < 1e-5


def test_exactly_one_of_ids_and_embeds():
    model = BertModel(CONFIG).eval()
    ids, mask, _ = _batch()
    with pytest.raises(ValueError, match="exactly one"):
        model(None, mask)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, mask, inputs_embeds=torch.zeros(3, 11, CONFIG.hidden_size))
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        model(None, mask, inputs_embeds=torch.zeros(3, 11, 5))
