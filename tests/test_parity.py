"""The parity tool: a correct model agrees everywhere; a planted change is named where it starts."""

from __future__ import annotations

import math
import types

import pytest
import torch
from conftest import HEADS_CONFIG, hf_twin, mlm_labels, random_batch
from torch import nn

from bertcourse import BertConfig, BertForMaskedLM, BertModel, MultiHeadSelfAttention
from bertcourse.parity import (
    ModuleDifference,
    ParityReport,
    compare_modules,
    first_divergence,
)

SMALL_CONFIGS = {
    "2 layers, 3 heads": HEADS_CONFIG,
    "1 layer, 1 head": HEADS_CONFIG.replace(num_hidden_layers=1, num_attention_heads=1),
    "3 layers, 4 heads": HEADS_CONFIG.replace(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=40
    ),
}


def twins(config=HEADS_CONFIG, implementation="eager"):
    return hf_twin(BertModel, "BertModel", config, implementation)


def mlm_twins(config=HEADS_CONFIG, implementation="eager"):
    return hf_twin(BertForMaskedLM, "BertForMaskedLM", config, implementation)


def batch(config=HEADS_CONFIG, seed=0):
    return random_batch(config.vocab_size, config.type_vocab_size, seed=seed)


def unpadded(config=HEADS_CONFIG, seed=0):
    input_ids, attention_mask, token_type_ids = batch(config, seed)
    return input_ids[:1], attention_mask[:1], token_type_ids[:1]


def test_batch_has_padding():
    _, attention_mask, _ = batch()
    assert not bool(attention_mask.all()) and bool(attention_mask[0].all())


# ----------------------------------------------------------------------------
# A correct model: every output agrees
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("config", SMALL_CONFIGS.values(), ids=SMALL_CONFIGS.keys())
def test_correct_model_agrees_everywhere(config, implementation):
    ours, reference = twins(config, implementation)
    for seed in range(2):
        report = compare_modules(ours, reference, *batch(config, seed))
        assert report.first_divergence() is None, report.table()
        assert all(row.max_abs < 1e-5 for row in report), report.table()
        assert report.reordered is None


def test_rows_name_every_module_in_execution_order():
    ours, reference = twins()
    report = compare_modules(ours, reference, *batch())
    names = report.names
    for name in [
        "embeddings.word_embeddings",
        "embeddings.LayerNorm",
        "embeddings",
        "encoder.layer.0.attention.self.query",
        "encoder.layer.0.attention.self",
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.1.output",
        "encoder",
        "pooler",
    ]:
        assert name in names, name
    # A hook fires when a forward returns: the parts of a block before the block.
    assert names.index("encoder.layer.0.attention.self.query") < names.index(
        "encoder.layer.0.attention.self"
    )
    assert names.index("embeddings") < names.index("encoder.layer.0.attention.self.query")
    assert names.index("encoder.layer.0") < names.index("encoder.layer.1.attention.self.key")
    # The whole model's outputs come last, by field.
    assert names[-2:] == ["last_hidden_state", "pooler_output"]
    # transformers wraps the activation in a module; ours calls a function.
    assert "encoder.layer.0.intermediate.intermediate_act_fn" in report.only_reference
    assert report.only_ours == []


def test_real_and_padded_columns():
    ours, reference = twins()
    report = compare_modules(ours, reference, *batch())
    for name in ["embeddings", "encoder.layer.1.output", "last_hidden_state"]:
        row = report[name]
        assert row.real == 0.0 and row.padded == 0.0, row
        assert row.shape[:2] == tuple(batch()[0].shape)
    pooled = report["pooler_output"]
    assert pooled.real is None and pooled.padded is None  # (B, H): not per token
    # Without a mask there is nothing to split; without padding, no padded column.
    input_ids, _, token_type_ids = batch()
    no_mask = compare_modules(ours, reference, input_ids, token_type_ids=token_type_ids)
    assert no_mask["embeddings"].real is None and no_mask["embeddings"].padded is None
    no_padding = compare_modules(ours, reference, *unpadded())
    assert no_padding["embeddings"].real == 0.0 and no_padding["embeddings"].padded is None


def test_keyword_inputs_and_masked_lm_outputs():
    ours, reference = mlm_twins()
    input_ids, attention_mask, token_type_ids = batch()
    labels = mlm_labels(input_ids, attention_mask)
    report = compare_modules(
        ours,
        reference,
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        labels=labels,
    )
    assert report.first_divergence() is None, report.table()
    assert report.names[-2:] == ["loss", "logits"]
    assert report["loss"].shape == () and report["loss"].real is None
    assert report["logits"].padded == 0.0
    assert "bert.encoder.layer.0.attention.self" in report.names
    assert report["loss"].scale > 1.0  # the loss itself, what rtol scales


