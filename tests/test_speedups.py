"""bertcourse.speedups: faster to run, the same numbers.

A cheaper dropout mask on a CPU, and skipping padding in the encoder's dense
layers, checked against torch's statistics and against `transformers`.
"""

import math

import pytest
import torch
from conftest import HEADS_CONFIG, hf_bert_model, hf_twin, mlm_labels, random_batch

from bertcourse import BertConfig, BertModel, MultiHeadSelfAttention
from bertcourse.attention import additive_mask
from bertcourse.model import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bertcourse.speedups import Dropout, Packing, dropout, keep_mask, padding_is_ignored

CONFIG = HEADS_CONFIG


def padding_mask(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """(B, 1, 1, T) bool, True at real tokens; every row keeps at least one key."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    return (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def close(a, b):
    return max_diff(a, b) < 1e-5


def twin(our_class, hf_class_name, implementation="eager", **kwargs):
    return hf_twin(our_class, hf_class_name, CONFIG, implementation, **kwargs)


# ----------------------------------------------------------------------------
# A cheaper dropout mask
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_each_element_with_probability_one_minus_p(p):
    n = 400_000
    out = dropout(torch.ones(n), p)
    kept = out != 0
    # Binomial(n, 1 - p): 5 standard deviations either side.
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    # no pattern between neighbours (the two halves of one 64-bit draw)
    pairs = kept.view(-1, 2).float()
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / (n / 2))


def test_dropout_is_seeded_differentiable_and_the_identity_in_eval():
    x = torch.randn(7, 33, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.3))  # torch's generator decides
    grad = torch.randn_like(first)
    first.backward(grad)
    mask = (first / x).detach()  # 0 or 1 / (1 - p)
    torch.testing.assert_close(x.grad, grad * mask)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.3).eval()
    assert module(x) is x and isinstance(module, torch.nn.Dropout)
    # odd sizes, other float types (half precision through torch's own kernel)
    assert dropout(torch.ones(5, 3, dtype=torch.float64), 0.5).dtype == torch.float64
    kept = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.1)
    assert kept.dtype == torch.bfloat16 and set(kept.unique().tolist()) <= {0.0, kept.max().item()}
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        dropout(x, 1.0)


def test_training_attention_on_cpu_uses_the_course_dropout():
    config = BertConfig(
        hidden_size=24,
        num_attention_heads=3,
        attention_probs_dropout_prob=0.4,
        attn_implementation="sdpa",
    )
    attention = MultiHeadSelfAttention(config).train()
    hidden_states = torch.randn(2, 9, 24)
    mask = additive_mask(padding_mask(2, 9), torch.float32)  # (B, 1, 1, T)
    torch.manual_seed(5)
    got, _ = attention(hidden_states, mask)
    torch.manual_seed(5)
    q, k, v = (
        attention.split_heads(f(hidden_states))
        for f in (attention.query, attention.key, attention.value)
    )
    probs = (q @ k.transpose(-2, -1) / math.sqrt(8) + mask).softmax(-1)
    probs = probs * keep_mask(probs.shape, 0.4, probs.dtype)
    torch.testing.assert_close(got, attention.merge_heads(probs @ v))


# ----------------------------------------------------------------------------
# Skipping padding: the same vectors for the real tokens, the same training
# ----------------------------------------------------------------------------


def test_packing_round_trip():
    attention_mask = padding_mask(4, 6, seed=2)[:, 0, 0, :].long()  # (B, T)
    packing = Packing(attention_mask)
    x = torch.randn(4, 6, 5)
    packed = packing.pack(x)
    assert packed.shape == (int(attention_mask.sum()), 5)
    assert torch.equal(packed, x[attention_mask.bool()])  # row by row, in order
    back = packing.unpack(packed)
    assert torch.equal(back, x * attention_mask[..., None])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_skip_padding_gives_real_tokens_the_reference_vectors(implementation):
    config = CONFIG.replace(attn_implementation=implementation)
    reference = hf_bert_model(config, implementation).eval()
    ours = BertModel.from_hf(reference).eval()
    input_ids, attention_mask, token_type_ids = random_batch(
        config.vocab_size, config.type_vocab_size
    )
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, skip_padding=True)
        expected = reference(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        )
    real = attention_mask.bool()
    assert max_diff(got.last_hidden_state[real], expected.last_hidden_state[real]) < 1e-5
    assert (got.last_hidden_state[~real] == 0).all()  # padding is not computed
    assert max_diff(got.pooler_output, expected.pooler_output) < 1e-5


SKIPPING_HEADS = {
    "sequence": (BertForSequenceClassification, "BertForSequenceClassification", {}),
    "token": (BertForTokenClassification, "BertForTokenClassification", {}),
    "pretraining": (BertForPreTraining, "BertForPreTraining", {"masked_only": True}),
}


@pytest.mark.parametrize("head", list(SKIPPING_HEADS))
def test_skipping_padding_trains_like_transformers(head, monkeypatch):
    import bertcourse.model

    our_class, hf_class_name, extra = SKIPPING_HEADS[head]
    # train mode with dropout off, so that both compute the same function
    ours, reference = twin(
        our_class,
        hf_class_name,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    ours.train()
    reference.train()
    assert ours.config.hidden_dropout_prob == ours.config.attention_probs_dropout_prob == 0.0
    packings = []

    class Spy(bertcourse.model.Packing):
        def __init__(self, attention_mask):
            super().__init__(attention_mask)
            packings.append(self)

    monkeypatch.setattr(bertcourse.model, "Packing", Spy)  # the name BertModel.forward uses
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    if head == "sequence":
        labels = {"labels": torch.tensor([0, 2, 1, 2])}
    elif head == "token":
        labels = {
            "labels": torch.randint(0, 3, input_ids.shape).masked_fill(attention_mask == 0, -100)
        }
    else:
        labels = {
            "labels": mlm_labels(input_ids, attention_mask),
            "next_sentence_label": torch.tensor([0, 1, 0, 1]),
        }
    got = ours(input_ids, attention_mask, token_type_ids, **labels, **extra)
    expected = reference(
        input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, **labels
    )
    assert len(packings) == 1  # the padding was skipped
    assert close(got.loss, expected.loss)
    got.loss.backward()
    expected.loss.backward()
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        if name.startswith("cls.predictions.decoder"):
            continue  # tied: the reference lists the shared tensor under this name too
        assert (parameter.grad - reference_parameters[name].grad).abs().max() < 1e-5, name


def test_padding_is_skipped_only_when_nothing_reads_it():
    _, attention_mask, _ = random_batch(97, 3)
    labels = torch.randint(0, 3, attention_mask.shape).masked_fill(attention_mask == 0, -100)
    assert padding_is_ignored(attention_mask, False, labels, reads_cls=True)
    assert not padding_is_ignored(None, False)  # no mask: nothing to skip
    assert not padding_is_ignored(attention_mask, True)  # attention maps show every row
    labelled_padding = torch.randint(0, 3, attention_mask.shape)
    assert not padding_is_ignored(attention_mask, False, labelled_padding)
    left_padded = attention_mask.flip(1)  # [CLS] of the short rows at a padding position
    assert not padding_is_ignored(left_padded, False, reads_cls=True)
    assert padding_is_ignored(left_padded, False)
    # question answering never skips: its softmax runs over every position, padding included
    ours, _ = twin(BertForQuestionAnswering, "BertForQuestionAnswering")
    input_ids, _, token_type_ids = random_batch(97, 3)
    with torch.no_grad():
        out = ours.train()(input_ids, attention_mask, token_type_ids)
    assert (out.start_logits[attention_mask == 0] != 0).all()


def test_imports_point_down():
    """attention.py and model.py import from speedups, and speedups needs only torch."""
    import ast
    from pathlib import Path

    import bertcourse.speedups

    tree = ast.parse(Path(bertcourse.speedups.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert all(name.split(".")[0] in ("__future__", "math", "torch") for name in imported), imported
