"""What every training run started with ``ibsd-train`` gets beyond BasicSR (IBSD or not).

- :mod:`ibsd.training.checkpoints`: atomic checkpoint and training-state writing, safe reading;
- :mod:`ibsd.training.resume`: exact resume part-way into an epoch;
- :mod:`ibsd.training.random_streams`: every rank's random states in the training state;
- :mod:`ibsd.training.pipeline`: installs these (and the option and data checks) into BasicSR's pipelines.
"""
