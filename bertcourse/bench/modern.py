"""ModernBERT inference and masked-LM steps against transformers' (`--task modern`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import SIZES, get_device
from ..modern import ModernBertForMaskedLM, ModernBertModel, ModernConfig
from .timing import (
    machine_setup,
    mixed_precision,
    pretraining_batch,
    time_row,
)

__all__ = [
    "MODERN_TOLERANCE",
    "MODERN_TOKENS_PER_BATCH",
    "MODERN_STEPS",
    "run_modern",
    "format_modern",
]

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
            speeds = time_row(
                models,
                inputs,
                {"ours": options["ours"] if mode == "train" else {}, "reference": {}},
                train=mode == "train",
                autocast=autocast,
                warmup=warmup,
                steps=steps,
                device=device,
                tokens=rows_batch * seq_len,
                on_step=bar.update,
            )
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
