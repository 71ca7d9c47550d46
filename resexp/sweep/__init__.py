"""Sweeps: plan (arch × depth × seed → run folders), estimate, and launch.

plan.py decides what to run and saves the sweep; estimate.py times it; launch.py hands the
runs to a launcher: local (this process or --jobs workers) or slurm (one job per run).

The package is also callable: resexp.sweep(...) is resexp.api.sweep (resexp.CallablePackage).
"""

import sys

from resexp import CallablePackage

sys.modules[__name__].__class__ = CallablePackage
