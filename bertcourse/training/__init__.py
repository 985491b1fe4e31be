"""The training engine: one loop for pretraining and fine-tuning, on one CPU or many GPUs.

`train(model, train_dataset, collate_fn, args)` runs AdamW with a linear warm-up and
decay through Hugging Face Accelerate. One module per idea, each re-exported here:

- `arguments`: `TrainingArguments`, what a run is told;
- `optim`: parameter groups (no decay for biases and LayerNorm), AdamW, the schedule;
- `sampling`: seeded, resumable batch order, length grouping, per-batch seeded collators;
- `checkpoints`: atomic checkpoints, the best weights, the metrics log, random states;
- `evaluation`: the mean loss, MLM and NSP accuracy;
- `trainer`: the loop (`Trainer`, `train`), built on all of the above.
"""

from .arguments import (
    MIXED_PRECISIONS,
    TrainingArguments,
    resolve_mixed_precision,
)
from .checkpoints import (
    BEST_DIR,
    BEST_FILE,
    CHECKPOINT_PATTERN,
    CHECKPOINT_PREFIX,
    LOG_CSV,
    LOG_JSONL,
    MODEL_FILE,
    STATE_FORMAT_VERSION,
    TRAINING_STATE_FILE,
    MetricsLog,
    capture_rng_states,
    checkpoint_step,
    deferred_keyboard_interrupt,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_training_state,
    prepare_output_dir,
    preserved_rng_states,
    read_best,
    restore_rng_states,
    write_best,
    write_checkpoint,
)
from .evaluation import (
    evaluate_loss,
    evaluate_pretraining,
)
from .optim import (
    create_optimizer_and_schedule,
    linear_warmup_decay,
    parameter_groups,
)
from .sampling import (
    EpochSampler,
    KeyedDataset,
    LengthGroupedEpochSampler,
    SeededCollate,
    accepts_generator,
    derive_seed,
    example_lengths,
    make_dataloader,
)
from .trainer import (
    Position,
    Trainer,
    TrainResult,
    TrainState,
    batch_stream,
    count_tokens,
    train,
)

__all__ = [
    "MIXED_PRECISIONS",
    "TrainingArguments",
    "resolve_mixed_precision",
    "parameter_groups",
    "linear_warmup_decay",
    "create_optimizer_and_schedule",
    "derive_seed",
    "EpochSampler",
    "LengthGroupedEpochSampler",
    "example_lengths",
    "KeyedDataset",
    "accepts_generator",
    "SeededCollate",
    "make_dataloader",
    "CHECKPOINT_PREFIX",
    "CHECKPOINT_PATTERN",
    "TRAINING_STATE_FILE",
    "MODEL_FILE",
    "LOG_CSV",
    "LOG_JSONL",
    "BEST_DIR",
    "BEST_FILE",
    "STATE_FORMAT_VERSION",
    "capture_rng_states",
    "restore_rng_states",
    "preserved_rng_states",
    "deferred_keyboard_interrupt",
    "checkpoint_step",
    "list_checkpoints",
    "latest_checkpoint",
    "write_checkpoint",
    "write_best",
    "read_best",
    "load_training_state",
    "load_model_weights",
    "MetricsLog",
    "prepare_output_dir",
    "evaluate_loss",
    "evaluate_pretraining",
    "TrainState",
    "TrainResult",
    "Position",
    "batch_stream",
    "count_tokens",
    "train",
    "Trainer",
]
