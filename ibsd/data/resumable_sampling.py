"""Training samples that are a function of their place in the schedule, so that a run resumes anywhere.

basicsr's training data depend on hidden state: the random crop and flips draw from the global
``random`` stream (or from each worker's stream, which basicsr re-seeds every epoch and which then
depends on how many samples that worker has made), and a resumed run restarts the saved epoch
from its first batch. A state saved mid-epoch therefore resumes to other batches than the
uninterrupted run. Here:

- :class:`ResumableSampler` (basicsr's ``EnlargedSampler`` order, unchanged) yields a
  :class:`SampleKey` ``(epoch, position, index)`` and can start an epoch part-way;
- :class:`PositionSeededDataset` draws each sample's augmentation from streams seeded by
  ``(manual_seed, epoch, position)`` and puts the caller's streams back afterwards,

so a batch depends only on the seed and on where it falls, whatever the number of workers, and a
state saved at any iteration resumes to the weights of the uninterrupted run.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator, NamedTuple

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset


class SampleKey(NamedTuple):
    """What :class:`ResumableSampler` yields: the epoch, the sample's global position in it, the index."""
    epoch: int
    position: int
    index: int


@contextlib.contextmanager
def seeded_streams(*entropy: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU global streams seeded from ``entropy``, restored on exit.

    Only the CPU torch generator is touched (``torch.manual_seed`` would also re-seed every CUDA
    generator of the process).
    """
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    words = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2)
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(int(words[0]))
    torch.random.default_generator.manual_seed(int(words[1]))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class PositionSeededDataset(Dataset):
    """A training data set whose sample at a :class:`SampleKey` is drawn from streams seeded by that key.

    Other attributes are the wrapped data set's. ``seed`` is the run's ``manual_seed``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ('dataset', 'seed'):  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, SampleKey):
            return self.dataset[key]
        with seeded_streams(self.seed, key.epoch, key.position):
            return self.dataset[key.index]


class ResumableSampler(EnlargedSampler):
    """basicsr's ``EnlargedSampler`` (same order per epoch) yielding :class:`SampleKey` s, able to start
    an epoch after its first ``samples`` samples (:meth:`start_part_way`)."""

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1):
        super().__init__(dataset, num_replicas, rank, ratio)
        self._part_way: tuple[int, int] | None = None

    def start_part_way(self, epoch: int, samples: int) -> None:
        """Passes over ``epoch`` skip this rank's first ``samples`` samples, until another epoch is set.

        Every pass, not only the first: basicsr's prefetcher makes (and drops) an iterator before the
        loop sets the epoch, and with workers an iterator starts drawing indices when it is made.
        """
        self._part_way = (epoch, samples)

    def set_epoch(self, epoch: int) -> None:
        if self._part_way is not None and self._part_way[0] != epoch:
            self._part_way = None
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(super().__iter__())
        skip = 0
        if self._part_way is not None and self._part_way[0] == self.epoch:
            skip = self._part_way[1]
        for offset in range(skip, len(indices)):
            yield SampleKey(self.epoch, self.rank + offset * self.num_replicas, indices[offset])
