"""ibsd-export: every built-in student as ONNX (dynamic sizes) and TorchScript, parity with PyTorch, errors."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402
from ibsd import export  # noqa: E402
from ibsd.archs.checkpoint import load_pretrained  # noqa: E402
from ibsd.inference import bicubic  # noqa: E402
from tests.helpers import shared_path  # noqa: E402

EXPORT = Path(sysconfig.get_path('scripts')) / 'ibsd-export'
STUDENTS = {
    # name: (arch options, scale of the exported graph)
    'IMDN': ({'num_feat': 16, 'num_block': 2, 'upscale': 3}, 3),
    'IMDN_AS': ({'num_feat': 16, 'num_block': 2}, 1),
    'RFDN': ({'num_feat': 16, 'num_block': 2, 'upscale': 2}, 2),
    'RFDN-cca-shared': ({'num_feat': 12, 'num_block': 5, 'upscale': 4, 'attention': 'cca', 'share_block4': True}, 4),
    'OmniSR': ({'num_feat': 8, 'res_num': 1, 'upsampling': 2}, 2),
    'HGSR_MHR': ({'nf': 8, 'n_HG': 4, 'n_mid': 1, 'n_tail': 1, 'upscale': 2}, 2),
}
"""Tiny configurations of the built-in students (the RFDN variant of the IBSD authors with its block reuse)."""
SIZES = [(1, 32, 40), (2, 27, 45)]
"""ONNX is run at two sizes other than the traced one (one of them a batch of two), TorchScript at a third."""
TORCHSCRIPT_SIZE = (1, 41, 23)


def arch_name(case: str) -> str:
    return case.split('-')[0]


def tiny(case: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    options, _ = STUDENTS[case]
    return ARCH_REGISTRY.get(arch_name(case))(**options).eval()


def arch_args(case: str) -> list[str]:
    options, _ = STUDENTS[case]
    args = ['--arch', arch_name(case)]
    for key, value in options.items():
        args += ['--arch-opt', f'{key}={value}']
    return args


def save_basicsr(net: torch.nn.Module, path: Path) -> Path:
    """A checkpoint as BasicSR saves it (``params`` and ``params_ema``)."""
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path


def export_here(capsys, *args) -> tuple[int, str, str]:
    status = export.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    dtype = np.float16 if session.get_inputs()[0].type == 'tensor(float16)' else np.float32
    return session.run(None, {'input': x.numpy().astype(dtype)})[0].astype(np.float32)


def random_input(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def torchscript_load(path: Path) -> torch.jit.ScriptModule:
    with pytest.warns(Warning, match='torch.jit.load'):
        return torch.jit.load(str(path))


LARGE_GRAPHS = {'HGSR_MHR'}
"""Students whose export takes tens of seconds even in a tiny configuration (graph size, not width)."""


@pytest.mark.parametrize('case', [pytest.param(case, marks=pytest.mark.slow) if case in LARGE_GRAPHS else case
                                  for case in sorted(STUDENTS)])
def test_student_exports_with_dynamic_sizes(case, tmp_path, capsys):
    net = tiny(case)
    checkpoint = save_basicsr(net, tmp_path / 'net_g_latest.pth')
    status, out, err = export_here(capsys, *arch_args(case), '--model-path', checkpoint,
                                   '-o', tmp_path / 'student.onnx')
    assert status == 0, err
    assert 'wrote' in out and 'dynamic batch/height/width' in out and 'MiB' in out
    _, scale = STUDENTS[case]

    model = onnx.load(str(tmp_path / 'student.onnx'))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [dims[i].dim_param for i in (0, 2, 3)] == ['batch', 'height', 'width']
    assert not list(tmp_path.glob('*.data')), 'the weights belong inside the .onnx file'
    for batch, height, width in SIZES:
        x = random_input(batch, height, width)
        with torch.no_grad():
            expected = net(x).numpy()
        got = ort_run(tmp_path / 'student.onnx', x)
        assert got.shape == (batch, 3, height * scale, width * scale)
        assert np.abs(got - expected).max() < 1e-4

    traced = torchscript_load(tmp_path / 'student.torchscript.pt')
    x = random_input(*TORCHSCRIPT_SIZE, seed=2)
    with torch.no_grad():
        assert torch.allclose(traced(x), net(x), atol=1e-5, rtol=0)


def test_graph_holds_exactly_the_students_parameters(tmp_path):
    net = tiny('RFDN-cca-shared')
    done = export.export_onnx(net, export.example_input(), tmp_path / 'rfdn.onnx', optimize=False)
    weights = export.graph_weights(done.path, net)
    unused = sum(p.numel() for p in net.B5.parameters())  # share_block4: B5 never runs
    assert weights.parameters == sum(p.numel() for p in net.parameters())
    assert unused > 0 and weights.unused == unused and weights.stored == weights.parameters - unused
    assert weights.extra == 0

    options, _ = STUDENTS['IMDN']

    class WithExtra(ARCH_REGISTRY.get('IMDN')):  # a student that carries a training-only module into its forward
        def __init__(self):
            super().__init__(**options)
            self.extra = torch.nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return super().forward(self.extra(x))
    path = export.export_onnx(WithExtra().eval(), export.example_input(), tmp_path / 'extra.onnx', optimize=False).path
    weights = export.graph_weights(path, tiny('IMDN'))
    assert weights.extra == 12 and weights.stored == weights.parameters  # the conv's 9 weights and 3 biases


def test_fp16_onnx(tmp_path, capsys):
    net = tiny('IMDN')
    checkpoint = save_basicsr(net, tmp_path / 'net.pth')
    status, out, err = export_here(capsys, *arch_args('IMDN'), '--model-path', checkpoint, '-o', tmp_path / 'a.onnx',
                                   '--fp16', '--no-torchscript')
    assert status == 0, err
    assert 'ONNX fp16' in out and not (tmp_path / 'a.torchscript.pt').exists()
    model = onnx.load(str(tmp_path / 'a_fp16.onnx'))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = random_input(1, 30, 36)
    with torch.no_grad():
        expected = net(x).numpy()
    diff = np.abs(ort_run(tmp_path / 'a_fp16.onnx', x) - expected).max()
    assert 0 < diff < export.DEFAULT_FP16_ATOL


def test_torchscript_based_exporter_and_fallback(tmp_path, monkeypatch):
    net = tiny('IMDN_AS')
    done = export.export_onnx(net, export.example_input(), tmp_path / 'ts.onnx', exporter='torchscript')
    assert done.exporter == 'torchscript' and done.opset
    x = random_input(2, 36, 20)  # no padding needed here: the traced example needed it
    with torch.no_grad():
        assert np.abs(ort_run(done.path, x) - net(x).numpy()).max() < 1e-4

    def broken(*args, **kwargs):
        raise RuntimeError('no dynamo today\nsecond line')
    monkeypatch.setattr('ibsd.export.onnx.export_dynamo', broken)
    done = export.export_onnx(net, export.example_input(), tmp_path / 'auto.onnx')
    assert done.exporter == 'torchscript'
    assert any('dynamo exporter: no dynamo today' in note for note in done.notes)
    monkeypatch.setattr('ibsd.export.onnx.export_torchscript_onnx', broken)
    with pytest.raises(export.ExportError, match='cannot export IMDN_AS to ONNX'):
        export.export_onnx(net, export.example_input(), tmp_path / 'none.onnx')


def test_same_size_network_with_a_scale_exports_the_bicubic_upscale(tmp_path, capsys):
    net = tiny('IMDN_AS')
    checkpoint = save_basicsr(net, tmp_path / 'as.pth')
    status, out, err = export_here(capsys, *arch_args('IMDN_AS'), '--scale', '2', '--model-path', checkpoint,
                                   '-o', tmp_path / 'as.onnx', '--no-torchscript')
    assert status == 0, err
    assert 'IMDN_AS x2' in out
    x = random_input(1, 21, 26)
    with torch.no_grad():
        expected = net(bicubic(x, 2)).numpy()
    got = ort_run(tmp_path / 'as.onnx', x)
    assert got.shape == (1, 3, 42, 52) and np.abs(got - expected).max() < 1e-4


class Windows(torch.nn.Module):
    """A network that takes only sides that are multiples of 8 (as BasicSR's SwinIR)."""

    def forward(self, x):
        batch, channels, height, width = x.shape
        return x.view(batch, channels, height // 8, 8, width // 8, 8).flip(3).reshape(x.shape)


def test_size_multiple(tmp_path):
    assert export.example_input(multiple=8).shape[2:] == (56, 48)
    crops = export.synthetic_inputs(0, 8)
    assert all(x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0 for _, x in crops)
    assert [x.shape for _, x in export.synthetic_inputs(0)][0] == (1, 3, 48, 64)
    with pytest.raises(export.ExportError, match=r'itself fails on synthetic .*give --size-multiple N'):
        export.verify(Windows(), [], export.synthetic_inputs(0))
    export.verify(Windows(), [], crops)


def test_broken_comparison_fails(tmp_path):
    """The check compares with the network it was given: the export of a slightly different one fails."""
    net = tiny('IMDN')
    path = export.export_onnx(net, export.example_input(), tmp_path / 'a.onnx').path
    inputs = export.with_batch(export.synthetic_inputs(0))
    same = export.Check('ONNX', path, export.onnx_runner, 1e-4)
    export.verify(net, [same], inputs)
    assert not same.failed() and len(same.diffs) == len(inputs) and max(same.diffs) < 1e-5

    other = tiny('IMDN')
    with torch.no_grad():
        other.upsampler[0].bias.add_(3e-4)  # every output pixel moves by 3e-4
    check = export.Check('ONNX', path, export.onnx_runner, 1e-4)
    export.verify(other, [check], inputs)
    assert check.failed()
    assert all(abs(d - 3e-4) < 1e-5 for d in check.diffs)
    message = export.failure_message([check], inputs)
    assert 'ONNX output differs from PyTorch by 3.00e-04' in message and 'tolerance 0.0001' in message
    loose = export.Check('ONNX', path, export.onnx_runner, 1e-3)
    export.verify(other, [loose], inputs)
    assert not loose.failed()


def test_failed_verification_writes_nothing(tmp_path, capsys, monkeypatch):
    checkpoint = save_basicsr(tiny('IMDN'), tmp_path / 'net.pth')
    runner = export.onnx_runner
    monkeypatch.setattr('ibsd.export.cli.onnx_runner', lambda path: (lambda x: runner(path)(x) + 1e-3))
    out_dir = tmp_path / 'out'
    status, out, err = export_here(capsys, *arch_args('IMDN'), '--model-path', checkpoint, '-o', out_dir / 'a.onnx')
    assert status == 1
    assert err.strip().splitlines()[-1].startswith('ibsd-export: error: verification failed: ONNX output differs')
    assert 'nothing written' in err
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no file, no temporary folder
    assert 'synthetic 64x48' in out  # the table was printed


def test_real_images_verify(tmp_path, capsys):
    folder = shared_path('benchmarks', 'Set5', 'LR_bicubic', 'x4')
    checkpoint = save_basicsr(tiny('RFDN'), tmp_path / 'net.pth')
    status, out, err = export_here(capsys, *arch_args('RFDN'), '--model-path', checkpoint, '-o', tmp_path / 'r.onnx',
                                   '--verify-images', folder, '--verify-size', '40', '--no-torchscript')
    assert status == 0, err
    rows = [line for line in out.splitlines() if 'x4.bmp' in line]
    assert len(rows) == 6  # five images and a batch of two
    assert 'babyx4.bmp 40x40' in out and 'womanx4.bmp 40x40' in out
    assert all(float(row.split()[-1]) < 1e-4 for row in rows)
    inputs = export.image_inputs(str(folder), 100, 8)  # --size-multiple 8: sides rounded down to multiples of 8
    assert [tuple(x.shape[2:]) for _, x in inputs] == [(96, 96), (72, 72), (64, 64), (64, 64), (80, 56)]


@pytest.mark.slow
@pytest.mark.parametrize('weights, arch, range_note', [('IMDN_x4.pth', 'IMDN', None),
                                                      ('RFDN_AIM.pth', 'RFDN', 'expects pixel values 0-255')])
def test_official_weights(weights, arch, range_note, tmp_path, capsys):
    path = shared_path('weights', weights)
    folder = shared_path('benchmarks', 'Set5', 'LR_bicubic', 'x4')
    status, out, err = export_here(capsys, '--arch', arch, '--model-path', path, '-o', tmp_path / 'o.onnx', '--fp16',
                                   '--verify-images', folder)
    assert status == 0, err
    assert f'{arch} x4' in out and 'by the dynamo exporter' in out
    assert range_note is None or range_note in err
    rows = [line.split() for line in out.splitlines() if 'x4.bmp' in line]
    assert len(rows) == 6
    assert all(float(row[-3]) < 1e-4 and float(row[-2]) < export.DEFAULT_FP16_ATOL and float(row[-1]) < 1e-4
               for row in rows)
    # the file alone (onnxruntime, no ibsd) upscales a Set5 image as the PyTorch network does
    torch_net = ARCH_REGISTRY.get(arch)(**({'img_range': 255} if arch == 'RFDN' else {}))
    load_pretrained(torch_net, str(path))
    image = export.image_inputs(str(folder / 'birdx4.bmp'), 256)[0][1]
    with torch.no_grad():
        expected = torch_net.eval()(image).numpy()
    got = ort_run(tmp_path / 'o.onnx', image)
    assert got.shape == (1, 3, 288, 288) and np.abs(got - expected).max() < 1e-4


def error_line(err: str, alone: bool = True) -> str:
    """The error line of stderr; ``alone``: it is all there is (else log lines such as warnings may precede it)."""
    lines = err.strip().splitlines()
    assert lines and (len(lines) == 1 or not alone), lines
    assert lines[-1].startswith('ibsd-export: error: ')
    assert sum(line.startswith('ibsd-export: error') for line in lines) == 1
    return lines[-1]


def test_bad_inputs_give_one_line(tmp_path, capsys):
    good = save_basicsr(tiny('IMDN'), tmp_path / 'net.pth')
    base = arch_args('IMDN') + ['-o', tmp_path / 'x.onnx']
    state = tmp_path / '400.state'
    torch.save({'optimizers': [{}], 'schedulers': [{}], 'iter': 400}, state)
    no_network = tmp_path / 'plain.yml'
    no_network.write_text(yaml.safe_dump({'name': 'x', 'scale': 4}))
    empty = tmp_path / 'empty'
    empty.mkdir()
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'a.png').write_bytes(b'not a png')
    cases = [
        (base + ['--model-path', tmp_path / 'missing.pth'], 'missing.pth'),
        (base + ['--model-path', state], 'is a training state'),
        (['--arch', 'IMDN', '--arch-opt', 'num_feat=8', '--model-path', good, '-o', tmp_path / 'x.onnx'],
         'holds weights for a different network'),
        (['--arch', 'NoSuchNet', '--model-path', good], "unknown arch 'NoSuchNet'"),
        (['-opt', no_network, '--model-path', good], 'has no network_g'),
        (base + ['--model-path', good, '--verify-images', tmp_path / 'nowhere'], '--verify-images: input'),
        (base + ['--model-path', good, '--verify-images', empty], '--verify-images: no images in'),
        (base + ['--model-path', good, '--verify-images', broken], 'cannot read'),
    ]
    for args, expected in cases:
        status, out, err = export_here(capsys, *args)
        assert status == 1, (args, out, err)
        assert expected in error_line(err), err
    assert not (tmp_path / 'x.onnx').exists()


def test_unwritable_output_folder(tmp_path, capsys):
    good = save_basicsr(tiny('IMDN'), tmp_path / 'net.pth')
    (tmp_path / 'file').write_text('')
    status, _, err = export_here(capsys, *arch_args('IMDN'), '--model-path', good, '-o', tmp_path / 'file' / 'x.onnx')
    assert status == 1
    assert 'cannot write to folder' in error_line(err, alone=False)  # after the untrained-weights warning


@pytest.mark.parametrize('args, message', [
    (['--model-path', 'a.pth'], 'give -opt'),
    (['--arch', 'IMDN', '--model-path', 'a.pth', '-o', 'a.onx'], '--output must name a .onnx file'),
    (['--arch', 'IMDN', '--model-path', 'a.pth', '--atol', 'nan'], '--atol must be a finite number'),
    (['--arch', 'IMDN', '--model-path', 'a.pth', '--verify-size', '4'], '--verify-size must be >= 16'),
])
def test_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        export.main(args)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_onnx_packages(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # import onnxscript now raises ImportError
    status, _, err = export_here(capsys, '--arch', 'IMDN', '--model-path', tmp_path / 'a.pth')
    assert status == 1
    assert 'onnxscript not installed: pip install "ibsd[export]"' in error_line(err)


@pytest.mark.skipif(not EXPORT.exists() and shutil.which('ibsd-export') is None,
                    reason='the ibsd-export console script is not installed (pip install -e .)')
def test_console_script():
    command = str(EXPORT) if EXPORT.exists() else shutil.which('ibsd-export')
    result = subprocess.run([command, '--help'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and '--verify-images' in result.stdout
