"""BERT's tokenizer from scratch: text -> normalised words -> WordPiece sub-words -> ids.

The pipeline, in the order `transformers`' (Rust-backed) BERT tokenizer runs it:

1. special tokens such as ``[SEP]`` written in the text are cut out first and kept whole;
2. normalisation (`normalize`): drop control characters, turn every kind of
   whitespace into a space, put spaces around CJK ideographs, strip accents
   (NFD, then drop the combining marks) and lower-case;
3. pre-tokenisation (`pre_tokenize`): split on spaces and make every
   punctuation character a word of its own;
4. WordPiece (`WordpieceTokenizer`): split each word greedily into the
   longest pieces found in the vocabulary, later pieces marked with ``##``;
5. ``[CLS] A [SEP] B [SEP]`` around the pieces, segment ids 0 for A and 1 for B.

Steps 1-4 are the `BasicTokenizer` and `WordpieceTokenizer`; `BertTokenizer`
adds step 5, truncation, padding and decoding. Tests prove the ids equal
`transformers.AutoTokenizer`'s on real text, hard cases and fuzzed Unicode.
The last part of the module learns a WordPiece vocabulary from a corpus
(`train_wordpiece`) and compares it with the `tokenizers` library's trainer.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from tokenizers import BertWordPieceTokenizer
from tqdm.auto import tqdm

from .files import atomic_save_file
from .hf import resolve_checkpoint

__all__ = [
    "SPECIAL_TOKENS",
    "WHITESPACE",
    "CJK_RANGES",
    "is_whitespace",
    "CONTROL_CATEGORIES",
    "is_control",
    "is_punctuation",
    "is_cjk",
    "clean_text",
    "pad_cjk",
    "strip_accents",
    "lowercase",
    "normalize",
    "pre_tokenize",
    "normalize_with_alignment",
    "pre_tokenize_with_spans",
    "split_on_special_tokens",
    "BasicTokenizer",
    "WordpieceTokenizer",
    "load_vocab",
    "Encoding",
    "BertTokenizer",
    "CONTINUATION",
    "MERGE_RULES",
    "Pair",
    "Merge",
    "count_words",
    "choose_alphabet",
    "alphabet_symbols",
    "split_word",
    "merge_symbols",
    "merge_pair",
    "adjacent_pairs",
    "PairStatistics",
    "wordpiece_merges",
    "train_wordpiece",
    "save_vocab",
    "train_reference_wordpiece",
    "compare_vocabularies",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# ----------------------------------------------------------------------------
# Character classes
# ----------------------------------------------------------------------------

# The Unicode White_Space property (PropList.txt), unchanged since Unicode 6.3.
# Python's str.isspace() is broader (it also counts U+001C..U+001F, the
# "information separators"), so BERT's definition is spelled out.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Blocks of CJK ideographs, as the reference tokenizer lists them. Chinese is
# written without spaces between words, so BERT treats each ideograph as a
# word of its own; Japanese kana and Korean Hangul are not in these blocks.
CJK_RANGES = (
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0x3400, 0x4DBF),  # Extension A
    (0x20000, 0x2A6DF),  # Extension B
    (0x2A700, 0x2B73F),  # Extension C
    (0x2B740, 0x2B81F),  # Extension D
    (0x2B920, 0x2CEAF),  # Extension E, as the reference's table starts it
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x2F800, 0x2FA1F),  # CJK Compatibility Ideographs Supplement
)


def is_whitespace(char: str) -> bool:
    return char in WHITESPACE


CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})


def is_control(char: str) -> bool:
    """Control, format, private-use and surrogate characters (Cc, Cf, Co, Cs).

    Tab, newline and carriage return are control characters too, but BERT
    treats them as whitespace. Unassigned code points (Cn) are kept, as the
    reference tokenizer keeps them; they end up as [UNK].
    """
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in CONTROL_CATEGORIES


def is_punctuation(char: str) -> bool:
    """Unicode punctuation (category P*), plus every ASCII symbol such as $, +, ^ and `."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


# ----------------------------------------------------------------------------
# Normalisation and pre-tokenisation
# ----------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Remove NUL, U+FFFD and control characters; map every whitespace character to a space."""
    return "".join(
        " " if is_whitespace(char) else char
        for char in text
        if not (char == "\x00" or char == "\ufffd" or is_control(char))
    )


def pad_cjk(text: str) -> str:
    """Put spaces around every CJK ideograph, so each becomes a word of its own."""
    return "".join(f" {char} " if is_cjk(char) else char for char in text)


def strip_accents(text: str) -> str:
    """Decompose (NFD: é -> e + U+0301) and drop the non-spacing marks (category Mn)."""
    return "".join(
        char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn"
    )


def lowercase(text: str) -> str:
    # Character by character, as the reference does: Python's str.lower() on a
    # whole string applies the final-sigma rule (Σ -> ς at the end of a word).
    return "".join(char.lower() for char in text)


def normalize(
    text: str,
    do_lower_case: bool = True,
    strip_accents_: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> str:
    """BERT's normaliser. Accents are stripped when lower-casing unless strip_accents_ says otherwise."""
    if text.isascii():  # fast path for the common case: no CJK, no accents, no Unicode spaces
        # The same rules restricted to ASCII: tab/newline/return become spaces, every
        # other control character (including \x0b and \x0c) is removed.
        text = text.translate(ASCII_CLEANING)
        return text.lower() if do_lower_case else text
    text = clean_text(text)
    if tokenize_chinese_chars:
        text = pad_cjk(text)
    if do_lower_case if strip_accents_ is None else strip_accents_:
        text = strip_accents(text)
    if do_lower_case:
        text = lowercase(text)
    return text


# ASCII text (most English) is cleaned and split by C code: str.translate and one regular
# expression with exactly the rules below for the ASCII characters (whitespace: tab, newline,
# \x0b, \x0c, return, space; punctuation: every ASCII symbol).
ASCII_CLEANING = {
    **{code: None for code in [*range(32), 127] if chr(code) not in "\t\n\r"},
    **{ord(char): " " for char in "\t\n\r"},
}
ASCII_WORDS = re.compile(r"[^\t\n\x0b\x0c\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


def pre_tokenize(text: str) -> list[str]:
    """Split on whitespace, and make every punctuation character a word of its own."""
    if text.isascii():
        return ASCII_WORDS.findall(text)
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if is_whitespace(char):
            if current:
                words.append("".join(current))
                current = []
        elif is_punctuation(char):
            if current:
                words.append("".join(current))
                current = []
            words.append(char)
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def normalize_with_alignment(
    text: str,
    do_lower_case: bool = True,
    strip_accents_: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> tuple[str, list[int]]:
    """`normalize`, character by character, remembering where each output character came from.

    Returns the normalised text and, for each of its characters, the index of the original
    character that produced it. That is what maps a token back to a span of the raw text
    (the offsets question answering needs): "Héllo" -> "hello" with origins [0, 1, 1, 2, 3, 4]
    before the accent is dropped, [0, 1, 2, 3, 4] after.
    """
    strip = do_lower_case if strip_accents_ is None else strip_accents_
    characters: list[str] = []
    origins: list[int] = []
    for index, char in enumerate(text):
        if char == "\x00" or char == "\ufffd" or is_control(char):
            continue
        produced = " " if is_whitespace(char) else char
        if tokenize_chinese_chars and is_cjk(produced):
            produced = f" {produced} "
        if strip:
            produced = strip_accents(produced)
        if do_lower_case:
            produced = lowercase(produced)
        characters.extend(produced)
        origins.extend([index] * len(produced))
    return "".join(characters), origins


def pre_tokenize_with_spans(text: str) -> list[tuple[str, int, int]]:
    """`pre_tokenize`, returning (word, start, end) with positions in `text`."""
    words: list[tuple[str, int, int]] = []
    start = None
    for position, char in enumerate(text):
        if is_whitespace(char) or is_punctuation(char):
            if start is not None:
                words.append((text[start:position], start, position))
                start = None
            if not is_whitespace(char):
                words.append((char, position, position + 1))
        elif start is None:
            start = position
    if start is not None:
        words.append((text[start:], start, len(text)))
    return words


@functools.lru_cache(maxsize=16)
def _special_tokens_pattern(special_tokens: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for the special tokens, longest first: at each position it takes
    the longest token that starts there, so the scan is leftmost-longest."""
    by_length = sorted(set(special_tokens), key=len, reverse=True)
    return re.compile("|".join(re.escape(token) for token in by_length))


def split_on_special_tokens(text: str, special_tokens: Sequence[str]) -> list[tuple[str, bool]]:
    """Cut special tokens written in the text out first: [(piece, is_special), ...].

    Matching is exact (case-sensitive) and leftmost-longest, on the raw text
    before any normalisation, so "[SEP]" stays one token but "[sep]" does not.
    """
    if not special_tokens or not text:
        return [(text, False)] if text else []
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in _special_tokens_pattern(tuple(special_tokens)).finditer(text):
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


class BasicTokenizer:
    """Text -> words: special tokens kept whole, normalisation, whitespace and punctuation split."""

    def __init__(
        self,
        do_lower_case: bool = True,
        never_split: Iterable[str] = SPECIAL_TOKENS,
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
    ):
        self.do_lower_case = do_lower_case
        self.never_split = tuple(never_split)
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents

    def normalize(self, text: str) -> str:
        return normalize(text, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars)

    def tokenize(self, text: str) -> list[str]:
        words: list[str] = []
        for piece, is_special in split_on_special_tokens(text, self.never_split):
            words.extend([piece] if is_special else pre_tokenize(self.normalize(piece)))
        return words

    def tokenize_with_origins(self, text: str) -> list[tuple[str, list[int]]]:
        """Words, each with the index in `text` of every one of its characters."""
        words: list[tuple[str, list[int]]] = []
        offset = 0
        for piece, is_special in split_on_special_tokens(text, self.never_split):
            if is_special:
                words.append((piece, list(range(offset, offset + len(piece)))))
            else:
                normalized, origins = normalize_with_alignment(
                    piece, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars
                )
                for word, start, end in pre_tokenize_with_spans(normalized):
                    words.append((word, [offset + o for o in origins[start:end]]))
            offset += len(piece)
        return words


# ----------------------------------------------------------------------------
# WordPiece
# ----------------------------------------------------------------------------


class WordpieceTokenizer:
    """One word -> sub-words, greedy longest match first: "unaffable" -> un ##aff ##able.

    From the start of the word, take the longest prefix that is in the
    vocabulary, then continue from where it ended, looking up continuation
    pieces with the "##" prefix. If at some point no piece matches, the whole
    word becomes [UNK] (not just the unmatched part), as it does for words
    longer than max_input_chars_per_word.
    """

    def __init__(
        self,
        vocab: dict[str, int] | Iterable[str],
        unk_token: str = "[UNK]",
        max_input_chars_per_word: int = 100,
        continuing_subword_prefix: str = "##",
    ):
        self.vocab = vocab if isinstance(vocab, dict) else {t: i for i, t in enumerate(vocab)}
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        self.prefix = continuing_subword_prefix
        self._cache: dict[str, list[str]] = {}

    def tokenize_word(self, word: str) -> list[str]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        pieces = self._split(word)
        # Bounded: at most 200,000 words of at most max_input_chars_per_word characters (a longer
        # "word" is [UNK] at once, and caching it would keep every long string ever seen).
        if len(word) <= self.max_input_chars_per_word and len(self._cache) < 200_000:
            self._cache[word] = pieces
        return pieces

    def _split(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                candidate = word[start:end] if start == 0 else self.prefix + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, words: str | Iterable[str]) -> list[str]:
        if isinstance(words, str):
            words = words.split()
        return [piece for word in words for piece in self.tokenize_word(word)]


# ----------------------------------------------------------------------------
# The full tokenizer
# ----------------------------------------------------------------------------


def load_vocab(vocab_file: str | os.PathLike) -> dict[str, int]:
    """vocab.txt: one token per line; a token's id is its line number (from 0)."""
    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"No vocabulary file at {path}. Pass a vocab.txt (one token per line), e.g. "
            "BertTokenizer.from_pretrained('minilm') for the offline checkpoint's vocabulary."
        )
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab.setdefault(line.rstrip("\n"), index)
    return vocab


class Encoding(dict):
    """input_ids / token_type_ids / attention_mask (lists, or tensors with return_tensors="pt").

    With return_offsets_mapping, also "offset_mapping" and the methods word_ids() and
    sequence_ids(), kept outside the dict so that `model(**encoding)` still works.
    """

    word_ids_per_row: list[list[int | None]] | None = None
    sequence_ids_per_row: list[list[int | None]] | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    def with_alignment(self, other: Encoding) -> Encoding:
        self.word_ids_per_row = other.word_ids_per_row
        self.sequence_ids_per_row = other.sequence_ids_per_row
        return self

    def _row(self, rows: list | None, batch_index: int) -> list[int | None]:
        if rows is None:
            raise ValueError("Word and sequence ids need return_offsets_mapping=True.")
        return rows[batch_index]

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it came from (None for special tokens)."""
        return self._row(self.word_ids_per_row, batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 (first text), 1 (second text) or None (special tokens, padding)."""
        return self._row(self.sequence_ids_per_row, batch_index)


class BertTokenizer:
    """BERT's WordPiece tokenizer, written from scratch; ids equal `transformers`' tokenizer."""

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        do_lower_case: bool = True,
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        model_max_length: int = 512,
        max_input_chars_per_word: int = 100,
    ):
        self.vocab_file = Path(vocab_file)
        self.vocab = load_vocab(vocab_file)
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.special_tokens = (pad_token, unk_token, cls_token, sep_token, mask_token)
        missing = [t for t in self.special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(
                f"The vocabulary {vocab_file} lacks the special token(s) {missing}; a BERT "
                "vocabulary needs [PAD], [UNK], [CLS], [SEP] and [MASK]."
            )
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.model_max_length = model_max_length
        self.basic = BasicTokenizer(
            do_lower_case, self.special_tokens, tokenize_chinese_chars, strip_accents
        )
        self.wordpiece = WordpieceTokenizer(self.vocab, unk_token, max_input_chars_per_word)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "minilm", **kwargs: Any):
        """From a checkpoint directory holding vocab.txt (and maybe tokenizer_config.json), or "minilm"."""
        directory = resolve_checkpoint(name_or_path)
        config_file = directory / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            for name in ("do_lower_case", "tokenize_chinese_chars", "strip_accents"):
                if name in config and name not in kwargs:
                    kwargs[name] = config[name]
            if isinstance(config.get("model_max_length"), int) and config["model_max_length"] < 1e9:
                kwargs.setdefault("model_max_length", config["model_max_length"])
        return cls(directory / "vocab.txt", **kwargs)

    # -- ids of the special tokens ------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return self.vocab[self.pad_token]

    @property
    def unk_token_id(self) -> int:
        return self.vocab[self.unk_token]

    @property
    def cls_token_id(self) -> int:
        return self.vocab[self.cls_token]

    @property
    def sep_token_id(self) -> int:
        return self.vocab[self.sep_token]

    @property
    def mask_token_id(self) -> int:
        return self.vocab[self.mask_token]

    @property
    def all_special_ids(self) -> list[int]:
        return [self.vocab[t] for t in self.special_tokens]

    # -- text <-> tokens <-> ids --------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for word in self.basic.tokenize(text):
            if word in self.special_tokens:
                tokens.append(word)
            else:
                tokens.extend(self.wordpiece.tokenize_word(word))
        return tokens

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        """(token, (start, end) in `text`, word index) for every token.

        A piece's span runs from the original position of its first character to one past
        that of its last; characters removed by normalisation (an accent, a control
        character) fall between spans. A word that became [UNK] spans the whole word.
        """
        tokens = []
        for word_index, (word, origins) in enumerate(self.basic.tokenize_with_origins(text)):
            if word in self.special_tokens:
                tokens.append((word, (origins[0], origins[-1] + 1), word_index))
                continue
            pieces = self.wordpiece.tokenize_word(word)
            if pieces == [self.unk_token]:
                tokens.append((self.unk_token, (origins[0], origins[-1] + 1), word_index))
                continue
            position = 0
            for number, piece in enumerate(pieces):
                length = len(piece) - (len(self.wordpiece.prefix) if number else 0)
                span = (origins[position], origins[position + length - 1] + 1)
                tokens.append((piece, span, word_index))
                position += length
        return tokens

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        unk = self.unk_token_id
        return [self.vocab.get(token, unk) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.ids_to_tokens[ids]
        return [self.ids_to_tokens[int(i)] for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids back to text: "##" pieces glued to the word before, spaces before punctuation removed."""
        special = set(self.all_special_ids) if skip_special_tokens else set()
        words: list[str] = []
        for token in self.convert_ids_to_tokens([int(i) for i in ids if int(i) not in special]):
            if token.startswith("##") and words:
                words[-1] += token[2:]
            else:
                words.append(token)
        text = " ".join(words)
        # Undo the spaces that tokenization put before punctuation and inside contractions.
        for spaced, joined in (
            (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
            (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
        ):  # fmt: skip
            text = text.replace(spaced, joined)
        return text

    # -- model inputs --------------------------------------------------------------------
    def num_special_tokens(self, pair: bool) -> int:
        return 3 if pair else 2

    def truncate(
        self, first: list[int], second: list[int] | None, max_length: int
    ) -> tuple[list[int], list[int] | None]:
        """Longest-first truncation to max_length, special tokens included.

        For a pair, the shorter sequence is kept whole if the longer one can
        take the rest of the budget; otherwise each gets half, the odd token
        going to the longer one. (This is the reference tokenizer's rule; older
        Python tokenizers removed one token at a time from the longer sequence,
        which can split the budget the other way round.) Tokens are cut from
        the end.
        """
        pair = second is not None
        budget = max_length - self.num_special_tokens(pair)
        if budget < 0:
            raise ValueError(
                f"max_length={max_length} leaves no room for the {self.num_special_tokens(pair)} "
                "special tokens ([CLS], [SEP]); use a larger max_length."
            )
        if not pair:
            return first[:budget], None
        if len(first) + len(second) <= budget:
            return first, second
        first_is_shorter = len(first) <= len(second)
        shorter, longer = sorted((len(first), len(second)))
        longer = shorter if shorter > budget else max(shorter, budget - shorter)
        if shorter + longer > budget:
            shorter = budget // 2
            longer = shorter + budget % 2
        n_first, n_second = (shorter, longer) if first_is_shorter else (longer, shorter)
        return first[:n_first], second[:n_second]

    def build_inputs(self, first: list[int], second: list[int] | None = None):
        """[CLS] A [SEP] (B [SEP]) and the segment ids: 0 for [CLS] A [SEP], 1 for B [SEP]."""
        input_ids = [self.cls_token_id, *first, self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if second is not None:
            input_ids += [*second, self.sep_token_id]
            token_type_ids += [1] * (len(second) + 1)
        return input_ids, token_type_ids

    def encode(
        self, text: str, pair: str | None = None, max_length: int | None = None
    ) -> list[int]:
        """Ids with [CLS]/[SEP]; longest-first truncation to max_length if given.

        As in transformers, an empty second text ("") means no pair here (in a
        batch call, it stays an empty second segment).
        """
        return self.encode_one(text, pair or None, max_length)["input_ids"]

    def encode_one(
        self,
        text: str,
        pair: str | None = None,
        max_length: int | None = None,
        return_offsets_mapping: bool = False,
    ) -> Encoding:
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise TypeError(
                f"encode takes a string (and optionally a second string), got {type(text).__name__}"
                f"{'' if pair is None else ' and ' + type(pair).__name__}; for a batch call the "
                "tokenizer with a list: tokenizer(texts)."
            )
        segments = [text] if pair is None else [text, pair]
        if return_offsets_mapping:
            tokenized = [self.tokenize_with_offsets(segment) for segment in segments]
        else:  # the fast path: no alignment bookkeeping
            tokenized = [[(t, (0, 0), 0) for t in self.tokenize(segment)] for segment in segments]
        ids = [self.convert_tokens_to_ids([t for t, _, _ in tokens]) for tokens in tokenized]
        first, second = ids[0], (ids[1] if pair is not None else None)
        if max_length is not None:
            first, second = self.truncate(first, second, max_length)
        input_ids, token_type_ids = self.build_inputs(first, second)
        encoding = Encoding(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=[1] * len(input_ids)
        )
        if return_offsets_mapping:
            kept = [tokenized[0][: len(first)]]
            if second is not None:
                kept.append(tokenized[1][: len(second)])
            # [CLS] first [SEP] (second [SEP]): special tokens have no word, span or sequence
            word_ids, sequence_ids, offsets = [None], [None], [(0, 0)]
            for sequence, tokens in enumerate(kept):
                word_ids += [w for _, _, w in tokens] + [None]
                sequence_ids += [sequence] * len(tokens) + [None]
                offsets += [span for _, span, _ in tokens] + [(0, 0)]
            encoding["offset_mapping"] = offsets
            encoding.word_ids_per_row = [word_ids]
            encoding.sequence_ids_per_row = [sequence_ids]
        return encoding

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        max_length: int | None = None,
        truncation: bool | None = None,
        padding: bool | str = False,
        return_tensors: str | None = None,
        return_offsets_mapping: bool = False,
    ) -> Encoding:
        """Like a `transformers` tokenizer call, for one text (or pair) or a batch.

        truncation: cut to max_length, longest first (on by default when
        max_length is given). padding: False, True/"longest" (to the longest
        in the batch) or "max_length". return_tensors="pt" gives LongTensors
        of shape (batch, length) and needs padding for a batch of unequal lengths.
        """
        single = isinstance(text, str)
        if single and text_pair == "":  # transformers' rule for one text: "" is no pair
            text_pair = None
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs: list[str | None] = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise ValueError(
                    f"{len(texts)} texts but {len(pairs)} text pairs: give one pair per text."
                )
        if truncation is None:
            truncation = max_length is not None
        if truncation and max_length is None:
            max_length = self.model_max_length
        encodings = [
            self.encode_one(t, p, max_length if truncation else None, return_offsets_mapping)
            for t, p in zip(texts, pairs, strict=True)
        ]
        if padding:
            self._pad(encodings, padding, max_length)
        names = ["input_ids", "token_type_ids", "attention_mask"]
        names += ["offset_mapping"] if return_offsets_mapping else []
        batch = Encoding({name: [e[name] for e in encodings] for name in names})
        if return_offsets_mapping:
            batch.word_ids_per_row = [e.word_ids_per_row[0] for e in encodings]
            batch.sequence_ids_per_row = [e.sequence_ids_per_row[0] for e in encodings]
        if return_tensors == "pt":
            lengths = {len(ids) for ids in batch["input_ids"]}
            if len(lengths) > 1:
                raise ValueError(
                    "Sequences have different lengths, so they cannot be stacked into a tensor: "
                    "pass padding=True (or padding='max_length' with max_length)."
                )
            tensors = Encoding({name: torch.tensor(values) for name, values in batch.items()})
            batch = tensors.with_alignment(batch)
        elif return_tensors is not None:
            raise ValueError(
                f"return_tensors={return_tensors!r} is not supported; use 'pt' or None."
            )
        if single and return_tensors is None:
            single_row = Encoding({name: values[0] for name, values in batch.items()})
            batch = single_row.with_alignment(batch)
        return batch

    def _pad(self, encodings: list[Encoding], padding: bool | str, max_length: int | None) -> None:
        if padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length.")
            target = max_length
        elif padding in (True, "longest"):
            target = max(len(e["input_ids"]) for e in encodings)
        else:
            raise ValueError(f"padding={padding!r}; use False, True/'longest' or 'max_length'.")
        for encoding in encodings:
            missing = target - len(encoding["input_ids"])
            encoding["input_ids"] = encoding["input_ids"] + [self.pad_token_id] * missing
            encoding["token_type_ids"] = encoding["token_type_ids"] + [0] * missing
            encoding["attention_mask"] = encoding["attention_mask"] + [0] * missing
            if "offset_mapping" in encoding:
                encoding["offset_mapping"] = encoding["offset_mapping"] + [(0, 0)] * missing
                encoding.word_ids_per_row[0] += [None] * missing
                encoding.sequence_ids_per_row[0] += [None] * missing

    def save_vocabulary(self, directory: str | os.PathLike) -> Path:
        """Write vocab.txt (and tokenizer_config.json) so `transformers.BertTokenizer` can load them."""
        directory = Path(directory)
        tokens = [self.ids_to_tokens[i] for i in range(len(self.ids_to_tokens))]
        atomic_save_file(
            lambda tmp: Path(tmp).write_text("\n".join(tokens) + "\n", encoding="utf-8"),
            directory / "vocab.txt",
        )
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.basic.do_lower_case,
            "tokenize_chinese_chars": self.basic.tokenize_chinese_chars,
            "strip_accents": self.basic.strip_accents,
            "model_max_length": self.model_max_length,
        }
        atomic_save_file(
            lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"),
            directory / "tokenizer_config.json",
        )
        return directory / "vocab.txt"


# ----------------------------------------------------------------------------
# Training a vocabulary
# ----------------------------------------------------------------------------
#
# Training a WordPiece vocabulary from scratch, and comparing it with the `tokenizers` library's.
#
# A vocabulary is learnt bottom-up. Every word of the corpus starts as its
# characters, the first one as it is and the others marked as continuations:
# "hug" -> ["h", "##u", "##g"]. Then, again and again, two adjacent symbols
# are merged into one new vocabulary entry, until the vocabulary is full.
#
# Which pair to merge? BPE takes the most frequent pair. WordPiece (Schuster &
# Nakajima 2012, the algorithm behind BERT's vocabulary) takes the pair whose
# merge most increases the likelihood of the corpus under a unigram model of
# the symbols. To first order that gain is
#
#     score(a, b) = count(ab) * log(count(ab) * N / (count(a) * count(b)))
#
# with every count summed over the words, weighted by how often each word
# occurs, and N the number of symbols in the corpus (taken at the start of
# training; it shrinks slowly, and a fixed N keeps a pair's score fixed until
# its own counts change). The log is the pair's pointwise mutual information:
# how much more often a and b meet than chance predicts. Weighting it by
# count(ab) prefers pairs that are both strongly associated and frequent.
# Tutorials often drop the weight and rank by count(ab) / (count(a) * count(b))
# alone; that ratio favours pairs of rare symbols (on the course's corpus its
# 8,000-token vocabulary lacks even "the"), which the tokenization chapter shows.
#
# After a merge only the words that contain the pair change, so the counts are
# updated for those words alone, and a heap finds the best pair without
# rescoring every pair at every step.

CONTINUATION = "##"  # marks a piece that continues a word: "hugs" -> hug ##s
MERGE_RULES = ("likelihood", "ratio")

Pair = tuple[str, str]


@dataclass(frozen=True)
class Merge:
    """One training step: `left` and `right` became `token`."""

    left: str
    right: str
    token: str
    count: int  # how often the pair occurred, weighted by word frequency
    score: float  # the likelihood gain: count * log(count * N / (count(left) * count(right)))


# ----------------------------------------------------------------------------
# The corpus as word counts, and its alphabet
# ----------------------------------------------------------------------------


def count_words(
    texts: Iterable[str],
    do_lower_case: bool = True,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
) -> Counter[str]:
    """How often each word occurs, the words being those `BasicTokenizer` produces."""
    basic = BasicTokenizer(do_lower_case, never_split=special_tokens)
    specials = set(special_tokens)
    word_counts: Counter[str] = Counter()
    for text in texts:
        word_counts.update(word for word in basic.tokenize(text) if word not in specials)
    return word_counts


def choose_alphabet(word_counts: dict[str, int], limit_alphabet: int | None = None) -> set[str]:
    """The `limit_alphabet` most frequent characters (all of them if None); ties by character."""
    char_counts: Counter[str] = Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    ranked = sorted(char_counts, key=lambda char: (-char_counts[char], char))
    return set(ranked if limit_alphabet is None else ranked[:limit_alphabet])


def alphabet_symbols(chars: Iterable[str]) -> list[str]:
    """Each character as a word-initial symbol `c` and a continuation `##c`, sorted."""
    return sorted({symbol for char in chars for symbol in (char, CONTINUATION + char)})


