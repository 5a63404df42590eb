"""IBSD's data tools: checks of every data set before BasicSR builds it (:mod:`ibsd.data.checks`),
position-seeded sampling for exact resume (:mod:`ibsd.data.resumable_sampling`), preparing real camera
pairs (:mod:`ibsd.data.prepare`, ``ibsd-prepare``) and the built-in default set (:mod:`ibsd.data.default_set`).

IBSD trains on BasicSR's own paired data sets (``PairedImageDataset``): it registers no data set of its
own, so nothing here is imported by ``import ibsd`` except what the pipeline uses. Importing this package
adds one file backend, ``io_backend: {type: memory}`` (:mod:`ibsd.data.memory_backend`).
"""
from ibsd.data import memory_backend  # noqa: F401  (registers io_backend 'memory' in every process that unpickles a set)
