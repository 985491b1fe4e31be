"""Pretraining data: masked tokens (MLM) and sentence pairs (NSP), and their collator."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .documents import Corpus, Document

# ----------------------------------------------------------------------------
# Pretraining data: masked tokens (MLM) and sentence pairs (NSP)
# ----------------------------------------------------------------------------

__all__ = [
    "MASK_FRACTION",
    "RANDOM_FRACTION",
    "mask_tokens",
    "special_tokens_mask",
    "continuation_table",
    "truncate_pair",
    "create_nsp_examples",
    "create_mlm_examples",
    "PretrainingCollator",
]

MASK_FRACTION = 0.8  # of the chosen tokens, replaced by [MASK]
RANDOM_FRACTION = 0.1  # replaced by a random token; the remaining 10% are kept as they are


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose ~15% of the ordinary tokens; of those, 80% -> [MASK], 10% -> a
    random token, 10% unchanged. Returns (inputs, labels) with labels -100 where nothing is
    predicted.

    special_tokens_mask (B, T) is True at [CLS], [SEP] and padding: they are never chosen.
    Keeping 10% unchanged and corrupting 10% means the model cannot tell from the input which
    tokens it will be asked about, so it must keep a good representation of every token, not
    only of [MASK] (Devlin et al. 2019, section 3.1 and appendix C.2).

    word_starts (B, T), optional, True where a token begins a word (not a "##" piece):
    whole-word masking, where a chosen word has all its pieces chosen, so the model cannot
    read "##ing" to guess the masked stem.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability is a probability in (0, 1), got {mlm_probability}.")
    if special_tokens_mask.shape != input_ids.shape:
        raise ValueError(
            f"special_tokens_mask {tuple(special_tokens_mask.shape)} must have the shape of "
            f"input_ids {tuple(input_ids.shape)}."
        )
    candidates = ~special_tokens_mask.bool()
    draws = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    if word_starts is None:
        chosen = (draws < mlm_probability) & candidates
    else:
        # Every piece takes the draw made at its word's first piece: the position of the
        # latest word start at or before it is a running maximum over start positions.
        starts = word_starts.bool() | special_tokens_mask.bool()  # (B, T)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        word_start = torch.where(starts, positions, 0).cummax(dim=-1).values  # (B, T)
        chosen = (draws.gather(1, word_start) < mlm_probability) & candidates
    labels = input_ids.masked_fill(~chosen, -100)

    action = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    to_mask = chosen & (action < MASK_FRACTION)
    to_random = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(
        input_ids.device
    )
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def special_tokens_mask(input_ids: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """True where input_ids holds one of the special ids ([CLS], [SEP], [PAD], ...)."""
    special = torch.tensor(sorted(set(special_ids)), device=input_ids.device)
    return torch.isin(input_ids, special)


def continuation_table(tokenizer: Any) -> torch.Tensor:
    """(V,) bool: True for the vocabulary's "##" pieces, which continue a word."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([token.startswith("##") for token in tokens])


def _document_sentences(documents: Any) -> list[list[str]]:
    """Corpus, list of Documents, or list of lists of sentences -> list of lists of sentences."""
    if isinstance(documents, Corpus):
        documents = documents.documents
    return [d.sentences if isinstance(d, Document) else list(d) for d in documents]


def _tokenized_documents(documents: Any, tokenizer: Any) -> list[list[list[int]]]:
    """Every sentence as token ids (no special tokens); empty sentences and documents dropped."""
    tokenized = []
    for sentences in _document_sentences(documents):
        ids = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s)) for s in sentences]
        ids = [sentence for sentence in ids if sentence]
        if ids:
            tokenized.append(ids)
    return tokenized


def _pair_example(
    tokenizer: Any, tokens_a: list[int], tokens_b: list[int] | None, **extra: Any
) -> dict[str, Any]:
    input_ids = [tokenizer.cls_token_id, *tokens_a, tokenizer.sep_token_id]
    token_type_ids = [0] * len(input_ids)
    if tokens_b is not None:
        input_ids += [*tokens_b, tokenizer.sep_token_id]
        token_type_ids += [1] * (len(tokens_b) + 1)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, **extra}


