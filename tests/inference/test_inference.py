"""ibsd.inference: network building and loading with explicit arguments, the size rule, one image through it all."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.inference import (InferenceError, PaddedToMultiple, Upscaler, build_network, load_network, network_spec,
                            padded_to_multiple, parse_arch_options, round_down, round_up, size_multiple)
from tests.helpers import REPO, SWINIR, nearest_rfdn

swinir_warnings = pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')  # basicsr's SwinIR


def imported_modules(path: Path) -> set[str]:
    """The modules a source file imports (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


@pytest.mark.parametrize('package, forbidden', [
    ('inference', ('ibsd.infer', 'ibsd.export', 'ibsd.study', 'ibsd.models')),
    ('export', ('ibsd.infer', 'ibsd.study', 'ibsd.models')),
])
def test_no_module_imports_upwards(package, forbidden):
    files = sorted((REPO / 'ibsd' / package).glob('*.py'))
    assert files
    for path in files:
        bad = {name for name in imported_modules(path)
               if any(name == top or name.startswith(top + '.') for top in forbidden)}
        assert not bad, f'{path.relative_to(REPO)} imports {sorted(bad)}'


def test_network_spec_from_an_arch_or_a_network_g():
    spec = network_spec(arch='IMDN', arch_kwargs={'num_feat': 8})
    assert spec.options == {'type': 'IMDN', 'num_feat': 8, 'upscale': 4} and spec.explicit == {'num_feat'}
    assert network_spec(arch='IMDN', scale=2).options['upscale'] == 2
    assert 'upscale' not in network_spec(arch='IMDN_AS', scale=2).options  # same-size: no scale keyword
    spec = network_spec({'type': 'RFDN', 'num_feat': 8, 'img_range': 255.}, scale=4)
    assert spec.explicit == {'num_feat', 'img_range'} and spec.scale == 4
    with pytest.raises(ValueError, match='network_g or arch'):
        network_spec({'type': 'IMDN'}, arch='IMDN')
    with pytest.raises(InferenceError, match="unknown arch 'Nope'; registered archs: .*IMDN"):
        network_spec(arch='Nope')
    with pytest.raises(InferenceError, match='cannot build IMDN'):
        build_network(network_spec(arch='IMDN', arch_kwargs={'no_such_keyword': 1}))
    assert parse_arch_options(['num_feat=8', 'depths=[1, 2]', 'upsampler=pixelshuffledirect']) == {
        'num_feat': 8, 'depths': [1, 2], 'upsampler': 'pixelshuffledirect'}
    with pytest.raises(InferenceError, match="--arch-opt expects KEY=VALUE, got 'num_feat'"):
        parse_arch_options(['num_feat'])


def test_load_network_prefers_the_key_and_decides_the_pre_upscale(tmp_path):
    torch.manual_seed(0)
    plain, ema = IMDN(num_feat=8, num_block=1, upscale=2), IMDN(num_feat=8, num_block=1, upscale=2)
    path = tmp_path / 'net_g_latest.pth'
    torch.save({'params': plain.state_dict(), 'params_ema': ema.state_dict()}, path)
    spec = network_spec(arch='IMDN', arch_kwargs={'num_feat': 8, 'num_block': 1}, scale=2)
    for key, source in (('params_ema', ema), ('params', plain)):
        loaded = load_network(spec, path, param_key=key)
        assert all(torch.equal(a, b) for a, b in zip(loaded.net.state_dict().values(), source.state_dict().values()))
        assert not loaded.net.training and (loaded.native_scale, loaded.pre_scale, loaded.scale) == (2, 1, 2)

    torch.save(IMDN_AS(num_feat=8, num_block=1).state_dict(), tmp_path / 'as.pth')
    lines = []
    loaded = load_network(network_spec(arch='IMDN_AS', arch_kwargs={'num_feat': 8, 'num_block': 1}, scale=3),
                          tmp_path / 'as.pth', log=lines.append)
    assert (loaded.native_scale, loaded.pre_scale, loaded.scale) == (1, 3, 3)
    assert 'IMDN_AS keeps the input size: inputs get a bicubic x3 upscale first' in lines
    with pytest.raises(InferenceError, match='missing.pth'):
        load_network(spec, tmp_path / 'missing.pth')


def test_pixel_range_detection_is_on_unless_turned_off(tmp_path):
    path = nearest_rfdn(tmp_path / 'range255.pth', bias=1.)
    spec = network_spec(arch='RFDN', arch_kwargs={'num_feat': 8, 'num_block': 1, 'attention': 'cca'})
    lines = []
    assert load_network(spec, path, log=lines.append).net.img_range == 255
    assert any('range255.pth expects pixel values 0-255: using img_range=255' in line for line in lines)
    assert load_network(spec, path, detect_pixel_range=False).net.img_range == 1


def test_rounding_and_padding_rule():
    assert (round_up(13, 4), round_up(12, 4), round_down(13, 4), round_down(3, 4)) == (16, 12, 12, 0)
    identity = torch.nn.Identity()
    assert padded_to_multiple(identity, 1) is identity
    wrapped = padded_to_multiple(identity, 4)
    assert isinstance(wrapped, PaddedToMultiple)
    x = torch.rand(1, 3, 6, 7)
    assert torch.equal(wrapped(x), x)  # padded to 8x8, then cropped back
    with pytest.raises(ValueError, match='multiple'):
        PaddedToMultiple(identity, 0)


@swinir_warnings
def test_upscaler_pads_swinir_whole_and_tiled(tmp_path, one_thread):
    from basicsr.archs.swinir_arch import SwinIR
    torch.manual_seed(0)
    torch.save(SwinIR(**SWINIR).state_dict(), tmp_path / 'swinir.pth')
    loaded = load_network(network_spec({'type': 'SwinIR', **SWINIR}), tmp_path / 'swinir.pth')
    assert loaded.multiple == size_multiple(loaded.net) == 4
    seen = []
    loaded.net.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape[2:])))
    rgb = np.random.default_rng(0).random((10, 13, 3), dtype=np.float32)
    whole = Upscaler.of(loaded)(rgb)
    assert whole.shape == (20, 26, 3) and seen == [(12, 16)]
    with torch.no_grad():
        expected = PaddedToMultiple(loaded.net, 4)(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    np.testing.assert_allclose(whole, expected.clamp(0, 1)[0].permute(1, 2, 0).numpy(), atol=1e-6)
    seen.clear()
    tiled = Upscaler.of(loaded, tile=6, tile_pad=2)(rgb)
    assert tiled.shape == (20, 26, 3) and len(seen) == 6
    assert all(height % 4 == 0 and width % 4 == 0 for height, width in seen)


@swinir_warnings
def test_a_window_the_probe_pattern_is_no_multiple_of(tmp_path, one_thread):
    """The 48x48 probe pattern is padded as every input is: a SwinIR with window 5 loads."""
    from basicsr.archs.swinir_arch import SwinIR
    options = {**SWINIR, 'window_size': 5, 'img_size': 10}
    torch.manual_seed(0)
    torch.save(SwinIR(**options).state_dict(), tmp_path / 'swinir5.pth')
    loaded = load_network(network_spec({'type': 'SwinIR', **options}), tmp_path / 'swinir5.pth')
    assert (loaded.multiple, loaded.native_scale) == (5, 2)
