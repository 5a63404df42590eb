"""Peak memory and time of whole-image vs tiled inference for a 2000x1500 LR photo (IMDN x4, CPU).

Each configuration runs in its own process; peak resident memory is that process's ru_maxrss.

    python scripts/benchmark_tiling.py [--width 2000 --height 1500 --tiles 0 512 256]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = '''
import json, resource, sys, time, torch
import ibsd
from ibsd.archs.imdn_arch import IMDN
from ibsd.inference import tiled_forward
width, height, tile = map(int, sys.argv[1:4])
torch.manual_seed(0)
net = IMDN(upscale=4).eval()
lq = torch.rand(1, 3, height, width)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.no_grad():
    out = tiled_forward(net, lq, tile, 16) if tile else net(lq)
seconds = time.perf_counter() - start
print(json.dumps({'tile': tile, 'seconds': seconds, 'before_mib': base / 1024,
                  'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  'output': list(out.shape)}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--width', type=int, default=2000)
    parser.add_argument('--height', type=int, default=1500)
    parser.add_argument('--tiles', type=int, nargs='+', default=[0, 512, 256], help='0 = whole image')
    args = parser.parse_args()
    print(f'IMDN x4 on a {args.width}x{args.height} LR input, CPU, {resource.getpagesize()} B pages')
    for tile in args.tiles:
        result = subprocess.run([sys.executable, '-c', CHILD, str(args.width), str(args.height), str(tile)],
                                capture_output=True, text=True)
        if result.returncode:
            print(f'tile {tile}: failed: {result.stderr.strip().splitlines()[-1]}')
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        label = 'whole image' if tile == 0 else f'tile {tile} (pad 16)'
        print(f'{label:<20} peak RSS {row["peak_mib"]:8.0f} MiB (before inference {row["before_mib"]:.0f} MiB), '
              f'{row["seconds"]:6.1f} s, output {row["output"]}')


if __name__ == '__main__':
    main()
