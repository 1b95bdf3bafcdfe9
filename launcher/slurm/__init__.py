"""Slurm: its commands (`client`: sbatch, squeue, sacct, scontrol, scancel; status, follow,
cancel, the batch protocol's requeue; the one map of Slurm's job states to packrun's phases),
`packrun submit` (`submit`) and where a process is inside an allocation (`env`).

May import: `launcher.supervise`, `launcher.preflight`, `launcher.render`, `launcher.core`.
"""
