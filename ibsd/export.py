"""``ibsd-export``: write a trained student as ONNX and TorchScript files, checked against PyTorch.

Examples::

    ibsd-export --arch IMDN --model-path IMDN_x4.pth -o exports/imdn_x4.onnx
    ibsd-export -opt options/train/IBSD/train_ibsd_imdn_x4_drealsr.yml --model-path net_g_400000.pth --fp16
    ibsd-export --arch RFDN --model-path RFDN_AIM.pth --verify-images Set5/LR_bicubic/x4

The network and its weights are loaded as ``ibsd-infer`` loads them (``-opt``/``--opt`` with a
``network_g``, or ``--arch``/``--scale``/``--arch-opt``; BasicSR ``net_g_*.pth`` or official
weights; the pixel range of the weights detected). It writes:

- ``<output>.onnx``: float32, input ``input`` [batch, 3, height, width] in [0, 1], output
  ``output``, batch, height and width dynamic (opset: the exporter's default, or ``--opset``);
- ``<output>_fp16.onnx`` with ``--fp16``: float16 weights, input and output;
- ``<output>.torchscript.pt``: ``torch.jit.trace`` of the network (``torch.jit.load`` it).

Before anything is written, each file is run (onnxruntime on the CPU, TorchScript) on the
``--verify-images`` (centre crops of at most ``--verify-size`` pixels) or on synthetic crops of
random sizes, and on a batch of two, and compared with the PyTorch network: the largest absolute
difference per input is printed, and above ``--atol`` (``--fp16-atol`` for the float16 file) the
export fails, with exit status 1 and nothing written. Errors are one line ``ibsd-export: error: ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ibsd.errors import IBSDError
from ibsd.infer import InferError, bicubic, list_images, prepare, probe_pattern
from ibsd.image_io import read_picture

EXPORTERS = ('auto', 'dynamo', 'torchscript')
INPUT_NAME, OUTPUT_NAME = 'input', 'output'
AXES = {0: 'batch', 2: 'height', 3: 'width'}
EXAMPLE_SHAPE = (2, 3, 53, 47)
"""The tracing input: sides that are no multiple of 2, 4 or 8, so that networks which pad their input to a multiple
(IMDN_AS, window attention) are traced through the padding; a pad of width 0 then serves inputs that need none."""
DEFAULT_ATOL = 1e-4
DEFAULT_FP16_ATOL = 2e-2
DEFAULT_VERIFY_SIZE = 256
SYNTHETIC_SIDES = (24, 96)
"""Side range of the synthetic verification crops (LR pixels)."""
TORCHSCRIPT_SUFFIX = '.torchscript.pt'
EXPECTED_WARNINGS = ('`torch.jit.trace', '`torch.jit.save', '`torch.jit.load', 'legacy TorchScript-based ONNX export',
                     'The feature will be removed')
"""Deprecation notices of the TorchScript paths, which this command uses on purpose."""


class ExportError(IBSDError):
    """A problem that ends the run, reported as one line."""


ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')


def first_line(error: BaseException) -> str:
    """The first line of the innermost cause of ``error`` (exporters wrap the real reason)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in ANSI_ESCAPE.sub('', str(error)).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """No log records while an exporter runs: torch.export and the symbolic-shape machinery log failed
    attempts at length, and a failed attempt is reported here in one line instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


# ----------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-export', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.split('\n')[2:]))
    parser.add_argument('--model-path', required=True, help='checkpoint: BasicSR net_g_*.pth or official weights')
    parser.add_argument('--param-key', default='params_ema', help='checkpoint key to prefer (default: params_ema)')
    parser.add_argument('-opt', '--opt', help='BasicSR YAML whose network_g describes the network')
    parser.add_argument('--arch', help='arch type, e.g. IMDN (when -opt is not given)')
    parser.add_argument('--scale', type=int,
                        help="output scale (default: 4 for --arch, the network's own for -opt or a fixed-scale arch); "
                        'for a same-size network such as IMDN_AS the exported graph upscales with bicubic first')
    parser.add_argument('--arch-opt', action='append', default=[], metavar='KEY=VALUE',
                        help='extra arch keyword, repeatable (e.g. num_feat=48)')
    parser.add_argument('-o', '--output', help='ONNX file to write (default: <checkpoint name>.onnx in the current '
                        f'folder); the TorchScript file is <output stem>{TORCHSCRIPT_SUFFIX}, the float16 one '
                        '<output stem>_fp16.onnx')
    parser.add_argument('--fp16', action='store_true', help='also write a float16 ONNX file')
    parser.add_argument('--no-torchscript', action='store_true', help='do not write the TorchScript file')
    parser.add_argument('--exporter', choices=EXPORTERS, default='auto',
                        help='ONNX exporter: dynamo (torch.export based), torchscript (the older tracer) or auto '
                        '(default: dynamo, the TorchScript-based one if that fails)')
    parser.add_argument('--opset', type=int, help="ONNX opset (default: the exporter's own)")
    parser.add_argument('--verify-images', help='image file or folder to check the exports on (default: synthetic '
                        'crops of random sizes)')
    parser.add_argument('--verify-size', type=int, default=DEFAULT_VERIFY_SIZE,
                        help=f'largest side of the centre crop taken from each verify image (default: '
                        f'{DEFAULT_VERIFY_SIZE})')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help=f'largest accepted |export - PyTorch| for float32 files, on outputs in [0, 1] '
                        f'(default: {DEFAULT_ATOL:g})')
    parser.add_argument('--fp16-atol', type=float, default=DEFAULT_FP16_ATOL,
                        help=f'the same for the float16 ONNX file (default: {DEFAULT_FP16_ATOL:g})')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic crops (default: 0)')
    parser.add_argument('--size-multiple', type=int, default=1, metavar='N',
                        help='for a network that takes only sides that are multiples of N (BasicSR\'s SwinIR: its '
                        'window size): the tracing input and the verification crops are made so (default: 1)')
    parser.add_argument('--no-verify', action='store_true', help='write the files without checking them')
    args = parser.parse_args(argv)
    if not args.opt and not args.arch:
        parser.error('give -opt (a YAML with network_g) or --arch')
    if args.scale is not None and args.scale < 1:
        parser.error('--scale must be >= 1')
    if args.opset is not None and args.opset < 7:
        parser.error(f'--opset must be >= 7, got {args.opset}')
    if args.verify_size < 16:
        parser.error(f'--verify-size must be >= 16, got {args.verify_size}')
    if not 1 <= args.size_multiple <= 64:
        parser.error(f'--size-multiple must be between 1 and 64, got {args.size_multiple}')
    for name in ('atol', 'fp16_atol'):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if args.output is not None and Path(args.output).suffix.lower() != '.onnx':
        parser.error(f'--output must name a .onnx file, got {args.output}')
    args.tile, args.tile_pad = 0, 0  # what ibsd.infer.prepare reads: the whole image, as exported
    return args


@dataclass
class Targets:
    """The files to write (``None``: not asked for)."""

    onnx: Path
    fp16: Path | None
    torchscript: Path | None

    def all(self) -> list[Path]:
        return [path for path in (self.onnx, self.fp16, self.torchscript) if path is not None]


def targets(args: argparse.Namespace) -> Targets:
    onnx = Path(args.output) if args.output else Path(Path(args.model_path).stem + '.onnx')
    stem = onnx.with_suffix('')
    return Targets(onnx=onnx, fp16=stem.with_name(stem.name + '_fp16.onnx') if args.fp16 else None,
                   torchscript=None if args.no_torchscript else stem.with_name(stem.name + TORCHSCRIPT_SUFFIX))


# ----------------------------------------------------------------------------- the network
class PreUpscaled(nn.Module):
    """A same-size network (IMDN_AS) behind a bicubic upscale, as ``ibsd-infer --scale`` runs it."""

    def __init__(self, net: nn.Module, scale: int):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(bicubic(x, self.scale))


@dataclass
class Student:
    """The network to export (eval mode, CPU, float32) and what is known about it."""

    net: nn.Module
    name: str
    scale: int
    parameters: int


def load_student(args: argparse.Namespace, log: Callable[[str], None]) -> Student:
    """Build and load the network with ``ibsd-infer``'s loader (pixel range and scale checked)."""
    upscaler = prepare(args, torch.device('cpu'), torch.float32, log)
    net = upscaler.net
    name = net.__class__.__name__
    if upscaler.pre_scale != 1:
        net = PreUpscaled(net, upscaler.pre_scale)
    net = net.eval().requires_grad_(False)
    with torch.no_grad():
        out = net(probe_pattern(24))
    return Student(net, name, out.shape[-1] // 24, sum(p.numel() for p in net.parameters()))


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def example_input(dtype: torch.dtype = torch.float32, multiple: int = 1) -> torch.Tensor:
    """The tracing input, :data:`EXAMPLE_SHAPE` with its sides rounded up to ``multiple``."""
    batch, channels, height, width = EXAMPLE_SHAPE
    shape = (batch, channels, round_up(height, multiple), round_up(width, multiple))
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


# ----------------------------------------------------------------------------- export
@dataclass
class Exported:
    """An exported file and how it was made."""

    path: Path
    exporter: str
    opset: int | None = None
    notes: list[str] = field(default_factory=list)


def warning_notes(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Log lines for the warnings an exporter raised, the expected deprecation notices left out."""
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    others = {first_line(Warning(str(w.message))) for w in caught if w not in tracer
              and not any(text in str(w.message) for text in EXPECTED_WARNINGS)}
    notes = [f'{len(tracer)} tracer warnings (Python values of the example input were recorded as constants; '
             f'the checks at other sizes below show whether any mattered)'] if tracer else []
    return notes + [f'warning: {text}' for text in sorted(others)]


def opset_of(path: Path) -> int | None:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx')), None)


def name_dynamic_axes(path: Path) -> None:
    """Rename the dynamo exporter's symbols (``s0``, ``2*s53``) to batch, height, width in the file."""
    import onnx
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    mapping = {dims[axis].dim_param: name for axis, name in AXES.items() if dims[axis].dim_param}
    if not mapping:
        return
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, mapping)) + r')\b')
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda match: mapping[match.group(1)], dim.dim_param)
    onnx.save(model, str(path))


