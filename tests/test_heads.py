"""Task heads against their transformers twins: same names, same logits, same losses."""

import pytest
import torch
import transformers
from conftest import HEADS_CONFIG, hf_twin, mlm_labels, random_batch

from bertcourse import minilm_path
from bertcourse.model import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

CONFIG = HEADS_CONFIG


def twin(our_class, hf_class_name, implementation="eager", **kwargs):
    """A transformers model and our model with its weights."""
    return hf_twin(our_class, hf_class_name, CONFIG, implementation, **kwargs)


def close(a, b):
    return (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_masked_lm_parity(implementation):
    ours, reference = twin(BertForMaskedLM, "BertForMaskedLM", implementation)
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    labels = mlm_labels(input_ids, attention_mask)
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, labels=labels)
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=labels,
        )
    assert close(got.logits, expected.logits) and close(got.loss, expected.loss)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_pretraining_parity(implementation):
    ours, reference = twin(BertForPreTraining, "BertForPreTraining", implementation)
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    labels = mlm_labels(input_ids, attention_mask)
    next_sentence_label = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        got = ours(
            input_ids,
            attention_mask,
            token_type_ids,
            labels=labels,
            next_sentence_label=next_sentence_label,
        )
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=labels,
            next_sentence_label=next_sentence_label,
        )
    assert close(got.prediction_logits, expected.prediction_logits)
    assert close(got.seq_relationship_logits, expected.seq_relationship_logits)
    assert close(got.loss, expected.loss)
    assert close(got.mlm_loss + got.nsp_loss, got.loss)


def test_sparse_prediction_gives_the_same_loss_and_gradients():
    # dropout off, so that the two passes compute the same network
    no_dropout = CONFIG.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(no_dropout).train()
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    labels = mlm_labels(input_ids, attention_mask)
    nsp = torch.tensor([0, 1, 0, 1])
    dense = model(input_ids, attention_mask, token_type_ids, labels=labels, next_sentence_label=nsp)
    dense.loss.backward()
    dense_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sparse = model(
        input_ids,
        attention_mask,
        token_type_ids,
        labels=labels,
        next_sentence_label=nsp,
        masked_only=True,
    )
    sparse.loss.backward()
    assert sparse.prediction_logits.shape == (int((labels != -100).sum()), 97)
    assert close(sparse.loss, dense.loss)
    assert close(sparse.prediction_logits, dense.prediction_logits[labels != -100])
    for name, parameter in model.named_parameters():
        assert (parameter.grad - dense_grads[name]).abs().max() < 1e-5, name
    with pytest.raises(ValueError, match="needs labels"):
        model(input_ids, masked_only=True)


@pytest.mark.parametrize("model_class", [BertForMaskedLM, BertForPreTraining])
def test_decoder_is_tied_to_the_word_embeddings(model_class, tmp_path):
    model = model_class(CONFIG)
    predictions = model.cls.predictions
    assert predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    model = model.to(torch.float64)
    assert predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    again = model_class.from_hf(tmp_path)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    names = [n for n, _ in model.named_parameters()]
    assert "cls.predictions.decoder.weight" not in names  # counted once


@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_parity(num_labels):
    ours, reference = twin(
        BertForSequenceClassification, "BertForSequenceClassification", num_labels=num_labels
    )
    assert ours.num_labels == num_labels
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    labels = torch.tensor([0.3, -1.2, 2.0, 0.0]) if num_labels == 1 else torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, labels=labels)
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=labels,
        )
    assert got.logits.shape == (4, num_labels)
    assert close(got.logits, expected.logits) and close(got.loss, expected.loss)


def test_token_classification_parity_with_ignored_labels():
    ours, reference = twin(BertForTokenClassification, "BertForTokenClassification", num_labels=5)
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    labels = torch.randint(0, 5, input_ids.shape).masked_fill(attention_mask == 0, -100)
    labels[:, 0] = -100
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, labels=labels)
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            labels=labels,
        )
    assert close(got.logits, expected.logits) and close(got.loss, expected.loss)


def test_question_answering_parity_with_out_of_range_positions():
    ours, reference = twin(BertForQuestionAnswering, "BertForQuestionAnswering")
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    start = torch.tensor([1, 3, 0, 40])  # 40 > length: truncated away, ignored
    end = torch.tensor([2, 5, 0, 41])
    with torch.no_grad():
        got = ours(
            input_ids, attention_mask, token_type_ids, start_positions=start, end_positions=end
        )
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            start_positions=start,
            end_positions=end,
        )
    assert close(got.start_logits, expected.start_logits)
    assert close(got.end_logits, expected.end_logits)
    assert close(got.loss, expected.loss)


