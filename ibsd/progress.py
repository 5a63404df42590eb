"""Following a BasicSR run through its console log: the newest iteration and ETA, and the end of the log."""
from __future__ import annotations

import re
from pathlib import Path

ITERATION_LINE = re.compile(r'iter:\s*([\d,]+), lr:.*?\[eta: ([^,]+),')


def last_progress(log: Path) -> tuple[int, str] | None:
    """(iteration, BasicSR's ETA) of the newest iteration line in a run's log."""
    try:
        with open(log, 'rb') as handle:
            handle.seek(max(0, log.stat().st_size - 8192))
            text = handle.read().decode(errors='replace')
    except OSError:
        return None
    found = ITERATION_LINE.findall(text)
    return (int(found[-1][0].replace(',', '')), found[-1][1].strip()) if found else None


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log ('(no log)' when it cannot be read)."""
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


def progress_bar(iterable, **options):
    """A tqdm progress bar on a terminal, nothing elsewhere (a log file or a pipe would keep every redraw)."""
    from tqdm import tqdm
    return tqdm(iterable, disable=None, **options)
