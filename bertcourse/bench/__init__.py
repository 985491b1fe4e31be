"""Throughput of the course's BERT against transformers', same weights, same batches.

    python -m bertcourse.bench                  # the matrix: every workload, tiny/mini/small x 128/512
    python -m bertcourse.bench --quick          # tiny and mini only: about 3 minutes on 2 CPU cores
    python -m bertcourse.bench --size base --dtype bfloat16 --json bench.json
    python -m bertcourse.bench --task pretraining --size mini   # one workload, more options
    python -m bertcourse.bench --task embed     # sentence embeddings vs sentence-transformers
    python -m bertcourse.bench --task modern    # ModernBERT MLM steps vs transformers'

Both sides get identical inputs (random ids, segment ids, rows padded to different lengths);
each step of ours is timed right next to a step of the reference, so slow drift of the machine
affects both alike. The ratio ours / transformers is the number to read: above 1.0 we are
faster. Every row first checks that the two sides compute the same thing.

One module per kind of benchmark: `matrix` (the default task), `bert` (one BERT workload at a
time), `embed`, `modern`, `tokenizer`; `timing` holds what they share (batches, precision, the
interleaved timing loop, FLOPs); `cli` the command line.
"""

from .bert import (
    BenchResult,
    PretrainingResult,
    format_finetuning,
    format_pretraining,
    format_table,
    run,
    run_finetuning,
    run_pretraining,
)
from .cli import build_parser, main
from .embed import EMBED_TEXT_KINDS, EMBED_TOKENIZERS, EMBED_TOLERANCE, format_embed, run_embed
from .matrix import (
    MATRIX_TOKENS_PER_BATCH,
    MATRIX_TOLERANCE,
    MATRIX_WORKLOADS,
    cpu_has_native_bf16,
    flops_per_token,
    format_matrix,
    matrix_dtypes,
    run_matrix,
    saved_activation_mb,
)
from .modern import (
    MODERN_TOKENS_PER_BATCH,
    MODERN_TOLERANCE,
    format_modern,
    run_modern,
)
from .timing import (
    AMP_DTYPES,
    PEAK_BF16_TFLOPS,
    machine_setup,
    make_batch,
    mixed_precision,
    pretraining_batch,
    pretraining_flops_per_token,
    step_setup,
    time_steps,
    time_training_steps,
)
from .tokenizer import format_tokenizer, run_tokenizer

__all__ = [
    "MATRIX_WORKLOADS",
    "MATRIX_TOLERANCE",
    "MATRIX_TOKENS_PER_BATCH",
    "cpu_has_native_bf16",
    "matrix_dtypes",
    "flops_per_token",
    "saved_activation_mb",
    "run_matrix",
    "format_matrix",
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
