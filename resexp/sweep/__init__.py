"""Sweeps: plan (arch × depth × seed → run folders), estimate, and launch.

plan.py decides what to run and saves the sweep; estimate.py times it; launch.py hands the
runs to a launcher: local (this process or --jobs workers) or slurm (one job per run).
"""
