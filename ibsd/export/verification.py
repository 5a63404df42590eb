"""Checking exported files against the PyTorch network: the inputs, the differences, the table, the verdict."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ibsd.export.base import ExportError, Runner, RuntimeUnsupported, first_line
from ibsd.image_io import read_picture
from ibsd.inference import InferenceError, list_images, probe_pattern, round_down, round_up

SYNTHETIC_SIDES = (24, 96)
"""Side range of the synthetic verification crops (LR pixels)."""

Inputs = list[tuple[str, torch.Tensor]]
"""Labelled inputs [B, 3, h, w] in [0, 1]."""


def synthetic_inputs(seed: int, multiple: int = 1) -> Inputs:
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


def image_inputs(path: str, size: int, multiple: int = 1) -> Inputs:
    """Centre crops of at most ``size`` x ``size`` pixels of the images at ``path`` (file or folder),
    their sides rounded down to ``multiple``.

    Raises:
        ExportError: ``path`` does not exist, holds no images, or an image cannot be read or is
            smaller than ``multiple``.
    """
    try:
        images, _ = list_images(Path(path))
    except InferenceError as error:
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
        crop_height, crop_width = (round_down(min(side, size), multiple) for side in (height, width))
        if not crop_height or not crop_width:
            raise ExportError(f'--verify-images: {image} ({width}x{height}) is smaller than --size-multiple '
                              f'{multiple}')
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        crop = rgb[top:top + crop_height, left:left + crop_width]
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        inputs.append((f'{image.name} {crop.shape[1]}x{crop.shape[0]}', tensor))
    return inputs


def with_batch(inputs: Inputs) -> Inputs:
    """``inputs`` plus a batch of two: the first input and its mirror image."""
    label, first = inputs[0]
    return inputs + [(f'{label} + mirror (batch 2)', torch.cat([first, first.flip(-1)]))]


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
    """The largest |a - b|; infinite for different shapes or non-finite values."""
    if a.shape != b.shape:
        return math.inf
    diff = (a.float() - b.float()).abs().max().item()
    return diff if math.isfinite(diff) else math.inf


def verify(net: nn.Module, checks: list[Check], inputs: Inputs) -> None:
    """Fill each check's per-input differences to ``net``'s float32 output (or its error).

    Raises:
        ExportError: ``net`` itself fails on an input (the message suggests ``--size-multiple``).
    """
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


def report(checks: list[Check], inputs: Inputs) -> list[str]:
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


def failure_message(checks: list[Check], inputs: Inputs) -> str | None:
    """The first problem among ``checks`` in one line, ``None`` when all passed."""
    for check in checks:
        if check.error is not None:
            return f'{check.label} ({check.path.name}) {check.error}'
        if check.failed():
            index, value = check.worst()
            return (f'{check.label} output differs from PyTorch by {value:.2e} on {inputs[index][0]}, above the '
                    f'tolerance {check.atol:g}')
    return None