def test_minilm_agrees_with_transformers():
    transformers = pytest.importorskip("transformers")
    from bertcourse.hf import minilm_path

    reference = transformers.BertModel.from_pretrained(minilm_path()).eval()
    ours = BertModel.from_hf(reference)
    input_ids, attention_mask, token_type_ids = batch(BertConfig(vocab_size=30522))
    report = compare_modules(ours, reference, input_ids, attention_mask, token_type_ids)
    assert report.first_divergence() is None, report.table()
    assert len(report) > 6 * 14


# ----------------------------------------------------------------------------
# Planted changes: the first divergence names the module where they start
# ----------------------------------------------------------------------------


PERTURBED = [
    "embeddings.token_type_embeddings",
    "embeddings.LayerNorm",
    "encoder.layer.0.attention.self.value",
    "encoder.layer.0.attention.output.dense",
    "encoder.layer.1.attention.self.query",
    "encoder.layer.1.intermediate.dense",
    "encoder.layer.1.output.LayerNorm",
    "pooler.dense",
]


@pytest.mark.parametrize("name", PERTURBED)
def test_a_changed_weight_is_named(name):
    ours, reference = twins()
    with torch.no_grad():  # random, not constant: a LayerNorm would remove a constant shift
        weight = ours.get_submodule(name).weight
        weight.add_(0.05 * torch.randn_like(weight))
    report = compare_modules(ours, reference, *batch())
    first = report.first_divergence()
    assert first is not None and first.name == name, report.table()
    names = report.names
    assert all(row.max_abs == 0.0 for row in report.rows[: names.index(name)])
    assert report["pooler_output"].differs()


def test_a_change_below_tolerance_is_not_a_divergence():
    ours, reference = twins()
    with torch.no_grad():
        ours.encoder.layer[0].output.dense.bias.add_(1e-7)
    report = compare_modules(ours, reference, *batch())
    assert report.first_divergence() is None
    assert report.first_divergence(atol=0.0, rtol=0.0).name == "encoder.layer.0.output.dense"
    assert first_divergence(ours, reference, *batch(), atol=0.0, rtol=0.0).name == (
        "encoder.layer.0.output.dense"
    )


def _without_mask(self, hidden_states, attention_mask=None, **options):
    return MultiHeadSelfAttention.forward(self, hidden_states, None, **options)


def test_an_ignored_mask_shows_with_padding_only():
    ours, reference = twins()
    for layer in ours.encoder.layer:
        layer.attention.self.forward = types.MethodType(_without_mask, layer.attention.self)
    report = compare_modules(ours, reference, *batch())
    first = report.first_divergence()
    assert first.name == "encoder.layer.0.attention.self", report.table()
    assert first.real > 1e-3 and first.padded > 1e-3  # real tokens attend to padding too
    assert first_divergence(ours, reference, *unpadded()) is None


def test_a_difference_at_padding_only():
    ours, reference = twins()
    with torch.no_grad():  # the pad token's embedding (id 0): used at padded positions only
        ours.embeddings.word_embeddings.weight[0] += 0.5
    report = compare_modules(ours, reference, *batch())
    first = report.first_divergence()
    assert first.name == "embeddings.word_embeddings"
    assert first.real == 0.0 and first.padded == pytest.approx(0.5)
    # Masked keys: the real tokens never see it, all the way up.
    assert report["last_hidden_state"].real < 1e-6 < report["last_hidden_state"].padded


def _pre_ln_layer(self, hidden_states, attention_mask=None, **options):
    context, probs = self.attention.self(
        self.attention.output.LayerNorm(hidden_states), attention_mask, **options
    )
    hidden_states = hidden_states + self.attention.output.dense(context)
    normalized = self.output.LayerNorm(hidden_states)
    return hidden_states + self.output.dense(self.intermediate(normalized)), probs


def test_a_change_of_order_is_reported():
    ours, reference = twins()
    for layer in ours.encoder.layer:
        layer.forward = types.MethodType(_pre_ln_layer, layer)
    report = compare_modules(ours, reference, *batch())
    assert report.first_divergence().name == "encoder.layer.0.attention.output.LayerNorm"
    assert report.reordered == (
        "encoder.layer.0.attention.output.LayerNorm",
        "encoder.layer.0.attention.self.query",
    )
    assert "encoder.layer.0.attention.output" in report.only_reference  # never called
    text = report.table()
    assert "execution order differs" in text and "ran only in the reference" in text


def _shifted_labels(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None):
    shifted = torch.full_like(labels, -100)
    shifted[:, 1:] = labels[:, :-1]
    return BertForMaskedLM.forward(self, input_ids, attention_mask, token_type_ids, labels=shifted)


def test_a_changed_loss_is_the_only_row():
    ours, reference = mlm_twins()
    ours.forward = types.MethodType(_shifted_labels, ours)
    input_ids, attention_mask, token_type_ids = batch()
    labels = mlm_labels(input_ids, attention_mask)
    report = compare_modules(ours, reference, input_ids, attention_mask, labels=labels)
    first = report.first_divergence()
    assert first.name == "loss", report.table()
    assert [row.name for row in report if row.max_abs > 0] == ["loss"]


