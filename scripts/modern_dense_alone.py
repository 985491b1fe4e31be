"""One side of `bench --task modern`'s dense training row, timed alone in its own process.

    python scripts/modern_dense_alone.py ours tiny 128
    python scripts/modern_dense_alone.py theirs tiny 128

In one process the two sides' dense steps (each writes hundreds of MB of logits) slow each other
down unevenly; run each side in its own process, one after the other, and compare the medians.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from bertcourse.bench import pretraining_batch
from bertcourse.modern import ModernBertForMaskedLM, ModernConfig


def main() -> int:
    side, size, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    config = ModernConfig.from_name(
        size, vocab_size=50368, pad_token_id=0, local_attention=128, unpad=True
    )
    ours = ModernBertForMaskedLM(config).train()
    model = ours if side == "ours" else ours.to_hf().train()
    batch = pretraining_batch(
        config, 4096 // seq_len, seq_len, 0.25, torch.device("cpu"), mlm_probability=0.3
    )
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(2):
        step()
    times = []
    for _ in range(8):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    real = int(inputs["attention_mask"].sum())
    print(f"{side} {size} {seq_len}: median {median:.3f} s, {real / median:,.0f} real tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
