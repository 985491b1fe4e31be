"""Evaluation during training: the mean loss, and MLM/NSP accuracy for pretraining."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


__all__ = [
    "evaluate_loss",
    "evaluate_pretraining",
]


def evaluate_loss(model: nn.Module, dataloader: DataLoader, accelerator: Any) -> dict[str, float]:
    """The mean of the model's loss over the evaluation batches: {"eval_loss": ...}."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device)  # loss sum, batches
    with torch.no_grad():
        for batch in dataloader:
            total[0] += model(**batch).loss.float()
            total[1] += 1
    total = accelerator.reduce(total, reduction="sum")
    return {"eval_loss": (total[0] / total[1].clamp(min=1)).item()}


def evaluate_pretraining(
    model: nn.Module, dataloader: DataLoader, accelerator: Any
) -> dict[str, float]:
    """MLM loss and accuracy on the masked positions, NSP loss and accuracy (if the batches have it).

    The engine builds the evaluation batches with a fixed masking seed, so the
    same tokens are masked at every evaluation and the numbers are comparable
    across steps. Runs the MLM head on masked positions only (masked_only).
    """
    model.eval()
    # mlm loss sum, mlm correct, masked tokens, nsp loss sum, nsp correct, nsp examples
    totals = torch.zeros(6, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch, masked_only=True)
            logits = getattr(out, "prediction_logits", None)
            logits = out.logits if logits is None else logits  # (N, V): the N masked positions
            targets = batch["labels"][batch["labels"] != -100]  # (N,)
            totals[0] += F.cross_entropy(logits.float(), targets, reduction="sum")
            totals[1] += (logits.argmax(dim=-1) == targets).sum()
            totals[2] += targets.numel()
            nsp_labels = batch.get("next_sentence_label")
            nsp_logits = getattr(out, "seq_relationship_logits", None)
            if nsp_labels is not None and nsp_logits is not None:
                nsp_labels = nsp_labels.view(-1)
                totals[3] += F.cross_entropy(nsp_logits.float(), nsp_labels, reduction="sum")
                totals[4] += (nsp_logits.argmax(dim=-1) == nsp_labels).sum()
                totals[5] += nsp_labels.numel()
    totals = accelerator.reduce(totals, reduction="sum").tolist()
    mlm_loss = totals[0] / max(totals[2], 1)
    metrics = {
        "eval_mlm_loss": mlm_loss,
        "eval_mlm_accuracy": totals[1] / max(totals[2], 1),
        "eval_loss": mlm_loss,
    }
    if totals[5]:
        nsp_loss = totals[3] / totals[5]
        metrics.update(
            eval_nsp_loss=nsp_loss,
            eval_nsp_accuracy=totals[4] / totals[5],
            eval_loss=mlm_loss + nsp_loss,  # as the model's loss: the sum of the two
        )
    return metrics
