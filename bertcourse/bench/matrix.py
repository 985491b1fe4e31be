"""The benchmark matrix (`python -m bertcourse.bench`, the default task): every workload of our
BERT against transformers' at several sizes, sequence lengths and precisions, in one run.

A row is one (workload, size, sequence length, precision). The workloads:

- `encoder inference`: BertModel forward under no_grad; ours skips the padding in its dense
  layers (`skip_padding=True`), transformers computes it.
- `pretrain dense`: a BertForPreTraining training step (forward, backward, fused AdamW), MLM
  logits at every position on both sides.
- `pretrain sparse`: the same step, ours predicting only the masked positions
  (`masked_only=True`, which also skips padding); transformers' step is the same as above.
- `classify inference`: BertForSequenceClassification forward under no_grad.
- `classify train`: its training step.

Both sides of a row get the same config, weights and batch (random ids, rows padded to
different lengths, 15% of the real tokens labelled); before timing, the row checks that they
compute the same thing in eval mode (outputs on real tokens, or the losses), within
`MATRIX_TOLERANCE`; a row where they differ is not timed and has no ratio. Steps of the two
sides are interleaved, and the median step counts. Tokens/s counts every position of the
batch, padding included, on both sides.

Memory: on CUDA the peak allocated during a step; on a CPU, where torch keeps no allocator
statistics, the tensors a training step saves for its backward pass (activation memory, counted
once per storage), the part of a step's memory that the implementations change.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm

from ..config import SIZES, BertConfig, get_device
from ..model import BertForPreTraining, BertForSequenceClassification, BertModel
from ..speed import saved_tensor_bytes
from .timing import (
    PEAK_BF16_TFLOPS,
    machine_setup,
    mixed_precision,
    pretraining_batch,
    time_row,
)

__all__ = [
    "MATRIX_WORKLOADS",
    "MATRIX_TOLERANCE",
    "MATRIX_TOKENS_PER_BATCH",
    "cpu_has_native_bf16",
    "matrix_dtypes",
    "saved_activation_mb",
    "flops_per_token",
    "run_matrix",
    "format_matrix",
]

MATRIX_WORKLOADS = (
    "encoder inference",
    "pretrain dense",
    "pretrain sparse",
    "classify inference",
    "classify train",
)
# Two sides agree if their outputs on real tokens (inference) or their losses (training) differ
# by no more than this; autocast rounds differently on each side.
MATRIX_TOLERANCE = {"float32": 1e-4, "bfloat16": 1e-1, "float16": 2e-2}
# Every row sees the same number of positions per batch: batch = this / seq_len.
MATRIX_TOKENS_PER_BATCH = {"full": 4096, "quick": 2048}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX), where
    bf16 autocast can be faster than float32; elsewhere it is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def matrix_dtypes(device: torch.device) -> tuple[str, ...]:
    """The precisions the matrix runs by default: bf16 on CUDA; float32 on a CPU, and bf16
    autocast too where the CPU has native bf16."""
    if device.type == "cuda":
        return ("bfloat16",)
    return ("float32", "bfloat16") if cpu_has_native_bf16() else ("float32",)


def saved_activation_mb(model: torch.nn.Module, inputs: Mapping, options: Mapping, autocast):
    """MiB of the tensors one training forward saves for its backward pass, the model's
    parameters (which autograd saves too) not counted (`bertcourse.speed.saved_tensor_bytes`)."""
    model.train()

    def forward() -> None:
        with autocast():
            model(**inputs, **options).loss  # noqa: B018 (the graph is what counts)

    return saved_tensor_bytes(forward, exclude=list(model.parameters())) / 2**20


def flops_per_token(config: BertConfig, seq_len: int, workload: str) -> float:
    """Useful FLOPs per token of a workload, counted densely (every position computed).

    2 FLOPs per weight of a matrix product in a forward pass, 6 in a training step (forward
    and backward), for the encoder's projections, plus the attention scores and the mixing of
    values (4 L H T forward); pretraining adds the MLM transform and the V-wide decoder at
    every position. The same useful work is credited to both sides, so a side that skips work
    (padding, unmasked positions) shows a higher utilisation, as it should. The pooler and the
    classifier (one vector per sentence) are left out.
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * h * h + 2 * h * config.intermediate_size)
    if workload.startswith("pretrain"):
        weights += h * h + h * config.vocab_size
    per_pass = 2 * weights + 4 * layers * h * seq_len
    return per_pass * (1 if workload.endswith("inference") else 3)


