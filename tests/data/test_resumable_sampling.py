"""Training samples as a function of (seed, epoch, position); epochs that start part-way."""
from __future__ import annotations

import random

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler

from ibsd.data.resumable_sampling import PositionSeededDataset, ResumableSampler, SampleKey


class RandomCrops(torch.utils.data.Dataset):
    """Draws from all three global streams, as basicsr's augmentations (and custom ones) do."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple:
        return index, random.random(), float(np.random.rand()), float(torch.rand(()))


def test_the_order_is_basicsrs_and_each_key_names_its_global_position():
    data = list(range(10))
    for rank in (0, 1):
        ours, theirs = ResumableSampler(data, 2, rank, ratio=2), EnlargedSampler(data, 2, rank, ratio=2)
        ours.set_epoch(3)
        theirs.set_epoch(3)
        keys = list(ours)
        assert [k.index for k in keys] == list(theirs)
        assert [k.position for k in keys] == list(range(rank, 20, 2)) and {k.epoch for k in keys} == {3}


def test_an_epoch_starts_part_way_on_every_pass_until_the_next_epoch():
    sampler = ResumableSampler(list(range(8)), 1, 0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.start_part_way(2, 3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full[3:]  # a dropped iterator (basicsr's prefetcher makes one) takes nothing away
    sampler.set_epoch(3)
    assert len(list(sampler)) == 8
    sampler.set_epoch(2)
    assert list(sampler) == full


def test_a_sample_depends_on_its_key_only_and_leaves_the_callers_streams_alone():
    dataset = PositionSeededDataset(RandomCrops(), seed=7)
    key = SampleKey(epoch=1, position=4, index=2)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    first = dataset[key]
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    assert dataset[key] == first
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == after
    assert dataset[SampleKey(2, 4, 2)] != first and dataset[SampleKey(1, 5, 2)] != first
    assert PositionSeededDataset(RandomCrops(), seed=8)[key] != first
    assert dataset[3][0] == 3 and len(dataset) == 5  # plain indices (validation) pass through
