"""What the exporters share: the file's input and output names, the tracing input, and how they report."""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ibsd.errors import IBSDError
from ibsd.inference import round_up

INPUT_NAME, OUTPUT_NAME = 'input', 'output'
AXES = {0: 'batch', 2: 'height', 3: 'width'}
EXAMPLE_SHAPE = (2, 3, 53, 47)
"""The tracing input: sides that are no multiple of 2, 4 or 8, so that networks which pad their input to a multiple
(IMDN_AS, window attention) are traced through the padding; a pad of width 0 then serves inputs that need none."""
EXPECTED_WARNINGS = ('`torch.jit.trace', '`torch.jit.save', '`torch.jit.load', 'legacy TorchScript-based ONNX export',
                     'The feature will be removed')
"""Deprecation notices of the TorchScript paths, which this command uses on purpose."""
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')


Runner = Callable[[torch.Tensor], torch.Tensor]
"""An exported file, loaded: float32 [B, 3, h, w] in, float32 output out."""


class ExportError(IBSDError):
    """A problem that ends the run, reported as one line."""


class RuntimeUnsupported(Exception):
    """The runtime has no kernel for an operator in this precision (not the export's fault)."""


@dataclass
class Exported:
    """An exported file and how it was made."""

    path: Path
    exporter: str
    opset: int | None = None
    notes: list[str] = field(default_factory=list)


def example_input(dtype: torch.dtype = torch.float32, multiple: int = 1) -> torch.Tensor:
    """The tracing input, :data:`EXAMPLE_SHAPE` with its sides rounded up to ``multiple``."""
    batch, channels, height, width = EXAMPLE_SHAPE
    shape = (batch, channels, round_up(height, multiple), round_up(width, multiple))
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


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


def warning_notes(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Log lines for the warnings an exporter raised, the expected deprecation notices left out."""
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    others = {first_line(Warning(str(w.message))) for w in caught if w not in tracer
              and not any(text in str(w.message) for text in EXPECTED_WARNINGS)}
    notes = [f'{len(tracer)} tracer warnings (Python values of the example input were recorded as constants; '
             f'the checks at other sizes below show whether any mattered)'] if tracer else []
    return notes + [f'warning: {text}' for text in sorted(others)]
