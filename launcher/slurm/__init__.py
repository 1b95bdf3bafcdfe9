"""Slurm: its commands (`client`: sbatch, squeue, sacct, scontrol, scancel; submit, status,
follow, cancel, and the batch protocol's requeue) and where a process is inside an allocation
(`env`).

May import: `launcher.supervise`, `launcher.preflight`, `launcher.render`, `launcher.core`.
"""