def split_word(word: str) -> list[str]:
    """The starting point of training: "hug" -> ["h", "##u", "##g"]."""
    return [word[0]] + [CONTINUATION + char for char in word[1:]]


def merge_symbols(left: str, right: str) -> str:
    """("hu", "##g") -> "hug"; ("##u", "##g") -> "##ug": the left part keeps its "##"."""
    return left + right.removeprefix(CONTINUATION)


def merge_pair(symbols: list[str], left: str, right: str) -> list[str]:
    """Replace every occurrence of the adjacent pair (left, right), scanning left to right."""
    merged: list[str] = []
    position = 0
    while position < len(symbols):
        if (
            position + 1 < len(symbols)
            and symbols[position] == left
            and symbols[position + 1] == right
        ):
            merged.append(merge_symbols(left, right))
            position += 2
        else:
            merged.append(symbols[position])
            position += 1
    return merged


def adjacent_pairs(symbols: list[str]) -> list[Pair]:
    return list(pairwise(symbols))


# ----------------------------------------------------------------------------
# The merge loop
# ----------------------------------------------------------------------------


class PairStatistics:
    """The words as symbol lists and the counts the score needs, kept up to date after each merge.

    symbol_counts[s]       how often symbol s occurs in the corpus
    pair_counts[(a, b)]    how often a is directly followed by b
    words_with_pair[pair]  ids of the words that contain the pair: the only ones a merge changes
    pairs_with_symbol[s]   the pairs s is part of: their scores change when count(s) does
    """

    def __init__(self, word_counts: dict[str, int], rule: str = "likelihood"):
        if rule not in MERGE_RULES:
            raise ValueError(
                f"Unknown merge rule {rule!r}; choose one of {', '.join(MERGE_RULES)}."
            )
        self.rule = rule
        self.splits = [split_word(word) for word in word_counts]
        self.frequencies = list(word_counts.values())
        self.symbol_counts: Counter[str] = Counter()
        self.pair_counts: Counter[Pair] = Counter()
        self.words_with_pair: defaultdict[Pair, set[int]] = defaultdict(set)
        self.pairs_with_symbol: defaultdict[str, set[Pair]] = defaultdict(set)
        for word_id, symbols in enumerate(self.splits):
            self._count(symbols, self.frequencies[word_id])
            for pair in adjacent_pairs(symbols):
                self._index(pair, word_id)
        self.total_symbols = sum(self.symbol_counts.values())  # N in the score

    def score(self, pair: Pair) -> float:
        """The gain in log-likelihood from merging the pair (to first order; see above).

        With rule="ratio", the tutorial form count(ab) / (count(a) * count(b)) instead.
        """
        left, right = pair
        count = self.pair_counts[pair]
        if self.rule == "ratio":
            return count / (self.symbol_counts[left] * self.symbol_counts[right])
        chance = self.symbol_counts[left] * self.symbol_counts[right] / self.total_symbols
        return count * math.log(count / chance)

    def merge(self, pair: Pair) -> set[Pair]:
        """Merge `pair` in every word that has it; return the pairs whose score may have changed."""
        left, right = pair
        changed: set[Pair] = set()
        for word_id in list(self.words_with_pair[pair]):
            old = self.splits[word_id]
            new = merge_pair(old, left, right)
            frequency = self.frequencies[word_id]
            self._count(old, -frequency)
            self._count(new, frequency)
            self.splits[word_id] = new
            old_pairs, new_pairs = set(adjacent_pairs(old)), set(adjacent_pairs(new))
            for gone in old_pairs - new_pairs:
                self.words_with_pair[gone].discard(word_id)
            for pair_in_word in new_pairs:
                self._index(pair_in_word, word_id)
            changed |= old_pairs | new_pairs
        for gone in [p for p in changed if self.pair_counts[p] <= 0]:
            self._forget(gone)
        # Only the counts of left, right and the new symbol changed (the other symbols
        # of a word were taken away and put back), so only their pairs are rescored.
        for symbol in (left, right, merge_symbols(left, right)):
            changed |= self.pairs_with_symbol.get(symbol, set())
        return {p for p in changed if p in self.pair_counts}

    def _count(self, symbols: list[str], frequency: int) -> None:
        for symbol in symbols:
            self.symbol_counts[symbol] += frequency
        for pair in adjacent_pairs(symbols):
            self.pair_counts[pair] += frequency

    def _index(self, pair: Pair, word_id: int) -> None:
        self.words_with_pair[pair].add(word_id)
        self.pairs_with_symbol[pair[0]].add(pair)
        self.pairs_with_symbol[pair[1]].add(pair)

    def _forget(self, pair: Pair) -> None:
        del self.pair_counts[pair]
        self.words_with_pair.pop(pair, None)
        self.pairs_with_symbol[pair[0]].discard(pair)
        self.pairs_with_symbol[pair[1]].discard(pair)


