#!/usr/bin/env bash
# Create (or update) the virtual environment with everything ibsd needs, in seconds when it exists.
#
#   bash scripts/setup_env.sh          # runtime + demo + ibsd-study plots
#   bash scripts/setup_env.sh --test   # also pytest and the basicsr 1.4.2 source archive the tests unpack
#
# Environment: IBSD_VENV (default .venv), PYTHON (default python3),
#              TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", the tested pair),
#              TORCH_INDEX (default auto): where PyTorch comes from. auto: PyTorch's CPU-only index on Linux
#              without an NVIDIA driver when it answers (about 1 GB instead of 6 GB: PyPI's Linux torch is the
#              CUDA build), PyPI everywhere else; pypi: PyPI; or the URL of any index (e.g. a CUDA one of PyTorch's).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${IBSD_VENV:-.venv}
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
cpu_index=https://download.pytorch.org/whl/cpu
torch_index=${TORCH_INDEX:-auto}
if [ "$torch_index" = auto ]; then
  torch_index=pypi
  if [ "$(uname -s)" = Linux ] && [ ! -e /proc/driver/nvidia/version ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # no NVIDIA driver: the CUDA libraries would never be loaded; the CPU-only index if it answers
    if why=$("$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" \
        "$cpu_index/torch/" 2>&1); then
      torch_index=$cpu_index
    else
      echo "No NVIDIA driver, but PyTorch's CPU-only index ($cpu_index) does not answer ($(echo "$why" | tail -n 1)):"
      echo "installing PyPI's build (TORCH_INDEX=$cpu_index forces the CPU-only index, e.g. behind a proxy)"
    fi
  fi
fi
index_args=()
if [ "$torch_index" != pypi ]; then index_args=(--index-url "$torch_index"); fi
extra=demo,study
case "${1:-}" in
  "") ;;
  --test) extra=test ;;
  *) echo "setup_env.sh: unknown option '$1' (the only one is --test)" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

echo "Installing PyTorch ($torch_spec, from ${torch_index/#pypi/PyPI})"
# shellcheck disable=SC2086
"${pip[@]}" $torch_spec ${index_args[@]+"${index_args[@]}"}
"$venv/bin/python" -c "import torch; cuda = torch.version.cuda
print(f'PyTorch {torch.__version__}: ' + (f'CUDA {cuda} build' if cuda else 'CPU-only build'))"
# basicsr 1.4.2 exists only as an sdist whose isolated build would download a second, full torch:
# build it against the environment instead (takes seconds).
echo "Installing basicsr 1.4.2 and ibsd"
"${pip[@]}" "setuptools>=70.1" wheel
"${pip[@]}" --no-build-isolation basicsr==1.4.2
"${pip[@]}" --no-build-isolation -e ".[$extra]"

if [ "$extra" = test ] && [ ! -f .cache/basicsr-1.4.2.tar.gz ]; then
  mkdir -p .cache
  "$venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    basicsr==1.4.2 -d .cache
fi
echo "Environment ready: $venv (activate with: source $venv/bin/activate)"
