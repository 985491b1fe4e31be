"""Fine-tuning: task data for the heads, evaluation, span decoding, models to start from.

The training itself is `bertcourse.training` (the engine of pretraining); this
module turns labelled data into examples for each head, evaluates a model on a
task, decodes question-answering spans back to characters, and loads the model
a run starts from. `python -m bertcourse finetune` (`bertcourse.commands.finetune`)
puts it together for text classification.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import BertConfig
from .data import QAExample
from .hf import resolve_checkpoint
from .metrics import classification_report, entity_f1
from .modern import ModernBertForSequenceClassification, ModernConfig
from .tokenization import BertTokenizer

__all__ = [
    "IGNORE_INDEX",
    "MODEL_INPUTS",
    "TARGETS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_WARMUP_RATIO",
    "DEFAULT_MAX_STEPS",
    "PaddingCollator",
    "encode_classification",
    "align_word_labels",
    "word_spans",
    "tokens_to_words",
    "encode_tagged",
    "word_predictions",
    "prepare_qa_features",
    "best_span",
    "decode_answers",
    "predict_logits",
    "evaluate_classification",
    "evaluate_token_classification",
    "resolve_init",
    "load_for_task",
    "modern_twin",
]

IGNORE_INDEX = -100  # label of positions the loss skips (special tokens, later sub-words, padding)
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
TARGETS = ("labels", "start_positions", "end_positions")

# BERT's fine-tuning recipe (Devlin et al. 2019, appendix A.3): batch 16 or 32, learning rate
# 5e-5, 3e-5 or 2e-5, 2 to 4 epochs; warm-up over the first 10% of steps, then linear decay.
DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 3
DEFAULT_WARMUP_RATIO = 0.1
# A cap on the run's length, so that the defaults finish in minutes on a laptop CPU even on a
# large file (MiniLM: about 800 steps of 32 in 5 minutes on 2 cores); --max-steps 0 lifts it.
DEFAULT_MAX_STEPS = 800


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------


class PaddingCollator:
    """Examples (dicts of lists and numbers) -> a batch of tensors, padded to its longest example.

    Padding per batch ("dynamic padding") instead of to a fixed length keeps
    the short batches short. input_ids are padded with the pad token,
    per-token labels with -100 (ignored by the loss), the other per-token
    fields with 0. Keys that are not model inputs or targets (an example id,
    offsets) are left out of the batch.
    """

    def __init__(self, pad_token_id: int = 0):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        batch = {}
        for key in (*MODEL_INPUTS, *TARGETS):
            if key not in examples[0]:
                continue
            values = [example[key] for example in examples]
            if isinstance(values[0], (list, tuple, torch.Tensor)):
                batch[key] = self._pad([list(map(int, v)) for v in values], self._pad_value(key))
            elif isinstance(values[0], float):  # a regression target
                batch[key] = torch.tensor(values, dtype=torch.float32)
            else:
                batch[key] = torch.tensor(values, dtype=torch.long)
        if "input_ids" not in batch:
            raise KeyError(f"Examples need input_ids; they have {sorted(examples[0])}.")
        return batch

    def _pad_value(self, key: str) -> int:
        return {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)

    @staticmethod
    def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
        longest = max(len(row) for row in rows)
        return torch.tensor([row + [value] * (longest - len(row)) for row in rows])


# ----------------------------------------------------------------------------
# Sequence classification: single texts and pairs
# ----------------------------------------------------------------------------


def encode_classification(
    data: Any, tokenizer: Callable[..., Any], max_length: int = 128
) -> list[dict[str, Any]]:
    """One example per text (or text pair) of a LabelledData: input ids, segment ids, label.

    The pair goes into segment B, after [SEP]: BERT reads both sentences at
    once, and its segment embeddings tell them apart.
    """
    if len(data) == 0:
        raise ValueError(f"{data.name or 'The data'} has no examples.")
    encoded = tokenizer(data.texts, data.pairs, truncation=True, max_length=max_length)
    return [
        {
            "input_ids": list(encoded["input_ids"][i]),
            "token_type_ids": list(encoded["token_type_ids"][i]),
            "attention_mask": list(encoded["attention_mask"][i]),
            "labels": data.labels[i],
        }
        for i in range(len(data))
    ]


# ----------------------------------------------------------------------------
# Token classification: word labels on the first sub-word
# ----------------------------------------------------------------------------


def align_word_labels(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    label_all_subwords: bool = False,
    inside_of: Mapping[int, int] | None = None,
) -> list[int]:
    """Token labels from word labels: the word's label on its first sub-word, -100 elsewhere.

    word_ids[i] is the word that token i came from (None for [CLS], [SEP],
    padding). The later sub-words of a word get -100 so each word is
    counted once by the loss and the metric, as in the BERT paper's NER
    setup. With label_all_subwords they are labelled too: with the word's
    label, or, where `inside_of` maps a B-X id to its I-X id, with I-X (a
    later piece continues the entity; it does not begin another one).
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            if word >= len(word_labels):
                raise ValueError(
                    f"Token of word {word} but only {len(word_labels)} word labels: give one "
                    "label per word."
                )
            labels.append(word_labels[word])
        elif label_all_subwords:
            label = word_labels[word]
            labels.append(inside_of.get(label, label) if inside_of else label)
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


