"""Shared helpers: random batches with padding and segment ids, and transformers twins."""

from __future__ import annotations

import os

import pytest
import torch

from bertcourse import BertConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# A small model of uneven shape for the heads' tests: 3 heads of 16, a feed-forward that is
# not 4x hidden, three segment types. Ids up to 96.
HEADS_CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=70,
    type_vocab_size=3,
    max_position_embeddings=32,
)


def random_batch(
    vocab_size: int, type_vocab_size: int = 2, batch: int = 4, length: int = 13, seed: int = 0
):
    """input_ids, attention_mask, token_type_ids (transformers' order), rows of different lengths.

    Right padding: the rows get shorter down the batch.
    """
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    token_type_ids = torch.randint(0, type_vocab_size, (batch, length), generator=generator)
    lengths = torch.linspace(length, max(2, length // 3), batch).round().long()
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # pad id
    return input_ids, attention_mask, token_type_ids


def hf_bert_model(config, implementation: str):
    """A transformers.BertModel with our config and the given attention implementation."""
    import transformers

    return transformers.BertModel._from_config(config.to_hf(), attn_implementation=implementation)


def hf_twin(our_class, hf_class_name, config, implementation="eager", **hf_config_overrides):
    """A transformers model of the named class (eval mode) and our model with its weights."""
    import transformers

    hf_config = config.to_hf()
    for name, value in hf_config_overrides.items():
        setattr(hf_config, name, value)
    reference = (
        getattr(transformers, hf_class_name)
        ._from_config(hf_config, attn_implementation=implementation)
        .eval()
    )
    ours = our_class.from_hf(reference, attn_implementation=implementation)
    return ours, reference


def mlm_labels(input_ids, attention_mask, seed=0):
    """MLM labels: the token id at about 30% of the real positions (always (0, 1)), -100 elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.3) & attention_mask.bool()
    chosen[0, 1] = True
    return torch.where(chosen, input_ids, torch.full_like(input_ids, -100))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
