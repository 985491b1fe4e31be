"""Chapter 16: the attack-metrics and typos checkers, their solutions and planted bugs."""

from __future__ import annotations

import random
import re

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed
from bertcourse.exercises.ch16_robustness import (
    _edit_distance,
    _metrics_cases,
    _typo_cases,
    check_attack_metrics,
    check_typos,
)
from bertcourse.robustness import AttackResult, attack_summary, split_words, typos

# ----------------------------------------------------------------------------
# Attack metrics
# ----------------------------------------------------------------------------


def attack_metrics(labels, clean_predictions, attacked_predictions):
    correct = clean_predictions == labels
    still_correct = correct & (attacked_predictions == labels)
    n_correct = int(correct.sum())
    flipped = n_correct - int(still_correct.sum())
    return {
        "clean_accuracy": correct.float().mean().item(),
        "accuracy_under_attack": still_correct.float().mean().item(),
        "attack_success_rate": flipped / n_correct if n_correct else 0.0,
    }


def attack_metrics_by_loop(labels, clean_predictions, attacked_predictions):
    """Another correct answer: Python numbers, one text at a time, tensors as values."""
    correct = survived = 0
    for label, clean, attacked in zip(
        labels.tolist(), clean_predictions.tolist(), attacked_predictions.tolist(), strict=True
    ):
        if clean == label:
            correct += 1
            survived += attacked == label
    n = len(labels)
    return {
        "attack_success_rate": torch.tensor((correct - survived) / max(correct, 1)),
        "clean_accuracy": correct / n,
        "accuracy_under_attack": torch.tensor(survived / n),
    }


def metrics_success_over_all(labels, clean_predictions, attacked_predictions):
    correct = clean_predictions == labels
    flipped = correct & (attacked_predictions != labels)
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"attack_success_rate": flipped.float().mean().item()}


def metrics_wrong_counted_as_successes(labels, clean_predictions, attacked_predictions):
    correct = clean_predictions == labels
    n_correct = int(correct.sum())
    wrong_after = int((attacked_predictions != labels).sum())
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"attack_success_rate": wrong_after / n_correct if n_correct else 0.0}


def metrics_changed_predictions(labels, clean_predictions, attacked_predictions):
    correct = clean_predictions == labels
    n_correct = int(correct.sum())
    changed = int((attacked_predictions != clean_predictions).sum())
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"attack_success_rate": changed / n_correct if n_correct else 0.0}


def metrics_under_attack_from_clean(labels, clean_predictions, attacked_predictions):
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"accuracy_under_attack": (clean_predictions == labels).float().mean().item()}


def metrics_under_attack_attacked_only(labels, clean_predictions, attacked_predictions):
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    survived = (attacked_predictions == labels).float().mean().item()
    return result | {"accuracy_under_attack": survived}


def metrics_nan_when_nothing_correct(labels, clean_predictions, attacked_predictions):
    correct = clean_predictions == labels
    flipped = correct & (attacked_predictions != labels)
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"attack_success_rate": (flipped.sum() / correct.sum()).item()}


def metrics_divide_by_zero(labels, clean_predictions, attacked_predictions):
    correct = int((clean_predictions == labels).sum())
    survived = int(((clean_predictions == labels) & (attacked_predictions == labels)).sum())
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return result | {"attack_success_rate": (correct - survived) / correct}


def metrics_swapped(labels, clean_predictions, attacked_predictions):
    return attack_metrics(labels, attacked_predictions, clean_predictions)


def metrics_percent(labels, clean_predictions, attacked_predictions):
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return {name: 100 * value for name, value in result.items()}


def metrics_missing_key(labels, clean_predictions, attacked_predictions):
    result = attack_metrics(labels, clean_predictions, attacked_predictions)
    return {"accuracy": result["clean_accuracy"]} | result


def metrics_list(labels, clean_predictions, attacked_predictions):
    return list(attack_metrics(labels, clean_predictions, attacked_predictions).values())


