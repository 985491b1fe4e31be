"""Sentence embeddings and semantic search, from scratch.

An encoder gives one vector per token; search needs one vector per text. This module turns
the course's `BertModel` into a sentence encoder and a search engine:

- pooling (`pool`): the [CLS] vector, or the mean or the maximum over the real tokens
  (the attention mask decides which), then L2 normalisation;
- `encode(model, tokenizer, texts)`: texts → an (N, H) tensor, in batches of similar length;
- `contrastive_loss`: in-batch negatives (InfoNCE), optionally with hard negatives, the loss
  that trains sentence-transformers' models; `BiEncoder` wraps a model to train with it;
- retrieval metrics (`recall_at_k`, `mrr_at_k`, `ndcg_at_k`, `retrieval_metrics`);
- exact search by a matrix product (`search`, `EmbeddingIndex` that saves and loads);
- the lexical baseline BM25 (`bm25_search`, from the `bm25s` package), reciprocal-rank fusion,
  and reranking with a cross-encoder (a pair classifier, chapter 10's model);
- `save_sentence_transformer`: a folder that `sentence_transformers.SentenceTransformer` loads.

Tests prove `encode` equal to `SentenceTransformer.encode`, `contrastive_loss` equal to
`MultipleNegativesRankingLoss`, and the metrics equal to `InformationRetrievalEvaluator`'s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .files import atomic_directory, atomic_save_file
from .hf import export_for_transformers, save_pretrained

__all__ = [
    "POOLINGS",
    "DEFAULT_SCALE",
    "pool",
    "encode",
    "encode_poolings",
    "contrastive_loss",
    "BiEncoder",
    "BiEncoderOutput",
    "pair_examples",
    "PairCollator",
    "retrieval_evaluator",
    "search",
    "EmbeddingIndex",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "retrieval_metrics",
    "evaluate_retrieval",
    "bm25_search",
    "reciprocal_rank_fusion",
    "rerank",
    "save_sentence_transformer",
]

POOLINGS = ("cls", "mean", "max")
# sentence-transformers' default for MultipleNegativesRankingLoss: cosine similarities times
# 20, i.e. a softmax temperature of 0.05.
DEFAULT_SCALE = 20.0
PROGRESS_MIN_TEXTS = 2_000  # a progress bar for inputs longer than this


# ----------------------------------------------------------------------------
# Pooling and encoding
# ----------------------------------------------------------------------------


def pool(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean"
) -> torch.Tensor:
    """(B, T, H) token vectors → (B, H) text vectors, ignoring padding.

    "cls": the first token's vector. "mean": the average of the real tokens' vectors
    (mask 1), not of the padding. "max": the largest value of each feature over the real
    tokens (padding set to -inf first, so it never wins).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    if pooling == "cls":
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
    if pooling == "mean":
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return hidden_states.masked_fill(mask == 0, float("-inf")).max(dim=1).values


