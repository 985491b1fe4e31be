"""Chapter 16, where a classifier breaks: the metrics of an attack, typos by their definition.

The exercises, as the chapter states them:

**Exercise 1 (coding, ★☆☆): attack metrics.** Write `attack_metrics(labels,
clean_predictions, attacked_predictions)`: three (N,) tensors of class ids, the true labels,
the classifier's predictions on the original texts and on the attacked texts. Return a dict
of three floats in [0, 1]:

- "clean_accuracy": the fraction of texts predicted correctly before the attack;
- "accuracy_under_attack": the fraction still correct after it. A text that was wrong
  before the attack counts as wrong, whatever its attacked prediction (the attack skips
  such texts; a real attack leaves them as they were, the checker does not always);
- "attack_success_rate": among the texts correct before the attack, the fraction the attack
  made wrong; 0.0 when no text was correct (there was nothing to attack). A text that was
  already wrong is never a success.

The checker compares them with `bertcourse.robustness.attack_summary`'s definitions.

**Exercise 2 (coding, ★★☆): typos.** Write `typos(text, rate, seed)`. A word is a maximal
run of the letters a-z and A-Z; everything between words (spaces, tabs, punctuation,
digits) comes back unchanged. Draw all randomness from `random.Random(seed)`, so the same
seed gives the same text. Each word of 3 or more letters, independently, is chosen with
probability `rate` and gets exactly ONE edit that changes it: swap two neighbouring
(different) letters, drop a letter, insert a letter a-z, or replace a letter by a different
one; keep the word's case (an all-capital word stays all capitals, a lowercase one
lowercase). Words of 1 or 2 letters are never edited; with rate 0 the text comes back
unchanged, with rate 1 every word of 3+ letters is edited. Your edits need not be
`bertcourse.robustness.typos`' edits: the checker tests these properties, over texts of a
few hundred words for the rate.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..robustness import split_words
from ._grading import (
    Case,
    Problem,
    _require_callable,
    _run_cases,
    _unwrap_scalar,
    _variant,
)

__all__ = [
    "check_attack_metrics",
    "check_typos",
]


def _with_learners_name(wrapper: Callable, fn: Callable) -> Callable:
    """`wrapper` reported under the learner's function name, as the checkers' messages use it."""
    functools.update_wrapper(wrapper, fn)
    wrapper.__name__ = getattr(fn, "__name__", "your function")
    return wrapper


# ----------------------------------------------------------------------------
# Exercise 1: attack metrics
# ----------------------------------------------------------------------------

METRIC_NAMES = ("clean_accuracy", "accuracy_under_attack", "attack_success_rate")


def _attack_metrics(
    labels: torch.Tensor,
    clean_predictions: torch.Tensor,
    attacked_predictions: torch.Tensor,
    *,
    swap: bool = False,
    success_over: str = "correct",
    successes: str = "flipped",
    under_attack: str = "both",
    nothing_correct: str = "zero",
    scale: float = 1.0,
) -> dict[str, float]:
    """The metrics (default switches), or a classic mistake in them."""
    if swap:
        clean_predictions, attacked_predictions = attacked_predictions, clean_predictions
    correct = clean_predictions == labels  # (N,)
    survived = attacked_predictions == labels
    count = len(labels)
    still_correct = {
        "both": correct & survived,
        "clean": correct,
        "attacked": survived,
    }[under_attack]
    numerator = {
        "flipped": correct & ~survived,
        "wrong_after": ~survived,
        "changed": attacked_predictions != clean_predictions,
    }[successes]
    denominator = int(correct.sum()) if success_over == "correct" else count
    if denominator == 0:
        success_rate = 0.0 if nothing_correct == "zero" else math.nan
    else:
        success_rate = int(numerator.sum()) / denominator
    return {
        "clean_accuracy": scale * int(correct.sum()) / count,
        "accuracy_under_attack": scale * int(still_correct.sum()) / count,
        "attack_success_rate": scale * success_rate,
    }


def _metrics_case(description: str, labels: list[int], clean: list[int], attacked: list[int]):
    args = tuple(torch.tensor(values) for values in (labels, clean, attacked))
    return Case(description, args, _attack_metrics(*args))


def _metrics_cases() -> list[Case]:
    """Two and five classes, wrong texts moved by the attack, none or all correct, one text,
    a large random set."""
    g = torch.Generator().manual_seed(16)
    labels = torch.randint(0, 3, (200,), generator=g)
    clean = torch.where(
        torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, 3, (200,), generator=g)
    )
    flipped = (clean == labels) & (torch.rand(200, generator=g) < 0.35)
    attacked = torch.where(flipped, (labels + 1) % 3, clean)
    return [
        _metrics_case(
            "8 texts, 2 classes: 6 correct, the attack flips 3 of them; the 2 wrong ones stay",
            [1, 0, 1, 1, 0, 0, 1, 0],
            [1, 0, 1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1, 1, 1, 0],
        ),
        _metrics_case(
            "10 texts, 5 classes: 8 correct, 2 flipped; of the 2 wrong ones, text 7 moves to "
            "another wrong class and text 8 to its own label",
            [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
            [0, 1, 2, 3, 4, 0, 1, 3, 0, 4],
            [0, 2, 2, 1, 4, 0, 1, 4, 3, 4],
        ),
        _metrics_case(
            "4 texts, none correct before the attack: nothing to attack",
            [1, 0, 1, 0],
            [0, 1, 0, 1],
            [0, 1, 0, 1],
        ),
        _metrics_case(
            "6 texts, all correct, the attack flips none",
            [0, 1, 1, 0, 2, 2],
            [0, 1, 1, 0, 2, 2],
            [0, 1, 1, 0, 2, 2],
        ),  # fmt: skip
        _metrics_case(
            "5 texts, all correct, the attack flips all",
            [1, 1, 0, 0, 1],
            [1, 1, 0, 0, 1],
            [0, 0, 1, 1, 0],
        ),  # fmt: skip
        _metrics_case("a single text, correct, then flipped", [2], [2], [0]),
        Case(
            "200 texts, 3 classes, about 60% correct, about a third of those flipped",
            (labels, clean, attacked),
            _attack_metrics(labels, clean, attacked),
        ),
    ]


_METRIC_MISTAKES = [
    _variant(
        "the success rate is over the texts the attack could attack: successes / originally "
        "correct texts, not / all texts.",
        _attack_metrics,
        success_over="all",
    ),
    _variant(
        "a success is a text that was correct before the attack and wrong after it: a text "
        "already wrong before the attack is not a success (the attack skipped it).",
        _attack_metrics,
        successes="wrong_after",
    ),
    _variant(
        "a success is a text that was correct before and wrong after: a wrong text whose "
        "prediction merely changed is not one.",
        _attack_metrics,
        successes="changed",
    ),
    _variant(
        "accuracy under attack compares the labels with the attacked predictions, not the "
        "clean ones.",
        _attack_metrics,
        under_attack="clean",
    ),
    _variant(
        "a text wrong before the attack counts as wrong under attack, even when its attacked "
        "prediction matches the label: correct under attack means correct before and after.",
        _attack_metrics,
        under_attack="attacked",
    ),
    _variant(
        "the arguments come in the order (labels, clean_predictions, attacked_predictions): "
        "clean and attacked predictions are swapped.",
        _attack_metrics,
        swap=True,
    ),
    _variant(
        "return fractions in [0, 1], not percentages.",
        _attack_metrics,
        scale=100.0,
    ),
]

_NOTHING_CORRECT = (
    "when no text is correct before the attack there is nothing to attack: return 0.0 for "
    "the success rate instead of dividing 0 by 0."
)


@dataclass(frozen=True)
class _Raised:
    """The learner's function raised this error (ZeroDivisionError), reported as an answer."""

    error: BaseException


