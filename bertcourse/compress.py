"""Smaller and faster BERTs: distillation, int8 quantization, head pruning, ONNX.

Four ways to shrink a fine-tuned classifier, each written from scratch and each
tested against a reference:

- knowledge distillation (Hinton et al., 2015): `distillation_loss`, a student
  initialised from some of the teacher's layers (`make_student`, as DistilBERT,
  Sanh et al., 2019) and a short training loop (`distill`);
- dynamic int8 quantization of the linear layers: `quantize_symmetric`,
  `Int8Linear`, `quantize_linear_layers`, and what it saves
  (`linear_weight_bytes`, `size_on_disk`);
- attention-head importance and pruning (Michel et al., 2019, "Are Sixteen
  Heads Really Better than One?"): `head_importance`, `prune_heads`,
  `least_important_heads`, `accuracy_as_heads_are_removed`;
- export to ONNX and inference with onnxruntime: `export_onnx`, `onnx_session`,
  `run_onnx`;

and `latency_ms`, the median time of a call, to compare them (the chapter
measures; no test asserts a time).

Batches, wherever a function takes them, are dicts of tensors as
`bertcourse.finetune.PaddingCollator` makes them: input_ids (B, T),
attention_mask (B, T), optionally token_type_ids (B, T), and labels (B,).
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attention import MultiHeadSelfAttention
from .model import BertForSequenceClassification, encoder_of, padding_mask_to_additive

__all__ = [
    "distillation_loss",
    "make_student",
    "student_layers",
    "linear_schedule",
    "distill",
    "INT8_MAX",
    "quantize_symmetric",
    "Int8Linear",
    "quantize_linear_layers",
    "linear_weight_bytes",
    "size_on_disk",
    "head_importance",
    "prune_heads",
    "least_important_heads",
    "classifier_accuracy",
    "accuracy_as_heads_are_removed",
    "export_onnx",
    "onnx_session",
    "run_onnx",
    "latency_ms",
]


# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------


def _require_classifier(model: nn.Module, what: str) -> None:
    if not isinstance(model, BertForSequenceClassification):
        raise TypeError(
            f"{what} works on a bertcourse BertForSequenceClassification, got "
            f"{type(model).__name__}; fine-tune one first (chapter 9) or load it with "
            "BertForSequenceClassification.from_hf(...)."
        )


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    """The model's inputs of a collated batch, on `device` (labels and other keys left out)."""
    if "input_ids" not in batch:
        raise KeyError(f"A batch needs input_ids; this one has {sorted(batch)}.")
    return {
        key: batch[key].to(device)
        for key in ("input_ids", "attention_mask", "token_type_ids")
        if batch.get(key) is not None
    }


def _labels(batch: Mapping[str, torch.Tensor], device: torch.device, what: str) -> torch.Tensor:
    if batch.get("labels") is None:
        raise KeyError(
            f"{what} needs labels in every batch (the key 'labels', shape (B,)); this batch has "
            f"{sorted(batch)}."
        )
    return batch["labels"].to(device)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------
