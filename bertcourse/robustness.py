"""Where a fine-tuned classifier breaks: noise, attacks, bias, inputs from elsewhere.

A test set measures a classifier on text like its training text. This module measures it
on text that is not:

- `TextClassifier` wraps a `BertForSequenceClassification` and its tokenizer: texts in,
  probabilities out, in batches of similar length;
- perturbations, pure functions on strings: `typos`, `change_case`, `truncate_words`, and
  `perturbation_curve` (accuracy against the strength of a perturbation);
- a greedy word-substitution attack after TextFooler (Jin et al., 2020) and BAE /
  BERT-Attack (Garg & Ramakrishnan, 2020; Li et al., 2020): `word_importance`, candidate
  words from the model's own input embeddings (`embedding_neighbours`) or from a masked LM
  (`mlm_candidates`), `substitution_attack`, `attack_summary`;
- a defence: `noisy_copies`, typo'd copies of the training texts for noise augmentation;
- bias: the WEAT effect size and permutation test (Caliskan et al., 2017) on sentence
  embeddings of template sentences (SEAT, May et al., 2019): `weat_effect_size`, `weat_test`,
  `seat_test`;
- out-of-domain inputs: the maximum softmax probability baseline (Hendrycks & Gimpel,
  2017), `max_softmax_scores` and `auroc`.

Every random choice comes from an explicit seed, so each result can be reproduced.

A *word* here, for typos and for the attack, is a maximal run of ASCII letters (`[A-Za-z]+`):
"don't" is the words "don" and "t", and the characters between words (spaces, punctuation,
digits) are never touched. `truncate_words` alone counts whitespace-separated words.
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import _batches_by_length, encode

__all__ = [
    "TYPO_KINDS",
    "CASE_MODES",
    "STOP_WORDS",
    "MALE_NAMES",
    "FEMALE_NAMES",
    "CAREER_WORDS",
    "FAMILY_WORDS",
    "NAME_TEMPLATES",
    "ATTRIBUTE_TEMPLATES",
    "TextClassifier",
    "split_words",
    "join_words",
    "typos",
    "change_case",
    "truncate_words",
    "perturbation_curve",
    "is_whole_word",
    "EmbeddingNeighbours",
    "embedding_neighbours",
    "mlm_candidates",
    "SentenceSimilarity",
    "sentence_similarity",
    "word_importance",
    "AttackResult",
    "substitution_attack",
    "attack_dataset",
    "attack_summary",
    "noisy_copies",
    "weat_effect_size",
    "weat_test",
    "template_sentences",
    "seat_test",
    "max_softmax_scores",
    "auroc",
]

TYPO_KINDS = ("swap", "drop", "insert", "replace")
CASE_MODES = ("lower", "upper", "title", "random")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"[A-Za-z]+")

# Function words the attack never replaces: changing them rarely keeps the meaning, and the
# negations among them ("not", "no", "never") would change the true label itself.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not never now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves s t d ll m re ve n don didn doesn isn wasn aren weren won wouldn
    shouldn couldn hasn haven hadn ain
    """.split()
)


# ----------------------------------------------------------------------------
# The classifier as a function of texts
# ----------------------------------------------------------------------------


def _check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of texts; wrap a single text as [text].")
    texts = list(texts)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is a {type(texts[bad]).__name__}, not a str.")
    return texts


def _as_label_list(labels: Sequence[int] | torch.Tensor, count: int) -> list[int]:
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(values) != count:
        raise ValueError(f"{count} texts but {len(values)} labels: give one label per text.")
    return [int(v) for v in values]


