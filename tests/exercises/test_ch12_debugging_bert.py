"""Debugging BERT: the broken models break where the checker says, and the checkers grade fairly."""

from __future__ import annotations

import pytest
import torch
from conftest import HEADS_CONFIG, hf_twin, mlm_labels, random_batch
from planted import PlantedBugs

from bertcourse import BertForMaskedLM
from bertcourse.exercises import ExerciseFailed, check_post_ln_layer
from bertcourse.exercises.ch12_debugging_bert import (
    _SIGNATURES,
    _TRUTH,
    BROKEN_MODELS,
    DIAGNOSES,
    _layer_variant,
    broken_model,
    grade_diagnosis,
    with_layer_function,
)
from bertcourse.parity import compare_modules, first_divergence

CONFIG = HEADS_CONFIG


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return hf_twin(BertForMaskedLM, "BertForMaskedLM", CONFIG)[1]


def padded_batch(seed=0):
    input_ids, attention_mask, token_type_ids = random_batch(
        CONFIG.vocab_size, CONFIG.type_vocab_size, seed=seed
    )
    labels = mlm_labels(input_ids, attention_mask, seed=seed)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
    }


def without_padding(batch):
    return {name: tensor[:1] for name, tensor in batch.items()}  # the first row is full length


def test_the_answer_key_is_consistent():
    assert set(_TRUTH) == set(BROKEN_MODELS) == {"A", "B", "C", "D"}
    assert set(_SIGNATURES) == set(DIAGNOSES)
    assert len({key for _, key in _TRUTH.values()}) == 4  # four different bugs
    assert all(key in DIAGNOSES for _, key in _TRUTH.values())


# ----------------------------------------------------------------------------
# The broken models
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BROKEN_MODELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_first_divergence_is_the_answer_key(reference, name, seed):
    model = broken_model(name, reference)
    report = compare_modules(model, reference, **padded_batch(seed))
    first = report.first_divergence()
    expected_module, _ = _TRUTH[name]
    assert first is not None and first.name.removeprefix("bert.") == expected_module, report.table()
    grade_diagnosis(name, (first.name, _TRUTH[name][1]))


def test_the_clues_each_diagnosis_relies_on(reference):
    batch = padded_batch()
    models = {name: broken_model(name, reference) for name in BROKEN_MODELS}
    # A: the mask. Without padding nothing differs.
    assert first_divergence(models["A"], reference, **without_padding(batch)) is None
    # C: the scale. It differs without padding too, and its attention rows still sum to 1.
    assert first_divergence(models["C"], reference, **without_padding(batch)) is not None
    with torch.no_grad():
        probs = models["C"](batch["input_ids"], batch["attention_mask"], output_attentions=True)
    rows = probs.attentions[0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    # B: pre-LN. A LayerNorm first, and the order of the modules changed.
    report = compare_modules(models["B"], reference, **batch)
    assert report.reordered is not None and "LayerNorm" in report.reordered[0]
    # D: the labels. Only the loss differs, and it is the loss of the shifted labels.
    report = compare_modules(models["D"], reference, **batch)
    assert [row.name for row in report if row.differs()] == ["loss"]
    with torch.no_grad():
        output = models["D"](**batch)
    vocab = output.logits.shape[-1]
    shifted = torch.nn.functional.cross_entropy(
        output.logits[:, :-1].reshape(-1, vocab), batch["labels"][:, 1:].reshape(-1)
    )
    assert torch.allclose(output.loss, shifted)


def test_broken_models_keep_the_weights_and_are_new_objects(reference):
    model = broken_model("B", reference)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not model.training
    assert broken_model("B", reference) is not model
    with pytest.raises(ValueError, match="choose one of A, B, C, D"):
        broken_model("E", reference)


@pytest.mark.parametrize("name", BROKEN_MODELS)
def test_a_broken_copy_of_our_own_model_leaves_it_intact(reference, name):
    ours = BertForMaskedLM.from_hf(reference).train()
    copied = broken_model(name, ours)
    assert copied is not ours and not copied.training and ours.training
    assert first_divergence(ours, reference, **padded_batch()) is None  # still correct
    assert first_divergence(copied, reference, **padded_batch()) is not None
    assert copied.cls.predictions.decoder.weight is copied.bert.embeddings.word_embeddings.weight
    assert copied.bert.embeddings.word_embeddings.weight is not (
        ours.bert.embeddings.word_embeddings.weight
    )


def test_the_minilm_models_of_the_chapter_break_where_the_key_says():
    transformers = pytest.importorskip("transformers")
    from bertcourse.hf import minilm_path

    torch.manual_seed(0)
    reference = transformers.BertForMaskedLM.from_pretrained(minilm_path()).eval()
    input_ids = torch.tensor([[101, 7592, 2088, 1012, 102, 0], [101, 2023, 2003, 103, 2936, 102]])
    attention_mask = (input_ids != 0).long()
    labels = torch.full_like(input_ids, -100)
    labels[1, 3] = 2460
    for name in BROKEN_MODELS:
        first = first_divergence(
            broken_model(name, reference), reference, input_ids, attention_mask, labels=labels
        )
        assert first.name == ("bert." + _TRUTH[name][0]).replace("bert.loss", "loss"), name


# ----------------------------------------------------------------------------
# grade_diagnosis
# ----------------------------------------------------------------------------


def rejection(model, answer, capsys) -> str:
    with pytest.raises(ExerciseFailed) as failure:
        grade_diagnosis(model, answer)
    message = failure.value.message
    assert message.startswith(f"✗ grade_diagnosis: model {model}")
    assert "HINT: " in message and len(message.splitlines()) <= 4, message
    assert "✓" not in capsys.readouterr().out
    return message


@pytest.mark.parametrize("model", BROKEN_MODELS)
def test_right_diagnoses_pass_in_every_form(model, capsys):
    module, key = _TRUTH[model]
    assert grade_diagnosis(model, (module, key)) is True
    assert capsys.readouterr().out.strip() == f"✓ grade_diagnosis: model {model}: {DIAGNOSES[key]}"
    prefixed = module if module == "loss" else f"bert.{module}"
    assert grade_diagnosis(model, lambda: (prefixed, key))
    assert grade_diagnosis(model, [prefixed, key])


def test_a_module_difference_counts_as_its_name(reference):
    first = first_divergence(broken_model("A", reference), reference, **padded_batch())
    assert grade_diagnosis("A", (first, "mask"))


@pytest.mark.parametrize("model", BROKEN_MODELS)
def test_every_wrong_diagnosis_is_rejected_with_its_signature(model, capsys):
    module, key = _TRUTH[model]
    for wrong in DIAGNOSES:
        if wrong == key:
            continue
        message = rejection(model, (module, wrong), capsys)
        assert f"not '{wrong}'" in message
        assert _SIGNATURES[wrong] in message
        assert f"Test that on model {model}" in message
        assert DIAGNOSES[key] not in message  # the hint does not give the answer away


def test_a_wrong_module_is_rejected_with_a_way_to_find_it(capsys):
    message = rejection("A", ("bert.encoder.layer.0.output", "mask"), capsys)
    assert "is not the first module" in message and "first_divergence(model_a" in message
    message = rejection("B", ("bert.encoder.layer.0.attention.self.query", "pre-ln"), capsys)
    assert "order" in message
    message = rejection("D", ("bert.encoder.layer.5.output", "labels"), capsys)
    assert "whole model's outputs" in message
    message = rejection("C", (None, "scale"), capsys)
    assert "does differ" in message


def test_malformed_answers(capsys):
    assert "one of the keys of DIAGNOSES" in rejection("A", ("x", "the mask"), capsys)
    assert "expected a pair" in rejection("A", "mask", capsys)
    assert "expected a pair" in rejection("A", ("x", "mask", "y"), capsys)
    with pytest.raises(ExerciseFailed, match="no broken model 'E'"):
        grade_diagnosis("E", ("x", "mask"))


def test_a_stub_and_a_failing_function(capsys):
    def diagnose_model_a():
        """The student edition's stub."""
        # YOUR CODE HERE
        raise NotImplementedError

    with pytest.raises(ExerciseFailed) as failure:
        grade_diagnosis("A", diagnose_model_a)
    assert failure.value.message.startswith("Not implemented yet: replace the `raise")
    assert "diagnose_model_a" in failure.value.message

    def broken_diagnosis():
        return {}["missing"]

    message = rejection("A", broken_diagnosis, capsys)
    assert "broken_diagnosis raised KeyError" in message


# ----------------------------------------------------------------------------
# The repair: check_post_ln_layer and with_layer_function
# ----------------------------------------------------------------------------


def post_ln_layer(layer, hidden_states, attention_mask=None):
    context, _ = layer.attention.self(hidden_states, attention_mask)
    attended = layer.attention.output.LayerNorm(
        layer.attention.output.dense(context) + hidden_states
    )
    return layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)