def _pair(workload: str, config: BertConfig, device: torch.device):
    """(ours, transformers', ours' forward options) with the same weights for one workload."""
    hf_config = config.to_hf()
    if workload == "encoder inference":
        reference = transformers.BertModel._from_config(hf_config, attn_implementation="sdpa")
        ours, options = BertModel.from_hf(reference), {"skip_padding": True}
    elif workload.startswith("pretrain"):
        reference = transformers.BertForPreTraining._from_config(
            hf_config, attn_implementation="sdpa"
        )
        ours = BertForPreTraining.from_hf(reference)
        options = {"masked_only": workload == "pretrain sparse"}
    else:
        hf_config.num_labels = 2
        reference = transformers.BertForSequenceClassification._from_config(
            hf_config, attn_implementation="sdpa"
        )
        ours, options = BertForSequenceClassification.from_hf(reference), {}
    return ours.to(device), reference.to(device), options


def _inputs(workload: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if workload.startswith("pretrain"):
        names += ["labels", "next_sentence_label"]
    inputs = {name: batch[name] for name in names}
    if workload == "classify train":
        inputs["labels"] = batch["next_sentence_label"]  # a random label in {0, 1} per row
    return inputs


def _difference(workload, models, inputs, options, autocast) -> float:
    """How far apart the two sides' outputs are, in eval mode (no dropout)."""
    for model in models.values():
        model.eval()
    with torch.no_grad(), autocast():
        outs = {name: model(**inputs, **options[name]) for name, model in models.items()}
    if workload == "encoder inference":
        real = inputs["attention_mask"].bool()
        a, b = (outs[name].last_hidden_state.float()[real] for name in ("ours", "reference"))
    elif workload == "classify inference":
        a, b = (outs[name].logits.float() for name in ("ours", "reference"))
    else:
        a, b = (outs[name].loss.float() for name in ("ours", "reference"))
    return (a - b).abs().max().item()


def run_matrix(
    sizes: Sequence[str] = ("tiny", "mini", "small"),
    seq_lens: Sequence[int] = (128, 512),
    dtypes: Sequence[str] | None = None,
    workloads: Sequence[str] = MATRIX_WORKLOADS,
    tokens_per_batch: int = MATRIX_TOKENS_PER_BATCH["full"],
    steps: int = 5,
    warmup: int = 1,
    device: str | None = None,
    padding: float = 0.25,
    vocab_size: int = 30522,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Tokens/s of ours and transformers' for every (size, seq_len, dtype, workload); see the
    module docstring. Returns (setup, rows); each row has `ratio` = ours / transformers (None
    where the sides disagree)."""
    device = get_device(device)
    dtypes = tuple(dtypes or matrix_dtypes(device))
    unknown = (
        (set(sizes) - set(SIZES))
        | (set(workloads) - set(MATRIX_WORKLOADS))
        | (set(dtypes) - set(MATRIX_TOLERANCE))
    )
    if unknown:
        raise ValueError(
            f"Unknown {sorted(unknown)}: sizes are {list(SIZES)}, workloads "
            f"{list(MATRIX_WORKLOADS)}, dtypes {list(MATRIX_TOLERANCE)}."
        )
    plan = [
        (size, seq_len, dtype, workload)
        for size in sizes
        for seq_len in seq_lens
        for dtype in dtypes
        for workload in workloads
    ]
    bar = tqdm(
        total=len(plan) * 2 * (warmup + steps),
        desc="bench",
        unit="step",
        disable=not progress,
        leave=False,
    )
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)
    rows = []
    for size, seq_len, dtype, workload in plan:
        bar.set_postfix_str(f"{size} {seq_len} {dtype} {workload}")
        config = BertConfig.from_name(size, vocab_size=vocab_size, attn_implementation="sdpa")
        batch = max(1, tokens_per_batch // seq_len)
        torch.manual_seed(0)
        ours, reference, our_options = _pair(workload, config, device)
        models = {"ours": ours, "reference": reference}
        options = {"ours": our_options, "reference": {}}
        inputs = _inputs(workload, pretraining_batch(config, batch, seq_len, padding, device))
        autocast = partial(mixed_precision, device, dtype)
        difference = _difference(workload, models, inputs, options, autocast)
        row: dict[str, Any] = {
            "workload": workload,
            "size": size,
            "layers_hidden_heads": SIZES[size],
            "seq_len": seq_len,
            "batch": batch,
            "dtype": dtype,
            "difference": difference,
            "agree": difference <= MATRIX_TOLERANCE[dtype],
            "ours_tokens_per_s": None,
            "reference_tokens_per_s": None,
            "ratio": None,
            "ours_peak_memory_mb": None,
            "reference_peak_memory_mb": None,
            "ours_saved_activations_mb": None,
            "reference_saved_activations_mb": None,
            "flops_per_token": flops_per_token(config, seq_len, workload),
            "ours_mfu": None,
            "reference_mfu": None,
        }
        if not row["agree"]:
            bar.update(2 * (warmup + steps))
            rows.append(row)
            continue
        train = not workload.endswith("inference")
        if train:
            for name, model in models.items():
                row[f"{name}_saved_activations_mb"] = saved_activation_mb(
                    model, inputs, options[name], autocast
                )
        row |= time_row(
            models,
            inputs,
            options,
            train=train,
            autocast=autocast,
            warmup=warmup,
            steps=steps,
            device=device,
            tokens=batch * seq_len,
            on_step=bar.update,
        )
        if peak_tflops is not None and dtype != "float32":
            for name in models:
                speed = row[f"{name}_tokens_per_s"]
                row[f"{name}_mfu"] = speed * row["flops_per_token"] / (peak_tflops * 1e12)
        rows.append(row)
    bar.close()
    setup = {
        "task": "the benchmark matrix: BertModel inference, BertForPreTraining training steps "
        "(dense and sparse MLM prediction), BertForSequenceClassification inference and training "
        "step, ours against transformers' (sdpa attention), same config, weights and batch; a "
        "training step is forward + backward + fused AdamW",
        "vocab_size": vocab_size,
        "tokens_per_batch": tokens_per_batch,
        "padding": padding,
        "mlm_probability": 0.15,
        "dtypes": list(dtypes),
        "cpu_native_bf16": cpu_has_native_bf16() if device.type == "cpu" else None,
        **machine_setup(device),
        "steps": steps,
        "warmup": warmup,
        "tolerance": {dtype: MATRIX_TOLERANCE[dtype] for dtype in dtypes},
        "peak_bf16_tflops": peak_tflops,
    }
    return setup, rows


def format_matrix(setup: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The matrix as a text table, one row per (size, seq_len, dtype, workload)."""
    memory = "peak MiB" if setup["device"].startswith("cuda") else "saved MiB"
    lines = [
        f"BERT, ours (bertcourse) against transformers {setup['transformers']}, vocab "
        f"{setup['vocab_size']}, {setup['tokens_per_batch']} positions per batch "
        f"(~{setup['padding']:.0%} padding), sdpa",
        f"device {setup['device']} ({setup['device_name']}, {setup['threads']} threads), torch "
        f"{setup['torch']}, median of {setup['steps']} interleaved steps after "
        f"{setup['warmup']}; ratio = ours / transformers (above 1.0 we are faster)",
        f"{memory}: "
        + (
            "peak allocated during a step"
            if memory == "peak MiB"
            else "tensors a training step saves for backward (a CPU keeps no peak statistics)"
        ),
        "",
        f"{'size':<5} {'seq':>4} {'batch':>5} {'dtype':<8} {'workload':<18} {'ours tok/s':>11} "
        f"{'theirs tok/s':>12} {'ratio':>6} {memory + ' ours/theirs':>22}",
    ]
    key = "peak_memory_mb" if memory == "peak MiB" else "saved_activations_mb"
    for row in rows:
        start = (
            f"{row['size']:<5} {row['seq_len']:>4} {row['batch']:>5} {row['dtype']:<8} "
            f"{row['workload']:<18}"
        )
        if row["ratio"] is None:
            lines.append(
                f"{start} outputs differ by {row['difference']:.1e} > "
                f"{setup['tolerance'][row['dtype']]:.0e}: not timed, no ratio"
            )
            continue
        ours, theirs = row[f"ours_{key}"], row[f"reference_{key}"]
        memory_text = "" if ours is None else f"{ours:,.0f} / {theirs:,.0f}"
        mfu = (
            ""
            if row["ours_mfu"] is None
            else f" MFU {row['ours_mfu']:.1%} / {row['reference_mfu']:.1%}"
        )
        lines.append(
            f"{start} {row['ours_tokens_per_s']:>11,.0f} {row['reference_tokens_per_s']:>12,.0f} "
            f"{row['ratio']:>6.2f} {memory_text:>22}{mfu}"
        )
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    if ratios:
        lines += [
            "",
            f"{len(ratios)} rows timed: ratio from {min(ratios):.2f} to {max(ratios):.2f}, "
            f"median {statistics.median(ratios):.2f}",
        ]
    return "\n".join(lines)
