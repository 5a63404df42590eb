"""Installs ``ibsd-autoload.pth`` next to the package (see ``_ibsd_autoload.py``).

Both a normal install (``pip install .``) and an editable one (``pip install -e .``) put the
file at the root of site-packages, where ``site`` executes it at interpreter start.
Everything else is declared in ``pyproject.toml``.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_FILE = 'ibsd-autoload.pth'
PTH_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_FILE)


class BuildWithAutoload(build_py):
    """Wheel: copies the ``.pth`` file to the root of ``build_lib``."""

    def run(self):
        super().run()
        self.mkpath(self.build_lib)
        shutil.copyfile(PTH_SOURCE, os.path.join(self.build_lib, PTH_FILE))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_FILE)]


class EditableWithAutoload(editable_wheel):
    """Editable wheel: setuptools only maps Python files, so the ``.pth`` is added explicitly."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copyfile(PTH_SOURCE, os.path.join(unpacked_wheel, PTH_FILE))
        return result


setup(cmdclass={'build_py': BuildWithAutoload, 'editable_wheel': EditableWithAutoload})
