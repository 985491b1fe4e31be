"""Our pure-Python tokenizer against transformers' fast one (`--task tokenizer`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import transformers

from ..hf import minilm_path

__all__ = [
    "run_tokenizer",
    "format_tokenizer",
]


def run_tokenizer(documents: int = 200, repeats: int = 3) -> dict[str, Any]:
    """Our pure-Python BertTokenizer against transformers' fast (Rust) tokenizer on long texts.

    Each round tokenizes `documents` whole documents of the offline corpus (thousands of
    characters each) with a fresh tokenizer of each kind (so our word cache starts empty, as
    for a new corpus); the fastest of `repeats` rounds counts. Our time is also split into its
    stages, to say where it goes: basic tokenization (cleaning, lower-casing, accents,
    punctuation), WordPiece, and ids.
    """
    from ..data import offline_corpus  # deferred: only this benchmark reads a corpus
    from ..tokenization import BertTokenizer

    texts = [document.text for document in offline_corpus("train").documents[:documents]]
    directory = minilm_path()
    ours_ids, reference_ids, ours_times, reference_times = None, None, [], []
    stages = {"basic tokenization": 0.0, "WordPiece": 0.0, "ids": 0.0}
    for _ in range(repeats):
        ours = BertTokenizer.from_pretrained(directory)
        started = time.perf_counter()
        ours_ids = [ours.encode(text) for text in texts]
        ours_times.append(time.perf_counter() - started)
        reference = transformers.BertTokenizerFast.from_pretrained(directory)
        started = time.perf_counter()
        reference_ids = [reference(text)["input_ids"] for text in texts]
        reference_times.append(time.perf_counter() - started)
    ours = BertTokenizer.from_pretrained(directory)  # the stages, on a fresh cache once more
    for text in texts:
        started = time.perf_counter()
        words = ours.basic.tokenize(text)
        middle = time.perf_counter()
        pieces = ours.wordpiece.tokenize(words)
        end = time.perf_counter()
        ours.convert_tokens_to_ids(pieces)
        stages["basic tokenization"] += middle - started
        stages["WordPiece"] += end - middle
        stages["ids"] += time.perf_counter() - end
    characters = sum(len(text) for text in texts)
    total = sum(stages.values())
    return {
        "documents": len(texts),
        "characters": characters,
        "same_ids": ours_ids == reference_ids,
        "ours_chars_per_s": round(characters / min(ours_times)),
        "reference_chars_per_s": round(characters / min(reference_times)),
        "ratio": round(min(reference_times) / min(ours_times), 3),
        "ours_stage_shares": {name: round(t / total, 3) for name, t in stages.items()},
    }


def format_tokenizer(result: Mapping[str, Any]) -> str:
    shares = ", ".join(f"{name} {share:.0%}" for name, share in result["ours_stage_shares"].items())
    return (
        f"Tokenizer, {result['documents']} documents ({result['characters']:,} characters), "
        f"MiniLM's vocabulary; the same ids: {result['same_ids']}\n"
        f"  ours (pure Python)   {result['ours_chars_per_s']:>12,} characters/s\n"
        f"  transformers (fast)  {result['reference_chars_per_s']:>12,} characters/s\n"
        f"  ours / fast: {result['ratio']:.2f}x; our time goes to {shares}"
    )