class TextClassifier:
    """A sequence classifier as a function of raw texts.

    model: a `BertForSequenceClassification` (or any module whose output has `.logits`,
    (B, C)); tokenizer: the course's `BertTokenizer` or a `transformers` one. Texts are cut
    at `max_length` tokens and scored in batches of `batch_size` texts of similar length
    (little padding), in eval mode and without gradients; rows come back in input order.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., Any],
        *,
        max_length: int = 128,
        batch_size: int = 64,
    ):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), not {max_length}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def num_labels(self) -> int:
        return int(self.model.num_labels)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → (N, C) class probabilities (softmax of the logits), row i for texts[i]."""
        texts = _check_texts(texts)
        if not texts:
            return torch.empty(0, self.num_labels)
        ids = list(self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"])
        probabilities: torch.Tensor | None = None
        was_training = self.model.training
        self.model.eval()
        try:
            pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
            device = next(self.model.parameters()).device
            batches = _batches_by_length(ids, self.batch_size, pad_id, device)  # longest first
            for rows, input_ids, attention_mask in batches:
                logits = self.model(input_ids, attention_mask).logits.float()  # (B, C)
                if probabilities is None:
                    probabilities = torch.empty(len(texts), logits.shape[-1])
                probabilities[rows] = logits.softmax(dim=-1).cpu()
        finally:
            self.model.train(was_training)
        return probabilities

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → (N,) predicted class ids."""
        return self.predict_proba(texts).argmax(dim=-1)

    def accuracy(self, texts: Sequence[str], labels: Sequence[int] | torch.Tensor) -> float:
        """The fraction of texts whose predicted class is their label."""
        texts = _check_texts(texts)
        if not texts:
            raise ValueError("accuracy of no texts is undefined: give at least one text.")
        gold = torch.tensor(_as_label_list(labels, len(texts)))
        return (self.predict(texts) == gold).float().mean().item()


# ----------------------------------------------------------------------------
# Perturbations
# ----------------------------------------------------------------------------


def split_words(text: str) -> tuple[list[str], list[str]]:
    """A text as its words (runs of ASCII letters) and the gaps around them.

    Returns (words, gaps) with len(gaps) == len(words) + 1 and
    text == gaps[0] + words[0] + gaps[1] + ... + words[-1] + gaps[-1].
    """
    words, gaps, end = [], [], 0
    for match in _WORD.finditer(text):
        gaps.append(text[end : match.start()])
        words.append(match.group())
        end = match.end()
    gaps.append(text[end:])
    return words, gaps


def join_words(words: Sequence[str], gaps: Sequence[str]) -> str:
    """The inverse of `split_words`: gaps[0] + words[0] + gaps[1] + ... + gaps[-1]."""
    if len(gaps) != len(words) + 1:
        raise ValueError(
            f"{len(words)} words need {len(words) + 1} gaps (one before, between and after "
            f"them), got {len(gaps)}: use the gaps that split_words returned."
        )
    return "".join(gap + word for gap, word in zip(gaps[:-1], words, strict=True)) + gaps[-1]


def _letter_like(letter: str, upper: bool) -> str:
    return letter.upper() if upper else letter


def _one_typo(word: str, kinds: Sequence[str], rng: random.Random) -> str:
    """`word` (3+ letters) with one edit of a random kind; the result always differs."""
    kind = rng.choice(kinds)
    if kind == "swap":
        # neighbouring letters after the first (readers lean on the first letter), and
        # different, or the swap would change nothing
        pairs = [i for i in range(1, len(word) - 1) if word[i] != word[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        kind = "replace"
    if kind == "drop":
        i = rng.randrange(len(word))
        return word[:i] + word[i + 1 :]
    if kind == "insert":
        i = rng.randrange(len(word) + 1)
        return word[:i] + _letter_like(rng.choice(LETTERS), word.isupper()) + word[i:]
    i = rng.randrange(len(word))  # replace
    others = [letter for letter in LETTERS if letter != word[i].lower()]
    return word[:i] + _letter_like(rng.choice(others), word[i].isupper()) + word[i + 1 :]


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate is a probability per word, in [0, 1]; got {rate}.")


def typos(
    text: str,
    rate: float,
    *,
    seed: int = 0,
    kinds: Sequence[str] = TYPO_KINDS,
) -> str:
    """`text` with typos: each word of 3 or more letters is edited with probability `rate`.

    Words are runs of ASCII letters; each one of 3+ letters draws once from
    `random.Random(seed)` (in text order) and, if the draw is below `rate`, gets ONE edit,
    of a kind drawn from `kinds`:

    - "swap": two neighbouring, different letters after the first trade places
      ("great" → "graet"); a word with no such pair gets a "replace" instead;
    - "drop": one letter is deleted ("great" → "gret");
    - "insert": a letter a-z is added anywhere ("great" → "grezat"), a capital if the
      word is all capitals;
    - "replace": one letter becomes a different letter a-z, of the same case ("grewt").

    So an edited word is always one edit away from the original, and everything else
    (words of 1-2 letters, spaces, punctuation, digits) comes back unchanged; rate 0
    returns `text` itself.
    """
    _check_rate(rate)
    kinds = tuple(kinds)
    unknown = [kind for kind in kinds if kind not in TYPO_KINDS]
    if not kinds or unknown:
        raise ValueError(
            f"kinds must be a non-empty selection of {', '.join(TYPO_KINDS)}; got {kinds}."
        )
    if rate == 0:
        return text
    rng = random.Random(seed)

    def edit(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) >= 3 and rng.random() < rate:
            return _one_typo(word, kinds, rng)
        return word

    return _WORD.sub(edit, text)


def _title_chunk(match: re.Match[str]) -> str:
    chunk = match.group().lower()
    first = next((i for i, char in enumerate(chunk) if char.isalpha()), None)
    if first is None:
        return chunk
    return chunk[:first] + chunk[first].upper() + chunk[first + 1 :]


def change_case(text: str, mode: str, *, seed: int = 0) -> str:
    """`text` in another case.

    "lower" and "upper": str.lower / str.upper. "title": each whitespace-separated chunk
    lowercased with its first letter a capital ("don't STOP" → "Don't Stop"). "random":
    each letter upper or lower case with probability 1/2, drawn from `random.Random(seed)`.
    """
    if mode == "lower":
        return text.lower()
    if mode == "upper":
        return text.upper()
    if mode == "title":
        return re.sub(r"\S+", _title_chunk, text)
    if mode == "random":
        rng = random.Random(seed)
        return "".join(
            (char.upper() if rng.random() < 0.5 else char.lower()) if char.isalpha() else char
            for char in text
        )
    raise ValueError(f"Unknown case mode {mode!r}; choose one of {', '.join(CASE_MODES)}.")


def truncate_words(text: str, max_words: int) -> str:
    """The first `max_words` whitespace-separated words of `text` (punctuation stays attached
    to its word), with the spacing between them kept and leading or trailing space removed."""
    if max_words < 0:
        raise ValueError(f"max_words must be >= 0, not {max_words}.")
    chunks = list(re.finditer(r"\S+", text))
    if len(chunks) <= max_words:
        return text.strip()
    if max_words == 0:
        return ""
    return text[chunks[0].start() : chunks[max_words - 1].end()]


def _text_seed(seed: int, text_index: int, text_count: int) -> int:
    """Text i of n at `seed` draws from seed * n + i: every (seed, text) has its own stream,
    so the texts' typos are independent (one shared seed would edit the same word positions
    in every text)."""
    return seed * text_count + text_index


def _takes_seed(perturb: Callable[..., str]) -> bool:
    try:
        parameters = inspect.signature(perturb).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "seed" or p.kind is p.VAR_KEYWORD for p in parameters)


def perturbation_curve(
    classifier: TextClassifier,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    perturb: Callable[..., str],
    levels: Iterable[float | int],
    *,
    seeds: Sequence[int] = (0,),
) -> list[dict[str, float]]:
    """Accuracy at each strength of a perturbation: one row per level.

    `perturb(text, level)` returns the changed text (e.g. `typos`, `truncate_words`, or a
    lambda around `change_case`). If it takes a `seed` keyword, it is called as
    `perturb(text, level, seed=s)` once per seed in `seeds`, text i of n getting the seed
    s * n + i (independent texts); otherwise `seeds` must hold one seed.
    Rows: {"level", "accuracy" (mean over seeds), "accuracy_std" (sample standard deviation
    over seeds, 0.0 for one seed)}.
    """
    texts = _check_texts(texts)
    gold = _as_label_list(labels, len(texts))
    seeds = list(seeds)
    takes_seed = _takes_seed(perturb)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=(0,).")
    if len(seeds) > 1 and not takes_seed:
        raise ValueError(
            "perturb takes no seed keyword, so every seed would give the same texts: give "
            "one seed, or a perturb(text, level, *, seed) that uses it."
        )
    rows = []
    for level in levels:
        accuracies = []
        for seed in seeds:
            if takes_seed:
                changed = [
                    perturb(text, level, seed=_text_seed(seed, i, len(texts)))
                    for i, text in enumerate(texts)
                ]
            else:
                changed = [perturb(text, level) for text in texts]
            accuracies.append(classifier.accuracy(changed, gold))
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        rows.append({"level": level, "accuracy": statistics.fmean(accuracies), "accuracy_std": std})
    return rows


# ----------------------------------------------------------------------------
# Candidate words for the attack
# ----------------------------------------------------------------------------


def is_whole_word(token: str) -> bool:
    """A vocabulary entry that is a whole word of 2+ letters: no [SPECIAL], no ##piece, no
    digits or punctuation."""
    return len(token) >= 2 and token.isascii() and token.isalpha()


def _vocab(tokenizer: Any) -> dict[str, int]:
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, dict):
        return vocab
    return tokenizer.get_vocab()


def _token_id(vocab: dict[str, int], word: str) -> int | None:
    return vocab.get(word, vocab.get(word.lower()))


class EmbeddingNeighbours:
    """Nearest whole-word tokens by the cosine of a model's input (word) embeddings.

    Built by `embedding_neighbours`. Call it with a word, `neighbours(word)`, or with the
    attack's (words, index): the k most similar allowed tokens with cosine >= min_cosine,
    most similar first, never the word itself. A word that is not a single token of the
    vocabulary (looked up as it is, then lowercased) has no neighbours.
    """

    def __init__(
        self,
        word_embeddings: torch.Tensor,
        tokenizer: Any,
        *,
        k: int = 20,
        min_cosine: float = 0.5,
        vocabulary_filter: Callable[[str], bool] = is_whole_word,
    ):
        if word_embeddings.dim() != 2:
            raise ValueError(
                f"word_embeddings must be (V, H), got shape {tuple(word_embeddings.shape)}: "
                "pass model.embeddings.word_embeddings.weight."
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}.")
        if not -1.0 <= min_cosine <= 1.0:
            raise ValueError(f"min_cosine is a cosine, in [-1, 1]; got {min_cosine}.")
        self.vocab = _vocab(tokenizer)
        largest = max(self.vocab.values())
        if largest >= word_embeddings.shape[0]:
            raise ValueError(
                f"The tokenizer has token id {largest} but word_embeddings has only "
                f"{word_embeddings.shape[0]} rows: pass the embeddings of the model this "
                "tokenizer belongs to."
            )
        self.k, self.min_cosine = k, min_cosine
        self.unit = F.normalize(word_embeddings.detach().float().cpu(), dim=-1)  # (V, H)
        allowed = sorted(i for token, i in self.vocab.items() if vocabulary_filter(token))
        self.allowed_ids = torch.tensor(allowed, dtype=torch.long)  # (A,)
        tokens = {i: token for token, i in self.vocab.items()}
        self.allowed_tokens = [tokens[i] for i in allowed]
        self._cache: dict[str, list[tuple[str, float]]] = {}

    def scored(self, word: str) -> list[tuple[str, float]]:
        """[(token, cosine), ...] of `word`'s neighbours, highest cosine first."""
        if word in self._cache:
            return self._cache[word]
        index = _token_id(self.vocab, word)
        result: list[tuple[str, float]] = []
        if index is not None:
            cosines = self.unit[self.allowed_ids] @ self.unit[index]  # (A,)
            cosines[self.allowed_ids == index] = -math.inf
            top = cosines.topk(min(self.k, len(cosines)))
            result = [
                (self.allowed_tokens[j], value)
                for value, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                if value >= self.min_cosine
            ]
        self._cache[word] = result
        return result

    def neighbours(self, word: str) -> list[str]:
        """The neighbouring tokens of `word`, most similar first."""
        return [token for token, _ in self.scored(word)]

    def __call__(self, words: str | Sequence[str], index: int | None = None) -> list[str]:
        if isinstance(words, str):
            return self.neighbours(words)
        if index is None:
            raise TypeError("call with a word, or with (words, index) as the attack does.")
        return self.neighbours(words[index])


