"""Reproducible, resumable data order and masking.

A batch is named by (epoch, index in epoch, seed): its examples and the random
choices of its collator (masking) depend only on that name, so a resumed run draws
exactly what an uninterrupted one would. Length grouping puts examples of similar
length in one batch, which saves padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# ----------------------------------------------------------------------------
# Reproducible, resumable data order and masking
# ----------------------------------------------------------------------------


__all__ = [
    "derive_seed",
    "EpochSampler",
    "LengthGroupedEpochSampler",
    "example_lengths",
    "KeyedDataset",
    "accepts_generator",
    "SeededCollate",
    "make_dataloader",
]


def derive_seed(*numbers: int) -> int:
    """One 63-bit seed from several integers (e.g. run seed, epoch, position), well mixed."""
    return int(
        np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, np.uint64)[0] >> 1
    )


class EpochSampler(Sampler):
    """Yields (example index, epoch, position in epoch); the order is a permutation seeded by (seed, epoch).

    The order of an epoch is a function of the seed and the epoch number
    only, so a resumed run finds the same order and only has to skip the
    batches it already consumed. The epoch and position travel with each
    index so the collator knows which batch it is building (see SeededCollate).
    """

    def __init__(self, num_examples: int, seed: int, shuffle: bool = True):
        self.num_examples = num_examples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        # An unshuffled (evaluation) pass is the same every time, and so is its masking.
        epoch = self.epoch if self.shuffle else 0
        if self.shuffle:
            order_rng = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.num_examples, generator=order_rng).tolist()
        else:
            order = range(self.num_examples)
        for position, index in enumerate(order):
            yield index, epoch, position


class LengthGroupedEpochSampler(EpochSampler):
    """An EpochSampler whose batches hold examples of similar length, in a random order.

    Each epoch: a seeded random permutation, cut into mega-batches of
    `batch_size * mega_batches` examples, each sorted by length (longest
    first) and cut into batches; the full batches are then shuffled, and an
    incomplete last batch stays last (so drop_last drops only it). Padding
    shrinks to almost nothing while every example still lands in a random
    batch each epoch. The order is a function of (seed, epoch), as for
    EpochSampler, so resuming stays exact.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        mega_batches: int = 50,
    ):
        super().__init__(len(lengths), seed, shuffle=True)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_size = batch_size * mega_batches

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        batches = []
        for start in range(0, len(order), self.mega_batch_size):
            mega_batch = sorted(
                order[start : start + self.mega_batch_size], key=lambda i: -self.lengths[i]
            )
            batches += [
                mega_batch[i : i + self.batch_size]
                for i in range(0, len(mega_batch), self.batch_size)
            ]
        full = [batch for batch in batches if len(batch) == self.batch_size]
        partial_batches = [batch for batch in batches if len(batch) < self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        # Several incomplete batches (one per mega-batch at most) would misalign the
        # DataLoader's batches: merge them into full ones at the end.
        rest = [index for batch in partial_batches for index in batch]
        order = [index for batch in shuffled for index in batch] + rest
        for position, index in enumerate(order):
            yield index, self.epoch, position


def example_lengths(dataset: Any) -> list[int]:
    """len(input_ids) of every example of a map-style dataset (a datasets.Dataset column at once)."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None and "input_ids" in column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    try:
        return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    except (KeyError, TypeError) as error:
        raise ValueError(
            "group_by_length=True needs examples with input_ids (e.g. dicts from a tokenizer); "
            f"this dataset's examples have none ({error!r})."
        ) from error


class KeyedDataset(Dataset):
    """dataset[(index, epoch, position)] -> ((index, epoch, position), dataset[index])."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[tuple[int, int, int], Any]:
        return key, self.dataset[key[0]]


def accepts_generator(collate_fn: Callable) -> bool:
    """Whether collate_fn can be called with generator=... (a named or a ** parameter)."""
    try:
        parameters = inspect.signature(collate_fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    return "generator" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class SeededCollate:
    """Calls collate_fn(examples, generator=g), g seeded by (seed, epoch, position of the batch).

    Random masking then depends only on which batch is built: not on how
    many batches this process built before (a resumed run masks exactly as
    an uninterrupted one), nor on the DataLoader's worker processes. A
    collate_fn without a `generator` parameter runs with torch's global
    generator seeded the same way, then restored.
    """

    def __init__(self, collate_fn: Callable, seed: int):
        self.collate_fn = collate_fn
        self.seed = seed
        self.pass_generator = accepts_generator(collate_fn)

    def __call__(self, keyed_examples: list[tuple[tuple[int, int, int], Any]]) -> Any:
        (_, epoch, position), _ = keyed_examples[0]  # the batch's first example names it
        examples = [example for _, example in keyed_examples]
        batch_seed = derive_seed(self.seed, epoch, position)
        if self.pass_generator:
            return self.collate_fn(examples, generator=torch.Generator().manual_seed(batch_seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            return self.collate_fn(examples)


def make_dataloader(
    dataset: Any,
    collate_fn: Callable,
    batch_size: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    num_workers: int = 0,
    group_by_length: bool = False,
) -> DataLoader:
    """A DataLoader whose order and collation randomness are functions of (seed, epoch, position).

    Its own torch.Generator keeps it from drawing on the global generator
    (a DataLoader draws a base seed each epoch), which dropout uses. With
    group_by_length (training only), batches hold examples of similar length.
    """
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError(
            "train() needs a map-style dataset (len() and dataset[i]), e.g. a list of dicts or a "
            "datasets.Dataset: an iterable dataset cannot be shuffled or resumed reproducibly."
        )
    if group_by_length and shuffle:
        sampler = LengthGroupedEpochSampler(example_lengths(dataset), batch_size, seed)
    else:
        sampler = EpochSampler(len(dataset), seed, shuffle)
    return DataLoader(
        KeyedDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=SeededCollate(collate_fn, seed),
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
