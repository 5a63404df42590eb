"""What the basicsr autoload hook (ibsd-autoload.pth) costs a Python process that never imports basicsr.

Prints:
- the hook module's own import time at interpreter start (``-X importtime``, median of runs);
- the finder's cost per import of any other module (``BasicsrFinder.find_spec``);
- interpreter start-up time with and without the hook (``IBSD_BENCH_NO_HOOK`` hides the .pth
  by running the same interpreter with ``-S`` plus a manual ``site.main()`` that skips it).

Usage: python scripts/benchmark_autoload.py [--runs 30]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import timeit

# Start-up with site-packages but without our .pth: run site's steps ourselves, skipping the file.
WITHOUT_HOOK = ('import site, sys; '
                'site._orig = site.addpackage; '
                'site.addpackage = lambda d, n, k: None if n == "ibsd-autoload.pth" else site._orig(d, n, k); '
                'site.main()')
WITH_HOOK = 'import site; site.main()'
# As installed by pip, the hook runs from cached bytecode: let the interpreter write it.
ENV = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}


def hook_import_us(runs: int) -> float:
    times = []
    for _ in range(runs + 1):  # the first run may compile the bytecode
        err = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'pass'], capture_output=True,
                             text=True, env=ENV).stderr
        match = re.search(r'import time:\s+(\d+) \|\s+\d+ \|\s+_ibsd_autoload', err)
        if match is None:
            raise SystemExit('ibsd-autoload.pth is not installed in this interpreter (pip install -e .)')
        times.append(int(match.group(1)))
    return statistics.median(times[1:])


def startup_ms(code: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, '-S', '-c', code], check=True, env=ENV)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=30)
    runs = parser.parse_args().runs
    import _ibsd_autoload
    per_call = timeit.timeit(lambda: _ibsd_autoload.BasicsrFinder.find_spec('json.decoder'), number=200_000) / 200_000
    print(f'hook module import at start-up: {hook_import_us(runs):.0f} us (median of {runs})')
    print(f'finder cost per other import:   {per_call * 1e9:.0f} ns')
    without_hook, with_hook = startup_ms(WITHOUT_HOOK, runs), startup_ms(WITH_HOOK, runs)
    print(f'interpreter start-up: {with_hook:.1f} ms with the hook, {without_hook:.1f} ms without '
          f'(median of {runs}; difference {with_hook - without_hook:+.1f} ms, within run-to-run noise '
          f'when below ~1 ms)')


if __name__ == '__main__':
    main()
