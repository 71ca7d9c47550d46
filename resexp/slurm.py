"""Old import path of the SLURM job callable, kept for jobs queued or requeued by older versions.

submitit pickles `resexp.slurm.TrainJob` into each job's folder; unpickling resolves the class
by this path. New code imports `resexp.sweep.slurm`.
"""

from resexp.sweep.slurm import TrainJob

__all__ = ["TrainJob"]
