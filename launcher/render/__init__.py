"""Rendering: a resolved job spec in, the run directory's files out (`artifacts`), pure:
nothing is started or submitted here. Also the shell-quoting filter every template value
passes (`shellsafe`), the `#SBATCH` options as data (`sbatch`), HCCL rank tables
(`ranktable`) and the site-template listing and copy (`templates`).

May import: `launcher.core`.
"""
