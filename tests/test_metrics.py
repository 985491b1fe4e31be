"""Metrics against references: scikit-learn for classification, seqeval for entities, SQuAD's rules."""

from __future__ import annotations

import random

import pytest
import seqeval.metrics  # dev dependencies: pip install -e ".[dev]"
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from bertcourse.metrics import (
    classification_report,
    confusion_matrix,
    entity_f1,
    exact_match,
    get_entities,
    normalize_answer,
    squad_metrics,
    token_f1,
)


@pytest.mark.parametrize("seed", range(5))
def test_classification_report_equals_scikit_learn(seed):
    sklearn_metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn is a dev dependency"
    )
    rng = random.Random(seed)
    num_labels = rng.randint(2, 6)
    labels = [
        rng.randrange(num_labels - (seed % 2)) for _ in range(200)
    ]  # odd seeds: a class absent
    predictions = [rng.randrange(num_labels) if rng.random() < 0.6 else y for y in labels]
    names = [f"c{i}" for i in range(num_labels)]
    report = classification_report(labels, predictions, names)
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predictions))
    present = sorted(set(labels))
    assert report["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(
            labels, predictions, labels=present, average="macro", zero_division=0
        )
    )
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        labels, predictions, labels=list(range(num_labels)), zero_division=0
    )
    for i, name in enumerate(names):
        assert report["per_class"][name]["precision"] == pytest.approx(precision[i])
        assert report["per_class"][name]["recall"] == pytest.approx(recall[i])
        assert report["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert report["per_class"][name]["support"] == support[i]
    expected = sklearn_metrics.confusion_matrix(labels, predictions, labels=list(range(num_labels)))
    assert report["confusion_matrix"] == expected.tolist()


def test_classification_errors():
    with pytest.raises(ValueError, match="No examples"):
        classification_report([], [], ["a", "b"])
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], 2)


def random_tags(rng: random.Random, length: int) -> list[str]:
    tags = []
    for _ in range(length):
        r = rng.random()
        kind = rng.choice(["PER", "LOC", "ORG"])
        tags.append("O" if r < 0.5 else (f"B-{kind}" if r < 0.75 else f"I-{kind}"))
    return tags


def test_get_entities_examples():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O", "B-PER"]
    assert get_entities(tags) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),  # an I- after O starts an entity (the CoNLL script's lenient rule)
        ("LOC", 5, 5),
        ("ORG", 6, 6),  # I- of another type starts a new one
        ("PER", 8, 8),
    ]
    with pytest.raises(ValueError, match="not IOB2"):
        get_entities(["B-PER", "X-PER"])


@pytest.mark.parametrize("seed", range(20))
def test_entities_and_f1_equal_seqeval(seed):
    rng = random.Random(seed)
    truth = [random_tags(rng, rng.randint(1, 15)) for _ in range(30)]
    predicted = [
        [
            tag if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-PER", "B-LOC", "I-ORG"])
            for tag in row
        ]
        for row in truth
    ]
    for row in truth:
        assert get_entities(row) == [tuple(e) for e in seqeval_entities(row)]
    ours = entity_f1(truth, predicted)
    assert ours["precision"] == pytest.approx(seqeval.metrics.precision_score(truth, predicted))
    assert ours["recall"] == pytest.approx(seqeval.metrics.recall_score(truth, predicted))
    assert ours["f1"] == pytest.approx(seqeval.metrics.f1_score(truth, predicted))
    per_type = seqeval.metrics.classification_report(
        truth, predicted, output_dict=True, zero_division=0
    )
    for kind, report in ours["per_type"].items():
        if report["support"]:
            assert report["f1"] == pytest.approx(per_type[kind]["f1-score"]), kind
            assert report["support"] == per_type[kind]["support"]


def test_entity_f1_needs_one_tag_per_word():
    with pytest.raises(ValueError, match="one tag per word"):
        entity_f1([["B-PER", "O"]], [["B-PER"]])


def test_squad_normalisation_exact_match_and_f1():
    # The official SQuAD rules: lower case, punctuation and articles removed, spaces collapsed.
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple a day") == "apple day"
    assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert token_f1("Denver", ["Denver Broncos"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("Broncos of Denver", ["Denver Broncos", "the Broncos"]) == pytest.approx(0.8)
    assert token_f1("nothing here", ["Denver Broncos"]) == 0.0
    metrics = squad_metrics(
        {"q1": "Denver Broncos", "q2": "Denver"},
        {"q1": ["Denver Broncos"], "q2": ["Denver Broncos"], "q3": ["Carolina"]},
    )
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="unknown question ids"):
        squad_metrics({"q9": "x"}, {"q1": ["x"]})
