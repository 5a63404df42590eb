#!/usr/bin/env bash
# Create (or update) the virtual environment with everything ibsd needs, in seconds when it exists.
#
#   bash scripts/setup_env.sh          # runtime + demo + ibsd-study plots
#   bash scripts/setup_env.sh --test   # also pytest and the basicsr 1.4.2 source archive the tests unpack
#
# Environment: IBSD_VENV (default .venv), PYTHON (default python3),
#              TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", the tested pair).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${IBSD_VENV:-.venv}
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
extra=demo,study
[ "${1:-}" = "--test" ] && extra=test

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

echo "Installing PyTorch ($torch_spec)"
# shellcheck disable=SC2086
"${pip[@]}" $torch_spec
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
