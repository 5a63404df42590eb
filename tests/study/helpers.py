"""Helpers of the study tests: a tiny study file over a base option file, and score tables."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ibsd.errors import OptionError
from ibsd.study.spec import load_study, run_options
from tests.helpers import ibsd_options, write_yaml


def study_file(root: Path, **changes) -> Path:
    opt = ibsd_options('base', Path('data'), 4)
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(dataroot_gt=f'data/{phase}/hr', dataroot_lq=f'data/{phase}/lr')
    opt['val']['val_freq'] = 2
    opt['logger']['print_freq'] = 1
    write_yaml(root / 'base.yml', opt)
    study = {'name': 'tiny', 'base': 'base.yml', 'variants': {'L1': {'plain': True}, 'IBSD': {}}, 'baseline': 'L1',
             'seeds': [0, 1], 'eval_iters': [2],
             'test_sets': {'val set': {'dataroot_gt': 'data/val/hr', 'dataroot_lq': 'data/val/lr'},
                           'other': {'dataroot_gt': 'data/other/hr', 'dataroot_lq': 'data/other/lr'}},
             'parallel': 2, 'threads': 2, 'crop_size': 16, **changes}
    return write_yaml(root / 'study.yml', study)


def assert_study_error(root: Path, changes: dict, message: str) -> None:
    """The study file ``study_file(root, **changes)`` is refused, with ``message`` in the error."""
    path = study_file(root, **changes)
    with pytest.raises(OptionError, match=re.escape(message)):
        study = load_study(path)
        for run in study.runs:
            run_options(study, run, root)


def table(values: dict[str, float]) -> dict:
    return {image: {'psnr': value, 'ssim': 0.5} for image, value in values.items()}