def word_spans(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by single spaces, and each word's (start, end) in that text."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans


def tokens_to_words(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]):
    """For each token (character offsets in the joined text), the index of the word it lies in."""
    word_of_char = {}
    for index, (start, end) in enumerate(spans):
        for char in range(start, end):
            word_of_char[char] = index
    return [None if end == start else word_of_char.get(start) for start, end in offsets]


def encode_tagged(
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]] | None,
    tokenizer: Any,
    max_length: int = 128,
) -> list[dict[str, Any]]:
    """Examples for token classification from pre-split words and their tag ids.

    Words are joined with spaces and tokenized with offsets; each token is
    mapped back to the word it came from (a word may be split further, e.g.
    "U.S." into "u", ".", "s", "." by the punctuation rule, and into
    sub-words: all of them belong to the word). Tokens past max_length are
    cut, so a word can lose its label; `word_ids` keeps the mapping for
    turning predictions back into word tags.
    """
    examples = []
    for index, words in enumerate(sentences):
        text, spans = word_spans(words)
        encoded = tokenizer(
            text, truncation=True, max_length=max_length, return_offsets_mapping=True
        )
        word_ids = tokens_to_words(encoded["offset_mapping"], spans)
        example = {
            "input_ids": list(encoded["input_ids"]),
            "token_type_ids": list(encoded["token_type_ids"]),
            "attention_mask": list(encoded["attention_mask"]),
            "word_ids": word_ids,
        }
        if tags is not None:
            if len(tags[index]) != len(words):
                raise ValueError(
                    f"Sentence {index} has {len(words)} words but {len(tags[index])} tags."
                )
            example["labels"] = align_word_labels(word_ids, tags[index])
        examples.append(example)
    return examples


def word_predictions(
    token_predictions: Sequence[int], word_ids: Sequence[int | None], num_words: int
):
    """A tag id per word: the prediction at its first sub-word; words cut off by truncation get -1."""
    predictions, seen = [-1] * num_words, set()
    for prediction, word in zip(token_predictions, word_ids, strict=False):
        if word is not None and word not in seen:
            predictions[word] = int(prediction)
            seen.add(word)
    return predictions


# ----------------------------------------------------------------------------
# Question answering: windows over the context, and spans back to characters
# ----------------------------------------------------------------------------


def prepare_qa_features(
    examples: Sequence[QAExample],
    tokenizer: Any,
    max_length: int = 384,
    stride: int = 128,
    max_question_length: int = 64,
) -> list[dict[str, Any]]:
    """Model inputs for QA: [CLS] question [SEP] context window [SEP], one feature per window.

    A context longer than the room left by the question is covered by
    overlapping windows, each sharing `stride` tokens with the previous one
    (the `stride` of transformers' tokenizers), so an answer cut by one
    window's edge lies whole in the next. Training targets: the token
    positions of the first answer's first and last token, or 0 ([CLS]) in a
    window that does not contain the whole answer. `context_offsets` maps
    the context tokens back to characters (None for the other tokens).
    """
    features = []
    for example_index, example in enumerate(examples):
        question = tokenizer.tokenize_with_offsets(example.question)[:max_question_length]
        context = tokenizer.tokenize_with_offsets(example.context)
        question_ids = tokenizer.convert_tokens_to_ids([token for token, _, _ in question])
        context_ids = tokenizer.convert_tokens_to_ids([token for token, _, _ in context])
        room = max_length - len(question_ids) - 3  # [CLS] question [SEP] window [SEP]
        if room <= stride:
            raise ValueError(
                f"max_length={max_length} leaves {room} context tokens per window after a "
                f"{len(question_ids)}-token question, not more than stride={stride}: raise "
                "max_length or lower stride (or max_question_length)."
            )
        starts = list(range(0, max(len(context_ids) - stride, 1), room - stride))
        for window_start in starts:
            window = range(window_start, min(window_start + room, len(context_ids)))
            input_ids, token_type_ids = tokenizer.build_inputs(
                question_ids, [context_ids[i] for i in window]
            )
            first_context_token = len(question_ids) + 2
            offsets = [None] * len(input_ids)
            for position, i in enumerate(window, start=first_context_token):
                offsets[position] = context[i][1]
            feature = {
                "input_ids": input_ids,
                "token_type_ids": token_type_ids,
                "attention_mask": [1] * len(input_ids),
                "example_index": example_index,
                "context_offsets": offsets,
            }
            if example.answers:
                feature["start_positions"], feature["end_positions"] = _answer_positions(
                    example.answers[0], offsets
                )
            features.append(feature)
            if window.stop == len(context_ids):
                break
    return features


