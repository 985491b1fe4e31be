"""Robustness: perturbations by their definitions, the classifier wrapper against a loop, the
greedy attack against a rule-based stub classifier, WEAT on planted embeddings, AUROC
against scikit-learn."""

from __future__ import annotations

import itertools
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from bertcourse import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer
from bertcourse.embeddings import encode
from bertcourse.model import BertForMaskedLM
from bertcourse.robustness import (
    CAREER_WORDS,
    FAMILY_WORDS,
    FEMALE_NAMES,
    MALE_NAMES,
    STOP_WORDS,
    AttackResult,
    SentenceSimilarity,
    TextClassifier,
    attack_summary,
    auroc,
    change_case,
    embedding_neighbours,
    join_words,
    max_softmax_scores,
    mlm_candidates,
    noisy_copies,
    perturbation_curve,
    sentence_similarity,
    split_words,
    substitution_attack,
    template_sentences,
    truncate_words,
    typos,
    weat_effect_size,
    weat_test,
    word_importance,
)

TINY = BertConfig(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=128,
)

TEXTS = [
    "a gripping, beautifully acted film.",
    "Dull.",
    "The plot meanders for two hours and the ending, frankly, makes no sense at all.",
    "I LOVED IT",
    "not bad, not great: an ok way to spend an afternoon with friends",
    "Why?",
    "the soundtrack is the best thing about this movie; everything else is forgettable",
]

VOCABULARY = (
    "the a of to it is in an on movie film plot acting story actor scene music was great "
    "terrible boring wonderful slow charming awkward brilliant dull funny script ending "
    "characters director"
).split()


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained("minilm")


@pytest.fixture(scope="module")
def tiny_classifier(tokenizer):
    torch.manual_seed(0)
    model = BertForSequenceClassification(TINY, num_labels=3)
    return TextClassifier(model, tokenizer, batch_size=3)


