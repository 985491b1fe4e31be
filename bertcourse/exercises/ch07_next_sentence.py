"""Chapter 7, next sentence prediction: sentence pairs, judged by their rules."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data import truncate_pair
from ._grading import (
    Case,
    Problem,
    _first_line,
    _location,
    _require_callable,
    _run_cases,
    _unwrap_scalar,
)

__all__ = [
    "check_nsp_pairs",
    "check_hard_nsp_pairs",
]


# Token ids of the synthetic documents say where they come from:
# 10_000 * document + 100 * sentence + position, so every token of an answer can be traced back.
_NSP_DOCUMENT_STRIDE, _NSP_SENTENCE_STRIDE = 10_000, 100
_NSP_LABEL_NAMES = ("IsNext", "NotNext")
_NSP_MIN_PAIRS_FOR_BALANCE = 100  # fewer pairs say too little about a 50% rate
_NSP_BALANCE_STANDARD_ERRORS = 4.5  # a fair coin falls outside 4.5 standard errors ~1 in 150,000


@dataclass(frozen=True)
class _NspCase:
    """What an answer of nsp_pairs is judged against."""

    documents: list
    max_tokens: int


def _nsp_documents(seed: int, num_documents: int, sentences: tuple, lengths: tuple) -> list:
    """Documents of (min, max) sentences of (min, max) tokens whose ids encode their origin."""
    rng = random.Random(seed)
    return [
        [
            [
                _NSP_DOCUMENT_STRIDE * d + _NSP_SENTENCE_STRIDE * s + k
                for k in range(rng.randint(*lengths))
            ]
            for s in range(rng.randint(*sentences))
        ]
        for d in range(num_documents)
    ]


def _nsp_origin(spec: _NspCase, tokens: Sequence[int]) -> tuple[int, int] | None:
    """(document, sentence) of a contiguous piece of one sentence, or None."""
    places = set()
    positions = []
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, int):
            return None
        document, rest = divmod(token, _NSP_DOCUMENT_STRIDE)
        sentence, position = divmod(rest, _NSP_SENTENCE_STRIDE)
        places.add((document, sentence))
        positions.append(position)
    if len(places) != 1:
        return None
    document, sentence = places.pop()
    if not (0 <= document < len(spec.documents) and 0 <= sentence < len(spec.documents[document])):
        return None
    source = spec.documents[document][sentence]
    if list(tokens) != source[positions[0] : positions[0] + len(tokens)]:
        return None
    return document, sentence


def _nsp_longest_first(length_a: int, length_b: int, max_tokens: int) -> list[int]:
    """The lengths, shortest first, that `bertcourse.data.truncate_pair` leaves.

    It removes one token at a time from the longer side; the end it takes it
    from is random, the lengths are not.
    """
    tokens_a, tokens_b = [0] * length_a, [0] * length_b
    truncate_pair(tokens_a, tokens_b, max_tokens, random.Random(0))
    return sorted((len(tokens_a), len(tokens_b)))


def _nsp_where(place: tuple[int, int]) -> str:
    return f"sentence {place[1]} of document {place[0]}"


# One pair of an answer, checked for form: (number, tokens_a, tokens_b, label,
# (document, sentence) of A, (document, sentence) of B).
_NspPair = tuple[int, Sequence[int], Sequence[int], int, tuple[int, int], tuple[int, int]]


def _nsp_problem(spec: _NspCase, answer: Any) -> Problem | None:
    """The first rule an answer of nsp_pairs breaks, with a hint that names it."""
    pairs = _nsp_pairs(spec, answer)
    if isinstance(pairs, Problem):
        return pairs
    return (
        _nsp_coverage_problem(spec, pairs)
        or _nsp_label_problem(pairs)
        or _nsp_truncation_problem(spec, pairs)
        or _nsp_balance_problem(pairs)
    )


def _nsp_pairs(spec: _NspCase, answer: Any) -> list[_NspPair] | Problem:
    """The answer's pairs with where each side comes from, or the problem of the first bad one."""
    if not isinstance(answer, (list, tuple)):
        return Problem(
            [f"expected a list of (tokens_a, tokens_b, label) tuples, got {type(answer).__name__}"],
            "collect the pairs in a list and return it.",
        )
    pairs = []
    for number, pair in enumerate(answer):
        checked = _nsp_pair(spec, number, pair)
        if isinstance(checked, Problem):
            return checked
        pairs.append(checked)
    return pairs


