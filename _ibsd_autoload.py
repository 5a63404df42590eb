"""Give every process that imports ``basicsr`` the IBSD types, and make basicsr 1.4.2 importable.

This module is loaded by ``ibsd-autoload.pth`` when the interpreter starts. All it does then is
put one finder on ``sys.meta_path``; the finder compares the imported name with ``'basicsr'``
and does nothing for any other import, so processes that never import basicsr pay nothing
measurable (see ``scripts/benchmark_autoload.py``).

When ``basicsr`` is imported (for example by ``python basicsr/train.py`` in a BasicSR source
tree), the finder:

1. aliases ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17) to its
   private successor, which basicsr 1.4.2 imports at package import time;
2. hides the one SciPy ``DeprecationWarning`` that ``import basicsr`` raises;
3. runs basicsr's own ``__init__``, then imports ``ibsd`` so that IBSD's archs, losses, models
   and metrics are in BasicSR's registries.

Set the environment variable ``IBSD_NO_AUTOLOAD=1`` to switch step 3 off.
It is kept in one top-level module, outside the ``ibsd`` package, because importing the package
itself imports basicsr.
"""
import sys

DISABLE_ENV = 'IBSD_NO_AUTOLOAD'
# The one warning basicsr 1.4.2 raises at import (basicsr/metrics/niqe.py).
SCIPY_WARNING = r'Please import `convolve` from the `scipy\.ndimage` namespace'


def install_torchvision_shim() -> None:
    """Alias ``torchvision.transforms.functional_tensor`` where torchvision no longer has it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    import importlib.util
    try:
        if importlib.util.find_spec(name) is not None:
            return
    except ImportError:  # torchvision itself missing: basicsr's own import error will say so
        return
    import torchvision.transforms._functional_tensor as functional_tensor
    sys.modules[name] = functional_tensor


def exec_basicsr(loader, module) -> None:
    """Run basicsr's ``__init__`` with the shim in place and its SciPy warning hidden."""
    import warnings
    install_torchvision_shim()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=SCIPY_WARNING, category=DeprecationWarning)
        loader.exec_module(module)


class _BasicsrLoader:
    """Wraps basicsr's own loader: runs it through :func:`exec_basicsr`, then imports ibsd."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        module.__spec__.loader = self.loader
        exec_basicsr(self.loader, module)
        import os
        if os.environ.get(DISABLE_ENV, '') not in ('', '0'):
            return
        import importlib
        try:
            importlib.import_module('ibsd')
        except Exception as error:  # never break a plain basicsr user because of IBSD
            import warnings
            warnings.warn(f'ibsd is installed but failed to import ({error!r}); IBSD types are not '
                          f'registered. Set {DISABLE_ENV}=1 to silence this.', RuntimeWarning)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class BasicsrFinder:
    """A meta-path finder that only reacts to the top-level ``basicsr`` import."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != 'basicsr':
            return None
        for finder in sys.meta_path:
            if finder is cls or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _BasicsrLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put :class:`BasicsrFinder` first on ``sys.meta_path`` (once)."""
    if 'basicsr' not in sys.modules and BasicsrFinder not in sys.meta_path:
        sys.meta_path.insert(0, BasicsrFinder)


install()
