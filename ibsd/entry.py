"""Command-line entry points that run BasicSR's own train and test pipelines with IBSD loaded.

The CLI is BasicSR's (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``,
``--force_yml``) and ``--threads N`` (:mod:`ibsd.threads`). Experiments, logs and results go under the
current working directory
(``./experiments``, ``./results``, ``./tb_logger``), never next to the installed package.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, Sequence

import ibsd  # noqa: F401  (fixes basicsr and fills its registries)


def _run(pipeline: Callable[[str], None], argv: Sequence[str] | None) -> None:
    """Run a BasicSR pipeline; a bad option, bad data, an unusable checkpoint, a failed checkpoint write or a
    diverged run ends with one line and exit status 1."""
    from ibsd.errors import IBSDError
    import ibsd.threads
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        sys.argv[1:], ibsd.threads.requested = ibsd.threads.pop_threads_argument(sys.argv[1:])
        with help_mentions_threads(sys.argv[1:]):
            pipeline(os.getcwd())
    except IBSDError as error:
        from basicsr.utils import get_root_logger

        from ibsd.data.checks import worker_error_message
        message = worker_error_message(str(error), type(error))  # raised in a DataLoader worker
        get_root_logger().error(message)
        sys.exit(f'{type(error).__name__}: {message}')
    _close_process_group()


THREADS_HELP = ('\nibsd adds:\n  --threads N           CPU threads of this run (or "auto"; default: the '
                'num_threads option, else OMP_NUM_THREADS, else auto)')


@contextlib.contextmanager
def help_mentions_threads(argv: Sequence[str]) -> Iterator[None]:
    """After BasicSR's ``--help`` (its parser does not know ``--threads``), say what ``--threads`` does."""
    try:
        yield
    except SystemExit as done:
        if done.code in (0, None) and ('-h' in argv or '--help' in argv):
            print(THREADS_HELP)
        raise


def _close_process_group() -> None:
    """End a ``--launcher`` run on all ranks together and close the process group BasicSR leaves open.

    A rank that exited while rank 0 still validated could abort in gloo's teardown. The final
    barrier runs on a gloo group without a practical timeout: rank 0's last validation can take
    longer than NCCL's collective timeout.
    """
    import datetime

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier(group=dist.new_group(backend='gloo', timeout=datetime.timedelta(days=7)))
    dist.destroy_process_group()


def train_main(argv: Sequence[str] | None = None) -> None:
    """``ibsd-train -opt options/x.yml``: BasicSR's ``train_pipeline`` rooted at the cwd."""
    from basicsr.train import train_pipeline
    _run(train_pipeline, argv)


def test_main(argv: Sequence[str] | None = None) -> None:
    """``ibsd-test -opt options/x.yml``: BasicSR's ``test_pipeline`` rooted at the cwd."""
    from basicsr.test import test_pipeline
    _run(test_pipeline, argv)