def _nsp_pair(spec: _NspCase, number: int, pair: Any) -> _NspPair | Problem:
    """One (tokens_a, tokens_b, label) with its sides traced back, or what is wrong with its form."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 3:
        return Problem(
            [f"pair {number} is {pair!r:.80}, not a (tokens_a, tokens_b, label) tuple"],
            "append (tokens_a, tokens_b, label) for each pair.",
        )
    tokens_a, tokens_b, label = pair
    label = _unwrap_scalar(label)
    if label not in (0, 1) or isinstance(label, float):
        return Problem(
            [f"pair {number} has label {label!r}; labels are the ints 0 and 1"],
            "0 means IsNext (B follows A), 1 means NotNext.",
        )
    if not isinstance(tokens_a, (list, tuple)) or not isinstance(tokens_b, (list, tuple)):
        return Problem(
            [f"pair {number}: tokens_a and tokens_b must be lists of token ids"],
            "copy the sentences as lists: list(document[i]).",
        )
    if not tokens_a or not tokens_b:
        side = "A" if not tokens_a else "B"
        return Problem(
            [f"pair {number}: segment {side} is empty ({len(tokens_a)} + {len(tokens_b)} tokens)"],
            "every side needs at least one token. An empty side usually comes from the "
            "truncation: remove tokens from the longer side, one at a time, until the pair "
            "fits; that never empties a side.",
        )
    origin_a, origin_b = _nsp_origin(spec, tokens_a), _nsp_origin(spec, tokens_b)
    if origin_a is None or origin_b is None:
        return Problem(
            [
                f"pair {number}: segment {'A' if origin_a is None else 'B'} is not a piece of one "
                "sentence of the documents"
            ],
            "each side is one sentence (or what truncation leaves of it), copied from the "
            "documents you were given.",
        )
    return number, tokens_a, tokens_b, int(label), origin_a, origin_b


def _nsp_coverage_problem(spec: _NspCase, pairs: list[_NspPair]) -> Problem | None:
    """A sentence with a next sentence that starts no pair, or one that starts two."""
    expected_firsts = {
        (d, s) for d, document in enumerate(spec.documents) for s in range(len(document) - 1)
    }
    firsts = [origin_a for _, _, _, _, origin_a, _ in pairs]
    if sorted(firsts) == sorted(expected_firsts):
        return None
    missing = sorted(expected_firsts - set(firsts))
    extra = sorted(set(firsts) - expected_firsts) or sorted(
        {f for f in firsts if firsts.count(f) > 1}
    )
    detail = (
        f"no pair starts with {_nsp_where(missing[0])}"
        if missing
        else f"A = {_nsp_where(extra[0])} is not expected (or comes twice)"
    )
    return Problem(
        [
            f"expected {len(expected_firsts)} pairs, one per sentence that has a next "
            f"sentence; got {len(pairs)}: {detail}"
        ],
        "loop over every document and over position in range(len(document) - 1): A is "
        "document[position]; the last sentence of a document has no next sentence.",
    )


def _nsp_is_next(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether sentence b comes right after sentence a in the same document."""
    return a[0] == b[0] and b[1] == a[1] + 1


def _nsp_label_problem(pairs: list[_NspPair]) -> Problem | None:
    """Labels swapped, a NotNext B from A's document, or an IsNext B that does not follow A."""
    next_but_labelled_1 = [p for p in pairs if p[3] == 1 and _nsp_is_next(p[4], p[5])]
    other_but_labelled_0 = [p for p in pairs if p[3] == 0 and p[4][0] != p[5][0]]
    if next_but_labelled_1 and other_but_labelled_0:
        number, _, _, _, a, b = next_but_labelled_1[0]
        return Problem(
            [
                f"pair {number}: B = {_nsp_where(b)} follows A = {_nsp_where(a)}, "
                "but the label is 1 (NotNext)"
            ],
            "the labels are swapped: 0 means IsNext (B is the next sentence), 1 means NotNext "
            "(B from another document).",
        )
    for number, _, _, label, a, b in pairs:
        if label == 1 and b[0] == a[0]:
            return Problem(
                [
                    f"pair {number} is NotNext (label 1), but A = {_nsp_where(a)} and "
                    f"B = {_nsp_where(b)} come from the same document"
                ],
                "a NotNext B comes from another document: draw its index among the others, "
                "e.g. other = rng.randrange(len(documents) - 1), plus 1 if other >= index.",
            )
        if label == 0 and not _nsp_is_next(a, b):
            where = "the same document" if b[0] == a[0] else "another document"
            return Problem(
                [
                    f"pair {number} is IsNext (label 0), but B = {_nsp_where(b)} ({where}) is not "
                    f"the sentence after A = {_nsp_where(a)}"
                ],
                "an IsNext B is the sentence right after A: document[position + 1], not a "
                "random sentence.",
            )
    return None