def osa_distance(a: str, b: str) -> int:
    """Edit distance counting insertions, deletions, substitutions and swaps of neighbours."""
    d = [[max(i, j) if min(i, j) == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def random_text(rng: random.Random, words: int) -> str:
    """Words of 1-9 letters in mixed case, with punctuation, digits and uneven spacing."""
    pieces = []
    for _ in range(words):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
        style = rng.random()
        word = word.upper() if style < 0.1 else word.capitalize() if style < 0.25 else word
        pieces.append(word + rng.choice(["", "", "", ",", ".", "!?", "'s", "42"]))
    return "".join(p + rng.choice([" ", " ", "  ", "\t", "\n"]) for p in pieces)


# -- perturbations -----------------------------------------------------------------------


def test_split_and_join_words_round_trip():
    rng = random.Random(1)
    for _ in range(20):
        text = random_text(rng, rng.randint(0, 12))
        words, gaps = split_words(text)
        assert join_words(words, gaps) == text
        assert all(re.fullmatch(r"[A-Za-z]+", w) for w in words)
        assert not any(re.search(r"[A-Za-z]", g) for g in gaps)
    with pytest.raises(ValueError, match="gaps"):
        join_words(["a", "b"], ["", ""])


def test_typos_edit_only_words_of_three_letters_once_each():
    rng = random.Random(2)
    for seed in range(30):
        text = random_text(rng, 25)
        noisy = typos(text, 0.5, seed=seed)
        words, gaps = split_words(text)
        noisy_words, noisy_gaps = split_words(noisy)
        assert noisy_gaps == gaps  # spacing, punctuation and digits untouched
        for old, new in zip(words, noisy_words, strict=True):
            if len(old) < 3:
                assert new == old
            elif new != old:
                assert osa_distance(old, new) == 1, (old, new)
                if old.islower():
                    assert new.islower()
                if len(old) > 1 and old.isupper():
                    assert new.isupper(), (old, new)


def test_typos_rate_zero_and_one():
    text = "Is it the END?  A dog, 42 cats and an owl...\tok"
    assert typos(text, 0.0, seed=5) == text
    words = split_words(text)[0]
    edited = split_words(typos(text, 1.0, seed=5))[0]
    assert [old != new for old, new in zip(words, edited, strict=True)] == [
        len(w) >= 3 for w in words
    ]


def test_typos_are_deterministic_by_seed():
    text = random_text(random.Random(3), 60)
    assert typos(text, 0.3, seed=7) == typos(text, 0.3, seed=7)
    assert typos(text, 0.3, seed=7) != typos(text, 0.3, seed=8)


def test_typo_counts_match_the_rate():
    """Each eligible word is edited with probability `rate`: the count over ~2,500 words is
    binomial; 4.5 standard deviations allow for chance, not for a wrong rate."""
    rng = random.Random(4)
    for rate in (0.1, 0.4):
        eligible = edited = 0
        for seed in range(50):
            text = random_text(rng, 80)
            words = split_words(text)[0]
            noisy_words = split_words(typos(text, rate, seed=seed))[0]
            eligible += sum(len(w) >= 3 for w in words)
            edited += sum(a != b for a, b in zip(words, noisy_words, strict=True))
        expected = eligible * rate
        assert abs(edited - expected) < 4.5 * math.sqrt(expected * (1 - rate)), (rate, edited)


def test_each_typo_kind_does_what_it_says():
    word = "Streaming"
    for seed in range(40):
        swapped = typos(word, 1.0, seed=seed, kinds=("swap",))
        assert sorted(swapped) == sorted(word) and swapped[0] == "S" and swapped != word
        assert len(typos(word, 1.0, seed=seed, kinds=("drop",))) == len(word) - 1
        inserted = typos(word, 1.0, seed=seed, kinds=("insert",))
        assert len(inserted) == len(word) + 1 and osa_distance(word, inserted) == 1
        replaced = typos(word, 1.0, seed=seed, kinds=("replace",))
        assert (
            len(replaced) == len(word)
            and sum(a != b for a, b in zip(word, replaced, strict=True)) == 1
        )
        assert typos("LOUD", 1.0, seed=seed, kinds=("insert", "replace")).isupper()
    # a word without two different neighbouring letters after the first is replaced instead
    assert osa_distance(typos("aaa", 1.0, kinds=("swap",)), "aaa") == 1
    with pytest.raises(ValueError, match="kinds"):
        typos("word", 0.5, kinds=("shout",))
    with pytest.raises(ValueError, match="rate"):
        typos("word", 1.5)


def test_change_case_modes():
    text = "don't STOP (me) now, Mr. x"
    assert change_case(text, "lower") == text.lower()
    assert change_case(text, "upper") == text.upper()
    assert change_case(text, "title") == "Don't Stop (Me) Now, Mr. X"
    long_text = "the quick brown fox jumps over the lazy dog " * 5
    mixed = change_case(long_text, "random", seed=1)
    assert mixed.lower() == long_text.lower()
    assert mixed == change_case(long_text, "random", seed=1)
    assert mixed != change_case(long_text, "random", seed=2)
    assert 0.3 < sum(c.isupper() for c in mixed) / sum(c.isalpha() for c in mixed) < 0.7
    with pytest.raises(ValueError, match="lower, upper"):
        change_case(text, "shouty")


def test_truncate_words():
    text = "  one, two   three four.  "
    assert truncate_words(text, 0) == ""
    assert truncate_words(text, 2) == "one, two"
    assert truncate_words(text, 3) == "one, two   three"
    assert truncate_words(text, 10) == "one, two   three four."
    with pytest.raises(ValueError, match="max_words"):
        truncate_words(text, -1)


def test_noisy_copies():
    texts, labels = ["a wonderful little film", "terrible acting throughout"], [1, 0]
    out_texts, out_labels = noisy_copies(texts, labels, rate=1.0, copies=3, seed=2)
    assert out_texts[:2] == texts and len(out_texts) == 8
    assert out_labels == [1, 0] * 4
    copies_of_first = out_texts[2::2]
    assert len(set(copies_of_first)) == 3 and texts[0] not in copies_of_first
    assert (out_texts, out_labels) == noisy_copies(texts, labels, rate=1.0, copies=3, seed=2)
    assert noisy_copies(texts, labels, rate=1.0, copies=3, seed=3)[0] != out_texts
    with pytest.raises(ValueError, match="one label per text"):
        noisy_copies(texts, [1], rate=0.1)


# -- the classifier wrapper ------------------------------------------------------------------


def test_text_classifier_batches_agree_with_one_text_at_a_time(tiny_classifier, tokenizer):
    model = tiny_classifier.model
    model.train()
    batched = tiny_classifier.predict_proba(TEXTS)
    assert model.training  # the mode is restored
    assert batched.shape == (len(TEXTS), 3)
    model.eval()
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            ids = tokenizer(text, truncation=True, max_length=128, return_tensors="pt")
            alone = model(ids["input_ids"]).logits.softmax(-1)[0]
            torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.sum(-1), torch.ones(len(TEXTS)))
    assert torch.equal(tiny_classifier.predict(TEXTS), batched.argmax(-1))
    labels = [0, 1, 2, 0, 1, 2, 0]
    expected = sum(int(p) == y for p, y in zip(batched.argmax(-1), labels, strict=True)) / len(
        labels
    )
    assert tiny_classifier.accuracy(TEXTS, labels) == pytest.approx(expected)
    assert tiny_classifier.predict_proba([]).shape == (0, 3)
    with pytest.raises(TypeError, match=r"\[text\]"):
        tiny_classifier.predict_proba("one text")
    with pytest.raises(ValueError, match="one label per text"):
        tiny_classifier.accuracy(TEXTS, [0, 1])


def test_max_softmax_scores(tiny_classifier):
    probabilities = tiny_classifier.predict_proba(TEXTS)
    assert torch.equal(max_softmax_scores(tiny_classifier, TEXTS), probabilities.max(-1).values)


# -- a rule-based stand-in for a classifier -------------------------------------------------


class RuleClassifier(TextClassifier):
    """p(positive) = sigmoid(sum of the scores of the words it knows); counts texts scored."""

    def __init__(self, scores: dict[str, float], bias: float = 0.0):
        self.scores, self.bias, self.scored = scores, bias, 0

    @property
    def num_labels(self) -> int:
        return 2

    def predict_proba(self, texts):
        self.scored += len(texts)
        logits = torch.tensor(
            [
                self.bias + sum(self.scores.get(w.lower(), 0.0) for w in split_words(t)[0])
                for t in texts
            ]
        )
        positive = torch.sigmoid(logits)
        return torch.stack([1 - positive, positive], dim=-1)


SENTIMENT = {"good": 2.0, "great": 3.0, "fine": 1.0, "bad": -3.0, "poor": -1.5, "not": 4.0}


def table(substitutes: dict[str, list[str]]):
    def candidates(words, index):
        return substitutes.get(words[index].lower(), [])

    return candidates


def test_perturbation_curve_with_seeds():
    classifier = RuleClassifier({"good": 5.0}, bias=-2.0)
    texts = ["a good movie"] * 200
    rows = perturbation_curve(classifier, texts, [1] * 200, typos, [0.0, 0.5, 1.0], seeds=(0, 1))
    assert [row["level"] for row in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["accuracy"] == 1.0 and rows[0]["accuracy_std"] == 0.0
    assert rows[2]["accuracy"] == 0.0
    assert rows[1]["accuracy_std"] > 0
    # each text draws its own typos: about half the copies keep "good" at rate 0.5
    for seed in (0, 1):
        (row,) = perturbation_curve(classifier, texts, [1] * 200, typos, [0.5], seeds=(seed,))
        assert 0.35 < row["accuracy"] < 0.65
    rows = perturbation_curve(classifier, texts[:3], [1, 1, 0], truncate_words, [1, 2])
    assert [row["accuracy"] for row in rows] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    with pytest.raises(ValueError, match="seed"):
        perturbation_curve(classifier, texts, [1] * 200, truncate_words, [1], seeds=(0, 1))


def test_word_importance_is_leave_one_out(tiny_classifier):
    text = "The plot, frankly, makes no sense at all!"
    words, gaps = split_words(text)
    importance = word_importance(tiny_classifier, words, 2, gaps=gaps)
    full = tiny_classifier.predict_proba([text])[0, 2]
    for i in range(len(words)):
        deleted = join_words(
            words[:i] + words[i + 1 :], gaps[:i] + [gaps[i] + gaps[i + 1]] + gaps[i + 2 :]
        )
        expected = full - tiny_classifier.predict_proba([deleted])[0, 2]
        torch.testing.assert_close(importance[i], expected, atol=1e-5, rtol=1e-5)
    stub = RuleClassifier(SENTIMENT)
    importance = word_importance(stub, ["a", "good", "film"], 1)
    assert stub.scored == 4  # the three deletions and the full text
    expected = (
        stub.predict_proba(["a good film"])[0, 1]
        - stub.predict_proba(["good film", "a film", "a good"])[:, 1]
    )
    torch.testing.assert_close(importance, expected)
    assert importance[1] > 0 and importance[0] == importance[2] == 0


# -- the attack ---------------------------------------------------------------------------------


def test_a_known_substitution_flips_the_stub():
    classifier = RuleClassifier(SENTIMENT)
    result = substitution_attack(
        classifier, "The acting was Good, truly!", 1, table({"good": ["fine", "bad", "poor"]})
    )
    assert result.success and not result.skipped
    assert result.adversarial == "The acting was Bad, truly!"  # the flip that lowers p most
    assert result.changed == [(3, "Good", "Bad")]
    assert (result.original_prediction, result.final_prediction) == (1, 0)
    assert result.final_probability == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item())
    assert result.original_probability == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    # 1 (the text) + 5 words left out + 3 candidates
    assert result.queries == classifier.scored == 9


def test_the_attack_stops_at_the_first_flip_and_lowers_step_by_step():
    classifier = RuleClassifier({"great": 3.0, "good": 2.0, "fine": 1.0, "meh": 0.5, "bad": -3})
    candidates = table({"great": ["fine", "good"], "good": ["meh", "bad"]})
    text = "great story good music"
    result = substitution_attack(classifier, text, 1, candidates, max_changed_fraction=1.0)
    # "great" matters most: becomes "fine" (5 -> 3); then "good" -> "bad" flips (3 -> -2)
    assert result.changed == [(0, "great", "fine"), (2, "good", "bad")]
    assert result.success and result.adversarial == "fine story bad music"


class ThreeClassStub(RuleClassifier):
    """Fixed probabilities for the texts it knows, uniform for the others."""

    def __init__(self, table):
        self.table, self.scored = table, 0

    def predict_proba(self, texts):
        self.scored += len(texts)
        return torch.tensor([self.table.get(t, [1 / 3] * 3) for t in texts])


def test_a_flip_beats_a_lower_probability_that_does_not_flip():
    classifier = ThreeClassStub(
        {
            "one two": [0.5, 0.3, 0.2],
            "two": [0.5, 0.3, 0.2],
            "one": [0.5, 0.3, 0.2],
            "low two": [0.40, 0.30, 0.30],  # the lowest true-class probability, still class 0
            "flip two": [0.42, 0.58, 0.0],  # higher, but class 1 wins
        }
    )
    result = substitution_attack(
        classifier, "one two", 0, table({"one": ["low", "flip"]}), max_changed_fraction=1.0
    )
    assert result.changed == [(0, "one", "flip")] and result.success
    assert result.final_prediction == 1 and result.final_probability == pytest.approx(0.42)


def test_the_attack_never_changes_stop_words():
    classifier = RuleClassifier(SENTIMENT)
    candidates = table({"not": ["hardly"], "good": ["fine"], "it": ["that"], "very": ["bad"]})
    result = substitution_attack(
        classifier, "it is not very good", 1, candidates, max_changed_fraction=1.0
    )
    changed_words = {old.lower() for _, old, _ in result.changed}
    assert changed_words == {"good"} and not changed_words & STOP_WORDS
    custom = substitution_attack(
        classifier, "it is not good", 1, candidates, stop_words=(), max_changed_fraction=1.0
    )
    assert (2, "not", "hardly") in custom.changed  # only the stop words kept it


def test_the_attack_respects_the_budget():
    words = ["wa", "wb", "wc", "wd", "we", "wf", "wg", "wh"]
    classifier = RuleClassifier(dict.fromkeys(words, 1.0))  # logit 8; a substitute scores 0
    candidates = table({w: ["x" + w[1]] for w in words})
    for fraction, budget in ((0.25, 2), (0.5, 4), (0.1, 0)):
        result = substitution_attack(
            classifier, " ".join(words), 1, candidates, max_changed_fraction=fraction
        )
        assert len(result.changed) == budget  # each change helps, none flips: the budget binds
        assert not result.success and result.changed_fraction <= fraction


def test_the_attack_respects_min_similarity():
    classifier = RuleClassifier(SENTIMENT)
    candidates = table({"good": ["bad", "poor"], "film": ["movie"]})

    def forbid_all(a, b):
        return 0.0

    result = substitution_attack(
        classifier, "a good film", 1, candidates, similarity=forbid_all, max_changed_fraction=1.0
    )
    assert result.adversarial == "a good film" and result.changed == [] and not result.success
    assert result.queries == 1 + 3  # no candidate was scored

    def unchanged_fraction(a, b):
        old, new = split_words(a)[0], split_words(b)[0]
        return sum(x == y for x, y in zip(old, new, strict=True)) / len(old)

    text = "good good film"  # one change keeps 2/3 of the words, two keep 1/3
    for minimum, changes in ((0.6, 1), (0.3, 2)):
        result = substitution_attack(
            classifier,
            text,
            1,
            table({"good": ["poor"]}),
            similarity=unchanged_fraction,
            min_similarity=minimum,
            max_changed_fraction=1.0,
        )
        assert len(result.changed) == changes
        assert unchanged_fraction(text, result.adversarial) >= minimum


def test_a_substitute_that_does_not_help_is_not_taken():
    classifier = RuleClassifier(SENTIMENT)
    candidates = table({"fine": ["great", "good"], "film": ["movie"]})
    result = substitution_attack(classifier, "a fine film", 1, candidates, max_changed_fraction=1)
    assert result.changed == [] and result.adversarial == "a fine film"
    assert result.queries == 1 + 3 + 2 + 1  # the text, 3 deletions, the candidates of 2 words


def test_a_misclassified_text_is_skipped():
    classifier = RuleClassifier(SENTIMENT)
    result = substitution_attack(classifier, "a bad film", 1, table({"bad": ["good"]}))
    assert result.skipped and not result.success and result.queries == 1
    assert result.adversarial == result.original and result.final_prediction == 0


def test_attack_summary_arithmetic():
    def result(skipped, success, changed, words, queries):
        return AttackResult(
            "t", "t", 1, 0 if skipped else 1, 0 if skipped or success else 1, 0.5, 0.5,
            changed=[(i, "a", "b") for i in range(changed)], queries=queries, success=success,
            skipped=skipped, n_words=words,
        )  # fmt: skip

    results = [
        result(True, False, 0, 10, 1),
        result(False, True, 1, 10, 20),
        result(False, True, 3, 6, 30),
        result(False, False, 2, 8, 40),
        result(False, False, 0, 8, 10),
    ]
    summary = attack_summary(results)
    assert summary["clean_accuracy"] == pytest.approx(4 / 5)
    assert summary["accuracy_under_attack"] == pytest.approx(2 / 5)
    assert summary["attack_success_rate"] == pytest.approx(2 / 4)
    assert summary["mean_changed_fraction"] == pytest.approx((0.1 + 0.5) / 2)
    assert summary["mean_queries"] == pytest.approx(25.0)
    assert (summary["skipped"], summary["successes"], summary["failures"]) == (1, 2, 2)
    nothing_correct = attack_summary([result(True, False, 0, 5, 1)])
    assert nothing_correct["attack_success_rate"] == 0.0 == nothing_correct["clean_accuracy"]
    with pytest.raises(ValueError, match="at least one"):
        attack_summary([])


# -- candidate words ---------------------------------------------------------------------------


def test_embedding_neighbours(tokenizer):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(tokenizer.vocab_size, 8, generator=generator)
    vocab = tokenizer.vocab
    embeddings[vocab["glad"]] = embeddings[vocab["happy"]] + 0.01  # a planted neighbour
    embeddings[vocab["##ppy"]] = embeddings[vocab["happy"]]  # pieces and specials: never
    embeddings[vocab["[SEP]"]] = embeddings[vocab["happy"]]
    neighbours = embedding_neighbours(embeddings, tokenizer, k=15, min_cosine=0.3)
    scored = neighbours.scored("happy")
    tokens = [t for t, _ in scored]
    assert tokens[0] == "glad" and "happy" not in tokens and 0 < len(tokens) <= 15
    assert all(t.isalpha() and t.isascii() and len(t) >= 2 for t in tokens)
    cosines = [c for _, c in scored]
    assert cosines == sorted(cosines, reverse=True) and min(cosines) >= 0.3
    unit = F.normalize(embeddings, dim=-1)
    for token, cosine in scored:
        assert cosine == pytest.approx((unit[vocab[token]] @ unit[vocab["happy"]]).item(), abs=1e-5)
    # the best allowed tokens, none skipped
    allowed = [i for t, i in vocab.items() if t.isalpha() and t.isascii() and len(t) >= 2]
    allowed = [i for i in allowed if i != vocab["happy"]]
    best = (unit[allowed] @ unit[vocab["happy"]]).topk(len(tokens)).values
    torch.testing.assert_close(torch.tensor(cosines), best, atol=1e-5, rtol=1e-5)
    assert neighbours("Happy") == tokens == neighbours(["so", "happy"], 1)
    assert neighbours("qwxzv") == []
    with pytest.raises(ValueError, match="rows"):
        embedding_neighbours(embeddings[:100], tokenizer)


def test_mlm_candidates_are_the_best_whole_words(tokenizer):
    torch.manual_seed(1)
    model = BertForMaskedLM(TINY).eval()
    candidates = mlm_candidates(model, tokenizer, k=6)
    words = ["the", "film", "was", "good"]
    found = candidates(words, 3)
    ids = tokenizer("the film was [MASK]", return_tensors="pt")["input_ids"]
    assert ids[0, 4] == tokenizer.mask_token_id
    with torch.no_grad():
        scores = model(ids).logits[0, 4]
    allowed = {i for t, i in tokenizer.vocab.items() if t.isalpha() and t.isascii() and len(t) > 1}
    allowed.discard(tokenizer.vocab["good"])
    order = [i for i in scores.argsort(descending=True).tolist() if i in allowed][:6]
    assert found == tokenizer.convert_ids_to_tokens(order)
    long_words = ["word"] * 200
    assert mlm_candidates(model, tokenizer, k=3, max_length=16)(long_words, 150) == []


def test_sentence_similarity_is_the_cosine_of_encode(tokenizer):
    torch.manual_seed(2)
    encoder = BertModel(TINY).eval()
    similarity = sentence_similarity(encoder, tokenizer)
    a, b = "a wonderful film", "the plot makes no sense, at all"
    vectors = encode(encoder, tokenizer, [a, b])
    assert similarity(a, b) == pytest.approx((vectors[0] @ vectors[1]).item(), abs=1e-6)
    assert similarity(b, a) == pytest.approx(similarity(a, b), abs=1e-6)
    assert similarity(a, a) == pytest.approx(1.0, abs=1e-5)


def test_sentence_similarity_keeps_working_when_its_cache_fills(tokenizer):
    torch.manual_seed(2)
    encoder = BertModel(TINY).eval()
    similarity = SentenceSimilarity(encoder, tokenizer, cache_size=3)
    original = "a wonderful film"
    variants = [f"a wonderful film number {i}" for i in range(6)]
    vectors = encode(encoder, tokenizer, [original, *variants])
    for i, variant in enumerate(variants):  # the original stays asked for as the cache turns over
        expected = (vectors[0] @ vectors[i + 1]).item()
        assert similarity(original, variant) == pytest.approx(expected, abs=1e-6)


# -- bias -------------------------------------------------------------------------------------------


def planted_sets(seed: int, n: int = 8, width: int = 16, strength: float = 1.0):
    """A and B around two directions; X leans to A's, Y to B's, by `strength`."""
    generator = torch.Generator().manual_seed(seed)

    def noise(rows):
        return torch.randn(rows, width, generator=generator)

    a_dir, b_dir = noise(1), noise(1)
    A, B = a_dir + 0.3 * noise(n), b_dir + 0.3 * noise(n)
    X = strength * a_dir + noise(n)
    Y = strength * b_dir + noise(n)
    return X, Y, A, B


def numpy_effect_size(X, Y, A, B):
    def cos(u, v):
        return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))

    def s(w):
        return np.mean([cos(w, a) for a in A]) - np.mean([cos(w, b) for b in B])

    X, Y, A, B = (t.double().numpy() for t in (X, Y, A, B))
    s_x, s_y = [s(x) for x in X], [s(y) for y in Y]
    return (np.mean(s_x) - np.mean(s_y)) / np.std(s_x + s_y, ddof=1), s_x, s_y


