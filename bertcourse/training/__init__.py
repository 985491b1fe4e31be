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

from . import arguments, checkpoints, evaluation, optim, sampling, trainer
from .arguments import *  # noqa: F403
from .checkpoints import *  # noqa: F403
from .evaluation import *  # noqa: F403
from .optim import *  # noqa: F403
from .sampling import *  # noqa: F403
from .trainer import *  # noqa: F403

__all__ = [
    *arguments.__all__,
    *optim.__all__,
    *sampling.__all__,
    *checkpoints.__all__,
    *evaluation.__all__,
    *trainer.__all__,
]