def test_a_module_called_twice_gets_a_row_per_call():
    class Twice(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.inner = nn.Linear(3, 3)
            self.scale = scale

        def forward(self, x):
            return self.inner(self.inner(x) * self.scale)

    torch.manual_seed(0)
    ours = Twice(1.0)
    reference = Twice(2.0)
    reference.load_state_dict(ours.state_dict())
    report = compare_modules(ours, reference, torch.randn(2, 3))
    assert report.names == ["inner", "inner (call 2)", "(output)"]
    assert report["inner"].max_abs == 0.0
    assert report.first_divergence().name == "inner (call 2)"


# ----------------------------------------------------------------------------
# The comparison itself
# ----------------------------------------------------------------------------


class Returns(nn.Module):
    """A model whose only output is the given tensor."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, *args, **kwargs):
        return self.value


def compare_values(ours, reference) -> ModuleDifference:
    (row,) = compare_modules(Returns(ours), Returns(reference)).rows
    return row


def test_shapes_that_differ_are_infinitely_far_apart():
    row = compare_values(torch.zeros(2, 3), torch.zeros(3, 2))
    assert math.isinf(row.max_abs) and "shapes differ" in row.note and row.differs()
    # A leading dimension of 1 (broadcast over the batch) holds the same numbers.
    assert compare_values(torch.ones(4, 5), torch.ones(1, 4, 5)).max_abs == 0.0


def test_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    assert compare_values(torch.tensor([1.0, nan, inf]), torch.tensor([1.0, nan, inf])).max_abs == 0
    assert math.isinf(compare_values(torch.tensor([1.0, nan]), torch.tensor([1.0, 2.0])).max_abs)
    assert math.isinf(compare_values(torch.tensor([inf]), torch.tensor([1.0])).max_abs)
    assert compare_values(torch.tensor([inf]), torch.tensor([1.0])).differs()


def test_tolerance_is_absolute_plus_relative_to_the_output_size():
    row = compare_values(torch.tensor([1000.0, 0.0]), torch.tensor([1000.005, 0.0]))
    assert row.scale == pytest.approx(1000.005)
    assert not row.differs()  # 5e-3 <= 1e-5 + 1e-5 * 1000
    assert row.differs(rtol=0.0)
    assert compare_values(torch.tensor([0.0]), torch.tensor([2e-5])).differs()
    assert not compare_values(torch.tensor([0.0]), torch.tensor([2e-5])).differs(atol=1e-4)


def test_integer_outputs_and_dataclass_fields():
    assert compare_values(torch.tensor([1, 2]), torch.tensor([1, 5])).max_abs == 3.0
    report = compare_modules(
        Returns({"a": torch.ones(2), "b": None, "c": torch.zeros(1)}),
        Returns({"a": torch.ones(2), "c": torch.ones(1), "d": torch.ones(1)}),
    )
    assert report.names == ["a", "c"]  # the fields both outputs have
    assert report.first_divergence().name == "c"


def test_modes_are_restored_and_hooks_removed():
    ours, reference = twins()
    ours.train()
    compare_modules(ours, reference, *batch())
    assert ours.training and not reference.training
    for model in (ours, reference):
        assert all(not module._forward_hooks for module in model.modules())
    # A model that raises leaves no hook behind either.
    with pytest.raises(IndexError):
        compare_modules(ours, reference, torch.full((1, 3), 10_000))
    assert all(not module._forward_hooks for module in ours.modules())
    assert ours.training


def test_dropout_is_off_during_the_comparison():
    config = HEADS_CONFIG.replace(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    ours, reference = twins(config)
    ours.train()
    reference.train()
    assert compare_modules(ours, reference, *batch(config)).first_divergence() is None


def test_table_marks_the_first_divergence_and_filters_rows():
    ours, reference = twins()
    clean = compare_modules(ours, reference, *batch())
    assert f"all {len(clean)} outputs agree" in clean.table()
    assert "✗" not in str(clean)
    with torch.no_grad():
        ours.encoder.layer[1].intermediate.dense.bias.add_(0.1)
    report = compare_modules(ours, reference, *batch())
    text = report.table(r"layer\.1\.intermediate")
    lines = text.splitlines()
    assert lines[0].split() == ["module", "max", "|diff|", "real", "padding"]
    assert lines[1].startswith("encoder.layer.1.intermediate.dense") and "← first" in lines[1]
    assert lines[2].startswith("encoder.layer.1.intermediate ") and lines[2].endswith("✗")
    assert "first difference beyond tolerance: encoder.layer.1.intermediate.dense" in text
    with pytest.raises(KeyError, match="no row named"):
        report["encoder.layer.7"]


def test_report_is_a_plain_container():
    report = ParityReport([ModuleDifference("a", (1,), 0.0), ModuleDifference("b", (1,), 1.0)])
    assert len(report) == 2 and [row.name for row in report] == ["a", "b"]
    assert report.first_divergence().name == "b" and report["a"].max_abs == 0.0
