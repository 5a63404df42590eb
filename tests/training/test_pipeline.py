"""What ibsd.training.pipeline adds to BasicSR's option parsing."""
from __future__ import annotations

import sys

import pytest

import basicsr.test


def test_validation_suffix_gets_a_default(tmp_path, monkeypatch):
    opt_file = tmp_path / 'test.yml'
    opt_file.write_text('name: t\nmodel_type: SRModel\nscale: 2\nnum_gpu: 0\ndatasets: {}\n'
                        'network_g: {type: IMDN}\npath: {allow_untrained: true}\nval: {save_img: true}\n')
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(opt_file)])
    opt, _ = basicsr.test.parse_options(str(tmp_path), is_train=False)
    assert opt['val']['suffix'] is None
    with pytest.raises(KeyError):
        monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(opt_file)])
        basicsr.test.parse_options.__wrapped__(str(tmp_path), is_train=False)[0]['val']['suffix']
