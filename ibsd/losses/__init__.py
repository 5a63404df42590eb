"""IBSD losses: every `*_loss.py` file here is imported and registered with BasicSR."""
from os import path as osp

from ibsd.discovery import import_modules

_modules = import_modules(__name__, osp.dirname(osp.abspath(__file__)), '_loss.py')
