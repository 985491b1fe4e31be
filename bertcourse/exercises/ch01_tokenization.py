"""Chapter 1, tokenization: greedy longest-match-first WordPiece."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..tokenization import WordpieceTokenizer
from ._grading import Case, Problem, _run_cases, _variant

__all__ = [
    "check_wordpiece",
]


_WORDPIECE_VOCAB = (
    "[UNK]",
    "<unk>",
    "un",
    "##aff",
    "##able",
    "##a",
    "##ff",
    "aff",
    "able",
    "play",
    "##ing",
    "##ed",
    "##s",
    "p",
    "##l",
    "##ay",
    "the",
    "t",
    "##h",
    "##e",
    "x",
    "##x",
    "a",
    "##b",
    "ab",
    "##bc",
    "##c",
    "d",
    "##play",
)


def _wordpiece_reference(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    tokenizer = WordpieceTokenizer(vocab, unk_token, max_input_chars_per_word)
    return tokenizer.tokenize_word(word)


def _wordpiece_variant(
    word,
    vocab,
    unk_token="[UNK]",
    max_input_chars_per_word=100,
    *,
    longest=True,
    prefix_continuations=True,
    prefix_first=False,
    whole_word_unk=True,
    max_check=">",
    honour_unk_token=True,
):
    """Greedy WordPiece, or one of its classic mistakes."""
    unk = unk_token if honour_unk_token else "[UNK]"
    too_long = (
        len(word) > max_input_chars_per_word
        if max_check == ">"
        else len(word) >= max_input_chars_per_word
        if max_check == ">="
        else False
    )
    if too_long:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        piece = None
        for end in ends:
            candidate = word[start:end]
            if (start > 0 and prefix_continuations) or (start == 0 and prefix_first):
                candidate = "##" + candidate
            if candidate in vocab:
                piece = candidate
                break
        if piece is None:
            if whole_word_unk:
                return [unk]
            pieces.append(unk)
            start += 1
            continue
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_case(description: str, word: str, vocab: Any, **options: Any) -> Case:
    """A case whose expected pieces come from the reference tokenizer."""
    expected = _wordpiece_reference(word, vocab, **options)
    return Case(description, (word, vocab), expected, options)


def _wordpiece_cases() -> list[Case]:
    """Sets and dicts as vocabularies, greedy matches, unknown words, the length limit."""
    vocab_set = set(_WORDPIECE_VOCAB)
    vocab_dict = {token: index for index, token in enumerate(_WORDPIECE_VOCAB)}
    return [
        _wordpiece_case('"unaffable" -> un ##aff ##able (vocab as a set)', "unaffable", vocab_set),
        _wordpiece_case('"playing", vocab as a dict (token -> id)', "playing", vocab_dict),
        _wordpiece_case('a word that is one vocabulary entry: "the"', "the", vocab_set),
        _wordpiece_case(
            'greedy longest match first: "abc" (the vocabulary has a, ab, ##b, ##bc, ##c)',
            "abc",
            vocab_set,
        ),
        _wordpiece_case('a single character: "x"', "x", vocab_set),
        _wordpiece_case(
            '"unq": "q" matches nothing, so the whole word is unknown', "unq", vocab_set
        ),
        _wordpiece_case(
            '"playedq" ("q" is unknown) with a custom unk_token "<unk>"',
            "playedq",
            vocab_dict,
            unk_token="<unk>",
        ),
        _wordpiece_case(
            "a word of 11 characters with max_input_chars_per_word=10",
            "playingplay",
            vocab_set,
            max_input_chars_per_word=10,
        ),
        _wordpiece_case(
            "a word of exactly max_input_chars_per_word=7 characters: still tokenized",
            "playing",
            vocab_set,
            max_input_chars_per_word=7,
        ),
        _wordpiece_case('repeated pieces: "xxxx"', "xxxx", vocab_set),
    ]


def _wordpiece_problem(expected: list[str], got: Any) -> Problem | None:
    """How the learner's pieces differ from the expected list, if they do."""
    if isinstance(got, str) or not isinstance(got, (list, tuple)):
        return Problem(
            [f"expected a list of strings, got {type(got).__name__} {got!r}"],
            "return a list of pieces, e.g. ['un', '##aff', '##able'].",
        )
    if list(got) == expected:
        return None
    return Problem([f"expected {expected}, got {list(got)}"])


_WORDPIECE_MISTAKES = [
    _variant(
        "take the *longest* prefix in the vocabulary first: try end = len(word), "
        "len(word) - 1, ... down to start + 1.",
        _wordpiece_variant,
        longest=False,
    ),
    _variant(
        'pieces after the first are looked up with the "##" prefix: "##" + word[start:end].',
        _wordpiece_variant,
        prefix_continuations=False,
    ),
    _variant(
        'only continuation pieces get "##"; the first piece is looked up as it is.',
        _wordpiece_variant,
        prefix_first=True,
    ),
    _variant(
        "if any part cannot be matched, the *whole word* becomes the unknown token, "
        "not just the unmatched part.",
        _wordpiece_variant,
        whole_word_unk=False,
    ),
    _variant(
        "words longer than max_input_chars_per_word become the unknown token.",
        _wordpiece_variant,
        max_check="none",
    ),
    _variant(
        "a word of exactly max_input_chars_per_word characters is still tokenized: "
        "the test is len(word) > max_input_chars_per_word.",
        _wordpiece_variant,
        max_check=">=",
    ),
    _variant(
        "use the unk_token argument, not a hard-coded '[UNK]'.",
        _wordpiece_variant,
        honour_unk_token=False,
    ),
]


def check_wordpiece(fn: Callable) -> bool:
    """Grade `fn(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100)` -> list of pieces.

    Greedy longest-match-first, continuation pieces prefixed with "##"; if
    any part of the word cannot be matched, or the word is longer than
    max_input_chars_per_word, the whole word becomes unk_token. `vocab` may
    be a set or a dict (token -> id). Reference:
    `bertcourse.tokenization.WordpieceTokenizer`.
    """
    return _run_cases(
        "check_wordpiece",
        fn,
        _wordpiece_cases(),
        _wordpiece_problem,
        _WORDPIECE_MISTAKES,
        "walk through the word by hand: at each position take the longest piece in the "
        "vocabulary, with '##' after the first.",
    )