def _nsp_truncation_problem(spec: _NspCase, pairs: list[_NspPair]) -> Problem | None:
    """A pair longer than max_tokens, or not cut to the lengths longest-first truncation leaves."""
    for number, tokens_a, tokens_b, _, a, b in pairs:
        total = len(tokens_a) + len(tokens_b)
        if total > spec.max_tokens:
            return Problem(
                [
                    f"pair {number} has {len(tokens_a)} + {len(tokens_b)} = {total} tokens, "
                    f"more than max_tokens = {spec.max_tokens}"
                ],
                "truncate each pair: while len(tokens_a) + len(tokens_b) > max_tokens, remove "
                "one token from the longer side.",
            )
        full_a = len(spec.documents[a[0]][a[1]])
        full_b = len(spec.documents[b[0]][b[1]])
        expected = _nsp_longest_first(full_a, full_b, spec.max_tokens)
        if sorted((len(tokens_a), len(tokens_b))) != expected:
            return Problem(
                [
                    f"pair {number}: sentences of {full_a} and {full_b} tokens became "
                    f"{len(tokens_a)} + {len(tokens_b)} with max_tokens = {spec.max_tokens}; "
                    f"longest-first truncation keeps {expected[1]} + {expected[0]}"
                ],
                "truncate longest-first, one token at a time from the longer side, and only "
                "while the pair is too long (a pair that fits keeps every token).",
            )
    return None


def _nsp_balance_problem(pairs: list[_NspPair]) -> Problem | None:
    """Enough pairs, and a share of NotNext too far from 50%."""
    if len(pairs) < _NSP_MIN_PAIRS_FOR_BALANCE:
        return None
    rate = sum(p[3] for p in pairs) / len(pairs)
    tolerance = _NSP_BALANCE_STANDARD_ERRORS * 0.5 / math.sqrt(len(pairs))
    if abs(rate - 0.5) <= tolerance:
        return None
    return Problem(
        [f"{rate:.1%} of the {len(pairs)} pairs are NotNext; expected 50% (± {tolerance:.1%})"],
        "flip a fair coin for each pair with the rng you are given: IsNext if "
        "rng.random() < 0.5, else NotNext.",
    )


def check_nsp_pairs(fn: Callable) -> bool:
    """Grade `fn(documents, rng, max_tokens)` -> [(tokens_a, tokens_b, label)], a simple NSP builder.

    documents: lists of sentences of token ids; rng: a random.Random. One pair for every
    sentence that has a next sentence: A is that sentence; B is the next sentence (label 0,
    IsNext) or, with probability 1/2, a random sentence of another document (label 1,
    NotNext); then longest-first truncation to max_tokens. The pairs are random, so the
    checker checks rules instead of comparing with one answer: every token id of its
    synthetic documents says which document and sentence it comes from.
    """
    _require_callable("check_nsp_pairs", fn)

    @functools.wraps(fn)
    def with_fresh_rng(documents: list, seed: int, max_tokens: int) -> Any:
        return fn(documents, random.Random(seed), max_tokens)

    def add(description: str, seed: int, documents: list, max_tokens: int) -> Case:
        return Case(description, (documents, seed, max_tokens), _NspCase(documents, max_tokens))

    cases = [
        add(
            "3 documents of 6 to 10 sentences of 2 to 12 tokens, max_tokens 30",
            1,
            _nsp_documents(11, 3, (6, 10), (2, 12)),
            30,
        ),
        add(
            "2 documents: a NotNext B must come from the other one; max_tokens 64",
            2,
            _nsp_documents(12, 2, (4, 8), (1, 20)),
            64,
        ),
        add(
            "300 documents of 1 to 12 sentences of 1 to 30 tokens, max_tokens 24 (many pairs "
            "are truncated)",
            3,
            _nsp_documents(13, 300, (1, 12), (1, 30)),
            24,
        ),
        add(
            "sentences of 3 to 6 tokens, max_tokens 3 (every pair is truncated)",
            4,
            _nsp_documents(14, 20, (2, 6), (3, 6)),
            3,
        ),
        add(
            "one long document and many one-sentence ones, max_tokens 40",
            5,
            [_nsp_documents(15, 1, (30, 30), (5, 25))[0]]
            + [[[_NSP_DOCUMENT_STRIDE * d + k for k in range(7)]] for d in range(1, 6)],
            40,
        ),
    ]
    return _run_cases(
        "check_nsp_pairs",
        with_fresh_rng,
        cases,
        _nsp_problem,
        (),
        "print a few of your pairs for a small document by hand and check each rule of the "
        "exercise.",
    )


