"""Shared helpers: random batches with padding and segment ids, and transformers twins."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def random_batch(
    vocab_size: int, type_vocab_size: int = 2, batch: int = 4, length: int = 13, seed: int = 0
):
    """input_ids, token_type_ids, attention_mask with rows of different lengths (right padding)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    token_type_ids = torch.randint(0, type_vocab_size, (batch, length), generator=generator)
    lengths = torch.linspace(length, max(2, length // 3), batch).round().long()
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # pad id
    return input_ids, token_type_ids, attention_mask


def hf_bert_model(config, implementation: str):
    """A transformers.BertModel with our config and the given attention implementation."""
    import transformers

    return transformers.BertModel._from_config(config.to_hf(), attn_implementation=implementation)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