# Knowledge distillation
# ----------------------------------------------------------------------------


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Hinton et al.'s loss: soft targets at temperature T plus the usual hard-label loss.

    student_logits, teacher_logits: (B, C); labels: (B,) class ids (None when alpha is 1).

        alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - alpha) * cross_entropy(student_logits, labels)

    The KL divergence is summed over the classes and averaged over the B examples
    ("batchmean"); the cross-entropy is at temperature 1. Softening both distributions
    by T shrinks the soft term's gradient by 1 / T^2 (d KL / d logit = (q - p) / T, and
    q - p itself shrinks like 1 / T); the T^2 factor restores its scale, so that changing
    T does not silently change the weight of the two terms. Returns a scalar tensor.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"student_logits and teacher_logits must both be (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}: run teacher "
            "and student on the same batch, with the same number of labels."
        )
    if student_logits.shape[1] < 2:
        raise ValueError(
            "distillation needs at least 2 classes: with one logit (regression) there is no "
            "distribution to soften; use an MSE between the two outputs instead."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; T = 1 is no softening.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is the weight of the soft term, in [0, 1]; got {alpha}.")
    log_student = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, C)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1).mean()  # batchmean
    soft = temperature**2 * kl
    if alpha == 1.0:
        return soft
    if labels is None:
        raise ValueError(
            f"labels are None but alpha is {alpha}: the hard-label term needs the labels. "
            "Pass labels, or alpha=1.0 to learn from the teacher alone."
        )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def student_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers a student starts from: evenly spaced, i * L // n for i < n.

    6 -> 3: [0, 2, 4]; 12 -> 6: [0, 2, 4, 6, 8, 10] (DistilBERT also took one layer
    of two, its script [0, 2, 4, 7, 9, 11]); L -> L: every layer.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"A student of {student_layers} layers from a teacher of {teacher_layers}: choose "
            f"between 1 and {teacher_layers} layers."
        )
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def make_student(
    teacher: BertForSequenceClassification,
    num_layers: int,
    *,
    layers: Sequence[int] | None = None,
) -> BertForSequenceClassification:
    """A classifier like `teacher` with `num_layers` layers, initialised from the teacher.

    The student gets the teacher's config (width, heads, vocabulary) with fewer layers, and
    copies of the teacher's embeddings, of the teacher layers `layers` (default
    `student_layers(L, num_layers)`: evenly spaced, starting at layer 0), of the pooler and
    of the classifier. Returned in eval mode, like `from_hf`; the teacher is unchanged.
    """
    _require_classifier(teacher, "make_student")
    count = teacher.config.num_hidden_layers
    chosen = student_layers(count, num_layers) if layers is None else [int(i) for i in layers]
    if len(chosen) != num_layers:
        raise ValueError(
            f"layers names {len(chosen)} teacher layers for {num_layers} student layers."
        )
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise ValueError(
            f"teacher layers {bad} do not exist: the teacher has layers 0 to {count - 1}."
        )
    config = teacher.config.replace(num_hidden_layers=num_layers)
    student = BertForSequenceClassification(
        config, num_labels=teacher.num_labels, id2label=teacher.id2label
    )
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for target, source in zip(student.bert.encoder.layer, chosen, strict=True):
        target.load_state_dict(teacher.bert.encoder.layer[source].state_dict())
    if teacher.bert.pooler is not None:
        student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student.to(_device_of(teacher)).eval()


def linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor at `step`: 0 -> 1 over the warm-up, then linearly to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _endless(batches: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[Mapping[str, torch.Tensor]]:
    """The batches again and again (a DataLoader reshuffles on each pass)."""
    passes = 0
    while True:
        count = 0
        for batch in batches:
            count += 1
            yield batch
        if count == 0:
            raise ValueError(
                "The batches are empty: give at least one batch to train on."
                if passes == 0
                else "The batches ran out after one pass: give a list or a DataLoader, which "
                "can be read again, not an iterator."
            )
        passes += 1


def distill(
    teacher: nn.Module,
    student: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    steps: int,
    temperature: float = 2.0,
    alpha: float = 0.5,
    lr: float = 5e-5,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    show_progress: bool = True,
) -> list[float]:
    """Train `student` to match `teacher` for `steps` steps; returns the loss of each step.

    batches: a re-iterable of collated batches with labels (a DataLoader), cycled through
    until `steps` batches are seen. Each step runs the teacher in eval mode without
    gradients, then the student in training mode, and takes an AdamW step on
    `distillation_loss(student, teacher, labels, temperature, alpha)`, with the gradient
    norm clipped to `max_grad_norm` and the learning rate warmed up over the first
    `warmup_ratio` of the steps, then decayed linearly to 0 (weight decay on every
    parameter, for brevity). The student is trained in place and left in eval mode; the
    teacher is never changed.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio is a fraction of the steps, in [0, 1); got {warmup_ratio}.")
    device = _device_of(student)
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    warmup_steps = round(warmup_ratio * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_schedule(step, warmup_steps, steps)
    )
    losses = []
    stream = _endless(batches)
    progress = tqdm(range(steps), desc="distilling", disable=not show_progress, leave=False)
    try:
        for _ in progress:
            batch = next(stream)
            inputs, labels = _model_inputs(batch, device), _labels(batch, device, "distill")
            with torch.no_grad():
                teacher_logits = teacher(**inputs).logits  # (B, C)
            student_logits = student(**inputs).logits  # (B, C)
            loss = distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        progress.close()
        teacher.train(teacher_was_training)
        student.eval()
    return losses


# ----------------------------------------------------------------------------
# Dynamic int8 quantization
# ----------------------------------------------------------------------------

INT8_MAX = 127  # symmetric: int8 values in [-127, 127], so that q and -q are both int8


def quantize_symmetric(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row: x ≈ q * scale.

    x: (..., K) float. Returns q (..., K) int8 in [-127, 127] and scale (...,) float32,
    one per row: scale = max |x| over the row / 127, so the row's largest magnitude maps
    to ±127 and 0 to 0; q = round(x / scale), rounding half to even. An all-zero row gets
    scale 1 (and q = 0), not a division by 0.
    For a weight (out_features, in_features) these are the per-output-channel scales;
    for activations (tokens, features), the per-token scales.
    """
    x = x.float()
    magnitude = x.abs().amax(dim=-1)  # (...,)
    scale = torch.where(magnitude > 0, magnitude / INT8_MAX, torch.ones_like(magnitude))
    q = torch.round(x / scale.unsqueeze(-1)).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale


def _int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, K) int8 @ (K, N) int8 -> (M, N) int32, accumulated exactly in int32.

    torch._int_mm is torch's int8 kernel (CPU and CUDA; int32 holds any sum of K < 2^17
    products of int8 values exactly). Where it is refused (some CUDA shapes), float64
    computes the same integers exactly: every partial sum is below 2^53.
    """
    try:
        return torch._int_mm(a, b)
    except RuntimeError:
        return (a.double() @ b.double()).to(torch.int32)


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights and int8 activations quantized at run time ("dynamic").

    Weights: int8, symmetric, one float32 scale per output channel (`quantize_symmetric`),
    computed once. Activations: each token's input vector is quantized the same way on
    every call, with its own scale. The int8 matrix product is accumulated exactly in
    int32 and rescaled by the two scales; then the float bias is added:

        y[t, o] = (sum_k qx[t, k] * qw[o, k]) * sx[t] * sw[o] + bias[o]

    Buffers (`weight_int8`, `weight_scale`, `bias`) travel with the state dict, so a
    quantized model saves and loads like any other. Inference only: nothing here is
    trained (rounding has no useful gradient).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))  # (out,) float32
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 version of `linear` (whose own weights stay as they were)."""
        quantized = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        weight_int8, weight_scale = quantize_symmetric(linear.weight.detach())
        quantized.weight_int8.copy_(weight_int8)
        quantized.weight_scale.copy_(weight_scale)
        if linear.bias is not None:
            quantized.bias = linear.bias.detach().float().clone()
        return quantized.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: the weight the int8 values and scales stand for."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features), in x's dtype."""
        rows = x.reshape(-1, self.in_features)  # (N, in): one row per token
        x_int8, x_scale = quantize_symmetric(rows)  # (N, in) int8, (N,)
        accumulated = _int8_matmul(x_int8, self.weight_int8.t())  # (N, out) int32
        y = accumulated.float() * x_scale[:, None] * self.weight_scale[None, :]  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, int8 per-channel weights, int8 per-token activations"
        )


