"""Sweeps: one job over many points, each an ordinary run directory: the points and their names
(`plan`), the sweep directory written (`sweepdir`; launcher/core/rundir/sweepdir.py reads it),
the points run one after the other here and the sweep commands (`local`), or as one Slurm job
array (`array`), summarised side by side (`report`).

May import: `launcher.runs` and every layer below.
"""
