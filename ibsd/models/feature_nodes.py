"""Capture a student's Markov-chain nodes f_0..f_K with forward hooks, without touching the student.

A node is the output of a named submodule (``net.named_modules()`` names), optionally the k-th
call of a module that runs several times per forward: ``'B4@3'`` is the third output of ``B4``
(the authors' RFDN applies block 4 three times). Hooks exist only inside :meth:`NodeRecorder.record`,
so the student's own forward, validation and export are those of the plain network.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from ibsd.errors import OptionError

NODE_OPTION = 'train:ibsd:nodes'


def parse_node(node: str) -> tuple[str, int]:
    """``'name'`` -> (name, 1); ``'name@k'`` -> (name, k)."""
    name, _, call = str(node).partition('@')
    if call and (not call.isdigit() or int(call) < 1):
        raise OptionError(f"{NODE_OPTION}: '{node}' must be a module name, optionally followed by @k with k >= 1")
    return name, int(call) if call else 1


def default_nodes(net: nn.Module) -> list[str]:
    """The nodes a built-in student declares (``ibsd_nodes()``), else an error naming the option."""
    declare = getattr(net, 'ibsd_nodes', None)
    if declare is None:
        raise OptionError(f'{type(net).__name__} declares no default IBSD nodes: list module names in '
                         f'{NODE_OPTION} (e.g. the first conv and some block outputs)')
    return list(declare())


class NodeRecorder:
    """Records the node tensors of one forward pass of ``net``.

    Args:
        net: The bare student network (not a DDP wrapper).
        nodes: Node names (see the module docstring), in chain order, at least 2.
    """

    def __init__(self, net: nn.Module, nodes: Sequence[str]):
        if len(nodes) < 2:
            raise OptionError(f'{NODE_OPTION}: IBSD needs at least 2 nodes, got {list(nodes)}')
        self.net = net
        self.nodes = [str(n) for n in nodes]
        self.parsed = [parse_node(n) for n in self.nodes]
        modules = dict(net.named_modules())
        unknown = [name for name, _ in self.parsed if name not in modules or name == '']
        if unknown:
            top_level = [name for name in modules if name and '.' not in name]
            raise OptionError(f'{NODE_OPTION}: no module named {unknown} in {type(net).__name__}; '
                             f'its top-level modules are {top_level}')
        self.modules = {name: modules[name] for name, _ in self.parsed}
        self._outputs: dict[str, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def record(self) -> Iterator['NodeRecorder']:
        """Hooks are attached for the duration of the ``with`` block only."""
        self._outputs = {name: [] for name in self.modules}
        handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def store(module: nn.Module, inputs, output) -> None:
            self._outputs[name].append(output)
        return store

    def collect(self) -> list[torch.Tensor]:
        """The node tensors of the last recorded forward, checked for a common spatial size.

        The recorder lets go of them: the caller owns the only references (no tens of MB of
        activations kept alive between training steps).
        """
        outputs, self._outputs = self._outputs, {}
        tensors = []
        for node, (name, call) in zip(self.nodes, self.parsed):
            calls = outputs.get(name, [])
            if len(calls) < call:
                raise OptionError(f"{NODE_OPTION}: node '{node}' did not run (module '{name}' ran {len(calls)} "
                                 f'time(s) in the forward pass)')
            output = calls[call - 1]
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise OptionError(f"{NODE_OPTION}: node '{node}' must output a [B, C, H, W] tensor")
            tensors.append(output)
        sizes = {node: tuple(t.shape[2:]) for node, t in zip(self.nodes, tensors)}
        if len(set(sizes.values())) > 1:
            raise OptionError(f'{NODE_OPTION}: all nodes must share one spatial size, got {sizes}')
        return tensors