def export_dynamo(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None,
                  optimize: bool = True) -> Exported:
    dynamic = {axis: torch.export.Dim.DYNAMIC for axis in AXES}
    with warnings.catch_warnings(record=True) as caught, quiet_logging():
        warnings.simplefilter('always')
        torch.onnx.export(net, (example,), str(path), dynamo=True, dynamic_shapes=(dynamic,),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                          external_data=False, verbose=False, optimize=optimize)
    name_dynamic_axes(path)
    return Exported(path, 'dynamo', opset_of(path), warning_notes(caught))


def export_torchscript_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None,
                            optimize: bool = True) -> Exported:
    axes = {INPUT_NAME: AXES, OUTPUT_NAME: {0: 'batch', 2: 'out_height', 3: 'out_width'}}
    with warnings.catch_warnings(record=True) as caught, quiet_logging():
        warnings.simplefilter('always')
        torch.onnx.export(net, (example,), str(path), dynamo=False, dynamic_axes=axes, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, do_constant_folding=optimize)
    return Exported(path, 'torchscript', opset_of(path), warning_notes(caught))


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, exporter: str = 'auto',
                opset: int | None = None, optimize: bool = True) -> Exported:
    """Write ``net`` as ONNX with dynamic batch, height and width.

    Args:
        net: The network, in eval mode, in the dtype of ``example``.
        example: The tracing input (see :data:`EXAMPLE_SHAPE`).
        path: The ``.onnx`` file.
        exporter: ``dynamo``, ``torchscript`` or ``auto`` (dynamo, then the TorchScript-based
            exporter if it fails; the returned notes say why).
        opset: ONNX opset, ``None`` for the exporter's default.
        optimize: Let the exporter fold constants and fuse operations (the file then stores some
            weights transformed, merged or under other names); ``False`` keeps each parameter and
            buffer as an initializer under its own name (see :func:`graph_weights`).

    Raises:
        ExportError: No exporter could export the network.
    """
    order = ['dynamo', 'torchscript'] if exporter == 'auto' else [exporter]
    functions = {'dynamo': export_dynamo, 'torchscript': export_torchscript_onnx}
    failures = []
    for name in order:
        try:
            done = functions[name](net, example, path, opset, optimize)
        except Exception as error:  # exporters raise many types; the reason is reported
            failures.append(f'{name} exporter: {first_line(error)}')
            continue
        done.notes = [f'{failure}; used the {name} exporter' for failure in failures] + done.notes
        return done
    raise ExportError(f'cannot export {net.__class__.__name__} to ONNX ({"; ".join(failures)})')