def _answer_positions(answer: tuple[str, int], offsets: Sequence) -> tuple[int, int]:
    """Token positions of the answer's first and last token in a window, or (0, 0) if not all in it."""
    text, start_char = answer
    end_char = start_char + len(text)
    starts = [i for i, span in enumerate(offsets) if span is not None and span[1] > start_char]
    ends = [i for i, span in enumerate(offsets) if span is not None and span[0] < end_char]
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    return starts[0], ends[-1]


def best_span(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    max_answer_length: int = 30,
) -> tuple[int, int, float]:
    """(start, end, score) of the best span of one window: start <= end < start + max_answer_length.

    Both ends must be context tokens. The score is p_start(start) *
    p_end(end), each a softmax over the window's context tokens: the span
    score of transformers' question-answering pipelines. Maximising it is
    maximising start_logit + end_logit.
    """
    if not context_mask.any():
        raise ValueError("The window has no context tokens to answer from.")
    masked = torch.finfo(torch.float32).min
    start_probs = start_logits.float().masked_fill(~context_mask, masked).softmax(-1)
    end_probs = end_logits.float().masked_fill(~context_mask, masked).softmax(-1)
    scores = start_probs[:, None] * end_probs[None, :]  # (T, T): [start, end]
    length = len(start_logits)
    positions = torch.arange(length)
    valid = (positions[None, :] >= positions[:, None]) & (
        positions[None, :] - positions[:, None] < max_answer_length
    )
    valid &= context_mask[:, None] & context_mask[None, :]
    scores = scores.masked_fill(~valid, -1.0)
    flat = int(scores.argmax())
    return flat // length, flat % length, float(scores.flatten()[flat])


def decode_answers(
    examples: Sequence[QAExample],
    features: Sequence[Mapping[str, Any]],
    start_logits: Sequence[torch.Tensor],
    end_logits: Sequence[torch.Tensor],
    max_answer_length: int = 30,
) -> dict[str, dict[str, Any]]:
    """The best answer of each example over its windows: {id: {"text", "start", "end", "score"}}.

    start/end are character positions in the example's context, so the
    answer is the original text, with its case and accents, not the
    tokenizer's normalised version.
    """
    answers: dict[str, dict[str, Any]] = {}
    for feature, starts, ends in zip(features, start_logits, end_logits, strict=True):
        offsets = feature["context_offsets"]
        context_mask = torch.tensor([span is not None for span in offsets])
        n = len(offsets)
        start, end, score = best_span(starts[:n], ends[:n], context_mask, max_answer_length)
        example = examples[feature["example_index"]]
        best = answers.get(example.id)
        if best is None or score > best["score"]:
            char_start, char_end = offsets[start][0], offsets[end][1]
            answers[example.id] = {
                "text": example.context[char_start:char_end],
                "start": char_start,
                "end": char_end,
                "score": score,
            }
    return answers


# ----------------------------------------------------------------------------
# Predictions and evaluation
# ----------------------------------------------------------------------------


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    examples: Sequence[Mapping[str, Any]],
    batch_size: int = 64,
    pad_token_id: int = 0,
) -> list[torch.Tensor]:
    """The model's logits for each example, unpadded: (num_labels,) or (tokens, num_labels).

    For a QA model, each item is a (tokens, 2) tensor of start and end logits.
    """
    model.eval()
    device = next(model.parameters()).device
    collate = PaddingCollator(pad_token_id)
    outputs = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk).items() if k in MODEL_INPUTS}
        out = model(**batch)
        if hasattr(out, "start_logits"):
            logits = torch.stack([out.start_logits, out.end_logits], dim=-1)
        else:
            logits = out.logits
        logits = logits.float().cpu()
        for row, example in zip(logits, chunk, strict=True):
            outputs.append(row[: len(example["input_ids"])] if row.dim() > 1 else row)
    return outputs


def _gathered_outputs(model: nn.Module, dataloader: Any, accelerator: Any):
    """(logits, labels, loss per example) of each evaluation batch, all processes', on the CPU."""
    model.eval()
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch)
            per_example_loss = out.loss.float().expand(len(batch["labels"]))
            gathered = accelerator.gather_for_metrics(
                (out.logits.float(), batch["labels"], per_example_loss)
            )
            yield tuple(tensor.cpu() for tensor in gathered)