def wordpiece_merges(
    word_counts: dict[str, int], min_frequency: int = 2, rule: str = "likelihood"
) -> Iterator[Merge]:
    """The merges in training order, each the pair with the best score at that moment.

    The heap holds (-score, left, right): the best score pops first, and among
    equal scores the smallest pair, so training is reproducible. A merge
    changes some scores (up or down); those pairs are pushed again with their
    new score, and an entry whose score is no longer the pair's score is stale
    and skipped when it pops.
    """
    statistics = PairStatistics(word_counts, rule)

    def entry(pair: Pair) -> tuple[float, str, str]:
        return (-statistics.score(pair), *pair)

    def rebuilt_heap() -> list[tuple[float, str, str]]:
        heap = [entry(p) for p, c in statistics.pair_counts.items() if c >= min_frequency]
        heapq.heapify(heap)
        return heap

    heap = rebuilt_heap()
    while heap:
        negative_score, left, right = heapq.heappop(heap)
        pair = (left, right)
        count = statistics.pair_counts.get(pair, 0)
        if count < min_frequency or statistics.score(pair) != -negative_score:
            continue  # stale: the pair is gone, too rare, or was pushed again with another score
        merge = Merge(left, right, merge_symbols(left, right), count, -negative_score)
        for changed in statistics.merge(pair):
            if statistics.pair_counts[changed] >= min_frequency:
                heapq.heappush(heap, entry(changed))
        if len(heap) > 4 * len(statistics.pair_counts) + 10_000:
            heap = rebuilt_heap()  # drop the stale entries that piled up
        yield merge


