"""Progressive soft targets: alpha's ramp, the snapshot and EMA teachers, and their options in IBSDModel."""
from __future__ import annotations

import logging

import pytest
import torch
from basicsr.models import build_model

from ibsd.archs.imdn_arch import IMDN
from ibsd.models.soft_target import ProgressiveSoftTarget
from tests.helpers import IMDN_SMALL, feed, make_opt


def test_alpha_rises_linearly_and_snapshot_refreshes_per_period():
    target = ProgressiveSoftTarget('snapshot', alpha_max=0.8, ramp_iters=4, refresh_iters=2,
                                   build_student=lambda: IMDN(**{k: v for k, v in IMDN_SMALL.items() if k != 'type'}))
    assert [target.alpha(t) for t in (0, 1, 2, 4, 9)] == pytest.approx([0, 0.2, 0.4, 0.8, 0.8])
    later = ProgressiveSoftTarget('ema', alpha_max=0.5, ramp_iters=4, refresh_iters=None, build_student=None,
                                  start_iters=10)
    assert [later.alpha(t) for t in (0, 10, 12, 14, 99)] == pytest.approx([0, 0, 0.25, 0.5, 0.5])
    student = IMDN(**{k: v for k, v in IMDN_SMALL.items() if k != 'type'})
    lq, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    for t in (1, 2):
        target.refresh_if_due(t, student)
    assert target.snapshot is None and target.target(2, lq, hr)[0] is hr  # no teacher yet: HR
    target.refresh_if_due(3, student)  # two iterations done: first snapshot
    assert target.snapshot_iter == 2
    with torch.no_grad():
        student.fea_conv.weight.add_(1.)  # the student moves on, the snapshot does not
        teacher = target.snapshot(lq)
        expected = 0.4 * hr + 0.6 * teacher  # alpha(3) = 0.6
    mixed, alpha = target.target(3, lq, hr)
    assert alpha == pytest.approx(0.6) and torch.allclose(mixed, expected)
    assert not torch.allclose(teacher, student(lq))
    target.refresh_if_due(5, student)
    assert target.snapshot_iter == 4 and torch.equal(target.snapshot.fea_conv.weight, student.fea_conv.weight)


def test_ema_source_and_no_current_output_source(tmp_path):
    hr = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="source 'current' is not offered: with the L1 wavelet loss"):
        ProgressiveSoftTarget('current', 1.0, 1, None, build_student=lambda: None)
    with pytest.raises(ValueError, match='ema_decay'):
        ProgressiveSoftTarget('ema', 0.5, 1, None, build_student=lambda: None).target(1, None, hr)
    model = build_model(make_opt(tmp_path, ema_decay=0.9, soft_target={'source': 'ema', 'ramp_iters': 1}))
    feed(model)
    model.optimize_parameters(1)
    assert model.get_current_log()['alpha'] == pytest.approx(0.8)


@pytest.mark.parametrize('options, message', [
    ({'source': 'bank'}, 'source'), ({'alpha_max': 1.5}, 'alpha_max'), ({'refresh_iters': 0}, 'refresh_iters')])
def test_bad_soft_target_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=f'train:soft_target:{message}'):
        build_model(make_opt(tmp_path, soft_target=options))


def test_snapshot_period_defaults_to_the_epoch_known_to_the_pipeline(tmp_path):
    opt = make_opt(tmp_path, soft_target={'source': 'snapshot'})
    with pytest.raises(ValueError, match='set refresh_iters'):
        build_model(opt)
    opt['iters_per_epoch'] = 37
    assert build_model(opt).soft_target.refresh_iters == 37


def test_an_epoch_of_a_few_iterations_as_snapshot_period_is_warned_about(tmp_path, caplog):
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        for epoch in (2, 20):
            opt = make_opt(tmp_path, soft_target={'source': 'snapshot'})
            opt['iters_per_epoch'] = epoch
            build_model(opt)
        opt = make_opt(tmp_path, soft_target={'source': 'snapshot', 'refresh_iters': 2})
        opt['iters_per_epoch'] = 2
        build_model(opt)  # a period the user chose: no warning
    finally:
        logger.removeHandler(caplog.handler)
    warnings = [r.getMessage() for r in caplog.records if 'refreshed every epoch' in r.getMessage()]
    assert len(warnings) == 1 and 'which is 2 iteration(s) here' in warnings[0]
    assert 'train:soft_target:refresh_iters' in warnings[0]


def test_start_iters_delays_the_ramp_which_then_spans_the_remaining_iterations(tmp_path):
    opt = make_opt(tmp_path, soft_target={'source': 'snapshot', 'alpha_max': 0.8, 'refresh_iters': 2,
                                          'start_iters': '6'})
    opt['train']['total_iter'] = 10
    model = build_model(opt)
    assert model.soft_target.start_iters == 6 and model.soft_target.ramp_iters == 4
    assert model.soft_target.alpha(6) == 0 and model.soft_target.alpha(8) == pytest.approx(0.4)
