"""Training one run: `fit(cfg, out)` sets up, then loops over epochs and steps.

Owns the loop (loop.py), the SGD step, eager or CUDA-graphed (step.py), the learning-rate
schedule (schedule.py) and what a run records about the machine it ran on (environment.py).

The package is also callable: resexp.train(...) is resexp.api.train (resexp.CallablePackage).
"""

import sys

from resexp import CallablePackage

sys.modules[__name__].__class__ = CallablePackage
