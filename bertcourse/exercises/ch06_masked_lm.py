"""Chapter 6, masked language modelling: BERT's masking, judged by its rules."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._grading import (
    Case,
    Problem,
    _first_index,
    _fmt_index,
    _fmt_shape,
    _require_callable,
    _run_cases,
)

__all__ = [
    "check_mask_tokens",
    "check_whole_word_mask",
]


# The checker's made-up vocabularies: [PAD] 0, [CLS] 2, [SEP] 3, [MASK] 4, ordinary ids from 5.
_PAD_ID, _CLS_ID, _SEP_ID, _MLM_MASK_ID, _FIRST_ORDINARY_ID = 0, 2, 3, 4, 5
_RATE_STANDARD_ERRORS = 6  # a correct answer falls outside 6 standard errors about once in 10^8


@dataclass(frozen=True)
class _MaskingCase:
    """What a masking answer is judged against: the input and the rules it must follow."""

    input_ids: torch.Tensor
    special: torch.Tensor  # bool, True where nothing may be chosen
    special_as_ints: bool  # the learner was given the mask as 0/1 integers
    vocab_size: int
    mlm_probability: float
    check_rates: bool = False
    calls: int = 1  # 2: called twice with generators seeded alike; the answers must be equal


def _masking_batch(
    generator: torch.Generator, batch: int, length: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] [PAD]...: the first row full, the last half padded, others random."""
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    lengths[-1] = max(length // 2, 3)
    lengths[0] = length
    positions = torch.arange(length)[None, :]  # (1, T)
    ids = torch.randint(_FIRST_ORDINARY_ID, vocab_size, (batch, length), generator=generator)
    ids[:, 0] = _CLS_ID
    ids = torch.where(positions == (lengths - 1)[:, None], _SEP_ID, ids)  # (B, T)
    padding = positions >= lengths[:, None]  # (B, T)
    ids = ids.masked_fill(padding, _PAD_ID)
    special = padding | (ids == _CLS_ID) | (ids == _SEP_ID)
    return ids, special


def _masking_problem(spec: _MaskingCase, answer: Any) -> Problem | None:
    """The first rule a masking answer breaks, with a hint that names it."""
    if spec.calls == 1:
        return _single_masking_problem(spec, answer)
    first, second = answer
    problem = _single_masking_problem(spec, first)
    if problem is None and not all(torch.equal(a, b) for a, b in zip(first, second, strict=True)):
        return Problem(
            ["two calls with generators seeded alike gave different results"],
            "draw every random number from the `generator` argument: torch.rand(..., "
            "generator=generator), torch.randint(..., generator=generator).",
        )
    return problem


def _single_masking_problem(spec: _MaskingCase, answer: Any) -> Problem | None:
    """The first rule one answer breaks: its form, the labels, the inputs, then the rates."""
    problem = _masking_form_problem(spec, answer)
    if problem is not None:
        return problem
    inputs, labels = answer
    labelled = labels != -100  # (B, T): the positions chosen for prediction
    candidates = int((~spec.special).sum())
    problem = _masking_labels_problem(spec, inputs, labels, labelled, candidates)
    if problem is None:
        problem = _masking_inputs_problem(spec, inputs, labelled)
    if problem is None and spec.check_rates:
        problem = _masking_rates_problem(spec, inputs, labelled, candidates)
    return problem


def _masking_form_problem(spec: _MaskingCase, answer: Any) -> Problem | None:
    """Not a pair (inputs, labels) of integer tensors of the shape of input_ids."""
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return Problem(
            [f"expected a pair (inputs, labels), got {type(answer).__name__}"],
            "return two tensors: the corrupted inputs and the labels.",
        )
    original = spec.input_ids
    for what, value in zip(("inputs", "labels"), answer, strict=True):
        if not isinstance(value, torch.Tensor) or value.shape != original.shape:
            got = (
                _fmt_shape(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            )
            return Problem(
                [f"{what}: expected a tensor of shape {_fmt_shape(original.shape)}, got {got}"],
                f"return {what} with one entry per token: the shape of input_ids.",
            )
        if value.dtype != torch.long:
            return Problem(
                [f"{what} has dtype {value.dtype}, expected torch.int64 (token ids)"],
                "keep the ids as integers (torch.long): masked_fill, torch.where and clone do.",
            )
    return None


def _masking_labels_problem(
    spec: _MaskingCase,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    labelled: torch.Tensor,
    candidates: int,
) -> Problem | None:
    """Labels almost everywhere, on a special position, or not the original id."""
    original, special = spec.input_ids, spec.special
    if candidates >= 10 and labelled.sum() > 0.9 * candidates:
        return Problem(
            [f"{int(labelled.sum()):,} of {original.numel():,} positions have a label (not -100)"],
            "labels must be -100 wherever the token was not chosen, so that the loss ignores "
            "those positions; only the chosen ~15% carry their original id.",
        )
    if bool((labelled & special).any()):
        index = _first_index(labelled & special)
        as_ints = (
            " (here 0/1 integers: use special_tokens_mask.bool())" if spec.special_as_ints else ""
        )
        return Problem(
            [
                f"the special position {_fmt_index(index)} (id {int(original[tuple(index)])}) was "
                "chosen: [CLS], [SEP] and padding are never predicted"
            ],
            f"never choose a position where special_tokens_mask is True{as_ints}: "
            "exclude those positions from the draw.",
        )
    wrong_label = labelled & (labels != original)
    if bool(wrong_label.any()):
        index = _first_index(wrong_label)
        corrupted = bool((labels[wrong_label] == inputs[wrong_label]).all())
        return Problem(
            [
                f"labels{_fmt_index(index)} = {int(labels[tuple(index)])}, but the original token "
                f"there is {int(original[tuple(index)])}"
            ],
            "labels must hold the original token id, not the corrupted input: take them from "
            "input_ids before replacing anything."
            if corrupted
            else "at a chosen position the label is the original id; elsewhere it is -100.",
        )
    return None


def _masking_inputs_problem(
    spec: _MaskingCase, inputs: torch.Tensor, labelled: torch.Tensor
) -> Problem | None:
    """An unchosen input that changed, or an id outside the vocabulary."""
    original = spec.input_ids
    changed = ~labelled & (inputs != original)
    if bool(changed.any()):
        index = _first_index(changed)
        return Problem(
            [
                f"inputs{_fmt_index(index)} changed from {int(original[tuple(index)])} to "
                f"{int(inputs[tuple(index)])} although its label is -100 (not chosen); "
                f"{int(changed.sum()):,} unchosen tokens changed in all"
            ],
            "only chosen tokens may change: apply [MASK] and the random replacement to chosen "
            "positions only (combine each draw with the chosen mask).",
        )
    out_of_range = (inputs < 0) | (inputs >= spec.vocab_size)
    if bool(out_of_range.any()):
        index = _first_index(out_of_range)
        return Problem(
            [
                f"inputs{_fmt_index(index)} = {int(inputs[tuple(index)])} is not an id in "
                f"[0, {spec.vocab_size})"
            ],
            "draw random replacements with torch.randint(vocab_size, shape, generator=generator).",
        )
    return None


def _masking_rates_problem(
    spec: _MaskingCase, inputs: torch.Tensor, labelled: torch.Tensor, candidates: int
) -> Problem | None:
    """The chosen rate and the 80/10/10 split, within a few standard errors."""
    chosen = int(labelled.sum())
    rate = chosen / candidates
    p = spec.mlm_probability
    if abs(rate - p) > _RATE_STANDARD_ERRORS * math.sqrt(p * (1 - p) / candidates):
        fixed_rate = abs(rate - 0.15) < 0.01 and abs(p - 0.15) > 0.05
        return Problem(
            [
                f"{rate:.1%} of the {candidates:,} ordinary tokens were chosen; expected about "
                f"{p:.0%} (mlm_probability={p})"
            ],
            f"use the mlm_probability argument ({p}) instead of a fixed 0.15."
            if fixed_rate
            else "choose each ordinary token with probability mlm_probability: "
            "torch.rand(shape, generator=generator) < mlm_probability.",
        )
    return _corruption_split_problem(spec, inputs, labelled)


def _corruption_split_problem(
    spec: _MaskingCase, inputs: torch.Tensor, labelled: torch.Tensor
) -> Problem | None:
    """The 80/10/10 split of the chosen tokens, and random ids drawn from the whole vocabulary."""
    chosen = int(labelled.sum())
    corrupted = inputs[labelled]
    as_mask = corrupted == _MLM_MASK_ID
    kept = corrupted == spec.input_ids[labelled]
    shares = {
        "[MASK]": (float(as_mask.float().mean()), 0.8),
        "random": (float((~as_mask & ~kept).float().mean()), 0.1),
        "unchanged": (float((kept & ~as_mask).float().mean()), 0.1),
    }
    for share, target in shares.values():
        if abs(share - target) > _RATE_STANDARD_ERRORS * math.sqrt(target * (1 - target) / chosen):
            found = ", ".join(f"{share:.1%} {name}" for name, (share, _) in shares.items())
            return Problem(
                [f"of the {chosen:,} chosen tokens: {found}; expected 80% / 10% / 10%"],
                "of the chosen tokens 80% become [MASK], 10% a random token and 10% stay "
                "unchanged: one uniform draw per token, [MASK] below 0.8, random in [0.8, 0.9).",
            )
    random_ids = corrupted[~as_mask & ~kept]
    distinct = random_ids.unique().numel()
    if random_ids.numel() >= 100 and distinct < random_ids.numel() // 4:
        return Problem(
            [f"the {random_ids.numel()} random replacements use only {distinct} different ids"],
            "draw each random replacement uniformly from the whole vocabulary: "
            "torch.randint(vocab_size, shape, generator=generator).",
        )
    return None


def _with_seeded_generators(fn: Callable) -> Callable:
    """`fn` called `calls` times, each with a generator seeded alike, the global state restored."""

    @functools.wraps(fn)
    def graded(input_ids, special_tokens_mask, vocab_size, mlm_probability, calls, seed):
        answers = []
        with torch.random.fork_rng(devices=[]):  # draws from the global generator leave no trace
            torch.manual_seed(seed)
            for _ in range(calls):
                generator = torch.Generator().manual_seed(seed)
                answers.append(
                    fn(
                        input_ids.clone(),
                        special_tokens_mask.clone(),
                        vocab_size,
                        _MLM_MASK_ID,
                        mlm_probability,
                        generator,
                    )
                )
        return answers[0] if calls == 1 else tuple(answers)

    return graded


def _masking_case(
    g: torch.Generator,
    seed: int,
    description: str,
    batch: int,
    length: int,
    vocab_size: int,
    p: float = 0.15,
    rates: bool = False,
    calls: int = 1,
    ints: bool = False,
) -> Case:
    """A batch to mask with its rules; the arguments are those `_with_seeded_generators` takes."""
    ids, special = _masking_batch(g, batch, length, vocab_size)
    spec = _MaskingCase(ids, special, ints, vocab_size, p, rates, calls)
    special_argument = special.long() if ints else special
    return Case(description, (ids, special_argument, vocab_size, p, calls, seed), spec)


def _masking_cases() -> list[Case]:
    """A small padded batch, large batches for the rates, an int mask, [CLS] x [SEP], two calls."""
    g = torch.Generator().manual_seed(13)
    return [
        _masking_case(g, 0, "batch 2, length 10, vocab 30, the second row padded", 2, 10, 30),
        _masking_case(
            g,
            1,
            "512 × 128 (about 48,000 ordinary tokens), vocab 1,000: labels, specials and the "
            "15% / 80-10-10 rates",
            512,
            128,
            1000,
            rates=True,
        ),
        _masking_case(
            g, 2, "512 × 128, vocab 1,000, mlm_probability=0.4", 512, 128, 1000, p=0.4, rates=True
        ),
        _masking_case(
            g,
            3,
            "special_tokens_mask as 0/1 integers (as tokenizers return it), 64 × 32, vocab 500",
            64,
            32,
            500,
            ints=True,
        ),
        _masking_case(g, 4, "batch 1, length 3 ([CLS] one token [SEP]), vocab 20", 1, 3, 20),
        _masking_case(
            g,
            5,
            "two calls with generators seeded alike (256 × 64, vocab 1,000) must agree",
            256,
            64,
            1000,
            calls=2,
        ),
    ]


def check_mask_tokens(fn: Callable) -> bool:
    """Grade `fn(input_ids, special_tokens_mask, vocab_size, mask_token_id, mlm_probability=0.15,
    generator=None)` -> (inputs, labels): BERT's masking, as `bertcourse.data.mask_tokens`.

    The answer is random, so it is judged by rules rather than compared with
    one reference: shapes and dtype; labels -100 off the chosen positions and
    the original id on them; [CLS], [SEP] and padding never chosen; unchosen
    inputs unchanged; on large batches the rates (mlm_probability chosen; of
    those 80% [MASK], 10% random, 10% unchanged); the same answer from
    generators seeded alike. The learner's global random state is left alone.
    """
    _require_callable("check_mask_tokens", fn)
    return _run_cases(
        "check_mask_tokens",
        _with_seeded_generators(fn),
        _masking_cases(),
        _masking_problem,
        (),
        "print the chosen mask, the inputs and the labels of a small batch and compare them "
        "with the chapter's step-by-step masking.",
    )


# ----------------------------------------------------------------------------
# Whole-word masking
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _WholeWordCase(_MaskingCase):
    """A masking case whose tokens form words: True in word_starts where a word begins."""

    word_starts: torch.Tensor | None = None  # bool (B, T); True at special tokens too


def _word_starts(
    generator: torch.Generator, special: torch.Tensor, continue_probability: float
) -> torch.Tensor:
    """(B, T) bool: a word starts after every special token, and elsewhere at random."""
    starts = torch.rand(special.shape, generator=generator) >= continue_probability
    after_special = torch.zeros_like(special)
    after_special[:, 1:] = special[:, :-1]
    return starts | special | after_special


def _word_ids(spec: _WholeWordCase) -> torch.Tensor:
    """(B, T) long: a number per word, unique in the whole batch (specials are words of one)."""
    starts = spec.word_starts
    rows, length = starts.shape
    return starts.long().cumsum(dim=1) - 1 + torch.arange(rows)[:, None] * length


def _whole_word_problem(spec: _WholeWordCase, answer: Any) -> Problem | None:
    """The first rule a whole-word masking answer breaks, with a hint that names it."""
    if spec.calls == 1:
        return _single_whole_word_problem(spec, answer)
    first, second = answer
    problem = _single_whole_word_problem(spec, first)
    if problem is None and not all(torch.equal(a, b) for a, b in zip(first, second, strict=True)):
        return Problem(
            ["two calls with generators seeded alike gave different results"],
            "draw every random number from the `generator` argument: torch.rand(..., "
            "generator=generator), torch.randint(..., generator=generator).",
        )
    return problem


def _single_whole_word_problem(spec: _WholeWordCase, answer: Any) -> Problem | None:
    """Form, labels and inputs as for token masking; then whole words, the word rate, 80/10/10."""
    problem = _masking_form_problem(spec, answer)
    if problem is not None:
        return problem
    inputs, labels = answer
    labelled = labels != -100  # (B, T)
    candidates = int((~spec.special).sum())
    problem = _masking_labels_problem(spec, inputs, labels, labelled, candidates)
    if problem is None:
        problem = _masking_inputs_problem(spec, inputs, labelled)
    if problem is None:
        problem = _partial_word_problem(spec, labelled)
    if problem is None and spec.check_rates:
        problem = _word_rate_problem(spec, labelled) or _corruption_split_problem(
            spec, inputs, labelled
        )
    return problem


def _partial_word_problem(spec: _WholeWordCase, labelled: torch.Tensor) -> Problem | None:
    """A word with some of its pieces chosen and others not."""
    word_ids = _word_ids(spec).flatten()
    ordinary = (~spec.special).flatten()
    chosen = labelled.flatten() & ordinary
    size = int(word_ids.max()) + 1
    pieces = torch.zeros(size, dtype=torch.long).index_add_(0, word_ids, ordinary.long())
    picked = torch.zeros(size, dtype=torch.long).index_add_(0, word_ids, chosen.long())
    partial = (picked > 0) & (picked < pieces)  # (words,)
    if not bool(partial.any()):
        return None
    length = spec.input_ids.shape[1]
    word = int(partial.nonzero()[0, 0])
    positions = (word_ids == word).nonzero()[:, 0]
    row, first = divmod(int(positions[0]), length)
    last = int(positions[-1]) % length
    shown = ["x" if bool(chosen[i]) else "." for i in positions.tolist()]
    starts = spec.word_starts.flatten()
    later_pieces = ~starts & ordinary
    start_without_rest = bool((partial[word_ids] & starts & chosen).any())
    rest_without_start = bool(
        (partial[word_ids] & later_pieces & chosen).any()
        and (partial[word_ids] & starts & ~chosen).any()
    )
    hint = (
        "every piece of a chosen word must be chosen, not only its first piece: give each "
        "piece the draw made for its word's first piece."
        if start_without_rest and not rest_without_start
        else "draw once per word, not once per token, and give every piece its word's draw. "
        "A word is a word_starts position and the pieces after it up to the next start: "
        "check how you number the words (a cumulative sum of word_starts along each row)."
    )
    return Problem(
        [
            f"{_count(int(partial.sum()), 'word')} only partly chosen, e.g. row {row}, the word at "
            f"positions {first} to {last}: chosen pieces {''.join(shown)} (x chosen, . not)"
        ],
        hint,
    )


def _count(number: int, noun: str) -> str:
    """'1 word is', '3 words are'."""
    return f"{number:,} {noun} is" if number == 1 else f"{number:,} {noun}s are"


def _word_rate_problem(spec: _WholeWordCase, labelled: torch.Tensor) -> Problem | None:
    """The share of words chosen, within a few standard errors of mlm_probability."""
    word_ids = _word_ids(spec).flatten()
    ordinary = (~spec.special).flatten()
    size = int(word_ids.max()) + 1
    pieces = torch.zeros(size, dtype=torch.long).index_add_(0, word_ids, ordinary.long())
    picked = torch.zeros(size, dtype=torch.long).index_add_(
        0, word_ids, (labelled.flatten() & ordinary).long()
    )
    words = int((pieces > 0).sum())
    rate = int((picked > 0).sum()) / words
    p = spec.mlm_probability
    if abs(rate - p) <= _RATE_STANDARD_ERRORS * math.sqrt(p * (1 - p) / words):
        return None
    if abs(rate - 0.15) < 0.01 and abs(p - 0.15) > 0.05:
        hint = f"use the mlm_probability argument ({p}) instead of a fixed 0.15."
    elif rate > p:
        hint = (
            "too many words are chosen: a word is chosen by one draw below mlm_probability. "
            "Choosing a word whenever any of its pieces draws below it favours long words."
        )
    else:
        hint = (
            "too few words are chosen: a word is chosen by one draw below mlm_probability, "
            "not only when all of its pieces draw below it."
        )
    return Problem(
        [
            f"{rate:.1%} of the {words:,} words were chosen; expected about {p:.0%} "
            f"(mlm_probability={p})"
        ],
        hint,
    )


def _with_seeded_generators_and_words(fn: Callable) -> Callable:
    """`fn` called `calls` times with word_starts, each with a generator seeded alike."""

    @functools.wraps(fn)
    def graded(input_ids, special, word_starts, vocab_size, mlm_probability, calls, seed):
        answers = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(calls):
                generator = torch.Generator().manual_seed(seed)
                answers.append(
                    fn(
                        input_ids.clone(),
                        special.clone(),
                        word_starts.clone(),
                        vocab_size,
                        _MLM_MASK_ID,
                        mlm_probability,
                        generator,
                    )
                )
        return answers[0] if calls == 1 else tuple(answers)

    return graded


def _whole_word_case(
    g: torch.Generator,
    seed: int,
    description: str,
    batch: int,
    length: int,
    vocab_size: int,
    p: float = 0.15,
    rates: bool = False,
    calls: int = 1,
    continue_probability: float = 0.45,
) -> Case:
    """A batch of words to mask with its rules."""
    ids, special = _masking_batch(g, batch, length, vocab_size)
    starts = _word_starts(g, special, continue_probability)
    spec = _WholeWordCase(ids, special, False, vocab_size, p, rates, calls, starts)
    return Case(description, (ids, special, starts, vocab_size, p, calls, seed), spec)


def _whole_word_cases() -> list[Case]:
    """A small padded batch, large batches for the rates, long words, [CLS] x [SEP], two calls."""
    g = torch.Generator().manual_seed(17)
    return [
        _whole_word_case(g, 0, "batch 2, length 12, vocab 40, the second row padded", 2, 12, 40),
        _whole_word_case(
            g,
            1,
            "512 × 128 (about 27,000 words, 1.8 pieces each on average), vocab 1,000: whole "
            "words, the 15% word rate and the 80-10-10 split",
            512,
            128,
            1000,
            rates=True,
        ),
        _whole_word_case(
            g, 2, "512 × 128, vocab 1,000, mlm_probability=0.4", 512, 128, 1000, p=0.4, rates=True
        ),
        _whole_word_case(
            g,
            3,
            "256 × 64, long words (2.8 pieces each on average), vocab 500",
            256,
            64,
            500,
            rates=True,
            continue_probability=0.67,
        ),
        _whole_word_case(g, 4, "batch 1, length 3 ([CLS] one token [SEP]), vocab 20", 1, 3, 20),
        _whole_word_case(
            g,
            5,
            "two calls with generators seeded alike (256 × 64, vocab 1,000) must agree",
            256,
            64,
            1000,
            calls=2,
        ),
    ]


def check_whole_word_mask(fn: Callable) -> bool:
    """Grade `fn(input_ids, special_tokens_mask, word_starts, vocab_size, mask_token_id,
    mlm_probability=0.15, generator=None)` -> (inputs, labels): whole-word masking.

    word_starts (B, T) is True where a word begins (and at special tokens). A
    word is chosen with probability mlm_probability, and then all of its pieces
    are; each chosen piece becomes [MASK] (80%), a random token (10%) or stays
    (10%) on its own. Judged by rules, as `check_mask_tokens`, plus: no word
    partly chosen, and on large batches the share of words chosen.
    """
    _require_callable("check_whole_word_mask", fn)
    return _run_cases(
        "check_whole_word_mask",
        _with_seeded_generators_and_words(fn),
        _whole_word_cases(),
        _whole_word_problem,
        (),
        "print word_starts, the chosen mask and the labels of a small batch side by side: "
        "the pieces of one word must be chosen together.",
    )
