"""Our BertModel, BertForPreTraining and BertForSequenceClassification against transformers', one
workload at a time (`--task encoder | pretraining | finetune`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial

import torch
import transformers

from ..config import SIZES, BertConfig, get_device
from ..hf import minilm_path
from ..model import BertForPreTraining, BertForSequenceClassification, BertModel
from .timing import (
    PEAK_BF16_TFLOPS,
    make_batch,
    mixed_precision,
    pretraining_batch,
    pretraining_flops_per_token,
    step_setup,
    time_steps,
    time_training_steps,
)

__all__ = [
    "BenchResult",
    "run",
    "PretrainingResult",
    "run_pretraining",
    "run_finetuning",
    "format_finetuning",
    "format_pretraining",
    "format_table",
]


@dataclass
class BenchResult:
    mode: str
    ours_tokens_per_s: float
    reference_tokens_per_s: float

    @property
    def ratio(self) -> float:
        return self.ours_tokens_per_s / self.reference_tokens_per_s


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
