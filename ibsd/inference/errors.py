"""The error of the inference library: a problem with the network, its weights or its inputs."""
from __future__ import annotations

from ibsd.errors import IBSDError


class InferenceError(IBSDError):
    """A problem that ends the run, reported as one line (``ibsd-infer`` and ``ibsd-export`` print it)."""
