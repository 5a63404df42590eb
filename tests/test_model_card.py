"""scripts/model_card.py: a student's row (parameters, MACs, estimator, latency), the latency budget and the
README block."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from tests.helpers import REPO


def load_model_card():
    path = REPO / 'scripts' / 'model_card.py'
    spec = importlib.util.spec_from_file_location('model_card', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def conv_macs(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions in one forward pass, counted with hooks."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = module.weight.shape[2] * module.weight.shape[3]
        total += output.numel() * (module.in_channels // module.groups) * kernel
    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    return total


def test_model_card_row_for_a_tiny_student():
    for package in ('onnx', 'onnxruntime', 'onnxscript'):  # the row counts the exported graph's weights
        pytest.importorskip(package)
    card = load_model_card()
    spec = card.StudentSpec('tiny IMDN', {'type': 'IMDN', 'num_feat': 8, 'num_block': 3, 'upscale': 2},
                            '8 channels', scale=2)
    settings = card.Settings(lr_size=(12, 20), runs=2, train_batch=2, train_patch=16, train_repeats=1)
    row = card.measure(spec, settings)
    net = ARCH_REGISTRY.get('IMDN')(num_feat=8, num_block=3, upscale=2)
    assert row.parameters == sum(p.numel() for p in net.parameters())
    assert row.macs == conv_macs(net, torch.zeros(1, 3, 12, 20))
    estimator = ARCH_REGISTRY.get('IBEstimator')(channels=[8, 8, 8, 8])  # fea_conv, IMDB1, IMDB2, IMDB3
    assert row.estimator == sum(p.numel() for p in estimator.parameters())
    assert row.inference_extra == 0 and row.graph_parameters == row.parameters and not row.remarks
    assert len(row.latency) == 2 and row.step_ratio > 0

    text = card.table([row], settings)
    assert f'torch {torch.__version__}' in text and f', {torch.get_num_threads()} thread' in text
    assert f'| tiny IMDN | 8 channels | {row.parameters:,} | {row.macs / 1e9:.1f} |' in text
    assert f'| {row.estimator:,} |' in text


def test_model_card_latency_budget_and_readme_block():
    card = load_model_card()
    net = torch.nn.Conv2d(3, 3, 3)
    assert len(card.latency(net, torch.zeros(1, 3, 8, 8), runs=5, budget=0)) == 1
    assert len(card.latency(net, torch.zeros(1, 3, 8, 8), runs=3, budget=60)) == 3
    readme = f'# x\n\nbefore\n{card.START}\nold table\n{card.END}\nafter\n'
    assert card.replace_block(readme, '| new |\n') == f'# x\n\nbefore\n{card.START}\n| new |\n{card.END}\nafter\n'
    with pytest.raises(ValueError, match='model-card:start'):
        card.replace_block('# no markers\n', '| new |\n')