def _tokenize(tokenizer: Callable[..., Any], texts: Sequence[str], max_length: int) -> list:
    return list(tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"])


def _batches_by_length(
    ids: list[list[int]], batch_size: int, pad_token_id: int, device: torch.device
):
    """(positions, input_ids, attention_mask) batches, longest first: little padding per batch."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        longest = len(ids[positions[0]])
        input_ids = torch.full((len(positions), longest), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(positions), longest), dtype=torch.long)
        for row, i in enumerate(positions):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            attention_mask[row, : len(ids[i])] = 1
        yield positions, input_ids.to(device), attention_mask.to(device)


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts; wrap a single text as [text].")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is a {type(texts[bad]).__name__}, not a str.")


@torch.no_grad()
def encode_poolings(
    model: nn.Module,
    tokenizer: Callable[..., Any],
    texts: Sequence[str],
    *,
    poolings: Sequence[str] = POOLINGS,
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int = 256,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """`encode` with several poolings from one pass of the model: {pooling: (N, H)}."""
    _check_texts(texts)
    for name in poolings:
        pool(torch.zeros(1, 1, 1), torch.ones(1, 1), name)  # an unknown pooling fails first
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    device = next(model.parameters()).device
    hidden = model.config.hidden_size
    outputs = {name: torch.empty(len(texts), hidden) for name in poolings}
    if not texts:
        return outputs
    ids = _tokenize(tokenizer, texts, max_length)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    show = len(texts) > PROGRESS_MIN_TEXTS if progress is None else progress
    was_training = model.training
    model.eval()
    try:
        batches = _batches_by_length(ids, batch_size, pad_id, device)
        total = math.ceil(len(ids) / batch_size)
        for positions, input_ids, mask in tqdm(
            batches, total=total, desc="encoding", unit="batch", disable=not show, leave=False
        ):
            states = model(input_ids, mask).last_hidden_state.float()
            for name in poolings:
                vectors = pool(states, mask, name)
                if normalize:
                    vectors = F.normalize(vectors, p=2, dim=-1)
                outputs[name][positions] = vectors.cpu()
    finally:
        model.train(was_training)
    return outputs


def encode(
    model: nn.Module,
    tokenizer: Callable[..., Any],
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    pooling: str = "mean",
    normalize: bool = True,
    max_length: int = 256,
    progress: bool | None = None,
) -> torch.Tensor:
    """Texts → an (N, H) float tensor of sentence vectors, row i for texts[i].

    `model` is a `BertModel` (or any module with `.config.hidden_size` whose output has
    `last_hidden_state`); `tokenizer` any callable with the Hugging Face signature (the
    course's `BertTokenizer` or a `transformers` tokenizer). Texts are cut at `max_length`
    tokens (256, like all-MiniLM-L6-v2) and batched longest first, so each batch pads to
    similar lengths; the rows come back in the order of `texts`. A progress bar shows for
    more than 2,000 texts (`progress=True/False` to choose).
    """
    return encode_poolings(
        model,
        tokenizer,
        texts,
        poolings=(pooling,),
        batch_size=batch_size,
        normalize=normalize,
        max_length=max_length,
        progress=progress,
    )[pooling]


# ----------------------------------------------------------------------------
# Contrastive training: in-batch negatives
# ----------------------------------------------------------------------------


def contrastive_loss(
    query_embeddings: torch.Tensor,
    passage_embeddings: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    *,
    scale: float = DEFAULT_SCALE,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: each query must pick its own passage.

    Query i's candidates are all B passages of the batch (its own, passage i, and the B - 1
    others as negatives), then every hard negative (an (M, H) tensor, usually one per query).
    The scores are cosine similarities times `scale` (1 / temperature); the loss is the
    cross-entropy of the right candidate, averaged over the queries. At random (all scores
    equal) it is log(B + M): larger batches give harder, more informative problems.
    """
    if query_embeddings.shape != passage_embeddings.shape:
        raise ValueError(
            f"{len(query_embeddings)} queries but {len(passage_embeddings)} passages: the loss "
            "needs one passage per query (query i with passage i)."
        )
    candidates = passage_embeddings
    if hard_negatives is not None:
        candidates = torch.cat([passage_embeddings, hard_negatives])
    scores = scale * F.normalize(query_embeddings, dim=-1) @ F.normalize(candidates, dim=-1).T
    targets = torch.arange(len(query_embeddings), device=scores.device)
    return F.cross_entropy(scores, targets)


@dataclass
class BiEncoderOutput:
    loss: torch.Tensor
    query_embeddings: torch.Tensor
    passage_embeddings: torch.Tensor


class BiEncoder(nn.Module):
    """One encoder for queries and passages (shared weights), trained with `contrastive_loss`.

    forward takes the query batch as `input_ids`/`attention_mask` (so the training engine
    counts its tokens) and the passages as `passage_input_ids`/`passage_attention_mask`
    (optionally `negative_input_ids`/`negative_attention_mask`, one hard negative per query).
    The encoder is `self.bert`, so the saved weights are named `bert.*` like any task model's
    and load into a `BertModel` (`load_model_weights(model.bert, ...)` or `BertModel.from_hf`).
    """

    base_model_prefix = "bert"
    hf_class_name = "BertModel"

    def __init__(self, encoder: nn.Module, pooling: str = "mean", scale: float = DEFAULT_SCALE):
        super().__init__()
        pool(torch.zeros(1, 1, 1), torch.ones(1, 1), pooling)  # fails early on a bad name
        self.bert = encoder
        self.pooling = pooling
        self.scale = scale

    @property
    def config(self) -> Any:
        return self.bert.config

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(input_ids, attention_mask).last_hidden_state
        return pool(states, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        passage_input_ids: torch.Tensor,
        passage_attention_mask: torch.Tensor,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
    ) -> BiEncoderOutput:
        queries = self.embed(input_ids, attention_mask)
        passages = self.embed(passage_input_ids, passage_attention_mask)
        negatives = None
        if negative_input_ids is not None:
            negatives = self.embed(negative_input_ids, negative_attention_mask)
        loss = contrastive_loss(queries, passages, negatives, scale=self.scale)
        return BiEncoderOutput(loss, queries, passages)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """config.json + model.safetensors of the encoder (keys `bert.*`), as the engine saves."""
        save_pretrained(self, directory)


def pair_examples(
    tokenizer: Callable[..., Any],
    queries: Sequence[str],
    passages: Sequence[str],
    *,
    query_max_length: int = 64,
    passage_max_length: int = 256,
) -> list[dict[str, list[int]]]:
    """Training examples for `BiEncoder`: {"input_ids": query ids, "passage_ids": passage ids}.

    The query's ids are under "input_ids" so that the training engine groups batches by
    query length and counts the query tokens; `PairCollator` pads both.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passages: give pairs.")
    query_ids = _tokenize(tokenizer, queries, query_max_length)
    passage_ids = _tokenize(tokenizer, passages, passage_max_length)
    return [
        {"input_ids": list(q), "passage_ids": list(p)}
        for q, p in zip(query_ids, passage_ids, strict=True)
    ]


class PairCollator:
    """Examples {"input_ids", "passage_ids"[, "negative_ids"]} → a padded `BiEncoder` batch."""

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(row) for row in rows)
        ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        missing = [key for key in ("input_ids", "passage_ids") if key not in examples[0]]
        if missing:
            raise KeyError(f"Pair examples need input_ids and passage_ids; missing {missing}.")
        batch = {}
        for key, prefix in (
            ("input_ids", ""),
            ("passage_ids", "passage_"),
            ("negative_ids", "negative_"),
        ):
            if key in examples[0]:
                ids, mask = self._pad([example[key] for example in examples])
                batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"] = ids, mask
        return batch


def retrieval_evaluator(
    tokenizer: Callable[..., Any],
    queries: Sequence[str],
    passages: Sequence[str],
    relevant: Sequence[set[int]],
    *,
    batch_size: int = 64,
) -> Callable[[nn.Module, Any, Any], dict[str, float]]:
    """An `evaluate_fn` for the training engine: the metrics of held-out search, "eval_" first.

    It ignores the engine's evaluation batches and searches the whole collection with the
    model being trained (a `BiEncoder`'s `bert` and pooling), on the main process.
    """

    def evaluate(model: nn.Module, dataloader: Any, accelerator: Any) -> dict[str, float]:
        bi_encoder = accelerator.unwrap_model(model) if accelerator is not None else model
        metrics = evaluate_retrieval(
            bi_encoder.bert,
            tokenizer,
            queries,
            passages,
            relevant,
            pooling=bi_encoder.pooling,
            batch_size=batch_size,
        )
        return {f"eval_{name}": value for name, value in metrics.items()}

    return evaluate


# ----------------------------------------------------------------------------
# Exact search
# ----------------------------------------------------------------------------


def search(
    query_embeddings: torch.Tensor,
    passage_embeddings: torch.Tensor,
    k: int = 10,
    *,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by dot product (= cosine for normalised vectors): (scores, indices), (Q, k).

    Queries go through in chunks, so the (Q, N) score matrix is never held whole. Ties go
    to the lower passage index.
    """
    k = min(k, len(passage_embeddings))
    scores, indices = [], []
    for start in range(0, len(query_embeddings), chunk_size):
        block = query_embeddings[start : start + chunk_size] @ passage_embeddings.T
        top = torch.topk(block, k, dim=1, sorted=True)
        scores.append(top.values)
        indices.append(top.indices)
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


class EmbeddingIndex:
    """Passage vectors and their ids, searchable, saved as one safetensors file."""

    def __init__(self, embeddings: torch.Tensor, ids: Sequence[str] | None = None):
        if embeddings.ndim != 2:
            raise ValueError(
                f"An index holds an (N, H) matrix, not a {tuple(embeddings.shape)} one."
            )
        ids = [str(i) for i in range(len(embeddings))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} vectors: give one id each.")
        self.embeddings = embeddings.float().contiguous()
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query_embeddings: torch.Tensor, k: int = 10) -> list[list[tuple[str, float]]]:
        """For each query, its k best (id, score), best first."""
        scores, indices = search(query_embeddings.float(), self.embeddings, k)
        return [
            [(self.ids[j], s) for j, s in zip(row.tolist(), values.tolist(), strict=True)]
            for row, values in zip(indices, scores, strict=True)
        ]

    def save(self, path: str | os.PathLike) -> Path:
        """One .safetensors file, written atomically; the ids go in its metadata."""
        path = Path(path)
        metadata = {"ids": json.dumps(self.ids, ensure_ascii=False), "format": "bertcourse-index-1"}
        atomic_save_file(
            lambda tmp: save_file({"embeddings": self.embeddings}, str(tmp), metadata=metadata),
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No index at {path}: build one and call .save({str(path)!r}).")
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("format") != "bertcourse-index-1":
                raise ValueError(f"{path} is not an index saved by EmbeddingIndex.save().")
            return cls(file.get_tensor("embeddings"), json.loads(metadata["ids"]))


# ----------------------------------------------------------------------------
# Retrieval metrics
# ----------------------------------------------------------------------------


def _check_rankings(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> None:
    if len(rankings) != len(relevant):
        raise ValueError(
            f"{len(rankings)} rankings but {len(relevant)} sets of relevant passages: "
            "give one of each per query."
        )
    empty = next((i for i, r in enumerate(relevant) if not r), None)
    if empty is not None:
        raise ValueError(f"Query {empty} has no relevant passage: leave it out of the evaluation.")


def recall_at_k(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int) -> float:
    """The fraction of each query's relevant passages in its top k, averaged over queries."""
    _check_rankings(rankings, relevant)
    found = [
        len(set(ranking[:k]) & rel) / len(rel)
        for ranking, rel in zip(rankings, relevant, strict=True)
    ]
    return sum(found) / max(len(found), 1)


def mrr_at_k(rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int = 10) -> float:
    """Mean reciprocal rank: 1 / (rank of the first relevant passage), 0 if not in the top k."""
    _check_rankings(rankings, relevant)
    total = 0.0
    for ranking, rel in zip(rankings, relevant, strict=True):
        rank = next((r for r, passage in enumerate(ranking[:k], 1) if passage in rel), None)
        total += 1.0 / rank if rank else 0.0
    return total / max(len(rankings), 1)


def ndcg_at_k(
    rankings: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int = 10
) -> float:
    """Normalised discounted cumulative gain with binary relevance.

    DCG = sum over the top k of rel_r / log2(r + 1) for rank r = 1, 2, ...; divided by the
    DCG of the best possible ranking (all relevant passages first).
    """
    _check_rankings(rankings, relevant)
    total = 0.0
    for ranking, rel in zip(rankings, relevant, strict=True):
        dcg = sum(1 / math.log2(r + 1) for r, p in enumerate(ranking[:k], 1) if p in rel)
        ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        total += dcg / ideal
    return total / max(len(rankings), 1)


def retrieval_metrics(
    rankings: Sequence[Sequence[int]] | torch.Tensor,
    relevant: Sequence[set[int]],
    ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """{"recall@1", "recall@10", "mrr@10", "ndcg@10"}: the numbers a search task reports."""
    if isinstance(rankings, torch.Tensor):
        rankings = rankings.tolist()
    metrics = {f"recall@{k}": recall_at_k(rankings, relevant, k) for k in ks}
    metrics["mrr@10"] = mrr_at_k(rankings, relevant, 10)
    metrics["ndcg@10"] = ndcg_at_k(rankings, relevant, 10)
    return metrics


def evaluate_retrieval(
    model: nn.Module,
    tokenizer: Callable[..., Any],
    queries: Sequence[str],
    passages: Sequence[str],
    relevant: Sequence[set[int]],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
    k: int = 10,
) -> dict[str, float]:
    """Encode, search the passages exactly, and score the rankings with `retrieval_metrics`."""
    query_vectors = encode(model, tokenizer, queries, pooling=pooling, batch_size=batch_size)
    passage_vectors = encode(model, tokenizer, passages, pooling=pooling, batch_size=batch_size)
    _, indices = search(query_vectors, passage_vectors, k=max(k, 10))
    return retrieval_metrics(indices, relevant)


# ----------------------------------------------------------------------------
# BM25, fusion, reranking
# ----------------------------------------------------------------------------


def bm25_search(
    queries: Sequence[str], passages: Sequence[str], k: int = 10, *, stopwords: str = "en"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lexical search with BM25 (the `bm25s` package, Lucene's scoring): (scores, indices).

    Words are lowercased and split, English stop words dropped; no stemming.
    """
    import bm25s  # deferred: only the search chapters need it

    k = min(k, len(passages))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(list(passages), stopwords=stopwords, show_progress=False),
        show_progress=False,
    )
    tokens = bm25s.tokenize(list(queries), stopwords=stopwords, show_progress=False)
    indices, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    return torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(indices, dtype=torch.long)


def reciprocal_rank_fusion(
    *rankings: Sequence[Sequence[int]] | torch.Tensor, k: int = 60, top: int = 10
) -> list[list[int]]:
    """Fuse rankings of the same queries: score(p) = sum over rankings of 1 / (k + rank of p).

    Ranks start at 1; a passage missing from a ranking adds nothing from it. k = 60 as in
    Cormack, Clarke and Büttcher (2009). Ties go to the lower passage index.
    """
    lists = [r.tolist() if isinstance(r, torch.Tensor) else r for r in rankings]
    if len({len(r) for r in lists}) > 1:
        raise ValueError("Every ranking must have one row per query, the same queries.")
    fused = []
    for rows in zip(*lists, strict=True):
        scores: dict[int, float] = {}
        for row in rows:
            for rank, passage in enumerate(row, 1):
                scores[passage] = scores.get(passage, 0.0) + 1.0 / (k + rank)
        fused.append(sorted(scores, key=lambda p: (-scores[p], p))[:top])
    return fused


@torch.no_grad()
def rerank(
    cross_encoder: nn.Module,
    tokenizer: Callable[..., Any],
    queries: Sequence[str],
    passages: Sequence[str],
    candidates: Sequence[Sequence[int]] | torch.Tensor,
    *,
    batch_size: int = 64,
    max_length: int = 256,
    relevant_label: int = 1,
    progress: bool | None = None,
) -> list[list[int]]:
    """Reorder each query's candidates by a cross-encoder's score for (query, passage).

    The cross-encoder is a pair classifier (`BertForSequenceClassification` on "[CLS] query
    [SEP] passage [SEP]"); the score is its logit for `relevant_label` minus the others'
    (for two labels, the log-odds of relevant). It reads query and passage together, which is
    more accurate and far slower than comparing two vectors: so it only reranks a short list.
    """
    if isinstance(candidates, torch.Tensor):
        candidates = candidates.tolist()
    flat = [(q, p) for q, row in enumerate(candidates) for p in row]
    device = next(cross_encoder.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    scores = torch.empty(len(flat))
    was_training = cross_encoder.training
    cross_encoder.eval()
    show = len(flat) > PROGRESS_MIN_TEXTS if progress is None else progress
    try:
        for start in tqdm(
            range(0, len(flat), batch_size),
            desc="reranking",
            unit="batch",
            disable=not show,
            leave=False,
        ):
            chunk = flat[start : start + batch_size]
            encoded = tokenizer(
                [queries[q] for q, _ in chunk],
                [passages[p] for _, p in chunk],
                truncation=True,
                max_length=max_length,
            )
            longest = max(len(row) for row in encoded["input_ids"])
            tensors = {}
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                fill = pad_id if key == "input_ids" else 0
                tensors[key] = torch.tensor(
                    [list(row) + [fill] * (longest - len(row)) for row in encoded[key]]
                ).to(device)
            logits = cross_encoder(
                tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"]
            ).logits.float()
            others = torch.cat([logits[:, :relevant_label], logits[:, relevant_label + 1 :]], 1)
            scores[start : start + len(chunk)] = (
                logits[:, relevant_label] - torch.logsumexp(others, dim=1)
            ).cpu()
    finally:
        cross_encoder.train(was_training)
    reranked, position = [], 0
    for row in candidates:
        row_scores = scores[position : position + len(row)].tolist()
        position += len(row)
        order = sorted(range(len(row)), key=lambda i: (-row_scores[i], i))
        reranked.append([row[i] for i in order])
    return reranked


# ----------------------------------------------------------------------------
# Saving for sentence-transformers
# ----------------------------------------------------------------------------


def save_sentence_transformer(
    model: nn.Module,
    tokenizer: Any,
    directory: str | os.PathLike,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 256,
) -> Path:
    """A folder that `SentenceTransformer(directory)` loads and encodes with as `encode` does.

    The encoder is exported as a `transformers` BertModel (config.json, model.safetensors,
    the course tokenizer's vocab.txt), then sentence-transformers' own modules describe the
    pooling and the normalisation. Written into a temporary folder and renamed when complete.
    """
    # deferred: sentence-transformers takes seconds to import, and only saving needs it
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (  # deferred, as above
        Normalize,
        Pooling,
        Transformer,
    )

    pool(torch.zeros(1, 1, 1), torch.ones(1, 1), pooling)  # fails early on a bad name

    def write(folder: Path) -> None:
        encoder_dir = folder / "encoder"
        export_for_transformers(model, tokenizer, encoder_dir)
        transformer = Transformer(str(encoder_dir), max_seq_length=max_seq_length)
        modules: list[nn.Module] = [transformer, Pooling(model.config.hidden_size, pooling)]
        if normalize:
            modules.append(Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
        shutil.move(encoder_dir / "vocab.txt", folder / "vocab.txt")  # for BertTokenizer, --init
        shutil.rmtree(encoder_dir)

    return atomic_directory(write, directory)
