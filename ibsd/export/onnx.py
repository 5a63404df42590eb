"""ONNX files with dynamic batch, height and width: the dynamo exporter, the TorchScript-based one, or either."""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ibsd.export.base import (AXES, INPUT_NAME, OUTPUT_NAME, Exported, ExportError, Runner, RuntimeUnsupported,
                              first_line, quiet_logging, warning_notes)

REQUIRED_MODULES = ('onnx', 'onnxruntime', 'onnxscript')
"""What writing and checking ONNX files needs (``pip install "ibsd[export]"``)."""


def require_onnx() -> None:
    """Raises :class:`ExportError` naming the packages of :data:`REQUIRED_MODULES` that are not installed."""
    missing = []
    for module in REQUIRED_MODULES:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f'{", ".join(missing)} not installed: pip install "ibsd[export]" (or pip install '
                          f'{" ".join(missing)})')


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


EXPORTERS = ('auto', 'dynamo', 'torchscript')
"""The ``exporter`` choices of :func:`export_onnx`."""


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, exporter: str = 'auto',
                opset: int | None = None, optimize: bool = True) -> Exported:
    """Write ``net`` as ONNX with dynamic batch, height and width.

    Args:
        net: The network, in eval mode, in the dtype of ``example``.
        example: The tracing input (see :data:`~ibsd.export.base.EXAMPLE_SHAPE`).
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


def onnx_runner(path: Path) -> Runner:
    """Run an ONNX file with onnxruntime on the CPU; inputs are cast to the file's input type.

    Raises:
        RuntimeUnsupported: onnxruntime has no CPU kernel for an operator of the file (float16 ones).
    """
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
