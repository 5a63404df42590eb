"""scripts/setup_env.sh picks PyTorch's index by the machine: CPU-only without an NVIDIA driver, PyPI with one.

The script runs against a stand-in environment whose ``python`` records its arguments, so nothing is
installed; what is checked is the ``pip install`` command the script gives for PyTorch.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

CPU_INDEX = 'https://download.pytorch.org/whl/cpu'
GPU_DRIVER = Path('/proc/driver/nvidia/version')


def torch_install(tmp_path: Path, fake_gpu: bool = False, index_answers: bool = True, **environment: str
                  ) -> tuple[list[str], str]:
    """The arguments of the script's ``pip install`` of PyTorch, and its output (``PYTHON``, which the script
    asks whether the CPU-only index answers, is a stand-in answering ``index_answers``)."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    calls = tmp_path / 'calls.txt'
    stub = venv / 'bin' / 'python'
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {calls}\n')
    stub.chmod(0o755)
    tools = tmp_path / 'tools'
    tools.mkdir()
    (tools / 'probe-python').write_text(f'#!/usr/bin/env bash\nexit {0 if index_answers else 1}\n')
    (tools / 'probe-python').chmod(0o755)
    if fake_gpu:
        (tools / 'nvidia-smi').write_text('#!/usr/bin/env bash\nexit 0\n')
        (tools / 'nvidia-smi').chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ('TORCH_INDEX', 'TORCH_SPEC')}
    env.update(IBSD_VENV=str(venv), PATH=f'{tools}:{os.environ["PATH"]}', PYTHON=str(tools / 'probe-python'),
               **environment)
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'setup_env.sh')], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    installs = [line.split() for line in calls.read_text().splitlines() if 'torch==' in line and 'install' in line]
    assert len(installs) == 1, calls.read_text()
    return installs[0], result.stdout


@pytest.mark.skipif(GPU_DRIVER.exists(), reason='this machine has an NVIDIA driver')
def test_without_an_nvidia_driver_pytorch_comes_from_the_cpu_only_index(tmp_path):
    words, _ = torch_install(tmp_path)
    assert words[-4:] == ['torch==2.14.1', 'torchvision==0.29.1', '--index-url', CPU_INDEX]


@pytest.mark.skipif(GPU_DRIVER.exists(), reason='this machine has an NVIDIA driver')
def test_without_an_answer_from_the_cpu_only_index_pytorch_comes_from_pypi(tmp_path):
    words, output = torch_install(tmp_path, index_answers=False)
    assert words[-2:] == ['torch==2.14.1', 'torchvision==0.29.1'] and '--index-url' not in words
    assert f"No NVIDIA driver, but PyTorch's CPU-only index ({CPU_INDEX}) does not answer" in output


def test_with_an_nvidia_driver_pytorch_comes_from_pypi(tmp_path):
    words, _ = torch_install(tmp_path, fake_gpu=True)
    assert words[-2:] == ['torch==2.14.1', 'torchvision==0.29.1'] and '--index-url' not in words


def test_the_index_and_the_pair_can_be_chosen(tmp_path):
    assert '--index-url' not in torch_install(tmp_path / 'a', TORCH_INDEX='pypi')[0]
    words, _ = torch_install(tmp_path / 'b', TORCH_INDEX='https://download.pytorch.org/whl/cu126',
                          TORCH_SPEC='torch==2.9.1')
    assert words[-3:] == ['torch==2.9.1', '--index-url', 'https://download.pytorch.org/whl/cu126']