def _metrics_problem(expected: dict[str, float], got: Any) -> Problem | None:
    if isinstance(got, _Raised):
        return Problem([f"raised ZeroDivisionError: {got.error}"], _NOTHING_CORRECT)
    if not isinstance(got, dict):
        return Problem(
            [f"expected a dict, got a {type(got).__name__}"],
            f"return a dict with the keys {', '.join(METRIC_NAMES)}.",
        )
    missing = [name for name in METRIC_NAMES if name not in got]
    if missing:
        return Problem(
            [f"the dict lacks {', '.join(repr(m) for m in missing)}"],
            f"return a dict with the keys {', '.join(METRIC_NAMES)}, spelled exactly so.",
        )
    for name in METRIC_NAMES:
        value, target = _unwrap_scalar(got[name]), expected[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return Problem(
                [f"{name} is a {type(value).__name__}, not a number"],
                "return plain numbers (float(...) or tensor.item()).",
            )
        if math.isnan(target) and math.isnan(value):
            continue
        if not math.isfinite(value):
            return Problem([f"{name}: expected {target:.6g}, got {value}"], _NOTHING_CORRECT, True)
        if abs(value - target) > 1e-6:  # float32 answers round at ~1e-7
            return Problem([f"{name}: expected {target:.6g}, got {value:.6g}"])
    return None


def _catching_zero_division(fn: Callable) -> Callable:
    def answer(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZeroDivisionError as error:
            return _Raised(error)

    return _with_learners_name(answer, fn)


def check_attack_metrics(fn: Callable) -> bool:
    """Grade `fn(labels, clean_predictions, attacked_predictions)` -> {"clean_accuracy",
    "accuracy_under_attack", "attack_success_rate"}.

    clean_accuracy: correct before / N. accuracy_under_attack: correct before AND after /
    N. attack_success_rate: (correct before and wrong after) / (correct before), 0.0 when
    nothing was correct.
    """
    _require_callable("check_attack_metrics", fn)
    return _run_cases(
        "check_attack_metrics",
        _catching_zero_division(fn),
        _metrics_cases(),
        _metrics_problem,
        _METRIC_MISTAKES,
        "work out case 1 by hand: which texts are correct before the attack, which of those "
        "are wrong after it, and what each rate divides by.",
    )


# ----------------------------------------------------------------------------
# Exercise 2: typos
# ----------------------------------------------------------------------------

_WORD_POOL = (
    "the film was a slow but rewarding study of grief and it is by far the best thing "
    "director Lena Park has made her actors never push and every scene breathes I expected "
    "little from NASA footage yet the launch sequence is stunning an odd mix of awe and "
    "dread do not miss it"
).split()


@dataclass(frozen=True)
class _TypoSpec:
    """A case of check_typos: the arguments, and which statistical checks apply."""

    text: str
    rate: float
    seed: int
    count: bool = False  # about rate x eligible words edited
    other_seed: bool = False  # the next seed gives another text


def _long_text(seed: int, words: int) -> str:
    """Real words (some capitalised, some all capitals), punctuation, digits, mixed spaces."""
    rng = random.Random(seed)
    pieces = []
    for _ in range(words):
        word = rng.choice(_WORD_POOL)
        style = rng.random()
        if style < 0.08:
            word = word.upper()
        elif style < 0.2:
            word = word.capitalize()
        pieces.append(word + rng.choice(["", "", "", "", ",", ".", "!", "'s", " (2x)", ";"]))
    return "".join(piece + rng.choice([" ", " ", " ", "  ", "\t", "\n"]) for piece in pieces)


def _typo_case(description: str, text: str, rate: float, seed: int, **checks: bool) -> Case:
    return Case(description, (text, rate, seed), _TypoSpec(text, rate, seed, **checks))


def _typo_cases() -> list[Case]:
    """Rate 0, rate 1 on short and long texts, nothing to edit, rates 0.1 and 0.5 over
    hundreds of words."""
    return [
        _typo_case(
            "rate 0, a short text with punctuation and double spaces",
            "The cat sat, didn't it?  Yes -- 42 times!\n",
            0.0,
            0,
        ),
        _typo_case(
            "rate 1, a text with capitals, an all-capital word, 2-letter words, digits, a tab",
            "A GREAT film, it is: the acting (by Jo and Ann) is superb...\tWe loved it; 10/10!",
            1.0,
            3,
        ),
        _typo_case(
            "rate 1, a text with no word of 3+ letters", "It is 42, ok? Go on: do it.", 1.0, 4
        ),
        _typo_case("rate 0.5, the empty text", "", 0.5, 2),
        _typo_case("rate 1, 300 words", _long_text(1, 300), 1.0, 11),
        _typo_case(
            "rate 0.1, 400 words (about 10% of the words of 3+ letters edited)",
            _long_text(2, 400),
            0.1,
            5,
            count=True,
            other_seed=True,
        ),
        _typo_case(
            "rate 0.5, 400 words (about half of the words of 3+ letters edited)",
            _long_text(3, 400),
            0.5,
            0,
            count=True,
            other_seed=True,
        ),
    ]


def _edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbouring letters (each 1)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


_SAME_SEED = (
    "the same seed must give the same text: make rng = random.Random(seed) inside your "
    "function and draw every random choice from it, not from the random module's functions."
)
_BETWEEN_WORDS = (
    "everything between words (spaces, tabs, newlines, punctuation, digits) comes back "
    "unchanged, and edits use letters a-z only: edit the runs of letters, e.g. "
    "re.sub(r'[A-Za-z]+', edit_word, text), rather than splitting and joining on spaces."
)
_SHORT_WORDS = "words of 1 or 2 letters are never edited: only words of 3+ letters may get a typo."
_ONE_EDIT = (
    "a chosen word gets exactly one edit (one swap, drop, insert or replace): the rate picks "
    "words, not letters, and a picked word is edited once."
)
_CASE = (
    "keep the word's case: a letter inserted into or replacing one of an all-capital word "
    "('NASA') is a capital, in a lowercase word a small letter."
)
_EVERY_WORD = (
    "with rate 1 every word of 3+ letters is edited, and an edit always changes the word: "
    "swap two different letters, replace a letter by a different one."
)
_ONCE_PER_WORD = (
    "draw once per word of 3+ letters and edit it if rng.random() < rate: about rate x (the "
    "number of such words) change. A draw per letter edits far more words, one draw for "
    "the whole text all or none."
)
_SEED_ARGUMENT = (
    "use the seed argument: random.Random(seed), not a fixed seed, so that another seed "
    "gives other typos."
)


def _describe(word: str) -> str:
    return f"{word!r}" if len(word) <= 20 else f"{word[:20]!r}…"


def _typos_problem(spec: _TypoSpec, got: tuple[Any, Any, Any]) -> Problem | None:
    first, again, other = got
    if not isinstance(first, str):
        return Problem(
            [f"your function returned a {type(first).__name__}, not a str"],
            "return the new text as one string.",
        )
    if first != again:
        return Problem(
            [f"two calls with the same text, rate {spec.rate} and seed {spec.seed} differ"],
            _SAME_SEED,
        )
    words, gaps = split_words(spec.text)
    new_words, new_gaps = split_words(first)
    if new_gaps != gaps:
        for position, (old, new) in enumerate(zip(gaps, new_gaps, strict=False)):
            if old != new:
                where = f"after word {position}" if position else "before the first word"
                return Problem(
                    [f"between the words ({where}) expected {old!r}, got {new!r}"],
                    _BETWEEN_WORDS,
                )
        return Problem(
            [f"expected {len(words)} words and what lies between them, got {len(new_words)}"],
            _BETWEEN_WORDS,
        )
    for position, (old, new) in enumerate(zip(words, new_words, strict=True)):
        if old == new:
            continue
        where = f"word {position}, {_describe(old)}, became {_describe(new)}"
        if spec.rate == 0:
            return Problem(
                [f"{where} at rate 0"],
                "with rate 0 no word is chosen: the text comes back unchanged.",
            )
        if len(old) < 3:
            return Problem([f"{where}: a {len(old)}-letter word was edited"], _SHORT_WORDS)
        case_changed = (old.islower() and not new.islower()) or (
            old.isupper() and not new.isupper()
        )
        if case_changed and _edit_distance(old.lower(), new.lower()) <= 1:
            return Problem([f"{where}: the case changed"], _CASE)
        distance = _edit_distance(old, new)
        if distance != 1:
            return Problem([f"{where}: {distance} edits away, expected 1"], _ONE_EDIT)
    eligible = [i for i, word in enumerate(words) if len(word) >= 3]
    edited = sum(words[i] != new_words[i] for i in eligible)
    if spec.rate == 1 and edited < len(eligible):
        unchanged = next(words[i] for i in eligible if words[i] == new_words[i])
        return Problem(
            [f"rate 1, yet {_describe(unchanged)} came back unchanged ({edited} of "
             f"{len(eligible)} words of 3+ letters edited)"],
            _EVERY_WORD,
        )  # fmt: skip
    if spec.count:
        expected = spec.rate * len(eligible)
        allowed = 4.5 * math.sqrt(expected * (1 - spec.rate)) + 1
        if abs(edited - expected) > allowed:
            return Problem(
                [f"{edited} of the {len(eligible)} words of 3+ letters were edited; rate "
                 f"{spec.rate} expects about {expected:.0f} (±{allowed:.0f})"],
                _ONCE_PER_WORD,
            )  # fmt: skip
    if spec.other_seed and other == first:
        return Problem(
            [f"seeds {spec.seed} and {spec.seed + 1} gave the same text"], _SEED_ARGUMENT
        )
    return None


def _three_calls(fn: Callable) -> Callable:
    """fn twice with the case's seed (the same text?) and once with the next seed."""

    def answers(text: str, rate: float, seed: int) -> tuple[Any, Any, Any]:
        return fn(text, rate, seed), fn(text, rate, seed), fn(text, rate, seed + 1)

    return _with_learners_name(answers, fn)


def check_typos(fn: Callable) -> bool:
    """Grade `fn(text, rate, seed)` -> the text with typos (see the chapter's definition).

    The answer is random, so the checker tests properties: the same seed gives the same
    text; the characters between words are unchanged; words of 1-2 letters are unchanged;
    an edited word is exactly one edit (swap of neighbours, drop, insert, replace) from the
    original and keeps its case; rate 0 changes nothing, rate 1 every word of 3+ letters;
    about rate x the words of 3+ letters change (within 4.5 standard deviations of the
    binomial count); another seed gives another text.
    """
    _require_callable("check_typos", fn)
    return _run_cases(
        "check_typos",
        _three_calls(fn),
        _typo_cases(),
        _typos_problem,
        (),
        "print the words of case 2 before and after your function, side by side.",
    )