# ----------------------------------------------------------------------------
# Harder negatives: NotNext from A's own document
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _HardNspCase(_NspCase):
    """What an answer of hard_nsp_pairs is judged against: also the smallest distance."""

    min_gap: int = 3


@dataclass(frozen=True)
class _RaisedIndexError:
    """The learner's function raised IndexError (rng.choice of an empty list, most likely)."""

    where: str
    message: str


def _far_sentences(spec: _HardNspCase, place: tuple[int, int]) -> list[int]:
    """The sentences of A's document at least min_gap sentences away from A, before or after."""
    document, sentence = place
    return [s for s in range(len(spec.documents[document])) if abs(s - sentence) >= spec.min_gap]


def _hard_nsp_problem(spec: _HardNspCase, answer: Any) -> Problem | None:
    """The first rule an answer of hard_nsp_pairs breaks, with a hint that names it."""
    if isinstance(answer, _RaisedIndexError):
        return Problem(
            [f"your function raised IndexError{answer.where}: {answer.message}"],
            "some documents have no sentence at least min_gap away from A (short documents, or "
            "A in the middle of one): rng.choice of an empty list fails. Fall back to a random "
            "sentence of another document there, as in Exercise 1.",
        )
    pairs = _nsp_pairs(spec, answer)
    if isinstance(pairs, Problem):
        return pairs
    return (
        _nsp_coverage_problem(spec, pairs)
        or _hard_label_problem(spec, pairs)
        or _nsp_truncation_problem(spec, pairs)
        or _nsp_balance_problem(pairs)
        or _hard_spread_problem(spec, pairs)
    )


def _hard_label_problem(spec: _HardNspCase, pairs: list[_NspPair]) -> Problem | None:
    """Labels swapped, an IsNext B that does not follow A, or a NotNext B from the wrong place."""
    next_but_labelled_1 = [p for p in pairs if p[3] == 1 and _nsp_is_next(p[4], p[5])]
    far_but_labelled_0 = [p for p in pairs if p[3] == 0 and not _nsp_is_next(p[4], p[5])]
    if next_but_labelled_1 and far_but_labelled_0:
        number, _, _, _, a, b = next_but_labelled_1[0]
        return Problem(
            [
                f"pair {number}: B = {_nsp_where(b)} follows A = {_nsp_where(a)}, "
                "but the label is 1 (NotNext)"
            ],
            "the labels are swapped: 0 means IsNext (B is the next sentence), 1 means NotNext.",
        )
    for number, _, _, label, a, b in pairs:
        if label == 0:
            if not _nsp_is_next(a, b):
                return Problem(
                    [
                        f"pair {number} is IsNext (label 0), but B = {_nsp_where(b)} is not the "
                        f"sentence after A = {_nsp_where(a)}"
                    ],
                    "an IsNext B is the sentence right after A: document[position + 1].",
                )
            continue
        problem = _hard_not_next_problem(spec, number, a, b)
        if problem is not None:
            return problem
    return None


def _hard_not_next_problem(
    spec: _HardNspCase, number: int, a: tuple[int, int], b: tuple[int, int]
) -> Problem | None:
    """Where a NotNext B must come from: A's document, min_gap away; another one if none is."""
    far = _far_sentences(spec, a)
    gap = spec.min_gap
    head = f"pair {number} is NotNext (label 1), A = {_nsp_where(a)}, B = {_nsp_where(b)}"
    if b[0] == a[0]:
        distance = abs(b[1] - a[1])
        if distance >= gap:
            return None
        if not far:
            return Problem(
                [f"{head}: no sentence of this document is {gap} or more away from A"],
                "when A's document has no sentence at least min_gap away, B comes from a "
                "random other document (as in Exercise 1), not from A's own.",
            )
        off_by_one = distance == gap - 1
        return Problem(
            [f"{head}: only {distance} sentence(s) apart, with min_gap = {gap}"],
            "off by one: B may be exactly min_gap sentences away, abs(j - position) >= min_gap."
            if off_by_one
            else "B must be at least min_gap sentences away from A, before or after it: "
            "abs(j - position) >= min_gap. A nearer sentence shares too much with A.",
        )
    if not far:
        return None
    only_before = all(s < a[1] for s in far)
    return Problem(
        [
            f"{head}: from another document, although sentence(s) {far[:5]} of A's document "
            f"are at least {gap} away"
        ],
        "look in both directions: a sentence before A, at least min_gap away, is a valid "
        "NotNext B too."
        if only_before
        else "a NotNext B comes from A's own document whenever it has a sentence at least "
        "min_gap away; only otherwise from another document.",
    )


