"""Following a run through its log, and progress bars only on a terminal."""
from __future__ import annotations

import io

from ibsd.progress import last_progress, progress_bar, tail


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_draw_on_a_terminal_only():
    terminal, pipe = Terminal(), io.StringIO()
    assert list(progress_bar(range(3), desc='work', file=terminal)) == [0, 1, 2]
    assert list(progress_bar(range(3), desc='work', file=pipe)) == [0, 1, 2]
    assert '3/3' in terminal.getvalue() and pipe.getvalue() == ''


def test_the_newest_iteration_and_eta_are_read_from_a_log(tmp_path):
    log = tmp_path / 'train.log'
    assert last_progress(log) is None and tail(log) == '(no log)'
    log.write_text('2026 INFO: [x..][epoch:  0, iter:     950, lr:(1.0e-04,)] [eta: 0:10:00, time (data): 1 (0)]\n'
                   '2026 INFO: [x..][epoch:  1, iter:   1,000, lr:(1.0e-04,)] [eta: 0:09:30, time (data): 1 (0)]\n'
                   'last line\n')
    assert last_progress(log) == (1000, '0:09:30')
    assert tail(log, 1) == 'last line'