METRICS_BUGS = [
    (metrics_success_over_all, "not / all texts"),
    (metrics_wrong_counted_as_successes, "already wrong"),
    (metrics_changed_predictions, "merely changed"),
    (metrics_under_attack_from_clean, "not the clean ones"),
    (metrics_under_attack_attacked_only, "correct before and after"),
    (metrics_nan_when_nothing_correct, "return 0.0"),
    (metrics_divide_by_zero, "return 0.0"),
    (metrics_swapped, "order"),
    (metrics_percent, "percentages"),
    (metrics_list, "return a dict"),
]


def test_metrics_cases_agree_with_attack_summary():
    """Each case as attack results: a wrong text is skipped, a correct one succeeds if the
    attacked prediction is wrong."""
    for case in _metrics_cases():
        labels, clean, attacked = (t.tolist() for t in case.args)
        results = [
            AttackResult(
                "t", "t", y, c, a if c == y else c, 0.5, 0.5, success=c == y != a, skipped=c != y
            )
            for y, c, a in zip(labels, clean, attacked, strict=True)
        ]
        summary = attack_summary(results)
        for name, value in case.expected.items():
            assert summary[name] == pytest.approx(value, abs=1e-12), (case.description, name)


def test_metrics_cases_tell_the_bugs_apart():
    """Case 2 moves a wrong text back to its label and another to a wrong class: the
    definitions of the bugs differ there, and nowhere else needs to show it."""
    case = _metrics_cases()[1]
    assert case.expected == pytest.approx(
        {"clean_accuracy": 0.8, "accuracy_under_attack": 0.6, "attack_success_rate": 0.25}
    )
    assert metrics_under_attack_attacked_only(*case.args)["accuracy_under_attack"] == pytest.approx(
        0.7
    )
    assert metrics_changed_predictions(*case.args)["attack_success_rate"] == pytest.approx(0.5)


def test_a_metrics_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_attack_metrics(metrics_wrong_counted_as_successes)
    assert failure.value.message.splitlines() == [
        "✗ check_attack_metrics: case 1 of 7: 8 texts, 2 classes: 6 correct, the attack flips "
        "3 of them; the 2 wrong ones stay",
        "  attack_success_rate: expected 0.5, got 0.833333",
        "HINT: a success is a text that was correct before the attack and wrong after it: a "
        "text already wrong before the attack is not a success (the attack skipped it).",
    ]


# ----------------------------------------------------------------------------
# Typos
# ----------------------------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def reference_typos(text, rate, seed):
    return typos(text, rate, seed=seed)


def typos_by_hand(text, rate, seed, *, min_letters=3, edits=1, lowercase=False, same_ok=False):
    """Another correct answer (default switches), written as a learner would, or a bug."""
    rng = random.Random(seed)

    def edit_once(word):
        i = rng.randrange(len(word))
        kind = rng.choice(["drop", "insert", "replace"])
        if kind == "drop":
            return word[:i] + word[i + 1 :]
        letter = rng.choice(LETTERS)
        if word.isupper():
            letter = letter.upper()
        if kind == "insert":
            return word[:i] + letter + word[i:]
        while not same_ok and letter.lower() == word[i].lower():
            letter = rng.choice(LETTERS).upper() if word.isupper() else rng.choice(LETTERS)
        return word[:i] + (letter.upper() if word[i].isupper() else letter.lower()) + word[i + 1 :]

    def edit(match):
        word = match.group()
        if len(word) >= min_letters and rng.random() < rate:
            if lowercase:
                word = word.lower()
            for _ in range(edits):
                word = edit_once(word)
        return word

    return re.sub(r"[A-Za-z]+", edit, text)


def typos_short_words_too(text, rate, seed):
    return typos_by_hand(text, rate, seed, min_letters=1)


def typos_two_edits(text, rate, seed):
    return typos_by_hand(text, rate, seed, edits=2)


def typos_lowercased(text, rate, seed):
    return typos_by_hand(text, rate, seed, lowercase=True)