def export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> Exported:
    """``torch.jit.trace`` of ``net`` on ``example``, saved with ``torch.jit.save``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            traced = torch.jit.trace(net, example, check_trace=False)
        except Exception as error:
            raise ExportError(f'cannot trace {net.__class__.__name__} with torch.jit.trace: {first_line(error)}') \
                from error
        try:
            torch.jit.save(traced, str(path))
        except (OSError, RuntimeError) as error:
            raise ExportError(f'cannot write {path}: {first_line(error)}') from error
    return Exported(path, 'torch.jit.trace', notes=warning_notes(caught))


@dataclass
class GraphWeights:
    """How the values stored in an ONNX file relate to the network's parameters and buffers."""

    parameters: int
    """Parameters of the network."""
    stored: int
    """Of them, the values stored in the file under their own names."""
    unused: int
    """Parameters the graph does not use (e.g. RFDN's B5/B6 with ``share_block4``)."""
    extra: int
    """Stored values that are neither a parameter nor a buffer of the network."""


def graph_weights(path: Path, net: nn.Module) -> GraphWeights:
    """Compare the initializers of the ONNX file ``path`` with the parameters and buffers of ``net``.

    Meant for files exported with ``optimize=False``, whose initializers are the network's
    parameters and buffers under their own names; an optimised file stores some of them folded,
    transposed or merged, which this count would take for missing parameters and extra values.
    """
    import onnx
    model = onnx.load(str(path))
    sizes = {init.name: math.prod(init.dims) for init in model.graph.initializer}
    parameters = dict(net.named_parameters())
    known = set(parameters) | {name for name, _ in net.named_buffers()}
    stored = sum(p.numel() for name, p in parameters.items() if sizes.get(name) == p.numel())
    total = sum(p.numel() for p in parameters.values())
    extra = sum(size for name, size in sizes.items() if name not in known)
    return GraphWeights(total, stored, total - stored, extra)