# ----------------------------------------------------------------------------
# The vocabulary
# ----------------------------------------------------------------------------


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    do_lower_case: bool = True,
    limit_alphabet: int | None = 1000,
    show_progress: bool = False,
    rule: str = "likelihood",
) -> list[str]:
    """A WordPiece vocabulary of `vocab_size` tokens learnt from `texts` (fewer if the pairs run out).

    rule: "likelihood" (the likelihood gain, see above) or "ratio" (the tutorial
    shortcut count(ab) / (count(a) count(b)), kept to show why it is not enough).

    The list holds the special tokens first (in order), then the alphabet
    (every kept character as `c` and `##c`, sorted), then the merged tokens in
    the order they were created; a token's id is its position. Characters
    beyond the `limit_alphabet` most frequent are dropped, and the words that
    contain them are left out of training (the tokenizer maps them to [UNK]).
    Only pairs that occur at least `min_frequency` times are merged.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency}; it must be at least 1.")
    if limit_alphabet is not None and limit_alphabet < 1:
        raise ValueError(f"limit_alphabet={limit_alphabet}; use a positive number or None.")
    word_counts = count_words(texts, do_lower_case, special_tokens)
    if not word_counts:
        raise ValueError("The texts contain no words to learn a vocabulary from (empty input?).")
    chars = choose_alphabet(word_counts, limit_alphabet)
    word_counts = Counter({w: c for w, c in word_counts.items() if chars.issuperset(w)})

    specials = list(dict.fromkeys(special_tokens))
    vocab = specials + [s for s in alphabet_symbols(chars) if s not in specials]
    if vocab_size < len(vocab):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the {len(specials)} special tokens plus the "
            f"{len(vocab) - len(specials)} alphabet symbols ({len(chars)} characters, each as c and "
            f"##c) = {len(vocab)}; raise vocab_size to at least {len(vocab)} or lower limit_alphabet."
        )
    known = set(vocab)

    with tqdm(
        total=vocab_size, initial=len(vocab), desc="WordPiece", disable=not show_progress
    ) as progress:
        merges = wordpiece_merges(word_counts, min_frequency, rule)
        while len(vocab) < vocab_size:
            merge = next(merges, None)
            if merge is None:
                break  # no pair left that occurs min_frequency times
            # A guard: were a string ever made by two merge paths (hu + ##g, h + ##ug),
            # the vocabulary would list it once.
            if merge.token not in known:
                vocab.append(merge.token)
                known.add(merge.token)
                progress.update(1)
    return vocab


def save_vocab(vocab: Sequence[str], path: str | os.PathLike) -> Path:
    """Write vocab.txt (one token per line, UTF-8) atomically; a directory gets a vocab.txt inside."""
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.txt"
    duplicates = sorted(token for token, n in Counter(vocab).items() if n > 1)
    if duplicates:
        raise ValueError(f"The vocabulary repeats {duplicates[:5]}; ids would not be line numbers.")
    bad = [token for token in vocab if not token or "\n" in token or "\r" in token]
    if bad:
        raise ValueError(f"Tokens must be non-empty and on one line; got {bad[:5]!r}.")
    text = "".join(token + "\n" for token in vocab)
    atomic_save_file(lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline="\n"), path)
    return path


# ----------------------------------------------------------------------------
# The reference trainer, and a comparison
# ----------------------------------------------------------------------------


def train_reference_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    do_lower_case: bool = True,
    limit_alphabet: int | None = 1000,
) -> list[str]:
    """The same through the `tokenizers` library, its vocabulary ordered by id.

    Its WordPiece trainer picks merges by BPE's rule (the most frequent pair),
    so the vocabulary differs from `train_wordpiece`'s.
    """
    tokenizer = BertWordPieceTokenizer(lowercase=do_lower_case)
    tokenizer.train_from_iterator(
        iter(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        limit_alphabet=limit_alphabet if limit_alphabet is not None else 2**31 - 1,
        show_progress=False,
    )
    vocab = tokenizer.get_vocab()
    return sorted(vocab, key=vocab.__getitem__)


def compare_vocabularies(
    ours: Sequence[str],
    reference: Sequence[str],
    texts: Iterable[str],
    do_lower_case: bool = True,
    unk_token: str = "[UNK]",
) -> dict[str, float]:
    """Sizes, overlap, and how each vocabulary splits the words of `texts`.

    tokens_per_word: WordPiece pieces per word, averaged over every word
    occurrence; unk_fraction: the share of word occurrences that become [UNK].
    """
    word_counts = count_words(texts, do_lower_case)
    total_words = sum(word_counts.values())
    if total_words == 0:
        raise ValueError("The texts contain no words to compare the vocabularies on.")
    ours_set, reference_set = set(ours), set(reference)
    overlap = len(ours_set & reference_set)
    result: dict[str, float] = {
        "ours_size": len(ours),
        "reference_size": len(reference),
        "overlap": overlap,
        "jaccard": overlap / len(ours_set | reference_set),
        "words": total_words,
    }
    for name, vocab in (("ours", ours), ("reference", reference)):
        wordpiece = WordpieceTokenizer(list(vocab), unk_token=unk_token)
        pieces = unknown = 0
        for word, count in word_counts.items():
            split = wordpiece.tokenize_word(word)
            pieces += len(split) * count
            unknown += count if split == [unk_token] else 0
        result[f"{name}_tokens_per_word"] = pieces / total_words
        result[f"{name}_unk_fraction"] = unknown / total_words
    return result
