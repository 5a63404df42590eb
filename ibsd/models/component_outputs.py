"""Hand a CDC-style student's component images to its pixel loss, without changing its forward.

CDC's loss (``CDCComponentLoss``) supervises, besides the final image, the flat / edge / corner
images that HGSR-MHR computes on the way. The student's ``forward`` returns only the final image
(BasicSR's contract), and under DDP gradients reach the parameters only through ``forward``, so
the component images are read with forward hooks on the modules the arch names in
``cdc_component_nodes()`` while the training forward runs. The hooks exist only inside
:meth:`ComponentOutputs.record`: validation, EMA, the soft-target teacher and export see the
plain network.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

from ibsd.errors import OptionError


def wants_components(loss: nn.Module | None) -> bool:
    """Whether a pixel loss must be given the component images (``needs_components = True``)."""
    return bool(getattr(loss, 'needs_components', False))


class ComponentOutputs:
    """Records the outputs of named modules during one forward pass and passes them to the loss.

    Args:
        net: The bare student (not a DDP wrapper); ``None`` for a disabled recorder.
        nodes: Component name -> module name (``net.named_modules()``); empty for a disabled one.
    """

    def __init__(self, net: nn.Module | None = None, nodes: Mapping[str, str] | None = None):
        self.nodes = dict(nodes or {})
        modules = dict(net.named_modules()) if net is not None else {}
        missing = sorted(name for name in self.nodes.values() if name not in modules or name == '')
        if missing:
            raise OptionError(f'{type(net).__name__}.cdc_component_nodes() names modules it does not have: {missing}')
        self.modules = {component: modules[name] for component, name in self.nodes.items()}
        self._outputs: dict[str, torch.Tensor] = {}

    @classmethod
    def for_loss(cls, net: nn.Module, loss: nn.Module | None) -> 'ComponentOutputs':
        """A recorder of ``net``'s component images if ``loss`` needs them, else a disabled one."""
        if not wants_components(loss):
            return cls()
        declare = getattr(net, 'cdc_component_nodes', None)
        if declare is None:
            raise OptionError(f'train:pixel_opt: {type(loss).__name__} needs the component images of a CDC-style '
                              f'network, but {type(net).__name__} declares none (cdc_component_nodes()); use HGSR_MHR '
                              'or another pixel loss')
        return cls(net, declare())

    @property
    def enabled(self) -> bool:
        return bool(self.modules)

    @contextlib.contextmanager
    def record(self) -> Iterator['ComponentOutputs']:
        """Hooks on the component modules for the duration of the ``with`` block (nothing when disabled)."""
        self._outputs = {}
        handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def store(module: nn.Module, inputs, output) -> None:
            self._outputs[name] = output
        return store

    def loss_inputs(self, output: torch.Tensor) -> dict:
        """Keyword arguments for the pixel loss: ``{}`` when disabled, else ``{'components': {...}}``
        with each image in float32 and cropped to ``output``'s size (the network may pad its input).

        The recorder lets go of the tensors: the loss's graph keeps what backward needs.
        """
        if not self.enabled:
            return {}
        outputs, self._outputs = self._outputs, {}
        absent = [name for name in self.modules if name not in outputs]
        if absent:
            raise RuntimeError(f'the component modules {absent} did not run in the recorded forward pass')
        height, width = output.shape[-2:]
        return {'components': {name: outputs[name][..., :height, :width].float() for name in self.modules}}