@pytest.mark.parametrize(
    ("our_class", "hf_class_name"),
    [
        (BertForMaskedLM, "BertForMaskedLM"),
        (BertForPreTraining, "BertForPreTraining"),
        (BertForSequenceClassification, "BertForSequenceClassification"),
        (BertForTokenClassification, "BertForTokenClassification"),
        (BertForQuestionAnswering, "BertForQuestionAnswering"),
    ],
)
def test_state_dict_keys_in_the_same_order_and_to_hf(our_class, hf_class_name):
    ours = our_class(CONFIG).eval()
    reference = getattr(transformers, hf_class_name)(CONFIG.to_hf())
    assert list(ours.state_dict()) == list(reference.state_dict())
    back = ours.to_hf().eval()
    assert type(back).__name__ == hf_class_name
    input_ids, attention_mask, token_type_ids = random_batch(97, 3)
    with torch.no_grad():
        a = ours(input_ids, attention_mask, token_type_ids)
        b = back(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    first = lambda out: next(v for v in vars(out).values() if isinstance(v, torch.Tensor))  # noqa: E731
    assert close(first(a), b[0] if not hasattr(b, "logits") else b.logits)


HEAD_TWINS = {
    "masked-lm": (BertForMaskedLM, "BertForMaskedLM", ["logits"]),
    "pretraining": (
        BertForPreTraining,
        "BertForPreTraining",
        ["prediction_logits", "seq_relationship_logits"],
    ),
    "sequence": (BertForSequenceClassification, "BertForSequenceClassification", ["logits"]),
    "token": (BertForTokenClassification, "BertForTokenClassification", ["logits"]),
    "question-answering": (
        BertForQuestionAnswering,
        "BertForQuestionAnswering",
        ["start_logits", "end_logits"],
    ),
}


@pytest.mark.parametrize("head", list(HEAD_TWINS))
def test_positional_arguments_in_the_order_of_transformers(head):
    """head(input_ids, attention_mask, token_type_ids) means the same call in both libraries."""
    our_class, hf_class_name, outputs = HEAD_TWINS[head]
    ours, reference = twin(our_class, hf_class_name)
    # segment ids of 0 and 1, so that swapping them with the mask would still run
    input_ids, attention_mask, token_type_ids = random_batch(97, 2, seed=1)
    assert (attention_mask == 0).any() and (token_type_ids[attention_mask == 1] == 1).any()
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids)
        expected = reference(input_ids, attention_mask, token_type_ids)
        swapped = ours(input_ids, token_type_ids, attention_mask)
    for name in outputs:
        assert close(getattr(got, name), getattr(expected, name)), name
    # the test can tell: the mask and the segment ids swapped give other scores
    assert not close(getattr(swapped, outputs[0]), getattr(expected, outputs[0]))


def test_heads_start_fresh_on_the_minilm_encoder():
    classifier = BertForSequenceClassification.from_hf("minilm", num_labels=4)
    assert classifier.newly_initialized_keys == ["classifier.weight", "classifier.bias"]
    mlm = BertForMaskedLM.from_hf("minilm")  # MiniLM has a pooler that the MLM model does not use
    assert "cls.predictions.transform.dense.weight" in mlm.newly_initialized_keys
    assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
    reference = transformers.AutoModel.from_pretrained(minilm_path()).eval()
    input_ids, attention_mask, token_type_ids = random_batch(30522, 2)
    with torch.no_grad():
        ours = classifier.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        expected = reference(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
    assert close(ours, expected)


def test_pretraining_checkpoint_into_a_classifier_and_labels_round_trip(tmp_path):
    pretraining = BertForPreTraining(CONFIG)
    pretraining.save_pretrained(tmp_path / "pt")
    classifier = BertForSequenceClassification.from_hf(tmp_path / "pt", num_labels=2)
    assert classifier.newly_initialized_keys == ["classifier.weight", "classifier.bias"]
    assert torch.equal(classifier.bert.pooler.dense.weight, pretraining.bert.pooler.dense.weight)
    labelled = BertForSequenceClassification(
        CONFIG, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}
    )
    labelled.save_pretrained(tmp_path / "cls")
    again = BertForSequenceClassification.from_hf(tmp_path / "cls")
    assert again.num_labels == 3 and again.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert again.newly_initialized_keys == []
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert reference.config.id2label == {0: "neg", 1: "neu", 2: "pos"}


def test_bad_label_arguments():
    with pytest.raises(ValueError, match="num_labels must be >= 1"):
        BertForSequenceClassification(CONFIG, num_labels=0)
    with pytest.raises(ValueError, match="id2label has 2 names"):
        BertForTokenClassification(CONFIG, num_labels=3, id2label={0: "a", 1: "b"})
