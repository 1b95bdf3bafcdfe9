"""Sweeps: one job over many points, each an ordinary run directory (`plan`), run one after the
other here or as one Slurm job array (`array`), summarised side by side (`report`).

May import: `launcher.runs` and every layer below.
"""
