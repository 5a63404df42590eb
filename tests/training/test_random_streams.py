"""Every rank's random streams: saved in the training state, one per rank, and each rank resumes its own."""
from __future__ import annotations

from copy import deepcopy

import torch
from basicsr.models import build_model

from ibsd.training.random_streams import pick_random_states, random_states
from tests.helpers import feed, make_opt


def test_each_rank_resumes_its_own_random_streams():
    first, second = random_states(), (torch.manual_seed(123), random_states())[1]
    saved = [first, second]
    assert pick_random_states(saved, 1) is second and pick_random_states(saved, 0) is first
    assert pick_random_states(first, 0) is first  # states written by one process before per-rank saving
    assert pick_random_states(first, 3) is None  # more ranks than saved: keep the seeded streams
    assert pick_random_states(saved, 2) is None


def test_training_state_holds_the_random_states_per_rank(tmp_path):
    model = build_model(make_opt(tmp_path))
    feed(model)
    model.optimize_parameters(1)
    (tmp_path / 'states').mkdir()
    model.save_training_state(0, 1)
    state = torch.load(tmp_path / 'states' / '1.state', weights_only=False)
    expected = deepcopy(random_states())
    assert len(state['ibsd']['random']) == 1
    assert torch.equal(state['ibsd']['random'][0]['torch'], expected['torch'])