def truncate_pair(
    tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: random.Random
) -> None:
    """The original recipe's rule: shorten the longer segment, one token at a time, from the
    front or the back at random (so the model does not learn that segments always end whole)."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def create_nsp_examples(
    documents: Any,
    tokenizer: Any,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    seed: int = 0,
    dupe_factor: int = 1,
    next_sentence_probability: float = 0.5,
) -> list[dict[str, Any]]:
    """Sentence-pair examples for MLM + NSP, following the original BERT data recipe.

    Sentences of a document are gathered into a chunk until it reaches the target length
    (max_seq_length - 3, or with probability short_seq_prob a random shorter length, so the
    model also sees short inputs). The chunk is cut at a random sentence boundary into A and B.
    Half of the time (IsNext, label 0) B is the rest of the chunk; otherwise (NotNext, label 1)
    B is text from a random position in a *different* document, and the unused sentences of
    the chunk are put back for the next example. The pair is then truncated to fit.
    One change from the original: there, a chunk of a single sentence always became NotNext,
    which on the offline corpus (long sentences, short documents) lowers the IsNext rate to
    45%. Here such a sentence is cut at a random token when IsNext is drawn (BERT's
    "sentences" are arbitrary spans of contiguous text anyway), which keeps the rate at 50%.

    documents: a Corpus, a list of Documents, or lists of sentences. Each example is a dict
    with input_ids ([CLS] A [SEP] B [SEP]), token_type_ids, next_sentence_label, and where
    the text came from: document, b_document, a_sentences, b_sentences (sentence indices).
    dupe_factor passes over the data with different random choices give more examples.
    """
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length={max_seq_length} is too short for a sentence pair.")
    tokenized = _tokenized_documents(documents, tokenizer)
    if len(tokenized) < 2:
        raise ValueError(
            "NSP needs at least two non-empty documents (NotNext draws from another one)."
        )
    rng = random.Random(seed)
    examples: list[dict[str, Any]] = []
    for _ in range(dupe_factor):
        for document_index in range(len(tokenized)):
            examples.extend(
                _nsp_examples_from_document(
                    tokenized,
                    document_index,
                    tokenizer,
                    max_seq_length,
                    short_seq_prob,
                    next_sentence_probability,
                    rng,
                )
            )
    rng.shuffle(examples)
    return examples


def _nsp_examples_from_document(
    tokenized: list[list[list[int]]],
    document_index: int,
    tokenizer: Any,
    max_seq_length: int,
    short_seq_prob: float,
    next_sentence_probability: float,
    rng: random.Random,
) -> list[dict[str, Any]]:
    document = tokenized[document_index]
    max_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    target_length = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
    examples = []
    chunk: list[int] = []  # sentence indices
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(i)
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a_sentences = chunk[:a_end]
            tokens_a = [t for s in a_sentences for t in document[s]]
            is_next = rng.random() < next_sentence_probability
            if is_next and len(chunk) == 1 and len(tokens_a) >= 2:
                # One sentence cannot be cut at a sentence boundary: cut it at a token.
                cut = rng.randint(1, len(tokens_a) - 1)
                label, b_document, b_sentences = 0, document_index, list(chunk)
                tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
            elif not is_next or len(chunk) == 1:
                label = 1  # NotNext: B from a random place in another document
                b_document = rng.randrange(len(tokenized) - 1)
                b_document += b_document >= document_index
                other = tokenized[b_document]
                start = rng.randrange(len(other))
                b_sentences, tokens_b = [], []
                for s in range(start, len(other)):
                    b_sentences.append(s)
                    tokens_b.extend(other[s])
                    if len(tokens_b) >= target_length - len(tokens_a):
                        break
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                label = 0  # IsNext: B is the rest of the chunk
                b_document = document_index
                b_sentences = chunk[a_end:]
                tokens_b = [t for s in b_sentences for t in document[s]]
            truncate_pair(tokens_a, tokens_b, max_tokens, rng)
            examples.append(
                _pair_example(
                    tokenizer,
                    tokens_a,
                    tokens_b,
                    next_sentence_label=label,
                    document=document_index,
                    b_document=b_document,
                    a_sentences=a_sentences,
                    b_sentences=b_sentences,
                )
            )
            chunk, chunk_length = [], 0
        i += 1
    return examples


def create_mlm_examples(
    documents: Any, tokenizer: Any, max_seq_length: int = 128, seed: int = 0
) -> list[dict[str, Any]]:
    """Examples for MLM without NSP: each document's text packed into [CLS] ... [SEP] windows.

    Whole sentences are added while they fit (a sentence longer than a window is split), so
    every example is one contiguous stretch of one document, and the model trains on long
    inputs without the sentence-pair task (as RoBERTa found works at least as well).
    """
    budget = max_seq_length - 2
    if budget < 1:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text.")
    examples = []
    for document_index, document in enumerate(_tokenized_documents(documents, tokenizer)):
        window: list[int] = []
        for sentence in document:
            if window and len(window) + len(sentence) > budget:
                examples.append(_pair_example(tokenizer, window, None, document=document_index))
                window = []
            while len(sentence) > budget:
                examples.append(
                    _pair_example(tokenizer, sentence[:budget], None, document=document_index)
                )
                sentence = sentence[budget:]
            window = window + sentence
        if window:
            examples.append(_pair_example(tokenizer, window, None, document=document_index))
    random.Random(seed).shuffle(examples)
    return examples


class PretrainingCollator:
    """Pads a list of examples to the batch's longest and masks it for MLM (dynamic padding).

    Returns LongTensors input_ids, token_type_ids, attention_mask, labels (-100 where nothing
    is predicted) and, when the examples carry it, next_sentence_label. Masking is random each
    time a batch is built (the "dynamic masking" RoBERTa introduced; BERT masked once, offline):
    pass a seeded `generator` to make it reproducible.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        seed: int | None = None,
    ):
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = list(tokenizer.all_special_ids)
        self.mlm_probability = mlm_probability
        self.continuation = continuation_table(tokenizer) if whole_word_mask else None
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        length = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), length), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.tensor(example["input_ids"])
            token_type_ids[row, :n] = torch.tensor(example.get("token_type_ids", [0] * n))
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
        }

    def __call__(
        self, examples: Sequence[dict[str, Any]], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        batch = self.pad(examples)
        special = special_tokens_mask(batch["input_ids"], self.special_ids)
        special |= batch["attention_mask"] == 0
        word_starts = None
        if self.continuation is not None:
            word_starts = ~self.continuation[batch["input_ids"]]
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"],
            special,
            self.vocab_size,
            self.mask_token_id,
            self.mlm_probability,
            generator or self.generator,
            word_starts,
        )
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor(
                [example["next_sentence_label"] for example in examples]
            )
        return batch
