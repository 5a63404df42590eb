"""``ibsd-export``: write a trained student as ONNX and TorchScript files, checked against PyTorch.

- :mod:`~ibsd.export.base`: what the exporters share (input/output names, the tracing input, errors, notes);
- :mod:`~ibsd.export.onnx`: ONNX files (dynamo or TorchScript-based exporter), their runner and stored weights;
- :mod:`~ibsd.export.torchscript`: TorchScript files and their runner;
- :mod:`~ibsd.export.verification`: the inputs, the comparison with PyTorch and its table;
- :mod:`~ibsd.export.student`: the network, loaded with :func:`ibsd.inference.load_network`;
- :mod:`~ibsd.export.cli`: the command (options, the files written, messages).

The command's documentation is :mod:`ibsd.export.cli`'s (``ibsd-export --help``).
"""
from ibsd.export.base import EXAMPLE_SHAPE, Exported, ExportError, example_input
from ibsd.export.cli import DEFAULT_ATOL, DEFAULT_FP16_ATOL, DEFAULT_VERIFY_SIZE, main
from ibsd.export.onnx import GraphWeights, export_onnx, graph_weights, onnx_runner, require_onnx
from ibsd.export.student import PreUpscaled, Student, load_student
from ibsd.export.torchscript import TORCHSCRIPT_SUFFIX, export_torchscript, torchscript_runner
from ibsd.export.verification import (Check, failure_message, image_inputs, report, synthetic_inputs, verify,
                                      with_batch)

__all__ = [
    'DEFAULT_ATOL', 'DEFAULT_FP16_ATOL', 'DEFAULT_VERIFY_SIZE', 'EXAMPLE_SHAPE', 'TORCHSCRIPT_SUFFIX', 'Check',
    'ExportError', 'Exported', 'GraphWeights', 'PreUpscaled', 'Student', 'example_input', 'export_onnx',
    'export_torchscript', 'failure_message', 'graph_weights', 'image_inputs', 'load_student', 'main', 'onnx_runner',
    'report', 'require_onnx', 'synthetic_inputs', 'torchscript_runner', 'verify', 'with_batch',
]
