"""Everything about checking options, below every other layer of ibsd (its source imports none of them).

- :mod:`ibsd.options.values`: generic checks (unknown keys, numbers written as strings, registered types);
- :mod:`ibsd.options.schema`: the sections IBSD adds, each key's kind, default and range, declared once;
- :mod:`ibsd.options.train_sections`: the check of every ``train:`` section and top-level key IBSD reads;
- :mod:`ibsd.options.run_file`: start-up checks of a whole run (misspelt BasicSR keys, paths, devices,
  output folders) and reading option files.
"""
