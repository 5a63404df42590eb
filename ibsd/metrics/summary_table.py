"""Per-image metric tables (CSV and Markdown) with the mean as the last row."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def write_summary(folder: str | Path, dataset: str, metric_names: Sequence[str],
                  rows: Sequence[tuple[str, Sequence[float]]]) -> tuple[Path, Path]:
    """Write ``<dataset>_metrics.csv`` and ``.md`` in ``folder``: one row per image, then the mean."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    means = [sum(values[i] for _, values in rows) / len(rows) for i in range(len(metric_names))] if rows else []
    table = [(name, list(values)) for name, values in rows] + [('mean', means)]
    csv_path, md_path = folder / f'{dataset}_metrics.csv', folder / f'{dataset}_metrics.md'
    with open(csv_path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image', *metric_names])
        writer.writerows([name, *(f'{v:.6f}' for v in values)] for name, values in table)
    lines = [f'| image | {" | ".join(metric_names)} |', '|---' * (len(metric_names) + 1) + '|']
    lines += [f'| {"**mean**" if name == "mean" else name} | ' + ' | '.join(f'{v:.4f}' for v in values) + ' |'
              for name, values in table]
    md_path.write_text(f'# {dataset}\n\n' + '\n'.join(lines) + '\n')
    return csv_path, md_path