# ----------------------------------------------------------------------------- verification
def synthetic_inputs(seed: int, multiple: int = 1) -> list[tuple[str, torch.Tensor]]:
    """Two crops of a smooth test scene with noise: one of 48x64, one of a random size (sides rounded
    up to ``multiple``)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = SYNTHETIC_SIDES
    scene = probe_pattern(2 * round_up(high, multiple))
    scene = (scene + 0.03 * torch.randn(scene.shape, generator=generator)).clamp(0, 1)
    sizes = [(48, 64), tuple(int(v) for v in torch.randint(low, high + 1, (2,), generator=generator))]
    sizes = [(round_up(height, multiple), round_up(width, multiple)) for height, width in sizes]
    crops = []
    for height, width in sizes:
        top = int(torch.randint(0, scene.shape[2] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, scene.shape[3] - width + 1, (1,), generator=generator))
        crops.append((f'synthetic {width}x{height}', scene[:, :, top:top + height, left:left + width].contiguous()))
    return crops


def image_inputs(path: str, size: int, multiple: int = 1) -> list[tuple[str, torch.Tensor]]:
    """Centre crops of at most ``size`` x ``size`` pixels of the images at ``path`` (file or folder),
    their sides rounded down to ``multiple``."""
    try:
        images, _ = list_images(Path(path))
    except InferError as error:
        raise ExportError(f'--verify-images: {error}') from error
    if not images:
        raise ExportError(f'--verify-images: no images in {path}')
    inputs = []
    for image in images:
        try:
            rgb = read_picture(image).rgb
        except (OSError, ValueError) as error:
            raise ExportError(f'--verify-images: cannot read {image}: {error}') from error
        height, width = rgb.shape[:2]
        crop_height, crop_width = (min(side, size) // multiple * multiple for side in (height, width))
        if not crop_height or not crop_width:
            raise ExportError(f'--verify-images: {image} ({width}x{height}) is smaller than --size-multiple '
                              f'{multiple}')
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        crop = rgb[top:top + crop_height, left:left + crop_width]
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        inputs.append((f'{image.name} {crop.shape[1]}x{crop.shape[0]}', tensor))
    return inputs


def with_batch(inputs: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """``inputs`` plus a batch of two: the first input and its mirror image."""
    label, first = inputs[0]
    return inputs + [(f'{label} + mirror (batch 2)', torch.cat([first, first.flip(-1)]))]


Runner = Callable[[torch.Tensor], torch.Tensor]


class RuntimeUnsupported(Exception):
    """The runtime has no kernel for an operator in this precision (not the export's fault)."""


def onnx_runner(path: Path) -> Runner:
    """Run an ONNX file with onnxruntime on the CPU; inputs are cast to the file's input type."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as error:
        if 'NOT_IMPLEMENTED' in str(error) or type(error).__name__ == 'NotImplemented':
            raise RuntimeUnsupported(first_line(error)) from error
        raise
    dtype = np.float16 if session.get_inputs()[0].type == 'tensor(float16)' else np.float32

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(dtype)})[0]
        return torch.from_numpy(out.astype(np.float32))
    return run


def torchscript_runner(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='`torch.jit.load` is deprecated')
        module = torch.jit.load(str(path), map_location='cpu')

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x).float()
    return run


@dataclass
class Check:
    """One exported file to compare with PyTorch."""

    label: str
    path: Path
    make_runner: Callable[[Path], Runner]
    atol: float
    diffs: list[float | None] = field(default_factory=list)
    error: str | None = None
    unsupported: str | None = None

    def worst(self) -> tuple[int, float] | None:
        """Index and value of the largest difference (NaN counts as infinite)."""
        values = [(i, math.inf if d is None or math.isnan(d) else d) for i, d in enumerate(self.diffs)]
        return max(values, key=lambda item: item[1]) if values else None

    def failed(self) -> bool:
        worst = self.worst()
        return self.error is not None or (worst is not None and worst[1] > self.atol)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    diff = (a.float() - b.float()).abs().max().item()
    return diff if math.isfinite(diff) else math.inf


def verify(net: nn.Module, checks: list[Check], inputs: list[tuple[str, torch.Tensor]]) -> None:
    """Fill each check's per-input differences to ``net``'s float32 output (or its error)."""
    references = []
    for label, x in inputs:
        try:
            with torch.no_grad():
                references.append(net(x))
        except Exception as error:
            raise ExportError(f'the PyTorch network itself fails on {label} ({tuple(x.shape)}): {first_line(error)}; '
                              f'if it takes only sides that are multiples of N pixels, give --size-multiple N') \
                from error
    for check in checks:
        try:
            runner = check.make_runner(check.path)
        except RuntimeUnsupported as error:
            check.unsupported = str(error)
            continue
        except Exception as error:
            check.error = f'cannot load {check.path.name}: {first_line(error)}'
            continue
        for (label, x), reference in zip(inputs, references):
            try:
                check.diffs.append(max_abs_diff(runner(x), reference))
            except Exception as error:
                check.error = f'fails on {label} ({tuple(x.shape)}): {first_line(error)}'
                break


def report(checks: list[Check], inputs: list[tuple[str, torch.Tensor]]) -> list[str]:
    """The verification table, one line per input, and one line per check that could not run."""
    active = [check for check in checks if check.unsupported is None]
    width = max(len(label) for label, _ in inputs)
    lines = [f'{"max |export - PyTorch|":{width}s}  ' + '  '.join(f'{c.label:>12s}' for c in active),
             f'{"tolerance":{width}s}  ' + '  '.join(f'{c.atol:12.0e}' for c in active)]
    for index, (label, _) in enumerate(inputs):
        cells = []
        for check in active:
            cells.append(f'{check.diffs[index]:12.2e}' if index < len(check.diffs) else f'{"-":>12s}')
        lines.append(f'{label:{width}s}  ' + '  '.join(cells))
    for check in checks:
        if check.unsupported is not None:
            lines.append(f'{check.label}: not verified, onnxruntime cannot run it on this CPU ({check.unsupported}); '
                         'check it on the target runtime')
    return lines


def failure_message(checks: list[Check], inputs: list[tuple[str, torch.Tensor]]) -> str | None:
    for check in checks:
        if check.error is not None:
            return f'{check.label} ({check.path.name}) {check.error}'
        if check.failed():
            index, value = check.worst()
            return (f'{check.label} output differs from PyTorch by {value:.2e} on {inputs[index][0]}, above the '
                    f'tolerance {check.atol:g}')
    return None


# ----------------------------------------------------------------------------- the command
def require_onnx() -> None:
    missing = []
    for module in ('onnx', 'onnxruntime', 'onnxscript'):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f'{", ".join(missing)} not installed: pip install "ibsd[export]" (or pip install '
                          f'{" ".join(missing)})')


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f'ibsd-export: {message}', file=sys.stderr)

    require_onnx()
    inputs = None
    if not args.no_verify:
        inputs = with_batch(image_inputs(args.verify_images, args.verify_size, args.size_multiple)
                            if args.verify_images else synthetic_inputs(args.seed, args.size_multiple))
    student = load_student(args, log)
    files = targets(args)
    folder = files.onnx.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix='.ibsd-export-', dir=folder))
    except OSError as error:
        raise ExportError(f'cannot write to folder {folder}: {error.strerror or error}') from error
    try:
        return export_all(student, files, work, inputs, args, log)
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()


def export_all(student: Student, files: Targets, work: Path, inputs: list | None, args: argparse.Namespace,
               log: Callable[[str], None]) -> int:
    """Export into ``work``, verify, then move the files to their places."""
    print(f'ibsd-export: {student.name} x{student.scale} from {args.model_path} ({student.parameters:,} parameters)')
    multiple = args.size_multiple
    done = [export_onnx(student.net, example_input(multiple=multiple), work / files.onnx.name, args.exporter,
                        args.opset)]
    checks = [Check('ONNX', done[0].path, onnx_runner, args.atol)]
    if files.fp16 is not None:
        half = copy.deepcopy(student.net).half()
        done.append(export_onnx(half, example_input(torch.float16, multiple), work / files.fp16.name,
                                args.exporter, args.opset))
        checks.append(Check('ONNX fp16', done[-1].path, onnx_runner, args.fp16_atol))
    if files.torchscript is not None:
        done.append(export_torchscript(student.net, example_input(multiple=multiple), work / files.torchscript.name))
        checks.append(Check('TorchScript', done[-1].path, torchscript_runner, args.atol))
    for item in done:
        for note in item.notes:
            log(f'{item.path.name}: {note}')
    size = done[0].path.stat().st_size / 2**20
    print(f'ibsd-export: ONNX by the {done[0].exporter} exporter, opset {done[0].opset}, dynamic batch/height/width, '
          f'{size:.1f} MiB')
    if inputs is not None:
        verify(student.net, checks, inputs)
        for line in report(checks, inputs):
            print(f'  {line}')
        problem = failure_message(checks, inputs)
        if problem is not None:
            raise ExportError(f'verification failed: {problem}; nothing written')
    else:
        log('--no-verify: the files are not checked')
    for item, target in zip(done, files.all()):
        try:
            os.replace(item.path, target)
        except OSError as error:
            raise ExportError(f'cannot write {target}: {error.strerror or error}') from error
    print('ibsd-export: wrote ' + ', '.join(str(path) for path in files.all()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ExportError, InferError) as error:
        print(f'ibsd-export: error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