def _skipped(name: str, skip: Sequence[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in skip)


def quantize_linear_layers(
    model: nn.Module,
    skip: Sequence[str] = ("classifier", "qa_outputs", "seq_relationship", "decoder"),
) -> nn.Module:
    """A copy of `model` with every nn.Linear replaced by an `Int8Linear`.

    skip: module names (the full dotted name, or its last parts: "classifier",
    "attention.output.dense") kept in float; by default the task heads' output layers,
    which are small and where an error goes straight into the logits (the MLM decoder is
    also tied to the embeddings). The model passed in is unchanged; the copy is in eval
    mode.
    """
    quantized = copy.deepcopy(model).eval()
    targets = [
        (name, module)
        for name, module in quantized.named_modules()
        if isinstance(module, nn.Linear) and not _skipped(name, skip) and module.weight.numel()
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, child, Int8Linear.from_linear(linear))
    return quantized


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of all linear layers (biases not counted).

    nn.Linear: its weight tensor (a weight shared by two layers counts once); Int8Linear:
    the int8 weight plus its float32 scales.
    """
    total, seen = 0, set()
    for module in model.modules():
        if isinstance(module, Int8Linear):
            total += module.weight_int8.numel() + module.weight_scale.numel() * 4
        elif isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel() * module.weight.element_size()
    return total


def size_on_disk(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`, written to a temporary file."""
    with tempfile.TemporaryDirectory(prefix="bertcourse_size_") as directory:
        path = Path(directory) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


# ----------------------------------------------------------------------------
# Head importance and pruning (Michel et al., 2019)
# ----------------------------------------------------------------------------


def _gating(gate: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A `probs_transform` multiplying head h's attention probabilities by gate[h].

    A head's output is probs @ V, linear in probs, so this multiplies the head's output by
    gate[h]: the gate xi_h of Michel et al.
    """

    def transform(attention_probs: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return attention_probs * gate[:, None, None]  # (B, nh, T, T) * (nh, 1, 1)

    return transform


def head_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    normalize: bool = True,
    show_progress: bool = False,
) -> torch.Tensor:
    """Each head's importance, |dL / d xi_h| summed over the batches: (layers, heads).

    xi_h is a gate on head h's output, held at 1.0 (so the model computes what it always
    does); the derivative of the loss says how much the loss would change if the head
    were turned down. The gate multiplies the head's attention probabilities
    (`MultiHeadSelfAttention.probs_transform`), equivalent since the head's output,
    probs @ V, is linear in them. L is the model's own loss on each batch's labels (the
    mean over the batch), so the absolute value is taken per batch. The model runs in eval
    mode (no dropout) and its weights get no gradient.
    normalize: divide each layer's importances by their L2 norm, as Michel et al. do
    (layers become comparable, so heads can be ranked across layers).
    """
    bert = encoder_of(model)
    modules = [layer.attention.self for layer in bert.encoder.layer]
    if any(hasattr(module, "kept_heads") for module in modules):
        raise ValueError(
            "This model has pruned heads: compute the head importance before pruning, on the "
            "unpruned model, so that every head has its place in the (layers, heads) table."
        )
    device = _device_of(model)
    gates = [
        torch.ones(module.num_attention_heads, device=device, requires_grad=True)
        for module in modules
    ]
    importance = torch.zeros(len(modules), bert.config.num_attention_heads, device=device)
    saved = [module.probs_transform for module in modules]
    was_training = model.training
    model.eval()
    try:
        for module, gate in zip(modules, gates, strict=True):
            module.probs_transform = _gating(gate)
        seen = 0
        for batch in tqdm(batches, desc="head importance", disable=not show_progress, leave=False):
            labels = _labels(batch, device, "head_importance")
            loss = model(**_model_inputs(batch, device), labels=labels).loss
            gradients = torch.autograd.grad(loss, gates)
            importance += torch.stack(gradients).abs()
            seen += 1
        if not seen:
            raise ValueError("The batches are empty: give at least one batch with labels.")
    finally:
        for module, previous in zip(modules, saved, strict=True):
            module.probs_transform = previous
        model.train(was_training)
    if normalize:
        importance = importance / importance.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    return importance.cpu()


def _keep_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only the output features `index` of `linear`, in place."""
    linear.weight = nn.Parameter(linear.weight.detach()[index].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[index].clone())
    linear.out_features = len(index)


def _keep_columns(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only the input features `index` of `linear`, in place (the bias stays)."""
    linear.weight = nn.Parameter(linear.weight.detach()[:, index].clone())
    linear.in_features = len(index)


def _prune_layer(layer: nn.Module, heads: Iterable[int], original_count: int) -> None:
    """Remove the heads `heads` (numbered as in the unpruned model) from one encoder layer."""
    attention: MultiHeadSelfAttention = layer.attention.self
    kept = list(getattr(attention, "kept_heads", range(attention.num_attention_heads)))
    heads = {int(h) for h in heads}
    bad = sorted(h for h in heads if not 0 <= h < original_count)
    if bad:
        raise ValueError(f"heads {bad} do not exist: a layer has heads 0 to {original_count - 1}.")
    positions = [i for i, head in enumerate(kept) if head not in heads]  # already pruned: ignored
    size = attention.attention_head_size
    index = torch.tensor(
        [p * size + d for p in positions for d in range(size)],
        dtype=torch.long,
        device=attention.query.weight.device,
    )  # the features of the heads that stay
    for projection in (attention.query, attention.key, attention.value):
        _keep_rows(projection, index)
    _keep_columns(layer.attention.output.dense, index)
    # MultiHeadSelfAttention splits and merges heads with these two attributes.
    attention.num_attention_heads = len(positions)
    attention.all_head_size = len(index)
    attention.kept_heads = [kept[p] for p in positions]


def prune_heads(model: nn.Module, heads_to_prune: Mapping[int, Iterable[int]]) -> nn.Module:
    """A copy of `model` without the given heads: {layer: [head, ...]}.

    In each listed layer, the heads' rows of the query, key and value projections and
    their columns of `attention.output.dense` are removed, so the layer computes exactly
    what the original computes with those heads' outputs set to 0 (gate xi_h = 0), with
    fewer weights. Heads are numbered as in the unpruned model (0 to heads - 1), also when
    a model is pruned again; a head already pruned is ignored. A layer may lose all its
    heads (its attention block then adds only the output bias).
    The model passed in is unchanged. The copy's config still describes the unpruned
    model, so it cannot be saved with `save_pretrained` / `to_hf`; save its state dict.
    """
    bert = encoder_of(model)
    count = len(bert.encoder.layer)
    bad = [layer for layer in heads_to_prune if not 0 <= int(layer) < count]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the model has layers 0 to {count - 1}.")
    pruned = copy.deepcopy(model)
    layers = encoder_of(pruned).encoder.layer
    for layer, heads in heads_to_prune.items():
        _prune_layer(layers[int(layer)], heads, bert.config.num_attention_heads)
    return pruned


def least_important_heads(importance: torch.Tensor, count: int) -> dict[int, list[int]]:
    """The `count` heads of lowest importance (layers, heads) as {layer: [heads]}.

    Heads are ranked across all layers (normalise the importance per layer first, as
    `head_importance` does by default); ties go to the lower layer, then the lower head.
    """
    layers, heads = importance.shape
    if not 0 <= count <= layers * heads:
        raise ValueError(f"count must be between 0 and {layers * heads} (all heads), got {count}.")
    order = torch.argsort(importance.flatten(), stable=True)[:count].tolist()
    chosen: dict[int, list[int]] = {}
    for flat in sorted(order):
        chosen.setdefault(flat // heads, []).append(flat % heads)
    return chosen


@torch.no_grad()
def classifier_accuracy(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """The fraction of examples whose arg-max logit is their label, over all batches (eval mode)."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    correct = total = 0
    try:
        for batch in batches:
            labels = _labels(batch, device, "classifier_accuracy")
            predictions = model(**_model_inputs(batch, device)).logits.argmax(dim=-1)  # (B,)
            correct += int((predictions == labels).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    if not total:
        raise ValueError("The batches are empty: accuracy of no examples is undefined.")
    return correct / total


def accuracy_as_heads_are_removed(
    model: nn.Module,
    importance: torch.Tensor,
    evaluate: Callable[[nn.Module], float],
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
) -> list[dict[str, float]]:
    """Prune the least important heads, a growing share at a time, and evaluate each model.

    For each fraction f, the round(f x all heads) least important heads
    (`least_important_heads`) are pruned from a copy of `model` and `evaluate(pruned)` is
    called (e.g. `lambda m: classifier_accuracy(m, batches)`). Rows: {"fraction",
    "heads_removed", "accuracy"}, in the order of `fractions`.
    """
    total = importance.numel()
    rows = []
    for fraction in fractions:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fractions are shares of the heads, in [0, 1]; got {fraction}.")
        removed = round(fraction * total)
        pruned = prune_heads(model, least_important_heads(importance, removed))
        rows.append(
            {"fraction": fraction, "heads_removed": removed, "accuracy": float(evaluate(pruned))}
        )
    return rows


# ----------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _ExportableClassifier(nn.Module):
    """BertForSequenceClassification's eval forward, without its data-dependent shortcuts.

    The model's own forward skips the mask when a batch has no padding and packs the real
    tokens when it has some (`bertcourse.speedups`): Python branches on the batch's
    values, which an exported graph would freeze at the example batch. Here the additive
    mask is always built and every position is computed, so one graph serves every batch.
    """

    def __init__(self, model: BertForSequenceClassification):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        bert = self.model.bert
        hidden_states = bert.embeddings(input_ids, token_type_ids)  # (B, T, H)
        additive_mask = padding_mask_to_additive(attention_mask, hidden_states.dtype)
        hidden_states, _ = bert.encoder(hidden_states, additive_mask)  # (B, T, H)
        return self.model.classifier(bert.pooler(hidden_states))  # (B, num_labels)


def _example_inputs(example_batch: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, token_type_ids) int64, with at least 2 rows.

    torch.export treats a dimension of size 1 as a constant, so a one-row example would
    fix the batch size at 1: it is repeated.
    """
    input_ids = torch.as_tensor(example_batch["input_ids"], dtype=torch.long)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
    mask = example_batch.get("attention_mask")
    segments = example_batch.get("token_type_ids")
    mask = torch.ones_like(input_ids) if mask is None else torch.as_tensor(mask, dtype=torch.long)
    segments = (
        torch.zeros_like(input_ids)
        if segments is None
        else torch.as_tensor(segments, dtype=torch.long)
    )
    inputs = (input_ids, mask, segments)
    if input_ids.shape[0] == 1:
        inputs = tuple(x.repeat(2, 1) for x in inputs)
    if input_ids.shape[1] < 2:
        raise ValueError("The example batch needs at least 2 tokens per row ([CLS] and [SEP]).")
    return inputs


def export_onnx(
    model: BertForSequenceClassification,
    path: str | os.PathLike,
    example_batch: Mapping[str, Any],
) -> Path:
    """Write `model` as an ONNX graph: (input_ids, attention_mask, token_type_ids) -> logits.

    example_batch: a tokenizer's or collator's output (input_ids (B, T), attention_mask,
    token_type_ids optional): it shows the exporter the input types; the batch and
    sequence axes are dynamic (up to max_position_embeddings tokens), and the graph gives
    the same logits with or without padding. Uses torch's default exporter
    (`torch.onnx.export(..., dynamo=True)`, which needs `onnxscript`); the weights are
    stored inside the one .onnx file. Returns the path.
    """
    _require_classifier(model, "export_onnx")
    headless = [
        i
        for i, layer in enumerate(model.bert.encoder.layer)
        if layer.attention.self.num_attention_heads == 0
    ]
    if headless:
        raise ValueError(
            f"layers {headless} have no attention heads left, and onnxruntime cannot run an "
            "attention of 0 heads: keep at least one head per layer when pruning for export."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = _example_inputs(example_batch)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    # The axes are named once: the other inputs share them (torch warns if named twice).
    same = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    wrapper = _ExportableClassifier(model)
    was_training = model.training
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous_level = registration_log.level
    try:
        wrapper.eval()
        registration_log.setLevel(logging.ERROR)  # "torchvision is not installed", irrelevant
        with warnings.catch_warnings():
            # raised inside torch 2.13's own exporter (it deep-copies a LeafSpec), not by
            # anything this call asks for
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
            )
            torch.onnx.export(
                wrapper,
                inputs,
                path,
                input_names=list(ONNX_INPUTS),
                output_names=["logits"],
                dynamic_shapes=({0: batch, 1: sequence}, same, same),
                external_data=False,
                dynamo=True,
                verbose=False,
            )
    finally:
        registration_log.setLevel(previous_level)
        model.train(was_training)
    return path


def onnx_session(path: str | os.PathLike, num_threads: int | None = None) -> Any:
    """An onnxruntime InferenceSession for the graph at `path`, on the CPU.

    num_threads: onnxruntime's intra-op threads (None: its default, all cores); set it to
    torch.get_num_threads() to compare the two runtimes on the same cores.
    """
    import onnxruntime  # deferred: only this chapter needs it

    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _as_int64_array(values: Any) -> Any:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64)


def run_onnx(
    session: Any,
    input_ids: Any,
    attention_mask: Any = None,
    token_type_ids: Any = None,
) -> Any:
    """The exported classifier's logits, a numpy array (B, num_labels).

    input_ids (B, T) and the optional attention_mask (default all 1) and token_type_ids
    (default all 0): tensors, arrays or nested lists of ints.
    """
    ids = _as_int64_array(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {ids.shape}.")
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids)
        if attention_mask is None
        else _as_int64_array(attention_mask),
        "token_type_ids": np.zeros_like(ids)
        if token_type_ids is None
        else _as_int64_array(token_type_ids),
    }
    return session.run(["logits"], feeds)[0]


# ----------------------------------------------------------------------------
# Latency
# ----------------------------------------------------------------------------


def latency_ms(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 3) -> float:
    """The median wall time of `fn()` in milliseconds, over `repeats` calls after `warmup`.

    The median, not the mean, so one call slowed by another process does not move it. Time
    on an otherwise idle machine and say which (see DESIGN: a busy core changes
    everything).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
