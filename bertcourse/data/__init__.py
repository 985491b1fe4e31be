"""Data for the course: sentences, corpora, labelled tasks, pretraining examples, NER and QA.

One module per idea, each re-exported here, so `from bertcourse.data import mask_tokens` works:

- `text`: splitting documentation text into sentences and keeping the prose;
- `corpus`: the offline corpus (with its cache), hub and local corpora, tables;
- `labelled`: labelled classification data (offline tasks, SST-2, IMDB, files), tokenizing;
- `pretraining`: masking for MLM, sentence pairs for NSP, the pretraining collator;
- `tasks`: the offline NER and question answering tasks, `QAExample`.

Imports point down this list: `corpus` uses `text`; `labelled`, `pretraining` and `tasks`
use `corpus`.
"""

from . import corpus, labelled, pretraining, tasks, text
from .corpus import *  # noqa: F403
from .labelled import *  # noqa: F403
from .pretraining import *  # noqa: F403
from .tasks import *  # noqa: F403
from .text import *  # noqa: F403

__all__ = [
    *text.__all__,
    *corpus.__all__,
    *labelled.__all__,
    *pretraining.__all__,
    *tasks.__all__,
]