def _hard_spread_problem(spec: _HardNspCase, pairs: list[_NspPair]) -> Problem | None:
    """NotNext Bs always the nearest (or the farthest) allowed sentence, never a random one."""
    choices = []  # (index of B among the allowed sentences, how many there were)
    for _, _, _, label, a, b in pairs:
        far = _far_sentences(spec, a)
        if label == 1 and b[0] == a[0] and len(far) >= 3:
            choices.append((far.index(b[1]), len(far)))
    if len(choices) < 30:
        return None
    for which, pick in (("first", lambda n: 0), ("last", lambda n: n - 1)):
        if all(index == pick(count) for index, count in choices):
            return Problem(
                [
                    f"in all {len(choices)} NotNext pairs with 3 or more allowed sentences, B is "
                    f"the {which} of them"
                ],
                "choose B at random among the allowed sentences: rng.choice(allowed).",
            )
    return None


def check_hard_nsp_pairs(fn: Callable) -> bool:
    """Grade `fn(documents, rng, max_tokens, min_gap=3)` -> [(tokens_a, tokens_b, label)].

    As `check_nsp_pairs`, but a NotNext B (label 1) is a random sentence of A's
    own document at least min_gap sentences away from A (before or after it);
    only where the document has none does B come from another document. The
    token ids of the synthetic documents say where every side comes from.
    """
    _require_callable("check_hard_nsp_pairs", fn)

    @functools.wraps(fn)
    def with_fresh_rng(documents: list, seed: int, max_tokens: int, min_gap: int) -> Any:
        try:
            return fn(documents, random.Random(seed), max_tokens, min_gap)
        except IndexError as error:
            where = _location(error, getattr(fn, "__name__", None))
            return _RaisedIndexError(where, _first_line(error))

    def add(description: str, seed: int, documents: list, max_tokens: int, gap: int) -> Case:
        return Case(
            description,
            (documents, seed, max_tokens, gap),
            _HardNspCase(documents, max_tokens, gap),
        )

    cases = [
        add(
            "3 documents of 6 to 10 sentences of 2 to 12 tokens, max_tokens 30, min_gap 3",
            1,
            _nsp_documents(21, 3, (6, 10), (2, 12)),
            30,
            3,
        ),
        add(
            "one long document and 20 of 2 or 3 sentences (none of them has a sentence 3 away "
            "from another), max_tokens 40, min_gap 3",
            2,
            [_nsp_documents(22, 1, (12, 12), (2, 10))[0]]
            + _nsp_documents(23, 21, (2, 3), (2, 10))[1:],
            40,
            3,
        ),
        add(
            "40 documents of exactly 4 sentences: sentences 0 and 3 are 3 apart, the middle "
            "ones have no partner; max_tokens 64, min_gap 3",
            3,
            _nsp_documents(24, 40, (4, 4), (1, 12)),
            64,
            3,
        ),
        add(
            "300 documents of 1 to 12 sentences of 1 to 30 tokens, max_tokens 24 (many pairs "
            "are truncated), min_gap 3",
            4,
            _nsp_documents(25, 300, (1, 12), (1, 30)),
            24,
            3,
        ),
        add(
            "60 documents of 3 to 9 sentences, max_tokens 64, min_gap 2",
            5,
            _nsp_documents(26, 60, (3, 9), (1, 15)),
            64,
            2,
        ),
    ]
    return _run_cases(
        "check_hard_nsp_pairs",
        with_fresh_rng,
        cases,
        _hard_nsp_problem,
        (),
        "print your pairs for one document of 6 sentences by hand: which sentences may be a "
        "NotNext B for each A?",
    )
