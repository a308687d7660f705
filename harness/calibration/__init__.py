"""Calibration of the harness's own timing accuracy (``harness calibrate``).

- :mod:`~harness.calibration.join`: client token arrivals x server write times -> errors;
- :mod:`~harness.calibration.levels`: load levels, one simulated server + one Locust process each;
- :mod:`~harness.calibration.result`: calibration.json (machine, software, figures, limit);
- :mod:`harness.analysis.calibration_limit` (in the analysis layer: Locust reads it at the end of every run): the
  installed limit and the per-run client-bound check;
- ``locustfile.py``: the scenario the levels run.
"""
