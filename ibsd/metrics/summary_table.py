"""Per-image metric tables (CSV and Markdown) with the mean as the last row and the tile setting."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def tile_label(tiling: tuple[int, int] | None) -> str:
    """``'whole'`` for whole-image inference, ``'256 pad 16'`` for tiles of 256 with 16 px of context."""
    return 'whole' if tiling is None else f'{tiling[0]} pad {tiling[1]}'


def write_summary(folder: str | Path, dataset: str, metric_names: Sequence[str],
                  rows: Sequence[tuple[str, Sequence[float]]], *, tiling: tuple[int, int] | None) -> tuple[Path, Path]:
    """Write ``<dataset>_metrics.csv`` and ``.md`` in ``folder``: one row per image, then the mean.

    ``tiling`` is the ``(tile_size, tile_pad)`` the images were upscaled with, or None for whole
    images; it is recorded because tiles change the scores of networks with global operations.
    The CSV repeats it in a last ``tile`` column, the Markdown states it under the title.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label = tile_label(tiling)
    means = [sum(values[i] for _, values in rows) / len(rows) for i in range(len(metric_names))] if rows else []
    table = [(name, list(values)) for name, values in rows] + [('mean', means)]
    csv_path, md_path = folder / f'{dataset}_metrics.csv', folder / f'{dataset}_metrics.md'
    with open(csv_path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image', *metric_names, 'tile'])
        writer.writerows([name, *(f'{v:.6f}' for v in values), label] for name, values in table)
    inference = ('whole images' if tiling is None else
                 f'tiles of {tiling[0]} LR pixels with {tiling[1]} pixels of context (tile: {label})')
    lines = [f'| image | {" | ".join(metric_names)} |', '|---' * (len(metric_names) + 1) + '|']
    lines += [f'| {"**mean**" if name == "mean" else name} | ' + ' | '.join(f'{v:.4f}' for v in values) + ' |'
              for name, values in table]
    md_path.write_text(f'# {dataset}\n\nInference: {inference}.\n\n' + '\n'.join(lines) + '\n')
    return csv_path, md_path
