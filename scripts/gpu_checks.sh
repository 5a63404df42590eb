#!/usr/bin/env bash
# IBSD's checks on a CUDA machine in one run: 2-rank DDP training, resume and ranks in step, in
# float32 and under bf16 autocast, then the step benchmark in both. Two ranks share the GPU (over
# gloo) when the machine has one. Output: stdout, and $OUT/gpu_checks.txt when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
log=${OUT:-/tmp}/gpu_checks.txt
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  port=29531
  for variant in "" "--amp bf16" "--club sampled" "--positions 0.25" "--positions 0.25 --amp bf16"; do
    # shellcheck disable=SC2086
    "$python" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port $port \
      scripts/check_ibsd_ddp.py --device cuda $variant 2>&1 | grep -vE ' (INFO|WARNING): |^\s*$'
    port=$((port + 1))
  done
  "$python" scripts/benchmark_ibsd_step.py --device cuda --repeats 20 --warmup 5 --positions 1 0.5 0.25 0.125
  "$python" scripts/benchmark_ibsd_step.py --device cuda --repeats 20 --warmup 5 --positions 1 0.5 0.25 0.125 \
    --amp bf16
} 2>&1 | tee "$log"