def test_weat_effect_size_matches_a_direct_computation():
    X, Y, A, B = planted_sets(0, strength=0.5)
    expected, _, _ = numpy_effect_size(X, Y, A, B)
    assert weat_effect_size(X, Y, A, B) == pytest.approx(expected, abs=1e-9)
    uneven = weat_effect_size(X[:5], Y, A[:3], B)
    assert uneven == pytest.approx(numpy_effect_size(X[:5], Y, A[:3], B)[0], abs=1e-9)


def test_weat_finds_a_planted_association_and_its_sign():
    X, Y, A, B = planted_sets(1, strength=2.0)
    result = weat_test(X, Y, A, B)
    assert result["effect_size"] > 1.5 and result["p_value"] < 0.01
    assert not result["exact"] and result["permutations"] == 10_000  # C(16, 8) = 12,870
    swapped = weat_test(Y, X, A, B)
    assert swapped["effect_size"] == pytest.approx(-result["effect_size"])
    assert swapped["p_value"] > 0.99
    assert weat_effect_size(X, Y, B, A) == pytest.approx(-result["effect_size"])


def test_weat_on_unrelated_embeddings_is_small():
    generator = torch.Generator().manual_seed(3)
    X, Y, A, B = (torch.randn(60, 16, generator=generator) for _ in range(4))
    result = weat_test(X, Y, A, B, permutations=2000)
    assert abs(result["effect_size"]) < 0.5 and result["p_value"] > 0.01