def embedding_neighbours(
    word_embeddings: torch.Tensor,
    tokenizer: Any,
    *,
    k: int = 20,
    min_cosine: float = 0.5,
    vocabulary_filter: Callable[[str], bool] = is_whole_word,
) -> EmbeddingNeighbours:
    """Candidate substitutes from the model's own input embeddings (V, H), e.g. MiniLM's
    `model.embeddings.word_embeddings.weight`; see `EmbeddingNeighbours`.

    TextFooler used counter-fitted word vectors, in which antonyms are pushed apart; raw BERT
    input embeddings have no such guarantee, so "good" may find "bad": the attack's
    similarity check (and a human reading the examples) must catch those.
    """
    return EmbeddingNeighbours(
        word_embeddings, tokenizer, k=k, min_cosine=min_cosine, vocabulary_filter=vocabulary_filter
    )


def mlm_candidates(
    mlm_model: nn.Module,
    tokenizer: Any,
    *,
    k: int = 20,
    max_length: int = 128,
    vocabulary_filter: Callable[[str], bool] = is_whole_word,
) -> Callable[[Sequence[str], int], list[str]]:
    """Candidate substitutes from a masked language model, as in BAE and BERT-Attack.

    Returns `candidates(words, index)`: the words joined by spaces with words[index]
    replaced by one [MASK], and the k allowed whole-word tokens the model
    (a `BertForMaskedLM` with its own tokenizer) scores highest there, best first, without
    the word itself. Words that fit the context, not necessarily the meaning: the
    similarity check has to keep the meaning.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}.")
    vocab = _vocab(tokenizer)
    vocab_size = mlm_model.config.vocab_size
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"The tokenizer has {len(vocab)} tokens but the model predicts {vocab_size}: use "
            "the tokenizer saved with this masked LM."
        )
    allowed = torch.zeros(vocab_size, dtype=torch.bool)
    allowed[[i for token, i in vocab.items() if vocabulary_filter(token)]] = True
    tokens = {i: token for token, i in vocab.items()}
    mask_id = tokenizer.mask_token_id

    @torch.no_grad()
    def candidates(words: Sequence[str], index: int) -> list[str]:
        masked = list(words)
        masked[index] = tokenizer.mask_token
        encoding = tokenizer(
            " ".join(masked), truncation=True, max_length=max_length, return_tensors="pt"
        )
        device = next(mlm_model.parameters()).device
        input_ids = encoding["input_ids"].to(device)  # (1, T)
        position = (input_ids[0] == mask_id).nonzero()
        if len(position) == 0:  # the mask was cut off by max_length
            return []
        was_training = mlm_model.training
        mlm_model.eval()
        try:
            logits = mlm_model(input_ids, encoding["attention_mask"].to(device)).logits
        finally:
            mlm_model.train(was_training)
        scores = logits[0, position[0, 0]].float().cpu()  # (V,)
        scores[~allowed] = -math.inf
        own = _token_id(vocab, words[index])
        if own is not None:
            scores[own] = -math.inf
        top = scores.topk(min(k, int(allowed.sum())))
        return [
            tokens[i]
            for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            if v > -math.inf
        ]

    return candidates


class SentenceSimilarity:
    """(a, b) → cosine of the mean-pooled sentence embeddings of two texts (see
    `bertcourse.embeddings.encode`); embeddings of recent texts are cached, so comparing
    many variants with one original encodes the original once."""

    def __init__(
        self,
        encoder_model: nn.Module,
        tokenizer: Callable[..., Any],
        *,
        max_length: int = 256,
        cache_size: int = 4096,
    ):
        self.encoder_model, self.tokenizer = encoder_model, tokenizer
        self.max_length, self.cache_size = max_length, cache_size
        self._cache: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, H) unit vectors, from the cache where possible."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing and len(self._cache) + len(missing) > self.cache_size:
            self._cache.clear()  # full: start again, encoding every text asked for now
            missing = list(dict.fromkeys(texts))
        if missing:
            vectors = encode(
                self.encoder_model, self.tokenizer, missing, max_length=self.max_length
            )
            self._cache.update(zip(missing, vectors, strict=True))
        return torch.stack([self._cache[t] for t in texts])

    def __call__(self, a: str, b: str) -> float:
        first, second = self.embed([a, b])
        return float(first @ second)


def sentence_similarity(
    encoder_model: nn.Module, tokenizer: Callable[..., Any], *, max_length: int = 256
) -> SentenceSimilarity:
    """A sentence-similarity function for the attack's meaning check: MiniLM
    (`BertModel.from_hf("minilm")`) with its tokenizer is a sentence encoder trained for it."""
    return SentenceSimilarity(encoder_model, tokenizer, max_length=max_length)


# ----------------------------------------------------------------------------
# The greedy substitution attack
# ----------------------------------------------------------------------------


def _without(words: Sequence[str], gaps: Sequence[str], index: int) -> str:
    """The text with words[index] deleted (the gaps on its two sides joined)."""
    kept_gaps = list(gaps[:index]) + [gaps[index] + gaps[index + 1]] + list(gaps[index + 2 :])
    return join_words(list(words[:index]) + list(words[index + 1 :]), kept_gaps)


def word_importance(
    classifier: Any,
    words: Sequence[str],
    label: int,
    *,
    gaps: Sequence[str] | None = None,
    full_probability: float | None = None,
) -> torch.Tensor:
    """(n_words,) importance of each word: the drop in the true class's probability when the
    word is deleted (leave-one-out), p(label | text) - p(label | text without word i).

    `words` come from `split_words` (pass its `gaps` to keep punctuation) or are joined by
    single spaces. All deletions are scored in one call of `classifier.predict_proba`, with
    the full text too unless `full_probability` is given.
    """
    words = list(words)
    if not words:
        return torch.empty(0)
    if gaps is None:
        gaps = [""] + [" "] * (len(words) - 1) + [""]
    texts = [_without(words, gaps, i) for i in range(len(words))]
    if full_probability is None:
        texts.append(join_words(words, gaps))
    probabilities = classifier.predict_proba(texts)[:, label]  # (n_words [+ 1],)
    if full_probability is None:
        full_probability, probabilities = probabilities[-1].item(), probabilities[:-1]
    return full_probability - probabilities


@dataclass
class AttackResult:
    """One attacked text. Probabilities are those of the true class `label`."""

    original: str
    adversarial: str
    label: int
    original_prediction: int
    final_prediction: int
    original_probability: float
    final_probability: float
    changed: list[tuple[int, str, str]] = field(default_factory=list)  # (word index, old, new)
    queries: int = 0  # texts scored by the classifier
    success: bool = False  # originally correct, now wrong
    skipped: bool = False  # originally wrong: nothing to attack
    n_words: int = 0

    @property
    def changed_fraction(self) -> float:
        return len(self.changed) / self.n_words if self.n_words else 0.0


def _match_case(candidate: str, original: str) -> str:
    """`candidate` in the case style of `original`: all capitals, capitalised, or lower."""
    if len(original) > 1 and original.isupper():
        return candidate.upper()
    if original[:1].isupper():
        return candidate[:1].upper() + candidate[1:].lower()
    return candidate.lower()


def _usable(candidates: Iterable[str], word: str) -> list[str]:
    """Distinct single words (letters only, so the word count stays), in the word's case,
    other than the word."""
    seen: dict[str, None] = {}
    for candidate in candidates:
        if isinstance(candidate, str) and _WORD.fullmatch(candidate):
            styled = _match_case(candidate, word)
            if styled.lower() != word.lower():
                seen.setdefault(styled)
    return list(seen)


def substitution_attack(
    classifier: Any,
    text: str,
    label: int,
    candidates: Callable[[Sequence[str], int], Sequence[str]],
    *,
    similarity: Callable[[str, str], float] | None = None,
    min_similarity: float = 0.8,
    max_changed_fraction: float = 0.25,
    stop_words: Iterable[str] = STOP_WORDS,
) -> AttackResult:
    """Greedy word substitution: change a few words so the classifier changes its mind.

    1. Score the text; if the prediction is already wrong, skip it.
    2. Rank the words by `word_importance` (leave-one-out), most important first.
    3. For each word in turn (never a stop word, compared lowercased): ask
       `candidates(current_words, index)` for substitutes (kept in the word's case);
       if `similarity` is given, keep those with similarity(text, new_text) >=
       min_similarity; score them all in one batch. If some flip the prediction, take
       the flip with the lowest true-class probability and stop: success. Otherwise
       keep the one that lowers the true-class probability most, if it lowers it at all.
    4. Stop after floor(max_changed_fraction * number of words) changes.

    `classifier` is anything with `predict_proba(texts) -> (N, C)`, such as a
    `TextClassifier`; `queries` counts the texts it scored. `candidates` can be an
    `EmbeddingNeighbours`, an `mlm_candidates` function, or any function of (words, index).
    """
    if not 0.0 <= max_changed_fraction <= 1.0:
        raise ValueError(f"max_changed_fraction must be in [0, 1], got {max_changed_fraction}.")
    stop = {word.lower() for word in stop_words}
    words, gaps = split_words(text)
    probabilities = classifier.predict_proba([text])[0]
    queries = 1
    prediction = int(probabilities.argmax())
    probability = probabilities[label].item()
    result = AttackResult(
        original=text,
        adversarial=text,
        label=label,
        original_prediction=prediction,
        final_prediction=prediction,
        original_probability=probability,
        final_probability=probability,
        queries=queries,
        skipped=prediction != label,
        n_words=len(words),
    )
    budget = math.floor(max_changed_fraction * len(words) + 1e-9)
    eligible = [i for i, word in enumerate(words) if word.lower() not in stop]
    if result.skipped or budget == 0 or not eligible:
        return result
    importance = word_importance(classifier, words, label, gaps=gaps, full_probability=probability)
    queries += len(words)
    order = sorted(eligible, key=lambda i: -importance[i].item())  # stable for ties
    current = list(words)
    for index in order:
        if len(result.changed) >= budget:
            break
        options = _usable(candidates(list(current), index), current[index])
        texts = [join_words(current[:index] + [o] + current[index + 1 :], gaps) for o in options]
        if similarity is not None:
            kept = [
                (o, t)
                for o, t in zip(options, texts, strict=True)
                if similarity(text, t) >= min_similarity
            ]
            options, texts = [o for o, _ in kept], [t for _, t in kept]
        if not texts:
            continue
        scored = classifier.predict_proba(texts)  # (n_options, C)
        queries += len(texts)
        true_class = scored[:, label]
        flipped = scored.argmax(dim=-1) != label
        if flipped.any():
            best = int(torch.where(flipped, true_class, torch.inf).argmin())
        else:
            best = int(true_class.argmin())
            if true_class[best].item() >= probability:
                continue
        result.changed.append((index, current[index], options[best]))
        current[index] = options[best]
        probability = true_class[best].item()
        result.final_prediction = int(scored[best].argmax())
        if flipped[best]:
            break
    result.adversarial = join_words(current, gaps)
    result.final_probability = probability
    result.queries = queries
    result.success = result.final_prediction != label
    return result


def attack_dataset(
    classifier: Any,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    candidates: Callable[[Sequence[str], int], Sequence[str]],
    **attack_options: Any,
) -> list[AttackResult]:
    """`substitution_attack` on every (text, label); options are passed on."""
    texts = _check_texts(texts)
    gold = _as_label_list(labels, len(texts))
    return [
        substitution_attack(classifier, text, label, candidates, **attack_options)
        for text, label in zip(texts, gold, strict=True)
    ]


def attack_summary(results: Sequence[AttackResult]) -> dict[str, float]:
    """The usual attack report over a list of results.

    clean_accuracy: originally correct / all. accuracy_under_attack: still correct after
    the attack / all (a skipped, originally wrong text counts as wrong).
    attack_success_rate: successes / originally correct (0.0 if none was correct).
    mean_changed_fraction: changed words / words, over the successes (0.0 if none).
    mean_queries: texts scored per attacked (originally correct) text (0.0 if none).
    Also the counts: total, skipped, successes, failures.
    """
    if not results:
        raise ValueError("attack_summary needs at least one AttackResult.")
    attacked = [r for r in results if not r.skipped]
    successes = [r for r in attacked if r.success]
    total = len(results)

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    return {
        "clean_accuracy": len(attacked) / total,
        "accuracy_under_attack": (len(attacked) - len(successes)) / total,
        "attack_success_rate": len(successes) / len(attacked) if attacked else 0.0,
        "mean_changed_fraction": mean([r.changed_fraction for r in successes]),
        "mean_queries": mean([float(r.queries) for r in attacked]),
        "total": total,
        "skipped": total - len(attacked),
        "successes": len(successes),
        "failures": len(attacked) - len(successes),
    }


# ----------------------------------------------------------------------------
# A defence: noise augmentation
# ----------------------------------------------------------------------------


def noisy_copies(
    texts: Sequence[str],
    labels: Sequence[Any],
    *,
    rate: float,
    copies: int = 1,
    seed: int = 0,
    kinds: Sequence[str] = TYPO_KINDS,
) -> tuple[list[str], list[Any]]:
    """Training data for noise augmentation: the originals, then `copies` typo'd copies of
    every text with its label (copy c of text i drawn with seed (seed * copies + c) * N + i,
    so all copies differ). Returns (texts, labels), (1 + copies) * N of each."""
    texts = _check_texts(texts)
    labels = list(labels)
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: give one label per text.")
    if copies < 0:
        raise ValueError(f"copies must be >= 0, not {copies}.")
    _check_rate(rate)
    out_texts, out_labels = list(texts), list(labels)
    for copy in range(copies):
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            copy_seed = _text_seed(seed * copies + copy, i, len(texts))
            out_texts.append(typos(text, rate, seed=copy_seed, kinds=kinds))
            out_labels.append(label)
    return out_texts, out_labels


# ----------------------------------------------------------------------------
# Bias: WEAT on sentence embeddings (SEAT)
# ----------------------------------------------------------------------------

# First names commonly given to men and to women in English-speaking countries, and words
# of working life and of home life, written for this course. Eight each, as in the original
# WEAT tests, and so equally small: see the caveats in `weat_test`.
MALE_NAMES = ("James", "Robert", "Daniel", "Thomas", "Mark", "Andrew", "Peter", "Richard")
FEMALE_NAMES = ("Mary", "Susan", "Karen", "Laura", "Linda", "Emily", "Helen", "Rachel")
CAREER_WORDS = (
    "promotion",
    "deadline",
    "contract",
    "client",
    "budget",
    "meeting",
    "headquarters",
    "payroll",
)
FAMILY_WORDS = (
    "childcare",
    "siblings",
    "toddler",
    "grandparents",
    "household",
    "bedtime",
    "nursery",
    "babysitter",
)
# Semantically "bleached" sentences, as in SEAT: the word is the only content.
NAME_TEMPLATES = ("This is {}.", "{} is here.", "Here is {}.", "{} is a person.", "That is {}.")
ATTRIBUTE_TEMPLATES = (
    "This is about {}.",
    "It is about {}.",
    "{} is a word.",
    "Here is the {}.",
    "That is the {}.",
)


def _rows(name: str, embeddings: torch.Tensor) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor, one embedding per row.")
    if len(embeddings) == 0:
        raise ValueError(f"{name} has no rows: each set needs at least one embedding.")
    return F.normalize(embeddings.detach().double(), dim=-1)


def _associations(
    X: torch.Tensor, Y: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b) for every w of X and of Y."""
    X, Y, A, B = (_rows(n, t) for n, t in zip("XYAB", (X, Y, A, B), strict=True))
    widths = {t.shape[1] for t in (X, Y, A, B)}
    if len(widths) > 1:
        raise ValueError(f"X, Y, A and B must share one embedding width, got {sorted(widths)}.")

    def s(W: torch.Tensor) -> torch.Tensor:
        return (W @ A.T).mean(dim=1) - (W @ B.T).mean(dim=1)  # (n_W,)

    return s(X), s(Y)


def weat_effect_size(X: torch.Tensor, Y: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> float:
    """Caliskan et al.'s effect size d for targets X, Y (rows) and attributes A, B (rows).

    d = (mean_{x in X} s(x) - mean_{y in Y} s(y)) / std_{w in X ∪ Y} s(w), with
    s(w) = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b) and the sample standard
    deviation (ddof = 1). Positive: X is closer to A (and Y to B) than the other way round;
    like Cohen's d, 0.2 is called small and 0.8 large.
    """
    s_x, s_y = _associations(X, Y, A, B)
    all_s = torch.cat([s_x, s_y])
    if len(all_s) < 3:
        raise ValueError("X and Y need 3 rows together for a standard deviation.")
    std = all_s.std()
    if std == 0:
        raise ValueError("every target has the same association: the effect size is undefined.")
    return ((s_x.mean() - s_y.mean()) / std).item()


def weat_test(
    X: torch.Tensor,
    Y: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """WEAT: the effect size and a one-sided permutation test (Caliskan et al., 2017).

    The statistic is S = sum_{x in X} s(x) - sum_{y in Y} s(y) (see `weat_effect_size`);
    the p-value is the fraction of re-partitions of X ∪ Y into sets of X's and Y's sizes
    whose statistic is >= S (the observed split included, so p > 0; the paper writes >,
    which differs only by that split). All partitions are enumerated when there are at
    most `permutations` of them; otherwise `permutations` random ones are drawn from
    `torch.Generator().manual_seed(seed)` and p = (1 + count) / (1 + permutations).

    Returns {"effect_size", "p_value", "statistic", "permutations", "exact"}.

    Caveats, to state next to any number this gives. The word lists are tiny and chosen by
    hand (here by the course, not by a study), so the result depends on which words were
    chosen; the templates make sentences that no one writes; an association in an encoder's
    embedding space is not a measure of harm in a downstream decision, and a small effect
    here does not show that a classifier built on it is fair; the p-value tests the
    association within these words only, not in the language, and many tests run
    together need a correction; names stand for gender only loosely (they vary by country,
    generation and culture) and a binary split of gender is itself a simplification.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, not {permutations}.")
    s_x, s_y = _associations(X, Y, A, B)
    effect_size = weat_effect_size(X, Y, A, B)
    scores = torch.cat([s_x, s_y])  # (n,)
    n, n_x = len(scores), len(s_x)
    total = scores.sum()
    statistic = (2 * s_x.sum() - total).item()  # sum over X minus sum over Y
    count = math.comb(n, n_x)
    exact = count <= permutations
    if exact:
        subsets = torch.tensor(list(itertools.combinations(range(n), n_x)), dtype=torch.long)
    else:
        generator = torch.Generator().manual_seed(seed)
        subsets = torch.rand(permutations, n, generator=generator).argsort(dim=1)[:, :n_x]
    statistics_ = 2 * scores[subsets].sum(dim=1) - total  # (partitions,)
    at_least = int((statistics_ >= statistic - 1e-12).sum())
    p_value = at_least / count if exact else (1 + at_least) / (1 + permutations)
    return {
        "effect_size": effect_size,
        "p_value": p_value,
        "statistic": statistic,
        "permutations": count if exact else permutations,
        "exact": exact,
    }


def template_sentences(words: Iterable[str], templates: Sequence[str]) -> list[str]:
    """Every word in every template: [t.format(w) for w in words for t in templates]."""
    return [template.format(word) for word in words for template in templates]


def seat_test(
    encoder_model: nn.Module,
    tokenizer: Callable[..., Any],
    X_words: Sequence[str] = MALE_NAMES,
    Y_words: Sequence[str] = FEMALE_NAMES,
    A_words: Sequence[str] = CAREER_WORDS,
    B_words: Sequence[str] = FAMILY_WORDS,
    *,
    target_templates: Sequence[str] = NAME_TEMPLATES,
    attribute_templates: Sequence[str] = ATTRIBUTE_TEMPLATES,
    permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """SEAT (May et al., 2019): `weat_test` on the sentence embeddings (`encode`, mean
    pooling) of every word in every template; each sentence is one element of its set.
    The defaults ask whether men's names sit closer to career words than women's names do.
    Read the caveats of `weat_test` before quoting the result."""

    def embed(words: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        return encode(encoder_model, tokenizer, template_sentences(words, templates))

    return weat_test(
        embed(X_words, target_templates),
        embed(Y_words, target_templates),
        embed(A_words, attribute_templates),
        embed(B_words, attribute_templates),
        permutations=permutations,
        seed=seed,
    )


# ----------------------------------------------------------------------------
# Out of domain: maximum softmax probability
# ----------------------------------------------------------------------------


def max_softmax_scores(classifier: Any, texts: Sequence[str]) -> torch.Tensor:
    """(N,) the classifier's confidence, max_c p(c | text): Hendrycks & Gimpel's (2017)
    baseline score, higher for in-domain inputs when it works."""
    return classifier.predict_proba(texts).max(dim=-1).values


def _scores(name: str, scores: Sequence[float] | torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if len(values) == 0:
        raise ValueError(f"{name} is empty: AUROC needs at least one score on each side.")
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or inf; scores must be finite.")
    return values


def auroc(
    in_scores: Sequence[float] | torch.Tensor, out_scores: Sequence[float] | torch.Tensor
) -> float:
    """The area under the ROC curve for telling in-domain (positive) from out-of-domain
    inputs by a score: the probability that a random in-domain input scores higher than a
    random out-of-domain one, ties counting 1/2 (the Mann-Whitney U statistic over
    n_in * n_out). 1.0 separates perfectly, 0.5 is chance."""
    positives, negatives = _scores("in_scores", in_scores), _scores("out_scores", out_scores)
    values = torch.cat([positives, negatives])
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last_rank = counts.cumsum(0).double()  # 1-based rank of the last copy of each value
    average_rank = last_rank - (counts.double() - 1) / 2  # ties share their mean rank
    ranks = average_rank[inverse]
    n_in, n_out = len(positives), len(negatives)
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return (u / (n_in * n_out)).item()