def _variant(**switches):
    def variant(layer, hidden_states, attention_mask=None):
        return _layer_variant(layer, hidden_states, attention_mask, **switches)

    return variant


def layer_pre_ln(layer, hidden_states, attention_mask=None):
    return _variant(pre_ln=True)(layer, hidden_states, attention_mask)


def layer_without_attention_residual(layer, hidden_states, attention_mask=None):
    return _variant(attention_residual=False)(layer, hidden_states, attention_mask)


def layer_norm_before_residual(layer, hidden_states, attention_mask=None):
    return _variant(norm_after_residual=False)(layer, hidden_states, attention_mask)


def layer_ffn_residual_from_input(layer, hidden_states, attention_mask=None):
    return _variant(ffn_residual_from_input=True)(layer, hidden_states, attention_mask)


def layer_without_mask(layer, hidden_states, attention_mask=None):
    return post_ln_layer(layer, hidden_states, None)


def layer_returning_a_tuple(layer, hidden_states, attention_mask=None):
    return post_ln_layer(layer, hidden_states, attention_mask), None


PLANTED = {
    check_post_ln_layer: (
        post_ln_layer,
        [
            (layer_pre_ln, "still the pre-LN layer"),
            (layer_without_attention_residual, "needs its residual"),
            (layer_norm_before_residual, "after the residual sum"),
            (layer_ffn_residual_from_input, "attention block's output"),
            (layer_without_mask, "attention_mask"),
            (layer_returning_a_tuple, "tensor"),
        ],
    )
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_the_repaired_model_agrees_with_the_reference(reference):
    batch = padded_batch()
    broken = broken_model("B", reference)
    repaired = with_layer_function(broken, post_ln_layer)
    report = compare_modules(repaired, reference, **batch)
    assert report.first_divergence() is None, report.table()
    # The copy is repaired, not the original; a wrong repair still shows.
    assert first_divergence(broken, reference, **batch) is not None
    assert first_divergence(with_layer_function(broken, layer_pre_ln), reference, **batch)
    with pytest.raises(ValueError, match="attention probabilities"):
        repaired(batch["input_ids"], batch["attention_mask"], output_attentions=True)