def test_weat_exact_p_value_and_sampling():
    X, Y, A, B = planted_sets(4, n=5, strength=0.4)
    _, s_x, s_y = numpy_effect_size(X, Y, A, B)
    scores = np.array(s_x + s_y)
    observed = scores[:5].sum() - scores[5:].sum()
    splits = list(itertools.combinations(range(10), 5))
    at_least = sum(
        scores[list(c)].sum() - np.delete(scores, list(c)).sum() >= observed - 1e-12 for c in splits
    )
    exact = weat_test(X, Y, A, B, permutations=1000)  # 252 partitions: all of them
    assert exact["exact"] and exact["permutations"] == 252
    assert exact["p_value"] == pytest.approx(at_least / 252)
    assert exact["statistic"] == pytest.approx(observed)
    sampled = weat_test(X, Y, A, B, permutations=200, seed=1)
    assert not sampled["exact"]
    assert abs(sampled["p_value"] - exact["p_value"]) < 4 * math.sqrt(0.25 / 200) + 0.01
    assert sampled == weat_test(X, Y, A, B, permutations=200, seed=1)


def test_bias_word_lists_and_templates():
    for group in (MALE_NAMES, FEMALE_NAMES, CAREER_WORDS, FAMILY_WORDS):
        assert len(group) == len(set(group)) == 8
    assert not set(MALE_NAMES) & set(FEMALE_NAMES)
    assert template_sentences(["Ann", "Bo"], ["{} is here.", "Hi {}."]) == [
        "Ann is here.",
        "Hi Ann.",
        "Bo is here.",
        "Hi Bo.",
    ]
    with pytest.raises(ValueError, match="width"):
        weat_effect_size(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4), torch.ones(2, 3))


# -- out of domain ------------------------------------------------------------------------------


def test_auroc_matches_sklearn():
    generator = torch.Generator().manual_seed(5)
    for n_in, n_out in ((30, 40), (1, 7), (50, 5)):
        inside = torch.randn(n_in, generator=generator) + 0.7
        outside = torch.randn(n_out, generator=generator)
        inside, outside = (inside * 4).round() / 4, (outside * 4).round() / 4  # ties
        truth = [1] * n_in + [0] * n_out
        expected = roc_auc_score(truth, torch.cat([inside, outside]).numpy())
        assert auroc(inside, outside) == pytest.approx(expected, abs=1e-12)
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="empty"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan")], [1.0])
