"""Data for the course: sentences, corpora, labelled tasks, pretraining examples, NER and QA.

One module per idea, each re-exported here, so `from bertcourse.data import mask_tokens` works:

- `text`: splitting documentation text into sentences and keeping the prose;
- `documents`: `Document`, `Corpus`, and the train/validation split by document;
- `offline`: the offline corpora, small (Python's documentation) and large (with the installed
  packages' docstrings), built once and cached;
- `corpus`: corpora by name or path: offline, hub, local files; tables;
- `labelled`: labelled classification data (offline tasks, SST-2, IMDB, files), tokenizing;
- `pretraining`: masking for MLM, sentence pairs for NSP, the pretraining collator;
- `tasks`: the offline NER and question answering tasks, `QAExample`;
- `retrieval`: query → passage pairs for semantic search (offline docstrings, files, BEIR).

Imports point down this list: `offline` uses `text` and `documents`, `corpus` uses
`offline`; `labelled`, `pretraining`, `tasks` and `retrieval` use those above them.
"""

from . import corpus, documents, labelled, offline, pretraining, retrieval, tasks, text
from .corpus import *  # noqa: F403
from .documents import *  # noqa: F403
from .labelled import *  # noqa: F403
from .offline import *  # noqa: F403
from .pretraining import *  # noqa: F403
from .retrieval import *  # noqa: F403
from .tasks import *  # noqa: F403
from .text import *  # noqa: F403

__all__ = [
    *text.__all__,
    *documents.__all__,
    *offline.__all__,
    *corpus.__all__,
    *labelled.__all__,
    *pretraining.__all__,
    *tasks.__all__,
    *retrieval.__all__,
]
