"""``ibsd-study``: paired multi-seed comparisons of training variants (see :mod:`ibsd.study.spec`)."""