def typos_can_replace_a_letter_by_itself(text, rate, seed):
    return typos_by_hand(text, rate, seed, same_ok=True)


def typos_per_letter(text, rate, seed):
    rng = random.Random(seed)

    def edit(match):
        word = match.group()
        if len(word) < 3:
            return word
        letters = [rng.choice(LETTERS) if rng.random() < rate else c for c in word]
        return "".join(letters)

    return re.sub(r"[A-Za-z]+", edit, text)


def typos_split_on_spaces(text, rate, seed):
    rng = random.Random(seed)
    words = []
    for word in text.split():
        if len(word) >= 3 and rng.random() < rate:
            i = rng.randrange(len(word))
            word = word[:i] + word[i + 1 :]
        words.append(word)
    return " ".join(words)


def typos_global_random(text, rate, seed):
    def edit(match):
        word = match.group()
        if len(word) >= 3 and random.random() < rate:
            i = random.randrange(len(word))
            return word[:i] + word[i + 1 :]
        return word

    return re.sub(r"[A-Za-z]+", edit, text)


def typos_fixed_seed(text, rate, seed):
    return typos(text, rate, seed=0)


def typos_ignore_rate(text, rate, seed):
    return typos(text, 1.0, seed=seed)


def typos_one_draw_per_text(text, rate, seed):
    return typos(text, 1.0 if random.Random(seed).random() < rate else 0.0, seed=seed)


TYPO_BUGS = [
    (typos_short_words_too, "1 or 2 letters"),
    (typos_two_edits, "exactly one edit"),
    (typos_per_letter, "not letters"),
    (typos_lowercased, "is a capital"),
    (typos_can_replace_a_letter_by_itself, "always changes the word"),
    (typos_split_on_spaces, "re.sub"),
    (typos_global_random, "random.Random(seed)"),
    (typos_fixed_seed, "seed argument"),
    (typos_ignore_rate, "no word is chosen"),
    (typos_one_draw_per_text, "once per word"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_attack_metrics: (attack_metrics, METRICS_BUGS),
    check_typos: (reference_typos, TYPO_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_attack_metrics, attack_metrics_by_loop, 7),
        (check_typos, typos_by_hand, 7),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_16_checkers_pass_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"


def test_the_typo_checker_accepts_other_seeds_of_a_correct_solution():
    """The rate is checked within 4.5 standard deviations: correct answers pass whatever
    their random draws."""
    for offset in range(1, 9):
        assert check_typos(lambda text, rate, seed, k=offset: typos(text, rate, seed=seed + 97 * k))


def test_a_typo_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_typos(typos_short_words_too)
    lines = failure.value.message.splitlines()
    assert lines[0] == (
        "✗ check_typos: case 2 of 7: rate 1, a text with capitals, an all-capital word, "
        "2-letter words, digits, a tab"
    )
    assert re.fullmatch(r"  word 0, 'A', became '\w+': a 1-letter word was edited", lines[1])
    assert lines[2] == (
        "HINT: words of 1 or 2 letters are never edited: only words of 3+ letters may get a typo."
    )


def test_typo_cases_hold_what_their_descriptions_say():
    cases = _typo_cases()
    for case in cases:
        text, rate, seed = case.args
        words = split_words(text)[0]
        eligible = sum(len(w) >= 3 for w in words)
        if "400 words" in case.description:
            assert eligible > 300 and case.expected.count and case.expected.other_seed
            assert "\t" in text and "\n" in text and any(w.isupper() and len(w) > 2 for w in words)
        if "no word of 3+" in case.description:
            assert words and eligible == 0
    assert {case.args[1] for case in cases} == {0.0, 0.1, 0.5, 1.0}


def test_edit_distance():
    assert _edit_distance("great", "graet") == 1
    assert _edit_distance("great", "gret") == 1
    assert _edit_distance("great", "greats") == 1
    assert _edit_distance("kitten", "sitting") == 3
    assert _edit_distance("", "abc") == 3
    assert _edit_distance("ab", "ab") == 0
    assert _edit_distance("abcd", "badc") == 2
