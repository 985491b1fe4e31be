"""What every row of the benchmark shares: batches, precision, the timing loop, FLOPs."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
import transformers
from torch import nn

from ..config import BertConfig
from ..modern import ModernConfig

__all__ = [
    "make_batch",
    "AMP_DTYPES",
    "mixed_precision",
    "PEAK_BF16_TFLOPS",
    "pretraining_flops_per_token",
    "step_setup",
    "machine_setup",
    "time_steps",
    "time_training_steps",
    "time_row",
    "pretraining_batch",
]


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


def time_row(
    models: Mapping[str, nn.Module],
    inputs: Mapping[str, torch.Tensor],
    options: Mapping[str, dict],
    *,
    train: bool,
    autocast: Callable,
    warmup: int,
    steps: int,
    device: torch.device,
    tokens: int,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float | None]:
    """One benchmark row's speeds: `{name}_tokens_per_s` (`tokens` per batch over the median
    step), `{name}_peak_memory_mb` for "ours" and "reference", and `ratio` = ours / reference.

    A training step is forward, backward and fused AdamW; an inference step a forward under
    no_grad. Both run under `autocast()` with each model's forward `options`.
    """
    if train:
        pairs = {name: (model, options[name]) for name, model in models.items()}
        times, peak = time_training_steps(
            pairs, inputs, 1e-4, autocast, warmup, steps, device, on_step
        )
    else:

        def step(name: str) -> None:
            with torch.no_grad(), autocast():
                models[name](**inputs, **options[name])

        times, peak = time_steps(models, step, warmup, steps, device, on_step)
    speeds: dict[str, float | None] = {}
    for name in models:
        speeds[f"{name}_tokens_per_s"] = tokens / statistics.median(times[name])
        speeds[f"{name}_peak_memory_mb"] = peak[name]
    speeds["ratio"] = speeds["ours_tokens_per_s"] / speeds["reference_tokens_per_s"]
    return speeds


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