def evaluate_classification(
    model: nn.Module, dataloader: Any, accelerator: Any
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 over the evaluation batches (all processes together)."""
    losses, predictions, labels = [], [], []
    for logits, batch_labels, batch_losses in _gathered_outputs(model, dataloader, accelerator):
        predictions.append(logits.argmax(-1))
        labels.append(batch_labels)
        losses.append(batch_losses)
    predictions, labels = torch.cat(predictions).tolist(), torch.cat(labels).tolist()
    num_labels = accelerator.unwrap_model(model).num_labels
    report = classification_report(labels, predictions, [str(i) for i in range(num_labels)])
    return {
        "eval_loss": torch.cat(losses).mean().item(),
        "eval_accuracy": report["accuracy"],
        "eval_macro_f1": report["macro_f1"],
    }


def evaluate_token_classification(
    model: nn.Module, dataloader: Any, accelerator: Any, label_names: Sequence[str]
) -> dict[str, float]:
    """Loss, token accuracy (first sub-words) and entity-level F1 (IOB2 label names)."""
    losses, true_tags, predicted_tags = [], [], []
    for logits, labels, loss in _gathered_outputs(model, dataloader, accelerator):
        losses.append(loss)
        for row_logits, row_labels in zip(logits, labels, strict=True):
            keep = row_labels != IGNORE_INDEX
            true_tags.append([label_names[i] for i in row_labels[keep].tolist()])
            predicted_tags.append([label_names[i] for i in row_logits[keep].argmax(-1).tolist()])
    correct = sum(
        t == p
        for ts, ps in zip(true_tags, predicted_tags, strict=True)
        for t, p in zip(ts, ps, strict=True)
    )
    total = sum(len(ts) for ts in true_tags)
    entities = entity_f1(true_tags, predicted_tags)
    return {
        "eval_loss": torch.cat(losses).mean().item(),
        "eval_accuracy": correct / max(total, 1),
        "eval_f1": entities["f1"],
    }


# ----------------------------------------------------------------------------
# Models to start from
# ----------------------------------------------------------------------------


def resolve_init(init: str) -> Path:
    """The transformers-format directory behind --init: a checkpoint, a course run, or a hub name.

    A course pretraining run (`python -m bertcourse pretrain --out runs/x`)
    is found through its exported `final/` folder; a fine-tuning run through
    `model/`.
    """
    path = Path(init).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        for name in ("final", "model"):
            if (path / name / "config.json").is_file():
                return path / name
        raise FileNotFoundError(
            f"{path} holds no config.json, nor final/ (a pretraining run) or model/ (a "
            "fine-tuning run) with one: pass a transformers checkpoint directory, a course run, "
            "'minilm', 'course-tiny', 'random', 'random:<checkpoint>' or a hub name."
        )
    return resolve_checkpoint(init)


def modern_twin(model_class: type) -> type:
    """The ladder's class for a task head: sequence classification is the one chapter 14 uses."""
    if model_class.__name__ in (
        "BertForSequenceClassification",
        "ModernBertForSequenceClassification",
    ):
        return ModernBertForSequenceClassification
    raise ValueError(
        f"a ModernBERT-ladder checkpoint (bertcourse.modern) fine-tunes for sequence "
        f"classification only, not with {model_class.__name__}: use a BERT checkpoint for "
        "token classification and question answering."
    )


def load_for_task(model_class: type, init: str, seed: int = 0, **head_kwargs: Any):
    """(model, tokenizer) for fine-tuning: `init`'s weights and vocabulary, a fresh task head.

    init="random:NAME" builds the twin of checkpoint NAME (any name --init
    takes, e.g. "random:course-tiny"): its architecture and vocabulary, every
    weight drawn at random (seeded) -- the same model without pretraining, for
    the comparison that shows what pretraining is worth. "random" alone is
    "random:minilm".
    """
    kind, _, source = init.partition(":")
    directory = resolve_init(source or "minilm") if kind == "random" else resolve_init(init)
    config_dict = json.loads((directory / "config.json").read_text())
    if config_dict.get("model_type") == "modernbert":  # a rung of chapter 14's ladder
        model_class = modern_twin(model_class)
    if kind == "random":
        if config_dict.get("model_type") == "modernbert":
            config = ModernConfig.from_hf(config_dict)
        else:
            config = BertConfig.from_hf(config_dict)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(config, **head_kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the new head's initial weights
            model = model_class.from_hf(directory, **head_kwargs)
    if not (directory / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"{directory} has no vocab.txt: a checkpoint to fine-tune needs the vocabulary it was "
            "trained with."
        )
    return model.train(), BertTokenizer.from_pretrained(directory)
